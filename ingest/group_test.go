package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/devenv"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
)

// fencedHandler is an in-memory PartitionHandler that keeps, like the online
// store, the highest applied offset per partition, and counts how often each
// message took effect.
type fencedHandler struct {
	mu      sync.Mutex
	fence   map[int]int64
	applied map[[2]int64]int
	failFor int   // fail this many Apply calls first (an outage)
	failErr error // the error of those calls; "store unavailable" if nil
	calls   int
	// resumeErr, if not nil, is what every Resume call returns (the
	// positions unreadable).
	resumeErr error
}

func newFencedHandler() *fencedHandler {
	return &fencedHandler{fence: map[int]int64{}, applied: map[[2]int64]int{}}
}

func (h *fencedHandler) Resume(_ context.Context, _ string, p int) (int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.resumeErr != nil {
		return 0, h.resumeErr
	}
	if f, ok := h.fence[p]; ok {
		return f + 1, nil
	}
	return kafka.FirstOffset, nil
}

func (h *fencedHandler) Apply(_ context.Context, _ string, p int, msgs []kafka.Message) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.failFor > 0 {
		h.failFor--
		if h.failErr != nil {
			return h.failErr
		}
		return errors.New("store unavailable")
	}
	for _, m := range msgs {
		if m.Partition != p {
			return fmt.Errorf("message of partition %d in a batch of %d", m.Partition, p)
		}
		if f, ok := h.fence[p]; ok && m.Offset <= f {
			continue
		}
		h.applied[[2]int64{int64(p), m.Offset}]++
		h.fence[p] = m.Offset
	}
	return nil
}

func (h *fencedHandler) total() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.applied)
}

// check verifies that exactly the produced messages took effect, once each.
func (h *fencedHandler) check(t *testing.T, perPartition map[int]int64) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	want := 0
	for p, n := range perPartition {
		want += int(n)
		for off := int64(0); off < n; off++ {
			if c := h.applied[[2]int64{int64(p), off}]; c != 1 {
				t.Fatalf("partition %d offset %d applied %d times", p, off, c)
			}
		}
	}
	if len(h.applied) != want {
		t.Fatalf("%d messages applied, want %d", len(h.applied), want)
	}
}

// forEachKafka runs a test against the in-process Kafka and against the
// real broker that make test starts.
func forEachKafka(t *testing.T, test func(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string)) {
	t.Run("kfake", func(t *testing.T) { test(t, startKafka) })
	t.Run("kafka", func(t *testing.T) { test(t, realKafka) })
}

// realKafka creates a topic of its own on the real broker; the group id
// and topic are unique to the test.
func realKafka(t *testing.T, topic string, partitions int) []string {
	brokers := testenv.KafkaBrokers(t)
	testenv.CreateTopic(t, brokers, topic, partitions)
	return brokers
}

func startKafka(t *testing.T, topic string, partitions int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env, err := devenv.Start(ctx, devenv.Options{Topics: []devenv.TopicSpec{{Name: topic, Partitions: partitions}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	return env.KafkaBrokers()
}

// produce writes n messages round-robin and returns how many went to each
// partition.
func produce(t *testing.T, brokers []string, topic string, n int) map[int]int64 {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.RoundRobin{}, RequiredAcks: kafka.RequireAll, BatchSize: 500, BatchTimeout: time.Millisecond}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Value: fmt.Appendf(nil, `{"i":%d}`, i)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	return endOffsetsOf(t, brokers, topic)
}

// endOffsetsOf returns the end offset of each partition of topic.
func endOffsetsOf(t *testing.T, brokers []string, topic string) map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range parts {
		pc, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		last, err := pc.ReadLastOffset()
		pc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[p.ID] = last
	}
	return out
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runGroupAsync(t *testing.T, cfg GroupConfig, h PartitionHandler) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunGroup(ctx, cfg, h) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunGroup: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("RunGroup did not stop")
		}
	}
}

