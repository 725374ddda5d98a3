package ingest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
)

// keyless is a decoder with a bug: a payload marked BOOM decodes into an
// event without its key values, which routing the event then indexes.
type keyless struct{ Decoder }

func (d keyless) Decode(payload []byte, ev *Event) error {
	if err := d.Decoder.Decode(payload, ev); err != nil {
		return err
	}
	if bytes.Contains(payload, []byte("BOOM")) {
		ev.Keys = ev.Keys[:0]
	}
	return nil
}

// TestPoisonEvent: an event that makes preparing its batch panic (a bug,
// here a decoder that hands over an event without its key) fails that
// attempt at the batch, not the process; the retry sends the event to the
// dead letters, naming the panic, and applies the others, each once.
func TestPoisonEvent(t *testing.T) {
	const t0, minute = int64(1795687200000), int64(60_000)
	ctx := context.Background()
	r := ringDefs(t, false)
	rc, store := miniStore(t)
	sink := &memSink{}
	a := resumedApplier(t, r, store, NewPositions(rc, "p"), sink)
	ps := a.partition(0)
	ps.dec = keyless{ps.dec}
	var msgs []kafka.Message
	for off := range int64(10) {
		v := fmt.Sprintf(`{"card":"c","ts":%d,"amount":%d}`, t0+off, off)
		if off == 4 {
			v = fmt.Sprintf(`{"card":"c","ts":%d,"amount":100,"note":"BOOM"}`, t0+off)
		}
		msgs = append(msgs, kafka.Message{Topic: "txns", Offset: off, Time: time.UnixMilli(t0 + off), Value: []byte(v)})
	}
	err := a.Apply(ctx, "txns", 0, msgs)
	if err == nil || !strings.Contains(err.Error(), "panic (a bug; please report it): runtime error: index out of range") ||
		!strings.Contains(err.Error(), "the batch is tried again without offset 4") {
		t.Fatalf("first attempt: %v, want the panic as its error", err)
	}
	if len(sink.letters) != 0 {
		t.Fatalf("the failed attempt sent %d dead letters", len(sink.letters))
	}
	if err := a.Apply(ctx, "txns", 0, msgs); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if len(sink.letters) != 1 || sink.letters[0].Message.Offset != 4 || sink.letters[0].Reason != ReasonInvalidPayload ||
		!strings.HasPrefix(sink.letters[0].Detail, "ingest panicked on this event (a bug; please report it): runtime error: index out of range") {
		t.Fatalf("dead letters %+v, want offset 4's naming the panic", sink.letters)
	}
	if got := testutil.ToFloat64(a.metrics.events.WithLabelValues("txns", "v", ResultApplied)); got != 9 {
		t.Errorf("applied %v events, want 9", got)
	}
	vals := readView(t, store, r, "v", "c", t0+minute)
	if n, sum := vals[0].Value.Int64(), vals[1].Value.Int64(); n != 9 || sum != 45-4 {
		t.Errorf("count %d, sum %d; want 9 and 41", n, sum)
	}
	if len(ps.poison) != 0 {
		t.Errorf("poison kept after the batch was applied: %v", ps.poison)
	}
}
