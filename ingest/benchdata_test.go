package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// The data, definitions and service helpers of the ingest benchmarks
// (bench_test.go).

// Environment variables that size the benchmarks. The defaults keep
// `make bench` (-count 5) to a few minutes; the figures of the issue are
// taken with FEATURESTORE_BENCH_EVENTS=1000000.
const (
	benchEventsEnv    = "FEATURESTORE_BENCH_EVENTS"    // events in the throughput topic
	benchFreshnessEnv = "FEATURESTORE_BENCH_FRESHNESS" // how long the freshness benchmark produces, a Go duration
	// Replicas every batch waits for (online.Options.Replicas, ingest's
	// --redis-wait-replicas); FEATURESTORE_TEST_REDIS_ADDR must then be a
	// Redis with that many replicas.
	benchWaitReplicasEnv = "FEATURESTORE_BENCH_WAIT_REPLICAS"
)

const (
	benchDefaultEvents    = 200_000
	benchDefaultFreshness = 20 * time.Second

	benchPartitions = 6
	benchEntities   = 100_000
	benchMerchants  = 5_000
	// The throughput topic holds the last day of events, as a replay or a
	// backfill would, out of order by up to benchJitter: well inside the
	// allowed lateness, so that every event is applied.
	benchSpan   = 24 * time.Hour
	benchJitter = 2 * time.Minute

	benchSource = "txns"
	benchView   = "card_txn"

	// Bounds of every wait, so that a broken ingest fails the benchmark
	// instead of hanging it.
	benchProduceTimeout = 10 * time.Minute
	benchIngestTimeout  = 15 * time.Minute
	benchStopTimeout    = 30 * time.Second
)

// benchEvents returns the size of the throughput topic.
func benchEvents(b *testing.B) int {
	s := os.Getenv(benchEventsEnv)
	if s == "" {
		return benchDefaultEvents
	}
	n, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
	if err != nil || n < benchPartitions {
		b.Fatalf("%s=%q: want a number of events, at least %d", benchEventsEnv, s, benchPartitions)
	}
	return n
}

// benchFreshness returns how long the freshness benchmark produces.
func benchFreshness(b *testing.B) time.Duration {
	s := os.Getenv(benchFreshnessEnv)
	if s == "" {
		return benchDefaultFreshness
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		b.Fatalf("%s=%q: want a duration of at least 1s, such as 20s", benchFreshnessEnv, s)
	}
	return d
}

