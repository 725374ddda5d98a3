package offline

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestMetricsStartAtZero: the flush reasons' series exist from the start,
// the views' once ingest names them, all at 0, so that an alert on their
// rate sees a series before the first flush or drop; a view no longer named
// loses its series.
func TestMetricsStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	series := func() []string { return testenv.SeriesAtZero(t, reg) }
	unlabelled := []string{
		"featurestore_offline_flush_errors_total{}",
		"featurestore_offline_manifest_conflicts_total{}",
		"featurestore_offline_pending_bytes{}",
		"featurestore_offline_pending_rows{}",
	}
	flush := []string{
		"featurestore_offline_flush_duration_seconds{reason=age}",
		"featurestore_offline_flush_duration_seconds{reason=explicit}",
		"featurestore_offline_flush_duration_seconds{reason=pressure}",
		"featurestore_offline_flush_duration_seconds{reason=size}",
	}
	view := func(v string) []string {
		return []string{
			"featurestore_offline_files_written_total{view=" + v + "}",
			"featurestore_offline_rows_dropped_total{reason=lost,view=" + v + "}",
			"featurestore_offline_rows_dropped_total{reason=replay,view=" + v + "}",
			"featurestore_offline_rows_written_total{view=" + v + "}",
			"featurestore_offline_written_bytes_total{view=" + v + "}",
		}
	}
	sorted := func(parts ...[]string) []string {
		all := slices.Concat(parts...)
		slices.Sort(all)
		return all
	}
	if got, want := series(), sorted(unlabelled, flush); !slices.Equal(got, want) {
		t.Errorf("series at the start:\n%q\nwant\n%q", got, want)
	}
	m.setViews([]string{"a", "b"})
	if got, want := series(), sorted(unlabelled, flush, view("a"), view("b")); !slices.Equal(got, want) {
		t.Errorf("series with views a and b:\n%q\nwant\n%q", got, want)
	}
	m.setViews([]string{"a"})
	if got, want := series(), sorted(unlabelled, flush, view("a")); !slices.Equal(got, want) {
		t.Errorf("series once b is gone:\n%q\nwant\n%q", got, want)
	}
}
