package registry_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/featurestore/featurestore/registry"
	"github.com/featurestore/featurestore/registry/storetest"
)

// A store that lost versions (a Redis failover with asynchronous
// replication, a restore from backup) numbers the next apply again: the
// watcher must load it although its number is not above the one it holds.
func TestWatcherReloadsReusedVersionNumber(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := registry.OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	apply := func(window string) registry.VersionInfo {
		t.Helper()
		res, err := registry.Apply(ctx, s, storetest.Defs(t, window), registry.ApplyOptions{AllowBreaking: true, By: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return res.To
	}
	apply("1h")
	v2 := apply("2h")
	var logs syncBuffer
	w := registry.NewWatcher(s, registry.WatcherOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if ok, err := w.Load(ctx); !ok || err != nil {
		t.Fatalf("first load: %v, %v", ok, err)
	}
	if got := w.Current(); got.Version != 2 || got.Digest != v2.Digest {
		t.Fatalf("watcher holds %d %s, want 2 %s", got.Version, got.Digest, v2.Digest)
	}

	// The store loses version 2; an apply commits other content as 2.
	if err := os.WriteFile(filepath.Join(dir, "HEAD"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	v2b := apply("3h")
	if v2b.Version != 2 || v2b.Digest == v2.Digest {
		t.Fatalf("re-applied version: %+v", v2b)
	}
	if ok, err := w.Load(ctx); !ok || err != nil {
		t.Fatalf("load after the number was reused: %v, %v; want a new version", ok, err)
	}
	if got := w.Current(); got.Version != 2 || got.Digest != v2b.Digest || got.Registry.Digest() != storetest.Defs(t, "3h").Digest() {
		t.Fatalf("watcher holds %d %s, want 2 %s", got.Version, got.Digest, v2b.Digest)
	}
	if ok, err := w.Load(ctx); ok || err != nil {
		t.Fatalf("load with nothing new: %v, %v; want no change", ok, err)
	}

	// The head goes back below what the watcher holds: the store's head is
	// the truth, and the step back is worth a warning.
	if err := os.WriteFile(filepath.Join(dir, "HEAD"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, err := w.Load(ctx); !ok || err != nil {
		t.Fatalf("load after the head went back: %v, %v; want a new version", ok, err)
	}
	if got := w.Current(); got.Version != 1 || got.Registry.Digest() != storetest.Defs(t, "1h").Digest() {
		t.Fatalf("watcher holds %d %s, want version 1", got.Version, got.Digest)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "previous_version=2") {
		t.Fatalf("no warning of the version number going back:\n%s", logs.String())
	}
}

// A store that lost its whole registry (a Redis restart without
// persistence, a flush) has no head: the watcher keeps its version, and
// says so once, not on every poll, nor never.
func TestWatcherWarnsWhenTheRegistryIsGone(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := registry.OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Apply(ctx, s, storetest.Defs(t, "1h"), registry.ApplyOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	w := registry.NewWatcher(s, registry.WatcherOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if ok, err := w.Load(ctx); !ok || err != nil {
		t.Fatalf("first load: %v, %v", ok, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "HEAD"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if ok, err := w.Load(ctx); ok || err != nil {
			t.Fatalf("load of an empty store: %v, %v; want no change", ok, err)
		}
	}
	if got := w.Current(); got == nil || got.Version != 1 {
		t.Fatalf("watcher holds %v, want version 1 still", got)
	}
	if n := strings.Count(logs.String(), "holds no version any more"); n != 1 {
		t.Fatalf("%d warnings of the lost registry, want 1:\n%s", n, logs.String())
	}
}

// A version written by a newer build with a field this build does not know
// must not load without it: the watcher keeps serving what it has and says
// why.
func TestWatcherKeepsVersionOnUnknownFields(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir := t.TempDir()
	s, err := registry.OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	r1 := storetest.Defs(t, "1h")
	if _, err := registry.Apply(ctx, s, r1, registry.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	w := registry.NewWatcher(s, registry.WatcherOptions{Interval: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if _, err := w.Load(ctx); err != nil {
		t.Fatal(err)
	}

	// What a newer CLI would commit: a feature with a filter attribute
	// this build has never heard of.
	content := bytes.Replace(storetest.Defs(t, "2h").CanonicalJSON(), []byte(`"name":"s"`), []byte(`"name":"s","sample_rate":0.5`), 1)
	if bytes.Equal(content, storetest.Defs(t, "2h").CanonicalJSON()) {
		t.Fatal("test content has no feature named s")
	}
	if _, err := registry.FromJSON(content); err == nil || !strings.Contains(err.Error(), "sample_rate") || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("FromJSON of a snapshot with an unknown field: %v; want an error naming it and asking for an upgrade", err)
	}
	sum := sha256.Sum256(content)
	writeVersion(t, dir, registry.VersionInfo{Version: 2, Digest: "sha256:" + hex.EncodeToString(sum[:]), AppliedBy: "newer"}, content)

	if ok, err := w.Load(ctx); ok || err == nil || !strings.Contains(err.Error(), "sample_rate") {
		t.Fatalf("load of a version with an unknown field: %v, %v; want an error", ok, err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for !strings.Contains(logs.String(), "sample_rate") {
		if ctx.Err() != nil {
			t.Fatalf("the watcher never logged the unknown field:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := w.Current(); got.Version != 1 || got.Registry.Digest() != r1.Digest() {
		t.Fatalf("watcher holds version %d %s, want version 1 kept", got.Version, got.Digest)
	}
}

// Content that does not match its recorded digest is not what was
// committed, and must not load.
func TestFileStoreDigestMismatch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := registry.OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	r1 := storetest.Defs(t, "1h")
	writeVersion(t, dir, registry.VersionInfo{Version: 1, Digest: storetest.Defs(t, "2h").Digest()}, r1.CanonicalJSON())
	if _, err := s.Get(ctx, 1); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("Get of a version whose content does not match its digest: %v; want a digest error", err)
	}
}

// A crash between writing a version and moving HEAD leaves a version file
// that was never committed; nothing may read it.
func TestFileStoreGetAboveHead(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := registry.OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Apply(ctx, s, storetest.Defs(t, "1h"), registry.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Apply(ctx, s, storetest.Defs(t, "2h"), registry.ApplyOptions{AllowBreaking: true}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "HEAD"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if snap, err := s.Get(ctx, 2); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Get(2) with HEAD 1: %+v, %v; want not found", snap, err)
	}
	if _, err := s.Get(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int64{0, -1} {
		if _, err := s.Get(ctx, v); err == nil {
			t.Errorf("Get(%d) succeeded", v)
		}
	}
}

// writeVersion writes a version file and HEAD as FileStore lays them out,
// for content FileStore.Commit would not write.
func writeVersion(t *testing.T, dir string, info registry.VersionInfo, content []byte) {
	t.Helper()
	b, err := json.Marshal(struct {
		Info     registry.VersionInfo `json:"info"`
		Registry json.RawMessage      `json:"registry"`
	}{info, content})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "versions", fmt.Sprintf("%010d.json", info.Version)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "HEAD"), []byte(fmt.Sprintf("%d\n", info.Version)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a bytes.Buffer that a logger and a test may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
