package window_test

import (
	"math/rand"
	"strings"
	"testing"

	"github.com/featurestore/featurestore/featurestore/window"
)

// TestPropertyProjection reads random subsets of a view's features with a
// projection: from tiles encoded by the full view, decoded by the
// projection, and only those in the projection's (narrower) window, as an
// online read of the needed slots gets them. Every kept feature must equal
// the full view's read bit for bit, and the reference.
func TestPropertyProjection(t *testing.T) {
	v, rv := loadView(t, "prop.yaml", "prop")
	nf := len(v.Features())
	for seed := range propIterations() {
		rng := rand.New(rand.NewSource(int64(5000 + seed)))
		base := propBases[seed%len(propBases)]
		s := genStream(rng, v, propKeys, 30+rng.Intn(90), base, 4000, seed%2 == 1)
		var keep []int
		for len(keep) == 0 {
			for i := range nf {
				if rng.Intn(3) == 0 {
					keep = append(keep, i)
				}
			}
		}
		pv, err := v.Project(keep)
		if err != nil {
			t.Fatal(err)
		}
		if pv.MaxWindow() > v.MaxWindow() || len(pv.Features()) != nf {
			t.Fatalf("projection of %v: max window %d (view %d), %d features", keep, pv.MaxWindow(), v.MaxWindow(), len(pv.Features()))
		}
		full, proj := v.NewReader(), pv.NewReader()
		for key := range propKeys {
			evs := eventsOfKey(s.accepted, key)
			for range 10 {
				at := pickTime(rng, v, evs, base)
				st := randomStates(t, rng, v, evs, at)
				want, err := full.Read(at, st.tiles, st.life, st.last)
				if err != nil {
					t.Fatal(err)
				}
				need := pv.TilesNeeded(at)
				var tiles []*window.TileState
				for _, ts := range st.tiles {
					if ts == nil || (pv.HasPart(window.PartWindow) && !need.Contains(ts.Index())) {
						continue
					}
					pt := pv.NewTileState(ts.Index())
					if err := pt.UnmarshalBinary(ts.AppendBinary(nil)); err != nil {
						t.Fatal(err)
					}
					tiles = append(tiles, pt)
				}
				life, last := pv.NewLifetimeState(), pv.NewLastValues()
				if err := life.UnmarshalBinary(orEmpty(st.life.AppendBinary(nil), v.NewLifetimeState())); err != nil {
					t.Fatal(err)
				}
				if err := last.UnmarshalBinary(orEmpty(st.last.AppendBinary(nil), v.NewLastValues())); err != nil {
					t.Fatal(err)
				}
				got, err := proj.Read(at, tiles, life, last)
				if err != nil {
					t.Fatal(err)
				}
				for _, i := range keep {
					a, b := want[i], got[i]
					if a.Status != b.Status || !a.Value.Equal(b.Value) || a.EventTime != b.EventTime || a.HasEventTime != b.HasEventTime || a.Covered != b.Covered {
						t.Fatalf("seed %d, keep %v: %s at %d: projection read %+v, the view %+v", seed, keep, rv.Features[i].Name, at, b, a)
					}
				}
				check(t, "seed "+itoa(seed), rv, want, evs, at)
			}
		}
	}
}

func TestProjectionNarrowsAndReadsOnly(t *testing.T) {
	v, _ := loadView(t, "prop.yaml", "prop")
	all := make([]int, len(v.Features()))
	for i := range all {
		all[i] = i
	}
	if pv, err := v.Project(all); err != nil || pv != v {
		t.Fatalf("Project(every feature) = %p, %v; want the view itself", pv, err)
	}
	if _, err := v.Project([]int{len(all)}); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("Project(out of range) error %v", err)
	}
	// The shortest windowed feature alone needs only its own tiles.
	short := -1
	for i, f := range v.Features() {
		if f.Part == window.PartWindow && (short < 0 || f.Window < v.Features()[short].Window) {
			short = i
		}
	}
	pv, err := v.Project([]int{short})
	if err != nil {
		t.Fatal(err)
	}
	if !pv.Projected() || v.Projected() {
		t.Fatal("Projected: want true for the projection only")
	}
	if got, want := pv.MaxWindow(), v.Features()[short].Window; got != want || want >= v.MaxWindow() {
		t.Fatalf("projection's max window %d, want %d (view's %d)", got, want, v.MaxWindow())
	}
	if pv.HasPart(window.PartLastValue) || pv.HasPart(window.PartLifetime) {
		t.Fatal("a projection of one windowed feature holds other parts' states")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("encoding a projection's tile did not panic")
		}
	}()
	pv.NewTileState(0).AppendBinary(nil)
}
