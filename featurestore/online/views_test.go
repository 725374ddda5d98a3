package online_test

import (
	"context"
	"fmt"
	"math/rand/v2"
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
	for _, protocol := range []int{2, 3} {
		t.Run(fmt.Sprintf("resp%d", protocol), func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, Protocol: protocol})
			defer c.Close()
			store := online.New(c, online.Options{})
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
