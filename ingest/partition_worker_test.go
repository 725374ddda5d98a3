package ingest

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// failingResume is a PartitionHandler whose Resume always fails, as when
// the applier's resume failed after it took state of the partition.
type failingResume struct {
	resumes  atomic.Int32
	released atomic.Int32
	// onResume, if set, is called after each failed Resume.
	onResume func()
}

func (h *failingResume) Resume(context.Context, string, int) (int64, error) {
	h.resumes.Add(1)
	if h.onResume != nil {
		defer h.onResume()
	}
	return 0, errors.New("redis down")
}

func (h *failingResume) Apply(context.Context, string, int, []kafka.Message) error {
	return errors.New("not resumed")
}

func (h *failingResume) Release(context.Context, string, int) error {
	h.released.Add(1)
	return nil
}

// TestPartitionReleasedWhenResumeNeverSucceeded: a partition whose first
// resume fails until the generation ends is released all the same, since
// a failed resume may have left state of it behind in the handler.
func TestPartitionReleasedWhenResumeNeverSucceeded(t *testing.T) {
	cfg := GroupConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "txns", RetryMin: time.Millisecond, RetryMax: time.Millisecond}
	cfg.defaults()
	genCtx, endGeneration := context.WithCancel(context.Background())
	defer endGeneration()
	h := &failingResume{}
	h.onResume = func() {
		if h.resumes.Load() == 3 {
			endGeneration()
		}
	}
	w := &partitionWorker{cfg: &cfg, log: cfg.Logger, h: h, partition: 0}
	w.run(context.Background(), genCtx)
	if n := h.resumes.Load(); n < 3 {
		t.Fatalf("%d resumes, want at least 3", n)
	}
	if n := h.released.Load(); n != 1 {
		t.Errorf("released %d times after the generation ended in a failing resume, want 1", n)
	}
}

// lagRecords is a PartitionHandler that records the lags reported to it.
type lagRecords struct {
	failingResume
	mu   sync.Mutex
	lags []int64
}

func (h *lagRecords) recordLag(_ int, lag int64) {
	h.mu.Lock()
	h.lags = append(h.lags, lag)
	h.mu.Unlock()
}

// staleEndWorker returns a worker of a partition of the broker at addr,
// with the next offset to apply 0 and an end of 100 seen too long ago: a
// report that may refresh asks the broker.
func staleEndWorker(addr net.Addr) (*partitionWorker, *lagRecords) {
	cfg := GroupConfig{Brokers: []string{addr.String()}, Topic: "txns"}
	cfg.defaults()
	h := &lagRecords{}
	w := &partitionWorker{cfg: &cfg, log: cfg.Logger, h: h, tr: newTransport(nil, "txns"), partition: 0}
	w.toApply.Store(0)
	w.end.Store(100)
	w.endAt.Store(time.Now().Add(-time.Minute).UnixNano())
	return w, h
}

// TestLagNotOverwrittenByStaleReport: a report that asks Kafka for the
// partition's end, which may take seconds, records the lag from the next
// offset to apply as it is when the answer came, not from the one before
// the batches applied meanwhile (reported by then).
func TestLagNotOverwrittenByStaleReport(t *testing.T) {
	// A broker that takes connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	asked := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			asked <- c
		}
	}()
	w, h := staleEndWorker(ln.Addr()) // the ticker's report asks Kafka

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		w.reportLag(ctx, true)
	}()
	select {
	case c := <-asked:
		defer c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the report did not ask the broker for the partition's end")
	}
	// Meanwhile the read loop applies every message up to the end.
	w.toApply.Store(100)
	w.reportLag(ctx, false)
	cancel() // the ticker's list of the end fails
	<-ticked

	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.lags) == 0 || h.lags[len(h.lags)-1] != 0 {
		t.Errorf("lags recorded %v, want the last 0: every message up to the end was applied", h.lags)
	}
}

// TestLagEndRefreshBacksOff: after Kafka failed to list the partition's
// end, the reports once a second do not ask again each time, but after a
// growing wait.
func TestLagEndRefreshBacksOff(t *testing.T) {
	// A broker that hangs up on every connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	w, h := staleEndWorker(ln.Addr())

	w.reportLag(context.Background(), true)
	first := conns.Load()
	if first == 0 {
		t.Fatal("the report did not ask the broker for the partition's end")
	}
	for range 5 {
		w.reportLag(context.Background(), true)
	}
	if n := conns.Load(); n != first {
		t.Errorf("%d connections to the broker after 5 more reports right after a failed list of the end, want %d", n, first)
	}
	if w.endRetryWait != endRetryMin {
		t.Errorf("wait after one failure %v, want %v", w.endRetryWait, endRetryMin)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.lags) != 6 || h.lags[5] != 100 {
		t.Errorf("lags recorded %v, want 6 of 100 from the last end seen", h.lags)
	}
}
