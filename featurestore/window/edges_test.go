package window_test

import (
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

const edgeWindowDefs = `
kind: Entity
name: m
join_keys: [{name: id, type: string}]
---
kind: Source
name: s
kafka: {topic: s}
timestamp: {field: ts, encoding: epoch_ms}
keys: {id: m}
fields: {amount: double, cat: string}
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: m
source: s
tile: 10s
ttl: 30s
features:
  - {name: n_10s, aggregation: count, window: 10s}
  - {name: n_30s, aggregation: count, window: 30s}
  - {name: last2, aggregation: last_n, field: cat, n: 2, window: 30s}
  - {name: amount, field: amount, type: double}
  - {name: cat, field: cat, type: string}
`

// TestWindowEdges: reads exactly on tile boundaries, at an event's
// time, at the TTL boundary (inclusive), before 1970, and ties of order
// keys between topics, each read from tiles built in another order.
func TestWindowEdges(t *testing.T) {
	v, _ := compileYAML(t, edgeWindowDefs, "v")
	amount, cat := v.FieldIndex("amount"), v.FieldIndex("cat")
	mk := func(tm int64, p int32, off int64, a float64, c string) window.Event {
		f := make([]featurestore.Value, len(v.Fields()))
		f[amount] = featurestore.DoubleValue(a)
		if c != "" {
			f[cat] = featurestore.StringValue(c)
		}
		return window.Event{Time: tm, Partition: p, Offset: off, Fields: f}
	}
	evs := []window.Event{
		mk(-20_001, 0, 1, 1, "a"), // tile -3
		mk(-20_000, 0, 2, 2, "b"), // tile -2, its first ms
		mk(-1, 0, 3, 3, "c"),      // tile -1, its last ms
		mk(-1, 1, 1, 4, "d"),      // same time, greater partition
		mk(-1, 1, 1, 5, ""),       // same order key (another topic), no cat
		mk(0, 0, 4, 6, "e"),       // tile 0
	}
	read := func(at int64, reverse bool) []window.FeatureValue {
		tiles := map[int64]*window.TileState{}
		life, last := v.NewLifetimeState(), v.NewLastValues()
		for i := range evs {
			e := &evs[i]
			if reverse {
				e = &evs[len(evs)-1-i]
			}
			if e.Time > at {
				continue
			}
			k := v.TileOf(e.Time)
			if tiles[k] == nil {
				tiles[k] = v.NewTileState(k)
			}
			if err := tiles[k].Add(e); err != nil {
				t.Fatal(err)
			}
			life.Add(e)
			last.Add(e)
		}
		var ts []*window.TileState
		for _, x := range tiles {
			ts = append(ts, x)
		}
		res, err := v.NewReader().Read(at, ts, life, last)
		if err != nil {
			t.Fatal(err)
		}
		return append([]window.FeatureValue(nil), res...)
	}
	type want struct {
		n10, n30 int64
		last2    []string
		amount   any // float64, or a Status
		cat      any
	}
	cases := []struct {
		at int64
		w  want
	}{
		{-20_002, want{0, 0, []string{}, window.StatusNotFound, window.StatusNotFound}},
		{-20_001, want{1, 1, []string{"a"}, 1.0, "a"}},
		{-20_000, want{1, 2, []string{"b", "a"}, 2.0, "b"}},
		{-10_001, want{1, 2, []string{"b", "a"}, 2.0, "b"}},
		{-10_000, want{0, 2, []string{"b", "a"}, 2.0, "b"}},
		{-2, want{0, 2, []string{"b", "a"}, 2.0, "b"}},
		// Events of order key (-1, 1, 1) twice: amount 5 > 4 wins; the
		// cat of the one with 5 is null, which is less than "d".
		{-1, want{3, 5, []string{"d", "c"}, 5.0, "d"}},
		{0, want{1, 5, []string{"e", "d"}, 6.0, "e"}},
		{29_999, want{0, 1, []string{"e"}, 6.0, "e"}},
		{30_000, want{0, 0, []string{}, 6.0, "e"}},                                   // exactly TTL old: served
		{30_001, want{0, 0, []string{}, window.StatusExpired, window.StatusExpired}}, // 1 ms older: expired
	}
	for _, c := range cases {
		for _, rev := range []bool{false, true} {
			res := read(c.at, rev)
			got := func(i int) any {
				fv := res[i]
				if fv.Status != window.StatusPresent {
					return fv.Status
				}
				switch fv.Value.Kind() {
				case featurestore.KindDouble:
					return fv.Value.Double()
				case featurestore.KindString:
					return fv.Value.Str()
				}
				return fv.Value
			}
			if n := res[0].Value.Int64(); n != c.w.n10 {
				t.Errorf("at %d: n_10s = %d, want %d", c.at, n, c.w.n10)
			}
			if n := res[1].Value.Int64(); n != c.w.n30 {
				t.Errorf("at %d: n_30s = %d, want %d", c.at, n, c.w.n30)
			}
			if l := res[2].Value.StringList(); len(l) != len(c.w.last2) || (len(l) > 0 && (l[0] != c.w.last2[0] || l[len(l)-1] != c.w.last2[len(l)-1])) {
				t.Errorf("at %d: last2 = %v, want %v", c.at, l, c.w.last2)
			}
			if g := got(3); g != c.w.amount {
				t.Errorf("at %d (reverse %v): amount = %v, want %v", c.at, rev, g, c.w.amount)
			}
			if g := got(4); g != c.w.cat {
				t.Errorf("at %d (reverse %v): cat = %v, want %v", c.at, rev, g, c.w.cat)
			}
			if cv := res[1].Covered; cv != window.Covered(c.at, 30_000, 10_000) || cv.End != c.at+1 {
				t.Errorf("at %d: covered %+v", c.at, cv)
			}
		}
	}
}
