package offline

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the offline log's Prometheus metrics. Labels are bounded:
// feature views, flush reasons and drop reasons, never entity keys.
type Metrics struct {
	files     *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	rows      *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	flush     *prometheus.HistogramVec
	errors    prometheus.Counter
	conflicts prometheus.Counter
	pending   prometheus.Gauge
	pendingB  prometheus.Gauge

	mu    sync.Mutex // guards views
	views []string   // those of the last setViews
}

// Flush reasons, the values of the reason label.
const (
	FlushSize     = "size"     // the stream reached FlushRows or FlushBytes
	FlushAge      = "age"      // its oldest row reached FlushAge
	FlushPressure = "pressure" // all streams together reached MaxPendingBytes
	FlushExplicit = "explicit" // Flush, Close or a partition's Resume
)

// Drop reasons, the values of the reason label of dropped rows.
const (
	DropReplay = "replay" // at or below the committed or buffered offset: already logged
	DropLost   = "lost"   // another writer committed the partition first
)

// NewMetrics registers the offline log's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		files: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_offline_files_written_total",
			Help: "Log files committed, by feature view.",
		}, []string{"view"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_offline_written_bytes_total",
			Help: "Bytes of log files committed, by feature view.",
		}, []string{"view"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_offline_rows_written_total",
			Help: "Events committed to the log, by feature view.",
		}, []string{"view"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_offline_rows_dropped_total",
			Help: "Events not logged, by feature view and reason: replay (already logged) or lost (another writer took the partition).",
		}, []string{"view", "reason"}),
		flush: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "featurestore_offline_flush_duration_seconds",
			Help:    "Time to write and commit the files of one flush, by reason: size, age, pressure or explicit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"reason"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestore_offline_flush_errors_total",
			Help: "Flushes that failed; their rows stay buffered and are retried.",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestore_offline_manifest_conflicts_total",
			Help: "Manifest commits that lost the race for an entry number to another writer and were retried.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "featurestore_offline_pending_rows",
			Help: "Events appended and not yet committed.",
		}),
		pendingB: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "featurestore_offline_pending_bytes",
			Help: "Estimated memory of the events appended and not yet committed.",
		}),
	}
	// The reasons are known now: their series start at 0, and the views'
	// when ingest names them (setViews).
	for _, r := range []string{FlushSize, FlushAge, FlushPressure, FlushExplicit} {
		m.flush.WithLabelValues(r)
	}
	reg.MustRegister(m.files, m.bytes, m.rows, m.dropped, m.flush, m.errors, m.conflicts, m.pending, m.pendingB)
	return m
}

// setViews makes the series of views at 0, so that an alert on the rate of
// dropped rows sees a series before the first drop, and deletes those of
// the views of the last call that views lacks (a feature view removed from
// the registry, or no longer offline).
func (m *Metrics) setViews(views []string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range m.views {
		if !slices.Contains(views, v) {
			l := prometheus.Labels{"view": v}
			m.files.DeletePartialMatch(l)
			m.bytes.DeletePartialMatch(l)
			m.rows.DeletePartialMatch(l)
			m.dropped.DeletePartialMatch(l)
		}
	}
	for _, v := range views {
		m.files.WithLabelValues(v)
		m.bytes.WithLabelValues(v)
		m.rows.WithLabelValues(v)
		for _, r := range []string{DropReplay, DropLost} {
			m.dropped.WithLabelValues(v, r)
		}
	}
	m.views = slices.Clone(views)
}

func (m *Metrics) written(view string, files int, bytes, rows int64) {
	if m != nil && files > 0 {
		m.files.WithLabelValues(view).Add(float64(files))
		m.bytes.WithLabelValues(view).Add(float64(bytes))
		m.rows.WithLabelValues(view).Add(float64(rows))
	}
}

func (m *Metrics) drop(view, reason string, n int64) {
	if m != nil && n > 0 {
		m.dropped.WithLabelValues(view, reason).Add(float64(n))
	}
}

func (m *Metrics) flushed(reason string, seconds float64, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.errors.Inc()
		return
	}
	m.flush.WithLabelValues(reason).Observe(seconds)
}

func (m *Metrics) conflict(n int) {
	if m != nil && n > 0 {
		m.conflicts.Add(float64(n))
	}
}

func (m *Metrics) setPending(rows, bytes int64) {
	if m != nil {
		m.pending.Set(float64(rows))
		m.pendingB.Set(float64(bytes))
	}
}
