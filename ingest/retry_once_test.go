package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/registry"
)

// failScripts fails the next n script calls (EVAL, EVALSHA) of a client:
// the saves of positions. With ran, each runs in Redis first, as when the
// connection is cut before the reply comes.
type failScripts struct {
	n   atomic.Int32
	ran bool
}

func (h *failScripts) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *failScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); (n == "evalsha" || n == "eval") && h.n.Add(-1) >= 0 {
			if h.ran {
				if err := next(ctx, cmd); err != nil {
					return err
				}
			}
			return errors.New("injected failure")
		}
		return next(ctx, cmd)
	}
}
func (h *failScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// losePipes lets skip pipelines of script calls (EVAL, EVALSHA: the online
// store's writes) through, then makes the next n run in Redis but fail, as
// when the connection is cut before the replies come.
type losePipes struct{ skip, n atomic.Int32 }

func (h *losePipes) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *losePipes) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *losePipes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return c.Name() == "evalsha" || c.Name() == "eval" }) {
			return next(ctx, cmds)
		}
		if err := next(ctx, cmds); err != nil || h.skip.Add(-1) >= 0 || h.n.Add(-1) < 0 {
			return err // an error: nothing ran (NOSCRIPT), or a real one
		}
		err := errors.New("injected: connection cut after the pipeline ran")
		for _, c := range cmds {
			c.SetErr(err)
		}
		return err
	}
}

// failingSaves returns an applier of ringDefs' source, with metrics, whose
// position saves go through fail; partition 0 of "txns" is resumed.
func failingSaves(t *testing.T, fail *failScripts, sink DeadLetterSink) *Applier {
	t.Helper()
	rc, store := miniStore(t)
	posClient := redis.NewClient(&redis.Options{Addr: rc.Options().Addr})
	t.Cleanup(func() { posClient.Close() })
	posClient.AddHook(fail)
	r := ringDefs(t, false)
	a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(posClient, "p"), sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.SetMetrics(NewMetrics(prometheus.NewRegistry()))
	if _, err := a.Resume(context.Background(), "txns", 0); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestRetriedBatchLettersAndCountsOnce: a batch whose Redis writes and dead
// letters went through, but whose position could not be saved, is retried
// whole by its partition worker. The retries must not send its dead letters
// again (an hour of a failing step sent hundreds of copies of each), nor
// count its events again, as duplicates instead of applied.
func TestRetriedBatchLettersAndCountsOnce(t *testing.T) {
	const t0 = int64(1795687200000)
	ctx := context.Background()
	fail := &failScripts{}
	sink := &memSink{}
	a := failingSaves(t, fail, sink)
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

// TestDuplicatesCountedAfterResume: a batch read again from an earlier
// offset (here after Redis lost state) counts the duplicates by event id
// and the transaction markers past what the earlier attempt counted; they
// were left out whole.
func TestDuplicatesCountedAfterResume(t *testing.T) {
	const t0 = int64(1795687200000)
	ctx := context.Background()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(dedupDefs)})
	if err != nil {
		t.Fatal(err)
	}
	rc, store := miniStore(t)
	a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &memSink{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.SetMetrics(NewMetrics(prometheus.NewRegistry()))
	var msgs []kafka.Message
	for i := range 20 {
		id := i
		if i >= 15 {
			id = i - 5 // 15..19 repeat the ids of 10..14
		}
		msgs = append(msgs, kafka.Message{Topic: "txns", Offset: int64(i),
			Value: fmt.Appendf(nil, `{"card":"c","id":"e%d","ts":%d,"amount":1}`, id, t0+int64(id)*1000)})
	}
	if _, err := a.Resume(ctx, "txns", 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, "txns", 0, msgs[:10]); err != nil {
		t.Fatal(err)
	}
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, "txns", 0, msgs[10:]); !errors.Is(err, ErrResumePartition) {
		t.Fatalf("after Redis lost state: %v, want ErrResumePartition", err)
	}
	if _, err := a.Resume(ctx, "txns", 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, "txns", 0, msgs); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(a.metrics.events.WithLabelValues("txns", "", resultDuplicateID)); got != 5 {
		t.Errorf("duplicates by id counted: %v, want 5", got)
	}
}

