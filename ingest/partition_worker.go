package ingest

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// partitionWorker reads one assigned partition in batches and hands them to
// the handler, from the position the handler says it has applied.
type partitionWorker struct {
	cfg       *GroupConfig
	log       *slog.Logger
	h         PartitionHandler
	gen       *kafka.Generation
	tr        kafka.RoundTripper // the group's, shared by its partitions
	partition int
}

// run reads until genCtx ends (rebalance or shutdown). Batches are applied
// under a context detached from genCtx, so that a batch in flight finishes
// rather than stopping halfway.
func (w *partitionWorker) run(procCtx, genCtx context.Context) {
	topic := w.cfg.Topic
	next, ok := w.resume(genCtx)
	if !ok {
		return
	}
	if r, isReleaser := w.h.(partitionReleaser); isReleaser {
		// Before the generation ends, so before the partition's next owner
		// resumes it (the group waits for this function to return).
		defer func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(procCtx), w.cfg.ShutdownTimeout)
			defer cancel()
			if err := r.Release(ctx, topic, w.partition); err != nil {
				w.log.Warn("partition release failed", "err", err)
			}
		}()
	}
	for w.read(procCtx, genCtx, next) {
		if next, ok = w.resume(genCtx); !ok {
			return
		}
		w.log.Warn("partition resumed again", "offset", next)
	}
}

// read reads from offset next and applies until genCtx ends, and returns
// false; or until a batch asks for the partition to be resumed again
// (ErrResumePartition), and returns true.
func (w *partitionWorker) read(procCtx, genCtx context.Context, next int64) (resumeAgain bool) {
	topic := w.cfg.Topic
	readCtx, stopReading := context.WithCancel(genCtx)
	defer stopReading()
	r := &partitionReader{tr: w.tr, addr: kafka.TCP(w.cfg.Brokers...), topic: topic, partition: w.partition,
		maxBytes: readerFetchBytes, maxWait: 100 * time.Millisecond, log: w.log}
	if c, ok := w.h.(abortCounter); ok {
		r.onAborted = c.countAborted
	}
	r.setOffset(next)
	w.log.Info("partition started", "offset", next)
	// Kafka's committed offset is a hint only (for tools and lag metrics;
	// resuming reads the positions in Redis), so it is committed in the
	// background once a second instead of after every batch: a synchronous
	// commit per batch queues all partitions behind one connection and
	// costs milliseconds of freshness.
	var committed atomic.Int64
	committed.Store(-1)
	commitCtx, stopCommits := context.WithCancel(readCtx)
	commitDone := make(chan struct{})
	go func() {
		defer close(commitDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last := int64(-1)
		for {
			select {
			case <-commitCtx.Done():
				return
			case <-t.C:
			}
			if n := committed.Load(); n > last {
				if err := w.gen.CommitOffsets(map[string]map[int]int64{topic: {w.partition: n}}); err != nil {
					if genCtx.Err() == nil {
						w.log.Debug("commit offsets failed", "err", err)
					}
					continue
				}
				last = n
			}
		}
	}()
	defer func() { stopCommits(); <-commitDone }()
	// The next batch is read while the current one is applied: a partition
	// that is behind then finds a full batch waiting, and one whose batches
	// take long to apply (Redis busy) gets larger batches, which write less
	// often per event.
	f := newFetcher(w.cfg, w.log, r)
	fetchDone := make(chan struct{})
	go func() {
		defer close(fetchDone)
		f.run(readCtx)
	}()
	defer func() { stopReading(); <-fetchDone }()
	var batch []kafka.Message
	for {
		var ok bool
		batch, ok = f.next(readCtx, batch)
		if !ok {
			w.log.Info("partition stopped", "next_offset", next)
			return false
		}
		switch w.apply(procCtx, genCtx, batch) {
		case applyStopped:
			return false
		case applyResume:
			return true
		}
		next = batch[len(batch)-1].Offset + 1
		committed.Store(next)
	}
}

// resume asks the handler where to start, retrying while it fails.
func (w *partitionWorker) resume(ctx context.Context) (int64, bool) {
	backoff := w.cfg.RetryMin
	for {
		next, err := w.h.Resume(ctx, w.cfg.Topic, w.partition)
		if err == nil {
			return next, true
		}
		if ctx.Err() != nil {
			return 0, false
		}
		w.log.Warn("resume position unavailable; retrying", "err", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			return 0, false
		}
		backoff = min(2*backoff, w.cfg.RetryMax)
	}
}

// What became of a batch handed to apply.
const (
	applyDone    = iota
	applyStopped // not applied: the partition stops
	applyResume  // not applied: the partition must be resumed again
)

// apply applies the batch, retrying with backoff while it fails (a Redis
// outage pauses the partition; memory stays bounded by one batch). An
// attempt under way always finishes; after a failed one it gives up when the
// generation ends (rebalance or shutdown), and the batch is then read again
// by whoever owns the partition next. An error wrapping ErrResumePartition
// is not retried.
func (w *partitionWorker) apply(procCtx, genCtx context.Context, batch []kafka.Message) int {
	backoff := w.cfg.RetryMin
	for {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(procCtx), w.cfg.ShutdownTimeout)
		err := w.h.Apply(ctx, w.cfg.Topic, w.partition, batch)
		cancel()
		if err == nil {
			return applyDone
		}
		if errors.Is(err, ErrResumePartition) {
			w.log.Warn("batch not applied; resuming the partition again", "first_offset", batch[0].Offset, "err", err)
			return applyResume
		}
		if genCtx.Err() != nil {
			w.log.Warn("batch not applied as the partition stops; it will be read again", "first_offset", batch[0].Offset, "err", err)
			return applyStopped
		}
		w.log.Warn("apply failed; retrying", "first_offset", batch[0].Offset, "messages", len(batch), "err", err, "retry_in", backoff)
		if !sleep(genCtx, backoff) {
			return applyStopped
		}
		backoff = min(2*backoff, w.cfg.RetryMax)
	}
}
