package serving

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
	"github.com/featurestore/featurestore/registry"
)

// TestLookupPanic makes answering a lookup panic (in its authorization,
// the one caller-supplied function a lookup runs) and checks that the
// lookup alone fails, INTERNAL over gRPC and to the HTTP path's entry,
// with the panic logged with its stack and counted, and that the server
// answers the next lookups as before.
func TestLookupPanic(t *testing.T) {
	var boom atomic.Int32
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	f := newFixture(t, OnlineOptions{
		Metrics: m,
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Authorize: func(_ context.Context, _ string, views []string) error {
			if boom.Add(-1) >= 0 {
				panic("authorization blew up for " + strings.Join(views, ","))
			}
			return nil
		},
	})
	req := &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{skey("c1"), skey("c2")}}
	want := get(t, f.client, req)

	boom.Store(1)
	_, err := f.client.GetOnlineFeatures(context.Background(), req)
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("lookup that panicked: %v, want INTERNAL", err)
	}
	boom.Store(1)
	if _, err := f.svc.getOnlineFeatures(context.Background(), req); status.Code(err) != codes.Internal {
		t.Fatalf("HTTP lookup that panicked: %v, want INTERNAL", err)
	}
	if got := counter(t, reg, "featurestore_serving_panics_total", nil); got != 2 {
		t.Errorf("featurestore_serving_panics_total = %v, want 2", got)
	}
	if got := histogramCount(t, reg, "featurestore_serving_request_duration_seconds", map[string]string{"method": grpcLookupMethod, "code": "Internal"}); got != 1 {
		t.Errorf("gRPC lookups timed with code Internal: %d, want 1", got)
	}
	// Logged once: the second panic, of the same place within a minute,
	// is counted but not logged again.
	out := logs.String()
	for _, s := range []string{"lookup failed: panic", "authorization blew up for card_txn", "stack=", "panic_test.go", "entities=2", "at=\"github.com/featurestore/featurestore/serving.TestLookupPanic.func1 (panic_test.go:"} {
		if !strings.Contains(out, s) {
			t.Errorf("log lacks %q:\n%s", s, out)
		}
	}
	if n := strings.Count(out, "lookup failed: panic"); n != 1 {
		t.Errorf("%d log lines of panics, want 1:\n%s", n, out)
	}
	// The server goes on, with the same answers.
	for range 3 {
		if got := get(t, f.client, req); !equalRows(rows(got), rows(want)) {
			t.Fatalf("after the panic: %v, want %v", rows(got), rows(want))
		}
	}
}

func equalRows(a, b [][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if strings.Join(a[i], "\x00") != strings.Join(b[i], "\x00") {
			return false
		}
	}
	return true
}

// panickySnapshots is a registry whose current version cannot be had
// without a panic: a bug, as far as Prepare can tell.
type panickySnapshots struct{}

func (panickySnapshots) Current() *registry.Snapshot { panic("no version for you") }

// TestPreparePanic checks that a panic while a registry version is
// prepared (in the watcher's goroutine) is logged, not the end of the
// process, and that the lookups meeting it fail with INTERNAL.
func TestPreparePanic(t *testing.T) {
	var logs bytes.Buffer
	svc := NewOnlineService(panickySnapshots{}, nil, OnlineOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	svc.Prepare()
	for _, s := range []string{"planning the registry version failed: panic", "no version for you", "panic_test.go"} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("log lacks %q:\n%s", s, logs.String())
		}
	}
	req := &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{skey("c1")}}
	if _, err := svc.GetOnlineFeatures(context.Background(), req); status.Code(err) != codes.Internal {
		t.Errorf("lookup: %v, want INTERNAL", err)
	}
}
