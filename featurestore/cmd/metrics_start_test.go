package cmd

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// The series the tests below expect at 0 before the first lookup or
// event, in the exposition format, labels in name order; for a histogram,
// its _count. Written out here, not taken from the code's own lists.

// examplesViews are the feature views of ../../examples; the on-demand
// view's features are examplesOnDemand.
var (
	examplesViews    = []string{"card_txn", "merchant_txn"}
	examplesOnDemand = []string{"amount_over_card_max_1d", "amount_over_merchant_mean_1d", "country_changed", "burst"}
)

// scrape returns the series of the /metrics page at addr with their values,
// or the error that kept it from reading them.
func scrape(addr string) (map[string]string, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %d %v", resp.StatusCode, err)
	}
	series := map[string]string{}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		series[line[:i]] = line[i+1:]
	}
	return series, nil
}

// waitForSeries scrapes addr until every series of want is there and none
// of gone, and then fails the test for each of want that is not 0.
func waitForSeries(t *testing.T, addr string, want, gone []string, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := scrape(addr)
		var wrong []string
		for _, s := range want {
			if _, ok := got[s]; !ok {
				wrong = append(wrong, "missing "+s)
			}
		}
		for _, s := range gone {
			if _, ok := got[s]; ok {
				wrong = append(wrong, "still "+s)
			}
		}
		if err == nil && len(wrong) == 0 {
			for _, s := range want {
				if got[s] != "0" {
					t.Errorf("%s = %s before the first lookup or event, want 0", s, got[s])
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics (%v):\n%s\n%s", err, strings.Join(wrong, "\n"), logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// applyCardOnly applies the examples in defs without the merchant's feature
// view, the on-demand view that reads it and the feature services, as a
// new registry version.
func applyCardOnly(t *testing.T, env map[string]string, defs string) {
	t.Helper()
	for _, f := range []string{"merchant_features.yaml", "on_demand.yaml", "services.yaml"} {
		if err := os.Remove(filepath.Join(defs, f)); err != nil {
			t.Fatal(err)
		}
	}
	if code, out, errOut := runCLI(t, env, "apply", "--allow-breaking", defs); code != 0 {
		t.Fatalf("apply without the merchant's view: exit %d\n%s%s", code, out, errOut)
	}
}

// split returns the series of all that name view, and the others.
func split(all []string, view string) (of, others []string) {
	for _, s := range all {
		if strings.Contains(s, `view="`+view+`"`) {
			of = append(of, s)
		} else {
			others = append(others, s)
		}
	}
	return of, others
}

// TestServeMetricsBeforeFirstLookup runs 'featurestore serve' with TLS, an
// access policy and Flight exports, and reads /metrics once it is healthy,
// before any lookup: the series of the registry version's views, of the
// lookups' codes and of the enumerated results and reasons are there at 0,
// so that rate() alerts see 0 rather than no data.
func TestServeMetricsBeforeFirstLookup(t *testing.T) {
	pki := newTestPKI(t)
	project := testenv.UniqueName(t, "serve-metrics")
	metrics := freeAddr(t)
	env := map[string]string{
		"FEATURESTORE_REGISTRY":     "file:" + t.TempDir(),
		"FEATURESTORE_REDIS_ADDR":   testenv.RedisAddr(t),
		"FEATURESTORE_PROJECT":      project,
		"FEATURESTORE_METRICS_ADDR": metrics,
	}
	defs := copyDir(t, "../../examples")
	if code, out, errOut := runCLI(t, env, "apply", defs); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, fmt.Appendf(nil, "principals:\n  - name: scoring\n    token_sha256: [%s]\n    grants: [{project: %s, views: [card_txn]}]\n",
		strings.Repeat("ab", 32), project), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runContext(ctx, []string{"serve", "--grpc-addr", addr, "--http-addr", freeAddr(t), "--tls-cert", pki.certFile, "--tls-key", pki.keyFile,
			"--auth-policy", policy, "--offline-dir", t.TempDir(), "--flight-addr", freeAddr(t)}, &bytes.Buffer{}, &stderr, envMap(env))
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pki.roots})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitServing(t, conn, 10*time.Second, stderr.String)

	var want []string
	for _, v := range append(slices.Clone(examplesViews), "txn_risk") {
		for _, st := range []string{"present", "not_found", "expired", "null", "error"} {
			want = append(want, fmt.Sprintf(`featurestore_serving_values_total{status=%q,view=%q}`, st, v))
		}
	}
	for _, v := range examplesViews {
		want = append(want, fmt.Sprintf(`featurestore_serving_corrupt_state_total{view=%q}`, v))
	}
	for _, f := range examplesOnDemand {
		want = append(want, fmt.Sprintf(`featurestore_serving_on_demand_errors_total{feature=%q,view="txn_risk"}`, f))
	}
	for _, method := range []string{"GetOnlineFeatures", "POST /v1/features:get"} {
		for _, code := range []string{"OK", "Canceled", "InvalidArgument", "DeadlineExceeded", "PermissionDenied", "ResourceExhausted", "Unavailable", "Internal"} {
			want = append(want, fmt.Sprintf(`featurestore_serving_request_duration_seconds_count{code=%q,method=%q}`, code, method))
		}
	}
	for _, r := range []string{"ok", "error", "canceled"} {
		want = append(want, fmt.Sprintf(`featurestore_serving_redis_duration_seconds_count{result=%q}`, r))
	}
	want = append(want, `featurestore_serving_redis_reads_again_total`, `featurestore_serving_tiles_merged_count`)
	for _, proto := range []string{"grpc", "http"} {
		for _, r := range []string{"missing_credentials", "malformed_credentials", "invalid_token", "unknown_certificate", "method_not_allowed", "not_granted", "not_authorized"} {
			want = append(want, fmt.Sprintf(`featurestore_serving_auth_denied_total{protocol=%q,reason=%q}`, proto, r))
		}
	}
	for _, r := range []string{"ok", "error"} {
		want = append(want, fmt.Sprintf(`featurestore_serving_auth_policy_reloads_total{result=%q}`, r),
			fmt.Sprintf(`featurestore_serving_tls_reloads_total{result=%q}`, r))
	}
	for _, code := range []string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists", "PermissionDenied",
		"ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"} {
		want = append(want, fmt.Sprintf(`featurestore_serving_flight_exports_total{code=%q}`, code))
	}
	want = append(want, "featurestore_serving_request_entities_count", "featurestore_serving_flight_exports_in_flight",
		"featurestore_serving_flight_export_duration_seconds_count", "featurestore_serving_flight_export_rows_total",
		"featurestore_serving_flight_upload_bytes_total")
	waitForSeries(t, metrics, want, nil, stderr.String)

	// A version without the merchant's view and the on-demand view that
	// reads it deletes their series.
	applyCardOnly(t, env, defs)
	merchant, others := split(want, "merchant_txn")
	onDemand, others := split(others, "txn_risk")
	waitForSeries(t, metrics, others, slices.Concat(merchant, onDemand), stderr.String)

	cancel()
	waitStopped(t, done, stderr.String)
}

// TestIngestMetricsBeforeFirstEvent runs 'featurestore ingest' with an
// offline log and reads /metrics once it is ready, before any event: the
// series of the source, its views, its partitions and the offline log's
// views and flush reasons are there at 0, so that alerts such as
// increase(featurestore_ingest_events_total{result="invalid_payload"}[10m]) > 0
// see 0 rather than no data, and count the first such event.
func TestIngestMetricsBeforeFirstEvent(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	defs := examplesOnNewTopic(t, brokers, 2)
	metrics := freeAddr(t)
	env := map[string]string{"FEATURESTORE_REGISTRY": "file:" + t.TempDir(), "FEATURESTORE_PROJECT": testenv.UniqueName(t, "p"),
		"FEATURESTORE_KAFKA_BROKERS": strings.Join(brokers, ","), "FEATURESTORE_REDIS_ADDR": testenv.RedisAddr(t),
		"FEATURESTORE_METRICS_ADDR": metrics, "FEATURESTORE_SESSION_TIMEOUT": "6s", "FEATURESTORE_LOG_LEVEL": "error"}
	if code, out, errOut := runCLI(t, env, "apply", defs); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	stop := startCommand(context.Background(), env, "ingest", "--offline-dir", t.TempDir())
	defer stop()

	const src = `source="card_transactions"`
	var want []string
	for _, r := range []string{"aborted_transaction", "bad_time", "duplicate_id", "future", "invalid_payload", "key_too_long",
		"late", "missing_time", "transaction_marker", "wrong_type"} {
		want = append(want, fmt.Sprintf(`featurestore_ingest_events_total{result=%q,%s,view=""}`, r, src))
	}
	for _, v := range examplesViews {
		for _, r := range []string{"applied", "duplicate", "missing_key"} {
			want = append(want, fmt.Sprintf(`featurestore_ingest_events_total{result=%q,%s,view=%q}`, r, src, v))
		}
		for _, m := range []string{"files_written_total", "written_bytes_total", "rows_written_total"} {
			want = append(want, fmt.Sprintf(`featurestore_offline_%s{view=%q}`, m, v))
		}
		for _, r := range []string{"replay", "lost"} {
			want = append(want, fmt.Sprintf(`featurestore_offline_rows_dropped_total{reason=%q,view=%q}`, r, v))
		}
	}
	for _, m := range []string{"dedup_forgotten_total", "apply_failures_total", "batch_apply_duration_seconds_count", "freshness_seconds_count"} {
		want = append(want, fmt.Sprintf(`featurestore_ingest_%s{%s}`, m, src))
	}
	// Not the consumer lag: a partition never read has none until its
	// first message, from whose offset it counts.
	for _, p := range []string{"0", "1"} {
		for _, m := range []string{"dedup_ids", "partition_stalled", "retention_lost_total"} {
			want = append(want, fmt.Sprintf(`featurestore_ingest_%s{partition=%q,%s}`, m, p, src))
		}
	}
	for _, r := range []string{"size", "age", "pressure", "explicit"} {
		want = append(want, fmt.Sprintf(`featurestore_offline_flush_duration_seconds_count{reason=%q}`, r))
	}
	want = append(want, "featurestore_offline_flush_errors_total", "featurestore_offline_manifest_conflicts_total",
		"featurestore_offline_pending_rows", "featurestore_offline_pending_bytes", "featurestore_ingest_buffered_bytes")
	waitForSeries(t, metrics, want, nil, stop)

	// A version without the merchant's view deletes its series, ingest's
	// and the offline log's.
	applyCardOnly(t, env, defs)
	merchant, others := split(want, "merchant_txn")
	waitForSeries(t, metrics, others, merchant, stop)
}
