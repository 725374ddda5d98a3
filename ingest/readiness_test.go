package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// TestReadiness: ready once every source of the running version is in its
// group; a failed join makes it not ready again, as does a partition
// stalled or failing to apply its batch for failingUnready, until it
// recovers or is released; callbacks of a version that stopped change
// nothing.
func TestReadiness(t *testing.T) {
	var nilReady *Readiness
	if ok, why := nilReady.Ready(); ok || why != "ingest has not started" {
		t.Errorf("nil: %v %q", ok, why)
	}
	r := &Readiness{}
	check := func(want bool, says string) {
		t.Helper()
		if ok, why := r.Ready(); ok != want || !strings.Contains(why, says) {
			t.Errorf("Ready() = %v, %q; want %v saying %q", ok, why, want, says)
		}
	}
	check(false, "no registry version running yet")
	r.start(3)
	check(false, "registry version 3: starting its sources")
	a := r.source("a")
	a(true) // in its group before the next source started
	check(false, "registry version 3: starting its sources")
	b := r.source("b")
	bTopics := r.topics("b")
	r.allStarted()
	check(false, "not in their consumer group yet: b")
	bTopics([]string{"tb", "tb.dlq"})
	check(false, "registry version 3: waiting for topics that do not exist: tb (source b), tb.dlq (source b)")
	bTopics(nil)
	check(false, "not in their consumer group yet: b")
	b(true)
	check(true, "registry version 3: every source in its consumer group (2)")
	b(false)
	check(false, "not in their consumer group yet: b")
	r.stop()
	check(false, "no registry version running yet")
	r.start(4)
	c := r.source("a")
	r.allStarted()
	a(true) // of version 3
	check(false, "registry version 4: not in their consumer group yet: a")
	c(true)
	check(true, "registry version 4: every source in its consumer group (1)")

	// A stalled partition makes it not ready until it reads again.
	var nilHealth *partitionHealth
	nilHealth.stalled(0, "recreated topic") // records nothing
	h := r.partitions("a", "ta")
	h.stalled(3, "recreated topic: offset 29 holds another record than ingest read there")
	check(false, "registry version 4: topic ta partition 3 (source a) stalled: recreated topic: offset 29")
	h.stalled(3, "")
	check(true, "registry version 4: every source in its consumer group (1)")
	// A batch failing makes it not ready once it has failed for
	// failingUnready, not before (an outage of seconds), until a batch is
	// applied.
	h.failed(10, doingApply, time.Now(), errors.New("dial tcp: connection refused"))
	check(true, "every source in its consumer group")
	since := time.Now().Add(-failingUnready)
	h.failed(10, doingApply, since, errors.New("OOM command not allowed when used memory > 'maxmemory'"))
	check(false, fmt.Sprintf("registry version 4: topic ta partition 10 (source a): applying a batch has failed 2 times since %s: OOM command not allowed",
		since.UTC().Format(time.RFC3339)))
	h.succeeded(10)
	check(true, "every source in its consumer group")
	// Several partitions, in order; a released one (revoked) is forgotten.
	h.failed(10, doingApply, since, errors.New("OOM"))
	h.stalled(2, "recreated topic or lost log: position 30 is past the partition's end 0")
	check(false, fmt.Sprintf("registry version 4: topic ta partition 2 (source a) stalled: recreated topic or lost log: position 30 is past the partition's end 0; "+
		"topic ta partition 10 (source a): applying a batch has failed once since %s: OOM", since.UTC().Format(time.RFC3339)))
	h.released(2)
	h.released(10)
	check(true, "every source in its consumer group")
	// The partitions of a version that stopped change nothing.
	r.stop()
	r.start(5)
	d := r.source("a")
	r.allStarted()
	d(true)
	h.stalled(1, "recreated topic")
	check(true, "registry version 5: every source in its consumer group (1)")
}

// TestStartSourcesWarnsOfUnloggedViews: views are offline by default, so
// ingest without an offline log says that their events are not kept for
// exports, naming them, once per registry version.
func TestStartSourcesWarnsOfUnloggedViews(t *testing.T) {
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, e2eDefs, "txns")})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the groups stop at once
	var wg sync.WaitGroup
	cfg := ServiceConfig{Project: "p", Brokers: func(*registry.Source) ([]string, error) { return []string{"127.0.0.1:1"}, nil }}
	snap := &registry.Snapshot{VersionInfo: registry.VersionInfo{Version: 7}, Registry: r}
	startSources(ctx, &wg, cfg, snap, log)
	wg.Wait()
	want := `level=WARN msg="feature views are offline (the default) but ingest writes no offline log (--offline-dir): their events are not kept for training exports" registry_version=7 views=[card_txn]`
	if !strings.Contains(buf.String(), want) {
		t.Errorf("logged:\n%s\nwant a line ending %s", buf.String(), want)
	}
}