// benchDefs are the definitions of the benchmarks: a card entity, a source
// of card transactions, and one view with six aggregations over three
// windows of 1m tiles, 18 features.
func benchDefs(topic string) []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: %s
kafka: {topic: %s}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card_id: card}
fields: {amount: double, merchant: string}
allowed_lateness: 10m
---
kind: FeatureView
name: %s
entity: card
source: %s
tile: 1m
%s
features:
`, benchSource, topic, benchView, benchSource, benchRollup())
	aggs := []struct{ name, agg, field string }{
		{"n", "count", ""},
		{"amount_sum", "sum", "amount"},
		{"amount_mean", "mean", "amount"},
		{"amount_max", "max", "amount"},
		{"merchants", "count_distinct", "merchant"},
		{"amount_stddev", "stddev", "amount"},
	}
	for _, w := range []string{"10m", "1h", "1d"} {
		for _, a := range aggs {
			fmt.Fprintf(&sb, "  - {name: %s_%s, aggregation: %s, window: %s", a.name, w, a.agg, w)
			if a.field != "" {
				fmt.Fprintf(&sb, ", field: %s", a.field)
			}
			sb.WriteString("}\n")
		}
	}
	return []byte(sb.String())
}

// benchRollup returns the view's rollup line: FEATURESTORE_BENCH_ROLLUP
// (a duration, such as 1h) measures ingest with rollup tiles.
func benchRollup() string {
	if r := os.Getenv("FEATURESTORE_BENCH_ROLLUP"); r != "" {
		return "rollup: " + r
	}
	return ""
}

func benchRegistry(b *testing.B, topic string) (*registry.Registry, *registry.Source) {
	r, err := registry.LoadFiles(map[string][]byte{"bench.yaml": benchDefs(topic)})
	if err != nil {
		b.Fatal(err)
	}
	return r, r.Source(benchSource)
}

// benchBalancer spreads cards over partitions by a hash of the message key,
// the card id, as producers keyed by entity do.
var benchBalancer = kafka.BalancerFunc(func(m kafka.Message, partitions ...int) int {
	h := fnv.New32a()
	h.Write(m.Key)
	return partitions[int(h.Sum32()%uint32(len(partitions)))]
})

// benchGen makes card transactions: uniform over benchEntities cards and
// benchMerchants merchants, log-normal amounts.
type benchGen struct {
	rng  *rand.Rand
	seen []bool // cards that got an event
	used int    // how many
}

func newBenchGen(seed uint64) *benchGen {
	return &benchGen{rng: rand.New(rand.NewPCG(seed, 0x5eed)), seen: make([]bool, benchEntities)}
}

// message appends the key and payload of a random event at ts (Unix ms) to
// buf, and returns the message and the grown buffer. Key and Value share
// buf's memory: one allocation per chunk of messages, not two per message.
func (g *benchGen) message(buf []byte, ts int64) (kafka.Message, []byte) {
	card := g.rng.IntN(benchEntities)
	if !g.seen[card] {
		g.seen[card] = true
		g.used++
	}
	amount := math.Round(math.Exp(3+g.rng.NormFloat64())*100) / 100
	start := len(buf)
	buf = fmt.Appendf(buf, "c%07d", card)
	keyEnd := len(buf)
	buf = append(buf, `{"card":"`...)
	buf = append(buf, buf[start:keyEnd]...)
	buf = append(buf, `","ts":`...)
	buf = strconv.AppendInt(buf, ts, 10)
	buf = append(buf, `,"amount":`...)
	buf = strconv.AppendFloat(buf, amount, 'f', 2, 64)
	buf = append(buf, `,"merchant":"m`...)
	buf = strconv.AppendInt(buf, int64(g.rng.IntN(benchMerchants)), 10)
	buf = append(buf, `"}`...)
	return kafka.Message{Key: buf[start:keyEnd:keyEnd], Value: buf[keyEnd:len(buf):len(buf)]}, buf
}

// benchTopic is a produced topic.
type benchTopic struct {
	ends     []int64 // per partition: the offset after the last message
	total    int64
	entities int // distinct cards
	produce  time.Duration
}

// produceHistory writes n events over the last benchSpan to topic as fast
// as it can: large uncompressed batches, acknowledged by the leader only.
func produceHistory(b *testing.B, brokers []string, topic string, n int) benchTopic {
	ctx, cancel := context.WithTimeout(context.Background(), benchProduceTimeout)
	defer cancel()
	w := &kafka.Writer{
		Addr: kafka.TCP(brokers...), Topic: topic, Balancer: benchBalancer,
		// 1 MiB batches (the broker's default message.max.bytes) of about
		// 9,000 events each.
		BatchSize: 20_000, BatchBytes: 1 << 20, BatchTimeout: 10 * time.Millisecond,
		RequiredAcks: kafka.RequireOne,
	}
	defer w.Close()
	g := newBenchGen(1)
	now := time.Now().Truncate(time.Minute)
	t0 := now.Add(-benchSpan).UnixMilli()
	span := benchSpan.Milliseconds()
	start := time.Now()
	// Two chunks in flight: one is generated while the other is written.
	const chunk = 60_000
	type job struct {
		msgs []kafka.Message
	}
	jobs := make(chan job, 1)
	errc := make(chan error, 1)
	go func() {
		var err error
		for j := range jobs {
			if err == nil {
				err = w.WriteMessages(ctx, j.msgs...)
			}
		}
		errc <- err
	}()
	for i := 0; i < n; i += chunk {
		m := min(chunk, n-i)
		msgs := make([]kafka.Message, m)
		buf := make([]byte, 0, m*96)
		for j := range msgs {
			ts := t0 + int64(i+j)*span/int64(n) - g.rng.Int64N(benchJitter.Milliseconds())
			msgs[j], buf = g.message(buf, ts)
		}
		jobs <- job{msgs}
	}
	close(jobs)
	if err := <-errc; err != nil {
		b.Fatalf("produce %d events to %s: %v", n, topic, err)
	}
	bt := benchTopic{entities: g.used, produce: time.Since(start)}
	bt.ends = endOffsets(b, brokers, topic)
	for _, e := range bt.ends {
		bt.total += e
	}
	if bt.total < int64(n) {
		b.Fatalf("topic %s holds %d messages after producing %d", topic, bt.total, n)
	}
	return bt
}

