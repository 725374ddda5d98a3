package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/registry"
)

// ServiceConfig configures the ingest service.
type ServiceConfig struct {
	Project string
	// Brokers resolves a source's Kafka brokers (its own list, or its named
	// connection).
	Brokers func(src *registry.Source) ([]string, error)
	// Sources limits ingest to the named sources; empty means all.
	Sources []string
	// GroupPrefix starts consumer group ids: <prefix>.<project>.<source>.
	GroupPrefix string
	// Group is the template of each source's group settings; Brokers,
	// GroupID and Topic are filled in.
	Group     GroupConfig
	Store     *online.Store
	Positions *Positions
	// Offline, when set, is the offline log the events of offline views are
	// appended to; the caller closes it after RunService returns.
	Offline *offline.Writer
	Metrics *Metrics
	Logger  *slog.Logger
	// Readiness, if set, is kept up to date with the sources running.
	Readiness *Readiness
}

// RunService ingests every selected source of the registry version the
// watcher holds, until ctx ends. When a new version appears, the running
// groups finish their batches and stop, and groups for the new version
// start from the positions in Redis. A source of a version that cannot be
// ingested (no brokers for its Kafka connection, say) is logged, skipped,
// and makes Readiness not ready; the version's other sources are ingested.
// It returns nil when ctx ends.
func RunService(ctx context.Context, cfg ServiceConfig, w *registry.Watcher) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for ctx.Err() == nil {
		snap := w.Current()
		if snap == nil {
			log.Info("no registry version yet; waiting")
			if !sleep(ctx, time.Second) {
				return nil
			}
			continue
		}
		runCtx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		cfg.Readiness.start(snap.Version)
		started := startSources(runCtx, &wg, cfg, snap, log)
		cfg.Readiness.allStarted()
		log.Info("ingest running", "registry_version", snap.Version, "sources", started)
		// Wait for a new version or the end.
		for runCtx.Err() == nil {
			// Another snapshot, not only a higher number: a store that lost
			// versions reuses numbers (registry.Watcher.Load).
			if cur := w.Current(); cur != nil && cur != snap {
				log.Info("registry version changed; restarting ingest", "from", snap.Version, "to", cur.Version)
				break
			}
			sleep(runCtx, 200*time.Millisecond)
		}
		t := time.Now()
		cancel()
		wg.Wait()
		cfg.Readiness.stop()
		log.Info("ingest stopped", "registry_version", snap.Version, "duration", time.Since(t))
	}
	return nil
}

