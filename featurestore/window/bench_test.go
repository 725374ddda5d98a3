package window_test

import (
	"math/rand"
	"strconv"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

// benchEvents returns n events spread over tiles tiles of the view (field
// order amount, approved, country, merchant), with merchants from a pool of
// 50 and amounts with cents.
func benchEvents(v *window.View, n, tiles int) []window.Event {
	rng := rand.New(rand.NewSource(1))
	merchants := make([]featurestore.Value, 50)
	for i := range merchants {
		merchants[i] = featurestore.StringValue("merchant-" + strconv.Itoa(i))
	}
	countries := []featurestore.Value{featurestore.StringValue("FR"), featurestore.StringValue("DE")}
	const base = 1_700_000_040_000 // a tile start for 1m tiles
	evs := make([]window.Event, n)
	for i := range evs {
		evs[i] = window.Event{
			Time:      base + int64(rng.Intn(tiles))*v.Tile() + rng.Int63n(v.Tile()),
			Partition: int32(rng.Intn(4)),
			Offset:    int64(i),
			Fields: []featurestore.Value{
				featurestore.DoubleValue(float64(rng.Intn(100000)) / 100),
				featurestore.BoolValue(rng.Intn(5) > 0),
				countries[rng.Intn(2)],
				merchants[rng.Intn(len(merchants))],
			},
		}
	}
	return evs
}

func tilesOf(b testing.TB, v *window.View, evs []window.Event) []*window.TileState {
	byIndex := map[int64]*window.TileState{}
	var out []*window.TileState
	for i := range evs {
		k := v.TileOf(evs[i].Time)
		if byIndex[k] == nil {
			byIndex[k] = v.NewTileState(k)
			out = append(out, byIndex[k])
		}
		if err := byIndex[k].Add(&evs[i]); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// BenchmarkAddEvent adds events to the tile of a view with 6 aggregations
// (count, sum, mean, max, stddev, count_distinct) over 3 windows (10m, 1h,
// 1d): 18 states updated per event. One op is one event.
func BenchmarkAddEvent(b *testing.B) {
	v, _ := loadView(b, "bench.yaml", "bench")
	evs := benchEvents(v, 4096, 1)
	tile := v.NewTileState(v.TileOf(evs[0].Time))
	for i := range evs {
		_ = tile.Add(&evs[i]) // warm up: buffers at their steady size
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := tile.Add(&evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddEventLastValues adds events to the lifetime and last values.
func BenchmarkAddEventLastValues(b *testing.B) {
	v, _ := loadView(b, "bench.yaml", "bench")
	evs := benchEvents(v, 4096, 1)
	last := v.NewLastValues()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		last.Add(&evs[i%len(evs)])
	}
}

// BenchmarkRead60Tiles reads a view with 6 aggregations (count, sum, mean,
// max, stddev, count_distinct) over a 1h window and a last value, at a time
// whose window holds 60 tiles of 1m with 5 events each: every feature merges
// the 60 tiles and computes its result.
func BenchmarkRead60Tiles(b *testing.B) {
	benchRead(b, "bench1h.yaml", "bench1h", 300, 60)
}

// BenchmarkRead1440Tiles reads the view of BenchmarkAddEvent (windows of
// 10m, 1h and 1d) over a day of 1m tiles with 2 events each.
func BenchmarkRead1440Tiles(b *testing.B) {
	benchRead(b, "bench.yaml", "bench", 2880, 1440)
}

func benchRead(b *testing.B, file, name string, events, tiles int) {
	v, _ := loadView(b, file, name)
	evs := benchEvents(v, events, tiles)
	states := tilesOf(b, v, evs)
	last := v.NewLastValues()
	for i := range evs {
		last.Add(&evs[i])
	}
	at := evs[0].Time
	for i := range evs {
		at = max(at, evs[i].Time)
	}
	if need := v.TilesNeeded(at); need.Len() != tiles {
		b.Fatalf("a read needs %d tiles", need.Len())
	}
	r := v.NewReader()
	b.ReportMetric(float64(len(states)), "tiles")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Read(at, states, nil, last); err != nil {
			b.Fatal(err)
		}
	}
}

func benchTile(b *testing.B) (*window.View, *window.TileState) {
	v, _ := loadView(b, "bench.yaml", "bench")
	tiles := tilesOf(b, v, benchEvents(v, 20, 1))
	return v, tiles[0]
}

// BenchmarkMarshalTile encodes a tile of 20 events of the 18-feature view.
func BenchmarkMarshalTile(b *testing.B) {
	_, tile := benchTile(b)
	buf := tile.AppendBinary(nil)
	b.ReportMetric(float64(len(buf)), "bytes/tile")
	b.ReportAllocs()
	for b.Loop() {
		buf = tile.AppendBinary(buf[:0])
	}
}

// BenchmarkUnmarshalTile decodes that tile into a reused state.
func BenchmarkUnmarshalTile(b *testing.B) {
	v, tile := benchTile(b)
	buf := tile.AppendBinary(nil)
	into := v.NewTileState(tile.Index())
	b.ReportAllocs()
	for b.Loop() {
		if err := into.UnmarshalBinary(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIngestBatch is the online write path for one tile: decode the
// stored tile, add a batch of 10 events, encode it back.
func BenchmarkIngestBatch(b *testing.B) {
	v, tile := benchTile(b)
	stored := tile.AppendBinary(nil)
	evs := benchEvents(v, 10, 1)
	st := v.NewTileState(tile.Index())
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		if err := st.UnmarshalBinary(stored); err != nil {
			b.Fatal(err)
		}
		for i := range evs {
			if err := st.Add(&evs[i]); err != nil {
				b.Fatal(err)
			}
		}
		buf = st.AppendBinary(buf[:0])
	}
}