// TestPositionSaveReplyLost: a position save that Redis ran but whose reply
// was lost (the connection cut) fails the batch; the retry finds the
// partition's own position stored and must apply the batch again as it
// was, not take it for another consumer's and resume the partition.
func TestPositionSaveReplyLost(t *testing.T) {
	const t0 = int64(1795687200000)
	ctx := context.Background()
	lose := &failScripts{ran: true}
	a := failingSaves(t, lose, &memSink{})
	var msgs []kafka.Message
	for off := range int64(20) {
		msgs = append(msgs, kafka.Message{Topic: "txns", Offset: off, Time: time.UnixMilli(t0 + off),
			Value: fmt.Appendf(nil, `{"card":"c","ts":%d,"amount":1}`, t0+off)})
	}
	if err := a.Apply(ctx, "txns", 0, msgs[:10]); err != nil {
		t.Fatal(err)
	}
	lose.n.Store(1)
	if err := a.Apply(ctx, "txns", 0, msgs[10:]); err == nil {
		t.Fatal("the batch whose save reply was lost succeeded")
	}
	if err := a.Apply(ctx, "txns", 0, msgs[10:]); err != nil {
		t.Fatalf("retry of the batch whose save went through: %v", err)
	}
	if err := a.Apply(ctx, "txns", 0, append([]kafka.Message(nil), kafka.Message{Topic: "txns", Offset: 20,
		Time: time.UnixMilli(t0 + 20), Value: fmt.Appendf(nil, `{"card":"c","ts":%d,"amount":1}`, t0+20)})); err != nil {
		t.Fatalf("next batch: %v", err)
	}
	if got := testutil.ToFloat64(a.metrics.events.WithLabelValues("txns", "v", ResultApplied)); got != 21 {
		t.Errorf("applied events counted: %v, want 21", got)
	}
}

// TestOnlineWriteReplyLost: a batch whose online writes landed but whose
// replies were lost is tried again; the retry finds its events fenced, by
// the batch itself. They were applied once, and are counted applied, not
// duplicate: whether the lost write was blind (a new tile) or checked the
// version (a tile already stored), and whichever of the batch's pipelines
// lost its reply.
func TestOnlineWriteReplyLost(t *testing.T) {
	const t0 = int64(1795687200000)
	for _, c := range []struct {
		name string
		skip int32 // script pipelines of the batch that keep their replies
		tile int64 // the tile of the batch's events, in minutes after the first batch's
	}{
		{"blind write", 0, 2},         // a new tile: written blind, no read
		{"refused blind write", 0, 0}, // the same tile: refused, nothing written
		{"write after a read", 1, 0},  // then read, merged and written
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			rc, _ := miniStore(t)
			storeClient := redis.NewClient(&redis.Options{Addr: rc.Options().Addr, MaxRetries: -1})
			t.Cleanup(func() { storeClient.Close() })
			lose := &losePipes{}
			storeClient.AddHook(lose)
			r := ringDefs(t, false)
			a, err := NewApplier("p", r, r.Source("txns"), online.New(storeClient, online.Options{}), NewPositions(rc, "p"), &memSink{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			a.SetMetrics(NewMetrics(prometheus.NewRegistry()))
			if _, err := a.Resume(ctx, "txns", 0); err != nil {
				t.Fatal(err)
			}
			var msgs []kafka.Message
			for off := range int64(30) {
				ts := t0 + off
				if off >= 10 {
					ts += c.tile * 60000
				}
				msgs = append(msgs, kafka.Message{Topic: "txns", Offset: off, Time: time.UnixMilli(ts),
					Value: fmt.Appendf(nil, `{"card":"c","ts":%d,"amount":1}`, ts)})
			}
			if err := a.Apply(ctx, "txns", 0, msgs[:10]); err != nil {
				t.Fatal(err)
			}
			lose.skip.Store(c.skip)
			lose.n.Store(1)
			failed := 0
			for {
				err := a.Apply(ctx, "txns", 0, msgs[10:20])
				if err == nil {
					break
				}
				if failed++; failed > 3 {
					t.Fatalf("batch still failing: %v", err)
				}
			}
			if lose.n.Load() >= 0 {
				t.Fatal("no pipeline lost its reply")
			}
			if failed == 0 {
				t.Fatal("the batch whose reply was lost did not fail")
			}
			if err := a.Apply(ctx, "txns", 0, msgs[20:]); err != nil {
				t.Fatal(err)
			}
			applied := testutil.ToFloat64(a.metrics.events.WithLabelValues("txns", "v", ResultApplied))
			dups := testutil.ToFloat64(a.metrics.events.WithLabelValues("txns", "v", ResultDuplicate))
			if applied != 30 || dups != 0 {
				t.Errorf("counted %v applied and %v duplicate, want 30 and 0", applied, dups)
			}
			res := readView(t, online.New(rc, online.Options{}), r, "v", "c", msgs[29].Time.UnixMilli())
			if n, sum := res[0].Value.Int64(), res[1].Value.Int64(); n != 30 || sum != 30 {
				t.Errorf("after the retries: n_10m %d, amount_30m %d, want 30 and 30", n, sum)
			}
		})
	}
}
