package ingest

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/window"
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

	// For the consumer lag (reportLag): the next offset to apply (-1 while
	// unknown), and the partition's end as last seen and when (Unix ns, 0
	// for never).
	toApply, end, endAt atomic.Int64
	// lagMu orders the reports of the read loop and of the ticker, so that
	// the last lag recorded is from the latest next offset to apply.
	lagMu sync.Mutex
	// After a failed list of the partition's end, the next is not tried
	// before endRetryAt, the wait doubling from endRetryMin to endRetryMax:
	// partitions stalled while Kafka does not answer (each asks for its
	// own end) then ask it seldom. Only the reports that refresh touch
	// them, and those never run at once (the ticker's goroutine, and the
	// resumes between reads).
	endRetryAt   time.Time
	endRetryWait time.Duration
	// failingSince is when the first of the attempts at applying a batch
	// that failed in a row began; zero once one succeeded.
	failingSince time.Time
}

// anchored is a PartitionHandler that knows the record at the position its
// Resume returned the offset after: the reader checks that the partition
// still holds it before it reads (partitionReader.expect), so that a
// topic deleted and created again under its name is not read as the old
// one.
type anchored interface {
	anchor(partition int) (offset int64, sum uint64, ok bool)
}

// lagRecorder is a PartitionHandler that records the consumer lag of its
// partitions: the messages from the next offset to apply to the partition's
// end. The partition worker reports it after each batch applied, once a
// second while the partition reads or retries a batch, and after each
// failed resume (whose retries back off up to RetryMax). Release
// (partitionReleaser) comes after the last report.
type lagRecorder interface {
	recordLag(partition int, lag int64)
}

// endStale is how old the partition's end the reader saw last may be when a
// lag is reported once a second: an older one is asked of Kafka. The reader
// fetches every 100ms or sooner while it reads; it stops while the next
// batch is full, as when batches fail (Redis down), when the partition is
// stalled, and between a resume that failed and the next.
const endStale = 5 * time.Second

// The backoff of the lists of a partition's end after one failed.
const (
	endRetryMin = 2 * time.Second
	endRetryMax = 30 * time.Second
)

// sawEnd records the partition's end, as a fetch or a list of offsets
// returned it.
func (w *partitionWorker) sawEnd(end int64) {
	w.end.Store(end)
	w.endAt.Store(time.Now().UnixNano())
}

// reportLag reports the partition's lag to the handler, if it records lags
// and the next offset to apply is known; with refresh, from an end asked of
// Kafka if the one last seen is older than endStale.
func (w *partitionWorker) reportLag(ctx context.Context, refresh bool) {
	lr, ok := w.h.(lagRecorder)
	if !ok || w.toApply.Load() < 0 {
		return
	}
	if refresh && time.Since(time.Unix(0, w.endAt.Load())) > endStale && !time.Now().Before(w.endRetryAt) {
		w.refreshEnd(ctx)
	}
	// The next offset to apply is read after the refresh, which may take
	// endStale while batches are applied and reported.
	w.lagMu.Lock()
	defer w.lagMu.Unlock()
	if next := w.toApply.Load(); next >= 0 && w.endAt.Load() != 0 {
		lr.recordLag(w.partition, w.end.Load()-next)
	}
}

// refreshEnd asks Kafka for the partition's end; after a failure, the
// next refresh waits (endRetryAt).
func (w *partitionWorker) refreshEnd(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, endStale)
	defer cancel()
	ends, err := listEnds(ctx, w.tr, kafka.TCP(w.cfg.Brokers...), w.cfg.Topic, []int{w.partition}, kafka.ReadUncommitted)
	if err == nil {
		w.sawEnd(ends[0][1])
		w.endRetryWait = 0
		return
	}
	w.endRetryWait = min(max(2*w.endRetryWait, endRetryMin), endRetryMax)
	w.endRetryAt = time.Now().Add(w.endRetryWait)
	if ctx.Err() == nil {
		w.log.Debug("list the partition's end for its lag failed", "err", err, "retry_in", w.endRetryWait)
	}
}

