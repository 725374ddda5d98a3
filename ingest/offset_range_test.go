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
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
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

// TestResumePastTheEnd: a saved position past the partition's end (the
// topic was deleted and recreated, or its log lost) stalls the partition,
// since the fences of the old offsets would take the new events for
// replays; that must be said at error level, not retried in silence (kafka-go
// logs it through its error logger, which went to debug).
func TestResumePastTheEnd(t *testing.T) { forEachKafka(t, testResumePastTheEnd) }

func testResumePastTheEnd(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	topic := "past-end-" + strings.ReplaceAll(t.Name(), "/", "-")
	brokers := kafkaFor(t, topic, 1)
	produce(t, brokers, topic, 10)
	h := newFencedHandler()
	h.fence[0] = 999 // resumes at 1000, past the 10 messages
	logs := &logRecords{level: slog.LevelError}
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 100, SessionTimeout: 6 * time.Second,
		Logger: slog.New(logs)}
	stop := runGroupAsync(t, cfg, h)
	defer stop()
	waitFor(t, "an error about the position past the end", 30*time.Second, func() bool {
		return logs.has("past the partition's end")
	})
}

// TestResumeBeforeTheFirstOffset: a saved position that retention has
// deleted (the partition's first kept offset is past it) is logged at
// error level with how many events were lost, and reading goes on from the
// first offset kept, applying every event from there once.
func TestResumeBeforeTheFirstOffset(t *testing.T) { forEachKafka(t, testResumeBeforeTheFirstOffset) }

func testResumeBeforeTheFirstOffset(t *testing.T, kafkaFor func(t *testing.T, topic string, partitions int) []string) {
	topic := "before-first-" + strings.ReplaceAll(t.Name(), "/", "-")
	brokers := kafkaFor(t, topic, 1)
	produce(t, brokers, topic, 20)
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
	rp.Partition, rp.Offset = 0, 8
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
	h := newFencedHandler()
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
