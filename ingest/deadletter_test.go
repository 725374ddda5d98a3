package ingest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// TestEveryRejectionReachesTheDeadLetterTopic applies one malformed message
// of each kind through the Applier and reads them back from a real
// dead-letter topic with their reason and original position.
func TestEveryRejectionReachesTheDeadLetterTopic(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), ContextTimeoutEnabled: true})
	defer rc.Close()
	topic := testenv.UniqueName(t, "src")
	dlq := topic + ".dlq"
	testenv.CreateTopic(t, brokers, dlq, 1)
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, `
kind: Entity
name: account
join_keys: [{name: bank, type: string}, {name: account_no, type: int64}]
---
kind: Source
name: txns
kafka: {topic: %s, dead_letter_topic: %s}
timestamp: {field: ts, encoding: epoch_ms}
keys: {bank: bank, account_no: no}
fields: {amount: double}
allowed_lateness: 1m
---
kind: FeatureView
name: by_account
entity: account
source: txns
features: [{name: n, aggregation: count, window: 1h}]
`, topic, dlq)})
	if err != nil {
		t.Fatal(err)
	}
	sink := NewKafkaDeadLetters(brokers, dlq, nil)
	defer sink.Close()
	project := testenv.UniqueName(t, "p")
	a, err := NewApplier(project, r, r.Source("txns"), online.New(rc, online.Options{}), NewPositions(rc, project), sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	const t0 = 1795687200000
	cases := []struct {
		payload string
		reason  Reason
	}{
		{fmt.Sprintf(`{"ts":%d,"bank":"b","no":1,"amount":1}`, t0), ""}, // accepted: sets the high water
		{`{"ts":`, ReasonInvalidPayload},
		{`{"bank":"b","no":1}`, ReasonMissingTime},
		{`{"ts":"noon","bank":"b","no":1}`, ReasonBadTime},
		{fmt.Sprintf(`{"ts":%d,"bank":"b","no":1,"amount":"12"}`, t0), ReasonWrongType},
		{fmt.Sprintf(`{"ts":%d,"bank":"b"}`, t0), ReasonMissingKey},
		{fmt.Sprintf(`{"ts":%d,"bank":"b","no":1}`, t0-2*60*1000), ReasonLate},
		{fmt.Sprintf(`{"ts":%d,"bank":"b","no":1}`, t0+2*3600*1000), ReasonFuture},
	}
	var msgs []kafka.Message
	for i, c := range cases {
		msgs = append(msgs, kafka.Message{Topic: topic, Partition: 0, Offset: int64(i), Key: []byte("k"), Value: []byte(c.payload), Time: time.UnixMilli(t0)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Apply(ctx, topic, 0, msgs); err != nil {
		t.Fatal(err)
	}
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: dlq, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer rd.Close()
	for _, c := range cases[1:] {
		m, err := rd.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("reading the dead letter for %s: %v", c.reason, err)
		}
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		if h[HeaderReason] != string(c.reason) || string(m.Value) != c.payload || h[HeaderTopic] != topic || h[HeaderPartition] != "0" || h[HeaderDetail] == "" {
			t.Errorf("dead letter %q with headers %v, want reason %s for %q", m.Value, h, c.reason, c.payload)
		}
		if off, _ := strconv.Atoi(h[HeaderOffset]); cases[off].payload != c.payload {
			t.Errorf("offset header %s does not point at the original message", h[HeaderOffset])
		}
		if c.reason == ReasonMissingKey && h[HeaderView] != "by_account" {
			t.Errorf("missing key: view header %q", h[HeaderView])
		}
	}
}

// TestDeadLettersCloseTheirTransport: a sink made with a dialer (TLS,
// SASL) has a transport of its own, made per registry version; closing the
// sink must close it, or each version leaves its connections and metadata
// goroutine behind.
func TestDeadLettersCloseTheirTransport(t *testing.T) {
	topic := "dlq-close-" + strings.ReplaceAll(t.Name(), "/", "-")
	brokers := startKafka(t, topic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	round := func() {
		sink, closeSink := deadLetters(brokers, topic, &kafka.Dialer{Timeout: 5 * time.Second}, 0, nil)
		if err := sink.Send(ctx, []DeadLetter{{Message: kafka.Message{Topic: "src", Value: []byte("x")}, Reason: ReasonInvalidPayload, Detail: "test"}}); err != nil {
			t.Fatal(err)
		}
		if err := closeSink(); err != nil {
			t.Fatal(err)
		}
	}
	round() // the first round starts what stays for the process (kfake's, the runtime's)
	settle := func() int {
		var n int
		for range 50 {
			time.Sleep(20 * time.Millisecond)
			if m := runtime.NumGoroutine(); m == n {
				break
			} else {
				n = m
			}
		}
		return n
	}
	before := settle()
	for range 3 {
		round()
	}
	if after := settle(); after > before+1 {
		t.Errorf("%d goroutines before 3 sinks were made and closed, %d after", before, after)
	}
}

// TestDeadLettersAskMetadataOfTheirTopic: a dead-letter sink, with a
// dialer or without, asks the brokers for the metadata of its topic alone,
// never of every topic of the cluster, which kafka-go's default transport
// does every few seconds.
func TestDeadLettersAskMetadataOfTheirTopic(t *testing.T) {
	topic := "dlq-metadata"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic, "other-a", "other-b"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	var mu sync.Mutex
	var requests, everyTopic int
	cluster.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		mu.Lock()
		defer mu.Unlock()
		requests++
		if req.(*kmsg.MetadataRequest).Topics == nil {
			everyTopic++
		}
		return nil, nil, false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, d := range []*kafka.Dialer{nil, {Timeout: 5 * time.Second}} {
		sink, closeSink := deadLetters(cluster.ListenAddrs(), topic, d, 0, nil)
		if err := sink.Send(ctx, []DeadLetter{{Message: kafka.Message{Topic: "src", Value: []byte("x")}, Reason: ReasonInvalidPayload, Detail: "test"}}); err != nil {
			t.Fatal(err)
		}
		if err := closeSink(); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if requests == 0 || everyTopic > 0 {
		t.Errorf("%d metadata requests, %d of them of every topic; want some, none of every topic", requests, everyTopic)
	}
}

// TestDeadLetterOfADeadLetter: a letter sent back to its source (re-driven)
// and rejected again keeps the headers of the original message, but not
// the featurestore-* headers of the first rejection: the letter carries one
// reason, one position and so on, those of the last rejection.
func TestDeadLetterOfADeadLetter(t *testing.T) {
	first := letterMessage(DeadLetter{Message: kafka.Message{Topic: "src", Partition: 1, Offset: 7, Value: []byte("x"),
		Headers: []kafka.Header{{Key: "trace-id", Value: []byte("t1")}}}, Reason: ReasonLate, View: "v", Detail: "too late"}, maxLetterBytes, maxLetterHeaderBytes)
	first.Headers = append(first.Headers, kafka.Header{Key: HeaderTruncated, Value: []byte("key 0 value 1")})
	// Re-driven into topic src2 and rejected there again.
	again := letterMessage(DeadLetter{Message: kafka.Message{Topic: "src2", Partition: 0, Offset: 3, Value: first.Value,
		Headers: append(first.Headers, kafka.Header{Key: "retry", Value: []byte("1")})}, Reason: ReasonInvalidPayload, Detail: "bad"}, maxLetterBytes, maxLetterHeaderBytes)
	var got []string
	for _, h := range again.Headers {
		got = append(got, h.Key+"="+string(h.Value))
	}
	want := []string{"trace-id=t1", "retry=1", HeaderReason + "=invalid_payload", HeaderDetail + "=bad",
		HeaderTopic + "=src2", HeaderPartition + "=0", HeaderOffset + "=3"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("headers\n%q\nwant\n%q", got, want)
	}
}

// TestLogRejections: rejected events are logged at once, then at most once
// a minute per partition with the counts since, so that a source without a
// dead-letter topic leaves more than a metric.
func TestLogRejections(t *testing.T) {
	var buf bytes.Buffer
	a := &Applier{src: &registry.Source{Name: "txns", Kafka: registry.Kafka{Topic: "txns"}}, log: slog.New(slog.NewTextHandler(&buf, nil)),
		parts: map[int]*partitionState{}}
	ps := &partitionState{}
	a.parts[2] = ps
	late := func(off int64) DeadLetter {
		return DeadLetter{Message: kafka.Message{Offset: off}, Reason: ReasonLate, Detail: fmt.Sprintf("late %d", off)}
	}
	t0 := time.Unix(1_800_000_000, 0)
	a.logRejections(ps, "txns", 2, []DeadLetter{late(7), {Message: kafka.Message{Offset: 8}, Reason: ReasonInvalidPayload}}, t0)
	a.logRejections(ps, "txns", 2, []DeadLetter{late(9)}, t0.Add(30*time.Second))
	a.logRejections(ps, "txns", 2, nil, t0.Add(2*time.Minute))
	a.logRejections(ps, "txns", 2, []DeadLetter{late(12)}, t0.Add(3*time.Minute))
	// Counts not logged yet are logged when the partition is released.
	a.logRejections(ps, "txns", 2, []DeadLetter{late(13), late(14)}, t0.Add(3*time.Minute+time.Second))
	a.forget(2)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`level=WARN msg="events rejected" invalid_payload=1 late=1 topic=txns partition=2 dead_letter_topic="none (counted only)" first_offset=7 first_reason=late first_detail="late 7"`,
		`level=WARN msg="events rejected" late=2 topic=txns partition=2 dead_letter_topic="none (counted only)" first_offset=12 first_reason=late first_detail="late 12"`,
		`level=WARN msg="events rejected" late=2 topic=txns partition=2 dead_letter_topic="none (counted only)"`,
	}
	if len(lines) != len(want) {
		t.Fatalf("logged:\n%s\nwant %d lines", buf.String(), len(want))
	}
	for i, l := range lines {
		if _, rest, _ := strings.Cut(l, " "); rest != want[i] { // without the time
			t.Errorf("line %d:\n got  %s\n want %s", i, rest, want[i])
		}
	}
}

// TestLogRereads: a partition resumed before what Redis holds says why,
// so that "partition started offset=0" does not read as a replay.
func TestLogRereads(t *testing.T) {
	var buf bytes.Buffer
	a := &Applier{src: &registry.Source{Name: "txns"}, log: slog.New(slog.NewTextHandler(&buf, nil))}
	a.logRereads(&partitionState{saved: true, savedAt: 16}, 3, 17)
	a.logRereads(&partitionState{}, 3, 0)
	if buf.Len() != 0 {
		t.Fatalf("logged %q for a resume after the saved position", buf.String())
	}
	a.logRereads(&partitionState{saved: true, savedAt: 16}, 3, 0)
	want := `level=INFO msg="partition reads again events Redis holds, to remember their ids for dedup or to log them offline; they are not applied twice" partition=3 read_from=0 applied_up_to=16`
	if !strings.Contains(buf.String(), want) {
		t.Errorf("logged %q, want %q", buf.String(), want)
	}
}

// TestDeadLetterCloseBounded: a dead-letter Send cut short by its context
// (the apply attempt's ShutdownTimeout, while the broker does not answer)
// leaves kafka-go's writer retrying the batch in the background (by
// default up to 10 attempts of 10 s each), and the sink's close (deferred
// after RunGroup in startSources) waits for them: a stop, or a new
// registry version, must not wait past the shutdown timeout.
func TestDeadLetterCloseBounded(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "dlq-close-bounded"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	// The broker takes produce requests and never answers them.
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return nil, nil, true
	})
	sink, closeSink := deadLetters(c.ListenAddrs(), "dlq-close-bounded", nil, 5*time.Second, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = sink.Send(ctx, []DeadLetter{{Message: kafka.Message{Topic: "src", Partition: 0, Offset: 7, Value: []byte("bad")}, Reason: ReasonInvalidPayload}})
	if err == nil {
		t.Fatal("Send succeeded against a broker that does not answer")
	}
	t.Logf("Send: %v", err)
	closed := make(chan struct{})
	start := time.Now()
	go func() { closeSink(); close(closed) }()
	select {
	case <-closed:
		t.Logf("closed in %s", time.Since(start))
	case <-time.After(20 * time.Second):
		t.Errorf("closing the dead-letter sink has not returned after %s (kafka-go's Writer.Close waits for the batch's remaining attempts, 10 s each)", time.Since(start))
	}
}
