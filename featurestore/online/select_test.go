package online_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/ingest"
	"github.com/featurestore/featurestore/registry"
)

// selectDefs is a view whose longest window (a day of minute tiles) is much
// longer than its shortest, with a lifetime count, a sketch and a last value
// beside its windows; lateness is the first %s, the second a rollup or
// nothing.
const selectDefs = `
kind: Entity
name: merchant
join_keys: [{name: merchant_id, type: string}]
---
kind: Source
name: pays
kafka: {topic: pays}
timestamp: {field: ts, encoding: epoch_ms}
keys: {merchant_id: merchant}
fields: {amount: double, card: string}
allowed_lateness: %s
---
kind: FeatureView
name: merchant_pays
entity: merchant
source: pays
tile: 1m
%s
features:
  - {name: n_10m, aggregation: count, window: 10m}
  - {name: sum_1h, aggregation: sum, field: amount, window: 1h}
  - {name: n_1d, aggregation: count, window: 1d}
  - {name: cards_1d, aggregation: count_distinct, field: card, window: 1d}
  - {name: cards_10m, aggregation: count_distinct, field: card, window: 10m}
  - {name: n_all, aggregation: count, window: lifetime}
  - {name: amount, field: amount, type: double}
`

// writeSelectEvents writes, through the ingest applier of a registry whose
// source has the given lateness, events of a busy merchant (one every 20 s
// over 26 hours: a tile in every slot of the ring) and of a quiet one, ending
// at end, and returns the layout of the view.
func writeSelectEvents(t testing.TB, rc *redis.Client, project, lateness, rollup string, entities []string, end int64) *online.ViewLayout {
	t.Helper()
	reg, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, selectDefs, lateness, rollup)})
	if err != nil {
		t.Fatal(err)
	}
	src := reg.Source("pays")
	a, err := ingest.NewApplier(project, reg, src, online.New(rc, online.Options{}), ingest.NewPositions(rc, project), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 5))
	var msgs []kafka.Message
	const step = 20_000
	for ts := end - 26*3600_000; ts <= end; ts += step {
		for _, e := range entities {
			if strings.HasPrefix(e, "quiet") && rng.IntN(500) != 0 {
				continue
			}
			msgs = append(msgs, kafka.Message{Topic: "pays", Offset: int64(len(msgs)), Value: fmt.Appendf(nil,
				`{"merchant":%q,"ts":%d,"amount":%d.25,"card":"c%d"}`, e, ts-rng.Int64N(step), rng.IntN(100), rng.IntN(40))})
		}
	}
	ctx := context.Background()
	for i := 0; i < len(msgs); i += 2000 {
		if err := a.Apply(ctx, "pays", 0, msgs[i:min(i+2000, len(msgs))]); err != nil {
			t.Fatal(err)
		}
	}
	w, err := window.Compile(reg.View("merchant_pays"), src)
	if err != nil {
		t.Fatal(err)
	}
	l := online.NewViewLayout(project, "merchant_pays", w, src.Reach())
	return &l
}

// TestReadViewsSelect reads subsets of a view's features with layouts from
// ViewLayout.Select, over RESP2 and RESP3, at many times through a day of
// events: a busy merchant whose hash holds a tile in every slot, a quiet
// one, one without events, and one whose hash a registry with another
// lateness laid out in another ring (read again whole: ReadAgain). Every
// selected feature equals the full layout's read of it, bit for bit.
func TestReadViewsSelect(t *testing.T) {
	addr := testenv.RedisAddr(t)
	project := testenv.UniqueName(t, "readselect")
	rc := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rc.Close()
	end := time.Now().UnixMilli() - 5*60_000
	full := writeSelectEvents(t, rc, project, "10m", "", []string{"busy", "quiet"}, end)
	other := writeSelectEvents(t, rc, project, "3h", "", []string{"moved"}, end)
	if other.Ring == full.Ring {
		t.Fatalf("both registries lay tiles out in a ring of %d", full.Ring)
	}
	ctx := context.Background()
	names := func(l *online.ViewLayout) []string {
		var out []string
		for _, f := range l.View.Features() {
			out = append(out, f.Name)
		}
		return out
	}(full)
	subsets := [][]string{{"n_10m"}, {"n_10m", "cards_10m", "amount"}, {"sum_1h", "n_all"}, {"n_1d"}, {"cards_1d", "n_10m"}, {"amount"}}
	entities := []string{"busy", "quiet", "nobody", "moved"}
	rng := rand.New(rand.NewPCG(9, 1))
	forEachProtocol(t, addr, func(t *testing.T, store *online.Store) {
		var fb, sb online.ReadBuffer
		compared, again := 0, 0
		for _, subset := range subsets {
			var idx []int
			for _, n := range subset {
				idx = append(idx, slices.Index(names, n))
			}
			sel, err := full.Select(idx)
			if err != nil {
				t.Fatal(err)
			}
			var reqs, selReqs []online.ViewRead
			for _, e := range entities {
				reqs = append(reqs, online.ViewRead{Layout: full, Entity: featurestore.StringKey(e)})
				selReqs = append(selReqs, online.ViewRead{Layout: &sel, Entity: featurestore.StringKey(e)})
			}
			for range 8 {
				at := end - 25*3600_000 + rng.Int64N(26*3600_000)
				if rng.IntN(3) == 0 {
					at = end + rng.Int64N(90*60_000) // decaying after the last event
				}
				want, err := fb.ReadViews(ctx, store, reqs, at)
				if err != nil {
					t.Fatal(err)
				}
				got, err := sb.ReadViews(ctx, store, selReqs, at)
				if err != nil {
					t.Fatal(err)
				}
				if len(fb.Corrupt())+len(sb.Corrupt()) > 0 {
					t.Fatalf("corrupt reads: %v %v", fb.Corrupt(), sb.Corrupt())
				}
				again += sb.ReadAgain()
				for r, e := range entities {
					for _, i := range idx {
						a, b := want[r][i], got[r][i]
						if a.Status != b.Status || !a.Value.Equal(b.Value) || a.EventTime != b.EventTime || a.HasEventTime != b.HasEventTime || a.Covered != b.Covered {
							t.Fatalf("%s %s at %d, features %v: selected read %+v, full read %+v", e, names[i], at, subset, b, a)
						}
						if e == "busy" && at <= end && a.Status != window.StatusPresent {
							t.Fatalf("busy %s at %d: status %s", names[i], at, a.Status)
						}
						compared++
					}
				}
			}
		}
		// Only the merchant laid out in the other ring is read again, once
		// per read of slots: of the three subsets without a day window nor
		// only a last value, eight reads each.
		if want := 3 * 8; again != want {
			t.Errorf("%d reads again whole, want %d", again, want)
		}
		t.Logf("%d values of selected reads equal the full reads", compared)
	})
}

