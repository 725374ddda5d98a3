package online

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// gatherPool gathers reg and returns the value of each metric by name and
// pool label, "name pool".
func gatherPool(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			pool := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "pool" {
					pool = l.GetValue()
				}
			}
			v := m.GetCounter().GetValue()
			if m.Gauge != nil {
				v = m.GetGauge().GetValue()
			}
			out[mf.GetName()+" "+pool] = v
		}
	}
	return out
}

// TestPoolCollector reads the pool statistics of standalone and cluster
// clients of real Redis at scrape time: commands count in the main pool,
// pipelines (every read and write of the store) in the pipeline pool.
func TestPoolCollector(t *testing.T) {
	for _, c := range []struct {
		name  string
		addrs func(t *testing.T) []string
	}{
		{"standalone", func(t *testing.T) []string { return []string{testenv.RedisAddr(t)} }},
		{"cluster", func(t *testing.T) []string { return testenv.RedisCluster(t, 3) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := testContext(t)
			rc := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: c.addrs(t), IsClusterMode: c.name == "cluster", ContextTimeoutEnabled: true})
			defer rc.Close()
			reg := prometheus.NewRegistry()
			reg.MustRegister(NewPoolCollector(rc))
			// Before any command every series is there, at 0.
			before := gatherPool(t, reg)
			for _, name := range []string{"hits_total", "misses_total", "timeouts_total", "waits_total", "wait_seconds_total", "pending_requests", "stale_connections_total", "connections", "idle_connections"} {
				for _, pool := range []string{"main", "pipeline"} {
					if _, ok := before["featurestore_redis_pool_"+name+" "+pool]; !ok {
						t.Errorf("no featurestore_redis_pool_%s{pool=%q}: %v", name, pool, before)
					}
				}
			}
			for range 3 {
				if err := rc.Set(ctx, "poolstats{x}", "1", time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
				if _, err := rc.Pipelined(ctx, func(p redis.Pipeliner) error {
					p.Get(ctx, "poolstats{x}")
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			got := gatherPool(t, reg)
			for _, pool := range []string{"main", "pipeline"} {
				if n := got["featurestore_redis_pool_hits_total "+pool] + got["featurestore_redis_pool_misses_total "+pool]; n < 3 {
					t.Errorf("%s pool: %v connections taken, want at least 3: %v", pool, n, got)
				}
				if got["featurestore_redis_pool_connections "+pool] < 1 || got["featurestore_redis_pool_idle_connections "+pool] < 1 {
					t.Errorf("%s pool: no open idle connection: %v", pool, got)
				}
			}
		})
	}

	t.Run("exhausted", func(t *testing.T) {
		// One connection, held: the next command waits PoolTimeout for
		// it and fails, a timeout; one that gets it while waiting is a
		// wait.
		ctx := testContext(t)
		rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), PoolSize: 1, PoolTimeout: 500 * time.Millisecond, MaxRetries: -1})
		defer rc.Close()
		reg := prometheus.NewRegistry()
		reg.MustRegister(NewPoolCollector(rc))
		held := rc.Conn()
		if err := held.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rc.Ping(ctx).Err(); !errors.Is(err, redis.ErrPoolTimeout) {
			t.Fatalf("ping with the pool exhausted: %v, want a pool timeout", err)
		}
		// Give the connection back once the next Ping waits for it, not
		// after a sleep that a loaded machine can outlast. go-redis counts
		// the Ping pending just before it tries for a connection without
		// waiting, so a connection given back in between is taken at once,
		// no wait: then hold it and try again.
		var got map[string]float64
		for attempt := 1; ; attempt++ {
			go func() {
				waitPending(t, rc, 1)
				time.Sleep(10 * time.Millisecond)
				held.Close()
			}()
			if err := rc.Ping(ctx).Err(); err != nil {
				t.Fatalf("ping once the connection is back: %v", err)
			}
			got = gatherPool(t, reg)
			if got["featurestore_redis_pool_waits_total main"] > 0 || attempt == 5 {
				break
			}
			held = rc.Conn()
			if err := held.Ping(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if got["featurestore_redis_pool_timeouts_total main"] != 1 || got["featurestore_redis_pool_waits_total main"] != 1 || got["featurestore_redis_pool_wait_seconds_total main"] <= 0 {
			t.Errorf("want 1 timeout and 1 wait in the main pool: %v", got)
		}
	})

	t.Run("wait ended by the context", func(t *testing.T) {
		// A wait that the command's context ends before PoolTimeout (a
		// lookup's deadline) is neither a timeout nor a wait to go-redis:
		// only pending_requests shows it, while it waits.
		ctx := testContext(t)
		rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), PoolSize: 1, PoolTimeout: time.Minute, MaxRetries: -1})
		defer rc.Close()
		reg := prometheus.NewRegistry()
		reg.MustRegister(NewPoolCollector(rc))
		held := rc.Conn()
		defer held.Close()
		if err := held.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		lookup, cancel := context.WithCancel(ctx)
		ended := make(chan error)
		go func() { ended <- rc.Ping(lookup).Err() }()
		waitPending(t, rc, 1)
		if got := gatherPool(t, reg); got["featurestore_redis_pool_pending_requests main"] != 1 {
			t.Errorf("a command waiting: want 1 pending request in the main pool: %v", got)
		}
		cancel()
		if err := <-ended; !errors.Is(err, context.Canceled) {
			t.Fatalf("ping whose context ended while it waited: %v", err)
		}
		got := gatherPool(t, reg)
		if got["featurestore_redis_pool_pending_requests main"] != 0 || got["featurestore_redis_pool_timeouts_total main"] != 0 || got["featurestore_redis_pool_waits_total main"] != 0 {
			t.Errorf("the wait ended: want no pending request, timeout or wait: %v", got)
		}
	})
}

