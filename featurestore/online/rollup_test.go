package online_test

import (
	"context"
	"fmt"
	"math/rand/v2"
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

// rollupDefs is a view with windows from 5 minutes to 3 hours of minute
// tiles, %s (a rollup, or nothing), beside a lifetime sum and a last value.
const rollupDefs = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: pays
kafka: {topic: pays}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card_id: card}
fields: {amount: double, shop: string}
allowed_lateness: 20m
---
kind: FeatureView
name: card_pays
entity: card
source: pays
tile: 1m
%s
features:
  - {name: n_5m, aggregation: count, window: 5m}
  - {name: sum_30m, aggregation: sum, field: amount, window: 30m}
  - {name: mean_2h, aggregation: mean, field: amount, window: 2h}
  - {name: std_3h, aggregation: stddev, field: amount, window: 3h}
  - {name: shops_3h, aggregation: count_distinct, field: shop, window: 3h}
  - {name: last3_2h, aggregation: last_n, field: shop, n: 3, window: 2h}
  - {name: max_3h, aggregation: max, field: amount, window: 3h}
  - {name: sum_all, aggregation: sum, field: amount, window: lifetime}
  - {name: amount, field: amount, type: double}
`

type rollupSetup struct {
	reg    *registry.Registry
	layout *online.ViewLayout
}

func loadRollupDefs(t *testing.T, project, rollup string) rollupSetup {
	t.Helper()
	reg, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, rollupDefs, rollup)})
	if err != nil {
		t.Fatal(err)
	}
	src := reg.Source("pays")
	w, err := window.Compile(reg.View("card_pays"), src)
	if err != nil {
		t.Fatal(err)
	}
	l := online.NewViewLayout(project, "card_pays", w, src.Reach())
	return rollupSetup{reg: reg, layout: &l}
}

// applyEvents applies msgs through the ingest applier of reg, in batches,
// alternating two partitions.
func applyEvents(t *testing.T, rc *redis.Client, project string, reg *registry.Registry, msgs [2][]kafka.Message) {
	t.Helper()
	a, err := ingest.NewApplier(project, reg, reg.Source("pays"), online.New(rc, online.Options{}), ingest.NewPositions(rc, project), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < max(len(msgs[0]), len(msgs[1])); i += 53 {
		for p := range 2 {
			if i < len(msgs[p]) {
				if err := a.Apply(ctx, "pays", p, msgs[p][i:min(i+53, len(msgs[p]))]); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// TestRollupReads writes the same events through ingest into hashes of a
// view without rollup tiles and of the same view with 15-minute rollups,
// also switching from one to the other halfway (the writer lays the hash
// out again and makes its rollup tiles from its tiles) and back, and reads
// them at many times after the events, over RESP2 and RESP3, whole and for
// some features: every value equals the read of the view without rollups,
// bit for bit.
func TestRollupReads(t *testing.T) {
	addr := testenv.RedisAddr(t)
	project := testenv.UniqueName(t, "rollups")
	rc := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rc.Close()
	plain := loadRollupDefs(t, project, "")
	rolled := loadRollupDefs(t, project, "rollup: 15m")
	if plain.layout.Ring != rolled.layout.Ring || rolled.layout.View.Rollup() != 15*60_000 {
		t.Fatalf("rings %d and %d, rollup %d", plain.layout.Ring, rolled.layout.Ring, rolled.layout.View.Rollup())
	}

	rng := rand.New(rand.NewPCG(21, 8))
	end := time.Now().UnixMilli()/60_000*60_000 - 10*60_000
	cards := []string{"plain", "rolled", "switched", "back"}
	var msgs [2][]kafka.Message
	var half [2]int
	for ts := end - 5*3600_000; ts < end; ts += 1 + rng.Int64N(40_000) {
		p := rng.IntN(2)
		if ts >= end-150*60_000 && half[p] == 0 {
			half[p] = len(msgs[p])
		}
		e := ts - rng.Int64N(15*60_000) // out of order, within the lateness
		msgs[p] = append(msgs[p], kafka.Message{Topic: "pays", Partition: p, Offset: int64(len(msgs[p])), Value: fmt.Appendf(nil,
			`{"card":"%%s","ts":%d,"amount":%d.%d,"shop":"s%d"}`, e, rng.IntN(500), rng.IntN(100), rng.IntN(30))})
	}
	forCard := func(card string, ms []kafka.Message) []kafka.Message {
		out := make([]kafka.Message, len(ms))
		for i, m := range ms {
			m.Value = []byte(strings.Replace(string(m.Value), "%s", card, 1))
			out[i] = m
		}
		return out
	}
	cardMsgs := func(card string, from, to func(p int) int) [2][]kafka.Message {
		var out [2][]kafka.Message
		for p := range 2 {
			out[p] = forCard(card, msgs[p][from(p):to(p)])
		}
		return out
	}
	all := func(p int) int { return len(msgs[p]) }
	zero := func(int) int { return 0 }
	halfway := func(p int) int { return half[p] }
	applyEvents(t, rc, project, plain.reg, cardMsgs("plain", zero, all))
	applyEvents(t, rc, project, rolled.reg, cardMsgs("rolled", zero, all))
	applyEvents(t, rc, project, plain.reg, cardMsgs("switched", zero, halfway))
	applyEvents(t, rc, project, rolled.reg, cardMsgs("switched", halfway, all))
	applyEvents(t, rc, project, rolled.reg, cardMsgs("back", zero, halfway))
	applyEvents(t, rc, project, plain.reg, cardMsgs("back", halfway, all))

	ctx := context.Background()
	key := func(card string) string {
		return online.Key{Project: project, View: "card_pays", Entity: featurestore.StringKey(card)}.Name()
	}
	fields, err := rc.HKeys(ctx, key("rolled")).Result()
	if err != nil {
		t.Fatal(err)
	}
	rollupFields := 0
	for _, f := range fields {
		if online.IsRollupSlotField(f) {
			rollupFields++
		}
	}
	if rollupFields < 15 {
		t.Fatalf("the rolled card's hash holds %d rollup tiles: %v", rollupFields, fields)
	}
	for card, want := range map[string]string{"rolled": string(online.TiledRingValue(rolled.layout.Ring, 15, 60_000)), "switched": string(online.TiledRingValue(rolled.layout.Ring, 15, 60_000)), "back": string(online.TiledRingValue(plain.layout.Ring, 0, 60_000))} {
		if got := rc.HGet(ctx, key(card), online.RingField).Val(); got != want {
			t.Fatalf("%s: ring %q, want %q", card, got, want)
		}
	}

	selections := [][]int{nil, {0}, {2, 8}, {3, 4, 6}, {1, 5, 7}}
	forEachProtocol(t, addr, func(t *testing.T, store *online.Store) {
		var pb, rb online.ReadBuffer
		compared, rollupReads := 0, 0
		for _, sel := range selections {
			pl, rl := *plain.layout, *rolled.layout
			if sel != nil {
				var err error
				if pl, err = plain.layout.Select(sel); err != nil {
					t.Fatal(err)
				}
				if rl, err = rolled.layout.Select(sel); err != nil {
					t.Fatal(err)
				}
			}
			want := online.ViewRead{Layout: &pl, Entity: featurestore.StringKey("plain")}
			var reqs []online.ViewRead
			for _, c := range append(cards, "nobody") {
				reqs = append(reqs, online.ViewRead{Layout: &rl, Entity: featurestore.StringKey(c)})
			}
			for range 12 {
				// From the newest event on, as serving reads: the ring keeps
				// what a read at the clock's time needs, not older tiles.
				at := end + rng.Int64N(4*3600_000)
				exp, err := pb.ReadViews(ctx, store, []online.ViewRead{want}, at)
				if err != nil {
					t.Fatal(err)
				}
				got, err := rb.ReadViews(ctx, store, reqs, at)
				if err != nil {
					t.Fatal(err)
				}
				if c := rb.Corrupt(); len(c) > 0 {
					t.Fatalf("corrupt reads: %v", c)
				}
				for r, card := range cards {
					for i, a := range exp[0] {
						if sel != nil && !contains(sel, i) {
							continue
						}
						b := got[r][i]
						if a.Status != b.Status || !a.Value.Equal(b.Value) || a.EventTime != b.EventTime || a.HasEventTime != b.HasEventTime || a.Covered != b.Covered {
							t.Fatalf("%s, features %v, %s at %d (%d min after the last event): %+v, without rollups %+v", card, sel, pl.View.Features()[i].Name, at, (at-end)/60_000, b, a)
						}
						compared++
					}
				}
				if m := rb.TilesMerged(); m[1] >= 0 && m[1] < m[0] {
					rollupReads++ // fewer tiles merged than without rollups... for the rolled card
				}
			}
		}
		t.Logf("%d values read with rollups equal the reads without; %d reads merged fewer tiles", compared, rollupReads)
	})
}

func contains(s []int, x int) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
