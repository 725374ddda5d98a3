package offline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/featurestore/featurestore/registry"
)

// TestLoserNeverReplacesCommittedFile: writer A still owns a partition when
// it checks, and starts writing its file; meanwhile writer B (the
// partition's new owner after a rebalance, or a second run of the same
// backfill) writes the same name, offsets 0..49, and commits it. A must not
// replace B's committed file: it keeps B's rows, ingest times and schema,
// A drops its rows as a writer that lost its partition does, and the view
// compacts afterwards.
func TestLoserNeverReplacesCommittedFile(t *testing.T) {
	evs := genEvents(rand.New(rand.NewPCG(1, 2)), 50, 0, 0, t0)
	for i := range evs {
		evs[i].ev.Time = t0 // one date: one file
	}
	cases := []struct {
		name  string
		loser func(t *testing.T) (*Schema, []genEvent)
	}{
		// The loser did not accept offset 10, as a writer on another
		// version of the definitions may not.
		{"loser without an event", func(t *testing.T) (*Schema, []genEvent) {
			return testSchema(t, "account_stats"), append(append([]genEvent{}, evs[:10]...), evs[11:]...)
		}},
		// A rolling deploy: the loser runs the previous definitions, whose
		// view lacks a column.
		{"loser on other definitions", func(t *testing.T) (*Schema, []genEvent) {
			defs := strings.Replace(testDefs, "  - {name: last_currency, field: currency, type: string}\n", "", 1)
			r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(defs)})
			if err != nil {
				t.Fatal(err)
			}
			s, err := NewSchema(testProject, r, "account_stats")
			if err != nil {
				t.Fatal(err)
			}
			return s, evs
		}},
	}
	for _, c := range cases {
		for name, mk := range storages(t) {
			t.Run(c.name+"/"+name, func(t *testing.T) {
				ctx := context.Background()
				st := mk(t)
				s := testSchema(t, "account_stats")
				sa, evsA := c.loser(t)
				a, err := OpenWriter(ctx, st, testProject, Options{})
				if err != nil {
					t.Fatal(err)
				}
				b, err := OpenWriter(ctx, st, testProject, Options{})
				if err != nil {
					t.Fatal(err)
				}
				ba := batchOf(evsA, testTopic, 0, 49, t0)
				ba.IngestTime = 111
				if err := a.Append(ctx, sa, ba); err != nil {
					t.Fatal(err)
				}
				// Hold A once its file's bytes are written, before they
				// land under the name.
				var armed atomic.Bool
				armed.Store(true)
				paused, release := make(chan struct{}), make(chan struct{})
				old := failpoint
				t.Cleanup(func() { failpoint = old })
				failpoint = func(step string) {
					if (step == "put:written" || step == "create:written") && armed.CompareAndSwap(true, false) {
						close(paused)
						<-release
					}
				}
				done := make(chan error, 1)
				go func() { done <- a.Flush(ctx) }()
				<-paused
				bb := batchOf(evs, testTopic, 0, 49, t0)
				bb.IngestTime = 222
				if err := b.Append(ctx, s, bb); err != nil {
					t.Fatal(err)
				}
				if err := b.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				close(release)
				if err := <-done; err != nil {
					t.Fatalf("flush of the writer that lost: %v, want nil (it drops its rows)", err)
				}
				var want []row
				for _, g := range evs {
					want = append(want, wantRow(g, testTopic, 222))
				}
				sortRows(want)
				// readRows checks each file's schema and rows against its
				// manifest entry.
				if got := readRows(t, st); !reflect.DeepEqual(got, want) {
					t.Fatalf("committed file changed: %d rows, want B's %d: %v", len(got), len(want), firstDiff(got, want))
				}
				next := batchOf(evs[:1], testTopic, 0, 50, t0)
				if err := a.Append(ctx, sa, next); !errors.Is(err, ErrStreamLost) {
					t.Fatalf("append of the writer that lost: %v, want ErrStreamLost", err)
				}
				// One more file, and the two merge.
				more := genEvents(rand.New(rand.NewPCG(3, 4)), 20, 0, 50, t0)
				for i := range more {
					more[i].ev.Time = t0
				}
				want = append(want, appendAll(t, b, s, more, 20)...)
				if err := b.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				stats, err := Compact(ctx, st, testProject, "account_stats", CompactOptions{})
				if err != nil || stats.Merges != 1 {
					t.Fatalf("compact: %+v %v, want one merge", stats, err)
				}
				sortRows(want)
				if got := readRows(t, st); !reflect.DeepEqual(got, want) {
					t.Fatalf("after compaction %d rows, want %d: %v", len(got), len(want), firstDiff(got, want))
				}
				checkClean(t, st)
			})
		}
	}
}

