package ingest

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
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
	want := []string{"txns//bad_time", "txns//duplicate_id", "txns//future", "txns//invalid_payload", "txns//key_too_long",
		"txns//late", "txns//missing_time", "txns//wrong_type", "txns/totals/applied", "txns/totals/duplicate", "txns/totals/missing_key"}
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
