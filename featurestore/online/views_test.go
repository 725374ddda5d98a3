package online_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/ingest"
	"github.com/featurestore/featurestore/registry"
)

// TestReadViewsAgainstEvents writes six hours of events of a few cards
// through the ingest applier, so that the ring of each hash holds tiles the
// 2h windows no longer cover, slots reused and a lifetime-less view next to
// a last-value one, then reads both views at many times after the newest
// event, as serving does, over RESP2 and RESP3, and compares every windowed
// feature with a count, sum, max and mean computed directly from the events
// in the window's interval, and every last value with the newest event.
func TestReadViewsAgainstEvents(t *testing.T) {
	addr := testenv.RedisAddr(t)
	reg, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(benchDefs)})
	if err != nil {
		t.Fatal(err)
	}
	src := reg.Source("txns")
	project := testenv.UniqueName(t, "readviews")
	ctx := context.Background()

	const (
		minute = int64(time.Minute / time.Millisecond)
		tile   = 5 * minute
		cards  = 5
	)
	type event struct {
		card   int
		ts     int64
		amount float64
	}
	rng := rand.New(rand.NewPCG(7, 11))
	end := time.Now().UnixMilli()/tile*tile - 30*minute
	var events []event
	var msgs []kafka.Message
	for ts := end - 6*60*minute; ts < end; ts += 1 + rng.Int64N(4*minute) {
		e := event{card: rng.IntN(cards), ts: ts, amount: float64(rng.IntN(1000)) / 4}
		events = append(events, e)
		msgs = append(msgs, kafka.Message{Topic: "txns", Offset: int64(len(msgs)), Value: fmt.Appendf(nil,
			`{"card":"c%d","ts":%d,"amount":%g,"merchant":"m%d","country":"FR","approved":true}`, e.card, e.ts, e.amount, len(msgs))})
	}
	newest := events[len(events)-1].ts

	rc := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rc.Close()
	a, err := ingest.NewApplier(project, reg, src, online.New(rc, online.Options{}), ingest.NewPositions(rc, project), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(msgs); i += 37 { // several batches: tiles merged across writes
		if err := a.Apply(ctx, "txns", 0, msgs[i:min(i+37, len(msgs))]); err != nil {
			t.Fatal(err)
		}
	}

	layouts := benchLayouts(t, reg, project)
	var reqs []online.ViewRead
	for c := range cards + 1 { // the last card has no events
		for _, l := range layouts {
			reqs = append(reqs, online.ViewRead{Layout: l, Entity: featurestore.StringKey(fmt.Sprintf("c%d", c))})
		}
	}

	windows := []struct {
		name string
		w    int64
	}{{"n_30m", 30 * minute}, {"n_2h", 120 * minute}, {"sum_2h", 120 * minute}, {"max_2h", 120 * minute}, {"mean_2h", 120 * minute}}
	forEachProtocol(t, addr, func(t *testing.T, store *online.Store) {
		var buf online.ReadBuffer
		checked := 0
		for at := newest; at < newest+150*minute; at += 1 + rng.Int64N(3*minute) {
			res, err := buf.ReadViews(ctx, store, reqs, at)
			if err != nil {
				t.Fatal(err)
			}
			for c := range cards + 1 {
				win, last := res[2*c], res[2*c+1]
				for i, w := range windows {
					start := (at/tile - w.w/tile + 1) * tile
					var n int64
					var sum, mx float64
					for _, e := range events {
						if e.card == c && e.ts >= start && e.ts <= at {
							n, sum = n+1, sum+e.amount
							if n == 1 || e.amount > mx {
								mx = e.amount
							}
						}
					}
					got := win[i]
					if got.Covered.Start != start || got.Covered.End != at+1 {
						t.Fatalf("card %d %s at %d: covered %+v, want [%d, %d)", c, w.name, at, got.Covered, start, at+1)
					}
					var want string
					switch {
					case w.name[0] == 'n':
						want = fmt.Sprint(n)
					case w.name[:3] == "sum" && n == 0:
						want = "0" // a sum over no events is 0
					case n == 0:
						want = "not found"
					case w.name[:3] == "sum":
						want = fmt.Sprint(sum)
					case w.name[:3] == "max":
						want = fmt.Sprint(mx)
					default:
						want = fmt.Sprint(sum / float64(n))
					}
					if g := featureString(got); g != want {
						t.Fatalf("card %d %s at %d: got %s, want %s", c, w.name, at, g, want)
					}
					checked++
				}
				var newestOf *event
				for i := range events {
					if events[i].card == c {
						newestOf = &events[i]
					}
				}
				want := "not found"
				if newestOf != nil {
					want = fmt.Sprint(newestOf.amount)
				}
				if g := featureString(last[0]); g != want {
					t.Fatalf("card %d amount at %d: got %s, want %s", c, at, g, want)
				}
				checked++
			}
		}
		t.Logf("%d values equal the events' reference", checked)
	})
}

