package ingest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

const e2eDefs = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: txns
kafka: {topic: %s}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card_id: card}
fields: {amount: double, merchant: string}
allowed_lateness: 10m
---
kind: FeatureView
name: card_txn
entity: card
source: txns
tile: 1m
ttl: 1h
features:
  - {name: n_1h, aggregation: count, window: 1h}
  - {name: sum_10m, aggregation: sum, field: amount, window: 10m}
  - {name: merchants_1h, aggregation: count_distinct, field: merchant, window: 1h}
  - {name: n_lifetime, aggregation: count, window: lifetime}
  - {name: last_merchant, field: merchant, type: string}
`

// e2eTopic creates a topic of its own with the given partitions on the
// real Kafka, and returns the brokers, a client of the real Redis (closed
// when the test ends), the topic, and the e2eDefs registry reading it.
func e2eTopic(t *testing.T, prefix string, partitions int) (brokers []string, rc *redis.Client, topic string, r *registry.Registry) {
	t.Helper()
	brokers = testenv.KafkaBrokers(t)
	rc = redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), ContextTimeoutEnabled: true})
	t.Cleanup(func() { rc.Close() })
	topic = testenv.UniqueName(t, prefix)
	testenv.CreateTopic(t, brokers, topic, partitions)
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, e2eDefs, topic)})
	if err != nil {
		t.Fatal(err)
	}
	return brokers, rc, topic, r
}

type memSink struct {
	mu      sync.Mutex
	letters []DeadLetter
}

func (s *memSink) Send(_ context.Context, l []DeadLetter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.letters = append(s.letters, l...)
	return nil
}

// stopAt is an applier that applies no message at or after offset cutoff
// of any partition, failing the batches that hold one: a process that stops
// part way, at the same place however fast it runs.
type stopAt struct {
	*Applier
	cutoff int64
}

func (s *stopAt) Apply(ctx context.Context, topic string, p int, msgs []kafka.Message) error {
	k := 0
	for k < len(msgs) && msgs[k].Offset < s.cutoff {
		k++
	}
	if k > 0 {
		if err := s.Applier.Apply(ctx, topic, p, msgs[:k]); err != nil {
			return err
		}
	}
	if k < len(msgs) {
		return errors.New("stopped part way")
	}
	return nil
}

type rawEvent struct {
	partition int
	offset    int64
	card      string
	time      int64
	amount    float64
	merchant  string
	bad       bool
	id        string // event id, when the source has one
}

// TestIngestEndToEnd produces events to real Kafka, ingests them into real
// Redis with a stop and restart in the middle, and compares every feature
// read back at many times with a brute-force reference over the accepted
// events.
func TestIngestEndToEnd(t *testing.T) {
	brokers, rc, topic, r := e2eTopic(t, "txns", 3)
	src := r.Source("txns")

	// Events over two hours, produced out of order within a few minutes,
	// with some late beyond the allowed lateness and some malformed.
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 4000
	t0 := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC).UnixMilli()
	var events []rawEvent
	for i := range n {
		ts := t0 + int64(i)*int64(2*time.Hour/time.Millisecond)/n - rng.Int64N(int64(3*time.Minute/time.Millisecond))
		if rng.IntN(50) == 0 {
			ts -= int64(30 * time.Minute / time.Millisecond) // beyond the lateness
		}
		events = append(events, rawEvent{
			partition: rng.IntN(3), card: fmt.Sprintf("c%d", rng.IntN(15)), time: ts,
			amount: float64(rng.IntN(4000)) / 4, merchant: fmt.Sprintf("m%d", rng.IntN(40)), bad: rng.IntN(100) == 0,
		})
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: time.Millisecond,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return int(m.Key[0] - '0') })}
	msgs := make([]kafka.Message, n)
	for i, e := range events {
		v := fmt.Appendf(nil, `{"card":%q,"ts":%d,"amount":%g,"merchant":%q}`, e.card, e.time, e.amount, e.merchant)
		if e.bad {
			v = []byte(`{"card":` + e.card)
		}
		msgs[i] = kafka.Message{Key: []byte{byte('0' + e.partition)}, Value: v}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// Offsets follow production order within each partition.
	next := map[int]int64{}
	for i := range events {
		events[i].offset = next[events[i].partition]
		next[events[i].partition]++
	}

	store := online.New(rc, online.Options{})
	project := testenv.UniqueName(t, "p")
	pos := NewPositions(rc, project)
	sink := &memSink{}
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 20, SessionTimeout: 6 * time.Second}
	run := func(cutoff int64, until func() bool) {
		a, err := NewApplier(project, r, src, store, pos, sink, nil)
		if err != nil {
			t.Fatal(err)
		}
		stop := runGroupAsync(t, cfg, &stopAt{Applier: a, cutoff: cutoff})
		waitFor(t, "ingest progress", 60*time.Second, until)
		stop()
	}
	applied := func() int64 {
		var total int64
		for p := range 3 {
			if got, ok, _ := pos.Load(ctx, src.Name, topic, p); ok {
				total += got.Offset + 1
			}
		}
		return total
	}
	// Stop part way: the first process applies the first n/9 messages of
	// each partition, and stops there.
	cutoff, want := int64(n/9), int64(0)
	for p := range 3 {
		want += min(cutoff, next[p])
	}
	run(cutoff, func() bool { return applied() == want })
	part := applied()
	// Forget the positions of two partitions, as if their last checkpoints
	// were lost: the next process replays them from the start, and the
	// per-key fences must make every replayed event a no-op.
	for p := range 2 {
		if err := rc.Del(ctx, pos.key(src.Name, topic, p)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	run(math.MaxInt64, func() bool { return applied() == n }) // a new process resumes
	t.Logf("stopped after %d of %d events, then replayed two partitions from the start", part, n)
	if part >= n {
		t.Fatal("the first run applied everything; the test did not stop part way")
	}

	accepted, rejected := acceptReference(events, 3, 10*time.Minute)
	got := map[Reason]int{}
	for _, l := range sink.letters {
		got[l.Reason]++
	}
	// A batch whose dead letters were sent before the stop may be sent again.
	if got[ReasonInvalidPayload] < rejected[ReasonInvalidPayload] || got[ReasonLate] < rejected[ReasonLate] {
		t.Errorf("dead letters %v, want at least %v", got, rejected)
	}
	t.Logf("%d events: %d accepted, rejected %v", n, len(accepted), rejected)

	checkAgainstReference(ctx, t, r, src, store, project, accepted, rng)
}

type ViewRead = online.ViewRead

// reference computes the features of card_txn at t from raw events.
func reference(events []rawEvent, card string, t int64) []window.FeatureValue {
	const minute = 60 * 1000
	tile := func(x int64) int64 {
		if x < 0 {
			return (x - minute + 1) / minute
		}
		return x / minute
	}
	inWindow := func(e rawEvent, tiles int64) bool {
		return e.time <= t && tile(e.time) > tile(t)-tiles
	}
	var n1h, nLife int64
	var sum10 float64
	merchants := map[string]bool{}
	var last *rawEvent
	for i, e := range events {
		if e.card != card || e.time > t {
			continue
		}
		nLife++
		if inWindow(e, 60) {
			n1h++
			merchants[e.merchant] = true
		}
		if inWindow(e, 10) {
			sum10 += e.amount
		}
		if last == nil || e.time > last.time || e.time == last.time && (e.partition > last.partition || e.partition == last.partition && e.offset > last.offset) {
			last = &events[i]
		}
	}
	present := func(v featurestore.Value) window.FeatureValue {
		return window.FeatureValue{Value: v, Status: window.StatusPresent}
	}
	out := []window.FeatureValue{
		present(featurestore.Int64Value(n1h)),
		present(featurestore.DoubleValue(sum10)),
		present(featurestore.Int64Value(int64(len(merchants)))),
		present(featurestore.Int64Value(nLife)),
	}
	switch {
	case last == nil:
		out = append(out, window.FeatureValue{Status: window.StatusNotFound})
	case t-last.time > 60*minute:
		out = append(out, window.FeatureValue{Status: window.StatusExpired})
	default:
		out = append(out, present(featurestore.StringValue(last.merchant)))
	}
	return out
}