// waitPending waits until n requests wait for a connection of rc's main pool;
// it gives up, with an error, after 5 s.
func waitPending(t *testing.T, rc *redis.Client, n uint32) {
	for deadline := time.Now().Add(5 * time.Second); rc.PoolStats().PendingRequests != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("%d requests waiting for a connection, want %d", rc.PoolStats().PendingRequests, n)
			return
		}
	}
}

// slowStats is a PoolStatser whose PoolStats blocks until release is closed,
// as ClusterClient's does while it loads the cluster's slots.
type slowStats struct {
	release chan struct{}
	calls   atomic.Int32
}

func (s *slowStats) PoolStats() *redis.PoolStats {
	s.calls.Add(1)
	<-s.release
	return &redis.PoolStats{Hits: 7}
}

// TestPoolCollectorSlowStats: a scrape does not wait on statistics that take
// longer than the collector's timeout; it goes without them, and the scrapes
// until the late read ends do not start another.
func TestPoolCollectorSlowStats(t *testing.T) {
	s := &slowStats{release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(s.release)
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(newPoolCollector(s, 20*time.Millisecond))
	gather := func() []*dto.MetricFamily {
		done := make(chan []*dto.MetricFamily, 1)
		go func() {
			mfs, err := reg.Gather()
			if err != nil {
				t.Error(err)
			}
			done <- mfs
		}()
		select {
		case mfs := <-done:
			return mfs
		case <-time.After(5 * time.Second):
			t.Fatal("the scrape waits on the pool statistics")
			return nil
		}
	}
	for range 2 {
		if mfs := gather(); len(mfs) != 0 {
			t.Errorf("statistics not read in time: want no series, got %v", mfs)
		}
	}
	if n := s.calls.Load(); n != 1 {
		t.Errorf("PoolStats called %d times while the first call ran, want 1", n)
	}
	close(s.release)
	released = true
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if got := gatherPool(t, reg); got["featurestore_redis_pool_hits_total main"] == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no statistics once PoolStats returns")
		}
	}
}
