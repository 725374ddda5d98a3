package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// TestConsumerLagWhileRedisIsDown: the consumer lag gauge follows the
// partition's end while batches fail (Redis down), also once the next batch
// is full and the partition reads no more, rather than keeping the value of
// the last batch applied; when the partition is released its series, and
// those of the events remembered for dedup, of the stall and of the events
// retention deleted, are deleted, so that a process does not export the lag
// of partitions another process owns now.
func TestConsumerLagWhileRedisIsDown(t *testing.T) {
	const t0 = int64(1795687200000)
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(dedupDefs)})
	if err != nil {
		t.Fatal(err)
	}
	topic := testenv.UniqueName(t, "txns")
	brokers := startKafka(t, topic, 1)
	mr := miniredis.RunT(t)
	rc := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rc.Close() })
	pos := NewPositions(rc, "p")
	a, err := NewApplier("p", r, r.Source("txns"), online.New(rc, online.Options{}), pos, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a.SetMetrics(NewMetrics(reg))

	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	sent := 0
	send := func(n int) {
		t.Helper()
		msgs := make([]kafka.Message, n)
		for i := range msgs {
			msgs[i] = kafka.Message{Value: fmt.Appendf(nil, `{"card":"c","id":"e%d","ts":%d,"amount":1}`, sent, t0+int64(sent))}
			sent++
		}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
	// lag reads the partition's gauge from the registry, -1 if it has no
	// series: asking the GaugeVec would create the series at 0.
	lag := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "featurestore_ingest_consumer_lag_messages" {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["source"] == "txns" && labels["partition"] == "0" {
					return m.GetGauge().GetValue()
				}
			}
		}
		return -1
	}
	// The lag is reported after the batch's position is saved, and a
	// report once a second may come in between: wait for it to settle.
	waitLag := func(want float64, while string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for lag() != want {
			if time.Now().After(deadline) {
				t.Fatalf("lag %v %s, want %v", lag(), while, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	series := func() int {
		return testutil.CollectAndCount(a.metrics.lag) + testutil.CollectAndCount(a.metrics.dedupIDs) +
			testutil.CollectAndCount(a.metrics.stalled) + testutil.CollectAndCount(a.metrics.lost)
	}

	// Batches of at most 50: while Redis is down the next batch is full
	// after 50 messages, and the partition stops reading.
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 50, MaxBatchSize: 50,
		SessionTimeout: 6 * time.Second, RetryMax: 200 * time.Millisecond}
	send(10)
	stop := runGroupAsync(t, cfg, a)
	waitFor(t, "the first events applied", 30*time.Second, func() bool {
		p, ok, err := pos.Load(context.Background(), "txns", topic, 0)
		return err == nil && ok && p.Offset == 9
	})
	waitLag(0, "after every message was applied")

	mr.Close() // Redis down: every batch fails from here on
	send(300)
	waitLag(300, "while Redis is down and 300 messages wait")
	// The reader fetched the first 300 (one fetch), and stopped with the
	// next batch full: the end of the partition is asked of Kafka.
	send(200)
	waitLag(500, "while Redis is down and 500 messages wait")
	if n := series(); n != 4 {
		t.Fatalf("%d partition series while the partition runs, want 4", n)
	}
	stop()
	if n := series(); n != 0 {
		t.Errorf("%d partition series after the partition was released, want 0", n)
	}
}
