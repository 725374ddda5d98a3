package export

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/featurestore/featurestore/registry"
)

const testDefs = `
kind: Entity
name: user
join_keys: [{name: user_id, type: string}]
---
kind: Entity
name: shop
join_keys: [{name: shop_id, type: int64}]
---
kind: Entity
name: account
join_keys: [{name: bank, type: string}, {name: account_no, type: int64}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {user_id: user_id, shop_id: shop_id, bank: bank, account_no: account_no}
fields: {amount: double, qty: int64, cat: string, ok: bool, note: string}
allowed_lateness: 0s
---
kind: FeatureView
name: by_user
entity: user
source: txns
tile: 1m
ttl: 5m
features:
  - {name: n_5m, aggregation: count, window: 5m}
  - {name: n_1m, aggregation: count, window: 1m}
  - {name: amount_sum_10m, aggregation: sum, field: amount, window: 10m}
  - {name: qty_sum_1h, aggregation: sum, field: qty, window: 1h}
  - {name: amount_mean_10m, aggregation: mean, field: amount, window: 10m}
  - {name: qty_mean_10m, aggregation: mean, field: qty, window: 10m}
  - {name: qty_min_10m, aggregation: min, field: qty, window: 10m}
  - {name: amount_max_10m, aggregation: max, field: amount, window: 10m}
  - {name: amount_std_1h, aggregation: stddev, field: amount, window: 1h}
  - {name: qty_std_10m, aggregation: stddev, field: qty, window: 10m}
  - {name: cat_distinct_1h, aggregation: count_distinct, field: cat, window: 1h}
  - {name: cat_last_10m, aggregation: last, field: cat, window: 10m}
  - {name: cat_last3_10m, aggregation: last_n, field: cat, n: 3, window: 10m}
  - {name: qty_last2_5m, aggregation: last_n, field: qty, n: 2, window: 5m}
  - {name: qty_life, aggregation: sum, field: qty, window: lifetime}
  - {name: n_life, aggregation: count, window: lifetime}
  - {name: amount, field: amount, type: double}
  - {name: ok, field: ok, type: bool}
  - {name: cat, field: cat, type: string}
  - {name: n_a_10m, aggregation: count, window: 10m, filter: [{field: cat, op: eq, value: a}]}
  - {name: big_sum_10m, aggregation: sum, field: amount, window: 10m, filter: [{field: qty, op: ge, value: 3}]}
---
kind: FeatureView
name: by_shop
entity: shop
source: txns
tile: 30s
features:
  - {name: n_2m, aggregation: count, window: 2m}
  - {name: amount_sum_2m, aggregation: sum, field: amount, window: 2m}
  - {name: cat, field: cat, type: string}
---
kind: FeatureView
name: by_account
entity: account
source: txns
tile: 1m
features:
  - {name: n_3m, aggregation: count, window: 3m}
  - {name: ok_last_3m, aggregation: last, field: ok, window: 3m}
---
kind: FeatureView
name: user_last
entity: user
source: txns
ttl: 3m
features:
  - {name: amount, field: amount, type: double}
  - {name: note, field: note, type: string}
---
kind: FeatureView
name: user_last_a
entity: user
source: txns
features:
  - {name: amount, field: amount, type: double, filter: [{field: cat, op: eq, value: a}]}
---
kind: FeatureView
name: user_qty
entity: user
source: txns
tile: 1m
features:
  - {name: qty_sum_10m, aggregation: sum, field: qty, window: 10m}
  - {name: qty_max_5m, aggregation: max, field: qty, window: 5m}
---
kind: FeatureView
name: not_offline
entity: user
source: txns
offline: false
features:
  - {name: n, aggregation: count, window: 1m}
---
kind: FeatureService
name: all
features: [by_user:*, by_shop:*, by_account:*, user_last:*, user_last_a:*, user_qty:*]
`