// TestGroupRebalanceTimeout: the coordinator waits, in a rebalance, for
// a member to finish the attempt at its batch in flight and release its
// partitions (ShutdownTimeout each), not only a session timeout (before,
// RebalanceTimeout was SessionTimeout: 10s against an attempt of up to
// 30s); a smaller value given is raised, a larger one kept; and it is what
// the kafka-go group is given.
func TestGroupRebalanceTimeout(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  GroupConfig
		want time.Duration
	}{
		{"defaults", GroupConfig{}, 65 * time.Second},
		{"shutdown timeout", GroupConfig{ShutdownTimeout: 10 * time.Second}, 25 * time.Second},
		{"session timeout longer", GroupConfig{ShutdownTimeout: time.Second, SessionTimeout: 30 * time.Second}, 30 * time.Second},
		{"too small raised", GroupConfig{RebalanceTimeout: 10 * time.Second}, 65 * time.Second},
		{"larger kept", GroupConfig{RebalanceTimeout: 5 * time.Minute}, 5 * time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.defaults()
			if cfg.RebalanceTimeout != tt.want {
				t.Errorf("RebalanceTimeout %s, want %s", cfg.RebalanceTimeout, tt.want)
			}
			if got := cfg.consumerGroup(cfg.Logger).RebalanceTimeout; got != tt.want {
				t.Errorf("kafka-go's RebalanceTimeout %s, want %s", got, tt.want)
			}
		})
	}
}

// A stop mid-stream and a restart from the handler's fences apply every
// message exactly once, whatever Kafka's committed offsets say.
func TestRunGroupStopAndResume(t *testing.T) { forEachKafka(t, testRunGroupStopAndResume) }

func testRunGroupStopAndResume(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	topic := testenv.UniqueName(t, "events")
	brokers := kafkaFor(t, topic, 3)
	h := newFencedHandler()
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 100, SessionTimeout: 6 * time.Second}
	produce(t, brokers, topic, 3000)
	stop := runGroupAsync(t, cfg, h)
	waitFor(t, "some progress", 30*time.Second, func() bool { return h.total() > 0 })
	stop()
	more := produce(t, brokers, topic, 600)
	stop = runGroupAsync(t, cfg, h)
	waitFor(t, "all messages", 30*time.Second, func() bool { return h.total() >= 3600 })
	stop()
	h.check(t, more) // end offsets: all 3600 messages
}

// failureCounter is a fencedHandler that counts the failed attempts the
// partition worker records (failureRecorder).
type failureCounter struct {
	*fencedHandler
	failures atomic.Int64
}

func (h *failureCounter) recordApplyFailure(int) { h.failures.Add(1) }

// While the store fails, the partition pauses and retries the same batch,
// each failed attempt counted; nothing is lost when it recovers. Failures
// of a moment leave the service ready; failing for longer (failingAfter)
// makes it not ready, naming the partition, until a batch is applied.
func TestRunGroupRetriesFailedBatches(t *testing.T) {
	forEachKafka(t, testRunGroupRetriesFailedBatches)
}

func testRunGroupRetriesFailedBatches(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	topic := testenv.UniqueName(t, "events")
	brokers := kafkaFor(t, topic, 2)
	h := &failureCounter{fencedHandler: newFencedHandler()}
	h.failFor = 5
	produce(t, brokers, topic, 500)
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, SessionTimeout: 6 * time.Second}
	ready := &Readiness{failingAfter: time.Second}
	ready.start(1)
	ready.track("s", topic, &cfg)
	ready.allStarted()
	// The five failures take a fraction of failingAfter: no probe may see
	// them.
	var flapped atomic.Value
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for sleep(watchCtx, 5*time.Millisecond) {
			if ok, why := ready.Ready(); !ok && strings.Contains(why, "applying a batch") {
				flapped.Store(why)
			}
		}
	}()
	stop := sync.OnceFunc(runGroupAsync(t, cfg, h))
	defer stop()
	waitFor(t, "all messages", 30*time.Second, func() bool { return h.total() >= 500 })
	stopWatch()
	<-watched
	if why := flapped.Load(); why != nil {
		t.Errorf("not ready during failures of a moment: %q", why)
	}
	if n := h.failures.Load(); n != 5 {
		t.Errorf("%d failed attempts recorded, want 5", n)
	}
	if ok, why := ready.Ready(); !ok {
		t.Errorf("not ready after the failures: %q", why)
	}

	// The store fails for longer than failingAfter.
	h.mu.Lock()
	h.failFor = 1 << 30
	h.mu.Unlock()
	counts := produce(t, brokers, topic, 100)
	const says = "(source s): applying a batch has failed"
	waitFor(t, "not ready saying "+says, 30*time.Second, func() bool {
		ok, why := ready.Ready()
		return !ok && strings.Contains(why, says) && strings.Contains(why, "topic "+topic+" partition ") && strings.HasSuffix(why, ": store unavailable")
	})
	h.mu.Lock()
	h.failFor = 0
	h.mu.Unlock()
	waitFor(t, "all messages", 30*time.Second, func() bool { return h.total() >= 600 })
	waitFor(t, "ready again", 30*time.Second, func() bool { ok, _ := ready.Ready(); return ok })
	stop()
	h.check(t, counts)
}

