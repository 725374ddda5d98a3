package cmd

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/featurestore/featurestore/featurestore/testenv"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// TestServe applies the examples to a file registry, runs 'featurestore
// serve' in-process against real Redis, looks features up over gRPC, reads
// its metrics, and stops it as SIGTERM would. The project is new, so its
// online state is empty.
func TestServe(t *testing.T) {
	metrics := freeAddr(t)
	env := examplesServeEnv(t, metrics)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- runContext(ctx, []string{"serve", "--grpc-addr", addr, "--http-addr", "", "--max-entities", "2"},
			&bytes.Buffer{}, &stderr, envMap(env))
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitServing(t, conn, 10*time.Second, stderr.String)
	client := pb.NewOnlineServiceClient(conn)
	key := &pb.EntityKey{JoinKeyValues: []*pb.Value{{Kind: &pb.Value_StringVal{StringVal: "no-such-card"}}}}
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	resp, err := client.GetOnlineFeatures(cctx, &pb.GetOnlineFeaturesRequest{
		Kind:     &pb.GetOnlineFeaturesRequest_Features{Features: &pb.FeatureList{Refs: []string{"card_txn:txn_count_1h"}}},
		Entities: []*pb.EntityKey{key},
	})
	if err != nil {
		t.Fatalf("GetOnlineFeatures: %v", err)
	}
	if v := resp.GetResults()[0].GetValues()[0]; v.GetStatus() != pb.FeatureStatus_FEATURE_STATUS_PRESENT || v.GetValue().GetInt64Val() != 0 || resp.GetRegistryVersion() != 1 {
		t.Errorf("unknown card: %v, registry version %d", v, resp.GetRegistryVersion())
	}
	_, err = client.GetOnlineFeatures(cctx, &pb.GetOnlineFeaturesRequest{
		Kind:     &pb.GetOnlineFeaturesRequest_Features{Features: &pb.FeatureList{Refs: []string{"card_txn:txn_count_1h"}}},
		Entities: []*pb.EntityKey{key, key, key},
	})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "more than the 2 allowed") {
		t.Errorf("3 entities with --max-entities 2: %v", err)
	}
	// The online store client's pool: the lookup's read, a pipeline, took
	// a connection of the pipeline pool.
	mresp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{`(?m)^featurestore_redis_pool_misses_total\{pool="pipeline"\} [1-9]`, `(?m)^featurestore_redis_pool_timeouts_total\{pool="main"\} 0$`,
		`(?m)^featurestore_registry_version\{project="` + regexp.QuoteMeta(env["FEATURESTORE_PROJECT"]) + `"\} 1$`} {
		if !regexp.MustCompile(want).Match(body) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	// No profiles without --pprof.
	if code, _ := httpGet(t, "http://"+metrics+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --pprof: %d", code)
	}
	cancel()
	waitStopped(t, done, stderr.String)
}

// examplesServeEnv applies the examples to a new file registry and project,
// and returns the environment of a serve of it against the real Redis,
// with its metrics on metrics.
func examplesServeEnv(t *testing.T, metrics string) map[string]string {
	t.Helper()
	env := map[string]string{
		"FEATURESTORE_REGISTRY":     "file:" + t.TempDir(),
		"FEATURESTORE_REDIS_ADDR":   testenv.RedisAddr(t),
		"FEATURESTORE_PROJECT":      testenv.UniqueName(t, "serve"),
		"FEATURESTORE_METRICS_ADDR": metrics,
	}
	if code, out, errOut := runCLI(t, env, "apply", "../../examples"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	return env
}

// TestServePprof runs 'featurestore serve --pprof': the runtime's profiles
// on the metrics server.
func TestServePprof(t *testing.T) {
	metrics := freeAddr(t)
	env := examplesServeEnv(t, metrics)
	stop := startCommand(context.Background(), env, "serve", "--pprof", "--grpc-addr", freeAddr(t), "--http-addr", "")
	defer stop()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := httpGet(t, "http://"+metrics+"/debug/pprof/heap?debug=1")
		if code == http.StatusOK && strings.Contains(body, "heap profile:") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/debug/pprof/heap: %d %.200q\n%s", code, body, stop())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// httpGet returns the status and body of a GET of url; status 0 and the
// error as the body when it fails.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // in standard error
	}{
		{[]string{"serve", "extra"}, "serve takes no arguments"},
		{[]string{"serve", "--max-entities", "0"}, "--max-entities must be positive"},
		{[]string{"serve", "--default-deadline", "0s"}, "--default-deadline must be positive"},
		// Not wrapped to 0, then taken for the default.
		{[]string{"serve", "--max-concurrent-streams", "4294967296"}, "--max-concurrent-streams must be between 1 and 4294967295"},
		{[]string{"serve", "--max-concurrent-streams", "0"}, "--max-concurrent-streams must be between 1 and 4294967295"},
	} {
		// A bounded wait: a serve that wrongly starts stops there.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var errOut bytes.Buffer
		code := runContext(ctx, c.args, io.Discard, &errOut, envMap(map[string]string{"FEATURESTORE_METRICS_ADDR": ""}))
		cancel()
		if code != 2 || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%q: exit %d, want 2 saying %q\n%s", c.args, code, c.want, errOut.String())
		}
	}
}

