package offline

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkAppend measures the offline write cost inside ingest: Append of
// batches of 500 events (about 100 entities) of one partition, with the
// flushes to a local directory they trigger (1M rows or 128 MiB per file).
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	st, err := NewDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	s := testSchema(b, "account_stats")
	w, err := OpenWriter(ctx, st, testProject, Options{})
	if err != nil {
		b.Fatal(err)
	}
	const per = 500
	evs := genEvents(rand.New(rand.NewPCG(41, 42)), per, 0, 0, t0)
	for i := range evs {
		evs[i].region = regions[0]
		evs[i].account = int64(i % 100)
		evs[i].ev.Time = t0 + int64(i) // one date
	}
	batch := batchOf(evs, testTopic, 0, per-1, t0+per)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var off int64
	for range b.N {
		// Shift the batch to the next offsets, as the next messages.
		for g := range batch.Entities {
			for j := range batch.Entities[g].Events {
				batch.Entities[g].Events[j].Offset += per
			}
		}
		off += per
		batch.End.Offset = off + per - 1
		if err := w.Append(ctx, s, batch); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*per)/time.Since(start).Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per), "ns/event")
}
