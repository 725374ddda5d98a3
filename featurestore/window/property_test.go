package window_test

import (
	"bytes"
	"math/rand"
	"slices"
	"strconv"
	"testing"

	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// The property tests are the package's promise: however events arrive,
// are batched, merged, encoded and decoded, a read at t gives exactly what
// the brute-force reference computes from the accepted events.

const propKeys = 3

var propBases = []int64{0, -17_500, 1_700_000_000_123}

func propIterations() int {
	if testing.Short() {
		return 12
	}
	return 60
}

// roundTripper is what every state container offers.
type roundTripper[T any] interface {
	AppendBinary([]byte) []byte
	UnmarshalBinary([]byte) error
	Merge(*T) error
	*T
}

// build adds events to fresh states in random order and random batches,
// round-trips them through the encoding at random, merges the partial states
// in a random tree, and returns the result (a fresh empty state for no
// events).
func build[T any, P roundTripper[T]](t testing.TB, rng *rand.Rand, fresh func() P, add func(P, *rawEvent), evs []*rawEvent) P {
	t.Helper()
	evs = slices.Clone(evs)
	rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	var parts []P
	for len(evs) > 0 || len(parts) == 0 {
		n := min(len(evs), 1+rng.Intn(6))
		p := fresh()
		for _, e := range evs[:n] {
			add(p, e)
		}
		evs = evs[n:]
		parts = append(parts, maybeRoundTrip(t, rng, fresh, p))
	}
	for len(parts) > 1 {
		i, j := rng.Intn(len(parts)), rng.Intn(len(parts)-1)
		if j >= i {
			j++
		}
		if err := parts[i].Merge((*T)(parts[j])); err != nil {
			t.Fatal(err)
		}
		parts[i] = maybeRoundTrip(t, rng, fresh, parts[i])
		parts = slices.Delete(parts, j, j+1)
	}
	return parts[0]
}

func maybeRoundTrip[T any, P roundTripper[T]](t testing.TB, rng *rand.Rand, fresh func() P, p P) P {
	t.Helper()
	if rng.Intn(2) == 0 {
		return p
	}
	b := p.AppendBinary(nil)
	q := fresh()
	if err := q.UnmarshalBinary(b); err != nil {
		t.Fatalf("decode what was encoded: %v", err)
	}
	if b2 := q.AppendBinary(nil); !bytes.Equal(b, b2) {
		t.Fatalf("encoding changed in a round trip:\n%x\n%x", b, b2)
	}
	return q
}

// states are what a read needs.
type states struct {
	tiles []*window.TileState
	life  *window.LifetimeState
	last  *window.LastValues
}

// randomStates builds the states a read at t is given, from the events of
// one key: complete tiles before the tile of t, the events up to t in the
// tile of t, complete tiles after it (which the read must ignore), and the
// lifetime and last values of the events up to t.
func randomStates(t testing.TB, rng *rand.Rand, v *window.View, evs []*rawEvent, at int64) states {
	byTile := map[int64][]*rawEvent{}
	var upTo []*rawEvent
	kt := v.TileOf(at)
	for _, e := range evs {
		k := v.TileOf(e.time)
		if k != kt || e.time <= at {
			byTile[k] = append(byTile[k], e)
		}
		if e.time <= at {
			upTo = append(upTo, e)
		}
	}
	var s states
	for _, k := range slices.Sorted(mapsKeys(byTile)) {
		ts := build(t, rng, func() *window.TileState { return v.NewTileState(k) }, func(ts *window.TileState, e *rawEvent) {
			if err := ts.Add(&e.ev); err != nil {
				t.Fatal(err)
			}
		}, byTile[k])
		s.tiles = append(s.tiles, ts)
	}
	if rng.Intn(3) == 0 {
		s.tiles = append(s.tiles, nil) // a tile the store did not have
	}
	rng.Shuffle(len(s.tiles), func(i, j int) { s.tiles[i], s.tiles[j] = s.tiles[j], s.tiles[i] })
	s.life = build(t, rng, v.NewLifetimeState, func(l *window.LifetimeState, e *rawEvent) { l.Add(&e.ev) }, upTo)
	s.last = build(t, rng, v.NewLastValues, func(l *window.LastValues, e *rawEvent) { l.Add(&e.ev) }, upTo)
	return s
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// pickTime picks a read time: anywhere from before the events to long after
// them, or on a boundary: an event's time, a tile's first or last
// millisecond, the last millisecond before an event leaves a window, and the
// edges of the TTL.
func pickTime(rng *rand.Rand, v *window.View, evs []*rawEvent, base int64) int64 {
	if len(evs) == 0 || rng.Intn(3) == 0 {
		return base - 3000 + rng.Int63n(55000)
	}
	e := evs[rng.Intn(len(evs))].time
	g := v.Tile()
	start := v.TileOf(e) * g
	switch rng.Intn(7) {
	case 0:
		return e
	case 1:
		return start
	case 2:
		return start + g - 1
	case 3:
		return start + 3*g - 1 // still in a 3-tile window
	case 4:
		return start + 3*g // just out of it
	case 5:
		return e + v.TTL()
	}
	return e + v.TTL() + 1
}

// check compares a read with the reference.
func check(t *testing.T, ctx string, rv *registry.FeatureView, got []window.FeatureValue, evs []*rawEvent, at int64) {
	t.Helper()
	for i, f := range rv.Features {
		want := reference(rv, f, evs, at)
		g := got[i]
		switch {
		case g.Status != want.status:
			t.Fatalf("%s: %s at %d: status %s, want %s (value %v, want %v)", ctx, f.Name, at, g.Status, want.status, g.Value, want.value)
		case !want.approx && !g.Value.Equal(want.value):
			t.Fatalf("%s: %s at %d: value %v, want %v", ctx, f.Name, at, g.Value, want.value)
		case g.HasEventTime != want.hasTime || (want.hasTime && g.EventTime != want.eventTime):
			t.Fatalf("%s: %s at %d: event time %d (%v), want %d (%v)", ctx, f.Name, at, g.EventTime, g.HasEventTime, want.eventTime, want.hasTime)
		case g.Covered != want.covered:
			t.Fatalf("%s: %s at %d: covered %v, want %v", ctx, f.Name, at, g.Covered, want.covered)
		}
	}
}

func sameReads(t *testing.T, ctx string, rv *registry.FeatureView, a, b []window.FeatureValue) {
	t.Helper()
	for i := range a {
		if a[i].Status != b[i].Status || !a[i].Value.Equal(b[i].Value) || a[i].EventTime != b[i].EventTime || a[i].Covered != b[i].Covered {
			t.Fatalf("%s: %s differs between two builds of the same events: %+v vs %+v", ctx, rv.Features[i].Name, a[i], b[i])
		}
	}
}

// TestPropertyRandomBuilds reads at random times, before, among and long
// after the events, from states built in two independent random ways, and
// compares both with the reference and with each other, bit for bit.
func TestPropertyRandomBuilds(t *testing.T) {
	v, rv := loadView(t, "prop.yaml", "prop")
	for seed := range propIterations() {
		rng := rand.New(rand.NewSource(int64(seed)))
		base := propBases[seed%len(propBases)]
		s := genStream(rng, v, propKeys, 30+rng.Intn(90), base, 4000, seed%2 == 1)
		r1, r2 := v.NewReader(), v.NewReader()
		for key := range propKeys {
			evs := eventsOfKey(s.accepted, key)
			for range 10 {
				at := pickTime(rng, v, evs, base)
				a := randomStates(t, rng, v, evs, at)
				b := randomStates(t, rng, v, evs, at)
				ra, err := r1.Read(at, a.tiles, a.life, a.last)
				if err != nil {
					t.Fatal(err)
				}
				rb, err := r2.Read(at, b.tiles, b.life, b.last)
				if err != nil {
					t.Fatal(err)
				}
				ctx := "seed " + itoa(seed)
				sameReads(t, ctx, rv, ra, rb)
				check(t, ctx, rv, ra, evs, at)
				sameTiles(t, ctx, a.tiles, b.tiles)
			}
		}
	}
}

// sameTiles checks that tiles built from the same events encode to the same
// bytes.
func sameTiles(t *testing.T, ctx string, a, b []*window.TileState) {
	t.Helper()
	enc := map[int64][]byte{}
	for _, ts := range a {
		if ts != nil {
			enc[ts.Index()] = ts.AppendBinary(nil)
		}
	}
	for _, ts := range b {
		if ts == nil {
			continue
		}
		if got := ts.AppendBinary(nil); !bytes.Equal(got, enc[ts.Index()]) {
			t.Fatalf("%s: tile %d encodes differently when built differently:\n%x\n%x", ctx, ts.Index(), got, enc[ts.Index()])
		}
	}
}

// TestPropertyOnline ingests as the online path does: events in arrival
// order, in batches, each batch merged into the tile, lifetime and
// last-value blobs read from a store and written back; then serves reads at
// and long after the newest event.
func TestPropertyOnline(t *testing.T) {
	v, rv := loadView(t, "prop.yaml", "prop")
	for seed := range propIterations() {
		rng := rand.New(rand.NewSource(int64(1000 + seed)))
		base := propBases[seed%len(propBases)]
		s := genStream(rng, v, propKeys, 30+rng.Intn(120), base, 4000, seed%2 == 1)
		type tileKey struct {
			key  int
			tile int64
		}
		tiles := map[tileKey][]byte{}
		life := map[int][]byte{}
		last := map[int][]byte{}
		acc := s.accepted
		for len(acc) > 0 {
			n := min(len(acc), 1+rng.Intn(8))
			batch := acc[:n]
			acc = acc[n:]
			for key := range propKeys {
				evs := eventsOfKey(batch, key)
				if len(evs) == 0 {
					continue
				}
				byTile := map[int64][]*rawEvent{}
				for _, e := range evs {
					byTile[v.TileOf(e.time)] = append(byTile[v.TileOf(e.time)], e)
				}
				for k, tevs := range byTile {
					stored := v.NewTileState(k)
					if b, ok := tiles[tileKey{key, k}]; ok {
						if err := stored.UnmarshalBinary(b); err != nil {
							t.Fatal(err)
						}
					}
					partial := v.NewTileState(k)
					for _, e := range tevs {
						if err := partial.Add(&e.ev); err != nil {
							t.Fatal(err)
						}
					}
					if err := stored.Merge(partial); err != nil {
						t.Fatal(err)
					}
					tiles[tileKey{key, k}] = stored.AppendBinary(nil)
				}
				l, lv := v.NewLifetimeState(), v.NewLastValues()
				if err := l.UnmarshalBinary(orEmpty(life[key], v.NewLifetimeState())); err != nil {
					t.Fatal(err)
				}
				if err := lv.UnmarshalBinary(orEmpty(last[key], v.NewLastValues())); err != nil {
					t.Fatal(err)
				}
				for _, e := range evs {
					l.Add(&e.ev)
					lv.Add(&e.ev)
				}
				life[key], last[key] = l.AppendBinary(nil), lv.AppendBinary(nil)
			}
		}
		r := v.NewReader()
		for key := range propKeys {
			evs := eventsOfKey(s.accepted, key)
			now := base
			for _, e := range evs {
				now = max(now, e.time)
			}
			for _, at := range []int64{now, now + rng.Int63n(3000), now + rng.Int63n(12000), now + 60000} {
				var ts []*window.TileState
				need := v.TilesNeeded(at)
				for k := need.First; k <= need.Last; k++ {
					if b, ok := tiles[tileKey{key, k}]; ok {
						st := v.NewTileState(k)
						if err := st.UnmarshalBinary(b); err != nil {
							t.Fatal(err)
						}
						ts = append(ts, st)
					}
				}
				l, lv := v.NewLifetimeState(), v.NewLastValues()
				if b, ok := life[key]; ok {
					if err := l.UnmarshalBinary(b); err != nil {
						t.Fatal(err)
					}
				}
				if b, ok := last[key]; ok {
					if err := lv.UnmarshalBinary(b); err != nil {
						t.Fatal(err)
					}
				}
				got, err := r.Read(at, ts, l, lv)
				if err != nil {
					t.Fatal(err)
				}
				check(t, "online seed "+itoa(seed), rv, got, evs, at)
			}
		}
	}
}

func orEmpty(b []byte, empty interface{ AppendBinary([]byte) []byte }) []byte {
	if b == nil {
		return empty.AppendBinary(nil)
	}
	return b
}

// TestPropertyExport builds features as the training export does: a key's
// events in time order, added up to each entity row's timestamp, with tiles
// evicted once no later row needs them.
func TestPropertyExport(t *testing.T) {
	v, rv := loadView(t, "prop.yaml", "prop")
	for seed := range propIterations() {
		rng := rand.New(rand.NewSource(int64(2000 + seed)))
		base := propBases[seed%len(propBases)]
		s := genStream(rng, v, propKeys, 30+rng.Intn(120), base, 4000, seed%2 == 1)
		r := v.NewReader()
		for key := range propKeys {
			evs := eventsOfKey(s.accepted, key)
			sorted := slices.Clone(evs)
			slices.SortFunc(sorted, func(a, b *rawEvent) int { return a.orderKey().Compare(b.orderKey()) })
			rows := make([]int64, 15)
			for i := range rows {
				rows[i] = pickTime(rng, v, evs, base)
			}
			slices.Sort(rows)
			tiles := map[int64]*window.TileState{}
			life, last := v.NewLifetimeState(), v.NewLastValues()
			next := 0
			for _, at := range rows {
				for ; next < len(sorted) && sorted[next].time <= at; next++ {
					e := sorted[next]
					k := v.TileOf(e.time)
					if tiles[k] == nil {
						tiles[k] = v.NewTileState(k)
					}
					if err := tiles[k].Add(&e.ev); err != nil {
						t.Fatal(err)
					}
					life.Add(&e.ev)
					last.Add(&e.ev)
				}
				need := v.TilesNeeded(at)
				var ts []*window.TileState
				for k, st := range tiles {
					if k < need.First {
						delete(tiles, k) // rows are sorted: never needed again
						continue
					}
					ts = append(ts, st)
				}
				got, err := r.Read(at, ts, life, last)
				if err != nil {
					t.Fatal(err)
				}
				check(t, "export seed "+itoa(seed), rv, got, evs, at)
			}
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