// featureString prints a feature's value, or its status when it has none.
func featureString(v window.FeatureValue) string {
	if v.Status != window.StatusPresent {
		return v.Status.String()
	}
	if v.Value.Kind() == featurestore.KindDouble {
		return fmt.Sprint(v.Value.Double())
	}
	return fmt.Sprint(v.Value.Int64())
}

// TestReadViewsCorruptHash corrupts the windowed hash of one card and the
// last-value hash of another, over RESP2 and RESP3: those two reads, and
// only they, give StatusError for every feature, with no value and no event
// time but the interval a windowed feature covers, and ReadBuffer.Corrupt
// names their keys in request order; the package's ReadViews fails naming
// the first; the buffer's next read reports nothing left over.
func TestReadViewsCorruptHash(t *testing.T) {
	addr := testenv.RedisAddr(t)
	reg, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(benchDefs)})
	if err != nil {
		t.Fatal(err)
	}
	project := testenv.UniqueName(t, "readcorrupt")
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rc.Close()
	a, err := ingest.NewApplier(project, reg, reg.Source("txns"), online.New(rc, online.Options{}), ingest.NewPositions(rc, project), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	var msgs []kafka.Message
	for c := range 3 {
		msgs = append(msgs, kafka.Message{Topic: "txns", Offset: int64(c), Value: fmt.Appendf(nil,
			`{"card":"c%d","ts":%d,"amount":%d,"merchant":"m","country":"FR","approved":true}`, c, now-int64(c), c+1)})
	}
	if err := a.Apply(ctx, "txns", 0, msgs); err != nil {
		t.Fatal(err)
	}
	layouts := benchLayouts(t, reg, project) // card_windows, card_last
	var reqs []online.ViewRead
	for c := range 3 {
		for _, l := range layouts {
			reqs = append(reqs, online.ViewRead{Layout: l, Entity: featurestore.StringKey(fmt.Sprintf("c%d", c))})
		}
	}
	keyOf := func(r online.ViewRead) string {
		return online.Key{Project: project, View: r.Layout.Name, Entity: r.Entity}.Name()
	}
	// c1's windows: a tile field that does not decode; c2's last values.
	winKey, lastKey := keyOf(reqs[2]), keyOf(reqs[5])
	fields, err := rc.HKeys(ctx, winKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	tile := ""
	for _, f := range fields {
		if _, ok := online.ParseTileField(f); ok {
			tile = f
		}
	}
	if tile == "" {
		t.Fatalf("%s has no tile field: %q", winKey, fields)
	}
	if err := rc.HSet(ctx, winKey, tile, "\xff\xff\xff").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.HSet(ctx, lastKey, online.LastField, "\xff\xff\xff").Err(); err != nil {
		t.Fatal(err)
	}
	// c0's last values: not a hash at all (Redis replies WRONGTYPE).
	stringKey := keyOf(reqs[1])
	if err := rc.Set(ctx, stringKey, "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}

	forEachProtocol(t, addr, func(t *testing.T, store *online.Store) {
		var buf online.ReadBuffer
		res, err := buf.ReadViews(ctx, store, reqs, now)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, cr := range buf.Corrupt() {
			if !errors.Is(cr.Err, online.ErrCorruptState) {
				t.Errorf("read %d: error %v does not wrap ErrCorruptState", cr.Request, cr.Err)
			}
			got = append(got, fmt.Sprintf("%d %s", cr.Request, cr.Key))
		}
		if want := []string{"1 " + stringKey, "2 " + winKey, "5 " + lastKey}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("corrupt reads %q, want %q", got, want)
		}
		for i, vals := range res {
			card, view := i/2, reqs[i].Layout.Name
			for f, v := range vals {
				if i == 1 || i == 2 || i == 5 {
					if v.Status != window.StatusError || v.Value.Kind() != featurestore.KindNull || v.HasEventTime || v.EventTime != 0 {
						t.Errorf("c%d %s feature %d: %+v, want an error and nothing else", card, view, f, v)
					}
				} else if v.Status != window.StatusPresent && v.Status != window.StatusNotFound {
					t.Errorf("c%d %s feature %d: %+v", card, view, f, v)
				}
				if i%2 == 0 && v.Covered != res[0][f].Covered {
					t.Errorf("c%d %s feature %d covers %+v, c0 %+v", card, view, f, v.Covered, res[0][f].Covered)
				}
			}
		}
		if got := featureString(res[4][2]); got != "3" {
			t.Errorf("c2 windows sum_2h = %s, want 3 (its windows are not corrupt)", got)
		}
		if got := featureString(res[3][0]); got != "2" {
			t.Errorf("c1 last amount = %s, want 2 (its last values are not corrupt)", got)
		}

		if _, err := buf.ReadViews(ctx, store, reqs[3:5], now); err != nil || len(buf.Corrupt()) != 0 {
			t.Errorf("healthy read after: %v, corrupt %v", err, buf.Corrupt())
		}
		_, err = online.ReadViews(ctx, store, reqs[2:], now)
		if !errors.Is(err, online.ErrCorruptState) || !strings.Contains(err.Error(), winKey) {
			t.Errorf("package ReadViews: %v, want ErrCorruptState naming %s", err, winKey)
		}
		_, err = online.ReadViews(ctx, store, reqs[:2], now)
		if !errors.Is(err, online.ErrCorruptState) || !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Errorf("package ReadViews of a key holding no hash: %v, want ErrCorruptState saying WRONGTYPE", err)
		}
	})
}

