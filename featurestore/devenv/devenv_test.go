package devenv

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
)

// testCtx bounds a test so that it stops by itself, whatever hangs.
func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: testLogLevel}))
}

func startEnv(ctx context.Context, t *testing.T, opts Options) *Env {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	env, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return env
}

// record is one consumed Kafka record.
type record struct {
	Partition int
	Offset    int64
	Key       string
	Value     string
}

func produce(ctx context.Context, t *testing.T, brokers []string, topic string, from, n int) {
	t.Helper()
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		BatchTimeout: 10 * time.Millisecond,
		RequiredAcks: kafka.RequireAll,
	}
	defer w.Close()
	msgs := make([]kafka.Message, 0, n)
	for i := from; i < from+n; i++ {
		msgs = append(msgs, kafka.Message{
			Key:   fmt.Appendf(nil, "key-%04d", i),
			Value: fmt.Appendf(nil, "value-%04d", i),
		})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce %d messages to %s: %v", n, topic, err)
	}
}

// consumeGroup consumes topic as the only member of group, the way ingest
// does: Next, one reader per assigned partition started with
// Generation.Start at the committed offset (or the first offset), then
// CommitOffsets. It reads until want records arrived, waits quiet to catch
// any extra (duplicate) delivery, commits what it read and leaves the group.
// It returns the records and the offsets it committed.
func consumeGroup(ctx context.Context, t *testing.T, brokers []string, topic, group string, want int, quiet time.Duration) ([]record, map[int]int64) {
	t.Helper()
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                    group,
		Brokers:               brokers,
		Topics:                []string{topic},
		WatchPartitionChanges: true,
		StartOffset:           kafka.FirstOffset,
		HeartbeatInterval:     500 * time.Millisecond,
		SessionTimeout:        6 * time.Second,
		RebalanceTimeout:      6 * time.Second,
		JoinGroupBackoff:      200 * time.Millisecond,
		Timeout:               5 * time.Second,
	})
	if err != nil {
		t.Fatalf("NewConsumerGroup: %v", err)
	}
	defer func() {
		if err := cg.Close(); err != nil {
			t.Errorf("close consumer group: %v", err)
		}
	}()
	gen, err := cg.Next(ctx)
	if err != nil {
		t.Fatalf("join group %s: %v", group, err)
	}

	recs := make(chan record)
	for _, pa := range gen.Assignments[topic] {
		gen.Start(func(gctx context.Context) {
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers:   brokers,
				Topic:     topic,
				Partition: pa.ID,
				MaxWait:   100 * time.Millisecond,
			})
			defer r.Close()
			// pa.Offset is the committed offset, or FirstOffset (-2) if
			// the group never committed for this partition.
			if err := r.SetOffset(pa.Offset); err != nil {
				t.Errorf("partition %d: seek to %d: %v", pa.ID, pa.Offset, err)
				return
			}
			for {
				m, err := r.ReadMessage(gctx) // no GroupID: reads, never commits
				if err != nil {
					if gctx.Err() == nil && ctx.Err() == nil {
						t.Errorf("partition %d: read: %v", pa.ID, err)
					}
					return
				}
				select {
				case recs <- record{m.Partition, m.Offset, string(m.Key), string(m.Value)}:
				case <-gctx.Done():
					return
				}
			}
		})
	}

	var got []record
	next := map[int]int64{}
	var quietC <-chan time.Time
	for done := false; !done; {
		select {
		case r := <-recs:
			got = append(got, r)
			next[r.Partition] = max(next[r.Partition], r.Offset+1)
			if len(got) == want {
				quietC = time.After(quiet)
			}
		case <-quietC:
			done = true
		case <-ctx.Done():
			t.Fatalf("group %s: got %d of %d records before %v", group, len(got), want, ctx.Err())
		}
	}
	if len(next) > 0 {
		if err := gen.CommitOffsets(map[string]map[int]int64{topic: next}); err != nil {
			t.Fatalf("commit offsets %v: %v", next, err)
		}
	}
	return got, next
}

