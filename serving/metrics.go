package serving

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/featurestore/featurestore/featurestore/window"
)

// Metrics are the serving metrics. A nil *Metrics records nothing.
type Metrics struct {
	duration *prometheus.HistogramVec
	entities prometheus.Histogram
	redis    *prometheus.HistogramVec
	// redis's series by readResult, looked up once.
	redisBy  [len(readResults)]prometheus.Observer
	again    prometheus.Counter
	tiles    prometheus.Histogram
	values   *prometheus.CounterVec
	odErrors *prometheus.CounterVec
	corrupt  *prometheus.CounterVec
	panics   prometheus.Counter

	mu sync.Mutex // guards the fields below
	// The label values of the views' series made at 0 for the current
	// registry version (setViews): those of views, stored or on-demand,
	// of stored views, and of on-demand views and their features.
	valueViews, corruptViews map[string]bool
	odFeatures               map[[2]string]bool
}

// The result label values of the reloads of the TLS files and of the auth
// policy.
const (
	reloadOK    = "ok"
	reloadError = "error"
)

// reloadResults are the result label values of the reload counters, whose
// series start at 0.
var reloadResults = []string{reloadOK, reloadError}

// lookupCodes are the codes a lookup answers with, whose series of
// featurestore_serving_request_duration_seconds start at 0 for each
// method. Other codes (UNIMPLEMENTED for an HTTP method other than POST,
// say) add a series when first used.
var lookupCodes = []codes.Code{codes.OK, codes.Canceled, codes.InvalidArgument, codes.DeadlineExceeded,
	codes.PermissionDenied, codes.ResourceExhausted, codes.Unavailable, codes.Internal}

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
		Help:    "Duration of the online store read of a lookup (one round trip), by result: ok, error, or canceled (the caller's deadline passed or it cancelled first).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	}, []string{"result"})
	m.again = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "featurestore_serving_redis_reads_again_total",
		Help: "Entities' hashes read again whole, in a second round trip: a lookup that asks for the tile slots of short windows only found the hash laid out in a ring of another size (the view's longest window or its source's lateness changed since the entity's last write).",
	})
	m.tiles = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "featurestore_serving_tiles_merged",
		Help:    "Tiles merged per read of one entity's windowed feature view: those with events in the longest window the lookup asks for of the view. Hundreds mean entities with events in most tiles of long windows, whose lookups cost more (see docs/operations.md, Redis memory).",
		Buckets: []float64{0, 1, 4, 16, 64, 256, 1024, 4096},
	})
	m.values = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "featurestore_serving_values_total",
		Help: "Feature values served, by feature view and status (present, not_found, expired, null, error): the not-found ratio of a view is its not_found over its total.",
	}, []string{"view", "status"})
	m.corrupt = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "featurestore_serving_corrupt_state_total",
		Help: "Reads of an entity's online state that does not decode, by stored feature view: each served its features with status error.",
	}, []string{"view"})
	m.odErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "featurestore_serving_on_demand_errors_total",
		Help: "On-demand feature values served null because their expression failed, by view and feature.",
	}, []string{"view", "feature"})
	m.panics = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "featurestore_serving_panics_total",
		Help: "Lookups that failed with INTERNAL because answering them panicked (a bug; the server logs each with its stack).",
	})
	for r, label := range readResults {
		m.redisBy[r] = m.redis.WithLabelValues(label)
	}
	for _, method := range []string{grpcLookupMethod, httpLookupMethod} {
		for _, c := range lookupCodes {
			m.duration.WithLabelValues(method, c.String())
		}
	}
	reg.MustRegister(m.duration, m.entities, m.redis, m.again, m.tiles, m.values, m.odErrors, m.corrupt, m.panics)
	return m
}