// startSources starts the group of each selected source of snap and
// returns the names of those started; a source that cannot be started is
// logged, recorded in cfg.Readiness, and skipped.
func startSources(ctx context.Context, wg *sync.WaitGroup, cfg ServiceConfig, snap *registry.Snapshot, log *slog.Logger) []string {
	var started []string
	// A source selected by name that this version lacks is not ingested:
	// right for a removed source, but say so.
	var missing []string
	for _, n := range cfg.Sources {
		if snap.Registry.Source(n) == nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		log.Warn("registry version has no source named in --sources; it is not ingested", "registry_version", snap.Version, "sources", missing)
	}
	var unlogged []string // offline views whose events go nowhere offline
	for _, src := range snap.Registry.Sources {
		if cfg.Offline != nil || len(cfg.Sources) > 0 && !contains(cfg.Sources, src.Name) {
			continue
		}
		for _, v := range snap.Registry.ViewsOfSource(src.Name) {
			if v.IsOffline() {
				unlogged = append(unlogged, v.Name)
			}
		}
	}
	if len(unlogged) > 0 {
		log.Warn("feature views are offline (the default) but ingest writes no offline log (--offline-dir): their events are not kept for training exports",
			"registry_version", snap.Version, "views", unlogged)
	}
	// The series of the sources and views started, and of the views
	// logged offline; those of the previous version's others are deleted.
	keep := map[string][]string{}
	var offViews []string
	for _, src := range snap.Registry.Sources {
		if len(cfg.Sources) > 0 && !contains(cfg.Sources, src.Name) {
			continue
		}
		used := false
		for _, v := range snap.Registry.ViewsOfSource(src.Name) {
			used = used || v.IsOnline() || (cfg.Offline != nil && v.IsOffline())
		}
		if !used {
			continue
		}
		slog := log.With("source", src.Name)
		// A source this process cannot ingest (a Kafka connection it was
		// not given) is skipped, not the version: the other sources go on.
		// The version running at start was checked by the caller, which
		// refuses to start without the brokers of its sources.
		skip := func(err error) {
			slog.Error("source not ingested: this registry version's other sources are", "registry_version", snap.Version, "err", err)
			cfg.Readiness.skip(src.Name, err)
		}
		brokers, err := cfg.Brokers(src)
		if err != nil {
			skip(err)
			continue
		}
		var dlq DeadLetterSink
		var closeDLQ func() error
		if t := src.Kafka.DeadLetterTopic; t != "" {
			dlq, closeDLQ = deadLetters(brokers, t, cfg.Group.Dialer, cfg.Group.ShutdownTimeout, slog)
		}
		a, err := NewApplier(cfg.Project, snap.Registry, src, cfg.Store, cfg.Positions, dlq, slog)
		if err == nil {
			a.SetMetrics(cfg.Metrics)
			err = a.SetOffline(cfg.Offline, snap.Registry)
		}
		if err != nil {
			if closeDLQ != nil {
				closeDLQ()
			}
			skip(err)
			continue
		}
		keep[src.Name] = append(a.onlineViews(), a.offlineOnlyViews()...)
		for _, ov := range a.offViews {
			offViews = append(offViews, ov.schema.View)
		}
		gc := cfg.Group
		gc.Brokers, gc.Topic, gc.Logger = brokers, src.Kafka.Topic, slog
		gc.GroupID = cfg.GroupPrefix + "." + cfg.Project + "." + src.Name
		cfg.Readiness.track(src.Name, src.Kafka.Topic, &gc)
		gc.DeadLetterTopic = src.Kafka.DeadLetterTopic
		wg.Add(1)
		go func() {
			defer wg.Done()
			if closeDLQ != nil {
				defer closeDLQ()
			}
			if err := RunGroup(ctx, gc, a); err != nil {
				slog.Error("consumer group failed", "err", err)
			}
		}()
		started = append(started, src.Name)
	}
	cfg.Metrics.retain(keep)
	if cfg.Offline != nil {
		cfg.Offline.SetViews(offViews)
	}
	return started
}

// deadLetters returns the dead-letter sink of a source and the function
// that closes it. Its transport is one of its own, with the dialer's TLS
// and SASL if any, whose metadata is of the topic alone (kafka-go's
// default transport asks for every topic of the cluster every few
// seconds). The writer does not close it: closing the sink closes it too,
// since a sink is made per registry version.
//
// timeout is the group's ShutdownTimeout (its default if 0): it bounds each
// write of letters (NewKafkaDeadLettersWithin), and closing the sink, which
// waits for the writes in flight: a close that takes longer is abandoned,
// with a warning, so that a stop or a new registry version does not wait
// for a broker that does not answer. A write abandoned so was of letters
// whose batch failed, and is retried by the partition's next owner.
func deadLetters(brokers []string, topic string, d *kafka.Dialer, timeout time.Duration, log *slog.Logger) (DeadLetterSink, func() error) {
	if timeout <= 0 {
		timeout = defaultShutdownTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr := newTransport(d, topic)
	k := NewKafkaDeadLettersWithin(brokers, topic, tr, timeout)
	return k, func() error {
		done := make(chan error, 1)
		go func() {
			err := k.Close()
			tr.CloseIdleConnections()
			done <- err
		}()
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case err := <-done:
			return err
		case <-t.C:
			log.Warn("closing the dead-letter writer timed out; abandoned, its writes in flight end by themselves",
				"dead_letter_topic", topic, "timeout", timeout)
			return fmt.Errorf("close the dead-letter writer of %s: timed out after %s", topic, timeout)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
