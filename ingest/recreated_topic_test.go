package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// TestRecreatedTopic: a topic deleted and created again under its name
// restarts its offsets at 0, while the saved position and the per-key
// fences keep the old ones, which would take its events for replays and
// drop them. Ingest must tell the new topic from the old one by the record
// at the last offset it read, whatever the new topic's length, and stall
// the partition with an error rather than read on:
//   - while it runs (before, the stall held only while the new topic was
//     shorter than the old one, and reading went on silently from the old
//     offset once it was longer);
//   - and when it starts on a topic recreated meanwhile (before, nothing
//     was noticed at all);
//   - and in both cases say so in its readiness, naming the topic and
//     partition (before, /readyz said ready while the partition stalled).
func TestRecreatedTopic(t *testing.T) { forEachKafka(t, testRecreatedTopic) }

func testRecreatedTopic(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	o := newOneTopic(t, kafkaFor, "recreated")
	brokers, topic, saved, run := o.brokers, o.topic, o.saved, o.run
	// The same keys and kinds of values at the same offsets in both
	// topics: only the events' times tell them apart.
	produceCards := func(n int) { produceCards(t, brokers, topic, n) }
	const replaced = "holds another record at an offset ingest read before"

	produceCards(30)
	logs := &logRecords{level: slog.LevelError}
	stop := run(logs)
	waitFor(t, "the first topic applied", 30*time.Second, func() bool { return saved() == 29 })
	o.waitReady(true, "every source in its consumer group")
	time.Sleep(300 * time.Millisecond) // the reader waits in a fetch at offset 30

	recreateTopic(t, brokers, topic)
	produceCards(50)
	waitFor(t, "an error about the recreated topic while ingest runs", 60*time.Second, func() bool { return logs.has(replaced) })
	time.Sleep(time.Second)
	if got := saved(); got != 29 {
		t.Errorf("position %d after the topic was recreated with 50 records while ingest ran; want 29, the stall", got)
	}
	if v := gaugeValue(t, o.reg, "featurestore_ingest_partition_stalled"); v != 1 {
		t.Errorf("featurestore_ingest_partition_stalled %v, want 1", v)
	}
	stalled := fmt.Sprintf("topic %s partition 0 (source txns) stalled: recreated topic", topic)
	o.waitReady(false, stalled)
	stop()

	logs = &logRecords{level: slog.LevelError}
	stop = run(logs)
	waitFor(t, "an error about the recreated topic at start", 60*time.Second, func() bool { return logs.has(replaced) })
	o.waitReady(false, stalled)
	time.Sleep(time.Second)
	stop()
	if got := saved(); got != 29 {
		t.Errorf("position %d after a start on the recreated topic; want 29, the stall", got)
	}
}

// gaugeValue returns the value of the one series of a gauge in reg, or -1.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// recreateTopic deletes a topic of one partition and creates it again
// under its name, once the brokers have let go of the old one.
func recreateTopic(t *testing.T, brokers []string, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	resp, err := client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil {
		t.Fatalf("delete topic %s: %v", topic, err)
	}
	for {
		resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{
			Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}}})
		if err == nil {
			err = resp.Errors[topic]
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil || !errors.Is(err, kafka.TopicAlreadyExists) {
			t.Fatalf("create topic %s again: %v", topic, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	testenv.CreateTopic(t, brokers, topic, 1) // waits for its leader
}

// oldSaveScript is the position save of the versions before the record
// sum (field rec): it moves offset, hw and dedup, and leaves rec as it was.
var oldSaveScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'offset')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return cur end
redis.call('HSET', KEYS[1], 'offset', ARGV[1])
for i, f in ipairs({'hw', 'dedup'}) do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], f)
  else
    redis.call('HSET', KEYS[1], f, ARGV[i + 1])
  end