// checkExactly checks that recs are exactly the records key-from..key-to-1,
// each once.
func checkExactly(t *testing.T, recs []record, from, to int) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range recs {
		seen[r.Key]++
		if want := "value" + strings.TrimPrefix(r.Key, "key"); r.Value != want {
			t.Errorf("record %s/%d: value %q, want %q", r.Key, r.Offset, r.Value, want)
		}
	}
	for i := from; i < to; i++ {
		k := fmt.Sprintf("key-%04d", i)
		if seen[k] != 1 {
			t.Errorf("record %s delivered %d times, want once", k, seen[k])
		}
		delete(seen, k)
	}
	if len(seen) > 0 {
		t.Errorf("unexpected records: %v", seen)
	}
}

// newClient returns a kafka-go client with a transport of its own. The
// default, kafka.DefaultTransport, is shared by the whole process and keeps
// connections per address: after a broker restart on the same address its
// first request on a stale connection fails with "unexpected EOF".
func newClient(t *testing.T, broker string) *kafka.Client {
	tr := &kafka.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &kafka.Client{Addr: kafka.TCP(broker), Timeout: 5 * time.Second, Transport: tr}
}

func committedOffsets(ctx context.Context, t *testing.T, broker, group, topic string, partitions int) map[int]int64 {
	t.Helper()
	c := newClient(t, broker)
	parts := make([]int, partitions)
	for i := range parts {
		parts[i] = i
	}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		t.Fatalf("fetch offsets of group %s: %v", group, err)
	}
	if resp.Error != nil {
		t.Fatalf("fetch offsets of group %s: %v", group, resp.Error)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("fetch offset of group %s partition %d: %v", group, p.Partition, p.Error)
		}
		if p.CommittedOffset >= 0 {
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out
}

// partitionEnds returns each partition's end offset (high watermark).
func partitionEnds(ctx context.Context, t *testing.T, broker, topic string) map[int]int64 {
	t.Helper()
	c := newClient(t, broker)
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatalf("metadata of %s: %v", topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		t.Fatalf("metadata of %s: %+v", topic, md.Topics)
	}
	var reqs []kafka.OffsetRequest
	for _, p := range md.Topics[0].Partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	resp, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatalf("list offsets of %s: %v", topic, err)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("list offsets of %s/%d: %v", topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.LastOffset
	}
	return out
}

// readAll reads every record of topic from the first offset, without a group.
func readAll(ctx context.Context, t *testing.T, broker, topic string) []record {
	t.Helper()
	var out []record
	for p, end := range partitionEnds(ctx, t, broker, topic) {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{broker}, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		if err := r.SetOffset(kafka.FirstOffset); err != nil {
			t.Fatalf("seek %s/%d: %v", topic, p, err)
		}
		for off := int64(0); off < end; {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("read %s/%d at %d: %v", topic, p, off, err)
			}
			out = append(out, record{m.Partition, m.Offset, string(m.Key), string(m.Value)})
			off = m.Offset + 1
		}
		r.Close()
	}
	return out
}

func sortRecords(rs []record) []record {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b record) int {
		if a.Partition != b.Partition {
			return a.Partition - b.Partition
		}
		return int(a.Offset - b.Offset)
	})
	return rs
}

func TestKafkaGoConsumerGroup(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	const topic, n = "events", 200
	env := startEnv(ctx, t, Options{Topics: []TopicSpec{{Name: topic, Partitions: 3}}})

	if ends := partitionEnds(ctx, t, env.KafkaBrokers()[0], topic); len(ends) != 3 {
		t.Fatalf("topic %s has partitions %v, want 3", topic, ends)
	}
	produce(ctx, t, env.KafkaBrokers(), topic, 0, n)

	got, committed := consumeGroup(ctx, t, env.KafkaBrokers(), topic, "ingest", n, 500*time.Millisecond)
	checkExactly(t, got, 0, n)
	if len(committed) != 3 {
		t.Errorf("records came from partitions %v, want all 3", slices.Sorted(maps.Keys(committed)))
	}
	if fetched := committedOffsets(ctx, t, env.KafkaBrokers()[0], "ingest", topic, 3); !maps.Equal(fetched, committed) {
		t.Errorf("committed offsets read back as %v, want %v", fetched, committed)
	}

	// A second run of the group resumes at the commits: only new records.
	produce(ctx, t, env.KafkaBrokers(), topic, n, 10)
	got, _ = consumeGroup(ctx, t, env.KafkaBrokers(), topic, "ingest", 10, 500*time.Millisecond)
	checkExactly(t, got, n, n+10)
}