// setViews makes the series of the views of p, the registry version's plan
// that lookups use now, at 0: an alert on the rate of corrupt reads or of
// failed on-demand expressions sees a series before the first one, and
// rate() sees the first one. The series of views (and on-demand features)
// of the version before that p lacks are deleted, so that they do not
// linger at their last value. A view that cannot be served (not online, or
// not compiling) has none: a lookup of it fails.
func (m *Metrics) setViews(p *plan) {
	if m == nil {
		return
	}
	values, corrupt, ods := map[string]bool{}, map[string]bool{}, map[[2]string]bool{}
	for name, vp := range p.views {
		if vp.err == nil {
			values[name], corrupt[name] = true, true
		}
	}
	for name, od := range p.ods {
		if od.err != nil {
			continue
		}
		values[name] = true
		for _, f := range od.feats {
			ods[[2]string{name, f.Name}] = true
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for v := range m.valueViews {
		if !values[v] {
			m.values.DeletePartialMatch(prometheus.Labels{"view": v})
		}
	}
	for v := range m.corruptViews {
		if !corrupt[v] {
			m.corrupt.DeleteLabelValues(v)
		}
	}
	for vf := range m.odFeatures {
		if !ods[vf] {
			m.odErrors.DeleteLabelValues(vf[0], vf[1])
		}
	}
	for v := range values {
		for _, label := range statusLabels {
			if label != "" {
				m.values.WithLabelValues(v, label)
			}
		}
	}
	for v := range corrupt {
		m.corrupt.WithLabelValues(v)
	}
	for vf := range ods {
		m.odErrors.WithLabelValues(vf[0], vf[1])
	}
	m.valueViews, m.corruptViews, m.odFeatures = values, corrupt, ods
}

// onDemandError counts a failed run of an on-demand feature's expression.
func (m *Metrics) onDemandError(view, feature string) {
	if m != nil {
		m.odErrors.WithLabelValues(view, feature).Inc()
	}
}

// panicked counts a lookup that panicked.
func (m *Metrics) panicked() {
	if m != nil {
		m.panics.Inc()
	}
}

// corruptState counts a read of a view's online state that does not
// decode.
func (m *Metrics) corruptState(view string) {
	if m != nil {
		m.corrupt.WithLabelValues(view).Inc()
	}
}

// readResult is how a lookup's online store read ended.
type readResult int

const (
	readOK readResult = iota
	readError
	// readCanceled: the caller gave up (its deadline passed, or it
	// cancelled) before the read ended; not a failure of the store.
	readCanceled
)

// readResults are the result label values of
// featurestore_serving_redis_duration_seconds, by readResult.
var readResults = [...]string{readOK: "ok", readError: "error", readCanceled: "canceled"}

// readDone records the duration of a lookup's online store read.
func (m *Metrics) readDone(d time.Duration, r readResult) {
	if m != nil {
		m.redisBy[r].Observe(d.Seconds())
	}
}

// tilesMerged observes the tiles merged by each read of a lookup
// (online.ReadBuffer.TilesMerged), but those without windows.
func (m *Metrics) tilesMerged(merged []int32) {
	if m == nil {
		return
	}
	for _, n := range merged {
		if n >= 0 {
			m.tiles.Observe(float64(n))
		}
	}
}

// readAgain counts n hashes read again whole (online.ReadBuffer.ReadAgain).
func (m *Metrics) readAgain(n int) {
	if m != nil && n > 0 {
		m.again.Add(float64(n))
	}
}

// statusLabels are the status label values of featurestore_serving_values_total,
// by window.Status.
var statusLabels = [...]string{
	window.StatusPresent:  "present",
	window.StatusNotFound: "not_found",
	window.StatusExpired:  "expired",
	window.StatusNull:     "null",
	window.StatusError:    "error",
}

// countValues counts the values of a lookup by view and status: vals holds
// the read results of ne entities, sel.width per entity.
func (m *Metrics) countValues(sel *selection, vals [][]window.FeatureValue, ne int) {
	if m == nil {
		return
	}
	var buf [8][len(statusLabels)]int // on the stack for up to 8 views
	counts := buf[:0]
	if len(sel.colViews) > len(buf) {
		counts = make([][len(statusLabels)]int, 0, len(sel.colViews))
	}
	counts = counts[:len(sel.colViews)]
	for c, col := range sel.cols {
		n := &counts[sel.colView[c]]
		for i := range ne {
			if st := vals[i*sel.width+col.vidx][col.index].Status; int(st) < len(statusLabels) {
				n[st]++
			}
		}
	}
	cs := sel.valueCounters.Load()
	if cs == nil || cs.m != m {
		// Looked up once per selection (and Metrics), not per request.
		cs = &valueCounters{m: m, by: make([][len(statusLabels)]prometheus.Counter, len(sel.colViews))}
		for v, view := range sel.colViews {
			for st, label := range statusLabels {
				if label != "" {
					cs.by[v][st] = m.values.WithLabelValues(view, label)
				}
			}
		}
		sel.valueCounters.Store(cs)
	}
	for v, n := range counts {
		for st, k := range n {
			if k > 0 {
				cs.by[v][st].Add(float64(k))
			}
		}
	}
}

// valueCounters are the series of featurestore_serving_values_total of a
// selection's views, by view (selection.colViews) and status.
type valueCounters struct {
	m  *Metrics
	by [][len(statusLabels)]prometheus.Counter
}