// memStore is a registry.Store holding versions in memory, whose head
// the test moves.
type memStore struct {
	mu    sync.Mutex
	head  int64
	snaps map[int64]*registry.Snapshot
}

func (s *memStore) Head(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head, nil
}

func (s *memStore) Get(_ context.Context, v int64) (*registry.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap, ok := s.snaps[v]
	if !ok {
		return nil, fmt.Errorf("no version %d", v)
	}
	return snap, nil
}

func (s *memStore) Versions(context.Context) ([]registry.VersionInfo, error) { return nil, nil }
func (s *memStore) Commit(context.Context, int64, registry.VersionInfo, []byte) (registry.VersionInfo, error) {
	return registry.VersionInfo{}, errors.New("read only")
}
func (s *memStore) Close() error { return nil }

const unknownConnectionSource = `
---
kind: Source
name: eu_txns
kafka: {topic: eu_txns, connection: eu}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card_id: card}
fields: {amount: double}
allowed_lateness: 10m
---
kind: FeatureView
name: eu_card
entity: card
source: eu_txns
tile: 1m
features:
  - {name: n_1h, aggregation: count, window: 1h}
`

// TestRegistryChangeKeepsOtherSources: a registry version applied while
// ingest runs that adds a source this process cannot read (a named Kafka
// connection it was not given) leaves the sources it can read running:
// the new source is skipped and readiness says so. RunService used to
// return the error, so that the process stopped ingesting every source,
// and a restart refused to start (exit 2) until its flags changed.
func TestRegistryChangeKeepsOtherSources(t *testing.T) {
	topic := testenv.UniqueName(t, "regchange")
	brokers := startKafka(t, topic, 1)
	rc, store := miniStore(t)
	v1, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, e2eDefs, topic)})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, e2eDefs+unknownConnectionSource, topic)})
	if err != nil {
		t.Fatal(err)
	}
	st := &memStore{head: 1, snaps: map[int64]*registry.Snapshot{
		1: {VersionInfo: registry.VersionInfo{Version: 1, Digest: "a"}, Registry: v1},
		2: {VersionInfo: registry.VersionInfo{Version: 2, Digest: "b"}, Registry: v2},
	}}
	w := registry.NewWatcher(st, registry.WatcherOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := w.Load(ctx); err != nil {
		t.Fatal(err)
	}
	conns := map[string][]string{"default": brokers}
	cfg := ServiceConfig{
		Project: "p",
		Brokers: func(src *registry.Source) ([]string, error) {
			b, ok := conns[src.Kafka.Connection]
			if !ok {
				return nil, fmt.Errorf("no brokers for Kafka connection %q of source %q", src.Kafka.Connection, src.Name)
			}
			return b, nil
		},
		GroupPrefix: "regchange",
		Group:       GroupConfig{SessionTimeout: 6 * time.Second, ShutdownTimeout: 5 * time.Second},
		Store:       store,
		Positions:   NewPositions(rc, "p"),
		Readiness:   &Readiness{},
	}
	var returned atomic.Bool
	done := make(chan error, 1)
	go func() {
		err := RunService(ctx, cfg, w)
		returned.Store(true)
		done <- err
	}()
	waitFor(t, "source txns in its group", 30*time.Second, func() bool { ok, _ := cfg.Readiness.Ready(); return ok })
	st.mu.Lock()
	st.head = 2
	st.mu.Unlock()
	if _, err := w.Load(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("RunService returned after registry version 2 added a source on an unknown connection: %v; want source txns still ingested", err)
	case <-time.After(5 * time.Second):
	}
	waitFor(t, "version 2 running, source txns in its group", 30*time.Second, func() bool {
		r := cfg.Readiness
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.running && r.version == 2 && r.inGroup["txns"]
	})
	ok, why := cfg.Readiness.Ready()
	if want := `registry version 2: sources not ingested: eu_txns (no brokers for Kafka connection "eu" of source "eu_txns")`; ok || why != want {
		t.Errorf("readiness: %v, %q; want false, %q", ok, why, want)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Error("RunService did not stop")
	}
}
