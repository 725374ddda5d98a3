package ingest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/registry"
)

// TestEventCountsStartAtZero: the event counts of a source's views and of
// the rejection reasons exist at 0 from the start, so that an alert on the
// rate of late or invalid events sees a series before the first one; the
// first events then add to them.
func TestEventCountsStartAtZero(t *testing.T) {
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(dedupDefs)})
	if err != nil {
		t.Fatal(err)
	}
	rc, store := miniStore(t)
	a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &flakySink{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a.SetMetrics(NewMetrics(reg))
	counts := func() map[string]float64 {
		out := map[string]float64{}
		for _, mf := range gatherOrFail(t, reg) {
			if mf.GetName() != "featurestore_ingest_events_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				out[l["source"]+"/"+l["view"]+"/"+l["result"]] = m.GetCounter().GetValue()
			}
		}
		return out
	}
	got := counts()
	var names []string
	for k, v := range got {
		names = append(names, k)
		if v != 0 {
			t.Errorf("%s = %v before any event, want 0", k, v)
		}
	}
	slices.Sort(names)
	want := []string{"txns//aborted_transaction", "txns//bad_time", "txns//duplicate_id", "txns//future", "txns//invalid_payload", "txns//key_too_long",
		"txns//late", "txns//missing_time", "txns//transaction_marker", "txns//wrong_type", "txns/totals/applied", "txns/totals/duplicate", "txns/totals/missing_key"}
	if !slices.Equal(names, want) {
		t.Errorf("series before any event:\n%q\nwant\n%q", names, want)
	}

	const t0 = int64(1795687200000)
	msgs := []kafka.Message{
		{Offset: 0, Value: fmt.Appendf(nil, `{"card":"c","id":"e0","ts":%d,"amount":1}`, t0)},
		{Offset: 1, Value: []byte(`{not json`)},
	}
	if err := a.Apply(context.Background(), "txns", 0, msgs); err != nil {
		t.Fatal(err)
	}
	got = counts()
	if got["txns/totals/applied"] != 1 || got["txns//invalid_payload"] != 1 || got["txns//late"] != 0 {
		t.Errorf("after one good and one invalid event: %v", got)
	}
}

// TestSeriesOfRemovedSourcesAndViews: a registry version that removes a
// view, or a source, deletes their series, which would otherwise linger at
// their last value; those of what stays keep counting.
func TestSeriesOfRemovedSourcesAndViews(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.startSource("s1", []string{"a", "b"}, []string{"c"}, false)
	m.startSource("s2", []string{"d"}, nil, true)
	m.retain(map[string][]string{"s1": {"a", "b", "c"}, "s2": {"d"}})
	m.countEvents("s1", "a", ResultApplied, 2)
	m.countEvents("s1", "b", ResultApplied, 1)

	m.startSource("s1", []string{"a"}, nil, false)
	m.retain(map[string][]string{"s1": {"a"}})
	got := map[string]bool{}
	for _, mf := range gatherOrFail(t, reg) {
		for _, s := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range s.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["source"] != "s1" || l["view"] == "b" || l["view"] == "c" {
				t.Errorf("%s%v after its source or view was removed", mf.GetName(), l)
			}
			if mf.GetName() == "featurestore_ingest_events_total" {
				got[l["view"]+"/"+l["result"]] = true
				if l["view"] == "a" && l["result"] == ResultApplied && s.GetCounter().GetValue() != 2 {
					t.Errorf("a/applied = %v, want 2 kept", s.GetCounter().GetValue())
				}
			}
		}
	}
	for _, want := range []string{"a/applied", "a/duplicate", "a/missing_key", "/late", "/invalid_payload"} {
		if !got[want] {
			t.Errorf("no series s1/%s", want)
		}
	}
}

func gatherOrFail(t *testing.T, g prometheus.Gatherer) []*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// TestFreshnessNotNegative: an event a little ahead of the ingest host's
// clock (a producer clock ahead, within max_future_skew) is observed as
// fresh, 0 s: a negative observation made the histogram's _sum go down,
// which rate() takes for a counter reset.
func TestFreshnessNotNegative(t *testing.T) {
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(dedupDefs)})
	if err != nil {
		t.Fatal(err)
	}
	rc, store := miniStore(t)
	a, err := NewApplier("p", r, r.Source("txns"), store, NewPositions(rc, "p"), &flakySink{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a.SetMetrics(NewMetrics(reg))
	now := time.Now()
	ahead := now.Add(2 * time.Minute).UnixMilli() // a producer clock 2 minutes ahead
	msgs := []kafka.Message{{Offset: 0, Time: now.Add(2 * time.Minute),
		Value: fmt.Appendf(nil, `{"card":"c","id":"e0","ts":%d,"amount":1}`, ahead)}}
	if err := a.Apply(context.Background(), "txns", 0, msgs); err != nil {
		t.Fatal(err)
	}
	for _, mf := range gatherOrFail(t, reg) {
		if mf.GetName() != "featurestore_ingest_freshness_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h.GetSampleCount() != 1 {
				t.Fatalf("%d observations, want 1", h.GetSampleCount())
			}
			if h.GetSampleSum() < 0 {
				t.Errorf("freshness sum %v s after one event applied: a negative observation", h.GetSampleSum())
			}
			return
		}
	}
	t.Fatal("no freshness series")
}
