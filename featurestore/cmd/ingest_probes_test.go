package cmd

import (
	"context"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestIngestProbes runs 'featurestore ingest' in process and reads its
// /healthz and /readyz: live from the start; not ready while Kafka cannot
// be reached (the source is not in its consumer group), nor while Redis
// does not answer; ready with both. The runtime's profiles are served
// beside them with --pprof only.
func TestIngestProbes(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	redisAddr := testenv.RedisAddr(t)
	defs := examplesOnNewTopic(t, brokers, 2)
	regDir := t.TempDir()
	base := map[string]string{"FEATURESTORE_REGISTRY": "file:" + regDir, "FEATURESTORE_PROJECT": testenv.UniqueName(t, "p"),
		"FEATURESTORE_LOG_LEVEL": "error"}
	if code, out, errOut := runCLI(t, base, "apply", defs); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	get := func(addr, path string) (int, string) {
		code, body := httpGet(t, "http://"+addr+path)
		return code, strings.TrimSpace(body)
	}
	for _, tt := range []struct {
		name, kafka, redis string
		code               int
		says               string
	}{
		{"kafka unreachable", "127.0.0.1:1", redisAddr, http.StatusServiceUnavailable, "not in their consumer group yet: card_transactions"},
		{"redis unreachable", strings.Join(brokers, ","), "127.0.0.1:1", http.StatusServiceUnavailable, "redis does not answer"},
		{"ready", strings.Join(brokers, ","), redisAddr, http.StatusOK, "every source in its consumer group (1)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			metrics := freeAddr(t)
			env := map[string]string{"FEATURESTORE_KAFKA_BROKERS": tt.kafka, "FEATURESTORE_REDIS_ADDR": tt.redis,
				"FEATURESTORE_METRICS_ADDR": metrics, "FEATURESTORE_SESSION_TIMEOUT": "6s"}
			maps.Copy(env, base)
			profiles := tt.code == http.StatusOK // --pprof in one run
			if profiles {
				env["FEATURESTORE_PPROF"] = "true"
			}
			stop := startCommand(context.Background(), env, "ingest")
			defer stop()
			deadline := time.Now().Add(30 * time.Second)
			for {
				if code, body := get(metrics, "/healthz"); code == http.StatusOK && body == "ok" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("/healthz never answered 200\n%s", stop())
				}
				time.Sleep(50 * time.Millisecond)
			}
			// Ready takes the group's join; not ready must stay so, so it
			// is looked at after 5 seconds.
			if tt.code != http.StatusOK {
				time.Sleep(5 * time.Second)
			}
			var code int
			var body string
			for time.Now().Before(deadline) {
				if code, body = get(metrics, "/readyz"); code == tt.code && strings.Contains(body, tt.says) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if code != tt.code || !strings.Contains(body, tt.says) {
				t.Errorf("/readyz: %d %q, want %d saying %q\n%s", code, body, tt.code, tt.says, stop())
			}
			if code, body := get(metrics, "/metrics"); code != http.StatusOK || !strings.Contains(body, `featurestore_registry_version{project="`+base["FEATURESTORE_PROJECT"]+`"} 1`) {
				t.Errorf("/metrics: %d, registry version 1 not in it", code)
			}
			code, body = get(metrics, "/debug/pprof/goroutine?debug=1")
			switch {
			case profiles && (code != http.StatusOK || !strings.Contains(body, "goroutine profile:")):
				t.Errorf("/debug/pprof/goroutine with --pprof: %d %.100q", code, body)
			case !profiles && code != http.StatusNotFound:
				t.Errorf("/debug/pprof/goroutine without --pprof: %d", code)
			}
		})
	}
}
