package ingest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// ringDefs is a view of 1-minute tiles with a count over 10 minutes and a
// sum over 30, and, if long, a count over 60 minutes: removing or adding
// that feature changes the ring of the view's hashes from 38 to 68 slots
// (window + lateness + future skew + 2 tiles).
func ringDefs(t *testing.T, long bool) *registry.Registry {
	t.Helper()
	if long {
		return ringDefsWith(t, "  - {name: n_60m, aggregation: count, window: 60m}\n")
	}
	return ringDefsWith(t, "")
}

// ringDefsWith is ringDefs's view with the features in extra added.
func ringDefsWith(t *testing.T, extra string) *registry.Registry {
	t.Helper()
	defs := `
kind: Entity
name: card
join_keys: [{name: card, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card: card}
fields: {amount: int64}
allowed_lateness: 1m
---
kind: FeatureView
name: v
entity: card
source: txns
tile: 1m
features:
  - {name: n_10m, aggregation: count, window: 10m}
  - {name: amount_30m, field: amount, aggregation: sum, window: 30m}
`
	defs += extra
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(defs)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRingChangeKeepsReadableTiles: a registry change that changes the
// size of a view's tile ring (here the longest window removed or added;
// the allowed lateness or the future skew do the same) must lose no tile
// that a window still reads. Events of the first hour are applied under
// one ring, those of the second under the other, through blind writes and
// merges alike, and every read over the second hour must equal the count
// and sum of the raw events in its window. Before, a tile of the new ring
// took the slot of an old-ring tile still inside the windows (or was
// dropped for a newer old-ring tile in its slot), and the values were
// short for up to the longest window after the change.
func TestRingChangeKeepsReadableTiles(t *testing.T) {
	const minute = int64(60_000)
	for _, c := range []struct {
		name         string
		before, then bool // the 60-minute feature before and after the change
	}{
		{"ring shrinks", true, false},
		{"ring grows", false, true},
		{"no change", false, false},
	} {
		// Slots of the two rings meet differently with the start time.
		for phase := range int64(4) {
			t0 := int64(1795687200000) + 17*phase*minute
			t.Run(fmt.Sprint(c.name, "/phase ", phase), func(t *testing.T) {
				rc, store := miniStore(t)
				type event struct {
					card   string
					ts     int64
					amount int64
				}
				var events []event
				rng := rand.New(rand.NewPCG(1, 2))
				offset := int64(0)
				// check compares the reads at the end of minute m, when every
				// event up to then is applied, with the raw events.
				check := func(r *registry.Registry, m int64) {
					at := t0 + (m+1)*minute - 1
					kt := at / minute
					for _, card := range []string{"c0", "c1", "c2"} {
						var n10, sum30 int64
						for _, ev := range events {
							if k := ev.ts / minute; ev.card == card && ev.ts <= at {
								if kt-k < 10 {
									n10++
								}
								if kt-k < 30 {
									sum30 += ev.amount
								}
							}
						}
						res := readView(t, store, r, "v", card, at)
						if got := res[0].Value.Int64(); got != n10 {
							t.Errorf("%s at minute %d: n_10m = %d, want %d", card, m, got, n10)
						}
						if got := res[1].Value.Int64(); got != sum30 {
							t.Errorf("%s at minute %d: amount_30m = %d, want %d", card, m, got, sum30)
						}
					}
				}
				apply := func(r *registry.Registry, from, to int64) {
					a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
					if err != nil {
						t.Fatal(err)
					}
					for m := from; m < to; m++ {
						var msgs []kafka.Message
						for range 1 + rng.IntN(4) {
							ev := event{card: fmt.Sprint("c", rng.IntN(3)), ts: t0 + m*minute + rng.Int64N(minute), amount: 1 + rng.Int64N(100)}
							events = append(events, ev)
							msgs = append(msgs, kafka.Message{Topic: "txns", Offset: offset, Time: time.UnixMilli(ev.ts),
								Value: fmt.Appendf(nil, `{"card":%q,"ts":%d,"amount":%d}`, ev.card, ev.ts, ev.amount)})
							offset++
						}
						if err := a.Apply(context.Background(), "txns", 0, msgs); err != nil {
							t.Fatal(err)
						}
						check(r, m)
					}
				}
				apply(ringDefs(t, c.before), 0, 60)
				r := ringDefs(t, c.then)
				apply(r, 60, 120)
				// Every hash is laid out in the new ring, and records it.
				v := r.View("v")
				w, err := window.Compile(v, r.Source("txns"))
				if err != nil {
					t.Fatal(err)
				}
				ring := online.NewViewLayout("p", "v", w, r.Source("txns").Reach()).Ring
				for _, card := range []string{"c0", "c1", "c2"} {
					key := online.Key{Project: "p", View: "v", Entity: featurestore.StringKey(card)}.Name()
					h := rc.HGetAll(context.Background(), key).Val()
					if h[online.RingField] != string(online.TiledRingValue(ring, 0, w.Tile())) {
						t.Errorf("%s: ring field %q, want %q", card, h[online.RingField], online.TiledRingValue(ring, 0, w.Tile()))
					}
					for f, val := range h {
						if !strings.HasPrefix(f, "t:") {
							continue
						}
						k, _, err := online.DecodeSlot([]byte(val))
						if err != nil || online.SlotField(k, ring) != f {
							t.Errorf("%s: field %s holds tile %d (%v), not in its slot of a ring of %d", card, f, k, err, ring)
						}
					}
				}
			})
		}
	}
}

// TestRingChangeKeepsOtherFeatures: during a rolling registry change, a
// process whose view lacks a feature (here the max over 60 minutes the new
// definitions add, which also grows the ring) lays out a hash written by
// the new definitions. Moving the tiles must keep the state of every
// feature, its own or not: the slot values move as they are. Before, they
// were decoded with the writer's view and encoded again, which dropped the
// new feature's state from every tile of the hash.
func TestRingChangeKeepsOtherFeatures(t *testing.T) {
	const t0, minute = int64(1795687200000), int64(60_000)
	rc, store := miniStore(t)
	newer := ringDefsWith(t, "  - {name: max_60m, field: amount, aggregation: max, window: 60m}\n")
	older := ringDefs(t, false)
	msg := func(p int, off, m, amount int64) []kafka.Message {
		ts := t0 + m*minute
		return []kafka.Message{{Topic: "txns", Partition: p, Offset: off, Time: time.UnixMilli(ts),
			Value: fmt.Appendf(nil, `{"card":"c","ts":%d,"amount":%d}`, ts, amount)}}
	}
	a, err := NewApplier("p", newer, newer.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for m := range int64(40) {
		amount := int64(1)
		if m == 20 {
			amount = 1000
		}
		if err := a.Apply(context.Background(), "txns", 1, msg(1, m, m, amount)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := NewApplier("p", older, older.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(context.Background(), "txns", 0, msg(0, 0, 40, 1)); err != nil {
		t.Fatal(err)
	}
	res := readView(t, store, newer, "v", "c", t0+41*minute-1)
	if got := res[2]; got.Status != window.StatusPresent || got.Value.Int64() != 1000 {
		t.Errorf("max_60m after the older process's write: %v %v, want 1000", got.Status, got.Value)
	}
	if got := res[0].Value.Int64(); got != 10 {
		t.Errorf("n_10m = %d, want 10", got)
	}
}

// TestRelayoutMergesCopies: a hash without a recorded ring can hold two
// copies of one tile, each with events the other lacks (writes of another
// ring started a new copy where the slot held another tile). Laying the
// hash out keeps the events of both.
func TestRelayoutMergesCopies(t *testing.T) {
	const t0, minute = int64(1795687200000), int64(60_000)
	r := ringDefs(t, false)
	ctx := context.Background()
	msgs := func(from, to int64, m int64) []kafka.Message {
		var out []kafka.Message
		for off := from; off < to; off++ {
			ts := t0 + m*minute + off
			out = append(out, kafka.Message{Topic: "txns", Offset: off, Time: time.UnixMilli(ts),
				Value: fmt.Appendf(nil, `{"card":"c","ts":%d,"amount":1}`, ts)})
		}
		return out
	}
	key := online.Key{Project: "p", View: "v", Entity: featurestore.StringKey("c")}.Name()
	// One copy of tile 5 with offsets 0 and 1, the other with 2 to 4, each
	// written to a store of its own.
	var copies []string
	for _, span := range [][2]int64{{0, 2}, {2, 5}} {
		rc, store := miniStore(t)
		a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Apply(ctx, "txns", 0, msgs(span[0], span[1], 5)); err != nil {
			t.Fatal(err)
		}
		for f, v := range rc.HGetAll(ctx, key).Val() {
			if strings.HasPrefix(f, "t:") {
				copies = append(copies, v)
			}
		}
	}
	if len(copies) != 2 {
		t.Fatalf("%d tile copies, want 2", len(copies))
	}
	rc, store := miniStore(t)
	if err := rc.HSet(ctx, key, online.VersionField, "2", online.FenceField("txns", 0), "4", "t:1", copies[0], "t:2", copies[1]).Err(); err != nil {
		t.Fatal(err)
	}
	a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, "txns", 0, msgs(5, 6, 6)); err != nil {
		t.Fatal(err)
	}
	if got := readView(t, store, r, "v", "c", t0+7*minute-1)[0].Value.Int64(); got != 6 {
		t.Errorf("n_10m = %d, want 6: the events of both copies and the new one", got)
	}
	tiles := 0
	for f := range rc.HGetAll(ctx, key).Val() {
		if strings.HasPrefix(f, "t:") {
			tiles++
		}
	}
	if tiles != 2 {
		t.Errorf("%d tile slots after the relayout, want 2 (tiles 5 and 6)", tiles)
	}
}

// tileDefs is a view of a count over window in tiles of tile, of a source
// with 10 minutes of allowed lateness.
func tileDefs(t *testing.T, tile, window string) *registry.Registry {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, `
kind: Entity
name: card
join_keys: [{name: card, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card: card}
fields: {amount: int64}
allowed_lateness: 10m
---
kind: FeatureView
name: v
entity: card
source: txns
tile: %s
features:
  - {name: n, aggregation: count, window: %s}
`, tile, window)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestTileSizeChangeKeepsNewEvents: a view's tile grows from 1 to 2
// minutes (a breaking change: its windows start from empty), and the hash
// of an entity still holds 1-minute tiles, whose indexes are about twice
// those of 2-minute tiles of the same time. Every event applied after the
// change must be counted. Before, the writer took the old tiles for newer
// ones (in their slots, and when laying the hash out in another ring) and
// dropped the new events for as long as the hash lived. The ring records
// the tile size now; a hash that records none (written before it did) is
// laid out keeping no tile beyond the writer's clock.
func TestTileSizeChangeKeepsNewEvents(t *testing.T) {
	for _, c := range []struct {
		name, window string
		oldRing      bool // the hash's ring recorded as before the tile size was
	}{
		{"another ring", "120m", false}, // 77 slots, then 70
		{"same ring", "134m", false},    // 77 slots
		{"same ring, tile size not recorded", "134m", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			const minute = int64(60_000)
			t0 := int64(1_700_000_000_000) / (2 * minute) * (2 * minute)
			rc, store := miniStore(t)
			ctx := context.Background()
			apply := func(r *registry.Registry, msgs []kafka.Message) {
				t.Helper()
				a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := a.Apply(ctx, "txns", 0, msgs); err != nil {
					t.Fatal(err)
				}
			}
			var off int64
			msg := func(card string, ts int64) kafka.Message {
				off++
				return kafka.Message{Topic: "txns", Offset: off, Value: fmt.Appendf(nil, `{"card":%q,"ts":%d,"amount":1}`, card, ts)}
			}
			// Before: 1-minute tiles, an event a minute for an hour.
			before := tileDefs(t, "1m", "60m")
			var msgs []kafka.Message
			for ts := t0 - 60*minute; ts < t0; ts += minute {
				msgs = append(msgs, msg("c", ts))
			}
			apply(before, msgs)
			key := online.Key{Project: "p", View: "v", Entity: featurestore.StringKey("c")}.Name()
			if c.oldRing {
				ring := strings.Split(rc.HGet(ctx, key, online.RingField).Val(), "/")[0]
				if err := rc.HSet(ctx, key, online.RingField, ring).Err(); err != nil {
					t.Fatal(err)
				}
			}
			// After: 2-minute tiles, an event every 2 minutes for an hour,
			// in batches, for c and for d, which has no state from before.
			after := tileDefs(t, "2m", c.window)
			n := 0
			for ts := t0; ts < t0+60*minute; ts += 10 * minute {
				msgs = msgs[:0]
				for m := ts; m < ts+10*minute; m += 2 * minute {
					msgs = append(msgs, msg("c", m), msg("d", m))
				}
				apply(after, msgs)
				n += len(msgs) / 2
			}
			for _, card := range []string{"d", "c"} {
				got := readView(t, store, after, "v", card, t0+60*minute-1)[0]
				if got.Status != window.StatusPresent || got.Value.Int64() != int64(n) {
					t.Errorf("%s: count over %s = %v (%v), want %d: events applied after the change of the tile were dropped", card, c.window, got.Value, got.Status, n)
				}
			}
			w, err := window.Compile(after.View("v"), after.Source("txns"))
			if err != nil {
				t.Fatal(err)
			}
			ring := online.NewViewLayout("p", "v", w, after.Source("txns").Reach()).Ring
			if got, want := rc.HGet(ctx, key, online.RingField).Val(), string(online.TiledRingValue(ring, 0, 2*minute)); got != want {
				t.Errorf("ring field %q, want %q", got, want)
			}
			for f, v := range rc.HGetAll(ctx, key).Val() {
				if k, _, err := online.DecodeSlot([]byte(v)); strings.HasPrefix(f, "t:") && (err != nil || k > w.TileOf(t0+60*minute)) {
					t.Errorf("field %s holds tile %d (%v), of the old tile size", f, k, err)
				}
			}
		})
	}
}

// TestMergeSlotBeyondMaxTile: a tile slot holding a newer tile keeps it and
// drops the events of an older one, unless its index is beyond the highest
// a tile of the view can have (group.maxTile): a tile of another tile
// size, or from a clock far ahead, must not block a current tile.
func TestMergeSlotBeyondMaxTile(t *testing.T) {
	r := tileDefs(t, "1m", "60m")
	w, err := window.Compile(r.View("v"), r.Source("txns"))
	if err != nil {
		t.Fatal(err)
	}
	const k = int64(28_000_000)
	stored := func(sk int64) []byte {
		ts := w.NewTileState(sk)
		if err := ts.Add(&window.Event{Time: sk * 60_000, Offset: 1}); err != nil {
			t.Fatal(err)
		}
		return ts.AppendBinary(online.AppendSlot(nil, sk, nil))
	}
	for _, c := range []struct {
		name   string
		stored []byte
		maxK   int64
		want   int64 // the count of the tile written; -1: nothing written
	}{
		{"empty slot", nil, k + 2, 1},
		{"older tile", stored(k - 77), k + 2, 1},
		{"same tile", stored(k), k + 2, 2},
		{"newer tile", stored(k + 1), k + 2, -1},
		{"tile beyond the bound", stored(2*k + 7), k + 2, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b batch
			ev := window.Event{Time: k*60_000 + 5, Offset: 9}
			if err := b.mergeSlot(w.NewTileState(0), k, c.maxK, c.stored, "t:1", []window.Event{ev}, 1); err != nil {
				t.Fatal(err)
			}
			if c.want < 0 {
				if len(b.sets) != 0 {
					t.Errorf("wrote %v, want nothing", b.sets)
				}
				return
			}
			if len(b.sets) != 1 {
				t.Fatalf("wrote %v, want one slot", b.sets)
			}
			sk, blob, err := online.DecodeSlot(b.sets[0].Value)
			if err != nil || sk != k {
				t.Fatalf("wrote tile %d (%v), want %d", sk, err, k)
			}
			ts := w.NewTileState(k)
			if err := ts.UnmarshalBinary(blob); err != nil {
				t.Fatal(err)
			}
			res, err := w.NewReader().Read(k*60_000+30_000, []*window.TileState{ts}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := res[0].Value.Int64(); got != c.want {
				t.Errorf("count %d, want %d", got, c.want)
			}
		})
	}
}

// rollingDefs is a view with windows over 1-minute tiles and 15-minute
// rollup tiles, a lifetime aggregate and a last value, and the features in
// extra.
func rollingDefs(t *testing.T, extra string) *registry.Registry {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(`
kind: Entity
name: card
join_keys: [{name: card, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card: card}
fields: {amount: double, shop: string}
allowed_lateness: 10m
---
kind: FeatureView
name: v
entity: card
source: txns
tile: 1m
rollup: 15m
features:
  - {name: n, aggregation: count, window: 1h}
  - {name: n_all, aggregation: count, window: lifetime}
  - {name: amount, field: amount, type: double}
` + extra)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRollingChangeKeepsOtherFeatures: during a rolling registry change,
// processes of older and newer definitions of a view write the same hash,
// in the same ring. The newer definitions add features to every part: a
// windowed sum (in tiles and rollup tiles), a lifetime sum and a last
// value. A write of the older process, which merges its events into the
// tile, rollup tile, lifetime state and last values, must keep the states
// of the features it does not know, as docs/operations.md says: only its
// own events are missing from them. Before, it decoded each with its view,
// skipping the other features' states, and wrote them back without.
func TestRollingChangeKeepsOtherFeatures(t *testing.T) {
	older := rollingDefs(t, "")
	newer := rollingDefs(t, `  - {name: total, field: amount, aggregation: sum, window: 1h}
  - {name: total_all, field: amount, aggregation: sum, window: lifetime}
  - {name: shop, field: shop, type: string}
`)
	rc, store := miniStore(t)
	ctx := context.Background()
	const quarter = int64(900_000)
	t0 := int64(1_700_000_000_000) / quarter * quarter
	apply := func(r *registry.Registry, off int64, amount int, shop string) {
		t.Helper()
		a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Apply(ctx, "txns", 0, []kafka.Message{{Topic: "txns", Offset: off,
			Value: fmt.Appendf(nil, `{"card":"c","ts":%d,"amount":%d,"shop":%q}`, t0+off*1000, amount, shop)}}); err != nil {
			t.Fatal(err)
		}
	}
	apply(newer, 1, 10, "s1")
	apply(older, 2, 20, "s2") // the newer features miss this event: inherent
	apply(newer, 3, 30, "s3")
	apply(older, 4, 40, "s4")
	// At t0+30m the window reads the rollup tile of t0 to t0+15m; at
	// t0+59s the tile of t0.
	for _, at := range []int64{t0 + 59_000, t0 + 2*quarter} {
		got := readView(t, store, newer, "v", "c", at)
		want := []string{"4", "4", "40", "40", "40", `"s3"`}
		for i, w := range want {
			if s := fmt.Sprint(got[i].Value); s != w || got[i].Status != window.StatusPresent {
				t.Errorf("at t0+%ds: %s = %s (%v), want %s", (at-t0)/1000, newer.View("v").Features[i].Name, s, got[i].Status, w)
			}
		}
	}
}
