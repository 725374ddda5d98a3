package ingest

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// fetcher reads a partition ahead of the applier: it gathers the messages
// of the next batch while the current one is applied, and hands them over
// when the applier asks for them and the batch is ready (see next).
//
// The pending batch is bounded by GroupConfig.BatchSize while the partition
// keeps up and by MaxBatchSize while it is behind, and by MaxBatchBytes
// always; when it is full, reading waits. So a partition holds at most two
// batches: the one being applied and the next. With GroupConfig.Memory, the
// bytes of both also count against the process's budget (see MemoryBudget).
type fetcher struct {
	cfg *GroupConfig
	log *slog.Logger
	r   *partitionReader

	mu      sync.Mutex
	pending []kafka.Message
	size    int           // messageSize of pending
	since   time.Time     // when the first pending message arrived
	behind  bool          // the last message read had more than BatchSize after it
	done    bool          // reading stopped: the generation ended
	waiting bool          // next waits for ready
	ready   chan struct{} // signalled when pending grows while next waits, or reading stops
	space   chan struct{} // signalled when pending was taken
	// Bytes taken from cfg.Memory: for the pending batch, and for the
	// batch handed over, given back when the applier asks for the next.
	held, applying int64
}

func newFetcher(cfg *GroupConfig, log *slog.Logger, r *partitionReader) *fetcher {
	return &fetcher{cfg: cfg, log: log, r: r, ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// limit returns the number of messages the pending batch may hold.
func (f *fetcher) limit() int {
	if f.behind {
		return f.cfg.MaxBatchSize
	}
	return f.cfg.BatchSize
}

// full reports whether the pending batch may not grow; f.mu is held.
func (f *fetcher) full() bool {
	return len(f.pending) >= f.limit() || f.size >= f.cfg.MaxBatchBytes
}

// run reads messages into the pending batch until ctx ends.
func (f *fetcher) run(ctx context.Context) {
	defer func() {
		f.mu.Lock()
		f.done = true
		f.mu.Unlock()
		signal(f.ready)
	}()
	backoff := f.cfg.RetryMin
	for {
		f.mu.Lock()
		full := f.full()
		f.mu.Unlock()
		if full {
			select {
			case <-ctx.Done():
				return
			case <-f.space:
			}
			continue
		}
		m, err := f.r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// A position past the partition's end was logged by the
			// reader, at most once a minute.
			level := slog.LevelWarn
			if errors.Is(err, kafka.OffsetOutOfRange) {
				level = slog.LevelDebug
			}
			f.log.Log(ctx, level, "fetch failed", "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, f.cfg.RetryMax)
			continue
		}
		backoff = f.cfg.RetryMin
		size := messageSize(m)
		if !f.charge(ctx, int64(size)) {
			return
		}
		f.mu.Lock()
		if len(f.pending) == 0 {
			f.since = time.Now()
		}
		if len(f.pending) == cap(f.pending) {
			f.pending = slices.Grow(f.pending, f.growth())
		}
		f.pending = append(f.pending, m)
		f.size += size
		f.behind = m.HighWaterMark-m.Offset-1 >= int64(f.cfg.BatchSize)
		wake := f.waiting
		f.waiting = false
		f.mu.Unlock()
		if wake {
			signal(f.ready)
		}
	}
}

// growth returns by how many messages the full pending buffer grows; f.mu
// is held. It doubles, not beyond the batch's limit, nor beyond the
// messages the budget has room for (each counts at least 256 bytes, more
// than its kafka.Message takes in the buffer): the buffer's capacity, which
// the budget does not count, stays within about what it counts of the
// messages held. Growing to MaxBatchSize at once would take 7.6 MB of
// kafka.Message per buffer (50,000 of them), two per partition, whatever
// the budget allows.
func (f *fetcher) growth() int {
	n := len(f.pending)
	g := min(max(n, minBufferGrowth), f.limit()-n)
	if b := f.cfg.Memory; b != nil {
		g = min(g, int(b.free()/messageOverhead))
	}
	return max(g, 1)
}

// minBufferGrowth is the least a pending buffer grows by.
const minBufferGrowth = 64

// charge takes n bytes of cfg.Memory for a message about to join the
// pending batch. While the budget is spent it waits for bytes given back
// (by any partition, this one's when its applier asks for the next batch):
// a partition that holds no bytes, pending or being applied, takes them
// whether or not they fit, so that it moves on. It returns false if ctx
// ended.
func (f *fetcher) charge(ctx context.Context, n int64) bool {
	b := f.cfg.Memory
	if b == nil {
		return true
	}
	for {
		f.mu.Lock()
		ok, freed := b.take(n, f.held == 0 && f.applying == 0)
		if ok {
			f.held += n
		}
		f.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-freed:
		case <-f.space:
		}
	}
}

// release gives back the bytes of cfg.Memory the fetcher holds; once it and
// the applier have stopped.
func (f *fetcher) release() {
	f.mu.Lock()
	n := f.held + f.applying
	f.held, f.applying = 0, 0
	f.mu.Unlock()
	f.cfg.Memory.give(n)
}

// next waits for the next batch and returns it; buf, the last batch, is
// reused for the one after. A batch is ready
// when it is full, or when Linger has passed since its first message
// arrived: a partition that keeps up waits at most Linger for more, and one
// that is behind takes what gathered while the last batch was applied. It
// returns false when ctx ends or reading stopped, with whatever is pending
// left unapplied: the next owner of the partition reads it again. When
// idle fires while no message is pending, it returns an empty batch.
func (f *fetcher) next(ctx context.Context, buf []kafka.Message, idle <-chan time.Time) ([]kafka.Message, bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	// The last batch is applied: its bytes go back to the budget.
	f.mu.Lock()
	done := f.applying
	f.applying = 0
	f.mu.Unlock()
	f.cfg.Memory.give(done)
	for {
		f.mu.Lock()
		if f.done || ctx.Err() != nil {
			f.mu.Unlock()
			return buf, false
		}
		n := len(f.pending)
		wait := time.Duration(0)
		if n > 0 && !f.full() {
			wait = f.cfg.Linger - time.Since(f.since)
		}
		if n > 0 && wait <= 0 {
			// Swap: the batch is handed over, and the last batch's buffer,
			// which the caller is done with, gathers the next.
			batch := f.pending
			clear(buf) // drop references to the messages' memory
			f.pending, f.size = buf[:0], 0
			f.applying, f.held = f.held, 0
			if !f.behind && cap(f.pending) > 4*f.cfg.BatchSize && n <= f.cfg.BatchSize {
				// Caught up: let the catch-up buffer go. While behind it is
				// kept, even after a small batch, not grown again.
				f.pending = nil
			}
			f.mu.Unlock()
			signal(f.space)
			return batch, true
		}
		f.waiting = true
		f.mu.Unlock()
		var expired <-chan time.Time
		if n > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			expired = timer.C
		}
		select {
		case <-ctx.Done():
		case <-f.ready:
		case <-expired:
		case <-idle:
			if n == 0 {
				f.mu.Lock()
				f.waiting = false
				f.mu.Unlock()
				clear(buf) // drop references to the messages' memory
				return buf[:0], true
			}
		}
	}
}

// messageOverhead is what messageSize counts for what holds a message: its
// kafka.Message (152 bytes on 64-bit platforms) in a buffer, and more.
const messageOverhead = 256

// messageSize is what a batch counts of a message against MaxBatchBytes:
// its key, value and headers, and 256 bytes for what holds them.
func messageSize(m kafka.Message) int {
	n := messageOverhead + len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}
