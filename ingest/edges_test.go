package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// TestRecordWithoutTimestampNotFuture: a Kafka record without a timestamp
// (NO_TIMESTAMP, -1: old-format producers, or a producer that sends none)
// is not checked against the timestamp (Applier.future: messages without
// one are not checked). kafka-go's protocol package, which the partition
// reader decodes with, gives such a record the time 1969-12-31T23:59:59.999Z,
// not the zero time; before the reader mapped it to zero, every such event
// was rejected as future.
func TestRecordWithoutTimestampNotFuture(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "nots")
	testenv.CreateTopic(t, brokers, topic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now().UnixMilli()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	// Time -1 ms: kafka-go writes it as the record's timestamp, -1, which
	// is Kafka's NO_TIMESTAMP.
	if err := w.WriteMessages(ctx, kafka.Message{Value: fmt.Appendf(nil, `{"card":"c","ts":%d}`, now), Time: time.UnixMilli(-1)}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	tr := newTransport(nil, topic)
	defer tr.CloseIdleConnections()
	rd := &partitionReader{tr: tr, addr: kafka.TCP(brokers...), topic: topic, maxBytes: 1 << 20, maxWait: 100 * time.Millisecond,
		log: slog.New(slog.DiscardHandler)}
	rd.setOffset(kafka.FirstOffset)
	m, ok, err := rd.readBefore(ctx, 1)
	if err != nil || !ok {
		t.Fatalf("read: %v %v", ok, err)
	}
	t.Logf("message time as read: %v (IsZero %v)", m.Time, m.Time.IsZero())

	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(futureDefs(""))})
	if err != nil {
		t.Fatal(err)
	}
	_, store := miniStore(t)
	rc, _ := miniStore(t)
	sink := &memSink{}
	a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, "txns", 0, []kafka.Message{m}); err != nil {
		t.Fatal(err)
	}
	for _, l := range sink.letters {
		t.Errorf("event of a record without timestamp rejected: %s: %s", l.Reason, l.Detail)
	}
	if got := readView(t, store, r, "n", "c", now+1000)[0].Value.Int64(); got != 1 {
		t.Errorf("n_1d = %d, want 1", got)
	}
}

// edgeDefs: source txns (lateness 1m, default skew), entity card (string),
// view v with a 1h count and sum over tiles of 1m, view last with a last
// value of amount and a TTL of 2h.
func edgeDefs(t *testing.T) *registry.Registry {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(`
kind: Entity
name: card
join_keys: [{name: card, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card: card}
fields: {amount: double}
allowed_lateness: 1m
---
kind: FeatureView
name: v
entity: card
source: txns
tile: 1m
features:
  - {name: n_1h, aggregation: count, window: 1h}
  - {name: s_1h, field: amount, aggregation: sum, window: 1h}
---
kind: FeatureView
name: last
entity: card
source: txns
ttl: 2h
features:
  - {name: amount_last, field: amount, type: double}
`)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestLatenessPerPartitionBoundary: the late check goes by the high water of
// the event's own partition (DESIGN.md section 3), and the bound is
// exactly hw - lateness (accepted), one ms older rejected.
func TestLatenessPerPartitionBoundary(t *testing.T) {
	now := time.Now().UnixMilli()
	t0 := now - now%60_000 - 10*60_000
	r := edgeDefs(t)
	rc, store := miniStore(t)
	sink := &memSink{}
	a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	msg := func(off, ts int64) kafka.Message {
		return kafka.Message{Topic: "txns", Offset: off, Time: time.UnixMilli(now), Value: fmt.Appendf(nil, `{"card":"c","ts":%d,"amount":1}`, ts)}
	}
	hw := t0 + 5*60_000
	if err := a.Apply(ctx, "txns", 0, []kafka.Message{msg(0, hw), msg(1, hw-60_000), msg(2, hw-60_000-1)}); err != nil {
		t.Fatal(err)
	}
	if len(sink.letters) != 1 || sink.letters[0].Message.Offset != 2 || sink.letters[0].Reason != ReasonLate {
		t.Errorf("partition 0 letters %+v, want offset 2 late only", sink.letters)
	}
	// Partition 1 has its own high water: an event 5m before partition
	// 0's is not late there.
	if err := a.Apply(ctx, "txns", 1, []kafka.Message{msg(0, t0)}); err != nil {
		t.Fatal(err)
	}
	if len(sink.letters) != 1 {
		t.Errorf("partition 1's event rejected: %+v", sink.letters[1:])
	}
	if got := readView(t, store, r, "v", "c", now)[0].Value.Int64(); got != 3 {
		t.Errorf("n_1h = %d, want 3", got)
	}
}

// TestHashTTLs: the hash of a windowed view lives for the longest
// window plus the lateness plus the future skew after each write; that of
// a last-value view for its TTL plus the skew.
func TestHashTTLs(t *testing.T) {
	now := time.Now().UnixMilli()
	r := edgeDefs(t)
	rc, store := miniStore(t)
	a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Apply(ctx, "txns", 0, []kafka.Message{{Topic: "txns", Offset: 0, Time: time.UnixMilli(now),
		Value: fmt.Appendf(nil, `{"card":"c","ts":%d,"amount":1}`, now)}}); err != nil {
		t.Fatal(err)
	}
	skew := r.Source("txns").FutureSkew()
	for view, want := range map[string]time.Duration{"v": time.Hour + time.Minute + skew, "last": 2*time.Hour + skew} {
		key := viewKeyName("p", view, "c")
		got, err := rc.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("PTTL of %s = %v, want %v", key, got, want)
		}
	}
}