// member is one ingest-like consumer group member that runs until ctx ends:
// every generation, one reader per assigned partition from the committed
// offset, and a commit after each record.
type member struct {
	mu    sync.Mutex
	parts []int // the latest generation's partitions
	gens  int
}

func (m *member) assigned() ([]int, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.parts), m.gens
}

func (m *member) run(ctx context.Context, t *testing.T, brokers []string, topic, group string, out chan<- record) {
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: group, Brokers: brokers, Topics: []string{topic},
		WatchPartitionChanges: true, StartOffset: kafka.FirstOffset,
		HeartbeatInterval: 200 * time.Millisecond, SessionTimeout: 6 * time.Second,
		RebalanceTimeout: 6 * time.Second, JoinGroupBackoff: 200 * time.Millisecond, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Errorf("NewConsumerGroup: %v", err)
		return
	}
	defer cg.Close()
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			return // ctx ended
		}
		var parts []int
		for _, pa := range gen.Assignments[topic] {
			parts = append(parts, pa.ID)
			gen.Start(func(gctx context.Context) {
				r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: pa.ID, MaxWait: 100 * time.Millisecond})
				defer r.Close()
				if err := r.SetOffset(pa.Offset); err != nil {
					t.Errorf("partition %d: seek to %d: %v", pa.ID, pa.Offset, err)
					return
				}
				for {
					msg, err := r.ReadMessage(gctx)
					if err != nil {
						return
					}
					select {
					case out <- record{msg.Partition, msg.Offset, string(msg.Key), string(msg.Value)}:
					case <-gctx.Done():
						return
					}
					// Fails once the generation is over; the new
					// owner then reads the record again.
					_ = gen.CommitOffsets(map[string]map[int]int64{topic: {msg.Partition: msg.Offset + 1}})
				}
			})
		}
		slices.Sort(parts)
		m.mu.Lock()
		m.parts, m.gens = parts, m.gens+1
		m.mu.Unlock()
	}
}

// TestKafkaGoRebalance checks that a second member joining splits the
// partitions and no record is lost. Duplicates around the rebalance are
// allowed: that is Kafka's at-least-once, which the Redis fences absorb.
func TestKafkaGoRebalance(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	const topic, group = "events", "ingest"
	env := startEnv(ctx, t, Options{Topics: []TopicSpec{{Name: topic, Partitions: 3}}})
	brokers := env.KafkaBrokers()

	out := make(chan record)
	mctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	var a, b member
	wg.Go(func() { a.run(mctx, t, brokers, topic, group, out) })

	seen := map[string]int{}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			select {
			case r := <-out:
				seen[r.Key]++
			case <-tick.C:
			case <-ctx.Done():
				pa, ga := a.assigned()
				pb, gb := b.assigned()
				t.Fatalf("waiting for %s: a has %v (gen %d), b has %v (gen %d), %d keys seen", what, pa, ga, pb, gb, len(seen))
			}
		}
	}
	waitFor("a to own all partitions", func() bool { p, _ := a.assigned(); return len(p) == 3 })
	produce(ctx, t, brokers, topic, 0, 30)
	waitFor("30 records", func() bool { return len(seen) == 30 })

	wg.Go(func() { b.run(mctx, t, brokers, topic, group, out) })
	waitFor("a and b to split the partitions", func() bool {
		pa, _ := a.assigned()
		pb, _ := b.assigned()
		return len(pb) > 0 && slices.Equal(slices.Sorted(slices.Values(append(pa, pb...))), []int{0, 1, 2})
	})
	produce(ctx, t, brokers, topic, 30, 60)
	waitFor("90 records", func() bool { return len(seen) == 90 })

	dups := 0
	for k, n := range seen {
		if n > 1 {
			dups += n - 1
			t.Logf("%s delivered %d times", k, n)
		}
	}
	pa, ga := a.assigned()
	pb, gb := b.assigned()
	t.Logf("a: %v after %d generations, b: %v after %d; %d duplicate deliveries", pa, ga, pb, gb, dups)
}

