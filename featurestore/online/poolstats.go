package online

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// PoolStatser is a Redis client whose connection pool statistics can be
// read: redis.Client and redis.ClusterClient (any redis.UniversalClient)
// are.
type PoolStatser interface {
	PoolStats() *redis.PoolStats
}

// NewPoolCollector returns a Prometheus collector of c's connection pool
// statistics, read at each scrape (DESIGN.md section 5: watch the pool's
// timeouts). A pool exhausted under load (timeouts, waits) then tells apart
// from a Redis outage, which both fail requests at their deadline.
//
// go-redis keeps two pools, labelled pool: "main", for single commands,
// and "pipeline", a smaller one (PipelinePoolSize, 10 by default) for
// pipelines, which is how the store reads and writes. A pipeline that finds
// the pipeline pool busy takes a connection of the main pool without waiting,
// so waits and timeouts show in the main pool. On Redis Cluster the values
// are the sums over the nodes' pools, but for pending_requests, which
// go-redis does not sum (0).
//
// A wait that the command's context ends, before PoolTimeout, is neither a
// timeout nor a wait to go-redis: pending_requests, the requests waiting at
// the scrape, is what shows a pool exhausted for shorter deadlines.
//
// go-redis counts in 32 bits: a counter starts again from 0 after 2^32, which
// rate() takes for a restart.
//
// A scrape waits at most a second for the statistics: ClusterClient.PoolStats
// loads the cluster's slots, with no deadline, while it has none (Redis
// Cluster unreachable since the start). The scrape then goes without the
// series. On Redis Cluster a summed counter also falls when a node leaves
// the cluster's state, which rate() takes for a restart.
func NewPoolCollector(c PoolStatser) prometheus.Collector {
	return newPoolCollector(c, time.Second)
}

func newPoolCollector(c PoolStatser, timeout time.Duration) *poolCollector {
	return &poolCollector{c: c, timeout: timeout}
}

type poolCollector struct {
	c       PoolStatser
	timeout time.Duration

	mu      sync.Mutex
	reading *poolRead // in flight, if any
}

// poolRead is one call of PoolStats; stats is set when done is closed.
type poolRead struct {
	done  chan struct{}
	stats *redis.PoolStats
}

// read returns the pool statistics, or nil if they take longer than
// p.timeout. A read that runs late goes on, and the scrapes until it ends
// wait for it rather than start another.
func (p *poolCollector) read() *redis.PoolStats {
	p.mu.Lock()
	r := p.reading
	if r == nil {
		r = &poolRead{done: make(chan struct{})}
		p.reading = r
		go func() {
			r.stats = p.c.PoolStats()
			p.mu.Lock()
			p.reading = nil
			p.mu.Unlock()
			close(r.done)
		}()
	}
	p.mu.Unlock()
	t := time.NewTimer(p.timeout)
	defer t.Stop()
	select {
	case <-r.done:
		return r.stats
	case <-t.C:
		return nil
	}
}

// poolMetric is one statistic of a pool.
type poolMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(s *redis.PoolStats) float64
}

func newPoolMetric(name, help string, typ prometheus.ValueType, value func(s *redis.PoolStats) float64) poolMetric {
	return poolMetric{prometheus.NewDesc("featurestore_redis_pool_"+name, help, []string{"pool"}, nil), typ, value}
}

var poolMetrics = []poolMetric{
	newPoolMetric("hits_total", "Connections taken from a Redis client's pool that were idle in it, by pool (main, pipeline).",
		prometheus.CounterValue, func(s *redis.PoolStats) float64 { return float64(s.Hits) }),
	newPoolMetric("misses_total", "Connections taken from a Redis client's pool that had to be dialled, none being idle, by pool.",
		prometheus.CounterValue, func(s *redis.PoolStats) float64 { return float64(s.Misses) }),
	newPoolMetric("timeouts_total", "Waits for a connection of a Redis client's pool, all in use, that timed out (the command failed), by pool.",
		prometheus.CounterValue, func(s *redis.PoolStats) float64 { return float64(s.Timeouts) }),
	newPoolMetric("waits_total", "Waits for a connection of a Redis client's pool, all in use, that got one (timeouts_total counts the others), by pool.",
		prometheus.CounterValue, func(s *redis.PoolStats) float64 { return float64(s.WaitCount) }),
	newPoolMetric("wait_seconds_total", "Time spent in the waits of waits_total, by pool.",
		prometheus.CounterValue, func(s *redis.PoolStats) float64 { return float64(s.WaitDurationNs) / 1e9 }),
	newPoolMetric("pending_requests", "Requests getting a connection of a Redis client's pool now, waiting for one (all in use) or dialling one, by pool; always 0 on Redis Cluster.",
		prometheus.GaugeValue, func(s *redis.PoolStats) float64 { return float64(s.PendingRequests) }),
	newPoolMetric("stale_connections_total", "Connections of a Redis client's pool closed as stale (idle too long, or broken), by pool.",
		prometheus.CounterValue, func(s *redis.PoolStats) float64 { return float64(s.StaleConns) }),
	newPoolMetric("connections", "Connections open in a Redis client's pool, idle or in use, by pool.",
		prometheus.GaugeValue, func(s *redis.PoolStats) float64 { return float64(s.TotalConns) }),
	newPoolMetric("idle_connections", "Idle connections in a Redis client's pool, by pool.",
		prometheus.GaugeValue, func(s *redis.PoolStats) float64 { return float64(s.IdleConns) }),
}

func (p *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range poolMetrics {
		ch <- m.desc
	}
}

func (p *poolCollector) Collect(ch chan<- prometheus.Metric) {
	main := p.read()
	if main == nil {
		return
	}
	// A client without a pipeline pool (PipelinePoolSize < 0) reports its
	// as zeros, so that the series do not come and go.
	pipeline := &redis.PoolStats{}
	if main.PipelineStats != nil {
		pipeline = (*redis.PoolStats)(main.PipelineStats)
	}
	for _, m := range poolMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(main), "main")
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(pipeline), "pipeline")
	}
}
