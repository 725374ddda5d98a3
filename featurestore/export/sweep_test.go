package export

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

// sortEvents sorts events by key and order key as eventRefs does, but in
// place, from references made with any hash (their keys in keys).
func sortEvents(evs []evRef, keys []keyRef) (unique bool) {
	var tmp []evRef
	sortByHash(evs, func(e *evRef) uint64 { return e.h }, func(xs []evRef) { tmp = sortEvRuns(xs, tmp) })
	if oneKeyPerHash(evs, func(e *evRef) keyRef { return keys[e.key] }) {
		return true
	}
	sortEventsByKey(evs, keys)
	return false
}

// keyed returns e with key k, which it adds to keys.
func keyed(keys *[]keyRef, k keyRef, e evRef) evRef {
	*keys = append(*keys, k)
	e.h, e.key = k.h, int32(len(*keys)-1)
	return e
}

// TestSortWithHashCollision checks that keys sharing a hash are still told
// apart: sorted by key, each key's events in order.
func TestSortWithHashCollision(t *testing.T) {
	a, b, c := keyRef{h: 7, s: "a"}, keyRef{h: 7, s: "b"}, keyRef{h: 3, s: "c"}
	var keys []keyRef
	evs := []evRef{keyed(&keys, a, evRef{time: 5}), keyed(&keys, b, evRef{time: 1}), keyed(&keys, a, evRef{time: 2}),
		keyed(&keys, c, evRef{time: 9}), keyed(&keys, b, evRef{time: 4}), keyed(&keys, a, evRef{time: 2, part: 1})}
	sortEvents(evs, keys)
	var got []string
	for _, e := range evs {
		got = append(got, keys[e.key].s+string(rune('0'+e.time))+string(rune('0'+e.part)))
	}
	if want := []string{"c90", "a20", "a21", "a50", "b10", "b40"}; !slices.Equal(got, want) {
		t.Errorf("events sorted as %v, want %v", got, want)
	}
	rows := []rowRef{{key: b, t: 1}, {key: a, t: 3}, {key: b, t: 0}, {key: a, t: 1}}
	sortRows(rows)
	got = got[:0]
	for _, r := range rows {
		got = append(got, r.key.s+string(rune('0'+r.t)))
	}
	if want := []string{"a1", "a3", "b0", "b1"}; !slices.Equal(got, want) {
		t.Errorf("rows sorted as %v, want %v", got, want)
	}
}

// TestSortLarge sorts slices long enough to be distributed by hash first
// (sortByHash), with keys that share a hash among them, and compares with
// a plain comparison sort by key and order.
func TestSortLarge(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct {
		n         int
		collision bool
	}{{radixMin - 1, false}, {radixMin, false}, {50_000, false}, {200_003, false}, {50_000, true}} {
		n := c.n
		keys := make([]keyRef, 1+n/20)
		for i := range keys {
			keys[i] = newKeyRef(fmt.Sprintf("k%d", i))
			if c.collision && i%97 == 1 { // another key with the hash before
				keys[i].h = keys[i-1].h
			}
		}
		evs := make([]evRef, n)
		rows := make([]rowRef, n)
		var evKeys []keyRef
		for i := range evs {
			evs[i] = keyed(&evKeys, keys[rng.IntN(len(keys))], evRef{time: rng.Int64N(50), part: rng.Int32N(3), off: rng.Int64N(1000), i: int32(i)})
			rows[i] = rowRef{key: keys[rng.IntN(len(keys))], t: rng.Int64N(50), row: int64(i)}
		}
		wantEvs := slices.Clone(evs)
		slices.SortFunc(wantEvs, func(a, b evRef) int {
			return cmp.Or(evKeys[a.key].compare(evKeys[b.key]), cmp.Compare(a.time, b.time), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off))
		})
		sortEvents(evs, evKeys)
		for i := range evs {
			// Events equal in key and order may come in any order.
			if g, w := evs[i], wantEvs[i]; evKeys[g.key] != evKeys[w.key] || g.time != w.time || g.part != w.part || g.off != w.off {
				t.Fatalf("n=%d: event %d is %+v, want %+v", n, i, g, w)
			}
		}
		wantRows := slices.Clone(rows)
		slices.SortFunc(wantRows, func(a, b rowRef) int { return cmp.Or(a.key.compare(b.key), cmp.Compare(a.t, b.t)) })
		sortRows(rows)
		for i := range rows {
			if g, w := rows[i], wantRows[i]; g.key != w.key || g.t != w.t {
				t.Fatalf("n=%d: row %d is %+v, want %+v", n, i, g, w)
			}
		}
	}
}

