package serving

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/featurestore/featurestore/featurestore/window"
)

// Metrics are the serving metrics. A nil *Metrics records nothing.
type Metrics struct {
	duration *prometheus.HistogramVec
	entities prometheus.Histogram
	redis    *prometheus.HistogramVec
	values   *prometheus.CounterVec
	odErrors *prometheus.CounterVec
}

// NewMetrics registers the serving metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "featurestore_serving_request_duration_seconds",
			Help:    "Duration of online feature requests, by method and gRPC code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method", "code"}),
		entities: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "featurestore_serving_request_entities",
			Help:    "Entities per online feature request.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7),
		}),
	}
	m.redis = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "featurestore_serving_redis_duration_seconds",
		Help:    "Duration of the online store read of a lookup (one round trip), by result: ok or error.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	}, []string{"result"})
	m.values = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "featurestore_serving_values_total",
		Help: "Feature values served, by feature view and status (present, not_found, expired, null): the not-found ratio of a view is its not_found over its total.",
	}, []string{"view", "status"})
	m.odErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "featurestore_serving_on_demand_errors_total",
		Help: "On-demand feature values served null because their expression failed, by view and feature.",
	}, []string{"view", "feature"})
	reg.MustRegister(m.duration, m.entities, m.redis, m.values, m.odErrors)
	return m
}

// onDemandError counts a failed run of an on-demand feature's expression.
func (m *Metrics) onDemandError(view, feature string) {
	if m != nil {
		m.odErrors.WithLabelValues(view, feature).Inc()
	}
}

// readDone records the duration of a lookup's online store read.
func (m *Metrics) readDone(d time.Duration, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.redis.WithLabelValues(result).Observe(d.Seconds())
}

// statusLabels are the status label values of featurestore_serving_values_total,
// by window.Status.
var statusLabels = [...]string{
	window.StatusPresent:  "present",
	window.StatusNotFound: "not_found",
	window.StatusExpired:  "expired",
	window.StatusNull:     "null",
}

// countValues counts the values of a lookup by view and status: vals holds
// the read results of ne entities, sel.width per entity.
func (m *Metrics) countValues(sel *selection, vals [][]window.FeatureValue, ne int) {
	if m == nil {
		return
	}
	counts := make([][len(statusLabels)]int, len(sel.colViews))
	for c, col := range sel.cols {
		n := &counts[sel.colView[c]]
		for i := range ne {
			if st := vals[i*sel.width+col.vidx][col.index].Status; int(st) < len(statusLabels) {
				n[st]++
			}
		}
	}
	for v, n := range counts {
		for st, k := range n {
			if k > 0 {
				m.values.WithLabelValues(sel.colViews[v], statusLabels[st]).Add(float64(k))
			}
		}
	}
}
