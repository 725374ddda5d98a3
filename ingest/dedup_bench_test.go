package ingest

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/registry"
)

// BenchmarkDedup measures what dedup by event id costs ingest: the events
// of the throughput benchmark's view (6 aggregations over 3 windows), each
// with an id, decoded, checked, routed, merged into tile states and encoded
// without Redis (aggregateBatch, the no-Redis baseline of
// BenchmarkIngestThroughput), by an applier of the source with and without
// event_id_field, in batches of 1,000. The events come 500 a second, in
// order, for 20 minutes: with the 10-minute lateness the set holds about
// 300,000 ids once full.
//
//	go test -run '^$' -bench Dedup -count 5 ./ingest/
func BenchmarkDedup(b *testing.B) {
	const n, perSecond = 600_000, 500
	g := newBenchGen(1)
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	msgs := make([]kafka.Message, n)
	var buf []byte
	for i := range msgs {
		var m kafka.Message
		m, buf = g.message(buf, t0+int64(i)*1000/perSecond)
		m.Value = fmt.Appendf(nil, `%s,"id":"t%d-%d"}`, bytes.TrimSuffix(m.Value, []byte("}")), i, t0)
		m.Offset = int64(i)
		msgs[i] = m
	}
	for _, dedup := range []bool{false, true} {
		b.Run(fmt.Sprintf("dedup=%t", dedup), func(b *testing.B) {
			defs := string(benchDefs("txns"))
			if dedup {
				defs = strings.Replace(defs, "allowed_lateness: 10m", "allowed_lateness: 10m\nevent_id_field: id", 1)
			}
			r, err := registry.LoadFiles(map[string][]byte{"bench.yaml": []byte(defs)})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				a, err := NewApplier("p", r, r.Source(benchSource), nil, nil, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				ps := a.partition(0)
				for i := 0; i < n; i += 1000 {
					if err := aggregateBatch(a, ps, "txns", 0, msgs[i:i+1000]); err != nil {
						b.Fatal(err)
					}
				}
				if dedup && ps.ids.len() < 250_000 {
					b.Fatalf("%d ids remembered, want about 300,000", len(ps.ids.seen))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
	}
}
