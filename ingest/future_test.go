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
			r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(futureDefs(c.skew))})
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

// futureDefs are the definitions of the future-event tests: source txns,
// with a lateness of 1m and the max_future_skew given ("" for the
// default), and view n counting its events over 1d.
func futureDefs(skew string) string {
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
	if skew != "" {
		defs += "max_future_skew: " + skew + "\n"
	}
	return defs + `---
kind: FeatureView
name: n
entity: card
source: txns
features: [{name: n_1d, aggregation: count, window: 1d}]
`
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
	l := online.NewViewLayout("p", view, w, src.Reach())
	res, err := online.ReadViews(context.Background(), store, []online.ViewRead{{Layout: &l, Entity: featurestore.StringKey(key)}}, at)
	if err != nil {
		t.Fatal(err)
	}
	return res[0]
}

// TestFutureEventKeepsTheCurrentTiles: an event ahead of the clock, within
// the source's max_future_skew, must not take the ring slot of a tile still
// read, nor expire before the clock reaches it. One merchant gets events
// from two partitions (the view's key is not the Kafka key): one at t0, and
// one 8 minutes ahead of its Kafka timestamp, which a ring of window +
// lateness + 2 tiles (8) put in the slot of t0's tile, whichever came
// first (the newer tile was kept, and t0's count was lost).
func TestFutureEventKeepsTheCurrentTiles(t *testing.T) {
	const t0, minute = int64(1795687200000), int64(60_000)
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(`
kind: Entity
name: merchant
join_keys: [{name: merchant, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {merchant: merchant}
allowed_lateness: 1m
max_future_skew: 10m
---
kind: FeatureView
name: by_merchant
entity: merchant
source: txns
tile: 1m
features: [{name: n_5m, aggregation: count, window: 5m}]
`)})
	if err != nil {
		t.Fatal(err)
	}
	for _, order := range [][]int{{0, 1}, {1, 0}} {
		rc, store := miniStore(t)
		a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		times := []int64{t0, t0 + 8*minute} // by partition
		for _, p := range order {
			m := kafka.Message{Topic: "txns", Partition: p, Offset: 0, Time: time.UnixMilli(t0),
				Value: fmt.Appendf(nil, `{"merchant":"m","ts":%d}`, times[p])}
			if err := a.Apply(context.Background(), "txns", p, []kafka.Message{m}); err != nil {
				t.Fatal(err)
			}
		}
		for _, at := range []int64{t0 + 1000, t0 + 8*minute + 1000} {
			if got := readView(t, store, r, "by_merchant", "m", at)[0].Value.Int64(); got != 1 {
				t.Errorf("partitions in order %v: n_5m at t0%+dms = %d, want 1", order, at-t0, got)
			}
		}
		// The key outlives the window and the lateness after the future
		// event's tile, which the clock reaches up to 10 minutes later.
		key := online.Key{Project: "p", View: "by_merchant", Entity: featurestore.StringKey("m")}.Name()
		if ttl := rc.PTTL(context.Background(), key).Val(); ttl < 16*time.Minute {
			t.Errorf("partitions in order %v: the key expires in %s, before the future event leaves its window", order, ttl)
		}
	}
}

// TestResetPoisonedHighWater: the recovery docs/operations.md gives for a
// partition whose high-water mark an event with a wrong time moved far
// ahead. The check against the Kafka timestamp cannot catch an event whose
// producer stamped the message with the same wrong time (CreateTime, which
// is what ingest reads even on a topic of LogAppendTime); the events after
// it are then late, restarts included, until the hw field of the
// partition's position is deleted while ingest is stopped. The next event
// then sets the high-water mark afresh.
func TestResetPoisonedHighWater(t *testing.T) {
	const t0 = int64(1795687200000)
	const y2100 = int64(4102444800000)
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(futureDefs(""))})
	if err != nil {
		t.Fatal(err)
	}
	rc, store := miniStore(t)
	sink := &memSink{}
	ctx := context.Background()
	// start is a (re)started ingest process: a new applier, resumed.
	start := func() *Applier {
		a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), sink, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Resume(ctx, "txns", 0); err != nil {
			t.Fatal(err)
		}
		return a
	}
	msg := func(off, ts int64) kafka.Message {
		return kafka.Message{Topic: "txns", Offset: off, Time: time.UnixMilli(ts), Value: fmt.Appendf(nil, `{"card":"c","ts":%d}`, ts)}
	}
	apply := func(a *Applier, msgs ...kafka.Message) []Reason {
		t.Helper()
		sink.letters = nil
		if err := a.Apply(ctx, "txns", 0, msgs); err != nil {
			t.Fatal(err)
		}
		var got []Reason
		for _, l := range sink.letters {
			got = append(got, l.Reason)
		}
		return got
	}
	// Offset 1 is stamped, message and event alike, in 2100.
	a := start()
	if got := apply(a, msg(0, t0), msg(1, y2100), msg(2, t0+1000), msg(3, t0+2000)); fmt.Sprint(got) != "[late late]" {
		t.Fatalf("rejected %v, want [late late]: the partition is not poisoned", got)
	}
	if got := apply(start(), msg(4, t0+3000)); fmt.Sprint(got) != "[late]" {
		t.Fatalf("after a restart rejected %v, want [late]", got)
	}
	// The recovery, ingest stopped: delete the hw field of the position.
	if err := rc.HDel(ctx, "fs:{pos.p.txns/txns/0}", "hw").Err(); err != nil {
		t.Fatal(err)
	}
	a = start()
	if got := apply(a, msg(5, t0+4000), msg(6, t0+5000)); len(got) != 0 {
		t.Fatalf("after the reset rejected %v, want nothing", got)
	}
	// The late check works again, from the new high-water mark.
	if got := apply(a, msg(7, t0+5000-2*60_000)); fmt.Sprint(got) != "[late]" {
		t.Fatalf("an event 2m behind rejected %v, want [late]", got)
	}
	// Offsets 0, 5 and 6 count; offset 1 is in a tile the read does not
	// reach yet.
	if got := readView(t, store, r, "n", "c", t0+10*60_000)[0].Value.Int64(); got != 3 {
		t.Errorf("n_1d = %d, want 3", got)
	}
}
