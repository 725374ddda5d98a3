package cmd

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// fileRegistryEnv applies the examples to a new file registry and returns
// the environment that points commands at it, with no metrics endpoint.
func fileRegistryEnv(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{
		"FEATURESTORE_REGISTRY":     "file:" + t.TempDir(),
		"FEATURESTORE_METRICS_ADDR": "",
		// Nothing listens on port 1: these tests must fail before they
		// reach Kafka or Redis.
		"FEATURESTORE_REDIS_ADDR":    "127.0.0.1:1",
		"FEATURESTORE_KAFKA_BROKERS": "127.0.0.1:1",
	}
	if code, out, errOut := runCLI(t, env, "apply", "../../examples"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	return env
}

// runBounded runs the command like runCLI, but cancels it after d, so that
// a command which wrongly starts running ends the test instead of hanging it.
func runBounded(t *testing.T, env map[string]string, d time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out, errOut syncBuffer
	code := runContext(ctx, args, &out, &errOut, envMap(env))
	if ctx.Err() != nil {
		t.Errorf("%q ran until cancelled (exit %d); it must fail at start\n%s%s", args, code, out.String(), errOut.String())
	}
	return code, out.String() + errOut.String()
}

// TestIngestUsage: ingest refuses, as usage errors, the settings it cannot
// run with, before it consumes anything.
func TestIngestUsage(t *testing.T) {
	env := fileRegistryEnv(t)
	for _, c := range []struct {
		args []string
		want []string // in the error
	}{
		// A misspelt source would otherwise ingest nothing, without a word.
		{[]string{"--sources", "nosuch"}, []string{`"nosuch"`, "card_transactions"}},
		{[]string{"--sources", "card_transactions,nosuch"}, []string{`"nosuch"`, "card_transactions"}},
		// Kafka refuses a session timeout below 6s, and the group then
		// retries for ever.
		{[]string{"--session-timeout", "5s"}, []string{"--session-timeout", "6s"}},
		{[]string{"--batch-size", "0"}, []string{"--batch-size"}},
		{[]string{"--max-batch-size", "-1"}, []string{"--max-batch-size"}},
		{[]string{"--linger", "0s"}, []string{"--linger"}},
		{[]string{"--redis-wait-replicas", "-1"}, []string{"--redis-wait-replicas -1"}},
		{[]string{"--redis-wait-replicas", "1", "--redis-wait-timeout", "0s"}, []string{"--redis-wait-timeout 0s"}},
		{[]string{"--redis-sentinel-password", "secret"}, []string{"--redis-sentinel-master"}},
		{[]string{"--redis-sentinel-master", "m", "--redis-cluster"}, []string{"--redis-sentinel-master and --redis-cluster"}},
	} {
		args := append([]string{"ingest"}, c.args...)
		code, out := runBounded(t, env, 5*time.Second, args...)
		if code != 2 {
			t.Errorf("%q: exit %d, want 2\n%s", args, code, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%q: the error does not name %s:\n%s", args, w, out)
			}
		}
	}
}

// TestServeNegativeShutdownTimeout: a negative drain time would cut calls
// off at once at shutdown.
func TestServeNegativeShutdownTimeout(t *testing.T) {
	env := fileRegistryEnv(t)
	code, out := runBounded(t, env, 5*time.Second, "serve", "--shutdown-timeout", "-1s", "--http-addr", "", "--flight-addr", "")
	if code != 2 || !strings.Contains(out, "--shutdown-timeout") {
		t.Fatalf("serve --shutdown-timeout -1s: exit %d, want 2 naming the flag\n%s", code, out)
	}
}

// TestServeReadReplicasNeedsReplicas: a standalone Redis has no replicas
// the client could find.
func TestServeReadReplicasNeedsReplicas(t *testing.T) {
	env := fileRegistryEnv(t)
	code, out := runBounded(t, env, 5*time.Second, "serve", "--redis-read-replicas", "--http-addr", "", "--flight-addr", "")
	if code != 2 || !strings.Contains(out, "--redis-read-replicas needs Redis Cluster") {
		t.Fatalf("serve --redis-read-replicas on a standalone Redis: exit %d, want 2 naming the flag\n%s", code, out)
	}
}

// TestPortInUseNamesFlag: a taken port fails the start with an error that
// names the flag which moves it.
func TestPortInUseNamesFlag(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	env := fileRegistryEnv(t)
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"ingest", "--metrics-addr", addr}, "--metrics-addr"},
		{[]string{"serve", "--metrics-addr", addr, "--grpc-addr", "127.0.0.1:0", "--http-addr", ""}, "--metrics-addr"},
		{[]string{"serve", "--grpc-addr", addr, "--http-addr", ""}, "--grpc-addr"},
		{[]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", addr}, "--http-addr"},
		{[]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "", "--offline-dir", t.TempDir(), "--flight-addr", addr}, "--flight-addr"},
	} {
		code, out := runBounded(t, env, 30*time.Second, c.args...)
		if code != 1 || !strings.Contains(out, c.flag) || !strings.Contains(out, "address already in use") {
			t.Errorf("%q: exit %d, want 1 and an error naming %s\n%s", c.args, code, c.flag, out)
		}
	}
	devArgs := []string{"dev", "--data-dir", t.TempDir(), "--definitions", "../../examples",
		"--kafka-listen", "127.0.0.1:0", "--redis-listen", "127.0.0.1:0", "--metrics-addr", "", "--grpc-addr", "127.0.0.1:0",
		"--http-addr", "", "--flight-addr", "", "--log-level", "warn"}
	for _, c := range []struct{ flag, value string }{
		{"--metrics-addr", addr},
		{"--grpc-addr", addr},
		{"--http-addr", addr},
		{"--flight-addr", addr},
	} {
		args := append(append([]string{}, devArgs...), c.flag, c.value)
		args[2] = t.TempDir()
		code, out := runBounded(t, nil, 60*time.Second, args...)
		if code != 1 || !strings.Contains(out, c.flag) || !strings.Contains(out, "address already in use") {
			t.Errorf("dev %s in use: exit %d, want 1 and an error naming the flag\n%s", c.flag, code, out)
		}
	}
}

