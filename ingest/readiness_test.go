package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

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
	if _, err := startSources(ctx, &wg, cfg, snap, log); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	want := `level=WARN msg="feature views are offline (the default) but ingest writes no offline log (--offline-dir): their events are not kept for training exports" registry_version=7 views=[card_txn]`
	if !strings.Contains(buf.String(), want) {
		t.Errorf("logged:\n%s\nwant a line ending %s", buf.String(), want)
	}
}