// A partition whose resume keeps failing (its positions unreadable while
// Redis answers PINGs: a hash that does not decode, a script refused)
// reads nothing, so the service is not ready once it has failed for longer
// than failingAfter, naming the partition and the error; once a resume
// succeeds it is ready again and nothing is lost.
func TestRunGroupResumeFailingUnready(t *testing.T) {
	topic := testenv.UniqueName(t, "events")
	brokers := startKafka(t, topic, 2)
	h := newFencedHandler()
	h.resumeErr = errors.New("positions do not decode")
	counts := produce(t, brokers, topic, 200)
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, SessionTimeout: 6 * time.Second}
	ready := &Readiness{failingAfter: time.Second}
	ready.start(1)
	ready.track("s", topic, &cfg)
	ready.allStarted()
	stop := sync.OnceFunc(runGroupAsync(t, cfg, h))
	defer stop()
	const says = "(source s): resuming the partition has failed"
	waitFor(t, "not ready saying "+says, 30*time.Second, func() bool {
		ok, why := ready.Ready()
		return !ok && strings.Contains(why, says) && strings.Contains(why, "topic "+topic+" partition ") && strings.HasSuffix(why, ": positions do not decode")
	})
	h.mu.Lock()
	h.resumeErr = nil
	h.mu.Unlock()
	waitFor(t, "all messages", 30*time.Second, func() bool { return h.total() >= 200 })
	waitFor(t, "ready again", 30*time.Second, func() bool { ok, _ := ready.Ready(); return ok })
	stop()
	h.check(t, counts)
}

// TestCorruptStateLoggedAsError: a batch that fails on a hash that does not
// decode is logged at error level, saying the partition waits for the hash
// to be repaired: an outage's retries are warnings, but this one does not
// end by itself.
func TestCorruptStateLoggedAsError(t *testing.T) {
	topic := testenv.UniqueName(t, "corrupt")
	brokers := startKafka(t, topic, 1)
	h := newFencedHandler()
	h.failFor, h.failErr = 2, fmt.Errorf("apply online state: merge fs:{x}:p:v: %w: unknown version 103", window.ErrCorrupt)
	produce(t, brokers, topic, 10)
	logs := &logRecords{level: slog.LevelError}
	stop := runGroupAsync(t, GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		SessionTimeout: 6 * time.Second, Logger: slog.New(logs)}, h)
	waitFor(t, "all messages", 30*time.Second, func() bool { return h.total() >= 10 })
	stop()
	if !logs.has("does not decode") {
		t.Errorf("no error logged about the corrupt hash; logged: %q", logs.msgs)
	}
}

// Two members share the partitions; when one leaves, the other takes its
// partitions over from the fences.
func TestRunGroupRebalance(t *testing.T) {
	if testing.Short() {
		t.Skip("rebalances take several session timeouts")
	}
	forEachKafka(t, testRunGroupRebalance)
}

func testRunGroupRebalance(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	topic := testenv.UniqueName(t, "events")
	brokers := kafkaFor(t, topic, 4)
	h := newFencedHandler()
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 50, SessionTimeout: 6 * time.Second}
	produce(t, brokers, topic, 2000)
	stopA := runGroupAsync(t, cfg, h)
	waitFor(t, "member A progress", 30*time.Second, func() bool { return h.total() > 0 })
	stopB := runGroupAsync(t, cfg, h)
	produce(t, brokers, topic, 2000)
	time.Sleep(2 * time.Second) // let B join and take partitions
	stopA()
	counts := produce(t, brokers, topic, 2000)
	waitFor(t, "all messages", 60*time.Second, func() bool { return h.total() >= 6000 })
	stopB()
	h.check(t, counts)
}

// slowBatch is a fencedHandler whose first Apply after block is set takes
// hold, and that records when that one ended and when each partition was
// resumed.
type slowBatch struct {
	*fencedHandler
	hold    time.Duration
	block   atomic.Bool
	slow    chan int // the slow Apply's partition, once it started
	smu     sync.Mutex
	slowEnd time.Time
	resumed map[int]time.Time
}

func newSlowBatch(hold time.Duration) *slowBatch {
	return &slowBatch{fencedHandler: newFencedHandler(), hold: hold, slow: make(chan int, 1), resumed: map[int]time.Time{}}
}

