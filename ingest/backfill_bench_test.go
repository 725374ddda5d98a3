package ingest

import (
	"context"
	"testing"

	"github.com/featurestore/featurestore/featurestore/export"
)

// BenchmarkBackfill loads a file of 100,000 rows (15 cards, two online
// views, both logged offline) into real Redis and an offline directory;
// each iteration into a new project, so that every row is written. Reports
// rows/s.
func BenchmarkBackfill(b *testing.B) {
	for _, format := range []export.Format{export.FormatCSV, export.FormatParquet} {
		b.Run(string(format), func(b *testing.B) {
			const n = 100_000
			rows, _, maxT := backfillRows(1, n, false)
			path := writeBackfillFile(b, b.TempDir(), format, rows)
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				e := newBackfillEnv(b, maxT+5*60*1000)
				b.StartTimer()
				res, _, err := e.run(ctx, b, []string{path}, BackfillConfig{})
				if err != nil {
					b.Fatal(err)
				}
				if res[0].Rows != n {
					b.Fatalf("%+v", res[0])
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
