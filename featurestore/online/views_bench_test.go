package online_test

import (
	"context"
	"fmt"
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

// benchDefs are the two views of a serving lookup: windowed aggregations
// over 5-minute tiles (a 2h window reads 24 tiles) and last values.
const benchDefs = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card_id: card}
fields: {amount: double, merchant: string, country: string, approved: bool}
allowed_lateness: 2h
---
kind: FeatureView
name: card_windows
entity: card
source: txns
tile: 5m
features:
  - {name: n_30m, aggregation: count, window: 30m}
  - {name: n_2h, aggregation: count, window: 2h}
  - {name: sum_2h, aggregation: sum, field: amount, window: 2h}
  - {name: max_2h, aggregation: max, field: amount, window: 2h}
  - {name: mean_2h, aggregation: mean, field: amount, window: 2h}
---
kind: FeatureView
name: card_last
entity: card
source: txns
ttl: 1d
features:
  - {name: amount, field: amount, type: double}
  - {name: merchant, field: merchant, type: string}
  - {name: country, field: country, type: string}
  - {name: approved, field: approved, type: bool}
  - {name: ts_amount, field: amount, type: double}
`

// BenchmarkReadViews measures a serving read against the real Redis, data
// written by the ingest applier: both views of 1 and of 100 entities, each
// with 4 events in the last two hours, read with one ReadBuffer as serving
// does.
func BenchmarkReadViews(b *testing.B) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(b), ContextTimeoutEnabled: true, Protocol: 2}) // as featurestore serve
	defer rc.Close()
	ctx := context.Background()
	reg, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(benchDefs)})
	if err != nil {
		b.Fatal(err)
	}
	project := testenv.UniqueName(b, "readviews")
	src := reg.Source("txns")
	store := online.New(rc, online.Options{})
	now := time.Now().UnixMilli()
	var msgs []kafka.Message
	for e := range 100 {
		for j := range 4 {
			ts := now - int64(j)*29*int64(time.Minute/time.Millisecond) - int64(e)
			msgs = append(msgs, kafka.Message{Topic: "txns", Offset: int64(len(msgs)), Value: fmt.Appendf(nil,
				`{"card":"card_%06d","ts":%d,"amount":%d.5,"merchant":"m%d","country":"FR","approved":true}`, e, ts, e+j, j)})
		}
	}
	a, err := ingest.NewApplier(project, reg, src, store, ingest.NewPositions(rc, project), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Apply(ctx, "txns", 0, msgs); err != nil {
		b.Fatal(err)
	}
	layouts := benchLayouts(b, reg, project)
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("entities=%d/views=2", n), func(b *testing.B) {
			var reqs []online.ViewRead
			for e := range n {
				for _, l := range layouts {
					reqs = append(reqs, online.ViewRead{Layout: l, Entity: featurestore.StringKey(fmt.Sprintf("card_%06d", e))})
				}
			}
			var buf online.ReadBuffer
			b.ReportAllocs()
			for b.Loop() {
				res, err := buf.ReadViews(ctx, store, reqs, now)
				if err != nil {
					b.Fatal(err)
				}
				if v := res[len(res)-2][1]; v.Status != window.StatusPresent || v.Value.Int64() != 4 {
					b.Fatalf("n_2h = %+v, want 4", v)
				}
			}
		})
	}
}

// benchLayouts returns the layouts of benchDefs' two views, as serving
// makes them.
func benchLayouts(tb testing.TB, reg *registry.Registry, project string) []*online.ViewLayout {
	tb.Helper()
	src := reg.Source("txns")
	var layouts []*online.ViewLayout
	for _, name := range []string{"card_windows", "card_last"} {
		w, err := window.Compile(reg.View(name), src)
		if err != nil {
			tb.Fatal(err)
		}
		l := online.NewViewLayout(project, name, w, src.Reach())
		layouts = append(layouts, &l)
	}
	return layouts
}