// TestFlushOntoUncommittedFile: the name a flush writes holds an uncommitted
// file, left by an interrupted write or written by another writer that has
// not committed it yet. A file of the same rows is never deleted: it is
// replaced atomically when the flush would cut it into the same record
// batches, and committed as it is otherwise. A file of other rows is
// replaced when it is an orphan by the grace's rule; otherwise the flush
// fails, retryably, until it is an orphan.
func TestFlushOntoUncommittedFile(t *testing.T) {
	evs := genEvents(rand.New(rand.NewPCG(11, 12)), 50, 0, 0, t0)
	for i := range evs {
		evs[i].ev.Time = t0 // one date: one file
	}
	without10 := append(append([]genEvent{}, evs[:10]...), evs[11:]...)
	cases := []struct {
		name  string
		grace time.Duration
		age   time.Duration // of the file when the flush runs
		other []genEvent    // the file's rows; nil: the same as the flush's
		busy  bool          // the flush fails until the file is an orphan
		// batchRows of the flush (the file's are the default).
		batchRows int
		want      int64 // ingest time of the committed rows: 111 the file's, 222 the flush's
	}{
		{name: "same rows, young: written again", grace: time.Hour, want: 222},
		{name: "same rows, past half the grace: written again", grace: time.Hour, age: 40 * time.Minute, want: 222},
		{name: "same rows, an orphan: replaced", grace: time.Hour, age: 2 * time.Hour, want: 222},
		// Another cut into record batches: replaced, a reader of the
		// object in the middle would mix the two; used as it is.
		{name: "same rows in other batches: used as it is", grace: time.Hour, batchRows: 20, want: 111},
		{name: "same rows in other batches, an orphan: used as it is", grace: time.Hour, age: 2 * time.Hour, batchRows: 20, want: 111},
		{name: "other rows, young: waits", grace: time.Hour, other: without10, busy: true, want: 222},
		{name: "other rows, an orphan: replaced", grace: time.Hour, age: 61 * time.Minute, other: without10, want: 222},
		{name: "other rows, no grace: replaced", other: without10, want: 222},
	}
	for _, c := range cases {
		for sname, mk := range storages(t) {
			t.Run(c.name+"/"+sname, func(t *testing.T) {
				ctx := context.Background()
				st := mk(t)
				s := testSchema(t, "account_stats")
				clock := &atomicTime{}
				clock.Store(time.Now().Add(c.age))
				w, err := OpenWriter(ctx, st, testProject, Options{OrphanGrace: c.grace, BatchRows: c.batchRows, Now: clock.Load})
				if err != nil {
					t.Fatal(err)
				}
				// The file: a flush whose commit failed.
				other := &failingCreate{Storage: st, fail: true}
				ow, err := OpenWriter(ctx, other, testProject, Options{})
				if err != nil {
					t.Fatal(err)
				}
				fileEvs := evs
				if c.other != nil {
					fileEvs = c.other
				}
				ob := batchOf(fileEvs, testTopic, 0, 49, t0)
				ob.IngestTime = 111
				if err := ow.Append(ctx, s, ob); err != nil {
					t.Fatal(err)
				}
				if err := ow.Flush(ctx); err == nil {
					t.Fatal("flush with failing commits succeeded")
				}
				b := batchOf(evs, testTopic, 0, 49, t0)
				b.IngestTime = 222
				err = w.Append(ctx, s, b)
				if err == nil {
					err = w.Flush(ctx)
				}
				if c.busy {
					if !errors.Is(err, errFileBusy) {
						t.Fatalf("flush: %v, want errFileBusy", err)
					}
					clock.Store(time.Now().Add(c.grace + time.Minute))
					err = w.Flush(ctx)
				}
				if err != nil {
					t.Fatal(err)
				}
				var want []row
				for _, g := range evs {
					want = append(want, wantRow(g, testTopic, c.want))
				}
				sortRows(want)
				if got := readRows(t, st); !reflect.DeepEqual(got, want) {
					t.Fatalf("committed %d rows, want %d: %v", len(got), len(want), firstDiff(got, want))
				}
				checkSizes(t, st)
				checkClean(t, st)
			})
		}
	}
}

// hookStorage runs hooks around List, and after each Delete or Put of a
// data file, to interleave two writers deterministically.
type hookStorage struct {
	Storage
	onList  func(dir string)
	onWrite func(op, name string)
}

func (h *hookStorage) List(ctx context.Context, dir string) ([]ObjectInfo, error) {
	if h.onList != nil {
		h.onList(dir)
	}
	return h.Storage.List(ctx, dir)
}

func (h *hookStorage) Delete(ctx context.Context, name string) error {
	err := h.Storage.Delete(ctx, name)
	if h.onWrite != nil && strings.HasSuffix(name, fileExt) {
		h.onWrite("delete", name)
	}
	return err
}

