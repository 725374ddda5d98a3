package serving

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the serving metrics. A nil *Metrics records nothing.
type Metrics struct {
	duration *prometheus.HistogramVec
	entities prometheus.Histogram
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
	m.odErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "featurestore_on_demand_errors_total",
		Help: "On-demand feature values served null because their expression failed, by view and feature.",
	}, []string{"view", "feature"})
	reg.MustRegister(m.duration, m.entities, m.odErrors)
	return m
}

// onDemandError counts a failed run of an on-demand feature's expression.
func (m *Metrics) onDemandError(view, feature string) {
	if m != nil {
		m.odErrors.WithLabelValues(view, feature).Inc()
	}
}
