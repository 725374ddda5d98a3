package ingest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

const dedupDefs = `
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
event_id_field: id
allowed_lateness: 1m
---
kind: FeatureView
name: totals
entity: card
source: txns
features:
  - {name: n, aggregation: count, window: lifetime}
  - {name: amount, aggregation: sum, field: amount, window: lifetime}
`

// flakySink is a dead-letter sink that fails while failing is set: the
// batch fails after its Redis writes and before its position is saved, as
// a crash there would leave it.
type flakySink struct {
	mu      sync.Mutex
	failing bool
	letters []DeadLetter
}

func (s *flakySink) Send(_ context.Context, l []DeadLetter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing {
		return errors.New("dead-letter topic unreachable")
	}
	s.letters = append(s.letters, l...)
	return nil
}

// dedupEvent is one message of the dedup tests.
type dedupEvent struct {
	card, id string
	time     int64
	amount   int
	bad      bool // does not decode: dead-lettered, so that a failing sink fails its batch
}

// dedupMessages returns the messages of events, at offsets 0 on.
func dedupMessages(events []dedupEvent) []kafka.Message {
	msgs := make([]kafka.Message, len(events))
	for i, e := range events {
		v := fmt.Appendf(nil, `{"card":%q,"id":%q,"ts":%d,"amount":%d}`, e.card, e.id, e.time, e.amount)
		if e.bad {
			v = []byte(`{"card":`)
		}
		msgs[i] = kafka.Message{Topic: "txns", Offset: int64(i), Value: v}
	}
	return msgs
}

// dedupReference applies the semantics directly, in offset order: an event
// older than the high water minus the lateness is late; one whose (id,
// time) an accepted event had is a duplicate; the rest are accepted. It
// returns each card's count and sum, and the number of duplicates.
func dedupReference(events []dedupEvent, lateness int64) (map[string][2]int64, int) {
	out := map[string][2]int64{}
	seen := map[dedupKey]bool{}
	var hw int64
	has, dups := false, 0
	for _, e := range events {
		switch {
		case e.bad:
		case has && e.time < hw-lateness:
		case seen[dedupKey{e.id, e.time}]:
			dups++
		default:
			seen[dedupKey{e.id, e.time}] = true
			if !has || e.time > hw {
				hw, has = e.time, true
			}
			v := out[e.card]
			out[e.card] = [2]int64{v[0] + 1, v[1] + int64(e.amount)}
		}
	}
	return out, dups
}

// dedupReferenceCapped is dedupReference with the source's dedup_max_ids:
// the events remembered are a run of the events with an id, in offset
// order, that loses its first ones while their time is older than the
// lateness allows (before each event is decided) and while it holds more
// than maxIDs (after each event is added). It is recomputed here from the
// whole stream with indexes into it.
func dedupReferenceCapped(events []dedupEvent, lateness int64, maxIDs int) (map[string][2]int64, int) {
	out := map[string][2]int64{}
	var hw int64
	has, dups := false, 0
	first := 0      // events[first:i] with an id are remembered
	remembered := 0 // how many
	for i, e := range events {
		if e.bad {
			continue
		}
		for ; has && first < i && (events[first].bad || events[first].time < hw-lateness); first++ {
			if !events[first].bad {
				remembered--
			}
		}
		late := has && e.time < hw-lateness
		dup := false
		for j := first; j < i && !late; j++ {
			dup = dup || !events[j].bad && events[j].id == e.id && events[j].time == e.time
		}
		for remembered++; remembered > maxIDs; first++ {
			if !events[first].bad {
				remembered--
			}
		}
		switch {
		case late:
		case dup:
			dups++
		default:
			if !has || e.time > hw {
				hw, has = e.time, true
			}
			v := out[e.card]
			out[e.card] = [2]int64{v[0] + 1, v[1] + int64(e.amount)}
		}
	}
	return out, dups
}

// TestDedupByEventIDAgainstReference: random streams of events, with
// copies of earlier events (same id and time) at later offsets, some
// within the lateness and some beyond it, ids reused with another time,
// and malformed messages, are ingested in random batches through the
// applier, with batches that fail after their Redis writes (the failing
// dead-letter sink) and are retried or followed by a restart, and restarts (a new applier resuming the partition
// from its saved position, rebuilding what it remembers from the offset
// that position gives). Every card's count and sum must equal the
// reference's, which decides duplicates by scanning all earlier events.
//
// With a small dedup_max_ids the reference is dedupReferenceCapped, and
// some copies the uncapped reference drops must count again.
func TestDedupByEventIDAgainstReference(t *testing.T) {
	lateness := int64(time.Minute / time.Millisecond)
	for _, maxIDs := range []int{0, 3, 25} {
		t.Run(fmt.Sprintf("dedup_max_ids=%d", maxIDs), func(t *testing.T) {
			defs := dedupDefs
			if maxIDs > 0 {
				defs = strings.Replace(defs, "event_id_field: id\n", fmt.Sprintf("event_id_field: id\ndedup_max_ids: %d\n", maxIDs), 1)
			}
			r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(defs)})
			if err != nil {
				t.Fatal(err)
			}
			testDedupAgainstReference(t, r, lateness, maxIDs)
		})
	}
}