end
return ARGV[1]
`)

// TestRollingDeployKeepsReading: in a rolling deploy (or a rollback and a
// roll forward) a version that does not save the record sum moves the
// position on and leaves the sum of an older offset; the next start of
// this version must not take the record at the new offset for another
// topic's, and stall a healthy partition for good.
func TestRollingDeployKeepsReading(t *testing.T) { forEachKafka(t, testRollingDeployKeepsReading) }

func testRollingDeployKeepsReading(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	o := newOneTopic(t, kafkaFor, "rolling")
	brokers, topic, saved, run, rc, pos := o.brokers, o.topic, o.saved, o.run, o.rc, o.pos
	ctx := context.Background()
	produceCards(t, brokers, topic, 30)
	logs := &logRecords{level: slog.LevelError}
	stop := run(logs)
	waitFor(t, "the first events applied", 30*time.Second, func() bool { return saved() == 29 })
	stop()
	produceCards(t, brokers, topic, 30)
	// The old version applies 30 to 59 and saves its position.
	if err := oldSaveScript.Run(ctx, rc, []string{pos.key("txns", topic, 0)}, 59, time.Now().UnixMilli(), "").Err(); err != nil {
		t.Fatal(err)
	}
	produceCards(t, brokers, topic, 30)
	logs = &logRecords{level: slog.LevelError}
	stop = run(logs)
	defer stop()
	waitFor(t, "the events after the old version's applied", 30*time.Second, func() bool { return saved() == 89 })
	o.waitReady(true, "every source in its consumer group")
	if logs.has("another record") {
		t.Errorf("a healthy partition taken for a recreated topic: %q", logs.msgs)
	}
}

// oneTopic is a one-partition topic with a lifetime count over it, an
// online store and positions in a miniredis, for the tests of a topic's
// identity.
type oneTopic struct {
	t       *testing.T
	brokers []string
	topic   string
	r       *registry.Registry
	rc      *redis.Client
	store   *online.Store
	pos     *Positions
	reg     *prometheus.Registry // the metrics of the last run
	ready   *Readiness           // the readiness of the last run
}

func newOneTopic(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string, name string) *oneTopic {
	topic := name + "-" + strings.ReplaceAll(t.Name(), "/", "-")
	brokers := kafkaFor(t, topic, 1)
	rc, store := miniStore(t)
	return &oneTopic{t: t, brokers: brokers, topic: topic, r: lifetimeCountDefs(t, topic), rc: rc, store: store, pos: NewPositions(rc, "p")}
}

// saved returns the saved position's offset, -1 for none.
func (o *oneTopic) saved() int64 {
	p, ok, err := o.pos.Load(context.Background(), "txns", o.topic, 0)
	if err != nil || !ok {
		return -1
	}
	return p.Offset
}

// run runs ingest of the topic until stop is called, logging to logs.
func (o *oneTopic) run(logs *logRecords) (stop func()) {
	a, err := NewApplier("p", o.r, o.r.Source("txns"), o.store, o.pos, nil, slog.New(logs))
	if err != nil {
		o.t.Fatal(err)
	}
	o.reg = prometheus.NewRegistry()
	a.SetMetrics(NewMetrics(o.reg))
	gc := GroupConfig{Brokers: o.brokers, GroupID: o.topic, Topic: o.topic, BatchSize: 100,
		SessionTimeout: 6 * time.Second, RetryMax: 200 * time.Millisecond, Logger: slog.New(logs)}
	o.ready = &Readiness{}
	o.ready.start(1)
	o.ready.track("txns", o.topic, &gc)
	o.ready.allStarted()
	return runGroupAsync(o.t, gc, a)
}

// waitReady waits for the last run's readiness to be ok, saying says.
func (o *oneTopic) waitReady(ok bool, says string) {
	o.t.Helper()
	var got bool
	var why string
	deadline := time.Now().Add(30 * time.Second)
	for {
		if got, why = o.ready.Ready(); got == ok && strings.Contains(why, says) {
			return
		}
		if time.Now().After(deadline) {
			o.t.Fatalf("Ready() = %v, %q; want %v saying %q", got, why, ok, says)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lifetimeCountDefs is a source on topic with a view of one lifetime count.
func lifetimeCountDefs(t *testing.T, topic string) *registry.Registry {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(fmt.Sprintf(`
kind: Entity
name: card
join_keys: [{name: card, type: string}]
---
kind: Source
name: txns
kafka: {topic: %s}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card: card}
fields: {amount: int64}
allowed_lateness: 1h
---
kind: FeatureView
name: v
entity: card
source: txns
features: [{name: n, aggregation: count, window: lifetime}]
`, topic))})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// produceCards produces n events of three cards at the current time, once
// the topic's leader is known.
func produceCards(t *testing.T, brokers []string, topic string, n int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, Transport: &kafka.Transport{}}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Value: fmt.Appendf(nil, `{"card":"c%d","ts":%d,"amount":1}`, i%3, time.Now().UnixMilli())}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := w.WriteMessages(ctx, msgs...)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // a new topic's leader, not known yet
	}
}
