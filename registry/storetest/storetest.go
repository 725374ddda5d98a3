// Package storetest holds the conformance tests every registry.Store
// implementation must pass.
package storetest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/featurestore/featurestore/registry"
)

// Defs returns definitions whose single feature has the given window, so
// that different windows make different (and mutually breaking) registries.
func Defs(t testing.TB, window string) *registry.Registry {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(`
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts}
keys: {card_id: card_id}
fields: {amount: double}
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: card
source: txns
features:
  - {name: s, aggregation: sum, field: amount, window: ` + window + `}
`)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Run runs the conformance tests against fresh, empty stores from open.
func Run(t *testing.T, open func(t *testing.T) registry.Store) {
	t.Run("ApplyPlanVersions", func(t *testing.T) { testApply(t, open(t)) })
	t.Run("ConcurrentApplies", func(t *testing.T) { testConcurrent(t, open) })
	t.Run("WatcherSeesNewVersion", func(t *testing.T) { testWatch(t, open(t)) })
}

func testApply(t *testing.T, s registry.Store) {
	ctx := context.Background()
	if head, err := s.Head(ctx); err != nil || head != 0 {
		t.Fatalf("empty store: head %d, %v; want 0", head, err)
	}
	if snap, err := registry.Current(ctx, s); err != nil || snap != nil {
		t.Fatalf("empty store: current %v, %v; want none", snap, err)
	}
	r1 := Defs(t, "1h")
	res, err := registry.Apply(ctx, s, r1, registry.ApplyOptions{Message: "first", By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if res.To.Version != 1 || res.From != 0 || len(res.Plan.Changes) != 3 {
		t.Fatalf("first apply: %+v", res)
	}
	// Applying the same definitions again changes nothing.
	res, err = registry.Apply(ctx, s, Defs(t, "1h"), registry.ApplyOptions{})
	if err != nil || !res.Plan.Empty() || res.To.Version != 0 {
		t.Fatalf("second apply of the same definitions: %+v, %v", res, err)
	}
	// A new window is breaking and refused without permission.
	_, err = registry.Apply(ctx, s, Defs(t, "2h"), registry.ApplyOptions{})
	if !errors.Is(err, registry.ErrBreaking) {
		t.Fatalf("breaking apply: %v, want ErrBreaking", err)
	}
	if head, _ := s.Head(ctx); head != 1 {
		t.Fatalf("a refused apply moved the head to %d", head)
	}
	// So are empty definitions, which would delete every definition (an
	// empty file applied by accident).
	_, err = registry.Apply(ctx, s, registry.Empty(), registry.ApplyOptions{})
	if !errors.Is(err, registry.ErrBreaking) || !strings.Contains(err.Error(), "would delete all 3 definitions") {
		t.Fatalf("apply of no definitions: %v, want ErrBreaking naming the 3 definitions", err)
	}
	if head, _ := s.Head(ctx); head != 1 {
		t.Fatalf("a refused apply of no definitions moved the head to %d", head)
	}
	res, err = registry.Apply(ctx, s, Defs(t, "2h"), registry.ApplyOptions{AllowBreaking: true, Message: "longer window"})
	if err != nil || res.To.Version != 2 {
		t.Fatalf("allowed breaking apply: %+v, %v", res, err)
	}
	snap, err := registry.Current(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Version != 2 || snap.Digest != Defs(t, "2h").Digest() || snap.Registry.Digest() != snap.Digest {
		t.Fatalf("current: version %d digest %s", snap.Version, snap.Digest)
	}
	if got := snap.Registry.View("v").Feature("s").Window.String(); got != "2h" {
		t.Fatalf("stored window %s, want 2h", got)
	}
	vs, err := s.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 || vs[0].Version != 2 || vs[1].Version != 1 || vs[1].Message != "first" || vs[1].AppliedBy != "test" || vs[0].AppliedAt.IsZero() {
		t.Fatalf("versions: %+v", vs)
	}
	old, err := s.Get(ctx, 1)
	if err != nil || old.Registry.Digest() != r1.Digest() {
		t.Fatalf("version 1: %v", err)
	}
	// A commit against a stale head is refused.
	_, err = s.Commit(ctx, 1, registry.VersionInfo{Digest: "x"}, r1.CanonicalJSON())
	if !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("stale commit: %v, want ErrConflict", err)
	}
}

// Many appliers race; each version must be exactly one applier's content,
// versions must be contiguous, and losers must get ErrConflict.
func testConcurrent(t *testing.T, open func(t *testing.T) registry.Store) {
	ctx := context.Background()
	base := open(t)
	if _, err := registry.Apply(ctx, base, Defs(t, "1h"), registry.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	windows := []string{"2h", "3h", "4h", "5h", "6h", "7h", "8h", "9h"}
	var wg sync.WaitGroup
	results := make([]error, len(windows))
	for i, w := range windows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := open(t) // each applier its own connection to the same store
			_, results[i] = registry.Apply(ctx, s, Defs(t, w), registry.ApplyOptions{AllowBreaking: true, Message: w})
		}()
	}
	wg.Wait()
	wins := 0
	for i, err := range results {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, registry.ErrConflict):
		default:
			t.Errorf("applier %s: %v", windows[i], err)
		}
	}
	vs, err := base.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if wins == 0 || len(vs) != 1+wins {
		t.Fatalf("%d applies won but %d versions exist", wins, len(vs))
	}
	for i, v := range vs {
		if want := int64(len(vs) - i); v.Version != want {
			t.Fatalf("versions not contiguous: %+v", vs)
		}
		snap, err := base.Get(ctx, v.Version)
		if err != nil {
			t.Fatal(err)
		}
		if snap.Registry.Digest() != v.Digest {
			t.Fatalf("version %d: content does not match its digest (interleaved commit)", v.Version)
		}
		if v.Version > 1 && !strings.HasSuffix(v.Message, "h") {
			t.Fatalf("version %d: message %q", v.Version, v.Message)
		}
	}
}

func testWatch(t *testing.T, s registry.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := registry.Apply(ctx, s, Defs(t, "1h"), registry.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	changed := make(chan int64, 10)
	w := registry.NewWatcher(s, registry.WatcherOptions{OnChange: func(s *registry.Snapshot) { changed <- s.Version }})
	if _, err := w.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if w.Current() == nil || w.Current().Version != 1 {
		t.Fatalf("watcher starts at %+v, want version 1", w.Current())
	}
	<-changed
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	start := time.Now()
	if _, err := registry.Apply(ctx, s, Defs(t, "2h"), registry.ApplyOptions{AllowBreaking: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-changed:
		if v != 2 {
			t.Fatalf("watcher loaded version %d, want 2", v)
		}
		// The contract is 2 s; the watcher polls every second. Timing is
		// logged, not asserted: shared machines are noisy.
		t.Logf("watcher saw the new version after %v", time.Since(start))
	case <-ctx.Done():
		t.Fatal("watcher never saw version 2")
	}
	if w.Current().Version != 2 {
		t.Fatal("Current is not the new version")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
