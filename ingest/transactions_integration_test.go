package ingest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// TestTransactionalTopic ingests a topic written by a transactional
// producer (as Kafka Streams and Flink's exactly-once sinks write), through
// real Kafka into real Redis. Each committed transaction leaves a commit
// marker in every partition it wrote to, at an offset of its own, which
// kafka-go hands over as if it were a message: ingest must step over the
// markers (counted as transaction_marker, never dead-lettered as invalid
// payloads), resume past them, and apply every event once.
func TestTransactionalTopic(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), ContextTimeoutEnabled: true})
	defer rc.Close()
	topic := testenv.UniqueName(t, "txns")
	const partitions = 2
	testenv.CreateTopic(t, brokers, topic, partitions)
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, e2eDefs, topic)})
	if err != nil {
		t.Fatal(err)
	}
	src := r.Source("txns")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(topic), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	var events []rawEvent
	markers := 0
	next := make([]int64, partitions)
	const transactions, perTransaction = 12, 25
	for tx := range transactions {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		touched := map[int]bool{}
		for range perTransaction {
			e := rawEvent{partition: rng.IntN(partitions), card: fmt.Sprintf("c%d", rng.IntN(15)),
				time: t0 + int64(len(events))*1000, amount: float64(rng.IntN(400)) / 4, merchant: fmt.Sprintf("m%d", rng.IntN(9))}
			e.offset = next[e.partition]
			next[e.partition]++
			touched[e.partition] = true
			events = append(events, e)
			v := fmt.Appendf(nil, `{"card":%q,"ts":%d,"amount":%g,"merchant":%q}`, e.card, e.time, e.amount, e.merchant)
			if err := cl.ProduceSync(ctx, &kgo.Record{Partition: int32(e.partition), Key: []byte(e.card), Value: v}).FirstErr(); err != nil {
				t.Fatalf("transaction %d: %v", tx, err)
			}
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatalf("commit transaction %d: %v", tx, err)
		}
		for p := range touched {
			next[p]++ // the commit marker's offset
			markers++
		}
	}
	// The coordinator writes the last markers after EndTransaction returns.
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	ends := make([]int64, partitions)
	waitFor(t, "the commit markers", 30*time.Second, func() bool {
		resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
			topic: {kafka.LastOffsetOf(0), kafka.LastOffsetOf(1)}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, po := range resp.Topics[topic] {
			ends[po.Partition] = po.LastOffset
		}
		return ends[0] == next[0] && ends[1] == next[1]
	})

	store := online.New(rc, online.Options{})
	project := testenv.UniqueName(t, "p")
	pos := NewPositions(rc, project)
	sink := &memSink{}
	metrics := NewMetrics(prometheus.NewRegistry())
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 40, SessionTimeout: 6 * time.Second}
	applied := func() bool {
		for p := range partitions {
			got, ok, _ := pos.Load(ctx, src.Name, topic, p)
			// A partition ends with a marker: the last position is the
			// last event's, or the marker's.
			if !ok || got.Offset < ends[p]-2 {
				return false
			}
		}
		return true
	}
	// Two runs: the second resumes from positions among the markers.
	for run := range 2 {
		a, err := NewApplier(project, r, src, store, pos, sink, nil)
		if err != nil {
			t.Fatal(err)
		}
		a.SetMetrics(metrics)
		cutoff := ends[0] / 2
		if run == 1 {
			cutoff = 1 << 62
		}
		stop := runGroupAsync(t, cfg, &stopAt{Applier: a, cutoff: cutoff})
		waitFor(t, "ingest progress", 60*time.Second, func() bool {
			if run == 0 {
				got, ok, _ := pos.Load(ctx, src.Name, topic, 0)
				return ok && got.Offset >= cutoff-2
			}
			return applied()
		})
		stop()
	}
	for _, l := range sink.letters {
		t.Errorf("dead letter at %d/%d: %s: %s (key %q, value %q)", l.Message.Partition, l.Message.Offset, l.Reason, l.Detail, l.Message.Key, l.Message.Value)
	}
	if got := testutil.ToFloat64(metrics.events.WithLabelValues(src.Name, "", ResultTransactionMarker)); got < float64(markers) {
		t.Errorf("%v transaction markers counted, want at least %d", got, markers)
	}
	t.Logf("%d events in %d transactions, %d commit markers", len(events), transactions, markers)
	checkAgainstReference(ctx, t, r, src, store, project, events, rng)
}
