package ingest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// logRecords keeps the messages of the records logged at level or above.
type logRecords struct {
	mu    sync.Mutex
	level slog.Level
	msgs  []string
}

func (l *logRecords) Enabled(_ context.Context, lv slog.Level) bool { return lv >= l.level }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

func (l *logRecords) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// stallCounter is a fencedHandler that records what the partition reader
// says of stalls and of events retention deleted (stallRecorder).
type stallCounter struct {
	*fencedHandler
	stalled atomic.Bool
	lost    atomic.Int64
}

func (s *stallCounter) recordStalled(_ int, stalled bool) { s.stalled.Store(stalled) }
func (s *stallCounter) countLost(_ int, n int64)          { s.lost.Add(n) }

// TestResumePastTheEnd: a saved position past the partition's end (the
// topic was deleted and recreated, or its log lost) stalls the partition,
// since the fences of the old offsets would take the new events for
// replays; that must be said at error level, not retried in silence (kafka-go
// logs it through its error logger, which went to debug), in the stalled
// gauge, and in readiness (not ready, naming the partition), until the
// partition reaches the position and reading goes on.
func TestResumePastTheEnd(t *testing.T) { forEachKafka(t, testResumePastTheEnd) }

func testResumePastTheEnd(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	topic := "past-end-" + strings.ReplaceAll(t.Name(), "/", "-")
	brokers := kafkaFor(t, topic, 1)
	produce(t, brokers, topic, 10)
	h := &stallCounter{fencedHandler: newFencedHandler()}
	h.fence[0] = 999 // resumes at 1000, past the 10 messages
	logs := &logRecords{level: slog.LevelError}
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 100, SessionTimeout: 6 * time.Second,
		Logger: slog.New(logs)}
	ready := &Readiness{}
	ready.start(1)
	ready.track("s", topic, &cfg)
	ready.allStarted()
	stop := runGroupAsync(t, cfg, h)
	defer stop()
	waitFor(t, "an error about the position past the end", 30*time.Second, func() bool {
		return logs.has("past the partition's end")
	})
	waitFor(t, "the partition recorded as stalled", 10*time.Second, h.stalled.Load)
	says := fmt.Sprintf("registry version 1: topic %s partition 0 (source s) stalled: recreated topic or lost log: position 1000 is past the partition's end 10", topic)
	waitFor(t, "not ready saying "+says, 10*time.Second, func() bool { ok, why := ready.Ready(); return !ok && why == says })
	produce(t, brokers, topic, 1000)
	waitFor(t, "the messages from the position applied", 30*time.Second, func() bool { return h.total() == 10 })
	waitFor(t, "the partition recorded as reading", 10*time.Second, func() bool { return !h.stalled.Load() })
	waitFor(t, "ready once the partition reads again", 10*time.Second, func() bool { ok, _ := ready.Ready(); return ok })
}

// TestResumeBeforeTheFirstOffset: a saved position that retention has
// deleted (the partition's first kept offset is past it) is logged at
// error level with how many events were lost, and counted, and reading goes
// on from the first offset kept, applying every event from there once.
func TestResumeBeforeTheFirstOffset(t *testing.T) { forEachKafka(t, testResumeBeforeTheFirstOffset) }

func testResumeBeforeTheFirstOffset(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	topic := "before-first-" + strings.ReplaceAll(t.Name(), "/", "-")
	brokers := kafkaFor(t, topic, 1)
	produce(t, brokers, topic, 20)
	deleteRecords(t, brokers, topic, 8)
	h := &stallCounter{fencedHandler: newFencedHandler()}
	h.fence[0] = 2 // resumes at 3, which retention deleted
	logs := &logRecords{level: slog.LevelError}
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 100, SessionTimeout: 6 * time.Second,
		Logger: slog.New(logs)}
	stop := runGroupAsync(t, cfg, h)
	waitFor(t, "the events kept applied", 30*time.Second, func() bool { return h.total() == 12 })
	stop()
	if !logs.has("deleted by the topic's retention") {
		t.Errorf("no error logged about the deleted events; logged: %q", logs.msgs)
	}
	if n := h.lost.Load(); n != 5 {
		t.Errorf("%d events counted as deleted by retention, want 5 (offsets 3 to 7)", n)
	}
	if h.stalled.Load() {
		t.Error("the partition recorded as stalled")
	}
	for off := int64(8); off < 20; off++ {
		if n := h.applied[[2]int64{0, off}]; n != 1 {
			t.Errorf("offset %d applied %d times", off, n)
		}
	}
}