// TestReadViewsSelectCorrupt: in a read of slots, a key that holds no hash
// and a needed slot that does not decode fail their own reads only, as in a
// read of the whole hash.
func TestReadViewsSelectCorrupt(t *testing.T) {
	addr := testenv.RedisAddr(t)
	project := testenv.UniqueName(t, "selectcorrupt")
	rc := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rc.Close()
	end := time.Now().UnixMilli() - 60_000
	full := writeSelectEvents(t, rc, project, "10m", "", []string{"busy", "broken"}, end)
	sel, err := full.Select([]int{0}) // n_10m
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keyOf := func(e string) string {
		return online.Key{Project: project, View: full.Name, Entity: featurestore.StringKey(e)}.Name()
	}
	at := end/60_000*60_000 - 1 // the last millisecond of a tile with events
	k := full.View.TileOf(at)
	if err := rc.HSet(ctx, keyOf("broken"), online.SlotField(k-1, full.Ring), "\xff").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Set(ctx, keyOf("string"), "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	forEachProtocol(t, addr, func(t *testing.T, store *online.Store) {
		var b online.ReadBuffer
		var reqs []online.ViewRead
		for _, e := range []string{"busy", "broken", "string"} {
			reqs = append(reqs, online.ViewRead{Layout: &sel, Entity: featurestore.StringKey(e)})
		}
		res, err := b.ReadViews(ctx, store, reqs, at)
		if err != nil {
			t.Fatal(err)
		}
		if res[0][0].Status != window.StatusPresent {
			t.Fatalf("busy: %+v", res[0][0])
		}
		c := b.Corrupt()
		if len(c) != 2 || c[0].Key != keyOf("broken") || c[1].Key != keyOf("string") {
			t.Fatalf("corrupt reads %+v, want broken and string", c)
		}
		for _, r := range []int{1, 2} {
			if res[r][0].Status != window.StatusError {
				t.Fatalf("read %d: %+v, want status error", r, res[r][0])
			}
		}
		// The busy merchant has events in each of the window's ten tiles.
		if m := b.TilesMerged(); !slices.Equal(m, []int32{10, -1, -1}) {
			t.Errorf("tiles merged %v, want [10 -1 -1]", m)
		}
	})
}

// BenchmarkReadViewsBusy reads a merchant with a tile in every slot of its
// ring (a day of minute tiles, an event every 20 s, card sketches), one
// entity per read as serving's lookups of one entity: every feature of the
// view (the whole hash, as every lookup read before layouts selected
// features), and layouts selecting the 10-minute count (the slots of its
// ten tiles), the day count (the whole hash, no sketch decoded) and the
// last value (two fields); and with hourly rollup tiles, every feature and
// the day count (its rollup tiles and the tiles at the window's ends).
func BenchmarkReadViewsBusy(b *testing.B) {
	addr := testenv.RedisAddr(b)
	project := testenv.UniqueName(b, "readbusy")
	rc := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, Protocol: 2}) // as featurestore serve
	defer rc.Close()
	end := time.Now().UnixMilli() - 60_000
	full := writeSelectEvents(b, rc, project, "10m", "", []string{"busy"}, end)
	rolled := writeSelectEvents(b, rc, project+"r", "10m", "rollup: 1h", []string{"busy"}, end)
	store := online.New(rc, online.Options{})
	ctx := context.Background()
	for _, c := range []struct {
		name     string
		features []int
		rollup   bool
	}{{"all", nil, false}, {"n_10m", []int{0}, false}, {"n_1d", []int{2}, false}, {"amount", []int{6}, false},
		{"rollup/all", nil, true}, {"rollup/n_1d", []int{2}, true}} {
		full := full
		if c.rollup {
			full = rolled
		}
		l := *full
		if c.features != nil {
			var err error
			if l, err = full.Select(c.features); err != nil {
				b.Fatal(err)
			}
		}
		reqs := []online.ViewRead{{Layout: &l, Entity: featurestore.StringKey("busy")}}
		b.Run(c.name, func(b *testing.B) {
			var buf online.ReadBuffer
			b.ReportAllocs()
			for b.Loop() {
				res, err := buf.ReadViews(ctx, store, reqs, end+1)
				if err != nil {
					b.Fatal(err)
				}
				if i := append(c.features, 0)[0]; res[0][i].Status != window.StatusPresent {
					b.Fatalf("busy merchant: %+v", res[0][i])
				}
			}
		})
	}
}
