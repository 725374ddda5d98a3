package ingest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/featurestore/featurestore/registry"
)

// TestReadiness: ready once every source of the running version is in its
// group; a failed join makes it not ready again; callbacks of a version
// that stopped change nothing.
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