// TestDevOfflineDirURL: dev mode's Flight service reads a local directory;
// given a URL it would read a directory named "s3:" while ingest writes to
// the bucket, and export nothing.
func TestDevOfflineDirURL(t *testing.T) {
	code, out := runBounded(t, nil, 30*time.Second, "dev", "--data-dir", t.TempDir(), "--definitions", "../../examples",
		"--kafka-listen", "127.0.0.1:0", "--redis-listen", "127.0.0.1:0", "--metrics-addr", "", "--grpc-addr", "127.0.0.1:0",
		"--http-addr", "", "--offline-dir", "s3://bucket/prefix")
	if code != 2 || !strings.Contains(out, "--offline-dir") {
		t.Fatalf("dev --offline-dir s3://...: exit %d, want 2 naming the flag\n%s", code, out)
	}
}

// TestDevOfflineLogWithoutKafkaState: the offline log holds positions in the
// dev Kafka's topics; with the Kafka state removed, the topics restart at
// offset 0 and the log would drop the new events as replays. Dev mode
// refuses to start, and says to remove the whole data directory.
func TestDevOfflineLogWithoutKafkaState(t *testing.T) {
	dataDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dataDir, "offline", "default"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "offline", "default", "MANIFEST"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runBounded(t, nil, 30*time.Second, "dev", "--data-dir", dataDir, "--definitions", "../../examples",
		"--kafka-listen", "127.0.0.1:0", "--redis-listen", "127.0.0.1:0", "--metrics-addr", "", "--grpc-addr", "127.0.0.1:0",
		"--http-addr", "", "--flight-addr", "")
	if code != 1 || !strings.Contains(out, "remove the whole data directory "+dataDir) {
		t.Fatalf("dev with an offline log but no Kafka state: exit %d, want 1 and advice to remove %s\n%s", code, dataDir, out)
	}
}

// TestIngestWarnsOfDroppedSource: a later registry version without a source
// named in --sources is ingested without it, with a warning naming it.
func TestIngestWarnsOfDroppedSource(t *testing.T) {
	env := fileRegistryEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runContext(ctx, []string{"ingest", "--sources", "card_transactions", "--watch-interval", "50ms"}, &out, &errOut, envMap(env))
	}()
	for !strings.Contains(errOut.String(), "ingest running") {
		select {
		case code := <-done:
			t.Fatalf("ingest exited %d early\n%s", code, errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The next version renames the source, and has nothing that reads it.
	defs := t.TempDir()
	b, err := os.ReadFile("../../examples/sources.yaml")
	if err != nil {
		t.Fatal(err)
	}
	renamed := strings.Replace(string(b), "name: card_transactions", "name: card_payments", 1)
	if err := os.WriteFile(filepath.Join(defs, "sources.yaml"), []byte(renamed), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, o, e := runCLI(t, env, "apply", "--allow-breaking", defs); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, o, e)
	}
	for !strings.Contains(errOut.String(), "no source named in --sources") {
		select {
		case code := <-done:
			t.Fatalf("ingest exited %d\n%s", code, errOut.String())
		case <-ctx.Done():
			t.Fatalf("no warning of the dropped source:\n%s", errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if log := errOut.String(); !strings.Contains(log, "registry_version=2") || !strings.Contains(log, "card_transactions") {
		t.Errorf("the warning must name the version and the source:\n%s", log)
	}
	cancel()
	<-done
}

// TestIngestWarnsOfMissingReplicas: ingest waiting for a replica of a
// Redis that has none says so at start (its batches would fail until it
// has one).
func TestIngestWarnsOfMissingReplicas(t *testing.T) {
	env := fileRegistryEnv(t)
	env["FEATURESTORE_REDIS_ADDR"] = testenv.RedisOwn(t)
	stop, log := startCommandLog(context.Background(), env, "ingest", "--redis-wait-replicas", "1")
	for start := time.Now(); !strings.Contains(log(), "ingest running") && time.Since(start) < 30*time.Second; {
		time.Sleep(20 * time.Millisecond)
	}
	want := "Redis has fewer replicas than --redis-wait-replicas"
	if out := stop(); !strings.Contains(out, want) || !strings.Contains(out, "replicas=0") {
		t.Fatalf("ingest does not warn %q at start:\n%s", want, out)
	}
}

// TestIngestEmptyKafkaBrokers: with --kafka-brokers empty and a source on
// the default connection, ingest stops at start with a usage error naming
// --kafka-brokers; it used to start and fail naming --kafka-connections.
func TestIngestEmptyKafkaBrokers(t *testing.T) {
	env := fileRegistryEnv(t)
	code, out := runBounded(t, env, 10*time.Second, "ingest", "--kafka-brokers", "")
	if code != 2 || !strings.Contains(out, "--kafka-brokers") {
		t.Fatalf("ingest --kafka-brokers '': exit %d, want 2 naming --kafka-brokers\n%s", code, lastLines(out, 2))
	}
}
