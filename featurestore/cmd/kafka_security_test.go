package cmd

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/ingest"
)

// TestKafkaSecurityFlags: each combination of the Kafka TLS and SASL flags
// gives the dialer it says, or an error naming the flag at fault.
func TestKafkaSecurityFlags(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pwFile := write("pw", "from-file\n")
	notPEM := write("not.pem", "hello")
	tests := []struct {
		name    string
		k       kafkaSecurity
		want    string // "nil", "tls", "plain", "scram", "tls+scram"
		wantErr string
	}{
		{"nothing", kafkaSecurity{}, "nil", ""},
		{"TLS with the system's roots", kafkaSecurity{tls: true}, "tls", ""},
		{"TLS by its CA", kafkaSecurity{tlsFiles: tlsClientFiles{service: "kafka", ca: pki.caFile}}, "tls", ""},
		{"mutual TLS", kafkaSecurity{tlsFiles: tlsClientFiles{service: "kafka", ca: pki.caFile, cert: pki.certFile, key: pki.keyFile}}, "tls", ""},
		{"PLAIN", kafkaSecurity{mechanism: "plain", username: "u", password: "p"}, "plain", ""},
		{"SCRAM over TLS, password from a file", kafkaSecurity{tls: true, mechanism: "SCRAM-SHA-512", username: "u", passwordFile: pwFile}, "tls+scram", ""},
		{"SCRAM-SHA-256", kafkaSecurity{mechanism: "SCRAM-SHA-256", username: "u", password: "p"}, "scram", ""},
		{"unknown mechanism", kafkaSecurity{mechanism: "GSSAPI", username: "u", password: "p"}, "", `--kafka-sasl-mechanism "GSSAPI": want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`},
		{"mechanism without user", kafkaSecurity{mechanism: "PLAIN", password: "p"}, "", "needs --kafka-sasl-username and a password"},
		{"mechanism without password", kafkaSecurity{mechanism: "PLAIN", username: "u"}, "", "needs --kafka-sasl-username and a password"},
		{"user without mechanism", kafkaSecurity{username: "u", password: "p"}, "", "needs --kafka-sasl-mechanism"},
		{"two passwords", kafkaSecurity{mechanism: "PLAIN", username: "u", password: "p", passwordFile: pwFile}, "", "not both"},
		{"missing password file", kafkaSecurity{mechanism: "PLAIN", username: "u", passwordFile: filepath.Join(dir, "none")}, "", "--kafka-sasl-password-file"},
		{"empty password file", kafkaSecurity{mechanism: "PLAIN", username: "u", passwordFile: write("empty", "\n")}, "", "--kafka-sasl-password-file: " + filepath.Join(dir, "empty") + " is empty"},
		{"CA not PEM", kafkaSecurity{tlsFiles: tlsClientFiles{service: "kafka", ca: notPEM}}, "", "--kafka-tls-ca: " + notPEM + " holds no PEM certificate"},
		{"missing CA", kafkaSecurity{tlsFiles: tlsClientFiles{service: "kafka", ca: filepath.Join(dir, "none")}}, "", "--kafka-tls-ca"},
		{"certificate without key", kafkaSecurity{tlsFiles: tlsClientFiles{service: "kafka", cert: pki.certFile}}, "", "--kafka-tls-cert needs --kafka-tls-key"},
		{"key without certificate", kafkaSecurity{tlsFiles: tlsClientFiles{service: "kafka", key: pki.keyFile}}, "", "--kafka-tls-key needs --kafka-tls-cert"},
		{"key of another certificate", kafkaSecurity{tlsFiles: tlsClientFiles{service: "kafka", cert: pki.caFile, key: pki.keyFile}}, "", "--kafka-tls-cert and --kafka-tls-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := tt.k.dialer()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := "nil"
			if d != nil {
				var parts []string
				if d.DialFunc != nil {
					parts = append(parts, "tls")
					td, err := tt.k.tlsFiles.dialer(time.Second)
					if err != nil {
						t.Fatal(err)
					}
					c := td.config("127.0.0.1")
					if tt.k.tlsFiles.ca != "" && c.RootCAs == nil {
						t.Error("no roots from --kafka-tls-ca")
					}
					if len(c.Certificates) != map[bool]int{true: 1}[tt.k.tlsFiles.cert != ""] {
						t.Errorf("%d client certificates", len(c.Certificates))
					}
					if c.ServerName != "127.0.0.1" || c.MinVersion != tls.VersionTLS12 {
						t.Errorf("server name %q, version %x", c.ServerName, c.MinVersion)
					}
				}
				if d.TLS != nil {
					t.Error("TLS set on the dialer: its files could not be read again")
				}
				switch m := d.SASLMechanism.(type) {
				case plain.Mechanism:
					parts = append(parts, "plain")
					if m.Username != "u" || m.Password != "p" {
						t.Errorf("PLAIN credentials %q/%q", m.Username, m.Password)
					}
				case *fileSASL:
					parts = append(parts, "scram")
					if m.Name() != strings.ToUpper(tt.k.mechanism) || *m.password.Current() != "from-file" {
						t.Errorf("mechanism %s, password %q", m.Name(), *m.password.Current())
					}
				case nil:
				default:
					parts = append(parts, "scram")
					if m.Name() != strings.ToUpper(tt.k.mechanism) {
						t.Errorf("mechanism %s, want %s", m.Name(), tt.k.mechanism)
					}
				}
				got = strings.Join(parts, "+")
			}
			if got != tt.want {
				t.Errorf("dialer %s, want %s", got, tt.want)
			}
		})
	}
}