// waitServing waits until the gRPC health service on conn says SERVING,
// failing the test after wait with log, the server's.
func waitServing(t *testing.T, conn *grpc.ClientConn, wait time.Duration, log func() string) {
	t.Helper()
	hc := healthpb.NewHealthClient(conn)
	for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not healthy: %v\n%s", err, log())
		}
	}
}

// waitStopped waits for serve, whose context was cancelled, to send its
// exit code on done: 0 within 15 seconds, or the test fails with log.
func waitStopped(t *testing.T, done <-chan int, log func() string) {
	t.Helper()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve: exit %d\n%s", code, log())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
}

// TestServeEmptyGRPCAddr: --http-addr= and --flight-addr= turn those
// listeners off, but an empty --grpc-addr would make serve listen on every
// interface at a random port: unauthenticated lookups exposed beyond
// loopback. It is refused.
func TestServeEmptyGRPCAddr(t *testing.T) {
	env := fileRegistryEnv(t)
	code, out := runBounded(t, env, 4*time.Second, "serve", "--grpc-addr", "", "--http-addr", "", "--flight-addr", "")
	if code != 2 || !strings.Contains(out, "--grpc-addr") {
		t.Fatalf("serve --grpc-addr '': exit %d, want 2 naming --grpc-addr\n%s", code, out)
	}
}

// TestServeNegativeWatchInterval: a --watch-interval that is not positive
// is refused, like serve's other durations, rather than silently replaced
// by 1s (registry.NewWatcher).
func TestServeNegativeWatchInterval(t *testing.T) {
	env := fileRegistryEnv(t)
	code, out := runBounded(t, env, 4*time.Second, "serve", "--grpc-addr", testAddr(t), "--http-addr", "", "--flight-addr", "",
		"--watch-interval", "-1s")
	if code != 2 || !strings.Contains(out, "--watch-interval") {
		t.Fatalf("serve --watch-interval -1s: exit %d, want 2 naming the flag\n%s", code, out)
	}
}

// TestServeZeroShutdownTimeout: --shutdown-timeout 0 cuts the calls in
// flight off at once; the servers read a zero ShutdownTimeout as their
// 10s default, which held the stop for 10s.
func TestServeZeroShutdownTimeout(t *testing.T) {
	env := fileRegistryEnv(t)
	flightAddr := testAddr(t)
	stop, logs := startCommandLog(context.Background(), env, "serve", "--grpc-addr", testAddr(t), "--http-addr", "",
		"--offline-dir", t.TempDir(), "--flight-addr", flightAddr, "--shutdown-timeout", "0")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs(), "flight listening") {
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("serve did not start:\n%s", logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	client, err := flight.NewClientWithMiddleware(flightAddr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	// A call that has sent nothing yet: in flight on the server.
	if _, err := client.DoExchange(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("serve --shutdown-timeout 0 took %v to stop with one call in flight; want the call cut off at once", d.Round(time.Millisecond))
	}
}

// TestServeSameAddressTwice: two of serve's listeners given the same
// address are a usage error naming both flags, checked before anything
// listens; the second bind's failure blamed "another process".
func TestServeSameAddressTwice(t *testing.T) {
	env := fileRegistryEnv(t)
	addr := testAddr(t)
	code, out := runBounded(t, env, 5*time.Second, "serve", "--grpc-addr", testAddr(t), "--metrics-addr", addr, "--http-addr", addr, "--flight-addr", "")
	if code != 2 || strings.Contains(out, "another process") {
		t.Fatalf("serve --metrics-addr %s --http-addr %s: exit %d, want 2 saying the two flags conflict\n%s", addr, addr, code, lastLines(out, 1))
	}
}
