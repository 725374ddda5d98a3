package ingest

import (
	"context"
	"errors"
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