func (h *slowBatch) Resume(ctx context.Context, topic string, p int) (int64, error) {
	h.smu.Lock()
	if _, ok := h.resumed[p]; !ok {
		h.resumed[p] = time.Now()
	}
	h.smu.Unlock()
	return h.fencedHandler.Resume(ctx, topic, p)
}

func (h *slowBatch) Apply(ctx context.Context, topic string, p int, msgs []kafka.Message) error {
	if h.block.CompareAndSwap(true, false) {
		h.slow <- p
		time.Sleep(h.hold)
		h.smu.Lock()
		h.slowEnd = time.Now()
		h.smu.Unlock()
	}
	return h.fencedHandler.Apply(ctx, topic, p, msgs)
}

// TestRunGroupRebalanceWaitsForBatch: a member still applying a batch when
// a rebalance starts keeps its partition until the batch is applied, and
// joins again as the same member. Before, kafka-go stopped heartbeating
// when the rebalance started and the coordinator expelled the member after
// SessionTimeout: its partition went to another member while the batch was
// still being applied, and it joined again as a new member, which started
// another rebalance (keepAlive, GroupConfig.RebalanceTimeout).
func TestRunGroupRebalanceWaitsForBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("a batch held through a rebalance takes twice the session timeout")
	}
	topic := testenv.UniqueName(t, "events")
	brokers := realKafka(t, topic, 2)
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 1, SessionTimeout: 6 * time.Second}
	a, b := newSlowBatch(12*time.Second), newSlowBatch(0)
	stopA := sync.OnceFunc(runGroupAsync(t, cfg, a))
	defer stopA()
	produce(t, brokers, topic, 10)
	waitFor(t, "member A to apply", 30*time.Second, func() bool { return a.total() >= 10 })
	a.block.Store(true)
	produce(t, brokers, topic, 2)
	p := <-a.slow
	stopB := sync.OnceFunc(runGroupAsync(t, cfg, b))
	defer stopB()
	waitFor(t, "member B to resume a partition", 60*time.Second, func() bool {
		b.smu.Lock()
		defer b.smu.Unlock()
		return len(b.resumed) > 0
	})
	time.Sleep(2 * time.Second) // B resumes all it was given
	a.smu.Lock()
	end := a.slowEnd
	a.smu.Unlock()
	b.smu.Lock()
	defer b.smu.Unlock()
	if at, ok := b.resumed[p]; ok && (end.IsZero() || at.Before(end)) {
		t.Errorf("partition %d resumed by member B at %s, while member A still applied its batch (until %s)", p, at.Format(time.StampMilli), end.Format(time.StampMilli))
	}
	if len(b.resumed) == 2 {
		t.Errorf("member B was given both partitions: member A was expelled from the group")
	}
}

// rewindHandler is a fencedHandler with a second store, a log with a fence
// of its own (as the offline log has), that once loses what it held past an
// offset: its Apply then asks for the partition to be resumed again, and
// Resume goes back to the older of the two fences.
type rewindHandler struct {
	*fencedHandler
	logFence map[int]int64
	logged   map[[2]int64]int
	rewound  bool
	rewindAt int64 // the first batch of partition 0 reaching this offset rewinds
	rewindTo int64 // the log's fence after the rewind
	resumes  int
}

func (h *rewindHandler) Resume(ctx context.Context, topic string, p int) (int64, error) {
	next, _ := h.fencedHandler.Resume(ctx, topic, p)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.resumes++
	if f, ok := h.logFence[p]; ok && (next == kafka.FirstOffset || f+1 < next) {
		return f + 1, nil
	}
	return next, nil
}

func (h *rewindHandler) Apply(ctx context.Context, topic string, p int, msgs []kafka.Message) error {
	if err := h.fencedHandler.Apply(ctx, topic, p, msgs); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if f, ok := h.logFence[0]; p == 0 && !h.rewound && ok && f > h.rewindTo && msgs[len(msgs)-1].Offset >= h.rewindAt {
		// Another writer took the log: it holds what it held up to
		// rewindTo, and nothing this batch adds can go on top of that.
		h.rewound = true
		for off := h.rewindTo + 1; off <= h.logFence[0]; off++ {
			delete(h.logged, [2]int64{0, off})
		}
		h.logFence[0] = h.rewindTo
		return fmt.Errorf("log taken over: %w", ErrResumePartition)
	}
	for _, m := range msgs {
		if f, ok := h.logFence[p]; ok && m.Offset <= f {
			continue
		}
		h.logged[[2]int64{int64(p), m.Offset}]++
		h.logFence[p] = m.Offset
	}
	return nil
}

