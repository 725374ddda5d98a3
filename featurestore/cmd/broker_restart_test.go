package cmd

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// TestIngestBrokerKilledAndRestarted kills the Kafka broker (SIGKILL) under
// a running 'featurestore ingest' process mid-stream, and starts it again
// on the same data a few seconds later: ingest keeps running, says on
// /readyz that it is not ready while the broker is away, rejoins its group
// once the broker is back, and every event, those produced before the
// crash and those after it, is counted once online (against a brute-force
// reference) and logged once offline. The broker is one of the test's own
// (testenv.KafkaOwn): the shared one's other users would not survive it.
func TestIngestBrokerKilledAndRestarted(t *testing.T) {
	k := testenv.KafkaOwn(t)
	brokers := k.Brokers()
	redisAddr := testenv.RedisAddr(t)
	defs := examplesOnNewTopic(t, brokers, 3)
	project := strings.NewReplacer("/", "-", ".", "-").Replace(testenv.UniqueName(t, "p"))
	if code, out, errOut := runCLI(t, map[string]string{"FEATURESTORE_REDIS_ADDR": redisAddr, "FEATURESTORE_PROJECT": project}, "apply", defs); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	r, err := registry.LoadDir(defs)
	if err != nil {
		t.Fatal(err)
	}
	topic := r.Source("card_transactions").Kafka.Topic

	// 11,000 events of 30 cards over the last 37 minutes, in time order:
	// 10,000 produced before the crash, the others after it.
	const before, total = 10_000, 11_000
	msgs, accepted := cardEvents(5, total, 200*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	produce(t, ctx, brokers, topic, msgs[:before])

	bin := buildBinary(t)
	metrics := freeAddr(t)
	logDir := t.TempDir()
	cmd := exec.Command(bin, "ingest", "--log-level", "warn", "--metrics-addr", metrics, "--session-timeout", "6s",
		"--batch-size", "20", "--max-batch-size", "20", "--buffer-memory", "32KiB") // little read ahead: most events wait in Kafka
	cmd.Env = append(os.Environ(), "FEATURESTORE_REDIS_ADDR="+redisAddr, "FEATURESTORE_PROJECT="+project,
		"FEATURESTORE_KAFKA_BROKERS="+strings.Join(brokers, ","), "FEATURESTORE_OFFLINE_DIR="+logDir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := testenv.StartTied(cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rc.Close()
	applied := func() int64 { return appliedCount(ctx, rc, project, topic, 3) }
	wait := ingestWaiter(t, ctx, applied, exited)
	ready := func() (int, string) {
		code, body := httpGet(t, "http://"+metrics+"/readyz")
		return code, strings.TrimSpace(body)
	}
	wait("progress", func() bool { return applied() > 1000 })

	k.Kill()
	crashedAt := applied()
	wait("/readyz to say not ready", func() bool {
		code, _ := ready()
		return code == http.StatusServiceUnavailable
	})
	code, body := ready()
	t.Logf("broker killed after %d of %d events; /readyz: %d %q", crashedAt, before, code, body)
	// Ingest waits for the broker, however long it takes, without exiting.
	select {
	case err := <-exited:
		t.Fatalf("ingest exited without the broker: %v", err)
	case <-time.After(3 * time.Second):
	}

	k.Start()
	back := time.Now()
	produce(t, ctx, brokers, topic, msgs[before:])
	wait("every event", func() bool { return applied() == int64(len(msgs)) })
	t.Logf("every event applied %v after the broker answered again", time.Since(back).Round(100*time.Millisecond))
	wait("/readyz to say ready", func() bool {
		code, _ := ready()
		return code == http.StatusOK
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Errorf("ingest did not stop cleanly on SIGTERM: %v", err)
	}

	checkCardTxn(t, ctx, rc, r, project, accepted)
	checkLoggedOnce(t, ctx, logDir, project, len(msgs))
}