// BenchmarkSortEvents sorts a group's events as the benchmark against
// DuckDB has them: about 100 events a key, in no order.
func BenchmarkSortEvents(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 300_000
	keys := make([]keyRef, n/100)
	for i := range keys {
		keys[i] = newKeyRef(fmt.Sprintf("card-%07d", i))
	}
	src := make([]evRef, n)
	var evKeys []keyRef
	for i := range src {
		src[i] = keyed(&evKeys, keys[rng.IntN(len(keys))], evRef{time: 1_793_491_200_000 + rng.Int64N(30*86_400_000), part: rng.Int32N(8), off: rng.Int64N(1 << 30), i: int32(i)})
	}
	evs := make([]evRef, n)
	b.ResetTimer()
	for range b.N {
		copy(evs, src)
		sortEvents(evs, evKeys)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
}

// TestSortEvRefsShapes sorts inputs of the shapes that defeat simple
// quicksorts (sorted, reversed, all equal, organ pipe, few distinct values)
// and random ones, of many lengths, and compares with the library's sort.
func TestSortEvRefsShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	shapes := map[string]func(i, n int) evRef{
		"sorted":   func(i, n int) evRef { return evRef{h: 1, time: int64(i)} },
		"reversed": func(i, n int) evRef { return evRef{h: 1, time: int64(n - i)} },
		"equal":    func(i, n int) evRef { return evRef{h: 5, time: 3, part: 1, off: 9} },
		"organ":    func(i, n int) evRef { return evRef{h: 2, time: int64(min(i, n-i))} },
		"few": func(i, n int) evRef {
			return evRef{h: uint64(rng.IntN(3)), time: rng.Int64N(2), part: rng.Int32N(2)}
		},
		"random": func(i, n int) evRef {
			return evRef{h: rng.Uint64(), time: rng.Int64N(1000), part: rng.Int32N(4), off: rng.Int64N(1 << 40)}
		},
	}
	for name, gen := range shapes {
		for _, n := range []int{0, 1, 2, 12, 13, 100, 1000, 5000} {
			evs := make([]evRef, n)
			for i := range evs {
				evs[i] = gen(i, n)
			}
			want := slices.Clone(evs)
			slices.SortFunc(want, func(a, b evRef) int {
				return cmp.Or(cmp.Compare(a.h, b.h), cmp.Compare(a.time, b.time), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off))
			})
			sortEvRefs(evs)
			if !slices.Equal(evs, want) {
				t.Errorf("%s, n=%d: sorted wrong", name, n)
			}
		}
	}
}

// TestSortEvRuns sorts events that come in a few ascending runs, as a scan
// of the log gives them (merged), and in more (sorted by the quicksort),
// and compares with the library's sort.
func TestSortEvRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	var tmp []evRef
	for runs := 1; runs <= maxRuns+3; runs++ {
		for _, n := range []int{runs, 40, 300} {
			var evs []evRef
			for r := range runs {
				run := make([]evRef, n/runs+r%2)
				for i := range run {
					run[i] = evRef{h: uint64(rng.IntN(2)), time: rng.Int64N(30), part: rng.Int32N(2), off: rng.Int64N(4)}
				}
				slices.SortFunc(run, func(a, b evRef) int {
					return cmp.Or(cmp.Compare(a.h, b.h), cmp.Compare(a.time, b.time), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off))
				})
				evs = append(evs, run...)
			}
			want := slices.Clone(evs)
			slices.SortFunc(want, func(a, b evRef) int {
				return cmp.Or(cmp.Compare(a.h, b.h), cmp.Compare(a.time, b.time), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off))
			})
			tmp = sortEvRuns(evs, tmp)
			if !slices.Equal(evs, want) {
				t.Errorf("%d runs, n=%d: sorted wrong", runs, len(evs))
			}
		}
	}
}

