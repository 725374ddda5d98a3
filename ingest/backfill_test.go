package ingest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/export"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
	"github.com/featurestore/featurestore/registry"
	"github.com/featurestore/featurestore/serving"
)

// backfillDefs are e2eDefs plus a view without lifetime values or last
// values, whose old events are not written online.
const backfillDefs = e2eDefs + `---
kind: FeatureView
name: card_recent
entity: card
source: txns
tile: 1m
features:
  - {name: n_10m, aggregation: count, window: 10m}
`

// backfillRow is a row of a test file: an event, or a bad row.
type backfillRow struct {
	ev rawEvent
	// What is wrong with it: "" (nothing), "no_time", "no_card" or, in CSV
	// only, "bad_amount".
	bad string
}

// backfillRows makes n rows over three hours, in random time order (far
// beyond the source's allowed lateness), some of them bad.
func backfillRows(seed uint64, n int, textBad bool) (rows []backfillRow, t0, maxT int64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	t0 = time.Date(2026, 11, 26, 5, 0, 0, 0, time.UTC).UnixMilli()
	for i := range n {
		r := backfillRow{ev: rawEvent{offset: int64(i), card: fmt.Sprintf("c%d", rng.IntN(15)),
			time: t0 + rng.Int64N(int64(3*time.Hour/time.Millisecond)), amount: float64(rng.IntN(4000)) / 4,
			merchant: fmt.Sprintf("m%d", rng.IntN(40))}}
		switch k := rng.IntN(60); {
		case k == 0:
			r.bad = "no_time"
		case k == 1:
			r.bad = "no_card"
		case k == 2 && textBad:
			r.bad = "bad_amount"
		}
		if r.bad == "" {
			maxT = max(maxT, r.ev.time)
		}
		rows = append(rows, r)
	}
	return rows, t0, maxT
}

// writeBackfillFile writes rows in format to dir.
func writeBackfillFile(t testing.TB, dir string, format export.Format, rows []backfillRow) string {
	t.Helper()
	path := filepath.Join(dir, "events."+string(format))
	if format == export.FormatCSV {
		var b strings.Builder
		b.WriteString("extra,card,ts,amount,merchant\n")
		for _, r := range rows {
			e := r.ev
			ts, card, amount := fmt.Sprint(e.time), e.card, fmt.Sprint(e.amount)
			switch r.bad {
			case "no_time":
				ts = ""
			case "no_card":
				card = ""
			case "bad_amount":
				amount = "12,5"
			}
			fmt.Fprintf(&b, "x,%s,%s,%q,%s\n", card, ts, amount, e.merchant)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// Arrow files carry the time as a timestamp, Parquet files as epoch ms.
	tsType := arrow.DataType(arrow.PrimitiveTypes.Int64)
	if format == export.FormatArrow {
		tsType = arrow.FixedWidthTypes.Timestamp_ms
	}
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "card", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "ts", Type: tsType, Nullable: true},
		{Name: "amount", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "merchant", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for _, r := range rows {
		if r.bad == "no_card" {
			b.Field(0).AppendNull()
		} else {
			b.Field(0).(*array.StringBuilder).Append(r.ev.card)
		}
		switch {
		case r.bad == "no_time":
			b.Field(1).AppendNull()
		case format == export.FormatArrow:
			b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(r.ev.time))
		default:
			b.Field(1).(*array.Int64Builder).Append(r.ev.time)
		}
		b.Field(2).(*array.Float64Builder).Append(r.ev.amount)
		b.Field(3).(*array.StringBuilder).Append(r.ev.merchant)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	if format == export.FormatArrow {
		testenv.WriteArrowFile(t, path, schema, rec)
		return path
	}
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	tbl := array.NewTableFromRecords(schema, []arrow.RecordBatch{rec})
	defer tbl.Release()
	if err := pqarrow.WriteTable(tbl, fh, 1000, nil, pqarrow.DefaultWriterProps()); err != nil {
		t.Fatal(err)
	}
	return path
}

// backfillEnv is one project's online store and offline log.
type backfillEnv struct {
	project string
	r       *registry.Registry
	rc      *redis.Client
	store   *online.Store
	st      offline.Storage
	now     int64
}

func newBackfillEnv(t testing.TB, now int64) *backfillEnv {
	return newBackfillEnvOf(t, now, "txns")
}

// newBackfillEnvOf is newBackfillEnv with the source reading topic.
func newBackfillEnvOf(t testing.TB, now int64, topic string) *backfillEnv {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, backfillDefs, topic)})
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), ContextTimeoutEnabled: true})
	t.Cleanup(func() { rc.Close() })
	st, err := offline.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &backfillEnv{project: testenv.UniqueName(t, "backfill"), r: r, rc: rc, store: online.New(rc, online.Options{}), st: st, now: now}
}

