package serving

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestMetricsBeforeFirstLookup: once a registry version is planned
// (Prepare, when it is loaded), the series of its servable views exist at
// 0, and those of the lookups' codes and read results from the start, so
// that an alert on the rate of corrupt reads or failed on-demand
// expressions sees 0 rather than no data, and rate() sees the first one. A
// version that drops a view or an on-demand feature deletes its series.
func TestMetricsBeforeFirstLookup(t *testing.T) {
	reg := prometheus.NewRegistry()
	snaps := &staticSnapshots{}
	snaps.p.Store(loadSnapshot(t, 1, testDefs))
	svc := NewOnlineService(snaps, nil, OnlineOptions{Project: "p", Metrics: NewMetrics(reg)})
	svc.Prepare()

	var fixed []string
	for _, method := range []string{"GetOnlineFeatures", "POST /v1/features:get"} {
		for _, code := range []string{"OK", "Canceled", "InvalidArgument", "DeadlineExceeded", "PermissionDenied", "ResourceExhausted", "Unavailable", "Internal"} {
			fixed = append(fixed, "featurestore_serving_request_duration_seconds{code="+code+",method="+method+"}")
		}
	}
	for _, r := range []string{"ok", "error", "canceled"} {
		fixed = append(fixed, "featurestore_serving_redis_duration_seconds{result="+r+"}")
	}
	fixed = append(fixed, "featurestore_serving_panics_total{}", "featurestore_serving_redis_reads_again_total{}", "featurestore_serving_request_entities{}", "featurestore_serving_tiles_merged{}")
	views := func(stored []string, onDemand map[string][]string) []string {
		var out []string
		for _, v := range slices.Concat(stored, slices.Sorted(func(yield func(string) bool) {
			for v := range onDemand {
				if !yield(v) {
					return
				}
			}
		})) {
			for _, st := range []string{"present", "not_found", "expired", "null", "error"} {
				out = append(out, "featurestore_serving_values_total{status="+st+",view="+v+"}")
			}
		}
		for _, v := range stored {
			out = append(out, "featurestore_serving_corrupt_state_total{view="+v+"}")
		}
		for v, fs := range onDemand {
			for _, f := range fs {
				out = append(out, "featurestore_serving_on_demand_errors_total{feature="+f+",view="+v+"}")
			}
		}
		return out
	}
	check := func(when string, want []string) {
		t.Helper()
		got := testenv.SeriesAtZero(t, reg)
		want = slices.Concat(fixed, want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("series %s:\n%q\nwant\n%q", when, got, want)
		}
	}
	check("before the first lookup", views([]string{"card_txn", "card_more", "pair_txn"},
		map[string][]string{"txn_risk": {"share_10m", "over_mean", "same_merchant", "jump", "mod"}}))

	// The next version keeps the card's entity, source and card_txn, adds
	// a view that is offline only, and keeps one on-demand feature.
	var v2 []string
	for doc := range strings.SplitSeq(testDefs, "\n---\n") {
		if strings.Contains(doc, "name: card\n") || strings.Contains(doc, "name: txns\n") || strings.Contains(doc, "name: card_txn\n") {
			v2 = append(v2, doc)
		}
	}
	v2 = append(v2, `
kind: FeatureView
name: card_log
entity: card
source: txns
online: false
offline: true
tile: 1m
features: [{name: n_1h, aggregation: count, window: 1h}]`, `
kind: OnDemandFeatureView
name: txn_risk
inputs: {sum_10m: card_txn:sum_10m}
request_fields: {amount: double}
features: [{name: share_10m, type: double, expression: "amount / (sum_10m + amount)"}]`)
	snaps.p.Store(loadSnapshot(t, 2, strings.Join(v2, "\n---\n")))
	svc.Prepare()
	check("after a version without card_more, pair_txn and four on-demand features", views([]string{"card_txn"},
		map[string][]string{"txn_risk": {"share_10m"}}))
}