// forEachProtocol runs test against the Redis at addr over RESP2 and RESP3:
// go-redis replies differ between them.
func forEachProtocol(t *testing.T, addr string, test func(t *testing.T, store *online.Store)) {
	for _, protocol := range []int{2, 3} {
		t.Run(fmt.Sprintf("resp%d", protocol), func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, Protocol: protocol})
			defer c.Close()
			test(t, online.New(c, online.Options{}))
		})
	}
}

// TestReadViewsCorruptFieldsNeverPanic writes real state through ingest into an
// in-process Redis (rollup view with tiles, rollup tiles, lifetime and last
// values), then truncates or flips bytes of each field in turn and reads:
// no panic, and a truncated l or x, or a truncated tile or rollup tile in
// the read, must be reported as corrupt.
func TestReadViewsCorruptFieldsNeverPanic(t *testing.T) {
	m := miniredis.RunT(t)
	rc := redis.NewClient(&redis.Options{Addr: m.Addr(), Protocol: 2})
	t.Cleanup(func() { rc.Close() })
	ctx := context.Background()
	const project = "corruptfields"
	setup := loadRollupDefs(t, project, "rollup: 15m")
	end := int64(1_700_000_000_000) / 60_000 * 60_000
	var msgs [2][]kafka.Message
	for i, ts := 0, end-3*3600_000; ts < end; i, ts = i+1, ts+97_000 {
		p := i % 2
		msgs[p] = append(msgs[p], kafka.Message{Topic: "pays", Partition: p, Offset: int64(len(msgs[p])), Value: fmt.Appendf(nil,
			`{"card":"c","ts":%d,"amount":%d.25,"shop":"s%d"}`, ts, i%50, i%7)})
	}
	applyEvents(t, rc, project, setup.reg, msgs)
	key := online.Key{Project: project, View: "card_pays", Entity: featurestore.StringKey("c")}.Name()
	orig, err := rc.HGetAll(ctx, key).Result()
	if err != nil || len(orig) == 0 {
		t.Fatalf("hgetall: %v %d", err, len(orig))
	}
	store := online.New(rc, online.Options{})
	at := end + 1000
	reqs := []online.ViewRead{{Layout: setup.layout, Entity: featurestore.StringKey("c")}}
	var sel online.ViewLayout
	if s, err := setup.layout.Select([]int{0, 1}); err == nil {
		sel = s
		reqs = append(reqs, online.ViewRead{Layout: &sel, Entity: featurestore.StringKey("c")})
	}
	var buf online.ReadBuffer
	if _, err := buf.ReadViews(ctx, store, reqs, at); err != nil || len(buf.Corrupt()) != 0 {
		t.Fatalf("clean read: %v %v", err, buf.Corrupt())
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for f, v := range orig {
		if f == "v" || f == "r" || len(f) > 2 && f[:2] == "f:" {
			continue
		}
		for trial := 0; trial < 12; trial++ {
			b := []byte(v)
			truncated := trial < 6 && len(b) > 1
			if truncated {
				b = b[:rng.IntN(len(b)-1)+1]
			} else {
				b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8))
			}
			if err := rc.HSet(ctx, key, f, b).Err(); err != nil {
				t.Fatal(err)
			}
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("field %s value %x: panic %v", f, b, p)
					}
				}()
				res, err := buf.ReadViews(ctx, store, reqs[:1], at)
				if err != nil {
					t.Fatalf("field %s: %v", f, err)
				}
				corrupt := len(buf.Corrupt()) > 0
				if truncated && (f == "l" || f == "x") && !corrupt {
					t.Errorf("field %s truncated to %x: not reported corrupt, read %+v", f, b, res[0])
				}
			}()
		}
		if err := rc.HSet(ctx, key, f, v).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHashTTL checks the TTL each kind of view gives its hashes: the
