package window_test

import (
	"math/rand"
	"os"
	"testing"
	"time"

	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// compileRollup compiles the named view of a testdata file with rollup
// tiles of the given length.
func compileRollup(t testing.TB, file, name string, rollup time.Duration) *window.View {
	t.Helper()
	b, err := os.ReadFile("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": b})
	if err != nil {
		t.Fatal(err)
	}
	rv := *r.View(name)
	rv.Rollup = registry.Duration(rollup)
	v, err := window.Compile(&rv, r.Source(rv.Source))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestPropertyRollups reads at random times from rollup tiles and the
// tiles of ReadPlan only, built in random ways from the events, and
// compares every feature with the read of every tile by the view without
// rollups, bit for bit, and with the reference; also through projections.
func TestPropertyRollups(t *testing.T) {
	plain, rv := loadView(t, "prop.yaml", "prop")
	for seed := range propIterations() {
		rng := rand.New(rand.NewSource(int64(9000 + seed)))
		rollup := time.Duration(2+rng.Intn(3)) * time.Second
		v := compileRollup(t, "prop.yaml", "prop", rollup)
		if v.Rollup() != rollup.Milliseconds() || plain.Rollup() != 0 {
			t.Fatalf("rollup %d, plain %d", v.Rollup(), plain.Rollup())
		}
		base := propBases[seed%len(propBases)]
		s := genStream(rng, plain, propKeys, 30+rng.Intn(90), base, 4000, seed%2 == 1)
		read := v
		kept := map[int]bool{}
		for i := range v.Features() {
			kept[i] = true
		}
		if seed%3 == 2 {
			keep := []int{9} // max_amt_10 at least
			for i := range v.Features() {
				if rng.Intn(2) == 0 {
					keep = append(keep, i)
				}
			}
			var err error
			if read, err = v.Project(keep); err != nil {
				t.Fatal(err)
			}
			clear(kept)
			for _, i := range keep {
				kept[i] = true
			}
		}
		full, rr := plain.NewReader(), read.NewReader()
		for key := range propKeys {
			evs := eventsOfKey(s.accepted, key)
			for range 10 {
				at := pickTime(rng, plain, evs, base)
				st := randomStates(t, rng, plain, evs, at)
				want, err := full.Read(at, st.tiles, st.life, st.last)
				if err != nil {
					t.Fatal(err)
				}
				check(t, "seed "+itoa(seed), rv, want, evs, at)

				plan, rollups := read.ReadPlan(nil, at)
				inPlan := func(k int64) bool {
					for _, r := range plan {
						if r.Contains(k) {
							return true
						}
					}
					return false
				}
				var tiles []*window.TileState
				for _, ts := range st.tiles {
					if ts != nil && inPlan(ts.Index()) {
						pt := read.NewTileState(ts.Index())
						if err := pt.UnmarshalBinary(ts.AppendBinary(nil)); err != nil {
							t.Fatal(err)
						}
						tiles = append(tiles, pt)
					}
				}
				byRollup := map[int64][]*rawEvent{}
				kt := plain.TileOf(at)
				for _, e := range evs {
					k := plain.TileOf(e.time)
					// Every rollup tile, as a read of the whole hash finds
					// them: those outside the plan must be ignored.
					if K := v.RollupOf(k); (rollups.Contains(K) || rng.Intn(2) == 0) && (k != kt || e.time <= at) {
						byRollup[K] = append(byRollup[K], e)
					}
				}
				var coarse []*window.TileState
				for K, es := range byRollup {
					rs := build(t, rng, func() *window.TileState { return v.NewRollupState(K) }, func(ts *window.TileState, e *rawEvent) {
						if err := ts.Add(&e.ev); err != nil {
							t.Fatal(err)
						}
					}, es)
					pr := read.NewRollupState(K)
					if err := pr.UnmarshalBinary(rs.AppendBinary(nil)); err != nil {
						t.Fatal(err)
					}
					coarse = append(coarse, pr)
				}
				rng.Shuffle(len(coarse), func(i, j int) { coarse[i], coarse[j] = coarse[j], coarse[i] })
				life, last := read.NewLifetimeState(), read.NewLastValues()
				if err := life.UnmarshalBinary(orEmpty(st.life.AppendBinary(nil), plain.NewLifetimeState())); err != nil {
					t.Fatal(err)
				}
				if err := last.UnmarshalBinary(orEmpty(st.last.AppendBinary(nil), plain.NewLastValues())); err != nil {
					t.Fatal(err)
				}
				got, err := rr.ReadRollups(at, tiles, coarse, life, last)
				if err != nil {
					t.Fatal(err)
				}
				for i := range want {
					if !kept[i] {
						continue // not in the projection
					}
					a, b := want[i], got[i]
					if a.Status != b.Status || !a.Value.Equal(b.Value) || a.EventTime != b.EventTime || a.HasEventTime != b.HasEventTime || a.Covered != b.Covered {
						t.Fatalf("seed %d, rollup %s, at %d: %s from rollups %+v, from every tile %+v", seed, rollup, at, rv.Features[i].Name, b, a)
					}
				}
			}
		}
	}
}

// TestReadPlan: a day of minute tiles with hour rollups reads at most 142
// tiles and 24 rollup tiles, and the plan's tiles and rollup tiles cover
// each window exactly once.
func TestReadPlan(t *testing.T) {
	v, _ := compileYAML(t, `
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
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: m
source: s
tile: 1m
rollup: 1h
features:
  - {name: n_10m, aggregation: count, window: 10m}
  - {name: n_90m, aggregation: count, window: 90m}
  - {name: n_1d, aggregation: count, window: 1d}
`, "v")
	for _, at := range []int64{0, 59_999, 60_000, 3_599_999, 3_600_000, 1_700_000_123_456, -1} {
		plan, rollups := v.ReadPlan(nil, at)
		n := 0
		for _, r := range plan {
			n += r.Len()
		}
		if n > 142 || rollups.Len() > 24 || n+rollups.Len() > v.ReadPlanMax() {
			t.Errorf("at %d: %d tiles in %v and %d rollup tiles", at, n, plan, rollups.Len())
		}
		k := v.TileOf(at)
		for _, w := range []int64{10, 90, 1440} {
			covered := map[int64]int{}
			for j := k - w + 1; j <= k; j++ {
				K := v.RollupOf(j)
				whole := K*60 >= k-w+1 && K*60+59 <= k && w >= 90
				if whole {
					if !rollups.Contains(K) {
						t.Fatalf("at %d, window %d: rollup %d not in %v", at, w, K, rollups)
					}
					covered[j]++
					continue
				}
				in := false
				for _, r := range plan {
					in = in || r.Contains(j)
				}
				if !in {
					t.Fatalf("at %d, window %d: tile %d neither in the plan %v nor in a whole rollup", at, w, j, plan)
				}
			}
		}
	}
}