// run backfills files with a new offline writer (as a new process would),
// collecting the dead letters.
func (e *backfillEnv) run(ctx context.Context, t testing.TB, files []string, cfg BackfillConfig) ([]BackfillResult, []BackfillLetter, error) {
	t.Helper()
	w, err := offline.OpenWriter(ctx, e.st, e.project, offline.Options{FlushRows: 700})
	if err != nil {
		t.Fatal(err)
	}
	var letters []BackfillLetter
	cfg.Project, cfg.Registry, cfg.Source, cfg.Store, cfg.Offline = e.project, e.r, e.r.Source("txns"), e.store, w
	cfg.Now = func() time.Time { return time.UnixMilli(e.now) }
	next := cfg.DeadLetters
	cfg.DeadLetters = func(l BackfillLetter) error {
		letters = append(letters, l)
		if next != nil {
			return next(l)
		}
		return nil
	}
	res, err := Backfill(ctx, cfg, files)
	return res, letters, err
}

// recentReference is card_recent:n_10m at t.
func recentReference(events []rawEvent, card string, t int64) int64 {
	const minute = 60 * 1000
	tile := func(x int64) int64 { return int64(math.Floor(float64(x) / minute)) }
	var n int64
	for _, e := range events {
		if e.card == card && e.time <= t && tile(e.time) > tile(t)-10 {
			n++
		}
	}
	return n
}

// checkOnline reads every card through serving at times from the backfill's
// clock to two hours after it, and compares with the references.
func (e *backfillEnv) checkOnline(ctx context.Context, t *testing.T, accepted []rawEvent, rng *rand.Rand) int {
	t.Helper()
	var clock int64
	snaps := staticSnapshot{&registry.Snapshot{VersionInfo: registry.VersionInfo{Version: 1}, Registry: e.r}}
	svc := serving.NewOnlineService(snaps, e.store, serving.OnlineOptions{Project: e.project, Now: func() time.Time { return time.UnixMilli(clock) }})
	names := []string{"card_txn:n_1h", "card_txn:sum_10m", "card_txn:merchants_1h", "card_txn:n_lifetime", "card_txn:last_merchant", "card_recent:n_10m"}
	var keys []*pb.EntityKey
	for c := range 16 { // c15 has no events
		keys = append(keys, &pb.EntityKey{JoinKeyValues: []*pb.Value{{Kind: &pb.Value_StringVal{StringVal: fmt.Sprintf("c%d", c)}}}})
	}
	compared := 0
	for round := range 30 {
		clock = e.now + rng.Int64N(int64(2*time.Hour/time.Millisecond))
		if round == 0 {
			clock = e.now
		}
		enc, err := svc.GetOnlineFeatures(ctx, &pb.GetOnlineFeaturesRequest{
			Kind: &pb.GetOnlineFeaturesRequest_Features{Features: &pb.FeatureList{Refs: names}}, Entities: keys})
		if err != nil {
			t.Fatal(err)
		}
		// The response comes encoded, for gRPC to send as it is.
		raw, err := proto.Marshal(enc)
		if err != nil {
			t.Fatal(err)
		}
		resp := &pb.GetOnlineFeaturesResponse{}
		if err := proto.Unmarshal(raw, resp); err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResults()) != len(keys) {
			t.Fatalf("%d results for %d entities", len(resp.GetResults()), len(keys))
		}
		for c, er := range resp.GetResults() {
			card := fmt.Sprintf("c%d", c)
			want := append(reference(accepted, card, clock), window.FeatureValue{Value: featurestore.Int64Value(recentReference(accepted, card, clock)), Status: window.StatusPresent})
			for f, got := range er.GetValues() {
				if !pbEqual(got, want[f]) {
					t.Fatalf("at %s card %s %s: got %v, want %v (%d)", fmtMs(clock), card, names[f], got, want[f].Value, want[f].Status)
				}
				compared++
			}
		}
	}
	return compared
}

