package export

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/registry"
)

const benchDefs = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card_id: card_id}
fields: {amount: double, merchant: string, country: string}
allowed_lateness: 0s
---
kind: FeatureView
name: card_txn
entity: card
source: txns
tile: 1m
ttl: 7d
features:
  - {name: n_10m, aggregation: count, window: 10m}
  - {name: n_1h, aggregation: count, window: 1h}
  - {name: amount_sum_1h, aggregation: sum, field: amount, window: 1h}
  - {name: amount_mean_1d, aggregation: mean, field: amount, window: 1d}
  - {name: amount_max_1d, aggregation: max, field: amount, window: 1d}
  - {name: merchants_1h, aggregation: count_distinct, field: merchant, window: 1h}
  - {name: amount, field: amount, type: double}
  - {name: country, field: country, type: string}
`

// benchLog builds events over cards and two days, in log batches of 64k
// rows, without the rawEvent detour.
func benchLog(b *testing.B, r *registry.Registry, events, cards int, rng *rand.Rand) *memLog {
	ts := &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	md := arrow.NewMetadata([]string{MetaProject, MetaView, MetaSource, MetaLogVersion}, []string{"p", "card_txn", "txns", LogVersion})
	schema := arrow.NewSchema([]arrow.Field{
		{Name: ColEventTime, Type: ts}, {Name: ColIngestTime, Type: ts},
		{Name: ColTopic, Type: arrow.BinaryTypes.String}, {Name: ColPartition, Type: arrow.PrimitiveTypes.Int32}, {Name: ColOffset, Type: arrow.PrimitiveTypes.Int64},
		{Name: "card_id", Type: arrow.BinaryTypes.String},
		{Name: "amount", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "country", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "merchant", Type: arrow.BinaryTypes.String, Nullable: true},
	}, &md)
	l := &memLog{batches: map[string][]arrow.RecordBatch{}}
	bld := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer bld.Release()
	countries := []string{"FR", "DE", "IT", "ES", "NL", "BE"}
	for i := range events {
		t := t0 + rng.Int64N(2*86_400_000)
		bld.Field(0).(*array.TimestampBuilder).Append(arrow.Timestamp(t))
		bld.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(t))
		bld.Field(2).(*array.StringBuilder).Append("txns")
		bld.Field(3).(*array.Int32Builder).Append(int32(i % 8))
		bld.Field(4).(*array.Int64Builder).Append(int64(i))
		bld.Field(5).(*array.StringBuilder).Append(fmt.Sprintf("card-%06d", rng.IntN(cards)))
		bld.Field(6).(*array.Float64Builder).Append(float64(rng.IntN(100_000)) / 100)
		bld.Field(7).(*array.StringBuilder).Append(countries[rng.IntN(len(countries))])
		bld.Field(8).(*array.StringBuilder).Append(fmt.Sprintf("m-%d", rng.IntN(500)))
		if bld.Field(0).Len() == 64<<10 || i == events-1 {
			l.batches["card_txn"] = append(l.batches["card_txn"], bld.NewRecordBatch())
		}
	}
	return l
}

// BenchmarkExport exports 6 windowed features and 2 last values for rows
// at random times and cards, and reports rows per second.
func BenchmarkExport(b *testing.B) {
	for _, size := range []struct {
		events, cards, rows int
		memory              int64
	}{
		{100_000, 1_000, 10_000, 0},
		{1_000_000, 10_000, 100_000, 0},
		{1_000_000, 10_000, 100_000, 32 << 20}, // buckets split to fit
	} {
		name := fmt.Sprintf("events=%d/rows=%d", size.events, size.rows)
		if size.memory > 0 {
			name += fmt.Sprintf("/memory=%dMiB", size.memory>>20)
		}
		b.Run(name, func(b *testing.B) {
			r, err := registry.LoadFiles(map[string][]byte{"bench.yaml": []byte(benchDefs)})
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			l := sizedLog{benchLog(b, r, size.events, size.cards, rng)} // sized, as the offline log is
			dir := b.TempDir()
			in := filepath.Join(dir, "rows.arrow")
			tt := &testTable{fields: []arrow.Field{
				{Name: "card_id", Type: arrow.BinaryTypes.String},
				{Name: "event_timestamp", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
				{Name: "label", Type: arrow.PrimitiveTypes.Int64},
			}}
			for i := range size.rows {
				tt.rows = append(tt.rows, []any{fmt.Sprintf("card-%06d", rng.IntN(size.cards)), t0 + rng.Int64N(2*86_400_000), int64(i % 2)})
			}
			tt.writeArrow(b, in, 64<<10)
			out := filepath.Join(dir, "out.arrow")
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := Run(context.Background(), Options{Registry: r, Log: l, Features: []string{"card_txn:*"}, Entities: in, Out: out, TempDir: dir, Memory: size.memory}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size.rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(size.events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
			os.Remove(out)
		})
	}
}