// TestPartitionReaderCompression: the partition reader decodes batches of
// every compression codec a producer may use, with keys, values, headers
// and times intact.
func TestPartitionReaderCompression(t *testing.T) { forEachKafka(t, testPartitionReaderCompression) }

func testPartitionReaderCompression(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	for _, codec := range []kafka.Compression{0, kafka.Gzip, kafka.Snappy, kafka.Lz4, kafka.Zstd} {
		t.Run(fmt.Sprint(codec), func(t *testing.T) {
			topic := "compressed-" + strings.ReplaceAll(t.Name(), "/", "-")
			brokers := kafkaFor(t, topic, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Compression: codec, RequiredAcks: kafka.RequireAll, BatchSize: 50, BatchTimeout: time.Millisecond}
			var want []kafka.Message
			at := time.UnixMilli(1795687200123)
			for i := range 120 {
				want = append(want, kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: bytes.Repeat(fmt.Appendf(nil, "v%d,", i), 20),
					Headers: []kafka.Header{{Key: "h", Value: fmt.Appendf(nil, "%d", i)}}, Time: at.Add(time.Duration(i) * time.Millisecond)})
			}
			if err := w.WriteMessages(ctx, want...); err != nil {
				t.Fatal(err)
			}
			w.Close()
			tr := newTransport(nil)
			defer tr.CloseIdleConnections()
			r := &partitionReader{tr: tr, addr: kafka.TCP(brokers...), topic: topic, maxBytes: 4 << 10, maxWait: 100 * time.Millisecond,
				log: slog.New(slog.DiscardHandler)}
			r.setOffset(kafka.FirstOffset)
			for i, w := range want {
				m, ok, err := r.readBefore(ctx, int64(len(want)))
				if err != nil || !ok {
					t.Fatalf("message %d: %v %v", i, ok, err)
				}
				if m.Offset != int64(i) || !bytes.Equal(m.Key, w.Key) || !bytes.Equal(m.Value, w.Value) || !m.Time.Equal(w.Time) ||
					len(m.Headers) != 1 || m.Headers[0].Key != "h" || !bytes.Equal(m.Headers[0].Value, w.Headers[0].Value) {
					t.Fatalf("message %d: got offset %d key %q value %q headers %v time %v", i, m.Offset, m.Key, m.Value, m.Headers, m.Time)
				}
			}
			if _, ok, err := r.readBefore(ctx, int64(len(want))); ok || err != nil {
				t.Fatalf("read past the end: %v %v", ok, err)
			}
		})
	}
}

// TestAbortMarkerAfterFetchStart: a fetch that starts after an aborted
// transaction's records but before its marker (the broker still lists
// the transaction) must not take the producer's next, committed
// transaction for aborted. Small fetches and incompressible values put
// the fetch boundaries between them.
func TestAbortMarkerAfterFetchStart(t *testing.T) { forEachKafka(t, testAbortMarkerAfterFetchStart) }

func testAbortMarkerAfterFetchStart(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	topic := "abort-marker-" + strings.ReplaceAll(t.Name(), "/", "-")
	brokers := kafkaFor(t, topic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tx, plain := kgoClient(t, brokers, topic, kgo.TransactionalID(topic+"-tx")), kgoClient(t, brokers, topic)
	produce := func(cl *kgo.Client, v string) int64 {
		t.Helper()
		rec, err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).First()
		if err != nil {
			t.Fatal(err)
		}
		return rec.Offset
	}
	rng := rand.New(rand.NewPCG(9, 10))
	noise := func() string {
		var b strings.Builder
		for b.Len() < 1000 {
			fmt.Fprintf(&b, "%016x", rng.Uint64())
		}
		return b.String()
	}
	var want []string
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(tx, "aborted-1")
	produce(tx, "aborted-2")
	for i := range 20 {
		v := fmt.Sprintf("plain-%02d-", i) + noise()
		produce(plain, v)
		want = append(want, v)
	}
	if err := tx.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		v := fmt.Sprintf("committed-%d", i)
		produce(tx, v)
		want = append(want, v)
	}
	if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	end := produce(plain, "last") + 1
	want = append(want, "last")

	tr := newTransport(nil, topic)
	defer tr.CloseIdleConnections()
	r := &partitionReader{tr: tr, addr: kafka.TCP(brokers...), topic: topic, maxBytes: 8 << 10, maxWait: 100 * time.Millisecond,
		log: slog.New(slog.DiscardHandler)}
	r.setOffset(kafka.FirstOffset)
	var got []string
	for {
		m, ok, err := r.readBefore(ctx, end)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if !isTransactionMarker(m) {
			got = append(got, string(m.Value[:min(len(m.Value), 11)]))
		}
	}
	for i := range want {
		want[i] = want[i][:min(len(want[i]), 11)]
	}
	if !slices.Equal(got, want) {
		t.Errorf("read %q,\nwant %q", got, want)
	}
}

