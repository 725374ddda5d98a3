package export

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// Edge cases of the point-in-time export checked against the
// brute-force reference (refFeature).

const edgeDefs = `
kind: Entity
name: user
join_keys: [{name: user_id, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {user_id: user_id}
fields: {amount: double, qty: int64, cat: string, ok: bool}
allowed_lateness: 0s
---
kind: FeatureView
name: win
entity: user
source: txns
tile: 1m
ttl: 2m
features:
  - {name: n_1m, aggregation: count, window: 1m}
  - {name: n_3m, aggregation: count, window: 3m}
  - {name: qty_sum_3m, aggregation: sum, field: qty, window: 3m}
  - {name: amount_mean_3m, aggregation: mean, field: amount, window: 3m}
  - {name: amount_std_3m, aggregation: stddev, field: amount, window: 3m}
  - {name: qty_min_3m, aggregation: min, field: qty, window: 3m}
  - {name: amount_max_3m, aggregation: max, field: amount, window: 3m}
  - {name: cat_last_3m, aggregation: last, field: cat, window: 3m}
  - {name: cat_last2_3m, aggregation: last_n, field: cat, n: 2, window: 3m}
  - {name: cat_distinct_3m, aggregation: count_distinct, field: cat, window: 3m}
  - {name: n_a_3m, aggregation: count, window: 3m, filter: [{field: cat, op: eq, value: a}]}
  - {name: qty_life, aggregation: sum, field: qty, window: lifetime}
  - {name: n_life, aggregation: count, window: lifetime}
  - {name: amount, field: amount, type: double}
  - {name: cat, field: cat, type: string}
---
kind: FeatureView
name: lastonly
entity: user
source: txns
ttl: 2m
features:
  - {name: amount, field: amount, type: double}
  - {name: cat, field: cat, type: string}
---
kind: FeatureView
name: lastfilt
entity: user
source: txns
ttl: 2m
features:
  - {name: amount, field: amount, type: double, filter: [{field: cat, op: ne, value: b}]}
`