// A batch that asks for the partition to be resumed again is not retried:
// the partition is read again from the offset Resume gives, and the log
// ends with every message once, none missing.
func TestRunGroupResumesAgain(t *testing.T) { forEachKafka(t, testRunGroupResumesAgain) }

func testRunGroupResumesAgain(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	topic := testenv.UniqueName(t, "events")
	brokers := kafkaFor(t, topic, 2)
	h := &rewindHandler{fencedHandler: newFencedHandler(), logFence: map[int]int64{}, logged: map[[2]int64]int{}, rewindAt: 150, rewindTo: 40}
	counts := produce(t, brokers, topic, 600)
	stop := runGroupAsync(t, GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 25, MaxBatchSize: 25, SessionTimeout: 6 * time.Second}, h)
	waitFor(t, "all messages logged", 30*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.logged) >= 600
	})
	stop()
	h.check(t, counts)
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.rewound || h.resumes < 3 {
		t.Fatalf("rewound %v, %d resumes: want a rewind and a second resume of partition 0", h.rewound, h.resumes)
	}
	for p, n := range counts {
		for off := range n {
			if c := h.logged[[2]int64{int64(p), off}]; c != 1 {
				t.Fatalf("partition %d offset %d logged %d times", p, off, c)
			}
		}
	}
}

// TestRunGroupPicksUpNewPartitions (real Kafka): partitions added to the
// topic while the group runs are assigned and read from their start, every
// message of the old and the new partitions applied once.
func TestRunGroupPicksUpNewPartitions(t *testing.T) {
	topic := testenv.UniqueName(t, "grow")
	brokers := realKafka(t, topic, 2)
	h := newFencedHandler()
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 100, SessionTimeout: 6 * time.Second}
	produce(t, brokers, topic, 200)
	stop := runGroupAsync(t, cfg, h)
	waitFor(t, "the first 200 messages", 30*time.Second, func() bool { return h.total() >= 200 })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 4}}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil {
		t.Fatalf("grow %s to 4 partitions: %v", topic, err)
	}
	// 50 messages to each new partition, asked for by number: a writer's
	// metadata may not list them yet. A new partition takes a moment to
	// get a leader.
	for _, p := range []int{2, 3} {
		for {
			var recs []kafka.Record
			for i := range 50 {
				recs = append(recs, kafka.Record{Value: kafka.NewBytes(fmt.Appendf(nil, `{"p":%d,"i":%d}`, p, i))})
			}
			res, err := client.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: p, RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(recs...)})
			if err == nil {
				err = res.Error
			}
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("produce to new partition %d: %v", p, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	end := produce(t, brokers, topic, 0) // the end offsets of the four
	waitFor(t, "the new partitions applied", 60*time.Second, func() bool { return h.total() >= 300 })
	stop()
	if len(end) != 4 || end[2] != 50 || end[3] != 50 {
		t.Fatalf("end offsets %v, want 50 in partitions 2 and 3", end)
	}
	h.check(t, end)
}

// RunGroup joins no group before its topic exists, and creates no topic
// (joining would create a misspelt one); it joins once the topic is
// created, and says what it waits for. A missing dead-letter topic is not
// waited for (brokers that create topics create it at the first letter).
func TestRunGroupWaitsForTopics(t *testing.T) {
	defer func(d time.Duration) { topicCheckEvery = d }(topicCheckEvery)
	topicCheckEvery = 50 * time.Millisecond
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "later")
	dlq := topic + ".dlq"
	var mu sync.Mutex
	var missing []string
	inGroup := false
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, DeadLetterTopic: dlq, SessionTimeout: 6 * time.Second,
		OnMissingTopics: func(m []string) { mu.Lock(); missing = m; mu.Unlock() },
		OnGroup:         func(in bool) { mu.Lock(); inGroup = in; mu.Unlock() }}
	state := func() ([]string, bool) { mu.Lock(); defer mu.Unlock(); return missing, inGroup }
	stop := runGroupAsync(t, cfg, newFencedHandler())
	defer stop()
	waitFor(t, "the topic reported missing", 10*time.Second, func() bool { m, _ := state(); return slices.Equal(m, []string{topic}) })
	time.Sleep(500 * time.Millisecond) // several checks
	if m, err := missingTopics(context.Background(), &cfg, []string{topic, dlq}); err != nil || len(m) != 2 {
		t.Fatalf("missing topics %q, %v: the check created a topic", m, err)
	}
	if _, in := state(); in {
		t.Fatal("joined the group before the topic exists")
	}
	testenv.CreateTopic(t, brokers, topic, 2)
	waitFor(t, "the group joined", 30*time.Second, func() bool { m, in := state(); return m == nil && in })
	if m, err := missingTopics(context.Background(), &cfg, []string{dlq}); err != nil || len(m) != 1 {
		t.Errorf("missing topics %q, %v: the dead-letter topic was created by the check", m, err)
	}
}

