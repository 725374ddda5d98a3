package ingest

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/registry"
)

// offlineFixture is a dedup source with an offline log in a directory of
// the test's own: 200 events of partition 0 (seven cards, one a second),
// and a maker of appliers that share the online store, the positions and
// the directory, each with a writer of its own (a process).
func offlineFixture(t *testing.T) (msgs []kafka.Message, dir *offline.Dir, r *registry.Registry, newApplier func() (*Applier, *offline.Writer)) {
	t.Helper()
	const t0 = int64(1795687200000)
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(dedupDefs)})
	if err != nil {
		t.Fatal(err)
	}
	rc, store := miniStore(t)
	pos := NewPositions(rc, "p")
	if dir, err = offline.NewDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		msgs = append(msgs, kafka.Message{Topic: "txns", Offset: int64(i),
			Value: fmt.Appendf(nil, `{"card":"c%d","id":"e%d","ts":%d,"amount":1}`, i%7, i, t0+int64(i)*1000)})
	}
	return msgs, dir, r, func() (*Applier, *offline.Writer) {
		w, err := offline.OpenWriter(context.Background(), dir, "p", offline.Options{})
		if err != nil {
			t.Fatal(err)
		}
		a, err := NewApplier("p", r, r.Source("txns"), store, pos, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.SetOffline(w, r); err != nil {
			t.Fatal(err)
		}
		return a, w
	}
}

// TestOfflineLogTakenOver: the new owner B of a partition resumes it while
// the old owner A, still running, holds rows of it; A commits them after B
// resumed, so B's log stream is lost. B's next batch then asks for the
// partition to be resumed again (ErrResumePartition) instead of dropping
// rows until B's next rebalance; resumed from the log's new position, B
// logs every event once.
func TestOfflineLogTakenOver(t *testing.T) {
	ctx := context.Background()
	msgs, dir, r, newApplier := offlineFixture(t)
	apply := func(a *Applier, from, to int) error { return a.Apply(ctx, "txns", 0, msgs[from:to]) }

	a, wa := newApplier()
	if _, err := a.Resume(ctx, "txns", 0); err != nil {
		t.Fatal(err)
	}
	if err := apply(a, 0, 100); err != nil { // buffered in A's writer
		t.Fatal(err)
	}
	b, wb := newApplier()
	next, err := b.Resume(ctx, "txns", 0)
	if err != nil || next != kafka.FirstOffset {
		t.Fatalf("B resumes at %d, %v: want the start, where the log starts", next, err)
	}
	if err := apply(b, 0, 150); err != nil {
		t.Fatal(err)
	}
	if err := wa.Flush(ctx); err != nil { // A commits after B resumed
		t.Fatal(err)
	}
	if err := wb.Flush(ctx); err != nil { // B finds its stream lost
		t.Fatal(err)
	}
	err = apply(b, 150, 200)
	if !errors.Is(err, ErrResumePartition) {
		t.Fatalf("B's batch after losing the log: %v, want ErrResumePartition", err)
	}
	// After A's commit, at 99: B reads again from there (from before it,
	// as it rebuilds what it remembers for dedup by event id).
	if next, err = b.Resume(ctx, "txns", 0); err != nil || next > 100 || b.rebuildUntil(0) != 99 && next != 100 {
		t.Fatalf("B resumes again at %d (rebuilding up to %d), %v: want the log's 99 + 1", next, b.rebuildUntil(0), err)
	}
	if err := apply(b, int(next), 200); err != nil {
		t.Fatal(err)
	}
	if err := wb.Close(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[int64]int{}
	for _, row := range readLog(ctx, t, dir, r, "p", "totals") {
		seen[row.offset]++
	}
	for off := range int64(200) {
		if seen[off] != 1 {
			t.Fatalf("offset %d logged %d times", off, seen[off])
		}
	}
}

// TestOfflineCatchUpDoesNotResume: after a crash that lost rows the
// offline log had buffered, a partition resumes from the log's position,
// behind the online one, and reads again up to it. Those batches' saves
// keep the stored, higher, position; the partition must then not take the
// position for one another consumer moved on (a resume per batch).
func TestOfflineCatchUpDoesNotResume(t *testing.T) {
	ctx := context.Background()
	msgs, _, _, newApplier := offlineFixture(t)
	a, _ := newApplier()
	if _, err := a.Resume(ctx, "txns", 0); err != nil {
		t.Fatal(err)
	}
	for from := 0; from < 200; from += 10 {
		if err := a.Apply(ctx, "txns", 0, msgs[from:from+10]); err != nil { // never flushed: lost
			t.Fatal(err)
		}
	}
	b, _ := newApplier()
	next, err := b.Resume(ctx, "txns", 0)
	if err != nil || next != kafka.FirstOffset {
		t.Fatalf("resumes at %d, %v: want the start, where the log starts", next, err)
	}
	for from := 0; from < 200; from += 10 {
		if err := b.Apply(ctx, "txns", 0, msgs[from:from+10]); err != nil {
			t.Fatalf("batch at %d while the log catches up: %v", from, err)
		}
	}
}