func TestKafkaAutoCreatedTopicHasDefaultPartitions(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	env := startEnv(ctx, t, Options{})
	w := &kafka.Writer{Addr: kafka.TCP(env.KafkaBrokers()...), Topic: "auto", AllowAutoTopicCreation: true, BatchTimeout: time.Millisecond}
	defer w.Close()
	// The first write may race the topic's creation; kafka-go retries.
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("x")}); err != nil {
		t.Fatalf("write to auto-created topic: %v", err)
	}
	if ends := partitionEnds(ctx, t, env.KafkaBrokers()[0], "auto"); len(ends) != DefaultPartitions {
		t.Errorf("auto-created topic has %d partitions, want %d", len(ends), DefaultPartitions)
	}
}

func TestKafkaStatePersistsAcrossRestart(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	dir := t.TempDir()
	const topic, group = "events", "ingest"
	opts := Options{DataDir: dir, Topics: []TopicSpec{{Name: topic, Partitions: 3}}, Logger: testLogger(t)}

	env, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("first Start: %v", err)
	}
	produce(ctx, t, env.KafkaBrokers(), topic, 0, 100)
	before, committed := consumeGroup(ctx, t, env.KafkaBrokers(), topic, group, 100, 200*time.Millisecond)
	checkExactly(t, before, 0, 100)
	produce(ctx, t, env.KafkaBrokers(), topic, 100, 50) // produced, not consumed
	ends := partitionEnds(ctx, t, env.KafkaBrokers()[0], topic)
	all := readAll(ctx, t, env.KafkaBrokers()[0], topic)
	if err := env.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}

	// Same data directory and address, plus one topic more: the old topic
	// is found, the new one created.
	opts.KafkaAddr = env.KafkaBrokers()[0]
	opts.Topics = append(opts.Topics, TopicSpec{Name: "added"})
	env = startEnv(ctx, t, opts)
	broker := env.KafkaBrokers()[0]

	if got := partitionEnds(ctx, t, broker, topic); !maps.Equal(got, ends) {
		t.Errorf("after restart partition ends %v, want %v", got, ends)
	}
	if got := partitionEnds(ctx, t, broker, "added"); len(got) != DefaultPartitions {
		t.Errorf("topic added at restart has %d partitions, want %d", len(got), DefaultPartitions)
	}
	if got := readAll(ctx, t, broker, topic); !slices.Equal(sortRecords(got), sortRecords(all)) {
		t.Errorf("after restart records differ:\n got %v\nwant %v", sortRecords(got), sortRecords(all))
	}
	if got := committedOffsets(ctx, t, broker, group, topic, 3); !maps.Equal(got, committed) {
		t.Errorf("after restart committed offsets %v, want %v", got, committed)
	}
	// The group resumes at its commits: exactly the 50 records it had not read.
	after, _ := consumeGroup(ctx, t, env.KafkaBrokers(), topic, group, 50, 500*time.Millisecond)
	checkExactly(t, after, 100, 150)
}

// crashChildEnv names the data directory of the child process of
// TestKafkaStateSurvivesKill; unset, TestCrashChild does nothing.
const crashChildEnv = "DEVENV_CRASH_CHILD_DIR"