// run reads until genCtx ends (rebalance or shutdown). Batches are applied
// under a context detached from genCtx, so that a batch in flight finishes
// rather than stopping halfway.
func (w *partitionWorker) run(procCtx, genCtx context.Context) {
	topic := w.cfg.Topic
	w.toApply.Store(-1)
	// After the release: readiness forgets the partition's state.
	defer w.cfg.health.released(w.partition)
	if r, isReleaser := w.h.(partitionReleaser); isReleaser {
		// Before the generation ends, so before the partition's next owner
		// resumes it (the group waits for this function to return). Also
		// when no resume succeeded: a failed one may have taken state of
		// the partition.
		defer func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(procCtx), w.cfg.ShutdownTimeout)
			defer cancel()
			if err := r.Release(ctx, topic, w.partition); err != nil {
				w.log.Warn("partition release failed", "err", err)
			}
		}()
	}
	next, ok := w.resume(genCtx)
	if !ok {
		return
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
	r.onEnd = w.sawEnd
	stalls, _ := w.h.(stallRecorder)
	r.onStall = func(why string) {
		if stalls != nil {
			stalls.recordStalled(w.partition, why != "")
		}
		w.cfg.health.stalled(w.partition, why)
	}
	if stalls != nil {
		r.onLost = func(n int64) { stalls.countLost(w.partition, n) }
	}
	r.onStall("")
	r.setOffset(next)
	if a, ok := w.h.(anchored); ok {
		if offset, sum, ok := a.anchor(w.partition); ok {
			r.expect(offset, sum)
		}
	}
	if next >= 0 {
		w.toApply.Store(next)
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
			// The commit first: the report may wait for Kafka to list
			// the partition's end.
			if n := committed.Load(); n > last {
				if err := w.gen.CommitOffsets(map[string]map[int]int64{topic: {w.partition: n}}); err != nil {
					if genCtx.Err() == nil {
						w.log.Debug("commit offsets failed", "err", err)
					}
				} else {
					last = n
				}
			}
			w.reportLag(commitCtx, true)
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
	defer func() { stopReading(); <-fetchDone; f.release() }()
	var batch []kafka.Message
	idleEvery := w.cfg.idleCheck
	if idleEvery <= 0 {
		idleEvery = defaultIdleCheck // a config RunGroup did not complete
	}
	idle := time.NewTimer(idleEvery)
	defer idle.Stop()
	for {
		var ok bool
		batch, ok = f.next(readCtx, batch, idle.C)
		if !ok {
			w.log.Info("partition stopped", "next_offset", next)
			return false
		}
		if len(batch) == 0 {
			if w.checkIdle(genCtx) {
				return true
			}
			idle.Reset(idleEvery)
			continue
		}
		w.toApply.Store(batch[0].Offset)
		switch w.apply(procCtx, genCtx, batch) {
		case applyStopped:
			return false
		case applyResume:
			return true
		}
		next = batch[len(batch)-1].Offset + 1
		committed.Store(next)
		w.toApply.Store(next)
		w.reportLag(readCtx, false)
		idle.Reset(idleEvery)
	}
}

// checkIdle asks a handler that is an idleChecker whether the partition's
// state is still in place, after a while without messages; it tells
// whether the partition must be resumed again. A failed check (Redis down)
// is left to the next batch or check.
func (w *partitionWorker) checkIdle(ctx context.Context) (resume bool) {
	c, ok := w.h.(idleChecker)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ShutdownTimeout)
	defer cancel()
	err := c.checkIdle(ctx, w.cfg.Topic, w.partition)
	if errors.Is(err, ErrResumePartition) {
		w.log.Warn("partition without messages resumed again", "err", err)
		return true
	}
	if err != nil && ctx.Err() == nil {
		w.log.Debug("idle check failed", "err", err)
	}
	return false
}

// resume asks the handler where to start, retrying while it fails; the
// failures count for readiness as failed batches do.
func (w *partitionWorker) resume(ctx context.Context) (int64, bool) {
	backoff := w.cfg.RetryMin
	var failingSince time.Time
	for {
		start := time.Now()
		next, err := w.h.Resume(ctx, w.cfg.Topic, w.partition)
		if err == nil {
			if !failingSince.IsZero() {
				w.cfg.health.succeeded(w.partition)
			}
			return next, true
		}
		if ctx.Err() != nil {
			return 0, false
		}
		if failingSince.IsZero() {
			failingSince = start
		}
		w.cfg.health.failed(w.partition, doingResume, failingSince, err)
		w.log.Warn("resume position unavailable; retrying", "err", err, "retry_in", backoff)
		w.reportLag(ctx, true) // from where the partition stopped, if it ran
		if !sleep(ctx, backoff) {
			return 0, false
		}
		backoff = min(2*backoff, w.cfg.RetryMax)
	}
}

// corruptState tells an error of a hash that does not decode, or of a key
// of the online store that holds no hash (Redis's WRONGTYPE reply, from the
// write's script: something else wrote the key).
func corruptState(err error) bool {
	return errors.Is(err, window.ErrCorrupt) || errors.Is(err, online.ErrCorruptState) || errors.Is(err, online.ErrCorruptSlot) || online.IsWrongType(err)
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
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(procCtx), w.cfg.ShutdownTimeout)
		err := w.h.Apply(ctx, w.cfg.Topic, w.partition, batch)
		cancel()
		if err == nil {
			if !w.failingSince.IsZero() {
				w.failingSince = time.Time{}
				w.cfg.health.succeeded(w.partition)
			}
			return applyDone
		}
		if errors.Is(err, ErrResumePartition) {
			w.log.Warn("batch not applied; resuming the partition again", "first_offset", batch[0].Offset, "err", err)
			return applyResume
		}
		if w.failingSince.IsZero() {
			w.failingSince = start
		}
		w.cfg.health.failed(w.partition, doingApply, w.failingSince, err)
		if fr, ok := w.h.(failureRecorder); ok {
			fr.recordApplyFailure(w.partition)
		}
		if genCtx.Err() != nil {
			w.log.Warn("batch not applied as the partition stops; it will be read again", "first_offset", batch[0].Offset, "err", err)
			return applyStopped
		}
		if corruptState(err) {
			// Not an outage: retrying changes nothing until an operator
			// repairs the hash, and every entity of the partition waits.
			w.log.Error("apply failed on a hash of the online store that does not decode (written by another version, or by something else); the partition waits until it is deleted or repaired (docs/operations.md)",
				"first_offset", batch[0].Offset, "messages", len(batch), "err", err, "retry_in", backoff)
		} else {
			w.log.Warn("apply failed; retrying", "first_offset", batch[0].Offset, "messages", len(batch), "err", err, "retry_in", backoff)
		}
		if !sleep(genCtx, backoff) {
			return applyStopped
		}
		backoff = min(2*backoff, w.cfg.RetryMax)
	}
}