// endOffsets asks the broker for the end of each partition.
func endOffsets(b *testing.B, brokers []string, topic string) []int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var reqs []kafka.OffsetRequest
	for p := range benchPartitions {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		b.Fatalf("list offsets of %s: %v", topic, err)
	}
	ends := make([]int64, benchPartitions)
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			b.Fatalf("list offsets of %s/%d: %v", topic, po.Partition, po.Error)
		}
		ends[po.Partition] = po.LastOffset
	}
	return ends
}

// readAll reads every message of the topic with one kafka-go reader per
// partition, configured as the partition workers' readers are, and does
// nothing with them: the rate Kafka and kafka-go allow on this machine.
func readAll(b *testing.B, brokers []string, topic string, ends []int64) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), benchIngestTimeout)
	defer cancel()
	start := time.Now()
	readers := make([]*kafka.Reader, len(ends))
	errs := make([]error, len(ends))
	var wg sync.WaitGroup
	for p, end := range ends {
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: brokers, Topic: topic, Partition: p,
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond,
		})
		readers[p] = r
		wg.Go(func() {
			if end == 0 {
				return
			}
			if err := r.SetOffset(kafka.FirstOffset); err != nil {
				errs[p] = err
				return
			}
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					errs[p] = fmt.Errorf("read %s/%d: %w", topic, p, err)
					return
				}
				if m.Offset >= end-1 {
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	for _, r := range readers {
		r.Close()
	}
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	return took
}

// aggregateAll reads every message of the topic as readAll does and, per
// partition, decodes and aggregates it as ingest does, in batches of the
// size ingest reaches while behind (GroupConfig.MaxBatchSize): late check,
// routing to entities, merging each entity's events into tile states and
// encoding them, as for writes to hashes that hold nothing yet. Everything
// but Redis: the second baseline, where ingest's own CPU goes.
func aggregateAll(b *testing.B, brokers []string, topic string, ends []int64, a *Applier) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), benchIngestTimeout)
	defer cancel()
	var cfg GroupConfig
	cfg.defaults()
	start := time.Now()
	readers := make([]*kafka.Reader, len(ends))
	errs := make([]error, len(ends))
	var wg sync.WaitGroup
	for p, end := range ends {
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: brokers, Topic: topic, Partition: p,
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond,
		})
		readers[p] = r
		ps := a.partition(p)
		wg.Go(func() {
			if end == 0 {
				return
			}
			if err := r.SetOffset(kafka.FirstOffset); err != nil {
				errs[p] = err
				return
			}
			batch := make([]kafka.Message, 0, cfg.MaxBatchSize)
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					errs[p] = fmt.Errorf("read %s/%d: %w", topic, p, err)
					return
				}
				batch = append(batch, m)
				last := m.Offset >= end-1
				if len(batch) == cfg.MaxBatchSize || last {
					if err := aggregateBatch(a, ps, topic, p, batch); err != nil {
						errs[p] = err
						return
					}
					batch = batch[:0]
				}
				if last {
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	for _, r := range readers {
		r.Close()
	}
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	return took
}

// aggregateBatch is Applier.Apply without the store: the updates are
// merged with the empty state, as blind writes are, and not written.
func aggregateBatch(a *Applier, ps *partitionState, topic string, p int, msgs []kafka.Message) error {
	hw, has := a.prepare(ps, topic, p, msgs, -1)
	var fields [][]byte
	for i := range ps.b.updates {
		u := &ps.b.updates[i]
		if cap(fields) < len(u.Fields) {
			fields = make([][]byte, len(u.Fields))
		}
		st := online.State{Blind: true, Fences: []int64{online.NoOffset}, Fields: fields[:len(u.Fields)]}
		if _, err := u.Merge(st); err != nil {
			return err
		}
	}
	ps.hw, ps.has = hw, has
	if a.dedup {
		ps.ids.commit(hw - a.lateness)
	}
	return nil
}

// benchHandler is the applier, noting when the group assigned each
// partition and how long each Apply took.
type benchHandler struct {
	PartitionHandler
	mu      sync.Mutex
	resumed map[int]time.Time
	applies []time.Duration
	msgs    int
}

func newBenchHandler(h PartitionHandler) *benchHandler {
	return &benchHandler{PartitionHandler: h, resumed: map[int]time.Time{}}
}

func (h *benchHandler) Resume(ctx context.Context, topic string, p int) (int64, error) {
	h.mu.Lock()
	if _, ok := h.resumed[p]; !ok {
		h.resumed[p] = time.Now()
	}
	h.mu.Unlock()
	return h.PartitionHandler.Resume(ctx, topic, p)
}

func (h *benchHandler) Apply(ctx context.Context, topic string, p int, msgs []kafka.Message) error {
	start := time.Now()
	err := h.PartitionHandler.Apply(ctx, topic, p, msgs)
	took := time.Since(start)
	h.mu.Lock()
	h.applies = append(h.applies, took)
	h.msgs += len(msgs)
	h.mu.Unlock()
	return err
}

// assigned returns the time every partition was first resumed, or false.
func (h *benchHandler) assigned() (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var last time.Time
	for p := range benchPartitions {
		at, ok := h.resumed[p]
		if !ok {
			return time.Time{}, false
		}
		if at.After(last) {
			last = at
		}
	}
	return last, true
}

// applyStats describes the Apply calls so far.
func (h *benchHandler) applyStats() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.applies) == 0 {
		return "no Apply calls"
	}
	d := slices.Clone(h.applies)
	slices.Sort(d)
	return fmt.Sprintf("%d Apply calls of %.1f messages on average, taking p50 %.1fms p99 %.1fms max %.1fms",
		len(d), float64(h.msgs)/float64(len(d)), ms(quantile(d, 0.5)), ms(quantile(d, 0.99)), ms(quantile(d, 1)))
}

