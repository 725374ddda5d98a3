package ingest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestTransactionalTopic ingests a topic written by a transactional
// producer (as Kafka Streams and Flink's exactly-once sinks write), through
// real Kafka into real Redis. Each committed transaction leaves a commit
// marker in every partition it wrote to, at an offset of its own, which
// kafka-go hands over as if it were a message: ingest must step over the
// markers (counted as transaction_marker, never dead-lettered as invalid
// payloads), resume past them, and apply every event once.
func TestTransactionalTopic(t *testing.T) {
	const partitions = 2
	brokers, rc, topic, r := e2eTopic(t, "txns", partitions)
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

// TestAbortedTransactions ingests, through real Kafka into real Redis, a
// topic that two transactional producers and a plain one write to at once:
// transactions interleave in each partition, some commit and some abort,
// and one stays open while ingest runs. Only the events of committed
// transactions and the plain events may be applied: none of an aborted
// transaction, ever, and none of an open one (nor any event after it in
// its partitions, which Kafka holds back until it is decided) before it
// commits. The features read back must equal the reference over exactly
// those events, and every record of an aborted transaction is counted.
func TestAbortedTransactions(t *testing.T) {
	const partitions = 2
	brokers, rc, topic, r := e2eTopic(t, "aborts", partitions)
	src := r.Source("txns")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	txA := kgoClient(t, brokers, topic, kgo.TransactionalID(topic+"-a"))
	txB := kgoClient(t, brokers, topic, kgo.TransactionalID(topic+"-b"))
	plain := kgoClient(t, brokers, topic)

	rng := rand.New(rand.NewPCG(5, 6))
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	n := 0
	// produce writes one event through cl and returns it with its offset.
	produce := func(cl *kgo.Client) rawEvent {
		t.Helper()
		e := rawEvent{partition: rng.IntN(partitions), card: fmt.Sprintf("c%d", rng.IntN(15)),
			time: t0 + int64(n)*1000, amount: float64(rng.IntN(400)) / 4, merchant: fmt.Sprintf("m%d", rng.IntN(9))}
		n++
		v := fmt.Appendf(nil, `{"card":%q,"ts":%d,"amount":%g,"merchant":%q}`, e.card, e.time, e.amount, e.merchant)
		rec, err := cl.ProduceSync(ctx, &kgo.Record{Partition: int32(e.partition), Key: []byte(e.card), Value: v}).First()
		if err != nil {
			t.Fatal(err)
		}
		e.offset = rec.Offset
		return e
	}
	begin := func(cl *kgo.Client) {
		t.Helper()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
	}
	end := func(cl *kgo.Client, commit bool) {
		t.Helper()
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}

	var accepted []rawEvent
	aborted := 0
	// Rounds of two transactions open at once, with plain events between
	// their records, each transaction committed or aborted at random.
	for round := range 8 {
		begin(txA)
		begin(txB)
		var inA, inB []rawEvent
		for range 12 {
			switch rng.IntN(3) {
			case 0:
				inA = append(inA, produce(txA))
			case 1:
				inB = append(inB, produce(txB))
			default:
				accepted = append(accepted, produce(plain))
			}
		}
		commitA, commitB := round%2 == 0, rng.IntN(2) == 0
		end(txA, commitA)
		end(txB, commitB)
		for _, tx := range []struct {
			evs    []rawEvent
			commit bool
		}{{inA, commitA}, {inB, commitB}} {
			if tx.commit {
				accepted = append(accepted, tx.evs...)
			} else {
				aborted += len(tx.evs)
			}
		}
	}
	// A transaction left open in both partitions, and plain events after
	// it, which read_committed holds back while it is open.
	begin(txA)
	var open, after []rawEvent
	openFirst := [partitions]int64{-1, -1}
	for len(open) < 10 || openFirst[0] < 0 || openFirst[1] < 0 {
		e := produce(txA)
		if openFirst[e.partition] < 0 {
			openFirst[e.partition] = e.offset
		}
		open = append(open, e)
	}
	for range 6 {
		after = append(after, produce(plain))
	}

	store := online.New(rc, online.Options{})
	project := testenv.UniqueName(t, "p")
	pos := NewPositions(rc, project)
	sink := &memSink{}
	metrics := NewMetrics(prometheus.NewRegistry())
	a, err := NewApplier(project, r, src, store, pos, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.SetMetrics(metrics)
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 10, SessionTimeout: 6 * time.Second}
	stop := runGroupAsync(t, cfg, a)
	defer stop()
	// upTo returns, per partition, the newest offset of the events.
	upTo := func(evs []rawEvent) (last [partitions]int64) {
		for _, e := range evs {
			last[e.partition] = max(last[e.partition], e.offset)
		}
		return last
	}
	appliedUpTo := func(p int) int64 {
		got, ok, err := pos.Load(ctx, src.Name, topic, p)
		if err != nil || !ok {
			return -1
		}
		return got.Offset
	}
	// Everything before the open transaction is decided: ingest reaches
	// its last event before it, and stops before the open transaction.
	before := upTo(accepted)
	waitFor(t, "ingest up to the open transaction", 60*time.Second, func() bool {
		return appliedUpTo(0) >= before[0] && appliedUpTo(1) >= before[1]
	})
	time.Sleep(time.Second) // what ingest would wrongly apply, it applies now
	for p := range partitions {
		if got := appliedUpTo(p); got >= openFirst[p] {
			t.Errorf("partition %d: applied up to offset %d, inside the open transaction starting at %d", p, got, openFirst[p])
		}
	}
	checkAgainstReference(ctx, t, r, src, store, project, accepted, rng)
	if got := testutil.ToFloat64(metrics.events.WithLabelValues(src.Name, "", ResultAbortedTransaction)); got != float64(aborted) {
		t.Errorf("%v records of aborted transactions counted, want %d", got, aborted)
	}

	// A replay from the earliest offset, meanwhile, ends at the open
	// transaction (the last stable offset) without waiting for it, and
	// applies the same events.
	replayed := testenv.UniqueName(t, "replay")
	res, err := Replay(ctx, ReplayConfig{Project: replayed, Registry: r, Source: src, Brokers: brokers, Store: store,
		Positions: NewPositions(rc, replayed+".backfill"), BatchSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("replay: %v messages", res.Messages)
	checkAgainstReference(ctx, t, r, src, store, replayed, accepted, rng)

	// The open transaction commits; then one more aborts after it.
	end(txA, true)
	accepted = append(accepted, open...)
	accepted = append(accepted, after...)
	begin(txB)
	for range 5 {
		produce(txB)
		aborted++
	}
	end(txB, false)
	for range 4 {
		accepted = append(accepted, produce(plain))
	}
	last := upTo(accepted)
	waitFor(t, "ingest of every decided event", 60*time.Second, func() bool {
		return appliedUpTo(0) >= last[0] && appliedUpTo(1) >= last[1]
	})
	for _, l := range sink.letters {
		t.Errorf("dead letter at %d/%d: %s: %s", l.Message.Partition, l.Message.Offset, l.Reason, l.Detail)
	}
	if got := testutil.ToFloat64(metrics.events.WithLabelValues(src.Name, "", ResultAbortedTransaction)); got != float64(aborted) {
		t.Errorf("%v records of aborted transactions counted, want %d", got, aborted)
	}
	t.Logf("%d events applied, %d records of aborted transactions dropped", len(accepted), aborted)
	checkAgainstReference(ctx, t, r, src, store, project, accepted, rng)
}

// kgoClient returns a franz-go client producing to topic, to the
// partition each record names, closed when the test ends.
func kgoClient(t *testing.T, brokers []string, topic string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}