// TestIngestOverTLSAndSASL runs 'featurestore ingest' and 'featurestore
// backfill --from-kafka' against a Kafka broker that speaks TLS only and
// requires SCRAM-SHA-512 (the in-process broker of dev mode, so
// configured), with real Redis: every event is applied, and the malformed
// ones reach the dead-letter topic over the same secured connections.
// Without the flags, ingest applies nothing.
func TestIngestOverTLSAndSASL(t *testing.T) {
	pki := newTestPKI(t)
	serverCert, err := tls.LoadX509KeyPair(pki.certFile, pki.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	topic := "card_transactions"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "ingest", "s3cret"), kfake.SeedTopics(2, topic, topic+".dlq"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	mech, err := scram.Mechanism(scram.SHA512, "ingest", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	transport := &kafka.Transport{TLS: &tls.Config{RootCAs: pki.roots, MinVersion: tls.VersionTLS12}, SASL: mech}
	defer transport.CloseIdleConnections()

	redisAddr := testenv.RedisAddr(t)
	project := strings.NewReplacer("/", "-", ".", "-").Replace(testenv.UniqueName(t, "p"))
	env := map[string]string{"FEATURESTORE_REDIS_ADDR": redisAddr, "FEATURESTORE_PROJECT": project, "FEATURESTORE_METRICS_ADDR": "",
		"FEATURESTORE_KAFKA_BROKERS": strings.Join(brokers, ","), "FEATURESTORE_LOG_LEVEL": "warn"}
	if code, out, errOut := runCLI(t, env, "apply", "../../examples"); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var msgs []kafka.Message
	now := time.Now().UTC()
	for i := range 200 {
		msgs = append(msgs, kafka.Message{Key: fmt.Appendf(nil, "card-%d", i%7), Value: fmt.Appendf(nil,
			`{"txn_id":"t-%d","card_id":"card-%d","merchant_id":"m-%d","amount":%d.5,"currency":"EUR","country":"FR","channel":"online","approved":true,"event_time":%q}`,
			i, i%7, i%3, i, now.Add(-time.Duration(200-i)*time.Second).Format(time.RFC3339Nano))})
	}
	const bad = 5
	for i := range bad {
		msgs = append(msgs, kafka.Message{Key: []byte("bad"), Value: fmt.Appendf(nil, `{"card_id": "x", "event_time": %d`, i)})
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Transport: transport, RequiredAcks: kafka.RequireAll, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rc.Close()
	applied := func(pos *ingest.Positions) int64 {
		var n int64
		for p := range 2 {
			if got, ok, _ := pos.Load(ctx, "card_transactions", topic, p); ok {
				n += got.Offset + 1
			}
		}
		return n
	}
	// Without the flags: nothing is applied.
	stop := startCommand(ctx, env, "ingest", "--session-timeout", "6s")
	time.Sleep(2 * time.Second)
	if errOut := stop(); applied(ingest.NewPositions(rc, project)) != 0 {
		t.Fatalf("ingest applied events without TLS and SASL\n%s", errOut)
	}

	secured := map[string]string{"FEATURESTORE_KAFKA_TLS_CA": pki.caFile, "FEATURESTORE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
		"FEATURESTORE_KAFKA_SASL_USERNAME": "ingest", "FEATURESTORE_KAFKA_SASL_PASSWORD": "s3cret"}
	maps.Copy(secured, env)
	// A wrong password, and a CA the broker's certificate does not chain
	// to: nothing is applied, and the warnings say why.
	for _, bad := range []struct{ key, value, says string }{
		{"FEATURESTORE_KAFKA_SASL_PASSWORD", "wrong", "SASL Authentication failed"},
		{"FEATURESTORE_KAFKA_TLS_CA", newTestPKI(t).caFile, "certificate signed by unknown authority"},
	} {
		wrong := maps.Clone(secured)
		wrong[bad.key] = bad.value
		stop := startCommand(ctx, wrong, "ingest", "--session-timeout", "6s")
		time.Sleep(2 * time.Second)
		errOut := stop()
		if applied(ingest.NewPositions(rc, project)) != 0 {
			t.Fatalf("ingest applied events with %s=%s\n%s", bad.key, bad.value, errOut)
		}
		// The first request to the brokers is the check that the topics
		// exist, before the group is joined.
		if !strings.Contains(errOut, "cannot tell whether the topic exists") || !strings.Contains(errOut, bad.says) {
			t.Errorf("with %s=%s, the warnings do not say %q:\n%s", bad.key, bad.value, bad.says, errOut)
		}
	}

	stop = startCommand(ctx, secured, "ingest", "--session-timeout", "6s")
	for applied(ingest.NewPositions(rc, project)) < int64(len(msgs)) {
		if ctx.Err() != nil {
			t.Fatalf("timed out: %d of %d applied\n%s", applied(ingest.NewPositions(rc, project)), len(msgs), stop())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if errOut := stop(); strings.Contains(errOut, "level=ERROR") {
		t.Errorf("errors logged:\n%s", errOut)
	}
	letters := 0
	for p := range 2 {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic + ".dlq", Partition: p,
			Dialer: &kafka.Dialer{Timeout: 10 * time.Second, TLS: transport.TLS, SASLMechanism: mech}})
		for {
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := r.ReadMessage(rctx)
			rcancel()
			if err != nil {
				break
			}
			letters++
		}
		r.Close()
	}
	if letters != bad {
		t.Errorf("%d dead letters, want %d", letters, bad)
	}

	// The replay of the topic into the backfill's own positions, over the
	// same flags.
	code, out, errOut := runCLI(t, secured, "backfill", "--source", "card_transactions", "--from-kafka")
	if code != 0 {
		t.Fatalf("backfill --from-kafka: exit %d\n%s%s", code, out, errOut)
	}
	if got := applied(ingest.NewPositions(rc, project+".backfill")); got != int64(len(msgs)) {
		t.Errorf("backfill applied up to %d messages, want %d\n%s%s", got, len(msgs), out, errOut)
	}
}

// TestKafkaCredentialsRotate: the SASL password file and the TLS files of
// the Kafka dialer are read again when they change: each new connection to
// a broker that speaks TLS only and requires SCRAM-SHA-512 authenticates
// with what they hold then.
func TestKafkaCredentialsRotate(t *testing.T) {
	pki := newTestPKI(t)
	serverCert, err := tls.LoadX509KeyPair(pki.certFile, pki.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "ingest", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	broker := cluster.ListenAddrs()[0]
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	replaceTestFile(t, pwFile, []byte("old-password\n"))
	k := kafkaSecurity{tlsFiles: tlsClientFiles{service: "kafka", ca: pki.caFile, interval: 10 * time.Millisecond},
		mechanism: "SCRAM-SHA-512", username: "ingest", passwordFile: pwFile, interval: 10 * time.Millisecond}
	d, err := k.dialer()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dial := func() error {
		conn, err := d.DialContext(ctx, "tcp", broker)
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.ReadPartitions()
		return err
	}
	if err := dial(); err == nil || !strings.Contains(err.Error(), "SASL Authentication failed") {
		t.Fatalf("with the old password: %v", err)
	}
	replaceTestFile(t, pwFile, []byte("s3cret\n"))
	if err := eventually(dial); err != nil {
		t.Fatalf("once the file holds the password: %v", err)
	}
	// An empty file does not load: the password stays.
	replaceTestFile(t, pwFile, nil)
	time.Sleep(100 * time.Millisecond)
	if err := dial(); err != nil {
		t.Fatalf("after the file was emptied: %v", err)
	}
}