func testDedupAgainstReference(t *testing.T, r *registry.Registry, lateness int64, maxIDs int) {
	const t0 = int64(1795687200000)
	src := r.Source("txns")
	if maxIDs > 0 && src.MaxDedupIDs() != maxIDs {
		t.Fatalf("dedup_max_ids %d, want %d", src.MaxDedupIDs(), maxIDs)
	}
	differ := 0 // streams where the cap changes the duplicates
	for seed := range uint64(30) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 77))
			var events []dedupEvent
			at := t0
			for i := range 400 + rng.IntN(400) {
				at += rng.Int64N(3000)
				var e dedupEvent
				switch c := rng.IntN(20); {
				case c < 4 && len(events) > 0: // a copy of an earlier event
					e = events[len(events)-1-rng.IntN(min(len(events), 60))]
					e.bad = false
					if e.id == "" {
						e.id = "none"
					}
				case c == 4 && len(events) > 0: // an id reused with another time
					e = events[rng.IntN(len(events))]
					e.time, e.bad = at-rng.Int64N(2*lateness), false
					if e.id == "" { // an empty id is no id: every event here has one
						e.id = "none"
					}
				case c == 5:
					e = dedupEvent{bad: true}
				default:
					e = dedupEvent{card: fmt.Sprintf("c%d", rng.IntN(5)), id: fmt.Sprintf("e%d", i), time: at - rng.Int64N(lateness*3/2), amount: 1 + rng.IntN(100)}
				}
				events = append(events, e)
			}
			msgs := dedupMessages(events)

			rc, store := miniStore(t)
			sink := &flakySink{}
			ctx := context.Background()
			newApplier := func() (*Applier, int64) {
				a, err := NewApplier("p", r, src, store, NewPositions(rc, "p"), sink, nil)
				if err != nil {
					t.Fatal(err)
				}
				next, err := a.Resume(ctx, "txns", 0)
				if err != nil {
					t.Fatal(err)
				}
				if next == kafka.FirstOffset {
					next = 0
				}
				return a, next
			}
			a, next := newApplier()
			restarts, warmed := 0, 0
			for next < int64(len(msgs)) {
				end := min(next+1+rng.Int64N(40), int64(len(msgs)))
				sink.failing = rng.IntN(8) == 0
				err := a.Apply(ctx, "txns", 0, msgs[next:end])
				switch {
				case err != nil && !sink.failing:
					t.Fatal(err)
				case err != nil && rng.IntN(2) == 0:
					// Retried, as the partition worker does: the same
					// batch, from the same state.
					sink.failing = false
					if err := a.Apply(ctx, "txns", 0, msgs[next:end]); err != nil {
						t.Fatal(err)
					}
					next = end
				case err != nil || rng.IntN(10) == 0: // crash, or restart
					sink.failing = false
					var from int64
					a, from = newApplier()
					restarts++
					if from < next {
						warmed++
					}
					next = from
				default:
					next = end
				}
			}
			want, dups := dedupReference(events, lateness)
			if maxIDs > 0 {
				// The cap forgets copies the uncapped reference drops.
				capped, cdups := dedupReferenceCapped(events, lateness, maxIDs)
				if cdups != dups {
					differ++
				}
				want, dups = capped, cdups
			} else if capped, cdups := dedupReferenceCapped(events, lateness, len(events)); cdups != dups || !maps.Equal(capped, want) {
				t.Fatalf("the capped reference without a cap finds %d duplicates, the reference %d", cdups, dups)
			}
			checkTotals(t, store, r, at, want)
			if testing.Verbose() {
				t.Logf("%d events, %d duplicates, %d restarts (%d rebuilding from an earlier offset)", len(events), dups, restarts, warmed)
			}
		})
	}
	if maxIDs > 0 && differ == 0 {
		t.Errorf("with dedup_max_ids %d the duplicates are those without a cap in every stream: the streams do not test the cap", maxIDs)
	}
}