// TestMalformedInputsOneLetterEach: every malformed event becomes one dead letter
// with its reason and position, in one batch whose other events apply;
// keys holding { } : * and the empty string are entities of their own.
func TestMalformedInputsOneLetterEach(t *testing.T) {
	now := time.Now().UnixMilli()
	r := edgeDefs(t)
	rc, store := miniStore(t)
	sink := &memSink{}
	a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok := func(card string) string { return fmt.Sprintf(`{"card":%q,"ts":%d,"amount":2}`, card, now) }
	cases := []struct {
		payload string
		reason  Reason
	}{
		{ok("a"), ""},
		{`{"card":"a","ts":` + fmt.Sprint(now) + `,"amount":NaN}`, ReasonWrongType},
		{`{"card":"a","ts":` + fmt.Sprint(now) + `,"amount":Infinity}`, ReasonInvalidPayload},
		{`{"card":"a","ts":` + fmt.Sprint(now) + `,"amount":1e400}`, ReasonWrongType},
		{`{"card":"a","ts":` + fmt.Sprint(now) + `,"amount":-inf}`, ReasonWrongType},
		{`{"card":"a","ts":99999999999999999999999,"amount":1}`, ReasonBadTime},
		{`{"card":"a","ts":-99999999999999999,"amount":1}`, ReasonBadTime},
		{`{"card":"a","ts":1e300,"amount":1}`, ReasonBadTime},
		{`{"card":"a","ts":NaN,"amount":1}`, ReasonBadTime},
		{"{\"card\":\"\xff\xfe\",\"ts\":" + fmt.Sprint(now) + "}", ReasonInvalidPayload},
		{`{"card":"\ud800","ts":` + fmt.Sprint(now) + `}`, ReasonInvalidPayload},
		{`{"card":12,"ts":` + fmt.Sprint(now) + `}`, ReasonWrongType},
		{`{"card":{"x":1},"ts":` + fmt.Sprint(now) + `}`, ReasonWrongType},
		{`{"card":null,"ts":` + fmt.Sprint(now) + `}`, ReasonMissingKey},
		{`{"ts":` + fmt.Sprint(now) + `}`, ReasonMissingKey},
		{`[1,2]`, ReasonInvalidPayload},
		{``, ReasonInvalidPayload},
		{`{"card":"a","ts":` + fmt.Sprint(now) + `,"amount":1}garbage`, ReasonInvalidPayload},
		{ok("{a}"), ""},
		{ok("a:b*"), ""},
		{ok(""), ""},
		{ok("}"), ""},
	}
	var msgs []kafka.Message
	for i, c := range cases {
		msgs = append(msgs, kafka.Message{Topic: "txns", Partition: 3, Offset: int64(100 + i), Time: time.UnixMilli(now), Value: []byte(c.payload)})
	}
	if err := a.Apply(context.Background(), "txns", 3, msgs); err != nil {
		t.Fatal(err)
	}
	byOffset := map[int64][]DeadLetter{}
	for _, l := range sink.letters {
		byOffset[l.Message.Offset] = append(byOffset[l.Message.Offset], l)
	}
	for i, c := range cases {
		ls := byOffset[int64(100+i)]
		var got []Reason
		for _, l := range ls {
			got = append(got, l.Reason)
			if l.Message.Partition != 3 || l.Detail == "" {
				t.Errorf("%q: letter without its position or detail: %+v", c.payload, l)
			}
		}
		want := []Reason{}
		if c.reason != "" {
			want = []Reason{c.reason}
			if c.reason == ReasonMissingKey {
				want = []Reason{ReasonMissingKey, ReasonMissingKey} // one per view
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%q: letters %v, want %v", c.payload, got, want)
		}
	}
	for _, card := range []string{"a", "{a}", "a:b*", "", "}"} {
		if got := readView(t, store, r, "v", card, now+1)[0].Value.Int64(); got != 1 {
			t.Errorf("card %q: n_1h = %d, want 1", card, got)
		}
	}
}

func viewKeyName(project, view, card string) string {
	return online.Key{Project: project, View: view, Entity: featurestore.StringKey(card)}.Name()
}