// TestCrashChild is the child process of TestKafkaStateSurvivesKill: it
// produces, consumes and commits, prints what it saw, and waits to be killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("child process of TestKafkaStateSurvivesKill")
	}
	ctx := testCtx(t, 60*time.Second)
	env, err := Start(ctx, Options{DataDir: dir, Topics: []TopicSpec{{Name: "events"}}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	produce(ctx, t, env.KafkaBrokers(), "events", 0, 60)
	recs, committed := consumeGroup(ctx, t, env.KafkaBrokers(), "events", "ingest", 60, 100*time.Millisecond)
	produce(ctx, t, env.KafkaBrokers(), "events", 60, 20)
	all := readAll(ctx, t, env.KafkaBrokers()[0], "events")
	if t.Failed() {
		return
	}
	out, _ := json.Marshal(struct {
		Consumed  []record
		All       []record
		Committed map[int]int64
	}{recs, all, committed})
	fmt.Printf("CHILD %s\n", out)
	<-ctx.Done() // killed long before
}

func TestKafkaStateSurvivesKill(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("in the child")
	}
	ctx := testCtx(t, 90*time.Second)
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	cmd.Stderr = t.Output()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	var child struct {
		Consumed  []record
		All       []record
		Committed map[int]int64
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "CHILD "); ok {
			if err := json.Unmarshal([]byte(line), &child); err != nil {
				t.Fatalf("child output: %v", err)
			}
			break
		}
		t.Logf("child: %s", sc.Text())
	}
	if child.All == nil {
		_ = cmd.Wait()
		t.Fatalf("child exited without reporting its records")
	}
	// SIGKILL: no Close, nothing flushed or saved at shutdown.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	_ = cmd.Wait()

	env := startEnv(ctx, t, Options{DataDir: dir, Topics: []TopicSpec{{Name: "events"}}})
	broker := env.KafkaBrokers()[0]
	if got := readAll(ctx, t, broker, "events"); !slices.Equal(sortRecords(got), sortRecords(child.All)) {
		t.Errorf("after kill records differ:\n got %v\nwant %v", sortRecords(got), sortRecords(child.All))
	}
	if got := committedOffsets(ctx, t, broker, "ingest", "events", DefaultPartitions); !maps.Equal(got, child.Committed) {
		t.Errorf("after kill committed offsets %v, want %v", got, child.Committed)
	}
	after, _ := consumeGroup(ctx, t, env.KafkaBrokers(), "events", "ingest", 20, 500*time.Millisecond)
	checkExactly(t, after, 60, 80)
}

