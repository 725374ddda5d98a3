package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

func TestMemoryBudgetTakeGive(t *testing.T) {
	b := NewMemoryBudget(100)
	if ok, _ := b.take(60, false); !ok {
		t.Fatal("60 of 100 refused")
	}
	ok, freed := b.take(50, false)
	if ok {
		t.Fatal("110 of 100 taken")
	}
	select {
	case <-freed:
		t.Fatal("freed before anything was given back")
	default:
	}
	if ok, _ := b.take(50, true); !ok || b.Used() != 110 {
		t.Fatalf("forced take: %v, used %d, want 110", ok, b.Used())
	}
	b.give(110)
	select {
	case <-freed:
	default:
		t.Fatal("freed not closed when bytes were given back")
	}
	if b.Used() != 0 {
		t.Fatalf("used %d after giving everything back", b.Used())
	}
	b.take(40, false)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewBudgetCollector(b))
	for name, want := range map[string]float64{"featurestore_ingest_buffered_bytes": 40, "featurestore_ingest_buffer_limit_bytes": 100} {
		if v := gaugeValue(t, reg, name); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
}

// budgetHandler is a fencedHandler that records the most bytes of the
// budget in use, and of one batch, at any Apply call, and applies slowly
// enough for the partitions to read ahead.
type budgetHandler struct {
	*fencedHandler
	budget        *MemoryBudget
	mu            sync.Mutex
	maxUsed       int64
	maxBatchBytes int64
}

func (h *budgetHandler) Apply(ctx context.Context, topic string, p int, msgs []kafka.Message) error {
	var n int64
	for _, m := range msgs {
		n += int64(messageSize(m))
	}
	h.mu.Lock()
	h.maxUsed = max(h.maxUsed, h.budget.Used())
	h.maxBatchBytes = max(h.maxBatchBytes, n)
	h.mu.Unlock()
	time.Sleep(2 * time.Millisecond)
	return h.fencedHandler.Apply(ctx, topic, p, msgs)
}

// TestMemoryBudgetBoundsPartitions: partitions far behind, whose batches
// would grow to thousands of messages each, hold together no more than the
// process's budget (plus a message per partition), still apply every
// message exactly once, and give every byte back when they stop.
func TestMemoryBudgetBoundsPartitions(t *testing.T) {
	forEachKafka(t, testMemoryBudgetBoundsPartitions)
}

func testMemoryBudgetBoundsPartitions(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	const (
		partitions = 4
		messages   = 4000
		valueSize  = 2000
		limit      = 64 << 10
	)
	topic := testenv.UniqueName(t, "budget")
	brokers := kafkaFor(t, topic, partitions)
	counts := produceSized(t, brokers, topic, messages, valueSize)
	budget := NewMemoryBudget(limit)
	h := &budgetHandler{fencedHandler: newFencedHandler(), budget: budget}
	stop := runGroupAsync(t, GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 10, MaxBatchSize: 5000,
		SessionTimeout: 6 * time.Second, Memory: budget}, h)
	waitFor(t, "all messages", 60*time.Second, func() bool { return h.total() >= messages })
	stop()
	h.check(t, counts)
	msg := int64(messageSize(kafka.Message{Value: make([]byte, valueSize)}))
	if h.maxUsed > limit+partitions*msg {
		t.Errorf("%d bytes of messages held at once, want at most the budget, %d, plus a message per partition, %d", h.maxUsed, limit, partitions*msg)
	}
	if h.maxBatchBytes > limit+msg {
		t.Errorf("a batch of %d bytes, want at most the budget, %d, plus a message", h.maxBatchBytes, limit)
	}
	if h.maxBatchBytes < limit/8 {
		// The budget, not something else, bounded the batches: they
		// grew while the partitions were behind.
		t.Errorf("largest batch %d bytes: the partitions never read ahead", h.maxBatchBytes)
	}
	if n := budget.Used(); n != 0 {
		t.Errorf("%d bytes of the budget not given back after the group stopped", n)
	}
}