// longest window plus the lateness, the ttl plus the future skew, or none.
func TestHashTTL(t *testing.T) {
	const defs = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: pays
kafka: {topic: pays}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card_id: card}
fields: {amount: double}
allowed_lateness: 10m
max_future_skew: 2m
---
kind: FeatureView
name: win
entity: card
source: pays
tile: 1m
rollup: 15m
features:
  - {name: n, aggregation: count, window: 1h}
---
kind: FeatureView
name: winlast
entity: card
source: pays
tile: 1m
ttl: 3h
features:
  - {name: n, aggregation: count, window: 1h}
  - {name: amount, field: amount, type: double}
---
kind: FeatureView
name: life
entity: card
source: pays
features:
  - {name: total, aggregation: sum, field: amount, window: lifetime}
---
kind: FeatureView
name: lastnottl
entity: card
source: pays
features:
  - {name: amount, field: amount, type: double}
`
	reg, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(defs)})
	if err != nil {
		t.Fatal(err)
	}
	m := miniredis.RunT(t)
	rc := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rc.Close() })
	a, err := ingest.NewApplier("hashttl", reg, reg.Source("pays"), online.New(rc, online.Options{}), ingest.NewPositions(rc, "hashttl"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(context.Background(), "pays", 0, []kafka.Message{{Topic: "pays", Offset: 1,
		Value: []byte(`{"card":"c","ts":1700000000000,"amount":1}`)}}); err != nil {
		t.Fatal(err)
	}
	for view, want := range map[string]string{"win": "1h12m0s", "winlast": "3h2m0s", "life": "0s", "lastnottl": "0s"} {
		k := online.Key{Project: "hashttl", View: view, Entity: featurestore.StringKey("c")}.Name()
		if !m.Exists(k) {
			t.Errorf("%s: no hash", view)
			continue
		}
		if got := m.TTL(k).String(); got != want {
			t.Errorf("%s: TTL %s, want %s", view, got, want)
		}
	}
}
