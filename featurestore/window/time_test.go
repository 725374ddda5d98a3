package window_test

import (
	"testing"
	"time"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

func TestTileOf(t *testing.T) {
	for _, tt := range []struct {
		t, g, want int64
	}{
		{0, 1000, 0},
		{1, 1000, 0},
		{999, 1000, 0},
		{1000, 1000, 1},
		{1001, 1000, 1},
		{-1, 1000, -1},
		{-999, 1000, -1},
		{-1000, 1000, -1},
		{-1001, 1000, -2},
		{1_700_000_000_000, 60_000, 28_333_333},
		{1_700_000_039_999, 60_000, 28_333_333},
		{1_700_000_040_000, 60_000, 28_333_334},
		{-1_700_000_000_001, 60_000, -28_333_334},
		{1 << 53, 1, 1 << 53},
		{-(1 << 53), 7, -1286742750677285}, // floor(-2^53/7)
	} {
		if got := window.TileOf(tt.t, tt.g); got != tt.want {
			t.Errorf("TileOf(%d, %d) = %d, want %d", tt.t, tt.g, got, tt.want)
		}
		if k := window.TileOf(tt.t, tt.g); window.TileStart(k, tt.g) > tt.t || window.TileStart(k+1, tt.g) <= tt.t {
			t.Errorf("tile %d of size %d does not hold %d", k, tt.g, tt.t)
		}
	}
}

func TestCovered(t *testing.T) {
	const g = 1000
	for _, tt := range []struct {
		name string
		t, w int64
		want window.Interval
	}{
		{"at a tile's start", 3000, 3 * g, window.Interval{Start: 1000, End: 3001}},
		{"at a tile's last ms", 2999, 3 * g, window.Interval{Start: 0, End: 3000}},
		{"inside a tile", 2500, 3 * g, window.Interval{Start: 0, End: 2501}},
		{"W = g at the start", 3000, g, window.Interval{Start: 3000, End: 3001}},
		{"W = g at the end", 3999, g, window.Interval{Start: 3000, End: 4000}},
		{"negative time", -1, g, window.Interval{Start: -1000, End: 0}},
		{"negative, several tiles", -1001, 3 * g, window.Interval{Start: -4000, End: -1000}},
		{"crossing zero", 500, 2 * g, window.Interval{Start: -1000, End: 501}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := window.Covered(tt.t, tt.w, g)
			if got != tt.want {
				t.Fatalf("Covered(%d, %d, %d) = %v, want %v", tt.t, tt.w, g, got, tt.want)
			}
			r := window.WindowTiles(tt.t, tt.w, g)
			if r.Len() != int(tt.w/g) || r.First*g != got.Start || r.Last != window.TileOf(tt.t, g) {
				t.Fatalf("WindowTiles(%d, %d, %d) = %v, does not match %v", tt.t, tt.w, g, r, got)
			}
			// The window is between W-g+1 and W long.
			if l := got.End - got.Start; l < tt.w-g+1 || l > tt.w {
				t.Fatalf("covered length %d outside [%d, %d]", l, tt.w-g+1, tt.w)
			}
		})
	}
}

func TestExpired(t *testing.T) {
	for _, tt := range []struct {
		t, e, ttl int64
		want      bool
	}{
		{1000, 0, 1000, false}, // exactly TTL old: still served
		{1001, 0, 1000, true},  // a millisecond older: expired
		{999, 0, 1000, false},
		{0, 0, 1000, false},
		{-5, 10, 1000, false},      // an event after t is not expired
		{1 << 40, 0, 0, false},     // no TTL: never expires
		{-1000, -2001, 1000, true}, // negative times
		{-1000, -2000, 1000, false},
	} {
		if got := window.Expired(tt.t, tt.e, tt.ttl); got != tt.want {
			t.Errorf("Expired(t=%d, e=%d, ttl=%d) = %v, want %v", tt.t, tt.e, tt.ttl, got, tt.want)
		}
	}
}

