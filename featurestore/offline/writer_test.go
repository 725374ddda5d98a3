package offline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

const t0 = int64(1_700_000_000_000) // 2023-11-14T22:13:20Z

// appendAll appends evs of one partition in batches of size per, with
// the batch's last offset as its end, and returns the rows expected.
func appendAll(t *testing.T, w *Writer, s *Schema, evs []genEvent, per int) []row {
	t.Helper()
	var want []row
	for i := 0; i < len(evs); i += per {
		chunk := evs[i:min(i+per, len(evs))]
		b := batchOf(chunk, testTopic, chunk[0].ev.Partition, chunk[len(chunk)-1].ev.Offset, chunk[len(chunk)-1].ev.Time)
		if err := w.Append(context.Background(), s, b); err != nil {
			t.Fatal(err)
		}
		for _, g := range chunk {
			want = append(want, wantRow(g, testTopic, b.IngestTime))
		}
	}
	return want
}

func TestRoundTrip(t *testing.T) {
	for name, mk := range storages(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := mk(t)
			reg := prometheus.NewRegistry()
			w, err := OpenWriter(ctx, st, testProject, Options{FlushRows: 50, BatchRows: 7, Metrics: NewMetrics(reg)})
			if err != nil {
				t.Fatal(err)
			}
			s := testSchema(t, "account_stats")
			rng := rand.New(rand.NewPCG(1, 2))
			var want []row
			p0 := genEvents(rng, 230, 0, 0, t0)
			p3 := genEvents(rng, 120, 3, 1000, t0)
			want = append(want, appendAll(t, w, s, p0, 17)...)
			want = append(want, appendAll(t, w, s, p3, 40)...)
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			got := readRows(t, st)
			sortRows(want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("read %d rows, want %d; first difference: %v", len(got), len(want), firstDiff(got, want))
			}
			checkClean(t, st)
			snap, err := ReadSnapshot(ctx, st, testProject, "account_stats")
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				p    int32
				last genEvent
			}{{0, p0[len(p0)-1]}, {3, p3[len(p3)-1]}} {
				pos, ok := snap.Position(testTopic, c.p)
				if want := (Position{Offset: c.last.ev.Offset, HW: c.last.ev.Time, HasHW: true}); !ok || pos != want {
					t.Errorf("position of partition %d: %+v %v, want %+v", c.p, pos, ok, want)
				}
			}
			if w.PendingRows() != 0 {
				t.Errorf("pending rows after Close: %d", w.PendingRows())
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			metrics := map[string]float64{}
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					metrics[mf.GetName()] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
			if metrics["featurestore_offline_rows_written_total"] != float64(len(want)) || metrics["featurestore_offline_pending_rows"] != 0 ||
				metrics["featurestore_offline_files_written_total"] != float64(len(snapFiles(t, st))) {
				t.Errorf("metrics: %v", metrics)
			}
			// The events read back for the source equal those appended;
			// fields the view does not log (note) read as null.
			checkDecodedEvents(t, st, snap, append(p0, p3...))
		})
	}
}

func firstDiff(got, want []row) any {
	for i := range min(len(got), len(want)) {
		if !reflect.DeepEqual(got[i], want[i]) {
			return []row{got[i], want[i]}
		}
	}
	return "lengths differ"
}

