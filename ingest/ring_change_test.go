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
	if long {
		defs += "  - {name: n_60m, aggregation: count, window: 60m}\n"
	}
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