// TestReaderTimeIsCreateTimeOnLogAppendTimeTopics (real Kafka) pins what
// docs/operations.md says of the future-skew check: on a topic of
// message.timestamp.type=LogAppendTime the reader still hands over the
// producer's CreateTime, since kafka-go's record batch decoder drops the
// batch's max timestamp, where the broker puts its append time. Should a
// kafka-go upgrade read it, this fails: the docs and the check's comment
// must then say so.
func TestReaderTimeIsCreateTimeOnLogAppendTimeTopics(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "logappend")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "message.timestamp.type", ConfigValue: "LogAppendTime"}}}}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{topic}}) })
	created := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("x"), Time: created}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	tr := newTransport(nil, topic)
	defer tr.CloseIdleConnections()
	r := &partitionReader{tr: tr, addr: kafka.TCP(brokers...), topic: topic, maxBytes: 1 << 20, maxWait: 100 * time.Millisecond,
		log: slog.New(slog.DiscardHandler)}
	r.setOffset(kafka.FirstOffset)
	m, ok, err := r.readBefore(ctx, 1)
	if err != nil || !ok {
		t.Fatalf("read: %v %v", ok, err)
	}
	if !m.Time.Equal(created) {
		t.Errorf("message time %v, want the CreateTime %v (kafka-go now reads LogAppendTime? then update docs/operations.md)", m.Time, created)
	}
	// The broker did stamp it: franz-go, which reads the batch's
	// timestamp type, sees the append time.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fs := cl.PollRecords(ctx, 1)
	if err := fs.Err0(); err != nil {
		t.Fatal(err)
	}
	recs := fs.Records()
	if len(recs) != 1 {
		t.Fatalf("franz-go reads %d records, want 1", len(recs))
	}
	if rec := recs[0]; rec.Attrs.TimestampType() != 1 || time.Since(rec.Timestamp).Abs() > time.Hour {
		t.Fatalf("franz-go reads the record stamped %v (type %d); want the broker's append time, type 1", rec.Timestamp, rec.Attrs.TimestampType())
	}
}

// deleteRecords deletes the records of partition 0 of topic before offset,
// as retention would.
func deleteRecords(t *testing.T, brokers []string, topic string, offset int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = 0, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10_000
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode); err != nil {
		t.Fatalf("delete records: %v", err)
	}
}

// TestRetentionLostCountsFromThePosition: a partition read again from
// before its position in Redis (to rebuild dedup ids or fill the offline
// log) counts as lost to retention only the events after the position,
// not those Redis has applied.
func TestRetentionLostCountsFromThePosition(t *testing.T) {
	forEachKafka(t, func(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
		topic := "lost-from-" + strings.ReplaceAll(t.Name(), "/", "-")
		brokers := kafkaFor(t, topic, 1)
		produce(t, brokers, topic, 20)
		deleteRecords(t, brokers, topic, 8)
		var lost int64
		r := &partitionReader{tr: newTransport(nil, topic), addr: kafka.TCP(brokers...), topic: topic, maxBytes: 1 << 20,
			maxWait: 100 * time.Millisecond, log: slog.New(slog.DiscardHandler), onLost: func(n int64) { lost += n }}
		r.setOffset(3) // the dedup or offline position
		r.expect(5, 0) // the position in Redis: offset 5, deleted since
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m, err := r.FetchMessage(ctx)
		if err != nil || m.Offset != 8 {
			t.Fatalf("first message %d, %v; want offset 8", m.Offset, err)
		}
		if lost != 2 {
			t.Errorf("%d events counted as lost, want 2 (offsets 6 and 7; Redis has 3 to 5)", lost)
		}
	})
}