// TestEventRefs builds the references of spilled batches of random events
// (many per key, in scan order: a few ascending runs per key, keys mixed;
// sizes below and above the distribution's thresholds) and compares their
// order with a comparison sort by key and order key; the field carried
// inline (none, a double or an int64, with nulls) with the batch's, and
// checks that a key's references share one copy of its bytes.
func TestEventRefs(t *testing.T) {
	if n := unsafe.Sizeof(evRef{}); n != evRefSize {
		t.Errorf("an evRef takes %d bytes; evRefSize says %d", n, evRefSize)
	}
	rng := rand.New(rand.NewPCG(12, 13))
	schema := eventsSchema(&viewPlan{fields: []window.Field{{Name: "x", Kind: featurestore.KindDouble}, {Name: "n", Kind: featurestore.KindInt64}}})
	for ci, c := range []struct{ events, keys int }{{10, 3}, {500, 40}, {radixMin + 7, 30}, {60_000, 600}, {60_000, 20_000}} {
		inline := ci%3 - 1
		var batches []evBatch
		type event struct {
			key       keyRef
			time, off int64
			part      int32
		}
		var want []event
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		flush := func() {
			rec := b.NewRecordBatch()
			batches = append(batches, evBatch{rec: rec, fields: rec.Columns()[evFields:]})
		}
		for run := range 3 { // three scans' worth of ascending times
			for i := range c.events / 3 {
				key := fmt.Sprintf("k%d", rng.IntN(c.keys))
				tm := int64(run*1_000_000 + i*10 + rng.IntN(30)) // mostly ascending
				part, off := rng.Int32N(4), rng.Int64N(1<<40)
				b.Field(evKey).(*array.BinaryBuilder).Append([]byte(key))
				b.Field(evTime).(*array.Int64Builder).Append(tm)
				b.Field(evPartition).(*array.Int32Builder).Append(part)
				b.Field(evOffset).(*array.Int64Builder).Append(off)
				if rng.IntN(10) == 0 {
					b.Field(evFields).AppendNull()
					b.Field(evFields + 1).AppendNull()
				} else {
					b.Field(evFields).(*array.Float64Builder).Append(rng.NormFloat64())
					b.Field(evFields + 1).(*array.Int64Builder).Append(rng.Int64() - 1<<62)
				}
				want = append(want, event{key: newKeyRef(key), time: tm, part: part, off: off})
				if b.Field(evTime).Len() == 1000 {
					flush()
				}
			}
		}
		flush()
		b.Release()
		slices.SortFunc(want, func(a, b event) int {
			return cmp.Or(a.key.compare(b.key), cmp.Compare(a.time, b.time), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off))
		})
		var kt keyTable
		got, unique := eventRefs(batches, len(want), inline, &kt)
		if !unique {
			t.Errorf("events=%d: keys sharing a hash reported", c.events)
		}
		if len(got) != len(want) {
			t.Fatalf("events=%d: %d references, want %d", c.events, len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if kt.keys[g.key] != w.key || g.h != w.key.h || g.time != w.time || g.part != w.part || g.off != w.off {
				t.Fatalf("events=%d keys=%d: reference %d is %+v, want %+v", c.events, c.keys, i, g, w)
			}
			rec := batches[g.rec].rec
			if rec.Column(evTime).(*array.Int64).Value(int(g.i)) != g.time {
				t.Fatalf("events=%d: reference %d points at another event", c.events, i)
			}
			if i > 0 && kt.keys[got[i-1].key].s == w.key.s && got[i-1].key != g.key {
				t.Fatalf("events=%d: references %d and %d of key %s refer to two copies of it", c.events, i-1, i, w.key.s)
			}
			var val uint64
			valid := false
			if inline >= 0 {
				a := rec.Column(evFields + inline)
				if valid = a.IsValid(int(g.i)); valid && inline == 0 {
					val = math.Float64bits(a.(*array.Float64).Value(int(g.i)))
				} else if valid {
					val = uint64(a.(*array.Int64).Value(int(g.i)))
				}
			}
			if g.val != val || g.valid != valid {
				t.Fatalf("events=%d inline=%d: reference %d carries %#x (valid %v), want %#x (%v)", c.events, inline, i, g.val, g.valid, val, valid)
			}
		}
		for _, b := range batches {
			b.rec.Release()
		}
	}
}

