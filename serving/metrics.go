package serving

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the serving metrics. A nil *Metrics records nothing.
type Metrics struct {
	duration *prometheus.HistogramVec
	entities prometheus.Histogram
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
	reg.MustRegister(m.duration, m.entities)
	return m
}
