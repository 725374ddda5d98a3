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
					if h[online.RingField] != fmt.Sprint(ring) {
						t.Errorf("%s: ring field %q, want %d", card, h[online.RingField], ring)
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