// With CreateTopics (dev mode's broker), RunGroup creates the missing topic
// and the dead-letter topic instead of waiting.
func TestRunGroupCreatesTopics(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "created")
	var created []string
	joined := make(chan struct{}, 1)
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, DeadLetterTopic: topic + ".dlq", SessionTimeout: 6 * time.Second,
		CreateTopics: func(_ context.Context, topics []string) error {
			created = append(created, topics...)
			for _, name := range topics {
				testenv.CreateTopic(t, brokers, name, 1)
			}
			return nil
		},
		OnGroup: func(in bool) {
			if in {
				select {
				case joined <- struct{}{}:
				default:
				}
			}
		}}
	stop := runGroupAsync(t, cfg, newFencedHandler())
	defer stop()
	select {
	case <-joined:
	case <-time.After(30 * time.Second):
		t.Fatal("did not join the group")
	}
	if want := []string{topic, topic + ".dlq"}; !slices.Equal(created, want) {
		t.Errorf("created %q, want %q", created, want)
	}
}

// releases is a fencedHandler that says when it resumed a partition and
// when it released one (its worker stopped: the generation ended or the
// process stops).
type releases struct {
	*fencedHandler
	resumed, released chan int
}

func (h *releases) Resume(ctx context.Context, topic string, p int) (int64, error) {
	select {
	case h.resumed <- p:
	default:
	}
	return h.fencedHandler.Resume(ctx, topic, p)
}

func (h *releases) Release(_ context.Context, _ string, p int) error {
	select {
	case h.released <- p:
	default:
	}
	return nil
}

// runGroupTimed runs RunGroup until the returned stop is called, which
// returns how long RunGroup took to return once its context ended.
func runGroupTimed(t *testing.T, cfg GroupConfig, h PartitionHandler) (stop func() time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunGroup(ctx, cfg, h) }()
	var took time.Duration
	return sync.OnceValue(func() time.Duration {
		start := time.Now()
		cancel()
		select {
		case err := <-done:
			took = time.Since(start)
			if err != nil {
				t.Errorf("RunGroup: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("RunGroup did not stop")
			took = time.Since(start)
		}
		return took
	})
}

// TestRunGroupStopDuringJoin (real Kafka): a member stopped while kafka-go
// joins the group again, after a rebalance ended its generation, returns at
// once, without waiting for the join to complete, and its consumer group
// is closed rather than abandoned: the join waits for every member of the
// group to join again, and another member may be applying a batch (up to
// ShutdownTimeout, kept alive). kafka-go's ConsumerGroup.Close waits for
// the join, which its Close cannot interrupt; RunGroup took as long to
// return (a soak run saw 9s, once in 40 stops). The subtests stop the
// member in its first join (no member id yet) and in a join after a
// generation. After the stop, the other members share the partitions and
// every message is applied once.
func TestRunGroupStopDuringJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a batch through a rebalance")
	}
	for _, tt := range []struct {
		name  string
		first bool // stop A in its first join rather than a later one
	}{
		{"rejoin", false},
		{"first join", true},
	} {
		t.Run(tt.name, func(t *testing.T) { testRunGroupStopDuringJoin(t, tt.first) })
	}
}