// produceSized writes n messages of size-byte values round-robin and
// returns each partition's end offset.
func produceSized(t *testing.T, brokers []string, topic string, n, size int) map[int]int64 {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.RoundRobin{}, RequiredAcks: kafka.RequireAll, BatchSize: 200, BatchTimeout: time.Millisecond}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		v := fmt.Appendf(nil, `{"i":%d,"pad":"`, i)
		v = append(v, bytes.Repeat([]byte("x"), size-len(v)-2)...)
		msgs[i] = kafka.Message{Value: append(v, `"}`...)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	return endOffsetsOf(t, brokers, topic)
}

// downHandler is a PartitionHandler whose batches all fail, as while
// Redis is down, and that records the buffers it was handed.
type downHandler struct {
	mu     sync.Mutex
	calls  int
	maxCap int
	maxLen int
}

func (h *downHandler) Resume(context.Context, string, int) (int64, error) {
	return kafka.FirstOffset, nil
}

func (h *downHandler) Apply(_ context.Context, _ string, _ int, msgs []kafka.Message) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	h.maxCap = max(h.maxCap, cap(msgs))
	h.maxLen = max(h.maxLen, len(msgs))
	return errors.New("redis: connection refused")
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestBudgetBoundsHeapWhileRedisDown: with Redis down (every batch fails)
// and partitions far behind, what the partitions hold is bounded by
// --buffer-memory plus about a fetch (1 MiB) per partition
// (docs/operations.md, "Batches"). The fetcher used to grow a lagging
// partition's pending buffer to MaxBatchSize messages at once, whatever
// the budget let it hold: 50,000 kafka.Message headers, 7.6 MB per buffer,
// two buffers per partition, none of it counted against the budget.
func TestBudgetBoundsHeapWhileRedisDown(t *testing.T) {
	const (
		partitions = 8
		messages   = 8 * 3000
		valueSize  = 100
		limit      = 16 << 20 // more than the messages: the budget never binds
	)
	topic := testenv.UniqueName(t, "budgetheap")
	brokers := startKafka(t, topic, partitions)
	produceSized(t, brokers, topic, messages, valueSize)
	before := heapAfterGC()
	budget := NewMemoryBudget(limit)
	h := &downHandler{}
	stop := runGroupAsync(t, GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic,
		SessionTimeout: 6 * time.Second, Memory: budget, RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond}, h)
	defer stop()
	waitFor(t, "batches failing on every partition", 30*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.calls >= 4*partitions
	})
	time.Sleep(2 * time.Second) // let every partition read ahead
	after := heapAfterGC()
	grown := int64(after) - int64(before)
	h.mu.Lock()
	maxCap, maxLen := h.maxCap, h.maxLen
	h.mu.Unlock()
	// What the budget counts, plus a generous 4 MiB per partition for its
	// fetch (the docs say about 1 MiB).
	bound := budget.Used() + partitions*(4<<20)
	t.Logf("heap grew %d MB (bound %d MB); budget used %d bytes of %d; largest batch %d messages in a buffer of capacity %d (%d MB of Message headers)",
		grown>>20, bound>>20, budget.Used(), limit, maxLen, maxCap, maxCap*int(unsafe.Sizeof(kafka.Message{}))>>20)
	if grown > bound {
		t.Errorf("heap grew by %d MB while Redis is down, want at most the bytes the budget counts (%d KiB) plus 4 MiB per partition (%d partitions): %d MB",
			grown>>20, budget.Used()>>10, partitions, bound>>20)
	}
	if maxCap > 4*max(maxLen, 1000) {
		t.Errorf("a batch of %d messages is held in a buffer of %d messages (%d bytes of kafka.Message headers, not counted against the budget)",
			maxLen, maxCap, int64(maxCap)*int64(unsafe.Sizeof(kafka.Message{})))
	}
}
