package export

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// sortEvents sorts events by key and order key as eventRefs does, but in
// place, from references made with any hash.
func sortEvents(evs []evRef) (unique bool) {
	var tmp []evRef
	sortByHash(evs, func(e *evRef) uint64 { return e.key.h }, func(xs []evRef) { tmp = sortEvRuns(xs, tmp) })
	return sortKeysSharingHash(evs)
}

// TestSortWithHashCollision checks that keys sharing a hash are still told
// apart: sorted by key, each key's events in order.
func TestSortWithHashCollision(t *testing.T) {
	a, b, c := keyRef{h: 7, s: "a"}, keyRef{h: 7, s: "b"}, keyRef{h: 3, s: "c"}
	evs := []evRef{{key: a, time: 5}, {key: b, time: 1}, {key: a, time: 2}, {key: c, time: 9}, {key: b, time: 4}, {key: a, time: 2, part: 1}}
	sortEvents(evs)
	var got []string
	for _, e := range evs {
		got = append(got, e.key.s+string(rune('0'+e.time))+string(rune('0'+e.part)))
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
		for i := range evs {
			evs[i] = evRef{key: keys[rng.IntN(len(keys))], time: rng.Int64N(50), part: rng.Int32N(3), off: rng.Int64N(1000), i: int32(i)}
			rows[i] = rowRef{key: keys[rng.IntN(len(keys))], t: rng.Int64N(50), row: int64(i)}
		}
		wantEvs := slices.Clone(evs)
		slices.SortFunc(wantEvs, func(a, b evRef) int {
			return cmp.Or(a.key.compare(b.key), cmp.Compare(a.time, b.time), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off))
		})
		sortEvents(evs)
		for i := range evs {
			// Events equal in key and order may come in any order.
			if g, w := evs[i], wantEvs[i]; g.key != w.key || g.time != w.time || g.part != w.part || g.off != w.off {
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
	for i := range src {
		src[i] = evRef{key: keys[rng.IntN(len(keys))], time: 1_793_491_200_000 + rng.Int64N(30*86_400_000), part: rng.Int32N(8), off: rng.Int64N(1 << 30), i: int32(i)}
	}
	evs := make([]evRef, n)
	b.ResetTimer()
	for range b.N {
		copy(evs, src)
		sortEvents(evs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
}

// TestSortEvRefsShapes sorts inputs of the shapes that defeat simple
// quicksorts (sorted, reversed, all equal, organ pipe, few distinct values)
// and random ones, of many lengths, and compares with the library's sort.
func TestSortEvRefsShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	shapes := map[string]func(i, n int) evRef{
		"sorted":   func(i, n int) evRef { return evRef{key: keyRef{h: 1}, time: int64(i)} },
		"reversed": func(i, n int) evRef { return evRef{key: keyRef{h: 1}, time: int64(n - i)} },
		"equal":    func(i, n int) evRef { return evRef{key: keyRef{h: 5}, time: 3, part: 1, off: 9} },
		"organ":    func(i, n int) evRef { return evRef{key: keyRef{h: 2}, time: int64(min(i, n-i))} },
		"few": func(i, n int) evRef {
			return evRef{key: keyRef{h: uint64(rng.IntN(3))}, time: rng.Int64N(2), part: rng.Int32N(2)}
		},
		"random": func(i, n int) evRef {
			return evRef{key: keyRef{h: rng.Uint64()}, time: rng.Int64N(1000), part: rng.Int32N(4), off: rng.Int64N(1 << 40)}
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
				return cmp.Or(cmp.Compare(a.key.h, b.key.h), cmp.Compare(a.time, b.time), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off))
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
					run[i] = evRef{key: keyRef{h: uint64(rng.IntN(2))}, time: rng.Int64N(30), part: rng.Int32N(2), off: rng.Int64N(4)}
				}
				slices.SortFunc(run, func(a, b evRef) int {
					return cmp.Or(cmp.Compare(a.key.h, b.key.h), cmp.Compare(a.time, b.time), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off))
				})
				evs = append(evs, run...)
			}
			want := slices.Clone(evs)
			slices.SortFunc(want, func(a, b evRef) int {
				return cmp.Or(cmp.Compare(a.key.h, b.key.h), cmp.Compare(a.time, b.time), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off))
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
// order with a comparison sort by key and order key.
func TestEventRefs(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 13))
	schema := eventsSchema(&viewPlan{})
	for _, c := range []struct{ events, keys int }{{10, 3}, {500, 40}, {radixMin + 7, 30}, {60_000, 600}, {60_000, 20_000}} {
		var batches []evBatch
		var want []evRef
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		for run := range 3 { // three scans' worth of ascending times
			for i := range c.events / 3 {
				key := fmt.Sprintf("k%d", rng.IntN(c.keys))
				tm := int64(run*1_000_000 + i*10 + rng.IntN(30)) // mostly ascending
				part, off := rng.Int32N(4), rng.Int64N(1<<40)
				b.Field(evKey).(*array.BinaryBuilder).Append([]byte(key))
				b.Field(evTime).(*array.Int64Builder).Append(tm)
				b.Field(evPartition).(*array.Int32Builder).Append(part)
				b.Field(evOffset).(*array.Int64Builder).Append(off)
				want = append(want, evRef{key: newKeyRef(key), time: tm, part: part, off: off})
				if b.Field(evTime).Len() == 1000 {
					batches = append(batches, evBatch{rec: b.NewRecordBatch()})
				}
			}
		}
		batches = append(batches, evBatch{rec: b.NewRecordBatch()})
		b.Release()
		slices.SortFunc(want, func(a, b evRef) int {
			return cmp.Or(a.key.compare(b.key), cmp.Compare(a.time, b.time), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off))
		})
		got, _ := eventRefs(batches, len(want))
		if len(got) != len(want) {
			t.Fatalf("events=%d: %d references, want %d", c.events, len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.key != w.key || g.time != w.time || g.part != w.part || g.off != w.off {
				t.Fatalf("events=%d keys=%d: reference %d is %+v, want %+v", c.events, c.keys, i, g, w)
			}
			rec := batches[g.rec].rec
			if rec.Column(evTime).(*array.Int64).Value(int(g.i)) != g.time {
				t.Fatalf("events=%d: reference %d points at another event", c.events, i)
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
	for _, tc := range []struct {
		name   string
		evs    []evRef
		unique bool
	}{
		{"events of b only", []evRef{{key: b, time: 1}, {key: b, time: 2}, {key: c, time: 1}}, true},
		{"events of a and b", []evRef{{key: a, time: 3}, {key: b, time: 1}, {key: b, time: 2}, {key: c, time: 1}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := map[string]int{}
			for _, e := range tc.evs {
				want[e.key.s]++
			}
			for _, order := range [][]keyRef{{a, b, c}, {b, c}, {a, c}} {
				s := newViewSweep(p.views[0])
				s.evs, s.unique = tc.evs, tc.unique
				for _, k := range order {
					s.startKey(k)
					for i := s.pos; i < s.end; i++ {
						if s.evs[i].key != k {
							t.Fatalf("rows %v: key %s got an event of key %s", order, k.s, s.evs[i].key.s)
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
