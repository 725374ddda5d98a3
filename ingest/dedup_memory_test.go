package ingest

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
)

// What dedup by event id holds per remembered event (dedup.go, "Memory"),
// measured with runtime.MemStats: the live heap after a collection, with
// and without a partition's dedupSet.
//
//	go test -run '^$' -bench DedupMemory -benchtime 1x ./ingest/

// dedupMemoryCases are the two states of a partition's set: filled once
// (after a resume rebuilt it, or before the lateness or the cap forgot
// anything) and sliding (each new event forgets the oldest, by the
// lateness or by the cap: a partition that has ingested for longer than
// its lateness), with the bounds the documentation gives for each, in
// bytes per event, the id's own allocation excluded.
var dedupMemoryCases = []struct {
	name     string
	sliding  bool
	min, max float64
}{
	{"filled", false, 85, 125},
	{"sliding", true, 145, 190},
}

// BenchmarkDedupMemory reports the heap a partition's dedupSet holds per
// remembered event, the id's bytes excluded (B/event), and what an id of
// 36 bytes (a UUID) holds on its own (B/id), for sets of 100,000 to
// 2,000,000 events remembered (the default dedup_max_ids is 1,000,000).
// The figure depends on where the map's and the list's growth stand.
func BenchmarkDedupMemory(b *testing.B) {
	for _, tt := range dedupMemoryCases {
		for _, live := range []int{100_000, 200_000, 300_000, 450_000, 600_000, 800_000, 1_000_000, 1_500_000, 2_000_000} {
			b.Run(fmt.Sprintf("%s/events=%d", tt.name, live), func(b *testing.B) {
				var perEvent, perID float64
				for b.Loop() {
					perEvent, perID = measureDedup(live, 36, tt.sliding)
				}
				b.ReportMetric(perEvent, "B/event")
				b.ReportMetric(perID, "B/id")
			})
		}
	}
}

// TestDedupMemory: the heap a partition's dedupSet holds per remembered
// event is within the figures of dedup.go and docs/operations.md; when it
// is not, measure (BenchmarkDedupMemory) and correct them.
func TestDedupMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("fills sets of 300,000 events")
	}
	for _, tt := range dedupMemoryCases {
		t.Run(tt.name, func(t *testing.T) {
			perEvent, perID := measureDedup(300_000, 36, tt.sliding)
			t.Logf("%.1f bytes per event, plus %.1f per id of 36 bytes", perEvent, perID)
			if perEvent < tt.min || perEvent > tt.max {
				t.Errorf("%.1f bytes per event remembered, the id excluded; the documentation says %.0f to %.0f", perEvent, tt.min, tt.max)
			}
			if perID < 47 || perID > 49 {
				t.Errorf("an id of 36 bytes holds %.1f bytes, want 48 (its size class)", perID)
			}
		})
	}
}

// measureDedup returns the heap bytes per remembered event of a dedupSet
// holding live events, the ids' own allocations excluded, and those of
// an id alone. Events with ids of idLen bytes, 1ms apart, are added in
// batches of 1,000, each committed, to a set capped at live events; with
// sliding, 4*live of them, so that the cap forgot the oldest 3*live (the
// lateness forgets them alike).
func measureDedup(live, idLen int, sliding bool) (perEvent, perID float64) {
	buf := make([]byte, 0, idLen+20)
	base := heapLive()
	ids := make([]string, live)
	for i := range ids {
		ids[i] = dedupID(buf, i, idLen)
	}
	withIDs := heapLive()
	runtime.KeepAlive(ids)
	perID = float64(withIDs-base-uint64(cap(ids))*16) / float64(live)
	ids = nil

	base = heapLive()
	var s dedupSet
	s.reset(live)
	n := live
	if sliding {
		n = 4 * live
	}
	for i := range n {
		s.add(dedupKey{dedupID(buf, i, idLen), int64(i)}, int64(i))
		if (i+1)%1000 == 0 {
			s.commit(0)
		}
	}
	s.commit(0)
	total := heapLive() - base
	if s.len() != live {
		panic(fmt.Sprintf("%d events remembered, want %d", s.len(), live))
	}
	runtime.KeepAlive(&s)
	return float64(total)/float64(live) - perID, perID
}

// heapLive returns the bytes of live heap objects, after a collection.
func heapLive() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// dedupID returns event i's id, idLen bytes long, in an allocation of its
// own, as the decoders make it (a string of the field's bytes).
func dedupID(buf []byte, i, idLen int) string {
	buf = buf[:0]
	for range idLen - len(strconv.Itoa(i)) {
		buf = append(buf, 'e')
	}
	buf = strconv.AppendInt(buf, int64(i), 10)
	return string(buf)
}
