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

	"github.com/featurestore/featurestore/featurestore"
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

// pipeFaults decides for each pipeline of script calls (EVAL, EVALSHA: the
// online store's writes) whether it fails, and if so whether it ran in Redis
// first, as when the connection is cut before the replies come.
type pipeFaults struct {
	fn func(cmds []redis.Cmder) (fail, ran bool)
}

func (h *pipeFaults) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *pipeFaults) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *pipeFaults) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		script := slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return c.Name() == "evalsha" || c.Name() == "eval" })
		fail, ran := false, false
		if script && h.fn != nil {
			fail, ran = h.fn(cmds)
		}
		if !fail {
			return next(ctx, cmds)
		}
		if ran {
			if err := next(ctx, cmds); err != nil {
				return err
			}
		}
		err := errors.New("injected: connection cut")
		for _, c := range cmds {
			c.SetErr(err)
		}
		return err
	}
}

// faultyApplier returns an applier of ringDefs' source, with metrics, whose
// online store's client goes through h and does not retry (so that every
// failure reaches the applier), and whose positions are those of project
// pos; partition 0 of "txns" is resumed.
func faultyApplier(t *testing.T, rc *redis.Client, h *pipeFaults, pos string) *Applier {
	t.Helper()
	r := ringDefs(t, false)
	// Load the store's scripts first, with a blind write and a write after
	// a read to another project's hash, so that no pipeline fails with
	// NOSCRIPT and is sent again: the faults count pipelines.
	w, err := NewApplier("warm", r, r.Source("txns"), online.New(rc, online.Options{}), NewPositions(rc, "warm"), &memSink{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for off := range int64(2) {
		m := cardMsgs(1795687200000, 1, func(int) string { return "w" })
		m[0].Offset = off
		if err := w.Apply(context.Background(), "txns", 0, m); err != nil {
			t.Fatal(err)
		}
	}
	sc := redis.NewClient(&redis.Options{Addr: rc.Options().Addr, MaxRetries: -1})
	t.Cleanup(func() { sc.Close() })
	sc.AddHook(h)
	return resumedApplier(t, r, online.New(sc, online.Options{}), NewPositions(rc, pos), &memSink{})
}

// resumedApplier returns an applier of project "p" for source "txns" of r,
// with metrics, partition 0 of topic "txns" resumed.
func resumedApplier(t *testing.T, r *registry.Registry, store *online.Store, pos *Positions, sink DeadLetterSink) *Applier {
	t.Helper()
	a, err := NewApplier("p", r, r.Source("txns"), store, pos, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.SetMetrics(NewMetrics(prometheus.NewRegistry()))
	if _, err := a.Resume(context.Background(), "txns", 0); err != nil {
		t.Fatal(err)
	}
	return a
}

// cardMsgs returns n messages of partition 0 of "txns", offsets from 0, an
// event a millisecond after t0 each, of amount 1, for the card card(i).
func cardMsgs(t0 int64, n int, card func(int) string) []kafka.Message {
	var msgs []kafka.Message
	for i := range n {
		ts := t0 + int64(i)
		msgs = append(msgs, kafka.Message{Topic: "txns", Offset: int64(i), Time: time.UnixMilli(ts),
			Value: fmt.Appendf(nil, `{"card":%q,"ts":%d,"amount":1}`, card(i), ts)})
	}
	return msgs
}

// counts returns the events of view v the applier counted applied and
// duplicate.
func counts(a *Applier) (applied, dups float64) {
	return testutil.ToFloat64(a.metrics.events.WithLabelValues("txns", "v", ResultApplied)),
		testutil.ToFloat64(a.metrics.events.WithLabelValues("txns", "v", ResultDuplicate))
}

// applyUntilDone applies a batch as the partition worker does, again after
// each failure, and returns the number of failures.
func applyUntilDone(t *testing.T, a *Applier, msgs []kafka.Message) int {
	t.Helper()
	for failed := 0; ; failed++ {
		err := a.Apply(context.Background(), "txns", 0, msgs)
		if err == nil {
			return failed
		}
		if failed > 3 {
			t.Fatalf("batch still failing: %v", err)
		}
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
	return resumedApplier(t, ringDefs(t, false), store, NewPositions(posClient, "p"), sink)
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

// TestOnlineWriteReplyLost: a batch whose online write landed but whose
// reply was lost is tried again; the retry finds its events fenced, by the
// batch itself. They were applied once, and are counted applied, not
// duplicate. A blind write that lost its reply is not known to have landed
// (it may have been refused, or never sent): its events count duplicate.
func TestOnlineWriteReplyLost(t *testing.T) {
	const t0 = int64(1795687200000)
	for _, c := range []struct {
		name string
		lose int // the script pipeline of the second batch that loses its reply
	}{
		{"refused blind write", 1}, // the events' tile is stored: refused, nothing written
		{"write after a read", 2},  // then read, merged and written
	} {
		t.Run(c.name, func(t *testing.T) {
			rc, _ := miniStore(t)
			n := -1
			a := faultyApplier(t, rc, &pipeFaults{fn: func([]redis.Cmder) (bool, bool) {
				if n >= 0 {
					n++
				}
				return n == c.lose, true
			}}, "p")
			msgs := cardMsgs(t0, 30, func(int) string { return "c" }) // one tile
			applyUntilDone(t, a, msgs[:10])
			n = 0
			if failed := applyUntilDone(t, a, msgs[10:20]); failed == 0 || n < c.lose {
				t.Fatalf("%d failures, %d script pipelines: no reply lost", failed, n)
			}
			applyUntilDone(t, a, msgs[20:])
			if applied, dups := counts(a); applied != 30 || dups != 0 {
				t.Errorf("counted %v applied and %v duplicate, want 30 and 0", applied, dups)
			}
			res := readView(t, online.New(rc, online.Options{}), ringDefs(t, false), "v", "c", t0+29)
			if n, sum := res[0].Value.Int64(), res[1].Value.Int64(); n != 30 || sum != 30 {
				t.Errorf("after the retries: n_10m %d, amount_30m %d, want 30 and 30", n, sum)
			}
		})
	}
}

// TestReplayAfterFailedBlindWrite: a replay (Redis holds the events) whose
// first, blind write failed unsent counts its events duplicate.
func TestReplayAfterFailedBlindWrite(t *testing.T) {
	rc, _ := miniStore(t)
	msgs := cardMsgs(1795687200000, 10, func(int) string { return "c" })
	applyUntilDone(t, faultyApplier(t, rc, &pipeFaults{}, "p"), msgs)
	n := 0
	b := faultyApplier(t, rc, &pipeFaults{fn: func([]redis.Cmder) (bool, bool) { n++; return n == 1, false }}, "other")
	if applyUntilDone(t, b, msgs) == 0 {
		t.Fatal("no write failed")
	}
	if applied, dups := counts(b); applied != 0 || dups != 10 {
		t.Errorf("replay counted %v applied, %v duplicate; want 0 and 10", applied, dups)
	}
}

// TestCarryClearedByResume: what a failed attempt at a batch read of its
// fences is forgotten when the partition is resumed: another consumer may
// have applied the batch meanwhile, and its events are then duplicates.
func TestCarryClearedByResume(t *testing.T) {
	ctx := context.Background()
	rc, _ := miniStore(t)
	msgs := cardMsgs(1795687200000, 20, func(int) string { return "c" })
	n := -1
	b := faultyApplier(t, rc, &pipeFaults{fn: func([]redis.Cmder) (bool, bool) {
		if n >= 0 {
			n++
		}
		return n == 2, false // the write after the read fails unsent
	}}, "p")
	applyUntilDone(t, b, msgs[:10])
	n = 0
	if err := b.Apply(ctx, "txns", 0, msgs[10:]); err == nil {
		t.Fatal("the batch did not fail")
	}
	// Another consumer applies 10..19, and stops before saving its position.
	c := faultyApplier(t, rc, &pipeFaults{}, "p")
	pc := redis.NewClient(&redis.Options{Addr: rc.Options().Addr})
	t.Cleanup(func() { pc.Close() })
	fs := &failScripts{}
	fs.n.Store(1)
	pc.AddHook(fs)
	c.pos = NewPositions(pc, "p")
	if err := c.Apply(ctx, "txns", 0, msgs[10:]); err == nil {
		t.Fatal("the other consumer's save did not fail")
	}
	if off, err := b.Resume(ctx, "txns", 0); err != nil || off != 10 {
		t.Fatalf("resume: %d, %v", off, err)
	}
	applyUntilDone(t, b, msgs[10:])
	if applied, dups := counts(b); applied != 10 || dups != 10 {
		t.Errorf("counted %v applied, %v duplicate; want 10 and 10 (the other consumer applied 10..19)", applied, dups)
	}
}

// TestCarryKeptForLaterChunks: a batch of more groups than one Store.Apply
// takes (applyChunk): the first attempt writes the first chunk, blind, and
// the second chunk's writes after their reads land with their replies lost;
// the second attempt fails at the first chunk, unsent. The third counts
// every event applied: what the first attempt knew is kept through the
// second.
func TestCarryKeptForLaterChunks(t *testing.T) {
	const t0, n = int64(1795687200000), applyChunk + 76
	rc, _ := miniStore(t)
	card := func(i int) string { return fmt.Sprintf("k%04d", i) }
	msgs := cardMsgs(t0, n, card)
	holds := func(cmds []redis.Cmder, card string) bool {
		name := online.Key{Project: "p", View: "v", Entity: featurestore.StringKey(card)}.Name()
		return slices.ContainsFunc(cmds, func(c redis.Cmder) bool {
			return slices.ContainsFunc(c.Args(), func(a any) bool { s, ok := a.(string); return ok && s == name })
		})
	}
	stage, seen := -1, 0
	a := faultyApplier(t, rc, &pipeFaults{fn: func(cmds []redis.Cmder) (bool, bool) {
		switch {
		case stage == 0 && holds(cmds, card(n-1)):
			if seen++; seen == 2 { // the blind write was refused; this one follows the read
				stage = 1
				return true, true
			}
		case stage == 1 && holds(cmds, card(0)):
			stage = 2
			return true, false
		}
		return false, false
	}}, "p")
	// The second chunk's cards have the tile already, from partition 1: their
	// blind writes are refused, and they are read and written.
	var warm []kafka.Message
	for i, m := range msgs[applyChunk:] {
		m.Partition, m.Offset = 1, int64(i)
		warm = append(warm, m)
	}
	if err := a.Apply(context.Background(), "txns", 1, warm); err != nil {
		t.Fatal(err)
	}
	stage = 0
	applyUntilDone(t, a, msgs)
	if stage != 2 {
		t.Fatalf("stage %d: the faults were not injected", stage)
	}
	if applied, dups := counts(a); applied != n+76 || dups != 0 {
		t.Errorf("counted %v applied, %v duplicate; want %d and 0", applied, dups, n+76)
	}
}