func TestOrderKey(t *testing.T) {
	for _, tt := range []struct {
		a, b window.OrderKey
		want int
	}{
		{window.OrderKey{Time: 1}, window.OrderKey{Time: 2}, -1},
		{window.OrderKey{Time: 2, Partition: 0, Offset: 9}, window.OrderKey{Time: 1, Partition: 5, Offset: 99}, 1},
		{window.OrderKey{Time: 1, Partition: 1, Offset: 0}, window.OrderKey{Time: 1, Partition: 0, Offset: 99}, 1},
		{window.OrderKey{Time: 1, Partition: 1, Offset: 5}, window.OrderKey{Time: 1, Partition: 1, Offset: 6}, -1},
		{window.OrderKey{Time: -1, Partition: 1, Offset: 5}, window.OrderKey{Time: -1, Partition: 1, Offset: 5}, 0},
	} {
		if got := tt.a.Compare(tt.b); got != tt.want {
			t.Errorf("%+v.Compare(%+v) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := tt.b.Compare(tt.a); got != -tt.want {
			t.Errorf("%+v.Compare(%+v) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

const boundaryYAML = `
kind: Entity
name: e
join_keys: [{name: id, type: string}]
---
kind: Source
name: s
kafka: {topic: t}
timestamp: {field: ts}
keys: {id: id}
fields: {x: int64, s: string}
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: e
source: s
tile: 1m
ttl: 10m
features:
  - {name: c1m, aggregation: count, window: 1m}
  - {name: c5m, aggregation: count, window: 5m}
  - {name: clife, aggregation: count, window: lifetime}
  - {name: last_x, field: x, type: int64}
`

// TestReadBoundaries reads one event at the edges of windows and of the TTL.
func TestReadBoundaries(t *testing.T) {
	v, _ := compileYAML(t, boundaryYAML, "v")
	const g = int64(time.Minute / time.Millisecond)
	for _, e := range []int64{0, 7 * g, 7*g + 1234, 8*g - 1, -1, -g, -3*g + 17} {
		ev := &window.Event{Time: e, Partition: 0, Offset: 1, Fields: []featurestore.Value{{}, featurestore.Int64Value(42)}}
		k := v.TileOf(e)
		tile := v.NewTileState(k)
		if err := tile.Add(ev); err != nil {
			t.Fatal(err)
		}
		life, last := v.NewLifetimeState(), v.NewLastValues()
		life.Add(ev)
		last.Add(ev)
		r := v.NewReader()
		for _, tt := range []struct {
			at         int64
			c1m, c5m   int64
			lastStatus window.Status
			name       string
		}{
			{at: e, c1m: 1, c5m: 1, lastStatus: window.StatusPresent, name: "at the event"},
			{at: (k+1)*g - 1, c1m: 1, c5m: 1, lastStatus: window.StatusPresent, name: "last ms of its tile"},
			{at: (k + 1) * g, c1m: 0, c5m: 1, lastStatus: window.StatusPresent, name: "next tile"},
			{at: (k+5)*g - 1, c1m: 0, c5m: 1, lastStatus: window.StatusPresent, name: "last ms in 5m"},
			{at: (k + 5) * g, c1m: 0, c5m: 0, lastStatus: window.StatusPresent, name: "out of 5m"},
			{at: e + 10*g, c1m: 0, c5m: 0, lastStatus: window.StatusPresent, name: "exactly TTL old"},
			{at: e + 10*g + 1, c1m: 0, c5m: 0, lastStatus: window.StatusExpired, name: "TTL + 1ms"},
		} {
			got, err := r.Read(tt.at, []*window.TileState{tile}, life, last)
			if err != nil {
				t.Fatal(err)
			}
			if got[0].Value.Int64() != tt.c1m || got[1].Value.Int64() != tt.c5m || got[2].Value.Int64() != 1 {
				t.Errorf("event at %d, read %s (%d): counts 1m=%v 5m=%v life=%v, want %d %d 1", e, tt.name, tt.at, got[0].Value, got[1].Value, got[2].Value, tt.c1m, tt.c5m)
			}
			if got[3].Status != tt.lastStatus || got[3].EventTime != e || !got[3].HasEventTime {
				t.Errorf("event at %d, read %s (%d): last value %+v, want status %s", e, tt.name, tt.at, got[3], tt.lastStatus)
			}
			if tt.lastStatus == window.StatusPresent && got[3].Value.Int64() != 42 {
				t.Errorf("last value %v, want 42", got[3].Value)
			}
			if tt.lastStatus != window.StatusPresent && !got[3].Value.IsNull() {
				t.Errorf("an expired value must not be served: %v", got[3].Value)
			}
			if want := window.Covered(tt.at, 5*g, g); got[1].Covered != want {
				t.Errorf("covered %v, want %v", got[1].Covered, want)
			}
			if got[1].HasEventTime != (tt.c5m > 0) {
				t.Errorf("5m count %d with event time %v", tt.c5m, got[1].HasEventTime)
			}
		}
	}
}

func TestTilesNeededAndRetention(t *testing.T) {
	v, _ := compileYAML(t, boundaryYAML, "v")
	const g = int64(60_000)
	for _, at := range []int64{0, 1, g - 1, g, -1, 1_700_000_000_000} {
		r := v.TilesNeeded(at)
		if r.Last != window.TileOf(at, g) || r.Len() != 5 {
			t.Errorf("TilesNeeded(%d) = %+v, want 5 tiles ending at %d", at, r, window.TileOf(at, g))
		}
		// Every tile a read needs has not expired, and the one before has.
		for k := r.First; k <= r.Last; k++ {
			if v.TileExpiry(k) <= at {
				t.Errorf("tile %d needed at %d but expires at %d", k, at, v.TileExpiry(k))
			}
		}
		if v.TileExpiry(r.First-1) > at {
			t.Errorf("tile %d not needed at %d but expires only at %d", r.First-1, at, v.TileExpiry(r.First-1))
		}
	}
	if got := v.MaxWindow(); got != 5*g {
		t.Errorf("MaxWindow = %d", got)
	}
	if got := v.Retention(30 * time.Second); got != 5*time.Minute+30*time.Second {
		t.Errorf("Retention = %s", got)
	}
	noWindows, _ := compileYAML(t, `
kind: Entity
name: e
join_keys: [{name: id, type: string}]
---
kind: Source
name: s
kafka: {topic: t}
timestamp: {field: ts}
keys: {id: id}
fields: {x: int64}
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: e
source: s
features:
  - {name: last_x, field: x, type: int64}
`, "v")
	if r := noWindows.TilesNeeded(12345); r.Len() != 0 {
		t.Errorf("a view without windows needs tiles %+v", r)
	}
}
