package ingest

import (
	"cmp"
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// End-to-end ingest benchmarks: Kafka to features readable in Redis, through
// RunGroup and the Applier, against the real services that `make bench`
// starts (.ci/services.sh). The view has six aggregations (count, sum, mean,
// max, count_distinct, stddev) over three windows (10m, 1h, 1d) of 1m tiles;
// events are card transactions over 100,000 cards, on 6 partitions.
//
// To take the figures (a 1,000,000-event topic), one iteration per
// run, five runs (make bench-ingest does the same):
//
//	.ci/services.sh up
//	set -a; eval "$(.ci/services.sh env)"; set +a
//	FEATURESTORE_BENCH_EVENTS=1000000 go test -run '^$' -bench 'BenchmarkIngest' \
//		-benchtime 1x -count 5 -timeout 60m ./ingest/ | tee ingest-bench.txt
//
// Redis CPU is read from INFO, so other clients of the same Redis count as
// ingest's: point FEATURESTORE_TEST_REDIS_ADDR at a redis-server of its own
// for clean figures.
//
// Without FEATURESTORE_BENCH_EVENTS the topic holds 200,000 events, so that
// `make bench` (-count 5, every package) takes a few minutes; with
// FEATURESTORE_BENCH_FRESHNESS=10s the freshness benchmark produces for 10s
// instead of 20s; with FEATURESTORE_BENCH_ROLLUP=1h the view keeps hourly
// rollup tiles; with FEATURESTORE_BENCH_WAIT_REPLICAS=1 every batch waits
// for a replica of the Redis (give it one). Add -cpuprofile cpu.out to see
// where the ingest process spends its time; Redis and Kafka are other
// processes, and the redis-cpu-us/event metric gives Redis's share.
//
// Targets on a 2-core machine: ingest-events/s >= 100000 and
// ingest/read >= 0.5 (BenchmarkIngestThroughput), p99-ms < 100
// (BenchmarkIngestFreshness).

// BenchmarkIngestThroughput produces the topic once, then per iteration
// reads it all with plain kafka-go partition readers (the baseline, not
// timed), reads it again and aggregates it without Redis (the second
// baseline, not timed), and ingests it all into a fresh project until the
// positions say that every event is applied (timed: ns/op is one whole
// topic). Metrics, over all iterations:
//
//	read-events/s      the baseline: reading only
//	noredis-events/s   the second baseline: reading, decoding, late checks,
//	                   routing, merging into tile states and encoding them,
//	                   all of ingest but Redis (aggregateAll)
//	ingest-events/s    RunGroup + Applier, group join included
//	ingest/read        ingest's rate over the read-only rate
//	noredis/read       the second baseline's rate over the read-only rate
//	go-cpu-us/event    CPU of this process during ingest (Linux only)
//	noredis-go-cpu-us/event  CPU of this process during the second baseline
//	redis-cpu-us/event CPU of Redis during ingest
//	B/entity           Redis MEMORY USAGE of one card's hash of the view,
//	                   mean over a sample of 2000
//	used-B/entity      growth of Redis used_memory per card
//
// The memory figures depend on the events per card: 2 with the default
// topic, 10 with 1,000,000 events.
func BenchmarkIngestThroughput(b *testing.B) {
	brokers := testenv.KafkaBrokers(b)
	rc := benchRedis(b)
	n := benchEvents(b)
	topic := testenv.UniqueName(b, "txns")
	testenv.CreateTopic(b, brokers, topic, benchPartitions)
	r, src := benchRegistry(b, topic)
	data := produceHistory(b, brokers, topic, n)
	b.Logf("produced %d events of %d cards to %d partitions in %s (%.0f events/s)",
		data.total, data.entities, benchPartitions, data.produce.Round(time.Millisecond), float64(data.total)/data.produce.Seconds())
	store := benchStore(b, rc)
	ctx := context.Background()

	var readTook, aggTook, ingestTook, joinTook time.Duration
	var goCPU, aggCPU, redisCPUs, memUsage, usedMem float64
	goCPUKnown := true
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		readTook += readAll(b, brokers, topic, data.ends)
		project := benchProject(b, rc)
		agg, err := NewApplier(project, r, src, store, nil, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		acpu0, aok0 := processCPU()
		aggTook += aggregateAll(b, brokers, topic, data.ends, agg)
		acpu1, aok1 := processCPU()
		aggCPU += acpu1 - acpu0
		goCPUKnown = goCPUKnown && aok0 && aok1
		pos := NewPositions(rc, project)
		a, err := NewApplier(project, r, src, store, pos, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		h := newBenchHandler(a)
		runtime.GC() // not to charge the baselines' garbage to ingest
		used0, err := redisUsedMemory(ctx, rc)
		if err != nil {
			b.Fatal(err)
		}
		rcpu0, err := redisCPU(ctx, rc)
		if err != nil {
			b.Fatal(err)
		}
		gcpu0, ok0 := processCPU()
		b.StartTimer()

		start := time.Now()
		stop := startIngest(b, brokers, topic, project, h)
		err = waitApplied(pos, topic, data.ends, benchIngestTimeout)
		took := time.Since(start)

		b.StopTimer()
		gcpu1, ok1 := processCPU()
		rcpu1, rerr := redisCPU(ctx, rc)
		stop()
		if err != nil {
			b.Fatal(err)
		}
		if rerr != nil {
			b.Fatal(rerr)
		}
		ingestTook += took
		b.Logf("ingest: %s", h.applyStats())
		redisCPUs += rcpu1 - rcpu0
		goCPU += gcpu1 - gcpu0
		goCPUKnown = goCPUKnown && ok0 && ok1
		if at, ok := h.assigned(); ok {
			joinTook += at.Sub(start)
		}
		used1, err := redisUsedMemory(ctx, rc)
		if err != nil {
			b.Fatal(err)
		}
		keys, err := viewKeys(ctx, rc, project)
		if err != nil {
			b.Fatal(err)
		}
		// Every card that had an event has its hash: nothing was dropped.
		if len(keys) != data.entities {
			b.Fatalf("%d online hashes after ingest, want one per card: %d", len(keys), data.entities)
		}
		mu, err := meanMemoryUsage(ctx, rc, keys, 2000)
		if err != nil {
			b.Fatal(err)
		}
		memUsage += mu
		usedMem += (used1 - used0) / float64(len(keys))
		if err := dropProject(ctx, rc, project, keys); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}

	iters := float64(b.N)
	events := float64(data.total) * iters
	readRate := events / readTook.Seconds()
	aggRate := events / aggTook.Seconds()
	ingestRate := events / ingestTook.Seconds()
	b.Logf("%d iteration(s) of %d events: read-only %s, ingest %s each (group join and assignment %s of it); store %+v",
		b.N, data.total, (readTook / time.Duration(b.N)).Round(time.Millisecond), (ingestTook / time.Duration(b.N)).Round(time.Millisecond),
		(joinTook / time.Duration(b.N)).Round(time.Millisecond), store.Stats())
	b.ReportMetric(readRate, "read-events/s")
	b.ReportMetric(aggRate, "noredis-events/s")
	b.ReportMetric(ingestRate, "ingest-events/s")
	b.ReportMetric(ingestRate/readRate, "ingest/read")
	b.ReportMetric(aggRate/readRate, "noredis/read")
	if goCPUKnown {
		b.ReportMetric(goCPU*1e6/events, "go-cpu-us/event")
		b.ReportMetric(aggCPU*1e6/events, "noredis-go-cpu-us/event")
	}
	b.ReportMetric(redisCPUs*1e6/events, "redis-cpu-us/event")
	b.ReportMetric(memUsage/iters, "B/entity")
	b.ReportMetric(usedMem/iters, "used-B/entity")
}

// BenchmarkIngestFreshness produces 10,000 events/s, of random cards at the
// current time, into a running ingest (production defaults: batches of up to
// 1000, linger 5ms; producer linger 5ms, Kafka 4's default), and measures
// for every event the time from its hand-over to the producer to the moment
// a poller sees its partition's position reach its offset. The position is
// saved only after Redis acknowledged the batch's writes, so the event is
// readable by then; the poller looks every millisecond, so the figures are
// at most a poll (~1ms plus a round trip) late. Events of the first second
// are a warm-up and not counted. ns/op is the time spent producing.
func BenchmarkIngestFreshness(b *testing.B) {
	const (
		rate   = 10_000 // events/s
		warmup = time.Second
	)
	brokers := testenv.KafkaBrokers(b)
	rc := benchRedis(b)
	d := benchFreshness(b)
	store := benchStore(b, rc)
	ctx := context.Background()

	var lat []time.Duration
	var produced int
	var producing time.Duration
	seed := uint64(2)
	for b.Loop() {
		b.StopTimer()
		topic := testenv.UniqueName(b, "txns")
		testenv.CreateTopic(b, brokers, topic, benchPartitions)
		r, src := benchRegistry(b, topic)
		project := benchProject(b, rc)
		pos := NewPositions(rc, project)
		a, err := NewApplier(project, r, src, store, pos, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		h := newBenchHandler(a)
		stop := startIngest(b, brokers, topic, project, h)
		deadline := time.Now().Add(time.Minute)
		for _, ok := h.assigned(); !ok; _, ok = h.assigned() {
			if time.Now().After(deadline) {
				stop()
				b.Fatal("the consumer group did not assign every partition within a minute")
			}
			time.Sleep(10 * time.Millisecond)
		}

		// Pollers: when each partition's position moved, and to where.
		type seenPos struct {
			offset int64
			at     time.Time
		}
		seen := make([][]seenPos, benchPartitions)
		lastSeen := make([]atomic.Int64, benchPartitions)
		pollCtx, endPolls := context.WithTimeout(ctx, warmup+d+2*time.Minute)
		b.Cleanup(endPolls)
		var polls sync.WaitGroup
		for p := range benchPartitions {
			polls.Go(func() {
				last := int64(-1)
				for {
					got, ok, err := pos.Load(pollCtx, benchSource, topic, p)
					at := time.Now()
					if err == nil && ok && got.Offset > last {
						seen[p] = append(seen[p], seenPos{got.Offset, at})
						last = got.Offset
						lastSeen[p].Store(last + 1)
					}
					if !sleep(pollCtx, time.Millisecond) {
						return
					}
				}
			})
		}

		// The producer, and what it was acknowledged.
		type sentMsg struct {
			offset int64
			at     time.Time
		}
		var mu sync.Mutex
		sent := make([][]sentMsg, benchPartitions)
		var failed atomic.Int64
		var acks []time.Duration
		w := &kafka.Writer{
			Addr: kafka.TCP(brokers...), Topic: topic, Balancer: benchBalancer,
			// About 8 events per batch at this rate; kafka-go allocates
			// room for BatchSize messages per batch.
			BatchSize: 100, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireOne, Async: true,
			Completion: func(msgs []kafka.Message, err error) {
				if err != nil {
					failed.Add(int64(len(msgs)))
					return
				}
				now := time.Now()
				mu.Lock()
				defer mu.Unlock()
				for _, m := range msgs {
					at := m.WriterData.(time.Time)
					sent[m.Partition] = append(sent[m.Partition], sentMsg{m.Offset, at})
					acks = append(acks, now.Sub(at))
				}
			},
		}
		g := newBenchGen(seed)
		seed++
		total := int(rate * (warmup + d).Seconds())
		b.StartTimer()
		start := time.Now()
		warmEnd := start.Add(warmup)
		tick := time.NewTicker(time.Millisecond)
		for n := 0; n < total; {
			<-tick.C
			now := time.Now()
			due := min(total, int(now.Sub(start).Seconds()*rate))
			if due <= n {
				continue
			}
			msgs := make([]kafka.Message, due-n)
			buf := make([]byte, 0, len(msgs)*96)
			for i := range msgs {
				msgs[i], buf = g.message(buf, now.UnixMilli())
				msgs[i].WriterData = now
			}
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				b.Fatalf("produce: %v", err)
			}
			n = due
		}
		took := time.Since(start)
		b.StopTimer()
		tick.Stop()
		if err := w.Close(); err != nil { // waits for the last completions
			b.Errorf("close producer: %v", err)
		}
		produced += total
		producing += took
		if f := failed.Load(); f > 0 {
			b.Fatalf("%d of %d events were not acknowledged by Kafka", f, total)
		}
		ends := make([]int64, benchPartitions)
		for p, s := range sent {
			slices.SortFunc(s, func(x, y sentMsg) int { return cmp.Compare(x.offset, y.offset) })
			if len(s) > 0 {
				ends[p] = s[len(s)-1].offset + 1
			}
		}
		// Done when the pollers have seen every event applied.
		deadline = time.Now().Add(time.Minute)
		caughtUp := func() bool {
			for p, end := range ends {
				if lastSeen[p].Load() < end {
					return false
				}
			}
			return true
		}
		for !caughtUp() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		endPolls()
		polls.Wait()
		stop()
		if !caughtUp() {
			got := make([]int64, len(ends))
			for p := range got {
				got[p] = lastSeen[p].Load()
			}
			b.Fatalf("ingest did not apply every event within a minute of the last: applied up to %v, want %v", got, ends)
		}

		slices.Sort(acks)
		b.Logf("producer acknowledgements: p50 %.1fms p99 %.1fms max %.1fms; %s",
			ms(quantile(acks, 0.5)), ms(quantile(acks, 0.99)), ms(quantile(acks, 1)), h.applyStats())
		for p, s := range sent {
			j := 0
			for _, m := range s {
				for j < len(seen[p]) && seen[p][j].offset < m.offset {
					j++
				}
				if !m.at.Before(warmEnd) {
					lat = append(lat, seen[p][j].at.Sub(m.at))
				}
			}
		}
		keys, err := viewKeys(ctx, rc, project)
		if err == nil {
			err = dropProject(ctx, rc, project, keys)
		}
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}

	if len(lat) == 0 {
		b.Fatal("no latencies measured")
	}
	slices.Sort(lat)
	q := func(f float64) float64 { return ms(quantile(lat, f)) }
	b.Logf("%d events measured after the warm-up; p50 %.1fms p90 %.1fms p99 %.1fms p99.9 %.1fms max %.1fms",
		len(lat), q(0.5), q(0.9), q(0.99), q(0.999), q(1))
	b.ReportMetric(float64(produced)/producing.Seconds(), "produced-events/s")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}
