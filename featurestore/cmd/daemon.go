package cmd

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/registry"
)

// daemon is what the long-running commands (ingest, serve) share: the
// registry store and a watcher following it, a Redis client for the online
// store, and a metrics registry served on an address.
type daemon struct {
	rc      redis.UniversalClient
	prom    *prometheus.Registry
	watcher *registry.Watcher
	stop    func()

	mu sync.Mutex // guards loaded
	// loaded are called after each registry version the watcher loads
	// (onLoad).
	loaded []func()
}

// onLoad calls fn now, if a registry version is loaded, and after each
// version the watcher loads from now on.
func (d *daemon) onLoad(fn func()) {
	d.mu.Lock()
	d.loaded = append(d.loaded, fn)
	d.mu.Unlock()
	if d.watcher.Current() != nil {
		fn()
	}
}

// versionLoaded calls the functions of onLoad.
func (d *daemon) versionLoaded(*registry.Snapshot) {
	d.mu.Lock()
	fns := d.loaded
	d.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// startDaemon opens the registry, loads its current version, starts the
// watcher and the metrics endpoint (unless metricsAddr is empty), which also
// serves the routes that routes, if set, returns for the daemon, and with
// profiles the Go runtime's (pprofRoutes). Call stop when done: it stops
// the watcher and the metrics endpoint and closes the clients, in reverse
// order.
func startDaemon(ctx context.Context, reg *registryFlags, log *slog.Logger, metricsAddr string, profiles bool, watchEvery time.Duration, routes func(*daemon) map[string]http.Handler) (*daemon, error) {
	store, closeStore, err := reg.open(ctx)
	if err != nil {
		return nil, err
	}
	rc, err := reg.redis.client()
	if err != nil {
		closeStore()
		return nil, err
	}
	d := &daemon{rc: rc, prom: newRegistry()}
	if err := reg.redis.checkMode(ctx, d.rc); err != nil {
		d.rc.Close()
		closeStore()
		return nil, err
	}
	if err := reg.redis.checkEviction(ctx, d.rc, log); err != nil {
		d.rc.Close()
		closeStore()
		return nil, err
	}
	reg.redis.checkReplication(ctx, d.rc, log)
	stopMetrics := func() {}
	if metricsAddr != "" {
		extra := map[string]http.Handler{}
		if routes != nil {
			maps.Copy(extra, routes(d))
		}
		if profiles {
			maps.Copy(extra, pprofRoutes())
		}
		addr, stop, err := serveMetrics(ctx, metricsAddr, d.prom, log, extra)
		if err != nil {
			d.rc.Close()
			closeStore()
			return nil, err
		}
		stopMetrics = stop
		log.Info("metrics listening", "addr", "http://"+addr+"/metrics")
	}
	d.watcher = registry.NewWatcher(store, registry.WatcherOptions{Interval: watchEvery, OnChange: d.versionLoaded, Logger: log})
	d.prom.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "featurestore_registry_version",
		Help:        "Newest registry version of the project the process has loaded (0 before the first): processes that disagree for long are on different definitions.",
		ConstLabels: prometheus.Labels{"project": reg.project},
	}, func() float64 {
		if snap := d.watcher.Current(); snap != nil {
			return float64(snap.Version)
		}
		return 0
	}))
	if _, err := d.watcher.Load(ctx); err != nil {
		stopMetrics()
		d.rc.Close()
		closeStore()
		return nil, fmt.Errorf("load registry: %w", err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); _ = d.watcher.Run(wctx) }()
	evictionDone := make(chan struct{})
	if reg.redis.eviction {
		go func() { defer close(evictionDone); watchEviction(wctx, d.rc, d.prom, log) }()
	} else {
		close(evictionDone)
	}
	d.stop = func() {
		stopWatch()
		<-watchDone
		<-evictionDone
		stopMetrics()
		d.rc.Close()
		closeStore()
	}
	return d, nil
}

// pprofRoutes returns the Go runtime's profiling endpoints
// (net/http/pprof) under /debug/pprof/, for a metrics server run with
// --pprof: CPU and heap profiles, goroutine dumps and execution traces of
// the process. Off by default: they show the process's internals and a
// profile costs CPU while it runs.
func pprofRoutes() map[string]http.Handler {
	return map[string]http.Handler{
		"/debug/pprof/":        http.HandlerFunc(pprof.Index),
		"/debug/pprof/cmdline": http.HandlerFunc(pprof.Cmdline),
		"/debug/pprof/profile": http.HandlerFunc(pprof.Profile),
		"/debug/pprof/symbol":  http.HandlerFunc(pprof.Symbol),
		"/debug/pprof/trace":   http.HandlerFunc(pprof.Trace),
	}
}

// pprofUsage is the --pprof flag's usage.
const pprofUsage = "Serve the Go runtime's profiles (net/http/pprof) under /debug/pprof/ on the --metrics-addr server."
