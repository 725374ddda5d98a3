package ingest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
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
