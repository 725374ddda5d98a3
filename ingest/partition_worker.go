package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
	partition int
	// pastEndLogged is when readerError last logged the stall of a
	// position past the partition's end.
	pastEndLogged time.Time
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
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     w.cfg.Brokers,
		Dialer:      w.cfg.Dialer,
		Topic:       topic,
		Partition:   w.partition,
		MinBytes:    1,
		MaxBytes:    16 << 20,
		MaxWait:     100 * time.Millisecond,
		ErrorLogger: kafka.LoggerFunc(w.readerError),
	})
	defer r.Close()
	if err := r.SetOffset(next); err != nil {
		w.log.Error("set reader offset failed", "offset", next, "err", err)
		return false
	}
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

// readerError logs what kafka-go's reader reports through its error logger.
// Most of it is retried connection trouble (debug), but two messages say the
// partition's log no longer holds the position: reading past its last
// offset, which kafka-go retries forever, means the topic was deleted and
// recreated (or its log lost), and the per-key fences of the old offsets
// would take the new events for replays, so the partition stays stalled
// until an operator acts (docs/operations.md); reading before its first
// offset means retention deleted events before ingest read them, and
// kafka-go skips them. Both are logged at error level, the stall at most
// once a minute.
func (w *partitionWorker) readerError(msg string, args ...any) {
	detail := fmt.Sprintf(msg, args...)
	outOfRange := false
	for _, a := range args {
		if err, ok := a.(error); ok && errors.Is(err, kafka.OffsetOutOfRange) {
			outOfRange = true
		}
	}
	switch {
	// Past the end when the reader starts (kafka-go seeks to the first
	// offset kept by itself when a position is before it), or later.
	case outOfRange && strings.Contains(msg, "initializing the kafka reader"), strings.Contains(msg, "reading passed the last offset"):
		if now := time.Now(); now.Sub(w.pastEndLogged) >= time.Minute {
			w.pastEndLogged = now
			w.log.Error("the position to read from is past the partition's end: the topic was deleted and recreated, or its log lost; "+
				"the partition stays stalled (docs/operations.md: a recreated topic)", "detail", detail)
		}
	case strings.Contains(msg, "reading before the first offset"):
		w.log.Error("events were deleted by the topic's retention before ingest read them; kafka-go skips to the first offset kept", "detail", detail)
	default:
		w.log.Debug("kafka reader", "detail", detail)
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
