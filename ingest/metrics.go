package ingest

import (
	"slices"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are ingest's Prometheus metrics. Labels are bounded: sources,
// views, results and partitions, never entity keys.
type Metrics struct {
	events    *prometheus.CounterVec
	lag       *prometheus.GaugeVec
	dedupIDs  *prometheus.GaugeVec
	dedupCap  *prometheus.CounterVec
	batch     *prometheus.HistogramVec
	freshness *prometheus.HistogramVec
	stalled   *prometheus.GaugeVec
	lost      *prometheus.CounterVec
	failures  *prometheus.CounterVec
	resets    *prometheus.CounterVec

	mu sync.Mutex // guards kept
	// kept are the sources, and their views, of the registry version
	// running (retain).
	kept map[string][]string
}

// Event results, the values of the result label.
const (
	ResultApplied   = "applied"
	ResultDuplicate = "duplicate" // already applied: a replay skipped by the fences
	// ResultTransactionMarker counts the commit and abort markers of
	// transactional producers, which take an offset of the partition but
	// hold no event (isTransactionMarker).
	ResultTransactionMarker = "transaction_marker"
	// ResultAbortedTransaction counts the records of aborted transactions,
	// which the partition reader drops (partitionReader).
	ResultAbortedTransaction = "aborted_transaction"
)

// NewMetrics registers ingest's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_ingest_events_total",
			Help: "Events by source, feature view and result: applied, duplicate (a replay), duplicate_id (dropped by event id), transaction_marker (a transactional producer's commit or abort marker, no event), aborted_transaction (a record of an aborted transaction, dropped), or the rejection reason (invalid_payload, missing_time, bad_time, wrong_type, missing_key, key_too_long, late, future). Whole events have view=\"\".",
		}, []string{"source", "view", "result"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "featurestore_ingest_consumer_lag_messages",
			Help: "Messages in the partition from the next one to apply to its end; kept up to date while batches fail or the partition is stalled, and deleted when the partition is released.",
		}, []string{"source", "partition"}),
		dedupIDs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "featurestore_ingest_dedup_ids",
			Help: "Events remembered for dedup by event id (sources with event_id_field): those within the allowed lateness, at most the source's dedup_max_ids, 150 to 185 bytes of live heap plus the id each.",
		}, []string{"source", "partition"}),
		dedupCap: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_ingest_dedup_forgotten_total",
			Help: "Events dedup by event id forgot because their partition held the source's dedup_max_ids, not because the allowed lateness passed them: a copy of one still within the lateness counts again.",
		}, []string{"source"}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "featurestore_ingest_batch_apply_duration_seconds",
			Help:    "Time to apply one batch of a partition to the online store.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"source"}),
		freshness: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "featurestore_ingest_freshness_seconds",
			Help:    "Time from an event's event time to its being applied and readable.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 20),
		}, []string{"source"}),
		stalled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "featurestore_ingest_partition_stalled",
			Help: "1 while the partition is stalled until an operator acts: its position is past the partition's end, or the partition holds another record where ingest read one (the topic was deleted and created again); else 0. Deleted when the partition is released.",
		}, []string{"source", "partition"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_ingest_retention_lost_total",
			Help: "Events the topic's retention deleted before ingest read them: reading went on from the first offset kept.",
		}, []string{"source", "partition"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_ingest_apply_failures_total",
			Help: "Failed attempts to apply a batch (Redis down or full, the dead-letter topic refusing letters, a hash that does not decode): the batch is retried with backoff, and its partition waits meanwhile.",
		}, []string{"source"}),
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_ingest_position_resets_total",
			Help: "Partitions resumed because their saved position in Redis was not the one ingest saved last, by reason: went_back (Redis lost state: a restart without persistence, a failover to a replica that lagged; the events since are applied again) or moved_on (another consumer applied the partition meanwhile).",
		}, []string{"source", "reason"}),
	}
	reg.MustRegister(m.events, m.lag, m.dedupIDs, m.dedupCap, m.batch, m.freshness, m.stalled, m.lost, m.failures, m.resets)
	return m
}

