package ingest

import (
	"context"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/registry"
)

// TestReleaseFreesPartitionState: releasing a partition (a rebalance took
// it) drops what the applier kept of it (the events remembered for dedup,
// the grown batch buffers, the last batch's dead letters with their
// messages' bytes), so that memory follows the partitions a process owns,
// not every partition it ever owned. Taking the partition again resumes it
// from Redis as a new owner would: the dedup decisions after it are those
// of the reference.
func TestReleaseFreesPartitionState(t *testing.T) {
	const t0 = int64(1795687200000)
	sink := &flakySink{}
	a, r, store := dedupApplier(t, sink)
	ctx := context.Background()
	// 3,000 events 10ms apart (all within the 1m lateness, so all
	// remembered), every 100th one a payload that does not decode; then,
	// after the release, copies of 50 of the remembered events and 50 new
	// ones.
	var events []dedupEvent
	for i := range 3000 {
		e := dedupEvent{card: fmt.Sprintf("c%d", i%5), id: fmt.Sprintf("e%d", i), time: t0 + int64(i)*10, amount: 1 + i%7}
		e.bad = i%100 == 99
		events = append(events, e)
	}
	before := len(events)
	for i := range 50 {
		events = append(events, events[before-2-2*i]) // 2998, 2996, ..., 2900: none bad
		events = append(events, dedupEvent{card: "c1", id: fmt.Sprintf("n%d", i), time: t0 + 30_000 + int64(i), amount: 3})
	}
	msgs := dedupMessages(events)

	apply := func(from, to int) {
		t.Helper()
		for i := from; i < to; i += 1000 {
			if err := a.Apply(ctx, "txns", 0, msgs[i:min(i+1000, to)]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if next, err := a.Resume(ctx, "txns", 0); err != nil || next != kafka.FirstOffset {
		t.Fatalf("first resume at %d, %v; want the first offset", next, err)
	}
	apply(0, before)
	if n := a.partition(0).ids.len(); n != before-before/100 {
		t.Fatalf("%d events remembered before the release, want %d", n, before-before/100)
	}
	if err := a.Release(ctx, "txns", 0); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	_, kept := a.parts[0]
	a.mu.Unlock()
	if kept {
		ps := a.partition(0)
		t.Fatalf("the released partition's state is kept: %d events remembered, %d dead letters, batch of %d events",
			ps.ids.len(), len(ps.b.letters), cap(ps.b.events))
	}

	// Taken again: resumed from the saved position, rebuilding the events
	// remembered from the oldest one within the lateness.
	next, err := a.Resume(ctx, "txns", 0)
	if err != nil {
		t.Fatal(err)
	}
	if next != 0 {
		t.Fatalf("resumed at %d, want 0 (the oldest event remembered)", next)
	}
	sink.letters = nil
	apply(int(next), len(msgs))
	want, dups := dedupReference(events, 60_000)
	if dups != 50 {
		t.Fatalf("the reference finds %d duplicates, want 50", dups)
	}
	checkTotals(t, store, r, t0+60_000, want)
	// The copies are remembered too (dedup.go).
	if ps := a.partition(0); ps.ids.len() != before-before/100+100 {
		t.Errorf("%d events remembered after the copies, want %d", ps.ids.len(), before-before/100+100)
	}
	if len(sink.letters) != 0 {
		t.Errorf("%d dead letters sent again after the release, want none (the rebuild only rebuilds)", len(sink.letters))
	}
}

// dedupApplier returns an applier of source txns of dedupDefs, on a
// miniredis of the test's own, with the dead-letter sink given.
func dedupApplier(t *testing.T, sink DeadLetterSink) (*Applier, *registry.Registry, *online.Store) {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(dedupDefs)})
	if err != nil {
		t.Fatal(err)
	}
	rc, store := miniStore(t)
	a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a, r, store
}