func edgeRegistry(t testing.TB) *registry.Registry {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(edgeDefs)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// edgeRun exports features of the rows (user_id, time in ms) against the
// events (the same for each view named), and compares every value with the
// reference.
func edgeRun(t *testing.T, r *registry.Registry, views []string, evs []rawEvent, rows [][]any) {
	t.Helper()
	l := &memLog{batches: map[string][]arrow.RecordBatch{}}
	for _, v := range views {
		l.batches[v] = []arrow.RecordBatch{logBatch(t, r, "p", v, evs)}
	}
	s := &scenario{events: map[string][]rawEvent{}, rows: rows, fields: []arrow.Field{
		{Name: "user_id", Type: arrow.BinaryTypes.String},
		{Name: DefaultTimestampColumn, Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
	}}
	var feats []string
	var refs []registry.FeatureRef
	for _, v := range views {
		s.events[v] = evs
		feats = append(feats, v+":*")
		for _, f := range r.View(v).Features {
			refs = append(refs, registry.FeatureRef{View: v, Feature: f.Name})
		}
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.arrow")
	(&testTable{fields: s.fields, rows: s.rows}).writeArrow(t, in, 1000)
	out := filepath.Join(dir, "out.arrow")
	if _, err := Run(context.Background(), Options{Registry: r, Log: l, Features: feats, Entities: in, Out: out, TempDir: dir, Parallelism: 1}); err != nil {
		t.Fatal(err)
	}
	checkOutput(t, out, s, refs, s.expected(r, refs))
}

func edgeEvent(time int64, part int32, off int64, user string, fields map[string]any) rawEvent {
	return rawEvent{time: time, partition: part, offset: off, keys: map[string]any{"user_id": user}, fields: fields}
}

// TestExportNegativeTimes: events and rows before 1970, on and around
// tile boundaries and TTL boundaries.
func TestExportNegativeTimes(t *testing.T) {
	r := edgeRegistry(t)
	const m = 60_000
	evs := []rawEvent{
		edgeEvent(-3*m-1, 0, 1, "u", map[string]any{"qty": int64(1), "amount": 1.5, "cat": "a"}),
		edgeEvent(-3*m, 0, 2, "u", map[string]any{"qty": int64(2), "amount": 2.5, "cat": "b"}),
		edgeEvent(-2*m-1, 0, 3, "u", map[string]any{"qty": int64(4), "amount": -1.0, "cat": "a"}),
		edgeEvent(-m, 1, 1, "u", map[string]any{"qty": int64(8), "cat": "c"}),
		edgeEvent(-1, 1, 2, "u", map[string]any{"qty": int64(16), "amount": 7.25}),
		edgeEvent(0, 1, 3, "u", map[string]any{"qty": int64(32), "amount": 3.0, "cat": "d"}),
		edgeEvent(1, 2, 1, "u", map[string]any{"qty": int64(64), "amount": 0.5, "cat": "a"}),
		edgeEvent(-5*m, 2, 2, "v", map[string]any{"qty": int64(5), "amount": 5.0, "cat": "z"}),
	}
	var rows [][]any
	for _, ts := range []int64{-10 * m, -5*m - 1, -5 * m, -3*m - 2, -3*m - 1, -3 * m, -3*m + 1, -2*m - 1, -2 * m,
		-m - 1, -m, -m + 1, -2, -1, 0, 1, 2, m - 1, m, 2*m - 1, 2 * m, 2*m + 1, 3 * m, 5 * m} {
		rows = append(rows, []any{"u", ts}, []any{"v", ts}, []any{"w", ts})
	}
	edgeRun(t, r, []string{"win", "lastonly", "lastfilt"}, evs, rows)
}

// onlineValue computes, as ingest and serving do with package window, the
// features of view at time t from every event of the key up to t, and
// returns them as output cells (nil where not present).
func onlineValues(t *testing.T, r *registry.Registry, view string, evs []rawEvent, user string, at int64) map[string]any {
	t.Helper()
	v := r.View(view)
	w, err := window.Compile(v, r.Source(v.Source))
	if err != nil {
		t.Fatal(err)
	}
	tiles := map[int64]*window.TileState{}
	life, last := w.NewLifetimeState(), w.NewLastValues()
	for _, e := range evs {
		if e.keys["user_id"] != user || e.time > at {
			continue
		}
		we := window.Event{Time: e.time, Partition: e.partition, Offset: e.offset, Fields: make([]featurestore.Value, len(w.Fields()))}
		for i, f := range w.Fields() {
			if x, ok := e.fields[f.Name]; ok && x != nil {
				switch x := x.(type) {
				case string:
					we.Fields[i] = featurestore.StringValue(x)
				case int64:
					we.Fields[i] = featurestore.Int64Value(x)
				case float64:
					we.Fields[i] = featurestore.DoubleValue(x)
				case bool:
					we.Fields[i] = featurestore.BoolValue(x)
				}
			}
		}
		if w.HasPart(window.PartWindow) {
			k := w.TileOf(e.time)
			if tiles[k] == nil {
				tiles[k] = w.NewTileState(k)
			}
			if err := tiles[k].Add(&we); err != nil {
				t.Fatal(err)
			}
		}
		life.Add(&we)
		last.Add(&we)
	}
	var ts []*window.TileState
	for _, x := range tiles {
		ts = append(ts, x)
	}
	res, err := w.NewReader().Read(at, ts, life, last)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	for i, f := range w.Features() {
		fv := res[i]
		if fv.Status != window.StatusPresent {
			out[f.Name] = nil
			continue
		}
		switch x := fv.Value; x.Kind() {
		case featurestore.KindString:
			out[f.Name] = x.Str()
		case featurestore.KindInt64:
			out[f.Name] = x.Int64()
		case featurestore.KindDouble:
			out[f.Name] = x.Double()
		case featurestore.KindBool:
			out[f.Name] = x.Bool()
		case featurestore.KindStringList:
			l := []any{}
			for _, s := range x.StringList() {
				l = append(l, s)
			}
			out[f.Name] = l
		case featurestore.KindInt64List:
			l := []any{}
			for _, s := range x.Int64List() {
				l = append(l, s)
			}
			out[f.Name] = l
		case featurestore.KindDoubleList:
			l := []any{}
			for _, s := range x.DoubleList() {
				l = append(l, s)
			}
			out[f.Name] = l
		default:
			t.Fatalf("kind %s", x.Kind())
		}
	}
	return out
}

// edgeOnline exports the views' features for rows and compares them with
// onlineValues; events are given to the log in logs (several batches, as
// several files or topics would give them).
func edgeOnline(t *testing.T, r *registry.Registry, views []string, logs [][]rawEvent, rows [][]any, opts ...func(*Options)) {
	t.Helper()
	l := &memLog{batches: map[string][]arrow.RecordBatch{}}
	var all []rawEvent
	for _, evs := range logs {
		all = append(all, evs...)
		for _, v := range views {
			l.batches[v] = append(l.batches[v], logBatch(t, r, "p", v, evs))
		}
	}
	fields := []arrow.Field{
		{Name: "user_id", Type: arrow.BinaryTypes.String},
		{Name: DefaultTimestampColumn, Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
	}
	var feats []string
	for _, v := range views {
		feats = append(feats, v+":*")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.arrow")
	(&testTable{fields: fields, rows: rows}).writeArrow(t, in, 1000)
	out := filepath.Join(dir, "out.arrow")
	o := Options{Registry: r, Log: l, Features: feats, Entities: in, Out: out, TempDir: dir, Parallelism: 1}
	for _, f := range opts {
		f(&o)
	}
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	tbl := readTable(t, out)
	defer tbl.Release()
	bad := 0
	for i, row := range rows {
		for _, v := range views {
			want := onlineValues(t, r, v, all, row[0].(string), row[1].(int64))
			for _, f := range r.View(v).Features {
				got := cell(t, tbl, v+":"+f.Name, int64(i))
				if !sameValue(got, want[f.Name]) {
					bad++
					if bad < 20 {
						t.Errorf("row %d %v: %s:%s = %#v, online %#v", i, row, v, f.Name, got, want[f.Name])
					}
				}
			}
		}
	}
}

// TestExportTiesAcrossTopics: events of two topics (a backfill's
// pseudo-topic and Kafka's) sharing an order key, with other values.
func TestExportTiesAcrossTopics(t *testing.T) {
	r := edgeRegistry(t)
	const b = 1_795_687_200_000
	kafka := []rawEvent{
		edgeEvent(b+10, 0, 5, "u", map[string]any{"qty": int64(1), "amount": 1.0, "cat": "x"}),
		edgeEvent(b+20, 0, 6, "u", map[string]any{"qty": int64(2), "amount": 9.0}),
		edgeEvent(b+30, 1, 1, "u", map[string]any{"qty": int64(3), "amount": 2.0, "cat": "b"}),
	}
	backfill := []rawEvent{
		edgeEvent(b+10, 0, 5, "u", map[string]any{"qty": int64(10), "amount": 3.0, "cat": "a"}),
		edgeEvent(b+20, 0, 6, "u", map[string]any{"qty": int64(20), "cat": "y"}),
		edgeEvent(b+30, 1, 1, "u", map[string]any{"qty": int64(30), "amount": 1.0, "cat": "a"}),
	}
	var rows [][]any
	for _, ts := range []int64{b + 9, b + 10, b + 15, b + 20, b + 25, b + 30, b + 31, b + 2*60_000 + 30, b + 2*60_000 + 31} {
		rows = append(rows, []any{"u", ts})
	}
	for _, order := range [][][]rawEvent{{kafka, backfill}, {backfill, kafka}} {
		edgeOnline(t, r, []string{"win", "lastonly", "lastfilt"}, order, rows)
	}
}

// TestExportRandomOnline: random events (twins of other topics, nulls,
// NaN, infinities, negative times, equal times) and rows, the export
// against onlineValues.
func TestExportRandomOnline(t *testing.T) {
	r := edgeRegistry(t)
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 99))
		base := []int64{-7_200_000, 0, 1_795_687_200_000, -1}[seed%4]
		users := []string{"u", "v", "w", "x"}
		var kafka, backfill []rawEvent
		offs := map[int32]int64{}
		val := func() map[string]any {
			f := map[string]any{}
			if rng.IntN(5) > 0 {
				f["amount"] = []float64{1.5, -2.25, math.NaN(), math.Inf(1), 0, math.Copysign(0, -1), 1e300, 3}[rng.IntN(8)]
				if rng.IntN(3) > 0 {
					f["amount"] = float64(rng.IntN(1000)) / 8
				}
			}
			if rng.IntN(5) > 0 {
				f["qty"] = rng.Int64N(20) - 5
			}
			if rng.IntN(4) > 0 {
				f["cat"] = []string{"a", "b", "c"}[rng.IntN(3)]
			}
			return f
		}
		for range 150 {
			p := int32(rng.IntN(3))
			offs[p]++
			tm := base + rng.Int64N(12*60_000)
			if rng.IntN(3) == 0 {
				tm -= ((tm % 30_000) + 30_000) % 30_000
			}
			e := edgeEvent(tm, p, offs[p], users[rng.IntN(3)], val())
			kafka = append(kafka, e)
			if rng.IntN(5) == 0 {
				tw := e
				tw.fields = val()
				backfill = append(backfill, tw)
			}
		}
		var rows [][]any
		for range 120 {
			var ts int64
			if rng.IntN(2) == 0 {
				e := kafka[rng.IntN(len(kafka))]
				ts = e.time + []int64{0, 1, -1, 120_000, 120_001, 60_000, -60_000}[rng.IntN(7)]
			} else {
				ts = base - 60_000 + rng.Int64N(15*60_000)
			}
			if rng.IntN(4) == 0 {
				ts -= ((ts % 60_000) + 60_000) % 60_000
			}
			rows = append(rows, []any{users[rng.IntN(len(users))], ts})
			if rng.IntN(8) == 0 {
				rows = append(rows, rows[len(rows)-1])
			}
		}
		edgeOnline(t, r, []string{"win", "lastonly", "lastfilt"}, [][]rawEvent{kafka, backfill}, rows)
		if t.Failed() {
			t.Fatalf("seed %d", seed)
		}
	}
}

// TestNegativeRowTimeUnits: row times before 1970 in seconds,
// microseconds and nanoseconds (Arrow) and in CSV text are rounded down to
// the millisecond: a row 1 µs before the epoch sees an event at -1 ms and
// not one at 0.
func TestNegativeRowTimeUnits(t *testing.T) {
	r := edgeRegistry(t)
	l := &memLog{batches: map[string][]arrow.RecordBatch{"win": {logBatch(t, r, "p", "win", []rawEvent{
		edgeEvent(-1, 0, 1, "u", map[string]any{"qty": int64(1)}),
		edgeEvent(0, 0, 2, "u", map[string]any{"qty": int64(10)}),
		edgeEvent(-2000, 0, 3, "u", map[string]any{"qty": int64(100)}),
	})}}}
	dir := t.TempDir()
	check := func(t *testing.T, in string, want []int64) {
		t.Helper()
		out := filepath.Join(dir, "out.arrow")
		if _, err := Run(context.Background(), Options{Registry: r, Log: l, Features: []string{"win:qty_life"}, Entities: in, Out: out, TempDir: dir}); err != nil {
			t.Fatal(err)
		}
		tbl := readTable(t, out)
		defer tbl.Release()
		for i, w := range want {
			if got := cell(t, tbl, "win:qty_life", int64(i)); got != w {
				t.Errorf("row %d: %v, want %d", i, got, w)
			}
		}
	}
	cases := []struct {
		name string
		typ  arrow.DataType
		vals []any
		want []int64
	}{
		{"us", &arrow.TimestampType{Unit: arrow.Microsecond}, []any{int64(-1), int64(-1001), int64(0), int64(-2_000_001)}, []int64{101, 100, 111, 0}},
		{"ns", &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "America/New_York"}, []any{int64(-1), int64(-1_000_001), int64(0), int64(-2_000_000_001)}, []int64{101, 100, 111, 0}},
		{"s", &arrow.TimestampType{Unit: arrow.Second}, []any{int64(-1), int64(-2), int64(0), int64(-3)}, []int64{100, 100, 111, 0}},
		{"int64", arrow.PrimitiveTypes.Int64, []any{int64(-1), int64(-2), int64(0), int64(-2001)}, []int64{101, 100, 111, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := filepath.Join(dir, c.name+".arrow")
			var rows [][]any
			for _, v := range c.vals {
				rows = append(rows, []any{"u", v})
			}
			(&testTable{fields: []arrow.Field{{Name: "user_id", Type: arrow.BinaryTypes.String}, {Name: "event_timestamp", Type: c.typ}}, rows: rows}).writeArrow(t, in, 10)
			check(t, in, c.want)
		})
	}
	t.Run("csv", func(t *testing.T) {
		in := filepath.Join(dir, "rows.csv")
		csv := "user_id,event_timestamp\nu,1969-12-31T23:59:59.999999Z\nu,1970-01-01T00:59:59.998999+01:00\nu,1970-01-01T00:00:00Z\nu,1969-12-31T19:59:57.999-04:00\n"
		if err := os.WriteFile(in, []byte(csv), 0o644); err != nil {
			t.Fatal(err)
		}
		check(t, in, []int64{101, 100, 111, 0})
	})
}

// TestKeysAndViewsWithoutEvents: views whose log holds no batch at all, rows of keys
// without events: counts and sums 0, last_n empty, the rest null.
func TestKeysAndViewsWithoutEvents(t *testing.T) {
	r := edgeRegistry(t)
	rows := [][]any{{"u", int64(0)}, {"u", int64(0)}, {"v", int64(-5)}, {"u", int64(1_795_687_200_000)}}
	edgeOnline(t, r, []string{"win", "lastonly", "lastfilt"}, nil, rows)
}

// TestReferenceBefore1970: the reference scenario of
// TestExportMatchesReference moved to straddle the epoch (most events and
// rows before 1970), under a roomy and a tiny memory budget.
func TestReferenceBefore1970(t *testing.T) {
	r := testRegistry(t)
	refs := r.Service("all").Resolved()
	for i, mem := range []int64{0, 1 << 20} {
		rng := rand.New(rand.NewPCG(uint64(100+i), 7))
		s := randomScenario(rng, 3000, 1500)
		shift := int64(-t0 - 30*60_000 - 1234) // t0 lands 30m and a bit before the epoch
		for v, evs := range s.events {
			evs = append([]rawEvent(nil), evs...)
			for j := range evs {
				evs[j].time += shift
			}
			s.events[v] = evs
		}
		for _, row := range s.rows {
			row[len(row)-1] = row[len(row)-1].(int64) + shift
		}
		dir := t.TempDir()
		in := filepath.Join(dir, "rows.arrow")
		(&testTable{fields: s.fields, rows: s.rows}).writeArrow(t, in, 500)
		out := filepath.Join(dir, "out.arrow")
		if _, err := Run(context.Background(), Options{Registry: r, Log: s.log(t, rng, r), Service: "all", Entities: in, Out: out,
			Memory: mem, Parallelism: 2, TempDir: dir}); err != nil {
			t.Fatal(err)
		}
		checkOutput(t, out, s, refs, s.expected(r, refs))
	}
}

// TestExportLargeOnline: many keys and events (past the radix sort's
// threshold) under a tiny memory budget (groups split again), against
// onlineValues, with twins of another topic and rows on boundaries.
func TestExportLargeOnline(t *testing.T) {
	r := edgeRegistry(t)
	rng := rand.New(rand.NewPCG(5, 5))
	const base = -600_000
	var users []string
	for i := range 40 {
		users = append(users, fmt.Sprintf("k%d", i))
	}
	var kafka, backfill []rawEvent
	offs := map[int32]int64{}
	for range 9000 {
		p := int32(rng.IntN(4))
		offs[p]++
		f := map[string]any{"qty": rng.Int64N(9), "cat": []string{"a", "b", "c", "d"}[rng.IntN(4)]}
		if rng.IntN(6) > 0 {
			f["amount"] = float64(rng.IntN(400)) / 4
		}
		e := edgeEvent(base+rng.Int64N(20*60_000)/1000*1000, p, offs[p], users[rng.IntN(len(users))], f)
		kafka = append(kafka, e)
		if rng.IntN(10) == 0 {
			tw := e
			tw.fields = map[string]any{"qty": int64(7), "amount": float64(rng.IntN(400)) / 4, "cat": "b"}
			backfill = append(backfill, tw)
		}
	}
	var rows [][]any
	for range 400 {
		e := kafka[rng.IntN(len(kafka))]
		ts := e.time + []int64{0, 1, -1, 120_000, 120_001, 60_000 - e.time%60_000}[rng.IntN(6)]
		rows = append(rows, []any{e.keys["user_id"], ts})
	}
	edgeOnline(t, r, []string{"win", "lastonly", "lastfilt"}, [][]rawEvent{kafka[:4500], backfill, kafka[4500:]}, rows, func(o *Options) {
		o.Memory, o.Parallelism = 1<<20, 2
	})
}

// TestCSVMixedMillisAndTimes: a CSV timestamp column mixing int64
// milliseconds and times fails naming one of each, in either order; the
// message once called the first row's milliseconds "not a time".
func TestCSVMixedMillisAndTimes(t *testing.T) {
	r := edgeRegistry(t)
	dir := t.TempDir()
	for _, c := range []struct{ csv, want string }{
		{"user_id,event_timestamp\nu,1795694400000\nu,\nu,2026-11-26T10:00:00Z\n",
			`column "event_timestamp" mixes int64 Unix milliseconds (row 1: 1795694400000) and times (row 3: "2026-11-26T10:00:00Z"): give every row one or the other`},
		{"user_id,event_timestamp\nu,2026-11-26 10:00:00\nu,1795694400000\n",
			`column "event_timestamp" mixes int64 Unix milliseconds (row 2: 1795694400000) and times (row 1: "2026-11-26 10:00:00"): give every row one or the other`},
	} {
		in := filepath.Join(dir, "rows.csv")
		if err := os.WriteFile(in, []byte(c.csv), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Run(context.Background(), Options{Registry: r, Log: &memLog{}, Features: []string{"win:n_life"}, Entities: in, Out: filepath.Join(dir, "out.arrow"), TempDir: dir})
		if want := in + ": " + c.want; err == nil || err.Error() != want {
			t.Errorf("error:\n got  %v\n want %s", err, want)
		}
	}
}