func testRunGroupStopDuringJoin(t *testing.T, first bool) {
	const hold = 15 * time.Second
	topic := testenv.UniqueName(t, "join")
	brokers := realKafka(t, topic, 2)
	fh := newFencedHandler()
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 1, SessionTimeout: 6 * time.Second}
	// B holds a batch for hold once told, delaying its next join by as
	// much.
	b := newSlowBatch(hold)
	b.fencedHandler = fh
	stopB := runGroupTimed(t, cfg, b)
	defer stopB()
	produce(t, brokers, topic, 10)
	waitFor(t, "member B to apply", 30*time.Second, func() bool { return fh.total() >= 10 })

	a := &releases{fencedHandler: fh, resumed: make(chan int, 4), released: make(chan int, 4)}
	logs := &logRecords{level: slog.LevelInfo}
	cfgA := cfg
	cfgA.Logger = slog.New(logs)
	var stopA func() time.Duration
	if !first {
		// A joins and takes a partition of B's.
		stopA = runGroupTimed(t, cfgA, a)
		defer stopA()
		select {
		case <-a.resumed:
		case <-time.After(30 * time.Second):
			t.Fatal("member A resumed no partition")
		}
		time.Sleep(2 * time.Second) // the generation settles
		for len(a.released) > 0 {
			<-a.released
		}
	}
	b.block.Store(true)
	produce(t, brokers, topic, 10)
	select {
	case <-b.slow:
	case <-time.After(30 * time.Second):
		t.Fatal("member B applies no batch")
	}
	if first {
		// A's first join waits for B to join again.
		stopA = runGroupTimed(t, cfgA, a)
		defer stopA()
	} else {
		// C's join starts a rebalance: A's generation ends, A joins
		// again and waits for B.
		stopC := runGroupTimed(t, cfg, fh)
		defer stopC()
		select {
		case <-a.released:
		case <-time.After(30 * time.Second):
			t.Fatal("member A's generation did not end")
		}
	}
	time.Sleep(time.Second) // A's join is sent
	b.smu.Lock()
	if !b.slowEnd.IsZero() {
		t.Fatal("member B's batch ended before member A was stopped")
	}
	b.smu.Unlock()
	took := stopA()
	t.Logf("member A stopped in %s", took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("member A took %s to stop in a join, want less than 3s", took.Round(time.Millisecond))
	}
	// In a join after a generation, A leaves the group, which goes on
	// without it; in its first join, its member id is not known yet, and
	// the join is abandoned.
	want := "left the consumer group while joining it"
	if first {
		want = "closed the consumer group's connections"
	}
	if !logs.has(want) {
		logs.mu.Lock()
		t.Errorf("member A did not log %q; logged %q", want, logs.msgs)
		logs.mu.Unlock()
	}

	// B and the others go on without A.
	counts := produce(t, brokers, topic, 20)
	waitFor(t, "all messages", 90*time.Second, func() bool { return fh.total() >= 40 })
	fh.check(t, counts)
}

// TestGroupConns: the consumer group's connections are forgotten once
// closed (a group opens new ones at each generation), and closing them
// all interrupts a read, ends a dial in progress and refuses new dials.
func TestGroupConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	s := newGroupConns()
	d := s.dialer(nil)
	if d == kafka.DefaultDialer || kafka.DefaultDialer.DialFunc != nil {
		t.Fatal("the default dialer was changed")
	}
	dial := func() net.Conn {
		t.Helper()
		c, err := d.DialFunc(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for range 3 {
		dial().Close()
	}
	if n := s.open(); n != 0 {
		t.Fatalf("%d connections kept after they were closed, want 0", n)
	}
	c := dial()
	read := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); read <- err }()
	s.close()
	select {
	case err := <-read:
		if err == nil {
			t.Error("a read returned no error once the connections were closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read was not interrupted by closing the connections")
	}
	if _, err := d.DialFunc(context.Background(), "tcp", ln.Addr().String()); !errors.Is(err, errGroupConnsClosed) {
		t.Errorf("dial after close: %v, want %v", err, errGroupConnsClosed)
	}

	// A dial in progress (a broker that does not answer) ends too.
	s = newGroupConns()
	d = s.dialer(&kafka.Dialer{DialFunc: func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}})
	dialed := make(chan error, 1)
	go func() { _, err := d.DialFunc(context.Background(), "tcp", "192.0.2.1:9092"); dialed <- err }()
	time.Sleep(10 * time.Millisecond)
	s.close()
	select {
	case err := <-dialed:
		if err == nil {
			t.Error("a dial in progress succeeded once the connections were closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a dial in progress was not ended by closing the connections")
	}
}

// open returns how many connections of s are open.
func (s *groupConns) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// lossHandler is a fencedHandler whose state loses, once, every message
// of partition 0 after offset keep (Redis failed over to a replica that
// lagged), which its idle check then reports as a position gone back.
type lossHandler struct {
	*fencedHandler
	keep    int64
	lost    bool // the loss happened
	checked bool // an idle check saw it
	resumes int
}

