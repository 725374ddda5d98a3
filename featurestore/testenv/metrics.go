package testenv

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Series returns the series g gathers, each named name{label=value,...}
// with its labels in name order, and their values: a counter's or gauge's
// value, a histogram's sample count.
func Series(t testing.TB, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			var ls []string
			for _, l := range s.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = s.GetCounter().GetValue() + s.GetGauge().GetValue() + float64(s.GetHistogram().GetSampleCount())
		}
	}
	return out
}

// SeriesAtZero returns the names of the series g gathers (Series), sorted,
// and fails the test for each whose value is not 0.
func SeriesAtZero(t testing.TB, g prometheus.Gatherer) []string {
	t.Helper()
	got := Series(t, g)
	for s, v := range got {
		if v != 0 {
			t.Errorf("%s = %v, want 0", s, v)
		}
	}
	return slices.Sorted(maps.Keys(got))
}