// startSource makes the series of a source at 0: an alert on the rate of
// late or invalid events, or of failed batches, sees a series before the
// first one, and rate() sees the first one. views are the source's online
// views, which count applied, duplicate and missing_key events, and
// offline are its views logged offline only, which count missing_key.
func (m *Metrics) startSource(source string, views, offline []string, dedup bool) {
	for _, v := range views {
		for _, r := range []string{ResultApplied, ResultDuplicate, string(ReasonMissingKey)} {
			m.events.WithLabelValues(source, v, r)
		}
	}
	for _, v := range offline {
		m.events.WithLabelValues(source, v, string(ReasonMissingKey))
	}
	for _, r := range []Reason{ReasonInvalidPayload, ReasonMissingTime, ReasonBadTime, ReasonWrongType, ReasonKeyTooLong, ReasonLate, ReasonFuture} {
		m.events.WithLabelValues(source, "", string(r))
	}
	for _, r := range []string{ResultTransactionMarker, ResultAbortedTransaction} {
		m.events.WithLabelValues(source, "", r)
	}
	if dedup {
		m.events.WithLabelValues(source, "", resultDuplicateID)
		m.dedupCap.WithLabelValues(source)
	}
	m.failures.WithLabelValues(source)
	m.resets.WithLabelValues(source, resetWentBack)
	m.resets.WithLabelValues(source, resetMovedOn)
	m.batch.WithLabelValues(source)
	m.freshness.WithLabelValues(source)
}

// retain deletes the series of the sources, and of their views, that the
// last call kept and keep, source by source, lacks: those a new registry
// version removed or no longer ingests, so that they do not linger at
// their last value. Their groups have stopped.
func (m *Metrics) retain(keep map[string][]string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for src, views := range m.kept {
		now, ok := keep[src]
		if !ok {
			l := prometheus.Labels{"source": src}
			for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
				m.events, m.lag, m.dedupIDs, m.dedupCap, m.batch, m.freshness, m.stalled, m.lost, m.failures, m.resets} {
				v.DeletePartialMatch(l)
			}
			continue
		}
		for _, v := range views {
			if !slices.Contains(now, v) {
				m.events.DeletePartialMatch(prometheus.Labels{"source": src, "view": v})
			}
		}
	}
	m.kept = keep
}

func (m *Metrics) countEvents(source, view, result string, n int) {
	if m != nil && n > 0 {
		m.events.WithLabelValues(source, view, result).Add(float64(n))
	}
}

// setDedupIDs records a partition's remembered events after a batch, and
// those the batch forgot for the cap.
func (m *Metrics) setDedupIDs(source string, partition int, n, forgot int) {
	if m != nil {
		m.dedupIDs.WithLabelValues(source, strconv.Itoa(partition)).Set(float64(n))
		if forgot > 0 {
			m.dedupCap.WithLabelValues(source).Add(float64(forgot))
		}
	}
}

// assignPartition makes the series of a partition the process was
// assigned at 0 (its lag waits for the partition's end to be known).
func (m *Metrics) assignPartition(source string, partition int) {
	if m != nil {
		p := strconv.Itoa(partition)
		m.stalled.WithLabelValues(source, p)
		m.lost.WithLabelValues(source, p)
	}
}

// forgetPartition deletes the series of a partition that the process
// released.
func (m *Metrics) forgetPartition(source string, partition int) {
	if m != nil {
		p := strconv.Itoa(partition)
		m.lag.DeleteLabelValues(source, p)
		m.dedupIDs.DeleteLabelValues(source, p)
		m.stalled.DeleteLabelValues(source, p)
		m.lost.DeleteLabelValues(source, p)
	}
}

// setStalled records whether a partition is stalled.
func (m *Metrics) setStalled(source string, partition int, stalled bool) {
	if m != nil {
		v := 0.0
		if stalled {
			v = 1
		}
		m.stalled.WithLabelValues(source, strconv.Itoa(partition)).Set(v)
	}
}

// countApplyFailure counts a failed attempt to apply a batch.
func (m *Metrics) countApplyFailure(source string) {
	if m != nil {
		m.failures.WithLabelValues(source).Inc()
	}
}

// The reasons of featurestore_ingest_position_resets_total.
const (
	resetWentBack = "went_back"
	resetMovedOn  = "moved_on"
)

// countReset counts a partition resumed for its saved position (reason
// resetWentBack or resetMovedOn).
func (m *Metrics) countReset(source, reason string) {
	if m != nil {
		m.resets.WithLabelValues(source, reason).Inc()
	}
}

// countLost counts events retention deleted before they were read.
func (m *Metrics) countLost(source string, partition int, n int64) {
	if m != nil && n > 0 {
		m.lost.WithLabelValues(source, strconv.Itoa(partition)).Add(float64(n))
	}
}

func (m *Metrics) setLag(source string, partition int, lag int64) {
	if m != nil {
		m.lag.WithLabelValues(source, strconv.Itoa(partition)).Set(float64(max(lag, 0)))
	}
}

func (m *Metrics) observeBatch(source string, seconds float64) {
	if m != nil {
		m.batch.WithLabelValues(source).Observe(seconds)
	}
}

// freshnessOf returns the freshness histogram of a source: looked up once
// per batch, observed once per event.
func (m *Metrics) freshnessOf(source string) prometheus.Observer {
	return m.freshness.WithLabelValues(source)
}