// pbEqual compares a served value with a reference.
func pbEqual(got *pb.FeatureValue, want window.FeatureValue) bool {
	if int32(got.GetStatus()) != int32(want.Status) {
		return false
	}
	if want.Status != window.StatusPresent {
		return true
	}
	v := got.GetValue()
	switch want.Value.Kind() {
	case featurestore.KindInt64:
		return v.GetInt64Val() == want.Value.Int64()
	case featurestore.KindDouble:
		return math.Abs(v.GetDoubleVal()-want.Value.Double()) <= 1e-9*max(1, math.Abs(want.Value.Double()))
	case featurestore.KindString:
		return v.GetStringVal() == want.Value.Str()
	}
	return false
}

type staticSnapshot struct{ s *registry.Snapshot }

func (s staticSnapshot) Current() *registry.Snapshot { return s.s }

// logOf reads a project's offline log for the export.
type logOf struct {
	st      offline.Storage
	project string
}

func (l logOf) Scan(ctx context.Context, view string, until int64, fn func(arrow.RecordBatch) error) error {
	snap, err := offline.ReadSnapshot(ctx, l.st, l.project, view)
	if err != nil {
		return err
	}
	return offline.Scan(ctx, l.st, snap, snap.Files, func(_ offline.FileInfo, rec arrow.RecordBatch) error { return fn(rec) })
}

