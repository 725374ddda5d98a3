package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/registry"
)

// TestPositionLostResumes: when Redis loses its state while ingest runs (a
// restart without persistence, a failover to a replica that lags), the
// next batch must not be applied on top of it: its fences would make the
// replay skip the lost events of the keys it writes. Ingest asks for the
// partition to be resumed instead, which replays from what Redis holds
// now. Before, it carried on from its own offset and the lost events were
// never applied again.
func TestPositionLostResumes(t *testing.T) {
	const t0, minute = int64(1795687200000), int64(60_000)
	r := ringDefs(t, false)
	ctx := context.Background()
	msgs := func(from, to int64) []kafka.Message {
		var out []kafka.Message
		for off := from; off < to; off++ {
			ts := t0 + off*1000
			out = append(out, kafka.Message{Topic: "txns", Offset: off, Time: time.UnixMilli(ts),
				Value: fmt.Appendf(nil, `{"card":"c","ts":%d,"amount":1}`, ts)})
		}
		return out
	}
	for _, c := range []struct {
		name string
		lose func(t *testing.T, a *Applier)
	}{
		{"wiped", func(t *testing.T, a *Applier) {}},
		{"older position", func(t *testing.T, a *Applier) {
			// A replica that lags: the state of offsets 0..4 only.
			if err := a.Apply(ctx, "txns", 0, msgs(0, 5)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc, store := miniStore(t)
			a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			a.SetMetrics(NewMetrics(prometheus.NewRegistry()))
			if next, err := a.Resume(ctx, "txns", 0); err != nil || next != kafka.FirstOffset {
				t.Fatalf("resume: %d, %v", next, err)
			}
			if err := a.Apply(ctx, "txns", 0, msgs(0, 10)); err != nil {
				t.Fatal(err)
			}
			if err := rc.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			// The state Redis comes back with, applied by another Applier.
			other, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.lose(t, other)
			err = a.Apply(ctx, "txns", 0, msgs(10, 20))
			if !errors.Is(err, ErrResumePartition) {
				t.Fatalf("batch after Redis lost state: %v, want ErrResumePartition", err)
			}
			if n := testutil.ToFloat64(a.metrics.resets.WithLabelValues("txns", resetWentBack)); n != 1 {
				t.Errorf("position resets (went_back) counted %v, want 1", n)
			}
			// What the partition worker does then: resume, and read again.
			next, err := a.Resume(ctx, "txns", 0)
			if err != nil {
				t.Fatal(err)
			}
			from := next
			if next == kafka.FirstOffset {
				from = 0
			}
			if err := a.Apply(ctx, "txns", 0, msgs(from, 20)); err != nil {
				t.Fatal(err)
			}
			if got := readView(t, store, r, "v", "c", t0+minute)[0].Value.Int64(); got != 20 {
				t.Errorf("n_10m = %d, want 20: every event once", got)
			}
		})
	}
}

// topicDefs is a source on topic with a lifetime count.
func topicDefs(t *testing.T, topic string) *registry.Registry {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(strings.ReplaceAll(`
kind: Entity
name: card
join_keys: [{name: card, type: string}]
---
kind: Source
name: txns
kafka: {topic: TOPIC}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card: card}
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: card
source: txns
features: [{name: n, aggregation: count, window: lifetime}]
`, "TOPIC", topic))})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// topicMsgs are n events of card c on topic, offsets from..from+n-1.
func topicMsgs(topic string, from, n int64) []kafka.Message {
	const t0 = int64(1795687200000)
	var out []kafka.Message
	for off := from; off < from+n; off++ {
		out = append(out, kafka.Message{Topic: topic, Offset: off, Time: time.UnixMilli(t0 + off),
			Value: fmt.Appendf(nil, `{"card":"c","ts":%d}`, t0+off)})
	}
	return out
}

// TestRollingTopicChange: while processes on the old and the new
// definitions both run, one reading the old topic and one the new, neither
// resets the other's position. Positions of one source and partition were
// one key whatever the topic, and each save of one made the other resume
// its topic from the start.
func TestRollingTopicChange(t *testing.T) {
	ctx := context.Background()
	rc, store := miniStore(t)
	appliers := map[string]*Applier{}
	for _, topic := range []string{"old", "new"} {
		r := topicDefs(t, topic)
		a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Resume(ctx, topic, 0); err != nil {
			t.Fatal(err)
		}
		appliers[topic] = a
	}
	for round := range int64(3) {
		for _, topic := range []string{"old", "new"} {
			if err := appliers[topic].Apply(ctx, topic, 0, topicMsgs(topic, 10*round, 10)); err != nil {
				t.Fatalf("round %d, topic %s: %v", round, topic, err)
			}
		}
	}
	for _, topic := range []string{"old", "new"} {
		if next, err := appliers[topic].Resume(ctx, topic, 0); err != nil || next != 30 {
			t.Errorf("topic %s resumes at %d (%v), want 30", topic, next, err)
		}
	}
}

// TestTopicChangeStartsAtTheBeginning: a source moved to another topic (a
// breaking change plan allows with --allow-breaking) starts the new topic
// at its earliest offset: positions are kept per topic. Before, the new
// topic was resumed at the old topic's offsets, and its first events were
// skipped.
func TestTopicChangeStartsAtTheBeginning(t *testing.T) {
	const t0 = int64(1795687200000)
	ctx := context.Background()
	rc, store := miniStore(t)
	for i, topic := range []string{"old", "new"} {
		r := topicDefs(t, topic)
		a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		next, err := a.Resume(ctx, topic, 0)
		if err != nil {
			t.Fatal(err)
		}
		if next != kafka.FirstOffset {
			t.Fatalf("topic %s: resumes at %d, want the earliest offset", topic, next)
		}
		if err := a.Apply(ctx, topic, 0, topicMsgs(topic, 0, 10)); err != nil {
			t.Fatal(err)
		}
		if got := readView(t, store, r, "v", "c", t0+time.Hour.Milliseconds())[0].Value.Int64(); got != int64(10*(i+1)) {
			t.Errorf("after topic %s: n = %d, want %d", topic, got, 10*(i+1))
		}
		// And the new topic's position moves on from its own offsets.
		if next, err := a.Resume(ctx, topic, 0); err != nil || next != 10 {
			t.Errorf("topic %s: resumes at %d (%v), want 10", topic, next, err)
		}
	}
}