func (h *lossHandler) Resume(ctx context.Context, topic string, p int) (int64, error) {
	h.mu.Lock()
	h.resumes++
	h.mu.Unlock()
	return h.fencedHandler.Resume(ctx, topic, p)
}

// lose drops the messages of partition 0 after keep.
func (h *lossHandler) lose() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := range h.applied {
		if k[0] == 0 && k[1] > h.keep {
			delete(h.applied, k)
		}
	}
	h.fence[0], h.lost = h.keep, true
}

func (h *lossHandler) checkIdle(_ context.Context, _ string, p int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p == 0 && h.lost && !h.checked {
		h.checked = true
		return fmt.Errorf("the saved position went back: %w", ErrResumePartition)
	}
	return nil
}

// TestRunGroupIdleCheckResumes: a partition that gets no more messages
// asks its handler, every idleCheck, whether its state is in place; one
// that lost messages since has the partition resumed, and the lost
// messages applied again, without waiting for a new message.
func TestRunGroupIdleCheckResumes(t *testing.T) {
	topic := testenv.UniqueName(t, "idle")
	brokers := realKafka(t, topic, 2)
	h := &lossHandler{fencedHandler: newFencedHandler(), keep: 40}
	counts := produce(t, brokers, topic, 200)
	stop := runGroupAsync(t, GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, SessionTimeout: 6 * time.Second,
		idleCheck: 200 * time.Millisecond}, h)
	defer stop()
	waitFor(t, "all messages applied", 30*time.Second, func() bool { return h.total() == 200 })
	time.Sleep(500 * time.Millisecond) // idle checks that find nothing
	h.mu.Lock()
	resumes := h.resumes
	h.mu.Unlock()
	h.lose()
	waitFor(t, "the lost messages applied again", 30*time.Second, func() bool { return h.total() == 200 })
	h.check(t, counts)
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.checked || h.resumes != resumes+1 {
		t.Fatalf("checked %v, %d resumes after the loss, want the idle check to resume partition 0 once", h.checked, h.resumes-resumes)
	}
}

// TestDeletedTopicNotRecreated: ingest does not create topics
// (docs/operations.md, "Topics are not created by ingest"). A topic deleted
// while ingest runs stays deleted: kafka-go's partition watcher
// (WatchPartitionChanges) and the join that follows it ask for the topic's
// metadata with auto-creation on, so brokers that create topics (Kafka's
// default) used to create it again, with their default partitions and
// replication. Once the topic is created again, ingest joins its group
// again.
func TestDeletedTopicNotRecreated(t *testing.T) {
	forEachKafka(t, testDeletedTopicNotRecreated)
}

func testDeletedTopicNotRecreated(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	topic := testenv.UniqueName(t, "deleted")
	brokers := kafkaFor(t, topic, 3)
	produce(t, brokers, topic, 30)
	defer func(d time.Duration) { topicCheckEvery = d }(topicCheckEvery)
	topicCheckEvery = 50 * time.Millisecond
	h := newFencedHandler()
	var joins atomic.Int32 // generations entered
	stop := runGroupAsync(t, GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, SessionTimeout: 6 * time.Second,
		RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond, OnGroup: func(in bool) {
			if in {
				joins.Add(1)
			}
		}}, h)
	defer stop()
	waitFor(t, "all messages", 30*time.Second, func() bool { return h.total() >= 30 })
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	resp, err := client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil {
		t.Fatalf("delete topic: %v", err)
	}
	deleted := time.Now()
	cfg := &GroupConfig{Brokers: brokers}
	gone := false
	for time.Since(deleted) < 15*time.Second {
		missing, err := missingTopics(ctx, cfg, []string{topic})
		switch {
		case err == nil && len(missing) == 1:
			gone = true
		case err == nil && len(missing) == 0 && gone:
			after := time.Since(deleted).Round(10 * time.Millisecond)
			parts := -1
			time.Sleep(time.Second) // its partitions get leaders
			fresh := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
			if md, err := fresh.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}}); err == nil && len(md.Topics) == 1 {
				parts = len(md.Topics[0].Partitions)
			}
			t.Fatalf("topic %s (3 partitions), deleted while ingest ran, exists again %s after the delete, with %d partitions: ingest created it", topic, after, parts)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !gone {
		t.Fatalf("topic %s never seen deleted", topic)
	}
	before := joins.Load()
	testenv.CreateTopic(t, brokers, topic, 3)
	waitFor(t, "the group joined again once the topic exists again", 30*time.Second, func() bool { return joins.Load() > before })
}
