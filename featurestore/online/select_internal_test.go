package online

import (
	"fmt"
	"testing"

	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// TestSelectReadModes: a layout reads slots by name only when the tiles its
// read needs are at most a quarter of the ring.
func TestSelectReadModes(t *testing.T) {
	reg, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, `
kind: Entity
name: m
join_keys: [{name: id, type: string}]
---
kind: Source
name: s
kafka: {topic: s}
timestamp: {field: ts, encoding: epoch_ms}
keys: {id: m}
fields: {amount: double}
allowed_lateness: 10m
---
kind: FeatureView
name: v
entity: m
source: s
tile: 1m
features:
  - {name: n_10m, aggregation: count, window: 10m}
  - {name: n_6h, aggregation: count, window: 6h}
  - {name: n_1d, aggregation: count, window: 1d}
  - {name: amount, field: amount, type: double}
`)})
	if err != nil {
		t.Fatal(err)
	}
	src := reg.Source("s")
	w, err := window.Compile(reg.View("v"), src)
	if err != nil {
		t.Fatal(err)
	}
	l := NewViewLayout("p", "v", w, src.Reach())
	for _, c := range []struct {
		features []int
		mode     readMode
		tiles    int
	}{
		{[]int{0, 1, 2, 3}, readAll, 1440},
		{[]int{2}, readAll, 1440},
		{[]int{1, 3}, readSlots, 360}, // 360*4 <= 1440+10+2
		{[]int{0}, readSlots, 10},
		{[]int{3}, readTail, 0},
	} {
		s, err := l.Select(c.features)
		if err != nil {
			t.Fatal(err)
		}
		r := s.readsOf()
		if r.mode != c.mode || r.tiles != c.tiles || s.Ring != l.Ring {
			t.Errorf("Select(%v): mode %d, %d tiles, ring %d; want mode %d, %d tiles, ring %d", c.features, r.mode, r.tiles, s.Ring, c.mode, c.tiles, l.Ring)
		}
		if c.mode == readSlots && (r.names[0] != RingField || r.ring != string(TiledRingValue(l.Ring, 0, l.View.Tile())) || len(r.slots.names) != int(l.Ring)) {
			t.Errorf("Select(%v): reads %v, ring %q, %d slot names", c.features, r.names, r.ring, len(r.slots.names))
		}
	}
}
