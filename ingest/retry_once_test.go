package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
)

// failScripts fails the next n script calls (EVAL, EVALSHA) of a client:
// the saves of positions.
type failScripts struct{ n atomic.Int32 }

func (h *failScripts) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *failScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); (n == "evalsha" || n == "eval") && h.n.Add(-1) >= 0 {
			return errors.New("injected failure")
		}
		return next(ctx, cmd)
	}
}
func (h *failScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestRetriedBatchLettersAndCountsOnce: a batch whose Redis writes and dead
// letters went through, but whose position could not be saved, is retried
// whole by its partition worker. The retries must not send its dead letters
// again (an hour of a failing step sent hundreds of copies of each), nor
// count its events again, as duplicates instead of applied.
func TestRetriedBatchLettersAndCountsOnce(t *testing.T) {
	const t0 = int64(1795687200000)
	ctx := context.Background()
	rc, store := miniStore(t)
	posClient := redis.NewClient(&redis.Options{Addr: rc.Options().Addr})
	t.Cleanup(func() { posClient.Close() })
	fail := &failScripts{}
	posClient.AddHook(fail)
	r := ringDefs(t, false)
	sink := &memSink{}
	a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(posClient, "p"), sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a.SetMetrics(NewMetrics(reg))
	if _, err := a.Resume(ctx, "txns", 0); err != nil {
		t.Fatal(err)
	}
	var msgs []kafka.Message
	for off := range int64(10) {
		v := fmt.Appendf(nil, `{"card":"c","ts":%d,"amount":1}`, t0+off)
		if off == 4 {
			v = []byte(`{"card":`)
		}
		msgs = append(msgs, kafka.Message{Topic: "txns", Offset: off, Time: time.UnixMilli(t0 + off), Value: v})
	}
	fail.n.Store(2)
	for attempt := 1; ; attempt++ {
		err := a.Apply(ctx, "txns", 0, msgs)
		if err == nil {
			break
		}
		if attempt == 3 {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
	}
	if n := len(sink.letters); n != 1 {
		t.Errorf("%d dead letters sent, want 1", n)
	}
	for _, c := range []struct {
		view, result string
		want         float64
	}{
		{"v", ResultApplied, 9},
		{"v", ResultDuplicate, 0},
		{"", string(ReasonInvalidPayload), 1},
	} {
		if got := testutil.ToFloat64(a.metrics.events.WithLabelValues("txns", c.view, c.result)); got != c.want {
			t.Errorf("events view=%q result=%s: %v, want %v", c.view, c.result, got, c.want)
		}
	}
}