// checkExport exports card_txn for random (card, time) rows over the whole
// history from the offline log and compares each value with the reference.
func (e *backfillEnv) checkExport(ctx context.Context, t *testing.T, accepted []rawEvent, t0 int64, rng *rand.Rand) int {
	t.Helper()
	dir := t.TempDir()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "card_id", Type: arrow.BinaryTypes.String},
		{Name: export.DefaultTimestampColumn, Type: arrow.FixedWidthTypes.Timestamp_ms},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	type row struct {
		card string
		at   int64
	}
	var rows []row
	for range 600 {
		r := row{fmt.Sprintf("c%d", rng.IntN(16)), t0 + rng.Int64N(int64(4*time.Hour/time.Millisecond))}
		rows = append(rows, r)
		b.Field(0).(*array.StringBuilder).Append(r.card)
		b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(r.at))
	}
	rec := b.NewRecordBatch()
	b.Release()
	in := filepath.Join(dir, "entities.arrow")
	testenv.WriteArrowFile(t, in, schema, rec)
	rec.Release()
	out := filepath.Join(dir, "out.arrow")
	features := []string{"card_txn:n_1h", "card_txn:sum_10m", "card_txn:merchants_1h", "card_txn:n_lifetime", "card_txn:last_merchant", "card_recent:n_10m"}
	if _, err := export.Run(ctx, export.Options{Registry: e.r, Log: logOf{e.st, e.project}, Features: features,
		Entities: in, KeyColumns: map[string]string{"card_id": "card_id"}, Out: out, TempDir: dir}); err != nil {
		t.Fatal(err)
	}
	tf, err := export.OpenTableFile(out, export.FormatArrow, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	compared, i := 0, 0
	err = tf.Read(ctx, func(rec arrow.RecordBatch) error {
		for j := range int(rec.NumRows()) {
			r := rows[i]
			i++
			want := append(reference(accepted, r.card, r.at), window.FeatureValue{Value: featurestore.Int64Value(recentReference(accepted, r.card, r.at)), Status: window.StatusPresent})
			for f, name := range features {
				col := rec.Column(int(rec.Schema().FieldIndices(name)[0]))
				w := want[f]
				var got featurestore.Value
				if !col.IsNull(j) {
					switch c := col.(type) {
					case *array.Int64:
						got = featurestore.Int64Value(c.Value(j))
					case *array.Float64:
						got = featurestore.DoubleValue(c.Value(j))
					case *array.String:
						got = featurestore.StringValue(c.Value(j))
					}
				}
				wantV := w.Value
				if w.Status != window.StatusPresent {
					wantV = featurestore.Value{}
				}
				ok := got.Equal(wantV)
				if !ok && got.Kind() == featurestore.KindDouble && wantV.Kind() == featurestore.KindDouble {
					ok = math.Abs(got.Double()-wantV.Double()) <= 1e-9*max(1, math.Abs(wantV.Double()))
				}
				if !ok {
					return fmt.Errorf("export row %d (%s at %s) %s: got %v, want %v", i, r.card, fmtMs(r.at), name, got, wantV)
				}
				compared++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return compared
}

// TestBackfillFiles backfills a file of each format into real Redis and an
// offline directory, then compares online lookups (serving, controlled
// clock) and an export with brute-force references, checks the bad rows
// reported, and that running again changes nothing.
func TestBackfillFiles(t *testing.T) {
	for _, format := range []export.Format{export.FormatCSV, export.FormatParquet, export.FormatArrow} {
		t.Run(string(format), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			rows, t0, maxT := backfillRows(uint64(len(format)), 3000, format == export.FormatCSV)
			// Some rows hours after every other, and after the backfill's
			// clock (minutes after them) plus max_future_skew (1h).
			for i := 50; i < len(rows); i += 97 {
				if rows[i].bad == "" {
					rows[i].bad, rows[i].ev.time = "future", t0+int64(6*time.Hour/time.Millisecond)
				}
			}
			// And the last row, so that the file's last offset carries no
			// event: the offline log's position still reaches it.
			if last := &rows[len(rows)-1]; last.bad == "" {
				last.bad, last.ev.time = "future", t0+int64(6*time.Hour/time.Millisecond)
			}
			path := writeBackfillFile(t, t.TempDir(), format, rows)
			e := newBackfillEnv(t, maxT+5*60*1000)
			res, letters, err := e.run(ctx, t, []string{path}, BackfillConfig{ChunkRows: 256})
			if err != nil {
				t.Fatal(err)
			}
			var accepted []rawEvent
			wantRejected := map[Reason]int64{}
			var wantLetters []string
			for _, r := range rows {
				switch r.bad {
				case "":
					accepted = append(accepted, r.ev)
					continue
				case "no_time":
					wantRejected[ReasonMissingTime]++
					wantLetters = append(wantLetters, fmt.Sprintf("%d %s ", r.ev.offset+1, ReasonMissingTime))
				case "bad_amount":
					wantRejected[ReasonWrongType]++
					wantLetters = append(wantLetters, fmt.Sprintf("%d %s ", r.ev.offset+1, ReasonWrongType))
				case "future":
					wantRejected[ReasonFuture]++
					wantLetters = append(wantLetters, fmt.Sprintf("%d %s ", r.ev.offset+1, ReasonFuture))
				case "no_card":
					for _, v := range []string{"card_recent", "card_txn"} {
						wantLetters = append(wantLetters, fmt.Sprintf("%d %s %s", r.ev.offset+1, ReasonMissingKey, v))
					}
				}
			}
			var gotLetters []string
			for _, l := range letters {
				gotLetters = append(gotLetters, fmt.Sprintf("%d %s %s", l.Row, l.Reason, l.View))
				if l.File != path || l.Detail == "" {
					t.Errorf("letter %+v", l)
				}
			}
			slices.Sort(gotLetters)
			slices.Sort(wantLetters)
			if !slices.Equal(gotLetters, wantLetters) {
				t.Errorf("dead letters:\n got %q\nwant %q", gotLetters, wantLetters)
			}
			r0 := res[0]
			if fmt.Sprint(r0.Rejected) != fmt.Sprint(wantRejected) || r0.Rows != int64(len(rows)) || r0.Skipped != 0 {
				t.Errorf("result %+v, want %d rows, rejected %v", r0, len(rows), wantRejected)
			}
			if r0.Expired == 0 || r0.Duplicates != 0 || r0.Applied+r0.Expired != 2*int64(len(accepted)) {
				t.Errorf("result %+v: want expired > 0, applied + expired = %d", r0, 2*len(accepted))
			}
			rng := rand.New(rand.NewPCG(3, 4))
			n := e.checkOnline(ctx, t, accepted, rng)
			m := e.checkExport(ctx, t, accepted, t0, rng)
			t.Logf("%s: %d rows, %d accepted, %d applied online, %d expired; %d online and %d exported values equal the reference",
				format, len(rows), len(accepted), r0.Applied, r0.Expired, n, m)

			// Running again reads nothing: the log committed every row.
			res, letters, err = e.run(ctx, t, []string{path}, BackfillConfig{ChunkRows: 256})
			if err != nil {
				t.Fatal(err)
			}
			if r := res[0]; r.Rows != 0 || r.Skipped != int64(len(rows)) || r.Applied != 0 || len(letters) != 0 {
				t.Errorf("second run %+v, %d letters: want every row skipped", r, len(letters))
			}
			e.checkOnline(ctx, t, accepted, rng)
			e.checkExport(ctx, t, accepted, t0, rng)
		})
	}
}

// TestBackfillInterrupted stops backfills at several points (after some
// chunks are applied online and some are committed offline), runs them
// again, and checks that the outcome equals the references, as one run.
func TestBackfillInterrupted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rows, t0, maxT := backfillRows(9, 4000, true)
	path := writeBackfillFile(t, t.TempDir(), export.FormatCSV, rows)
	var accepted []rawEvent
	for _, r := range rows {
		if r.bad == "" {
			accepted = append(accepted, r.ev)
		}
	}
	e := newBackfillEnv(t, maxT+5*60*1000)
	for _, stopAfter := range []int{20, 45, 90} {
		runCtx, stop := context.WithCancel(ctx)
		n := 0
		res, _, err := e.run(runCtx, t, []string{path}, BackfillConfig{ChunkRows: 300, DeadLetters: func(BackfillLetter) error {
			if n++; n == stopAfter {
				stop()
			}
			return nil
		}})
		stop()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("stopped after %d letters: got %v, want context canceled", stopAfter, err)
		}
		t.Logf("stopped after %d letters: %+v", stopAfter, res[0])
	}
	res, _, err := e.run(ctx, t, []string{path}, BackfillConfig{ChunkRows: 300})
	if err != nil {
		t.Fatal(err)
	}
	r := res[0]
	if r.Skipped == 0 || r.Duplicates == 0 {
		t.Errorf("last run %+v: want rows skipped (committed offline) and duplicates (applied online only)", r)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	n := e.checkOnline(ctx, t, accepted, rng)
	m := e.checkExport(ctx, t, accepted, t0, rng)
	t.Logf("last run %+v; %d online and %d exported values equal the reference", r, n, m)
}

// commitWatch is a Storage that calls before ahead of each manifest entry it
// creates: ahead of each commit of the offline log.
type commitWatch struct {
	offline.Storage
	before func()
}

func (s *commitWatch) Create(ctx context.Context, name string, data []byte) error {
	if strings.Contains(name, "/_manifest/") {
		s.before()
	}
	return s.Storage.Create(ctx, name, data)
}

// TestBackfillSyncsDeadLettersBeforeCommits: a run resumed after a crash
// reads no row the offline log committed, so the letters of those rows must
// be durable (SyncDeadLetters) before the commit: every commit finds none
// unsynced.
func TestBackfillSyncsDeadLettersBeforeCommits(t *testing.T) {
	ctx := context.Background()
	rows, _, maxT := backfillRows(11, 4000, true)
	path := writeBackfillFile(t, t.TempDir(), export.FormatCSV, rows)
	e := newBackfillEnv(t, maxT+5*60*1000)
	unsynced, letters, commits := 0, 0, 0
	e.st = &commitWatch{Storage: e.st, before: func() {
		commits++
		if unsynced > 0 {
			t.Errorf("commit %d: %d dead letters not synced", commits, unsynced)
		}
	}}
	_, _, err := e.run(ctx, t, []string{path}, BackfillConfig{ChunkRows: 300,
		DeadLetters:     func(BackfillLetter) error { unsynced++; letters++; return nil },
		SyncDeadLetters: func() error { unsynced = 0; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if commits < 3 || letters == 0 {
		t.Fatalf("%d commits, %d letters: the test needs several of each", commits, letters)
	}
}

// TestReplaySinkSyncs: a replay's letters are durable once Send returns,
// before the applier applies the batch and saves its position.
func TestReplaySinkSyncs(t *testing.T) {
	var got []string
	s := &replaySink{rejected: map[Reason]int64{},
		fn:   func(l BackfillLetter) error { got = append(got, "letter "+l.File); return nil },
		sync: func() error { got = append(got, "sync"); return nil }}
	err := s.Send(context.Background(), []DeadLetter{{Message: kafka.Message{Topic: "t", Partition: 1}, Reason: ReasonLate},
		{Message: kafka.Message{Topic: "t", Partition: 2}, Reason: ReasonLate}})
	if want := []string{"letter kafka:t/1", "letter kafka:t/2", "sync"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Send: %v, %q; want %q", err, got, want)
	}
}

// TestBackfillFileErrors checks that a file that cannot be read as the
// source's events fails with an error naming the file and the column, and
// loads nothing.
func TestBackfillFileErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cases := []struct {
		name, csv, want string
	}{
		{"no amount", "card,ts,merchant\nc1,1,m\n", `no column "amount" (field of source "txns")`},
		{"no time", "card,amount,merchant\nc1,1,m\n", `no column "ts" (event time of source "txns")`},
		{"twice", "card,ts,amount,merchant,card\nc1,1,2,m,c2\n", `column "card" appears twice`},
	}
	e := newBackfillEnv(t, time.Now().UnixMilli())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".csv")
			if err := os.WriteFile(path, []byte(c.csv), 0o644); err != nil {
				t.Fatal(err)
			}
			_, letters, err := e.run(ctx, t, []string{path}, BackfillConfig{})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want an error naming %s and containing %s", err, path, c.want)
			}
			if len(letters) != 0 {
				t.Errorf("letters %v", letters)
			}
		})
	}
	// A typed column that cannot hold the declared kind.
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "card", Type: arrow.BinaryTypes.String}, {Name: "ts", Type: arrow.FixedWidthTypes.Boolean},
		{Name: "amount", Type: arrow.PrimitiveTypes.Float64}, {Name: "merchant", Type: arrow.BinaryTypes.String},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	b.Field(0).(*array.StringBuilder).Append("c1")
	b.Field(1).(*array.BooleanBuilder).Append(true)
	b.Field(2).(*array.Float64Builder).Append(1)
	b.Field(3).(*array.StringBuilder).Append("m")
	rec := b.NewRecordBatch()
	path := filepath.Join(dir, "bool_time.arrow")
	testenv.WriteArrowFile(t, path, schema, rec)
	_, _, err := e.run(ctx, t, []string{path}, BackfillConfig{})
	if want := `column "ts" (event time of source "txns") has type bool, which cannot hold event time (epoch_ms)`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %s", err, want)
	}
	// A malformed batch: the merchant column's offsets go back, which the
	// IPC reader takes (the buffers have the sizes it checks) and reading
	// the values would panic on.
	merchants := array.MakeFromData(array.NewData(arrow.BinaryTypes.String, 2, []*memory.Buffer{nil,
		memory.NewBufferBytes(arrow.Int32Traits.CastToBytes([]int32{0, 5, 3})), memory.NewBufferBytes([]byte("m1m2m"))}, nil, 0, 0))
	good := arrow.NewSchema([]arrow.Field{
		{Name: "card", Type: arrow.BinaryTypes.String}, {Name: "ts", Type: arrow.PrimitiveTypes.Int64},
		{Name: "amount", Type: arrow.PrimitiveTypes.Float64}, {Name: "merchant", Type: arrow.BinaryTypes.String},
	}, nil)
	gb := array.NewRecordBuilder(memory.DefaultAllocator, good)
	gb.Field(0).(*array.StringBuilder).AppendValues([]string{"c1", "c2"}, nil)
	gb.Field(1).(*array.Int64Builder).AppendValues([]int64{1, 2}, nil)
	gb.Field(2).(*array.Float64Builder).AppendValues([]float64{1, 2}, nil)
	gb.Field(3).(*array.StringBuilder).AppendValues([]string{"m", "m"}, nil)
	ok := gb.NewRecordBatch()
	bad := array.NewRecordBatch(good, []arrow.Array{ok.Column(0), ok.Column(1), ok.Column(2), merchants}, 2)
	path = filepath.Join(dir, "malformed.arrow")
	testenv.WriteArrowFile(t, path, good, bad)
	_, letters, err := e.run(ctx, t, []string{path}, BackfillConfig{})
	if want := `malformed.arrow: record batch 1 is malformed: column "merchant": `; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want an error containing %s", err, want)
	}
	if len(letters) != 0 {
		t.Errorf("letters %v", letters)
	}
}

