package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// TestFutureEventCannotPoisonThePartition: an event whose time is far ahead
// of its Kafka timestamp (a producer with a wrong clock, a unit mix-up) is
// rejected as future, so the partition's high water stays where the real
// events put it and the events after it are not taken for late. The check
// goes by the messages' Kafka timestamps, so applying the batch again (a
// replay) decides the same whenever it runs; messages without a timestamp
// are not checked.
func TestFutureEventCannotPoisonThePartition(t *testing.T) {
	const t0 = int64(1795687200000)
	for _, c := range []struct {
		name      string
		skew      string // max_future_skew, "" for the default
		stamped   bool   // messages carry Kafka timestamps
		wantCount int64
		want      []Reason
	}{
		{name: "default skew", stamped: true, wantCount: 3, want: []Reason{ReasonFuture}},
		{name: "skew 1m", skew: "1m", stamped: true, wantCount: 1, want: []Reason{ReasonFuture, ReasonFuture, ReasonFuture}},
		{name: "skew 5m", skew: "5m", stamped: true, wantCount: 3, want: []Reason{ReasonFuture}},
		// Without timestamps the event 10 years ahead is accepted, and
		// makes the two after it late: what the check prevents.
		{name: "no timestamps", stamped: false, wantCount: 1, want: []Reason{ReasonLate, ReasonLate}},
	} {
		t.Run(c.name, func(t *testing.T) {
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
allowed_lateness: 1m
`
			if c.skew != "" {
				defs += "max_future_skew: " + c.skew + "\n"
			}
			defs += `---
kind: FeatureView
name: n
entity: card
source: txns
features: [{name: n_1d, aggregation: count, window: 1d}]
`
			r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(defs)})
			if err != nil {
				t.Fatal(err)
			}
			rc, store := miniStore(t)
			sink := &memSink{}
			a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), sink, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The first event sets the high water; the second is 10 years
			// ahead; the third, 3 minutes after the first, is ahead of its
			// timestamp by less than an hour; the fourth, 2 minutes after the
			// first, is ahead by 2 minutes.
			times := []int64{t0, t0 + 10*365*24*3600*1000, t0 + 3*60*1000, t0 + 2*60*1000}
			var msgs []kafka.Message
			for i, ts := range times {
				m := kafka.Message{Topic: "txns", Offset: int64(i), Value: fmt.Appendf(nil, `{"card":"c","ts":%d}`, ts)}
				if c.stamped {
					m.Time = time.UnixMilli(t0)
				}
				msgs = append(msgs, m)
			}
			ctx := context.Background()
			if err := a.Apply(ctx, "txns", 0, msgs); err != nil {
				t.Fatal(err)
			}
			res := readView(t, store, r, "n", "c", t0+10*60*1000)
			if got := res[0].Value.Int64(); got != c.wantCount {
				t.Errorf("n_1d = %d, want %d", got, c.wantCount)
			}
			var got []Reason
			for _, l := range sink.letters {
				got = append(got, l.Reason)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("rejected %v, want %v", got, c.want)
			}
		})
	}
}

// miniStore returns a client of a miniredis of the test's own, and the
// online store on it.
func miniStore(t *testing.T) (*redis.Client, *online.Store) {
	t.Helper()
	mr := miniredis.RunT(t)
	rc := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rc.Close() })
	return rc, online.New(rc, online.Options{})
}

// readView reads the features of view for one string-keyed entity at t,
// as serving does (project "p").
func readView(t *testing.T, store *online.Store, r *registry.Registry, view, key string, at int64) []window.FeatureValue {
	t.Helper()
	v := r.View(view)
	src := r.Source(v.Source)
	w, err := window.Compile(v, src)
	if err != nil {
		t.Fatal(err)
	}
	l := online.NewViewLayout("p", view, w, src.AllowedLateness.Std())
	res, err := online.ReadViews(context.Background(), store, []online.ViewRead{{Layout: &l, Entity: featurestore.StringKey(key)}}, at)
	if err != nil {
		t.Fatal(err)
	}
	return res[0]
}