func (h *hookStorage) Put(ctx context.Context, name string, write func(io.Writer) error) error {
	err := h.Storage.Put(ctx, name, write)
	if h.onWrite != nil && strings.HasSuffix(name, fileExt) {
		h.onWrite("put", name)
	}
	return err
}

// TestSameRowsNeverDeletesCommittedFile: two writers hold the same rows of
// a partition under the same deterministic name (two runs of the same
// backfill, or the old and new owner of a partition after a rebalance). A
// has written the file and is about to commit it; B finds the name taken,
// uncommitted, young and with the same rows. A commits between B's check
// and what B does with the file. B must not delete it: a reader of the
// committed snapshot would find it missing, and it would be lost for good
// if B then died (its context canceled, as at shutdown after losing the
// partition) before writing it again.
func TestSameRowsNeverDeletesCommittedFile(t *testing.T) {
	for _, dies := range []bool{false, true} {
		for sname, mk := range storages(t) {
			t.Run(fmt.Sprintf("%s/B dies %v", sname, dies), func(t *testing.T) {
				ctx := context.Background()
				base := mk(t)
				s := testSchema(t, "account_stats")
				evs := genEvents(rand.New(rand.NewPCG(21, 22)), 50, 0, 0, t0)
				for i := range evs {
					evs[i].ev.Time = t0 // one date: one file
				}
				a, err := OpenWriter(ctx, base, testProject, Options{OrphanGrace: time.Hour})
				if err != nil {
					t.Fatal(err)
				}
				hb := &hookStorage{Storage: base}
				b, err := OpenWriter(ctx, hb, testProject, Options{OrphanGrace: time.Hour})
				if err != nil {
					t.Fatal(err)
				}
				ba := batchOf(evs, testTopic, 0, 49, t0)
				ba.IngestTime = 111
				if err := a.Append(ctx, s, ba); err != nil {
					t.Fatal(err)
				}
				bb := batchOf(evs, testTopic, 0, 49, t0)
				bb.IngestTime = 222
				if err := b.Append(ctx, s, bb); err != nil {
					t.Fatal(err)
				}

				// A stops after writing its file, before its commit.
				var armed atomic.Bool
				armed.Store(true)
				pausedA, releaseA := make(chan struct{}), make(chan struct{})
				old := failpoint
				t.Cleanup(func() { failpoint = old })
				failpoint = func(step string) {
					if step == "flush:written" && armed.CompareAndSwap(true, false) {
						close(pausedA)
						<-releaseA
					}
				}
				doneA := make(chan error, 1)
				go func() { doneA <- a.Flush(ctx) }()
				<-pausedA

				// B: when it lists the date directory (after it read the
				// manifest and found the file uncommitted), A commits.
				var once sync.Once
				hb.onList = func(dir string) {
					if strings.Contains(dir, datePrefix) {
						once.Do(func() {
							close(releaseA)
							if err := <-doneA; err != nil {
								t.Errorf("flush of A: %v", err)
							}
						})
					}
				}
				readable := func(when string) {
					snap, err := ReadSnapshot(ctx, base, testProject, "account_stats")
					if err == nil {
						err = Scan(ctx, base, snap, snap.Files, func(FileInfo, arrow.RecordBatch) error { return nil })
					}
					if err != nil {
						t.Errorf("committed snapshot %s: %v", when, err)
					}
				}
				ctxB, cancelB := context.WithCancel(ctx)
				defer cancelB()
				hb.onWrite = func(op, name string) {
					readable("after B's " + op + " of " + name)
					if dies {
						cancelB()
					}
				}
				if err := b.Flush(ctxB); err != nil && !dies {
					t.Fatalf("flush of B: %v", err)
				}
				readable("after B's flush")
				var want []row
				for _, g := range evs {
					want = append(want, wantRow(g, testTopic, 111))
				}
				got := readRows(t, base)
				for i := range got {
					got[i].IngestTime = 111 // A's or B's, the same events
				}
				sortRows(want)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("committed %d rows, want %d: %v", len(got), len(want), firstDiff(got, want))
				}
				checkSizes(t, base)
			})
		}
	}
}

// checkSizes checks that each committed file has the size its manifest
// entry says.
func checkSizes(t *testing.T, st Storage) {
	t.Helper()
	ctx := context.Background()
	snap, err := ReadSnapshot(ctx, st, testProject, "account_stats")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range snap.Files {
		o, err := st.Open(ctx, snap.Name(f))
		if err != nil {
			t.Fatal(err)
		}
		if o.Size() != f.Bytes {
			t.Errorf("file %s of %d bytes, its manifest entry says %d", f.Path, o.Size(), f.Bytes)
		}
		o.Close()
	}
}