// TestStartKeySharedHash checks that a row key finds its own events only
// when another key has its hash: with each hash naming one key among the
// events (the fast path) and without.
func TestStartKeySharedHash(t *testing.T) {
	p, err := newPlan(testRegistry(t), "all", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := keyRef{h: 5, s: "a"}, keyRef{h: 5, s: "b"}, keyRef{h: 9, s: "c"}
	var keys []keyRef
	for _, tc := range []struct {
		name   string
		evs    []evRef
		unique bool
	}{
		{"events of b only", []evRef{keyed(&keys, b, evRef{time: 1}), keyed(&keys, b, evRef{time: 2}), keyed(&keys, c, evRef{time: 1})}, true},
		{"events of a and b", []evRef{keyed(&keys, a, evRef{time: 3}), keyed(&keys, b, evRef{time: 1}), keyed(&keys, b, evRef{time: 2}), keyed(&keys, c, evRef{time: 1})}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := map[string]int{}
			for _, e := range tc.evs {
				want[keys[e.key].s]++
			}
			for _, order := range [][]keyRef{{a, b, c}, {b, c}, {a, c}} {
				s := newViewSweep(p.views[0])
				s.evs, s.keys, s.unique = tc.evs, keys, tc.unique
				for _, k := range order {
					s.startKey(k)
					for i := s.pos; i < s.end; i++ {
						if keys[s.evs[i].key] != k {
							t.Fatalf("rows %v: key %s got an event of key %s", order, k.s, keys[s.evs[i].key].s)
						}
					}
					if s.end-s.pos != want[k.s] {
						t.Errorf("rows %v: key %s got %d events, want %d", order, k.s, s.end-s.pos, want[k.s])
					}
				}
			}
		})
	}
}

// TestKeyTableSharedHash adds keys with hashes forced to collide, before
// and after the table grows, and checks that each key keeps its own bytes,
// that equal keys share one copy (but for the key that came second with
// its hash, kept apart each time), and that the collision is reported.
func TestKeyTableSharedHash(t *testing.T) {
	for _, n := range []int{10, 5000} { // 5000 keys grow the table
		var kt keyTable
		ids := map[string]int32{}
		add := func(key string, h uint64) {
			b := []byte(key) // a copy each time, as events have
			k := kt.add(h, b)
			got := kt.keys[k]
			if got.h != h || got.s != key {
				t.Fatalf("n=%d: key %q hash %d got %q hash %d", n, key, h, got.s, got.h)
			}
			if id, ok := ids[key]; ok && id != k && key != "other" {
				t.Fatalf("n=%d: key %q added twice is %d and %d", n, key, id, k)
			}
			ids[key] = k
		}
		for i := range n {
			add(fmt.Sprintf("k%d", i), uint64(i))
		}
		if kt.shared {
			t.Fatalf("n=%d: keys sharing a hash reported before any did", n)
		}
		for i := range n {
			add(fmt.Sprintf("k%d", i), uint64(i)) // the same keys again
		}
		add("other", 3) // the hash of k3
		if !kt.shared {
			t.Fatalf("n=%d: keys sharing a hash not reported", n)
		}
		for i := range 3 * n { // more keys, past growing, and all again
			add(fmt.Sprintf("k%d", i%(2*n)), uint64(i%(2*n)))
			add("other", 3)
		}
		if want := 2*n + 1 + 3*n; len(kt.keys) != want {
			t.Errorf("n=%d: %d keys kept, want %d", n, len(kt.keys), want)
		}
	}
}

// BenchmarkEventRefs makes the references of a group's events as the
// benchmark against DuckDB has them: 250k events of 2,500 keys in spill
// batches of 20k, in scan order, with a double field carried inline.
func BenchmarkEventRefs(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n, keys, batch = 250_000, 2_500, 20_000
	schema := eventsSchema(&viewPlan{fields: []window.Field{{Name: "amount", Kind: featurestore.KindDouble}}})
	bld := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer bld.Release()
	var batches []evBatch
	for i := range n {
		bld.Field(evKey).(*array.BinaryBuilder).Append(fmt.Appendf(nil, "user-%07d", rng.IntN(keys)))
		bld.Field(evTime).(*array.Int64Builder).Append(1_793_491_200_000 + int64(i)*10_000 + rng.Int64N(60_000))
		bld.Field(evPartition).(*array.Int32Builder).Append(rng.Int32N(8))
		bld.Field(evOffset).(*array.Int64Builder).Append(int64(i))
		bld.Field(evFields).(*array.Float64Builder).Append(rng.Float64() * 100)
		if bld.Field(evTime).Len() == batch || i == n-1 {
			rec := bld.NewRecordBatch()
			defer rec.Release()
			batches = append(batches, evBatch{rec: rec, fields: rec.Columns()[evFields:]})
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		eventRefs(batches, n, 0, &keyTable{})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
}