// TestDedupPositionSavesRebuildOffset: the saved position says from where a
// resume rebuilds the remembered events, the offset of the oldest one still
// within the lateness; a resumed applier starts there.
func TestDedupPositionSavesRebuildOffset(t *testing.T) {
	const t0 = int64(1795687200000)
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(dedupDefs)})
	if err != nil {
		t.Fatal(err)
	}
	rc, store := miniStore(t)
	pos := NewPositions(rc, "p")
	a, err := NewApplier("p", r, r.Source("txns"), store, pos, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a.SetMetrics(NewMetrics(reg))
	ctx := context.Background()
	// Offsets 0..3: times t0, t0+50s, t0+90s, t0+100s. With 1m lateness the
	// horizon ends at t0+40s: offset 0 is forgotten, offset 1 is the oldest
	// remembered.
	var msgs []kafka.Message
	for i, dt := range []int64{0, 50_000, 90_000, 100_000} {
		msgs = append(msgs, kafka.Message{Offset: int64(i), Value: fmt.Appendf(nil, `{"card":"c","id":"e%d","ts":%d,"amount":1}`, i, t0+dt)})
	}
	if err := a.Apply(ctx, "txns", 0, msgs); err != nil {
		t.Fatal(err)
	}
	got, ok, err := pos.Load(ctx, "txns", "txns", 0)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	last := msgs[len(msgs)-1]
	if want := (Position{Offset: 3, HW: t0 + 100_000, HasHW: true, DedupFrom: 1, HasDedup: true,
		Record: recordSum(last.Key, last.Value), HasRecord: true}); got != want {
		t.Fatalf("position %+v, want %+v", got, want)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ids := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "featurestore_ingest_dedup_ids" && len(mf.GetMetric()) == 1 {
			ids = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if ids != 3 {
		t.Errorf("featurestore_ingest_dedup_ids %v, want 3 (offsets 1 to 3)", ids)
	}
	b, err := NewApplier("p", r, r.Source("txns"), store, pos, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if next, err := b.Resume(ctx, "txns", 0); err != nil || next != 1 {
		t.Fatalf("resume at %d, %v; want 1", next, err)
	}
	// The rebuild, then a copy of offset 1's event: a duplicate.
	dup := kafka.Message{Offset: 4, Value: msgs[1].Value}
	if err := b.Apply(ctx, "txns", 0, append(msgs[1:], dup)); err != nil {
		t.Fatal(err)
	}
	if len(b.partition(0).b.letters) != 0 || b.partition(0).b.dupIDs != 1 {
		t.Errorf("letters %v, duplicates %d: want the copy dropped as a duplicate", b.partition(0).b.letters, b.partition(0).b.dupIDs)
	}
}

// TestDedupSetCapAndDiscard: the cap forgets the oldest entries as they are
// added, a failed batch's changes are undone whole (forgotten entries come
// back, added ones go), and commit reports what the cap forgot.
func TestDedupSetCapAndDiscard(t *testing.T) {
	var s dedupSet
	s.reset(2)
	k := func(i int) dedupKey { return dedupKey{fmt.Sprint("e", i), int64(i)} }
	s.add(k(0), 0)
	s.add(k(1), 1)
	if n := s.commit(0); n != 0 || s.len() != 2 {
		t.Fatalf("forgot %d, len %d; want 0, 2", n, s.len())
	}
	s.add(k(2), 2)
	s.add(k(1), 3) // a duplicate's entry: k(1) is held twice
	if s.has(k(0)) || s.has(k(1)) != true || s.len() != 2 {
		t.Fatalf("after the cap: has 0 %v, has 1 %v, len %d", s.has(k(0)), s.has(k(1)), s.len())
	}
	s.discard()
	if !s.has(k(0)) || !s.has(k(1)) || s.has(k(2)) || s.len() != 2 || s.from(0, 9) != 0 {
		t.Fatalf("after discard: has 0 1 2 %v %v %v, len %d, from %d", s.has(k(0)), s.has(k(1)), s.has(k(2)), s.len(), s.from(0, 9))
	}
	s.add(k(2), 2)
	s.add(k(3), 3)
	if n := s.commit(0); n != 2 || s.has(k(1)) || s.from(0, 9) != 2 {
		t.Fatalf("forgot %d, has 1 %v, from %d; want 2, false, 2", n, s.has(k(1)), s.from(0, 9))
	}
	// The lateness forgets from the oldest on; nothing left, from is next.
	if n := s.commit(10); n != 0 || s.len() != 0 || s.from(10, 9) != 9 || len(s.seen) != 0 {
		t.Fatalf("after the horizon: forgot %d, len %d, from %d, seen %v", n, s.len(), s.from(10, 9), s.seen)
	}
}

// TestBackfillDedupByEventID backfills CSV files of random rows with copies
// of earlier rows (same id and time, near and beyond the cap), ids reused
// with another time, and rows without an event time, into the online store
// and an offline log, stopping the runs part way several times (after some
// chunks were committed; a resume rebuilds what it remembers from the rows
// it skips): every card's count and sum must equal the capped reference
// without a lateness (a backfill has none), as one run.
func TestBackfillDedupByEventID(t *testing.T) {
	const maxIDs = 25
	defs := strings.Replace(dedupDefs, "event_id_field: id\n", fmt.Sprintf("event_id_field: id\ndedup_max_ids: %d\n", maxIDs), 1)
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(defs)})
	if err != nil {
		t.Fatal(err)
	}
	const t0 = int64(1795687200000)
	for seed := range uint64(10) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			var events []dedupEvent
			at := t0
			for i := range 600 {
				at += rng.Int64N(3000)
				var e dedupEvent
				switch c := rng.IntN(20); {
				case c < 4 && len(events) > 0: // a copy, up to 60 rows back
					e = events[len(events)-1-rng.IntN(min(len(events), 60))]
					e.bad = false
				case c == 4 && len(events) > 0: // an id reused with another time
					e = events[rng.IntN(len(events))]
					e.time, e.bad = at, false
				case c == 5:
					e = dedupEvent{card: "c0", id: fmt.Sprint(90000 + i), time: at, amount: 1, bad: true}
				default:
					e = dedupEvent{card: fmt.Sprintf("c%d", rng.IntN(5)), id: fmt.Sprint(i), time: at - rng.Int64N(3_600_000), amount: 1 + rng.IntN(100)}
				}
				events = append(events, e)
			}
			dir := t.TempDir()
			var b strings.Builder
			b.WriteString("card,id,ts,amount\n")
			for _, e := range events {
				ts := fmt.Sprint(e.time)
				if e.bad {
					ts = "" // no event time: rejected, and stops the runs below
				}
				fmt.Fprintf(&b, "%s,%s,%s,%d\n", e.card, e.id, ts, e.amount)
			}
			path := filepath.Join(dir, "history.csv")
			if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			_, store := miniStore(t)
			st, err := offline.NewDir(filepath.Join(dir, "offline"))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			run := func(stopAfter int) (BackfillResult, error) {
				w, err := offline.OpenWriter(ctx, st, "p", offline.Options{FlushRows: 50})
				if err != nil {
					t.Fatal(err)
				}
				runCtx, stop := context.WithCancel(ctx)
				defer stop()
				n := 0
				res, err := Backfill(runCtx, BackfillConfig{Project: "p", Registry: r, Source: r.Source("txns"), Store: store, Offline: w, ChunkRows: 40,
					Now: func() time.Time { return time.UnixMilli(at) },
					DeadLetters: func(BackfillLetter) error {
						if n++; n == stopAfter {
							stop()
						}
						return nil
					}}, []string{path})
				if len(res) == 0 {
					return BackfillResult{}, err
				}
				return res[0], err
			}
			stops := 0
			for _, after := range []int{3 + rng.IntN(5), 6 + rng.IntN(6), 10 + rng.IntN(10)} {
				if _, err := run(after); err != nil {
					if !errors.Is(err, context.Canceled) {
						t.Fatal(err)
					}
					stops++
				}
			}
			last, err := run(0)
			if err != nil {
				t.Fatal(err)
			}
			want, dups := dedupReferenceCapped(events, math.MaxInt64/4, maxIDs)
			checkTotals(t, store, r, at, want)
			if stops == 0 || last.Skipped == 0 || dups == 0 {
				t.Errorf("%d runs stopped, last run %+v, %d duplicates: the test does not cover a resume with copies", stops, last, dups)
			}
			t.Logf("%d rows, %d copies dropped by the reference; last run %+v", len(events), dups, last)
		})
	}
}

// checkTotals compares each card's count and sum in the totals view at at
// with want.
func checkTotals(t *testing.T, store *online.Store, r *registry.Registry, at int64, want map[string][2]int64) {
	t.Helper()
	for c := range 5 {
		card := fmt.Sprintf("c%d", c)
		res := readView(t, store, r, "totals", card, at)
		got := [2]int64{res[0].Value.Int64(), 0}
		if res[1].Status == window.StatusPresent {
			got[1] = int64(res[1].Value.Double())
		}
		if got != want[card] {
			t.Errorf("%s: count, sum %v, want %v", card, got, want[card])
		}
	}
}