// quantile returns the f quantile of sorted (nearest rank), 0 if empty.
func quantile(sorted []time.Duration, f float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(f*float64(len(sorted))))]
}

// ms returns d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// startIngest runs the group with the production defaults (batches of
// 1000, linger 5ms, the 256 MiB memory budget of featurestore ingest's
// --buffer-memory) until stop is called, or the benchmark ends.
func startIngest(b *testing.B, brokers []string, topic, group string, h PartitionHandler) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunGroup(ctx, GroupConfig{Brokers: brokers, GroupID: group, Topic: topic, SessionTimeout: 6 * time.Second,
			Memory: NewMemoryBudget(256 << 20)}, h)
	}()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				b.Errorf("RunGroup: %v", err)
			}
		case <-time.After(benchStopTimeout):
			b.Errorf("RunGroup did not stop within %s", benchStopTimeout)
		}
	})
	b.Cleanup(stop) // also when the benchmark fails half-way
	return stop
}

// applied returns how many messages of topic the positions say are
// applied.
func applied(ctx context.Context, pos *Positions, topic string, ends []int64) (int64, error) {
	var n int64
	for p := range ends {
		got, ok, err := pos.Load(ctx, benchSource, topic, p)
		if err != nil {
			return 0, err
		}
		if ok {
			n += got.Offset + 1
		}
	}
	return n, nil
}