func testRegistry(t testing.TB) *registry.Registry {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(testDefs)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const t0 = 1_795_687_200_000 // a whole hour

// scenario is a random export: events of each view and entity rows.
type scenario struct {
	events map[string][]rawEvent // per view
	fields []arrow.Field         // of the entity table
	rows   [][]any
}

var (
	users    = []string{"u0", "u1", "007", "u3", "u4", "u5", "u6", "u7", "u{:*}"} // the last has no events
	shops    = []int64{1, 2, 3, -7}
	banks    = []string{"b0", "b1"}
	accounts = []int64{1, 2}
)

// randomScenario draws events for the three views (times on a coarse grid
// so that many are equal, fields sometimes null) and rows: some before any
// event, some at an event's time, some exactly at and just past a TTL,
// some for keys without events, several at the same time.
func randomScenario(rng *rand.Rand, nEvents, nRows int) *scenario {
	s := &scenario{events: map[string][]rawEvent{}}
	span := int64(40 * 60_000)
	grid := func() int64 { return t0 + rng.Int64N(span/2_500)*2_500 + rng.Int64N(3)*rng.Int64N(2) }
	offsets := map[int32]int64{}
	event := func(keys map[string]any) rawEvent {
		p := int32(rng.IntN(3))
		offsets[p]++
		f := map[string]any{}
		if rng.IntN(8) > 0 {
			f["amount"] = float64(rng.IntN(100000)) / 100
		}
		if rng.IntN(8) > 0 {
			f["qty"] = rng.Int64N(10) - 2
		}
		if rng.IntN(6) > 0 {
			f["cat"] = []string{"a", "b", "c", "d"}[rng.IntN(4)]
		}
		if rng.IntN(5) > 0 {
			f["ok"] = rng.IntN(2) == 0
		}
		return rawEvent{time: grid(), partition: p, offset: offsets[p] * 3, keys: keys, fields: f}
	}
	for range nEvents {
		s.events["by_user"] = append(s.events["by_user"], event(map[string]any{"user_id": users[rng.IntN(len(users)-1)]}))
		if rng.IntN(2) == 0 {
			s.events["by_shop"] = append(s.events["by_shop"], event(map[string]any{"shop_id": shops[rng.IntN(len(shops))]}))
		}
		if rng.IntN(3) == 0 {
			s.events["by_account"] = append(s.events["by_account"], event(map[string]any{"bank": banks[rng.IntN(2)], "account_no": accounts[rng.IntN(2)]}))
		}
	}
	ue := s.events["by_user"]
	// Views of last values alone (user_last reads the newest event only)
	// log the same events as by_user.
	s.events["user_last"] = slices.Clone(ue)
	s.events["user_last_a"] = slices.Clone(ue)
	s.events["user_qty"] = slices.Clone(ue)
	s.fields = []arrow.Field{
		{Name: "label", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "user_id", Type: arrow.BinaryTypes.String},
		{Name: "shop_id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "bank", Type: arrow.BinaryTypes.String},
		{Name: "account_no", Type: arrow.PrimitiveTypes.Int64},
		{Name: DefaultTimestampColumn, Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
	}
	for i := range nRows {
		var ts int64
		switch rng.IntN(6) {
		case 0:
			ts = t0 - rng.Int64N(10*60_000) // before any event
		case 1, 2:
			e := ue[rng.IntN(len(ue))]
			ts = e.time + []int64{0, 0, 1, -1, 5 * 60_000, 5*60_000 + 1}[rng.IntN(6)] // at an event, or at the TTL
		default:
			ts = t0 + rng.Int64N(span+20*60_000)
		}
		var label any = float64(i)
		if i%7 == 0 {
			label = nil
		}
		s.rows = append(s.rows, []any{label, users[rng.IntN(len(users))], shops[rng.IntN(len(shops))],
			banks[rng.IntN(2)], accounts[rng.IntN(2)], ts})
		if rng.IntN(10) == 0 {
			s.rows = append(s.rows, slices.Clone(s.rows[len(s.rows)-1])) // the same key and time again
		}
	}
	return s
}

// log returns the events as a memLog, each view's in a few batches of
// shuffled events.
func (s *scenario) log(t testing.TB, rng *rand.Rand, r *registry.Registry) *memLog {
	l := &memLog{batches: map[string][]arrow.RecordBatch{}}
	for view, evs := range s.events {
		evs = slices.Clone(evs)
		rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
		for len(evs) > 0 {
			n := min(len(evs), 1+rng.IntN(400))
			l.batches[view] = append(l.batches[view], logBatch(t, r, "p", view, evs[:n]))
			evs = evs[n:]
		}
	}
	return l
}

// expected computes the reference value of every feature of a service for
// every row.
func (s *scenario) expected(r *registry.Registry, refs []registry.FeatureRef) [][]any {
	tsCol := len(s.fields) - 1
	// Each view's events by key, the key written as the row's columns.
	byKey := map[string]map[string][]rawEvent{}
	keyOf := func(ent *registry.Entity, get func(string) any) string {
		k := ""
		for _, jk := range ent.JoinKeys {
			k += fmt.Sprintf("%T:%v/", get(jk.Name), get(jk.Name))
		}
		return k
	}
	for view, evs := range s.events {
		ent := r.Entity(r.View(view).Entity)
		byKey[view] = map[string][]rawEvent{}
		for _, e := range evs {
			k := keyOf(ent, func(n string) any { return e.keys[n] })
			byKey[view][k] = append(byKey[view][k], e)
		}
		for _, evs := range byKey[view] {
			slices.SortFunc(evs, newestFirst)
		}
	}
	out := make([][]any, len(s.rows))
	for i, row := range s.rows {
		for _, ref := range refs {
			v := r.View(ref.View)
			k := keyOf(r.Entity(v.Entity), func(n string) any { return row[s.fieldIndex(n)] })
			out[i] = append(out[i], refFeature(v, v.Feature(ref.Feature), byKey[ref.View][k], row[tsCol].(int64)))
		}
	}
	return out
}

func (s *scenario) fieldIndex(name string) int {
	return slices.IndexFunc(s.fields, func(f arrow.Field) bool { return f.Name == name })
}

// checkOutput compares an export's output with the rows and the expected
// features: input columns unchanged, row order kept, every value equal (bit
// for bit for doubles), every null where expected.
func checkOutput(t *testing.T, out string, s *scenario, refs []registry.FeatureRef, want [][]any) {
	t.Helper()
	tbl := readTable(t, out)
	defer tbl.Release()
	if tbl.NumRows() != int64(len(s.rows)) {
		t.Fatalf("output has %d rows, want %d", tbl.NumRows(), len(s.rows))
	}
	if got, wantCols := tbl.NumCols(), int64(len(s.fields)+len(refs)); got != wantCols {
		t.Fatalf("output has %d columns, want %d", got, wantCols)
	}
	mismatches := 0
	for i, row := range s.rows {
		for c, f := range s.fields {
			if got := cell(t, tbl, f.Name, int64(i)); !reflect.DeepEqual(got, row[c]) {
				t.Fatalf("row %d: input column %q is %v, want %v", i, f.Name, got, row[c])
			}
		}
		for j, ref := range refs {
			got := cell(t, tbl, ref.String(), int64(i))
			if !sameValue(got, want[i][j]) {
				mismatches++
				if mismatches <= 10 {
					t.Errorf("row %d %v: %s = %#v, want %#v", i, row, ref, got, want[i][j])
				}
			}
		}
	}
	if mismatches > 0 {
		t.Fatalf("%d mismatches", mismatches)
	}
}

// sameValue compares output and reference values; doubles bit for bit.
func sameValue(a, b any) bool {
	if x, ok := a.(float64); ok {
		y, ok := b.(float64)
		return ok && math.Float64bits(x) == math.Float64bits(y)
	}
	return reflect.DeepEqual(a, b)
}

// TestExportMatchesReference checks random exports against the brute-force
// reference: three views on three entities (one composite), every
// aggregation, TTL, filters, equal timestamps, rows before any event, and
// memory budgets from roomy to tiny (many buckets, split again, partitioned
// data partly in memory and partly in spill files).
func TestExportMatchesReference(t *testing.T) {
	r := testRegistry(t)
	refs := r.Service("all").Resolved()
	cases := []struct {
		name    string
		events  int
		rows    int
		memory  int64
		workers int
		sized   bool
	}{
		{"small", 300, 200, 0, 1, false},
		{"parallel", 2000, 1500, 0, 4, false},
		{"sized log", 2000, 1500, 64 << 20, 2, true},
		{"tiny budget", 8000, 2000, 1 << 20, 3, false},
		// Room for the fixed-width columns in place, not for every
		// group's other results.
		{"small budget", 2000, 2000, 5 << 20, 2, false},
		// Too many rows for the index of results in memory: every
		// result goes through a file and the merge.
		{"tiny budget, many rows", 1000, 17000, 1 << 20, 2, false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			s := randomScenario(rng, c.events, c.rows)
			var log Log = s.log(t, rng, r)
			if c.sized {
				log = sizedLog{log.(*memLog)}
			}
			dir := t.TempDir()
			in := filepath.Join(dir, "rows.arrow")
			(&testTable{fields: s.fields, rows: s.rows}).writeArrow(t, in, 700)
			out := filepath.Join(dir, "out.arrow")
			st, err := Run(context.Background(), Options{Registry: r, Log: log, Service: "all", Entities: in, Out: out,
				Memory: c.memory, Parallelism: c.workers, TempDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("stats: %+v", st)
			if c.memory == 1<<20 && st.Groups <= 3*c.workers {
				t.Errorf("a tiny budget computed %d groups; it should have split the rows into many", st.Groups)
			}
			// Partitioned data stays in memory within half the budget, and
			// goes to spill files beyond: the tiny budget takes both paths.
			if tiny := c.memory == 1<<20; tiny != (st.Spilled > 0) {
				t.Errorf("budget %d bytes spilled %d bytes to files", c.memory, st.Spilled)
			}
			checkOutput(t, out, s, refs, s.expected(r, refs))
		})
	}
}

// TestExportPrunesOldEvents exports rows that all come well after the first
// events: the views whose features read no further back than their windows
// and TTL (by_account, user_last) skip the older events, those with
// lifetime aggregates or a last value without TTL (by_user, by_shop,
// user_last_a) keep them, and every value still equals the reference.
func TestExportPrunesOldEvents(t *testing.T) {
	r := testRegistry(t)
	refs := r.Service("all").Resolved()
	rng := rand.New(rand.NewPCG(8, 8))
	s := randomScenario(rng, 3000, 600)
	// The earliest row reads, exactly at the TTL (3m, not expired), an
	// event of its user that no newer one hides: the oldest event the
	// pruning must keep.
	const ttl = 3 * 60_000
	byUser := map[string][]int64{}
	for _, e := range s.events["user_last"] {
		u := e.keys["user_id"].(string)
		byUser[u] = append(byUser[u], e.time)
	}
	var first []any
	for _, u := range slices.Sorted(maps.Keys(byUser)) {
		times := slices.Sorted(slices.Values(byUser[u]))
		for i, tm := range times {
			if tm >= t0+15*60_000 && (i+1 == len(times) || times[i+1] > tm+ttl) && first == nil {
				first = slices.Clone(s.rows[0])
				first[1], first[len(first)-1] = u, tm+ttl
			}
		}
	}
	if first == nil {
		t.Fatal("no event fit for the earliest row")
	}
	cut := first[len(first)-1].(int64)
	rows := [][]any{first}
	for _, row := range s.rows {
		if row[len(row)-1].(int64) > cut {
			rows = append(rows, row)
		}
	}
	s.rows = rows
	log := s.log(t, rng, r)
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.arrow")
	(&testTable{fields: s.fields, rows: s.rows}).writeArrow(t, in, 100)
	for _, c := range []struct {
		view   string
		pruned bool
	}{{"by_account", true}, {"user_last", true}, {"by_user", false}, {"by_shop", false}, {"user_last_a", false}} {
		t.Run(c.view, func(t *testing.T) {
			var vrefs []registry.FeatureRef
			for _, ref := range refs {
				if ref.View == c.view {
					vrefs = append(vrefs, ref)
				}
			}
			out := filepath.Join(dir, c.view+".arrow")
			st, err := Run(context.Background(), Options{Registry: r, Log: log, Features: []string{c.view + ":*"}, Entities: in, Out: out, TempDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if pruned := st.EventsUsed < st.Events*3/4; pruned != c.pruned {
				t.Errorf("used %d of %d events; want pruned %v", st.EventsUsed, st.Events, c.pruned)
			}
			checkOutput(t, out, s, vrefs, s.expected(r, vrefs))
		})
	}
}

// TestExportNeverUsesLaterEvents adds events after each row's timestamp
// (of the same keys) and checks that no value changes.
func TestExportNeverUsesLaterEvents(t *testing.T) {
	r := testRegistry(t)
	refs := r.Service("all").Resolved()
	rng := rand.New(rand.NewPCG(7, 7))
	s := randomScenario(rng, 1000, 300)
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.arrow")
	(&testTable{fields: s.fields, rows: s.rows}).writeArrow(t, in, 1000)
	run := func(name string) arrow.Table {
		out := filepath.Join(dir, name+".arrow")
		if _, err := Run(context.Background(), Options{Registry: r, Log: s.log(t, rng, r), Service: "all", Entities: in, Out: out, TempDir: dir}); err != nil {
			t.Fatal(err)
		}
		return readTable(t, out)
	}
	before := run("before")
	defer before.Release()
	// Events 1 ms to a day after the last row of each key: they are
	// visible to no row. (Rows between events are the reference test's.)
	last := map[string]int64{}
	for _, row := range s.rows {
		for _, k := range []string{fmt.Sprint(row[1]), fmt.Sprint(row[2]), fmt.Sprint(row[3], row[4])} {
			last[k] = max(last[k], row[len(row)-1].(int64))
		}
	}
	for _, row := range s.rows {
		for _, d := range []int64{1, 1000, 86_400_000} {
			e := rawEvent{partition: 9, offset: rng.Int64N(1 << 40), fields: map[string]any{"amount": 1e6, "qty": int64(1000), "cat": "later", "ok": true}}
			e.time, e.keys = last[fmt.Sprint(row[1])]+d, map[string]any{"user_id": row[1]}
			s.events["by_user"] = append(s.events["by_user"], e)
			e.time, e.keys = last[fmt.Sprint(row[2])]+d, map[string]any{"shop_id": row[2]}
			s.events["by_shop"] = append(s.events["by_shop"], e)
			e.time, e.keys = last[fmt.Sprint(row[3], row[4])]+d, map[string]any{"bank": row[3], "account_no": row[4]}
			s.events["by_account"] = append(s.events["by_account"], e)
		}
	}
	after := run("after")
	defer after.Release()
	for i := range s.rows {
		for _, ref := range refs {
			a, b := cell(t, before, ref.String(), int64(i)), cell(t, after, ref.String(), int64(i))
			if !sameValue(a, b) {
				t.Fatalf("row %d: %s changed from %v to %v by events after the row's time", i, ref, a, b)
			}
		}
	}
}

// batchCollector is a BatchWriter that keeps what it receives.
type batchCollector struct {
	schema *arrow.Schema
	rows   int64
	cols   int
}

func (c *batchCollector) Begin(s *arrow.Schema) error { c.schema = s; return nil }
func (c *batchCollector) Write(rec arrow.RecordBatch) error {
	c.rows += rec.NumRows()
	c.cols = int(rec.NumCols())
	return nil
}

// TestOutputWriter sends the output to a BatchWriter instead of a file.
func TestOutputWriter(t *testing.T) {
	r := testRegistry(t)
	rng := rand.New(rand.NewPCG(9, 9))
	s := randomScenario(rng, 200, 300)
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.arrow")
	(&testTable{fields: s.fields, rows: s.rows}).writeArrow(t, in, 50)
	var c batchCollector
	if _, err := Run(context.Background(), Options{Registry: r, Log: s.log(t, rng, r), Service: "all", Entities: in, Output: &c, TempDir: dir}); err != nil {
		t.Fatal(err)
	}
	want := len(s.fields) + len(r.Service("all").Resolved())
	if c.rows != int64(len(s.rows)) || c.cols != want || c.schema.NumFields() != want {
		t.Fatalf("writer got %d rows of %d columns, schema %s; want %d rows of %d", c.rows, c.cols, c.schema, len(s.rows), want)
	}

	// A writer that fails stops the export, which returns its error.
	f := &failingWriter{failAt: 2}
	_, err := Run(context.Background(), Options{Registry: r, Log: s.log(t, rng, r), Service: "all", Entities: in, Output: f, TempDir: dir})
	if !errors.Is(err, errWriterFailed) || f.writes != 2 {
		t.Fatalf("export with a writer failing at its second batch: %d writes, error %v", f.writes, err)
	}
}

var errWriterFailed = errors.New("writer failed")

// failingWriter fails its failAt-th Write.
type failingWriter struct {
	failAt, writes int
}

func (f *failingWriter) Begin(*arrow.Schema) error { return nil }
func (f *failingWriter) Write(arrow.RecordBatch) error {
	if f.writes++; f.writes == f.failAt {
		return errWriterFailed
	}
	return nil
}
