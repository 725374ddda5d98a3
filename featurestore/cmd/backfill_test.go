package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// backfillCLIEnv is the environment of a backfill test's commands: a
// registry file in dir with the examples applied, a project of its own, the
// test Redis.
func backfillCLIEnv(t *testing.T, dir string) map[string]string {
	t.Helper()
	env := map[string]string{
		"FEATURESTORE_REGISTRY":   "file:" + filepath.Join(dir, "registry"),
		"FEATURESTORE_PROJECT":    testenv.UniqueName(t, "backfill"),
		"FEATURESTORE_REDIS_ADDR": testenv.RedisAddr(t),
	}
	if code, out, errOut := runCLI(t, env, "apply", "../../examples"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	return env
}

// TestBackfillCommand backfills a CSV file of the example source into real
// Redis and an offline log, with one bad row, then runs again: the second
// run reads nothing, since the log committed every row.
func TestBackfillCommand(t *testing.T) {
	dir := t.TempDir()
	env := backfillCLIEnv(t, dir)
	now := time.Now().UTC().Truncate(time.Second)
	at := func(d time.Duration) string { return now.Add(-d).Format(time.RFC3339) }
	in := filepath.Join(dir, "history.csv")
	csv := "event_time,card_id,merchant_id,amount,currency,country,channel,approved,txn_id\n" +
		at(3*time.Hour) + ",c1,m1,10,EUR,FR,online,true,t1\n" +
		at(2*time.Minute) + ",c1,m2,20.5,EUR,DE,pos,true,t2\n" +
		at(time.Minute) + ",c2,m1,5,EUR,FR,online,maybe,t3\n" +
		",c2,m1,5,EUR,FR,online,true,t4\n"
	if err := os.WriteFile(in, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	logDir, dlq := filepath.Join(dir, "offline"), filepath.Join(dir, "rejected.jsonl")
	code, out, errOut := runCLI(t, env, "backfill", "--source", "card_transactions", "--offline-dir", logDir, "--dead-letters", dlq, in)
	want := in + ": 4 rows read, 0 skipped as loaded before; online: "
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "rejected: 1 missing_time, 1 wrong_type") ||
		!strings.Contains(out, "2 rejected rows or uses written to "+dlq) {
		t.Fatalf("backfill: exit %d\n%s%s", code, out, errOut)
	}
	letters, err := os.ReadFile(dlq)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"row":3,"offset":2,"reason":"wrong_type"`, `"row":4,"offset":3,"reason":"missing_time"`} {
		if !strings.Contains(string(letters), w) {
			t.Errorf("dead letters %s: no %s", letters, w)
		}
	}
	code, out, errOut = runCLI(t, env, "backfill", "--source", "card_transactions", "--offline-dir", logDir, in)
	if code != 0 || !strings.Contains(out, in+": 0 rows read, 4 skipped as loaded before; online: 0 applied") {
		t.Fatalf("second backfill: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = runCLI(t, env, "backfill", "--source", "nope", in)
	if code != 2 || !strings.Contains(errOut, `no source "nope" (its sources: card_transactions)`) {
		t.Fatalf("unknown source: exit %d\n%s", code, errOut)
	}
	unknown := maps.Clone(env)
	unknown["FEATURESTORE_PROJECT"] = "never_applied"
	code, _, errOut = runCLI(t, unknown, "backfill", "--source", "card_transactions", in)
	if code != 1 || !strings.Contains(errOut, `nothing has been applied to project "never_applied" of the registry (file:`) {
		t.Fatalf("unknown project: exit %d\n%s", code, errOut)
	}

	// A flag after a file is refused before any file is loaded: the
	// corrected run then applies the file's rows online.
	later := filepath.Join(dir, "later.csv")
	if err := os.WriteFile(later, []byte("event_time,card_id,merchant_id,amount,currency,country,channel,approved,txn_id\n"+
		at(time.Minute)+",c9,m1,7,EUR,FR,online,true,t9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCLI(t, env, "backfill", "--source", "card_transactions", later, "--offline-dir", logDir)
	if code != 2 || !strings.Contains(errOut, `"--offline-dir"`) || !strings.Contains(errOut, "flags go before the files") {
		t.Fatalf("flag after a file: exit %d\n%s", code, errOut)
	}
	code, out, errOut = runCLI(t, env, "backfill", "--source", "card_transactions", "--offline-dir", logDir, later)
	if code != 0 || !strings.Contains(out, later+": 1 rows read, 0 skipped as loaded before; online: 2 applied, 0 already applied") {
		t.Fatalf("backfill after the refused one: exit %d\n%s%s", code, out, errOut)
	}
}

// TestBackfillFromKafka replays a topic of the example source, with a
// malformed message, then replays it again: the second replay reads nothing.
func TestBackfillFromKafka(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "replay")
	testenv.CreateTopic(t, brokers, topic, 2)
	defs := copyDir(t, "../../examples")
	edit(t, filepath.Join(defs, "sources.yaml"), "topic: card_transactions", "topic: "+topic)
	dir := t.TempDir()
	env := map[string]string{
		"FEATURESTORE_REGISTRY":      "file:" + filepath.Join(dir, "registry"),
		"FEATURESTORE_PROJECT":       testenv.UniqueName(t, "replay"),
		"FEATURESTORE_REDIS_ADDR":    testenv.RedisAddr(t),
		"FEATURESTORE_KAFKA_BROKERS": strings.Join(brokers, ","),
	}
	if code, out, errOut := runCLI(t, env, "apply", defs); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	now := time.Now().UTC()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	var msgs []kafka.Message
	for i := range 5 {
		msgs = append(msgs, kafka.Message{Value: fmt.Appendf(nil, `{"txn_id":"t%d","card_id":"c%d","merchant_id":"m1","amount":%d,"currency":"EUR","country":"FR","channel":"online","approved":true,"event_time":%q}`,
			i, i%2, i+1, now.Add(-time.Duration(5-i)*time.Minute).Format(time.RFC3339Nano))})
	}
	msgs = append(msgs, kafka.Message{Value: []byte(`not json`)})
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	logDir := filepath.Join(dir, "offline")
	code, out, errOut := runCLI(t, env, "backfill", "--source", "card_transactions", "--from-kafka", "--offline-dir", logDir)
	if code != 0 || !strings.Contains(out, "replayed 6 messages of topic "+topic) || !strings.Contains(out, "rejected: 1 invalid_payload") {
		t.Fatalf("replay: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, env, "backfill", "--source", "card_transactions", "--from-kafka", "--offline-dir", logDir)
	if code != 0 || !strings.Contains(out, "replayed 0 messages of topic "+topic) {
		t.Fatalf("second replay: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut = runCLI(t, env, "backfill", "--source", "card_transactions", "--from-kafka", "x.csv"); code != 2 {
		t.Fatalf("files and --from-kafka: exit %d\n%s", code, errOut)
	}
}

// TestBackfillCommandBucket backfills a CSV file that is an object of an
// S3 bucket (the test S3 server), then of GCS and Azure buckets (the
// emulators), into
// real Redis and an offline log in the same bucket: the summary and the
// dead letters name the object URL, and a second run reads nothing.
func TestBackfillCommandBucket(t *testing.T) {
	for _, where := range []string{"s3", "gs", "azblob"} {
		t.Run(where, func(t *testing.T) { testBackfillCommandBucket(t, where) })
	}
}

func testBackfillCommandBucket(t *testing.T, where string) {
	ctx := context.Background()
	dir := t.TempDir()
	bucket := offlineLocation(t, where, dir)
	env := backfillCLIEnv(t, dir)
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Second).Format(time.RFC3339)
	local := filepath.Join(dir, "history.csv")
	csv := "event_time,card_id,merchant_id,amount,currency,country,channel,approved,txn_id\n" +
		at + ",c1,m1,10,EUR,FR,online,true,t1\n" +
		",c2,m1,5,EUR,FR,online,true,t2\n"
	if err := os.WriteFile(local, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	obj := objectURL(t, bucket, "history.csv")
	if err := uploadObject(ctx, local, obj); err != nil {
		t.Fatal(err)
	}
	dlq := filepath.Join(dir, "rejected.jsonl")
	code, out, errOut := runCLI(t, env, "backfill", "--source", "card_transactions", "--offline-dir", bucket, "--dead-letters", dlq, obj)
	if code != 0 || !strings.Contains(out, obj+": 2 rows read, 0 skipped as loaded before; online: ") || !strings.Contains(out, "rejected: 1 missing_time") {
		t.Fatalf("backfill: exit %d\n%s%s", code, out, errOut)
	}
	letters, err := os.ReadFile(dlq)
	if err != nil {
		t.Fatal(err)
	}
	var letter struct{ File string }
	if err := json.Unmarshal(letters, &letter); err != nil || letter.File != obj {
		t.Errorf("dead letter %s (%v): want file %s", letters, err, obj)
	}
	code, out, errOut = runCLI(t, env, "backfill", "--source", "card_transactions", "--offline-dir", bucket, obj)
	if code != 0 || !strings.Contains(out, obj+": 0 rows read, 2 skipped as loaded before") {
		t.Fatalf("second backfill: exit %d\n%s%s", code, out, errOut)
	}
}