func checkDecodedEvents(t *testing.T, st Storage, snap *Snapshot, evs []genEvent) {
	t.Helper()
	r := testRegistry(t)
	fields, err := window.SourceFields(r.Source("payments"))
	if err != nil {
		t.Fatal(err)
	}
	byOff := map[[2]int64]genEvent{}
	for _, g := range evs {
		byOff[[2]int64{int64(g.ev.Partition), g.ev.Offset}] = g
	}
	d := NewEventDecoder(fields, []string{"region", "account_id"})
	n := 0
	var ev window.Event
	err = Scan(context.Background(), st, snap, snap.Files, func(_ FileInfo, rec arrow.RecordBatch) error {
		if err := d.Bind(rec); err != nil {
			return err
		}
		for i := range int(rec.NumRows()) {
			d.Event(i, &ev)
			g, ok := byOff[[2]int64{int64(ev.Partition), ev.Offset}]
			if !ok {
				t.Fatalf("decoded unknown event %d/%d", ev.Partition, ev.Offset)
			}
			if ev.Time != g.ev.Time || len(ev.Fields) != len(fields) {
				t.Fatalf("event %d: time %d fields %d", ev.Offset, ev.Time, len(ev.Fields))
			}
			for j := range fields {
				want := g.ev.Field(j)
				if fields[j].Name == "note" {
					want = featurestore.Value{}
				}
				if !ev.Fields[j].Equal(want) {
					t.Fatalf("event %d field %s: %v, want %v", ev.Offset, fields[j].Name, ev.Fields[j], want)
				}
			}
			k, err := d.Key(i)
			if err != nil || k != g.key() {
				t.Fatalf("event %d: key %v %v, want %v", ev.Offset, k, err, g.key())
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(evs) {
		t.Fatalf("decoded %d events, want %d", n, len(evs))
	}
}

// TestReplay appends the same batches again, in the same writer before a
// flush and in a new writer after, as ingest does after a failure or a
// restart: every event is logged once.
func TestReplay(t *testing.T) {
	ctx := context.Background()
	st, _ := NewDir(t.TempDir())
	s := testSchema(t, "account_stats")
	evs := genEvents(rand.New(rand.NewPCG(3, 4)), 100, 1, 500, t0)
	w, err := OpenWriter(ctx, st, testProject, Options{FlushRows: 1000})
	if err != nil {
		t.Fatal(err)
	}
	want := appendAll(t, w, s, evs[:60], 20)
	appendAll(t, w, s, evs[:60], 30) // a retried batch, not yet flushed
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	w2, err := OpenWriter(ctx, st, testProject, Options{FlushRows: 1000})
	if err != nil {
		t.Fatal(err)
	}
	pos, ok, err := w2.Resume(ctx, s, testTopic, 1)
	if err != nil || !ok || pos.Offset != evs[59].ev.Offset {
		t.Fatalf("resume: %+v %v %v, want offset %d", pos, ok, err, evs[59].ev.Offset)
	}
	// Ingest resumes before the committed position (its online position
	// may be older): the overlap is dropped.
	rest := appendAll(t, w2, s, evs[40:], 25)
	if err := w2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range rest {
		if r.Offset > evs[59].ev.Offset {
			want = append(want, r)
		}
	}
	sortRows(want)
	got := readRows(t, st)
	checkUnique(t, got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read %d rows, want %d: %v", len(got), len(want), firstDiff(got, want))
	}
}

// failingCreate fails manifest commits, to leave written files uncommitted.
type failingCreate struct {
	Storage
	fail bool
}

func (f *failingCreate) Create(ctx context.Context, name string, data []byte) error {
	if f.fail {
		return errors.New("injected failure")
	}
	return f.Storage.Create(ctx, name, data)
}

// TestReplayRewritesSameFile: a flush whose commit failed leaves its file
// behind; the replay after a restart writes the same name, finds the file
// holding its events and commits it, and the log holds each event once.
func TestReplayRewritesSameFile(t *testing.T) {
	ctx := context.Background()
	dir, _ := NewDir(t.TempDir())
	st := &failingCreate{Storage: dir}
	s := testSchema(t, "account_stats")
	evs := genEvents(rand.New(rand.NewPCG(5, 6)), 40, 2, 0, t0)
	for i := range evs {
		evs[i].ev.Time = t0 // one date, one file
	}
	w, _ := OpenWriter(ctx, st, testProject, Options{FlushRows: 1000})
	appendAll(t, w, s, evs, 40)
	st.fail = true
	if err := w.Flush(ctx); err == nil {
		t.Fatal("flush succeeded with failing commits")
	}
	before, _ := dir.List(ctx, testProject)
	if len(before) != 1 {
		t.Fatalf("after the failed commit: %v, want one data file", before)
	}
	st.fail = false
	// A restart that spares young orphans (OrphanGrace), then the replay.
	w2, err := OpenWriter(ctx, st, testProject, Options{FlushRows: 1000, OrphanGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	want := appendAll(t, w2, s, evs, 40)
	if err := w2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	snap, _ := ReadSnapshot(ctx, st, testProject, "account_stats")
	if len(snap.Files) != 1 || snap.Name(snap.Files[0]) != before[0].Name {
		t.Fatalf("committed %v, want the file %s rewritten", snap.Files, before[0].Name)
	}
	checkClean(t, dir)
	sortRows(want)
	if got := readRows(t, st); !reflect.DeepEqual(got, want) {
		t.Fatalf("rows differ: %v", firstDiff(got, want))
	}
}

// TestOrphansRemovedAtStart: temporary and unreferenced files go at start;
// committed ones stay; young ones stay with a grace period.
func TestOrphansRemovedAtStart(t *testing.T) {
	for name, mk := range storages(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := mk(t)
			s := testSchema(t, "account_stats")
			w, _ := OpenWriter(ctx, st, testProject, Options{})
			want := appendAll(t, w, s, genEvents(rand.New(rand.NewPCG(7, 8)), 30, 0, 0, t0), 30)
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			orphan := viewDir(testProject, "account_stats") + "/" + filePath(dayOf(t0), testTopic, 0, 100, 200)
			put(t, st, orphan, "not committed")
			put(t, st, viewDir(testProject, "device_counts")+"/"+filePath(dayOf(t0), testTopic, 0, 1, 2), "no manifest")
			if _, ok := st.(*Dir); ok {
				// Of this version and of earlier ones.
				for _, marker := range []string{tempMarker, oldTempMarker} {
					put(t, st, viewDir(testProject, "account_stats")+"/date=2023-11-14/.x.arrow"+marker+"1", "temp")
					put(t, st, viewDir(testProject, "account_stats")+"/"+manifestDirName+"/.00000000000000000009.json"+marker+"2", "temp")
				}
			}
			if _, err := OpenWriter(ctx, st, testProject, Options{OrphanGrace: time.Hour}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Open(ctx, orphan); err != nil {
				t.Fatalf("young orphan removed despite the grace period: %v", err)
			}
			if _, err := OpenWriter(ctx, st, testProject, Options{}); err != nil {
				t.Fatal(err)
			}
			checkClean(t, st)
			sortRows(want)
			if got := readRows(t, st); !reflect.DeepEqual(got, want) {
				t.Fatalf("rows differ: %v", firstDiff(got, want))
			}
		})
	}
}

func put(t *testing.T, st Storage, name, data string) {
	t.Helper()
	if err := st.Put(context.Background(), name, func(w ioWriter) error { _, err := w.Write([]byte(data)); return err }); err != nil {
		t.Fatal(err)
	}
}

// TestLostPartition: two writers log the same partition, as around a
// rebalance. The second to commit drops its rows and, after Resume, goes
// on from the winner's position: each event is logged once.
func TestLostPartition(t *testing.T) {
	ctx := context.Background()
	st, _ := NewDir(t.TempDir())
	s := testSchema(t, "account_stats")
	evs := genEvents(rand.New(rand.NewPCG(9, 10)), 100, 0, 0, t0)
	a, _ := OpenWriter(ctx, st, testProject, Options{})
	b, _ := OpenWriter(ctx, st, testProject, Options{})
	appendAll(t, a, s, evs[:80], 20)
	want := appendAll(t, b, s, evs[:50], 25)
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b90 := batchOf(evs[80:90], testTopic, 0, evs[89].ev.Offset, evs[89].ev.Time)
	if err := a.Append(ctx, s, b90); !errors.Is(err, ErrStreamLost) { // dropped: a lost the partition
		t.Fatalf("append after losing the partition: %v, want ErrStreamLost", err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	pos, ok, err := a.Resume(ctx, s, testTopic, 0)
	if err != nil || !ok || pos.Offset != 49 {
		t.Fatalf("resume: %+v %v %v, want offset 49", pos, ok, err)
	}
	want = append(want, appendAll(t, a, s, evs[50:], 25)...)
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	sortRows(want)
	got := readRows(t, st)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read %d rows, want %d: %v", len(got), len(want), firstDiff(got, want))
	}
}

// TestBoundedMemory: the buffers never grow past MaxPendingBytes by more
// than one batch, however many streams there are.
func TestBoundedMemory(t *testing.T) {
	ctx := context.Background()
	st, _ := NewDir(t.TempDir())
	s := testSchema(t, "account_stats")
	const limit = 20 << 10
	w, _ := OpenWriter(ctx, st, testProject, Options{MaxPendingBytes: limit})
	rng := rand.New(rand.NewPCG(11, 12))
	var want []row
	for p := range int32(8) {
		evs := genEvents(rng, 200, p, 0, t0)
		for i := 0; i < len(evs); i += 10 {
			want = append(want, appendAll(t, w, s, evs[i:i+10], 10)...)
			if got := w.pendingBytes.Load(); got > limit+10<<10 {
				t.Fatalf("pending %d bytes, limit %d", got, limit)
			}
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	sortRows(want)
	if got := readRows(t, st); !reflect.DeepEqual(got, want) {
		t.Fatalf("rows differ: %v", firstDiff(got, want))
	}
}

// TestAgeFlush: Run commits a stream once its oldest row is FlushAge old,
// and a position without rows.
func TestAgeFlush(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, _ := NewDir(t.TempDir())
	s := testSchema(t, "account_stats")
	var now atomicTime
	now.Store(time.UnixMilli(t0))
	w, _ := OpenWriter(ctx, st, testProject, Options{FlushAge: time.Minute, Now: now.Load})
	evs := genEvents(rand.New(rand.NewPCG(13, 14)), 10, 0, 0, t0)
	appendAll(t, w, s, evs, 10)
	if err := w.Append(ctx, s, Batch{Topic: testTopic, Partition: 1, End: Position{Offset: 77}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	now.Store(time.UnixMilli(t0).Add(time.Minute))
	for w.PendingRows() != 0 {
		time.Sleep(10 * time.Millisecond)
	}
	for {
		p, ok, err := w.Position(ctx, "account_stats", testTopic, 1)
		if err != nil {
			t.Fatal(err)
		}
		if ok && p.Offset == 77 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if got := readRows(t, st); len(got) != len(evs) {
		t.Fatalf("%d rows committed, want %d", len(got), len(evs))
	}
}

// TestBadInput: an event that does not fit the schema fails the batch
// with a clear error, and nothing of it is appended.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	st, _ := NewDir(t.TempDir())
	s := testSchema(t, "account_stats")
	w, _ := OpenWriter(ctx, st, testProject, Options{})
	good := genEvents(rand.New(rand.NewPCG(15, 16)), 5, 0, 0, t0)
	cases := []struct {
		name   string
		mutate func(b *Batch)
		want   string
	}{
		{"wrong field type", func(b *Batch) {
			b.Entities[0].Events[0].Fields = []featurestore.Value{featurestore.StringValue("x")}
		}, `offline log of account_stats: payments.v1/0: event at offset 0: field "amount" of feature view "account_stats" is double, got string`},
		{"wrong key", func(b *Batch) { b.Entities[0].Key = featurestore.StringKey("a") }, `offline log of account_stats: payments.v1/0: entity key has 1 parts, feature view "account_stats" has 2 join keys`},
		{"offset past end", func(b *Batch) { b.End.Offset = 2 }, `offline log of account_stats: batch of payments.v1/0: event offset 3 outside the batch ending at 2`},
		{"bad topic", func(b *Batch) { b.Topic = "a/b" }, `topic "a/b" cannot name a directory: character '/'`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := batchOf(good, testTopic, 0, 4, t0)
			b.Entities[0].Events = append([]window.Event(nil), b.Entities[0].Events...)
			slicesSortByOffset(b)
			c.mutate(&b)
			err := w.Append(ctx, s, b)
			if err == nil || err.Error() != c.want {
				t.Fatalf("error %v, want %s", err, c.want)
			}
			if w.PendingRows() != 0 {
				t.Fatalf("%d rows appended from a failed batch", w.PendingRows())
			}
		})
	}
}

func slicesSortByOffset(b Batch) {
	for _, g := range b.Entities {
		for i := 1; i < len(g.Events); i++ {
			for j := i; j > 0 && g.Events[j].Offset < g.Events[j-1].Offset; j-- {
				g.Events[j], g.Events[j-1] = g.Events[j-1], g.Events[j]
			}
		}
	}
}

// lyingCreate commits manifest entries but reports a failure, as a timeout
// after the write landed does; with retried, the failure is ErrExist, as
// when the storage client retried the create after it landed. With
// unreadable, the entries it lied about cannot be read back either (the
// storage went away right after).
type lyingCreate struct {
	Storage
	lie, retried, unreadable bool
	mu                       sync.Mutex
	hidden                   map[string]bool
}

func (l *lyingCreate) Create(ctx context.Context, name string, data []byte) error {
	err := l.Storage.Create(ctx, name, data)
	if err == nil && l.lie {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.unreadable {
			if l.hidden == nil {
				l.hidden = map[string]bool{}
			}
			l.hidden[name] = true
		}
		if l.retried {
			return l.Storage.Create(ctx, name, data)
		}
		return errors.New("injected timeout")
	}
	return err
}

func (l *lyingCreate) Open(ctx context.Context, name string) (Object, error) {
	l.mu.Lock()
	hidden := l.lie && l.hidden[name]
	l.mu.Unlock()
	if hidden {
		return nil, errors.New("injected: storage unreachable")
	}
	return l.Storage.Open(ctx, name)
}

// TestCommitErrorThatLanded: a commit reported as failed but made is
// recognised as the writer's own, not as another writer's: the partition
// goes on being logged, each event once.
func TestCommitErrorThatLanded(t *testing.T) {
	ctx := context.Background()
	dir, _ := NewDir(t.TempDir())
	st := &lyingCreate{Storage: dir, unreadable: true}
	s := testSchema(t, "account_stats")
	evs := genEvents(rand.New(rand.NewPCG(17, 18)), 60, 0, 0, t0)
	w, _ := OpenWriter(ctx, st, testProject, Options{})
	want := appendAll(t, w, s, evs[:30], 10)
	st.lie = true
	if err := w.Flush(ctx); err == nil {
		t.Fatal("flush reported no error")
	}
	st.lie = false
	// The next append settles the failed flush first, so its rows are not
	// mixed with those the landed commit holds.
	want = append(want, appendAll(t, w, s, evs[30:], 10)...)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	sortRows(want)
	if got := readRows(t, st); !reflect.DeepEqual(got, want) {
		t.Fatalf("read %d rows, want %d: %v", len(got), len(want), firstDiff(got, want))
	}
}

// TestCommitThatLandedReadBack: a manifest entry whose create reported an
// error but landed, found by reading it back: after a timeout, or when the
// storage client retried the create after it landed and the retry found
// the object (ErrExist), which was taken for another writer's commit: the
// buffered rows were dropped as lost (though committed), and the next
// append failed with ErrStreamLost.
func TestCommitThatLandedReadBack(t *testing.T) {
	for _, retried := range []bool{false, true} {
		t.Run(fmt.Sprintf("retried=%v", retried), func(t *testing.T) {
			ctx := context.Background()
			dir, _ := NewDir(t.TempDir())
			st := &lyingCreate{Storage: dir, retried: retried}
			var logs bytes.Buffer
			w, _ := OpenWriter(ctx, st, testProject, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			s := testSchema(t, "account_stats")
			evs := genEvents(rand.New(rand.NewPCG(17, 18)), 60, 0, 0, t0)
			want := appendAll(t, w, s, evs[:30], 10)
			st.lie = true
			if err := w.Flush(ctx); err != nil {
				t.Fatalf("flush whose commit landed: %v", err)
			}
			st.lie = false
			want = append(want, appendAll(t, w, s, evs[30:], 10)...) // fails on ErrStreamLost
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(logs.String(), "another writer") {
				t.Errorf("the writer's own commit taken for another's:\n%s", logs.String())
			}
			sortRows(want)
			if got := readRows(t, st); !reflect.DeepEqual(got, want) {
				t.Fatalf("read %d rows, want %d: %v", len(got), len(want), firstDiff(got, want))
			}
		})
	}
}

func snapFiles(t *testing.T, st Storage) []FileInfo {
	t.Helper()
	snap, err := ReadSnapshot(context.Background(), st, testProject, "account_stats")
	if err != nil {
		t.Fatal(err)
	}
	return snap.Files
}

// TestFlushFailureLoggedOnce: a flush that keeps failing (a full disk) is
// retried every second; its failure is logged at warn level when it
// starts, and its end at info, not every retry.
func TestFlushFailureLoggedOnce(t *testing.T) {
	ctx := context.Background()
	dir, _ := NewDir(t.TempDir())
	st := &failingCreate{Storage: dir}
	var logs bytes.Buffer
	w, err := OpenWriter(ctx, st, testProject, Options{FlushRows: 1000,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, w, testSchema(t, "account_stats"), genEvents(rand.New(rand.NewPCG(5, 6)), 40, 2, 0, t0), 40)
	st.fail = true
	for range 5 {
		if err := w.Flush(ctx); err == nil {
			t.Fatal("flush succeeded with failing commits")
		}
	}
	st.fail = false
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings for 5 failed flushes, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "succeeded after failures") {
		t.Errorf("no line for the recovery:\n%s", logs.String())
	}
}