func TestRedisStandIn(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	env := startEnv(ctx, t, Options{})
	rdb := redis.NewClient(&redis.Options{Addr: env.RedisAddr()})
	defer rdb.Close()

	t.Run("lua", func(t *testing.T) {
		// Script.Run tries EVALSHA and falls back to EVAL on NOSCRIPT,
		// so both paths run.
		s := redis.NewScript(`
			redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
			return redis.call('HGET', KEYS[1], ARGV[1])`)
		for i, want := range []string{"5", "10"} {
			got, err := s.Run(ctx, rdb, []string{"fs:{e1}:tiles"}, "count", 5).Text()
			if err != nil || got != want {
				t.Errorf("run %d: got %q, %v; want %q", i, got, err, want)
			}
		}
		if got, err := rdb.EvalSha(ctx, s.Hash(), []string{"fs:{e1}:tiles"}, "count", 1).Text(); err != nil || got != "11" {
			t.Errorf("EVALSHA: got %q, %v; want 11", got, err)
		}
	})

	t.Run("pipeline", func(t *testing.T) {
		for _, pipe := range []redis.Pipeliner{rdb.Pipeline(), rdb.TxPipeline()} {
			set := pipe.HSet(ctx, "fs:{e2}:last", "f", "v")
			incr := pipe.IncrBy(ctx, "fs:{e2}:n", 2)
			get := pipe.HGet(ctx, "fs:{e2}:last", "f")
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatalf("exec: %v", err)
			}
			if set.Err() != nil || incr.Val() < 2 || get.Val() != "v" {
				t.Errorf("pipeline results: %v, %v, %v", set, incr, get)
			}
		}
	})

	t.Run("pubsub", func(t *testing.T) {
		sub := rdb.Subscribe(ctx, "registry")
		defer sub.Close()
		if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
			t.Fatalf("subscribe: %v", err)
		}
		if n, err := rdb.Publish(ctx, "registry", "v2").Result(); err != nil || n != 1 {
			t.Fatalf("publish: %d receivers, %v", n, err)
		}
		select {
		case m := <-sub.Channel():
			if m.Channel != "registry" || m.Payload != "v2" {
				t.Errorf("got %+v", m)
			}
		case <-ctx.Done():
			t.Fatal("no message delivered")
		}
	})

	t.Run("pexpire in real time", func(t *testing.T) {
		const ttl = 300 * time.Millisecond
		if err := rdb.Set(ctx, "fs:{e3}:x", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if ok, err := rdb.PExpire(ctx, "fs:{e3}:x", ttl).Result(); err != nil || !ok {
			t.Fatalf("PEXPIRE: %v, %v", ok, err)
		}
		// PEXPIREAT takes a wall-clock deadline; it must agree with the
		// ticking clock.
		if err := rdb.Set(ctx, "fs:{e3}:y", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.PExpireAt(ctx, "fs:{e3}:y", time.Now().Add(ttl)).Err(); err != nil {
			t.Fatal(err)
		}
		set := time.Now()
		for _, k := range []string{"fs:{e3}:x", "fs:{e3}:y"} {
			if n := rdb.Exists(ctx, k).Val(); n != 1 {
				t.Fatalf("%s gone right after PEXPIRE", k)
			}
		}
		for rdb.Exists(ctx, "fs:{e3}:x", "fs:{e3}:y").Val() > 0 {
			if time.Since(set) > ttl+2*time.Second {
				t.Fatalf("keys still there %v after a %v PEXPIRE", time.Since(set), ttl)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if gone := time.Since(set); gone < ttl-50*time.Millisecond {
			t.Errorf("keys expired after %v, before their %v TTL", gone, ttl)
		}
	})
}

func TestStartErrors(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	dir := t.TempDir()
	first := startEnv(ctx, t, Options{DataDir: dir})

	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"kafka port taken", Options{KafkaAddr: first.KafkaBrokers()[0]}, "start kafka stand-in on " + first.KafkaBrokers()[0] + ": address already in use"},
		{"redis port taken", Options{RedisAddr: first.RedisAddr()}, "start redis stand-in on " + first.RedisAddr() + ": address already in use"},
		{"data dir in use", Options{DataDir: dir}, "data directory " + dir + " is in use by another process"},
		{"wildcard kafka address", Options{KafkaAddr: ":9092"}, `kafka address ":9092": the dev stand-ins listen on loopback only`},
		{"remote redis address", Options{RedisAddr: "10.0.0.1:6379"}, `redis address "10.0.0.1:6379": the dev stand-ins listen on loopback only`},
		{"no port", Options{KafkaAddr: "127.0.0.1"}, `kafka address "127.0.0.1": address 127.0.0.1: missing port in address`},
		{"unnamed topic", Options{Topics: []TopicSpec{{Partitions: 1}}}, "topic with an empty name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Start(ctx, tc.opts)
			if err == nil {
				env.Close()
				t.Fatalf("Start succeeded, want error %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}

	// A failed Start leaves nothing behind: the Kafka stand-in that
	// started before Redis failed is closed again, so its port is free.
	kafkaAddr := freeAddr(t)
	if _, err := Start(ctx, Options{KafkaAddr: kafkaAddr, RedisAddr: first.RedisAddr()}); err == nil {
		t.Fatal("Start succeeded on a taken redis port")
	}
	ln, err := net.Listen("tcp", kafkaAddr)
	if err != nil {
		t.Fatalf("kafka port still taken after failed Start: %v", err)
	}
	ln.Close()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestCloseIsIdempotentAndConcurrent(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	env, err := Start(ctx, Options{DataDir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: env.RedisAddr(), MaxRetries: -1})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	t0 := time.Now()
	for i := range errs {
		wg.Go(func() { errs[i] = env.Close() })
	}
	wg.Wait()
	if d := time.Since(t0); d > CloseTimeout {
		t.Errorf("Close took %v", d)
	}
	for _, err := range errs {
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if err := env.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	// Both ports are released.
	for _, addr := range []string{env.KafkaBrokers()[0], env.RedisAddr()} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("%s still taken after Close: %v", addr, err)
			continue
		}
		ln.Close()
	}
	if err := rdb.Ping(ctx).Err(); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ping after Close: %v, want a connection error", err)
	}
}

var testLogLevel = func() slog.Level {
	if os.Getenv("DEVENV_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}()

func TestStartUnreadableDataDir(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	dir := t.TempDir()
	env := startEnv(ctx, t, Options{DataDir: dir, Topics: []TopicSpec{{Name: "events"}}})
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kafka", "topics.json"), []byte("{garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Start(ctx, Options{DataDir: dir})
	want := "start kafka stand-in from data directory " + filepath.Join(dir, "kafka") + " (remove the whole data directory " + dir + ", not only its kafka directory, to start afresh): loading persisted state: parsing topics.json"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Start on a damaged data directory: %v, want an error containing %q", err, want)
	}
}
