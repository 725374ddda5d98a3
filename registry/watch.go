package registry

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// DefaultWatchInterval is how often a Watcher polls a store's head when no
// notification arrives; it bounds how late a new version is picked up.
const DefaultWatchInterval = time.Second

// Watcher follows a Store and holds its newest snapshot. Readers call Current
// and get a whole version, never half of one; a new version replaces the old
// with one atomic swap.
type Watcher struct {
	store    Store
	interval time.Duration
	log      *slog.Logger
	current  atomic.Pointer[Snapshot]
	onChange func(*Snapshot)
	// headGone is set while the store holds no version though one was
	// loaded, so that it is logged once.
	headGone atomic.Bool
}

// WatcherOptions configures a Watcher.
type WatcherOptions struct {
	// Interval between polls of the head; DefaultWatchInterval when zero.
	Interval time.Duration
	// OnChange, if set, is called from Run with each newly loaded snapshot.
	OnChange func(*Snapshot)
	Logger   *slog.Logger
}

// NewWatcher returns a watcher of s. Call Load, then Run.
func NewWatcher(s Store, opts WatcherOptions) *Watcher {
	if opts.Interval <= 0 {
		opts.Interval = DefaultWatchInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{store: s, interval: opts.Interval, log: opts.Logger, onChange: opts.OnChange}
}

// Current returns the newest snapshot loaded, or nil before any version
// exists.
func (w *Watcher) Current() *Snapshot { return w.current.Load() }

// InfoGetter is implemented by stores that can read a version's info without
// its definitions. A Watcher uses it to compare the head with the version it
// holds on each poll, cheaply.
type InfoGetter interface {
	// Info returns the info of version v.
	Info(ctx context.Context, v int64) (VersionInfo, error)
}

// Load reads the store's head now. It returns whether a new version was
// loaded.
//
// A version is new when its number or its digest differs from the one held,
// not only when its number is higher: a store that lost versions (a Redis
// failover with asynchronous replication, a restore from a backup, a dev
// Redis started afresh) gives the next apply a number already seen, with
// other content, and the store's head is what every process must run.
func (w *Watcher) Load(ctx context.Context) (bool, error) {
	head, err := w.store.Head(ctx)
	if err != nil {
		return false, err
	}
	cur := w.current.Load()
	if head == 0 {
		// The store holds no version, though one was loaded: it lost its
		// registry (a Redis restart without persistence, a flush). The
		// version held stays; said once, until a version is back.
		if cur != nil && !w.headGone.Swap(true) {
			w.log.Warn("the registry store holds no version any more: it lost its registry; keeping the version loaded until one is applied again",
				"version", cur.Version, "digest", cur.Digest)
		}
		return false, nil
	}
	w.headGone.Store(false)
	if ig, ok := w.store.(InfoGetter); ok && cur != nil && cur.Version == head {
		info, err := ig.Info(ctx, head)
		if err != nil {
			return false, err
		}
		if info.Digest == cur.Digest {
			return false, nil
		}
	}
	snap, err := w.store.Get(ctx, head)
	if err != nil {
		return false, err
	}
	if cur != nil && snap.Version == cur.Version && snap.Digest == cur.Digest {
		return false, nil
	}
	if cur != nil && snap.Version <= cur.Version {
		w.log.Warn("registry version number went back; the store lost versions, loading its head",
			"version", snap.Version, "digest", snap.Digest, "previous_version", cur.Version, "previous_digest", cur.Digest)
	}
	w.current.Store(snap)
	w.log.Info("registry version loaded", "version", snap.Version, "digest", snap.Digest, "applied_by", snap.AppliedBy)
	if w.onChange != nil {
		w.onChange(snap)
	}
	return true, nil
}

// Run follows the store until ctx ends: on each notification from a store
// that is a Notifier, and at least every interval. Errors are logged and
// retried; the last good snapshot stays current meanwhile.
func (w *Watcher) Run(ctx context.Context) error {
	var notes <-chan struct{}
	if n, ok := w.store.(Notifier); ok {
		notes = n.Notify(ctx)
	}
	t := time.NewTicker(w.interval)
	defer t.Stop()
	// The last error logged: a failure is logged when it starts and when it
	// changes (Redis comes back but the head is a version this build cannot
	// read), not on every poll.
	failing := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-notes:
		}
		if _, err := w.Load(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if err.Error() != failing {
				w.log.Warn("registry watch failed; keeping the current version", "version", w.currentVersion(), "err", err)
			}
			failing = err.Error()
			continue
		}
		if failing != "" {
			w.log.Info("registry watch recovered")
			failing = ""
		}
	}
}

// currentVersion is the number of the version held, 0 for none.
func (w *Watcher) currentVersion() int64 {
	if cur := w.current.Load(); cur != nil {
		return cur.Version
	}
	return 0
}