// cancelAfterCommit cancels a context once a manifest entry has been
// created: a process killed right after its first offline commit.
type cancelAfterCommit struct {
	offline.Storage
	cancel func()
}

func (s *cancelAfterCommit) Create(ctx context.Context, name string, data []byte) error {
	err := s.Storage.Create(ctx, name, data)
	if err == nil && strings.Contains(name, "/_manifest/") {
		s.cancel()
	}
	return err
}

// TestBackfillLostStreamFails: while run A of a backfill reads a file,
// another run B of the same file (started by mistake in a second terminal,
// or a retried job whose first pod is still alive) resumes where A's
// offline log stands, commits one chunk more and is killed. A's final
// flush then finds the partition moved by another writer and drops its
// buffered rows, as a writer that lost its partition does: A must fail,
// saying to run the backfill again, not report the file backfilled; and
// run again, the backfill completes the log.
func TestBackfillLostStreamFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rows, _, maxT := backfillRows(41, 2000, false)
	path := writeBackfillFile(t, t.TempDir(), export.FormatCSV, rows)
	e := newBackfillEnv(t, maxT+5*60*1000)
	topic, err := BackfillTopic(path)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	progress := func(p BackfillProgress) {
		if p.Final {
			return
		}
		once.Do(func() {
			// Run B, killed after its first offline commit.
			bctx, bcancel := context.WithCancel(ctx)
			defer bcancel()
			bst := &cancelAfterCommit{Storage: e.st, cancel: bcancel}
			bw, err := offline.OpenWriter(bctx, bst, e.project, offline.Options{FlushRows: 50, OrphanGrace: time.Hour})
			if err != nil {
				t.Errorf("writer of B: %v", err)
				return
			}
			_, err = Backfill(bctx, BackfillConfig{Project: e.project, Registry: e.r, Source: e.r.Source("txns"), Store: e.store,
				Offline: bw, ChunkRows: 50, Now: func() time.Time { return time.UnixMilli(e.now) }}, []string{path})
			t.Logf("run B (killed after its first commit): %v", err)
		})
	}
	_, _, err = e.run(ctx, t, []string{path}, BackfillConfig{ChunkRows: 300, Progress: progress})
	if !errors.Is(err, offline.ErrStreamLost) || !strings.Contains(err.Error(), "run the backfill again") {
		t.Fatalf("run A: %v, want an error wrapping ErrStreamLost that says to run the backfill again", err)
	}
	t.Logf("run A: %v", err)
	if _, _, err := e.run(ctx, t, []string{path}, BackfillConfig{ChunkRows: 300}); err != nil {
		t.Fatalf("run again: %v", err)
	}
	accepted := int64(0)
	for _, r := range rows {
		if r.bad == "" {
			accepted++
		}
	}
	for _, view := range []string{"card_txn", "card_recent"} {
		snap, err := offline.ReadSnapshot(ctx, e.st, e.project, view)
		if err != nil {
			t.Fatal(err)
		}
		pos, ok := snap.Position(topic, 0)
		var logged int64
		for _, f := range snap.Files {
			logged += f.Rows
		}
		if !ok || pos.Offset != int64(len(rows)-1) || logged != accepted {
			t.Errorf("view %s after the second run: position %d (ok %v), %d rows logged; want %d, %d", view, pos.Offset, ok, logged, len(rows)-1, accepted)
		}
	}
}
