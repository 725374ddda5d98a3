package export

import (
	"cmp"
	"context"
	"encoding/json"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/ingest"
)

// TestExportEqualsOnlineLookups replays random events through ingest's
// applier into a real Redis, in event-time order, and at each row's time
// reads the row's keys as serving does (online.ReadViews at that time):
// every exported value must equal the online one, and every null an online
// value without status present. The events given to the export are the
// same ones, with the same Kafka positions.
func TestExportEqualsOnlineLookups(t *testing.T) {
	addr := testenv.RedisAddr(t)
	rc := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := testRegistry(t)
	project := testenv.UniqueName(t, "export")
	store := online.New(rc, online.Options{})
	src := r.Source("txns")
	a, err := ingest.NewApplier(project, r, src, store, ingest.NewPositions(rc, project), nil, nil)
	if err != nil {
		t.Fatal(err)
	}

	// Events carry every key, so that each reaches the three views; times
	// on a coarse grid, so that many are equal.
	rng := rand.New(rand.NewPCG(11, 11))
	type event struct {
		raw     rawEvent
		payload []byte
	}
	var evs []event
	for range 3000 {
		e := rawEvent{time: t0 + rng.Int64N(3_000)*1_000, partition: int32(rng.IntN(3)), fields: map[string]any{}, keys: map[string]any{
			"user_id": users[rng.IntN(len(users)-1)], "shop_id": shops[rng.IntN(len(shops))],
			"bank": banks[rng.IntN(2)], "account_no": accounts[rng.IntN(2)]}}
		if rng.IntN(8) > 0 {
			e.fields["amount"] = float64(rng.IntN(100000))/100 + 0.25
		}
		if rng.IntN(8) > 0 {
			e.fields["qty"] = rng.Int64N(10) - 2
		}
		if rng.IntN(6) > 0 {
			e.fields["cat"] = []string{"a", "b", "c", "d"}[rng.IntN(4)]
		}
		if rng.IntN(5) > 0 {
			e.fields["ok"] = rng.IntN(2) == 0
		}
		evs = append(evs, event{raw: e})
	}
	// Apply order: event time; a partition's offsets follow it, so no
	// event is late for its partition.
	slices.SortStableFunc(evs, func(x, y event) int { return cmp.Compare(x.raw.time, y.raw.time) })
	next := map[int32]int64{}
	for i := range evs {
		e := &evs[i].raw
		e.offset = next[e.partition]
		next[e.partition]++
		m := map[string]any{"ts": e.time}
		for k, v := range e.keys {
			m[k] = v
		}
		for k, v := range e.fields {
			m[k] = v
		}
		if evs[i].payload, err = json.Marshal(m); err != nil {
			t.Fatal(err)
		}
	}

	// Rows, visited in time order.
	type row struct {
		idx  int
		vals []any
	}
	s := &scenario{events: map[string][]rawEvent{}}
	s.fields = []arrow.Field{
		{Name: "user_id", Type: arrow.BinaryTypes.String},
		{Name: "shop_id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "bank", Type: arrow.BinaryTypes.String},
		{Name: "account_no", Type: arrow.PrimitiveTypes.Int64},
		{Name: DefaultTimestampColumn, Type: arrow.PrimitiveTypes.Int64},
	}
	for range 400 {
		ts := t0 - 60_000 + rng.Int64N(3_200_000)
		if rng.IntN(3) == 0 {
			ts = evs[rng.IntN(len(evs))].raw.time + []int64{0, -1, 300_000, 300_001}[rng.IntN(4)]
		}
		s.rows = append(s.rows, []any{users[rng.IntN(len(users))], shops[rng.IntN(len(shops))], banks[rng.IntN(2)], accounts[rng.IntN(2)], ts})
	}
	for _, e := range evs {
		for _, v := range []string{"by_user", "by_shop", "by_account"} {
			s.events[v] = append(s.events[v], e.raw)
		}
	}
	order := make([]row, len(s.rows))
	for i, vals := range s.rows {
		order[i] = row{i, vals}
	}
	slices.SortStableFunc(order, func(x, y row) int { return cmp.Compare(x.vals[4].(int64), y.vals[4].(int64)) })

	refs := r.Service("all").Resolved()
	views := []string{"by_user", "by_shop", "by_account"}
	layouts := map[string]*online.ViewLayout{}
	for _, v := range views {
		w, err := window.Compile(r.View(v), src)
		if err != nil {
			t.Fatal(err)
		}
		l := online.NewViewLayout(project, v, w, src.AllowedLateness.Std())
		layouts[v] = &l
	}
	onlineVals := make([][]any, len(s.rows))
	applied := 0
	for _, rw := range order {
		ts := rw.vals[4].(int64)
		byPart := map[int32][]kafka.Message{}
		for ; applied < len(evs) && evs[applied].raw.time <= ts; applied++ {
			e := evs[applied]
			byPart[e.raw.partition] = append(byPart[e.raw.partition], kafka.Message{Topic: "txns", Partition: int(e.raw.partition), Offset: e.raw.offset, Value: e.payload, HighWaterMark: e.raw.offset + 1})
		}
		for p, msgs := range byPart {
			if err := a.Apply(ctx, "txns", int(p), msgs); err != nil {
				t.Fatal(err)
			}
		}
		keys := map[string]featurestore.EntityKey{
			"by_user":    featurestore.StringKey(rw.vals[0].(string)),
			"by_shop":    featurestore.Int64Key(rw.vals[1].(int64)),
			"by_account": mustKey(t, featurestore.StringPart(rw.vals[2].(string)), featurestore.Int64Part(rw.vals[3].(int64))),
		}
		var reqs []online.ViewRead
		for _, v := range views {
			reqs = append(reqs, online.ViewRead{Layout: layouts[v], Entity: keys[v]})
		}
		vals, err := online.ReadViews(ctx, store, reqs, ts)
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range refs {
			vi := slices.Index(views, ref.View)
			fv := vals[vi][layouts[ref.View].View.FeatureIndex(ref.Feature)]
			onlineVals[rw.idx] = append(onlineVals[rw.idx], onlineValue(fv))
		}
	}

	dir := t.TempDir()
	in := filepath.Join(dir, "rows.arrow")
	(&testTable{fields: s.fields, rows: s.rows}).writeArrow(t, in, 100)
	out := filepath.Join(dir, "out.parquet")
	if _, err := Run(ctx, Options{Registry: r, Log: s.log(t, rng, r), Service: "all", Entities: in, Out: out, TempDir: dir, Memory: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	tbl := readTable(t, out)
	defer tbl.Release()
	mismatches, values := 0, 0
	for i := range s.rows {
		for j, ref := range refs {
			values++
			if got, want := cell(t, tbl, ref.String(), int64(i)), onlineVals[i][j]; !sameValue(got, want) {
				mismatches++
				if mismatches <= 10 {
					t.Errorf("row %d %v: %s exported %#v, online %#v", i, s.rows[i], ref, got, want)
				}
			}
		}
	}
	t.Logf("%d values of %d rows compared with online lookups: %d mismatches", values, len(s.rows), mismatches)
	// The reference agrees too, so neither side is wrong in the same way.
	checkOutput(t, out, s, refs, s.expected(r, refs))
}

func mustKey(t *testing.T, parts ...featurestore.KeyPart) featurestore.EntityKey {
	t.Helper()
	k, err := featurestore.NewEntityKey(parts...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// onlineValue renders an online feature value as the export's cell: nil
// unless present.
func onlineValue(fv window.FeatureValue) any {
	if fv.Status != window.StatusPresent {
		return nil
	}
	v := fv.Value
	switch v.Kind() {
	case featurestore.KindString, featurestore.KindInt64, featurestore.KindDouble, featurestore.KindBool:
		return v.Any()
	}
	out := []any{}
	switch v.Kind() {
	case featurestore.KindStringList:
		for _, x := range v.StringList() {
			out = append(out, x)
		}
	case featurestore.KindInt64List:
		for _, x := range v.Int64List() {
			out = append(out, x)
		}
	case featurestore.KindDoubleList:
		for _, x := range v.DoubleList() {
			out = append(out, x)
		}
	case featurestore.KindBoolList:
		for _, x := range v.BoolList() {
			out = append(out, x)
		}
	}
	return out
}
