package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"time"
)

// ErrConflict is returned by Store.Commit when another apply committed first.
var ErrConflict = errors.New("registry changed concurrently")

// ErrBreaking is returned by Apply for a plan with breaking changes that was
// not allowed to break.
var ErrBreaking = errors.New("plan has breaking changes")

// VersionInfo describes one committed registry version.
type VersionInfo struct {
	Version   int64     `json:"version"`
	Digest    string    `json:"digest"`
	AppliedAt time.Time `json:"applied_at"`
	AppliedBy string    `json:"applied_by"`
	Message   string    `json:"message,omitempty"`
}

// Snapshot is a committed version with its definitions.
type Snapshot struct {
	VersionInfo
	Registry *Registry
}

// Store keeps numbered registry versions. Version numbers start at 1 and
// grow by one with each commit; 0 means nothing was ever applied.
type Store interface {
	// Head returns the newest version number.
	Head(ctx context.Context) (int64, error)
	// Get returns version v.
	Get(ctx context.Context, v int64) (*Snapshot, error)
	// Versions lists every version, newest first.
	Versions(ctx context.Context) ([]VersionInfo, error)
	// Commit stores content (canonical JSON) as version expected+1, only if
	// the head is still expected; otherwise it returns ErrConflict and
	// stores nothing. It returns the info as stored.
	Commit(ctx context.Context, expected int64, info VersionInfo, content []byte) (VersionInfo, error)
	// Close releases the store's resources.
	Close() error
}

// Notifier is implemented by stores that can announce new versions, so that
// watchers need not wait for their next poll.
type Notifier interface {
	// Notify returns a channel that receives after each commit (possibly
	// coalesced) until ctx ends.
	Notify(ctx context.Context) <-chan struct{}
}

// Current returns the head snapshot of a store, or nil when nothing was
// ever applied.
func Current(ctx context.Context, s Store) (*Snapshot, error) {
	head, err := s.Head(ctx)
	if err != nil || head == 0 {
		return nil, err
	}
	return s.Get(ctx, head)
}

// ApplyOptions controls Apply.
type ApplyOptions struct {
	// AllowBreaking lets a plan with breaking changes through.
	AllowBreaking bool
	// Message is recorded with the version.
	Message string
	// By names who applied; defaults to user@host.
	By string
	// Now is the commit time; defaults to time.Now.
	Now time.Time
}

// ApplyResult says what Apply did.
type ApplyResult struct {
	Plan *Plan
	// From is the version the plan was made against (0 for none).
	From int64
	// To is the committed version; zero when nothing changed.
	To VersionInfo
}

// Apply commits r as the store's next version if it differs from the head.
// The plan is made against the head it commits on top of, so two concurrent
// applies cannot interleave: the second gets ErrConflict and must plan again.
func Apply(ctx context.Context, s Store, r *Registry, opts ApplyOptions) (ApplyResult, error) {
	cur, err := Current(ctx, s)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("read registry head: %w", err)
	}
	res := ApplyResult{}
	var old *Registry
	if cur != nil {
		res.From, old = cur.Version, cur.Registry
	}
	res.Plan = Diff(old, r)
	if res.Plan.Empty() {
		return res, nil
	}
	if b := res.Plan.Breaking(); len(b) > 0 && !opts.AllowBreaking {
		return res, fmt.Errorf("%w: %d change(s) alter what existing features mean", ErrBreaking, len(b))
	}
	// No definitions at all, where there were some, is most likely a file
	// left empty by accident (a template that rendered nothing): applied,
	// every lookup of the project would fail.
	if n := countDefinitions(old); n > 0 && countDefinitions(r) == 0 && !opts.AllowBreaking {
		return res, fmt.Errorf("%w: the definitions are empty, and applying them would delete all %d definitions of the registry (allow breaking changes to do so)", ErrBreaking, n)
	}
	info := VersionInfo{
		Version:   res.From + 1,
		Digest:    r.Digest(),
		AppliedAt: opts.Now,
		AppliedBy: opts.By,
		Message:   opts.Message,
	}
	if info.AppliedAt.IsZero() {
		info.AppliedAt = time.Now()
	}
	info.AppliedAt = info.AppliedAt.UTC().Truncate(time.Millisecond)
	if info.AppliedBy == "" {
		info.AppliedBy = whoami()
	}
	res.To, err = s.Commit(ctx, res.From, info, r.CanonicalJSON())
	if err != nil {
		return res, fmt.Errorf("commit registry version %d: %w", info.Version, err)
	}
	return res, nil
}

func whoami() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// countDefinitions returns how many definitions r holds, of every kind; 0
// for nil.
func countDefinitions(r *Registry) int {
	if r == nil {
		return 0
	}
	return len(r.Entities) + len(r.Sources) + len(r.Views) + len(r.OnDemandViews) + len(r.Services)
}