// waitApplied polls the positions of topic until every message up to ends is
// applied, for at most d.
func waitApplied(pos *Positions, topic string, ends []int64, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var want int64
	for _, e := range ends {
		want += e
	}
	for {
		n, err := applied(ctx, pos, topic, ends)
		if err == nil && n >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ingest applied %d of %d events within %s (last error: %v)", n, want, d, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// benchStore returns the online store of the benchmarks on rc, waiting
// for the replicas benchWaitReplicasEnv asks for.
func benchStore(b *testing.B, rc *redis.Client) *online.Store {
	var opts online.Options
	if s := os.Getenv(benchWaitReplicasEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			b.Fatalf("%s=%q: want a number of replicas", benchWaitReplicasEnv, s)
		}
		opts.Replicas = n
	}
	return online.New(rc, opts)
}

// benchRedis is the client of the benchmarks, as the binary makes it.
func benchRedis(b *testing.B) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(b), ContextTimeoutEnabled: true})
	b.Cleanup(func() { c.Close() })
	return c
}

// redisInfo returns the numeric fields of INFO section.
func redisInfo(ctx context.Context, rc *redis.Client, section string) (map[string]float64, error) {
	s, err := rc.Info(ctx, section).Result()
	if err != nil {
		return nil, fmt.Errorf("redis info %s: %w", section, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[k] = f
		}
	}
	return out, nil
}

// redisCPU returns the CPU seconds Redis has used, user and system.
func redisCPU(ctx context.Context, rc *redis.Client) (float64, error) {
	info, err := redisInfo(ctx, rc, "cpu")
	if err != nil {
		return 0, err
	}
	return info["used_cpu_user"] + info["used_cpu_sys"], nil
}

// redisUsedMemory returns INFO's used_memory once the frees of earlier
// UNLINKs are done.
func redisUsedMemory(ctx context.Context, rc *redis.Client) (float64, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := redisInfo(ctx, rc, "memory")
		if err != nil {
			return 0, err
		}
		if info["lazyfree_pending_objects"] == 0 || time.Now().After(deadline) {
			return info["used_memory"], nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// scanKeys returns the keys that match pattern.
func scanKeys(ctx context.Context, rc *redis.Client, pattern string) ([]string, error) {
	var keys []string
	iter := rc.Scan(ctx, 0, pattern, 5000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("scan %s: %w", pattern, err)
	}
	return keys, nil
}

// benchProject returns a fresh project name whose keys are removed when
// the benchmark ends, also when it fails half-way.
func benchProject(b *testing.B, rc *redis.Client) string {
	project := testenv.UniqueName(b, "p")
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		keys, err := viewKeys(ctx, rc, project)
		if err == nil {
			err = dropProject(ctx, rc, project, keys)
		}
		if err != nil {
			b.Logf("remove keys of project %s: %v", project, err)
		}
	})
	return project
}

// viewKeys returns the online hashes of the benchmark view in project.
func viewKeys(ctx context.Context, rc *redis.Client, project string) ([]string, error) {
	return scanKeys(ctx, rc, "fs:{*}:"+project+":"+benchView)
}

// meanMemoryUsage returns the mean MEMORY USAGE (all of each hash, SAMPLES
// 0) of up to sample keys, taken in SCAN order, which is the hash table's
// and unrelated to the cards.
func meanMemoryUsage(ctx context.Context, rc *redis.Client, keys []string, sample int) (float64, error) {
	keys = keys[:min(sample, len(keys))]
	if len(keys) == 0 {
		return 0, nil
	}
	pipe := rc.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.MemoryUsage(ctx, k, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("memory usage: %w", err)
	}
	var sum float64
	for _, c := range cmds {
		sum += float64(c.Val())
	}
	return sum / float64(len(keys)), nil
}

// dropProject unlinks the online hashes and positions of project.
func dropProject(ctx context.Context, rc *redis.Client, project string, keys []string) error {
	pos, err := scanKeys(ctx, rc, "fs:{pos."+project+".*")
	if err != nil {
		return err
	}
	keys = append(keys, pos...)
	for len(keys) > 0 {
		n := min(1000, len(keys))
		if err := rc.Unlink(ctx, keys[:n]...).Err(); err != nil {
			return fmt.Errorf("unlink keys of %s: %w", project, err)
		}
		keys = keys[n:]
	}
	return nil
}

// processCPU returns the CPU seconds this process has used (user and
// system), or false where /proc is not there.
func processCPU() (float64, bool) {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14 and stime 15, in clock ticks of
	// 1/100 s (USER_HZ, 100 on every Linux).
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return (utime + stime) / 100, true
}
