package cmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/ingest"
	"github.com/featurestore/featurestore/registry"
)

// kafkaFlags say how to reach Kafka.
type kafkaFlags struct {
	brokers     string
	connections string
	security    kafkaSecurity
}

func (k *kafkaFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.brokers, "kafka-brokers", "127.0.0.1:9092", "Bootstrap brokers (comma-separated host:port) of the Kafka connection named default; may be empty when no source uses it.")
	fs.StringVar(&k.connections, "kafka-connections", "", "Other named Kafka connections, as name=host:port,host:port;name2=host:port.")
	k.security.register(fs)
}

// resolver returns how a source's brokers are found.
func (k *kafkaFlags) resolver() (func(*registry.Source) ([]string, error), error) {
	conns := map[string][]string{"default": splitList(k.brokers)}
	if strings.TrimSpace(k.connections) != "" {
		for _, c := range strings.Split(k.connections, ";") {
			name, list, ok := strings.Cut(strings.TrimSpace(c), "=")
			if !ok || name == "" || len(splitList(list)) == 0 {
				return nil, fmt.Errorf("--kafka-connections: %q is not name=host:port[,host:port]", c)
			}
			conns[name] = splitList(list)
		}
	}
	return func(src *registry.Source) ([]string, error) {
		if len(src.Kafka.Brokers) > 0 {
			return src.Kafka.Brokers, nil
		}
		b, ok := conns[src.Kafka.Connection]
		switch {
		case ok && len(b) > 0:
			return b, nil
		case src.Kafka.Connection == "default":
			return nil, fmt.Errorf("no brokers for Kafka connection \"default\" of source %q: set --kafka-brokers (or default=HOST:PORT in --kafka-connections)", src.Name)
		}
		return nil, fmt.Errorf("no brokers for Kafka connection %q of source %q: add %s=HOST:PORT to --kafka-connections", src.Kafka.Connection, src.Name, src.Kafka.Connection)
	}, nil
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// serveMetrics serves reg's /metrics, and routes, on addr until ctx ends
// or stop is called, whichever comes first; it returns the address it
// listens on.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger, routes map[string]http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, listenFlagError("--metrics-addr", addr, fmt.Errorf("metrics listener: %w", err))
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	for path, h := range routes {
		mux.Handle(path, h)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", "err", err)
		}
	}()
	stop := sync.OnceFunc(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	context.AfterFunc(ctx, stop)
	return ln.Addr().String(), stop, nil
}

// ingestProbes returns the liveness and readiness endpoints of an ingest
// process: /healthz answers 200 while the process serves HTTP; /readyz
// answers 200 when ready says so (each source in its group, no partition
// stalled or failing to apply its batch for long) and Redis answers a PING
// within a second, else 503, the body saying why in either case.
func ingestProbes(ready *ingest.Readiness, rc redis.UniversalClient) map[string]http.Handler {
	text := func(w http.ResponseWriter, code int, body string) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		fmt.Fprintln(w, body)
	}
	return map[string]http.Handler{
		"GET /healthz": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { text(w, http.StatusOK, "ok") }),
		"GET /readyz": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ok, why := ready.Ready()
			if ok {
				ctx, cancel := context.WithTimeout(r.Context(), time.Second)
				defer cancel()
				if err := rc.Ping(ctx).Err(); err != nil {
					ok, why = false, "redis does not answer: "+err.Error()
				}
			}
			code := http.StatusOK
			if !ok {
				code = http.StatusServiceUnavailable
			}
			text(w, code, why)
		}),
	}
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func ingestCommand() *command {
	var (
		reg         registryFlags
		logs        logFlags
		kafka       kafkaFlags
		sources     string
		groupPrefix string
		metricsAddr string
		profiles    bool
		batchSize   int
		maxBatch    int
		linger      time.Duration
		session     time.Duration
		watchEvery  time.Duration
		offlineDir  string
		bufferMem   string
	)
	return &command{
		name:    "ingest",
		daemon:  true,
		usage:   "ingest [flags]",
		summary: "Consume the sources' Kafka topics into the online store.",
		long: `Join one Kafka consumer group per source (<group-prefix>.<project>.<source>)
and apply every event to the online features in Redis, effectively once:
each write is fenced by the event's Kafka offset, and a restarted or
rebalanced process resumes from what Redis applied. With --offline-dir, the
events of offline feature views are also appended to the offline log there,
effectively once as well (a restart resumes from the older of the two
stores' positions, and each store skips what it holds). Several ingest processes
share the partitions. Events that cannot be used go to the source's
dead-letter topic with the reason in headers. A new registry version is
picked up without a restart. Stops on SIGTERM or Ctrl-C after finishing the
batches in flight. Serves Prometheus metrics on --metrics-addr.`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			reg.register(fs)
			reg.redis.registerEviction(fs)
			reg.redis.registerReplicas(fs)
			logs.register(fs)
			kafka.register(fs)
			fs.StringVar(&sources, "sources", "", "Comma-separated sources to ingest; empty for all.")
			fs.StringVar(&groupPrefix, "group-prefix", "featurestore", "Prefix of the consumer group ids.")
			fs.StringVar(&metricsAddr, "metrics-addr", "127.0.0.1:9464", "Address of the /metrics endpoint; empty to serve none.")
			fs.BoolVar(&profiles, "pprof", false, pprofUsage)
			fs.IntVar(&batchSize, "batch-size", 1000, "Most messages of one partition applied together while it keeps up (at least 1).")
			fs.IntVar(&maxBatch, "max-batch-size", 50000, "Most messages of one partition applied together while it is behind (also at most 16 MiB); at most --batch-size to never grow batches.")
			fs.DurationVar(&linger, "linger", 5*time.Millisecond, "How long a batch waits for more messages.")
			fs.StringVar(&bufferMem, "buffer-memory", "256MiB", "Most bytes of messages all partitions of the process hold at once, read ahead and in the batches being applied (keys, values and headers, plus 256 bytes each), like 128MiB or 1GiB; each partition may go over by one message.")
			fs.DurationVar(&session, "session-timeout", 10*time.Second, "Consumer group session timeout (at least 6s).")
			positiveDurationVar(fs, &watchEvery, "watch-interval", registry.DefaultWatchInterval, "Longest time between two reads of the registry head.")
			fs.StringVar(&offlineDir, "offline-dir", "", "Directory of the offline log the events of offline feature views are appended to, or an s3://, gs:// or azblob:// bucket URL; empty to write none.")
			return func(ctx context.Context, env *runEnv, args []string) error {
				if len(args) != 0 {
					return fmt.Errorf("%w: ingest takes no arguments", errUsage)
				}
				log, err := logs.logger(env.stderr)
				if err != nil {
					return fmt.Errorf("%w: %v", errUsage, err)
				}
				resolve, err := kafka.resolver()
				if err != nil {
					return fmt.Errorf("%w: %v", errUsage, err)
				}
				dialer, err := kafka.security.dialer()
				if err != nil {
					return fmt.Errorf("%w: %v", errUsage, err)
				}
				// The consumer group config turns zero into its defaults, so a
				// zero given here would not do what it says; and Kafka refuses a
				// session timeout below 6s, after which the group retries for ever.
				switch {
				case batchSize <= 0:
					return fmt.Errorf("%w: --batch-size must be positive", errUsage)
				case maxBatch <= 0:
					return fmt.Errorf("%w: --max-batch-size must be positive", errUsage)
				case linger <= 0:
					return fmt.Errorf("%w: --linger must be positive", errUsage)
				case session < 6*time.Second:
					return fmt.Errorf("%w: --session-timeout %s: Kafka needs at least 6s", errUsage, session)
				}
				storeOpts, err := reg.redis.storeOptions()
				if err != nil {
					return err
				}
				bufBytes, err := parseBytes(bufferMem)
				if err != nil || bufBytes <= 0 {
					return fmt.Errorf("%w: --buffer-memory %q: want a positive size, like 256MiB", errUsage, bufferMem)
				}
				budget := ingest.NewMemoryBudget(bufBytes)
				ready := &ingest.Readiness{}
				d, err := startDaemon(ctx, &reg, log, metricsAddr, profiles, watchEvery, func(d *daemon) map[string]http.Handler {
					return ingestProbes(ready, d.rc)
				})
				if err != nil {
					return err
				}
				defer d.stop()
				w, rc, promReg := d.watcher, d.rc, d.prom
				promReg.MustRegister(online.NewPoolCollector(rc), ingest.NewBudgetCollector(budget))
				named := splitList(sources)
				if snap := w.Current(); snap != nil {
					if missing := missingSources(named, snap.Registry); len(missing) > 0 {
						return fmt.Errorf("%w: --sources: registry version %d of project %q has no source %s; it has %s",
							errUsage, snap.Version, reg.project, quoteList(missing), sourceNames(snap.Registry))
					}
					// --kafka-brokers may be empty when no source uses the
					// default connection; one that does would fail only
					// once its group starts.
					for _, src := range snap.Registry.Sources {
						if len(named) > 0 && !slices.Contains(named, src.Name) {
							continue
						}
						if _, err := resolve(src); err != nil {
							return fmt.Errorf("%w: registry version %d: %v", errUsage, snap.Version, err)
						}
					}
				}
				return runIngest(ctx, offlineDir, promReg, log, w, ingest.ServiceConfig{
					Project:     reg.project,
					Brokers:     resolve,
					Sources:     named,
					GroupPrefix: groupPrefix,
					Group:       ingest.GroupConfig{BatchSize: batchSize, MaxBatchSize: maxBatch, Linger: linger, SessionTimeout: session, Dialer: dialer, Memory: budget},
					Store:       online.New(rc, storeOpts),
					Positions:   ingest.NewPositions(rc, reg.project),
					Metrics:     ingest.NewMetrics(promReg),
					Logger:      log,
					Readiness:   ready,
				})
			}
		},
	}
}

// missingSources returns the names in named that r has no source of.
func missingSources(named []string, r *registry.Registry) []string {
	var out []string
	for _, n := range named {
		if r.Source(n) == nil {
			out = append(out, n)
		}
	}
	return out
}

// sourceNames lists r's sources for an error message.
func sourceNames(r *registry.Registry) string {
	var names []string
	for _, s := range r.Sources {
		names = append(names, s.Name)
	}
	if len(names) == 0 {
		return "none"
	}
	return quoteList(names)
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// runIngest runs the ingest service, with an offline log in dir unless dir
// is empty. The log's writer flushes by age while ingest runs, and commits
// what it buffers once the partition workers have stopped.
func runIngest(ctx context.Context, dir string, promReg prometheus.Registerer, log *slog.Logger, w *registry.Watcher, cfg ingest.ServiceConfig) error {
	if dir == "" {
		return ingest.RunService(ctx, cfg, w)
	}
	st, closeSt, err := offline.Open(ctx, dir)
	if err != nil {
		return fmt.Errorf("offline log: %w", err)
	}
	defer closeSt()
	// Several ingest processes may share the directory: a file another one
	// wrote and has not committed yet is young, and spared at start.
	ow, err := offline.OpenWriter(ctx, st, cfg.Project, offline.Options{OrphanGrace: 10 * time.Minute, Metrics: offline.NewMetrics(promReg), Logger: log})
	if err != nil {
		return fmt.Errorf("offline log in %s: %w", dir, err)
	}
	runCtx, stop := context.WithCancel(ctx)
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		_ = ow.Run(runCtx)
	}()
	cfg.Offline = ow
	err = ingest.RunService(ctx, cfg, w)
	stop()
	<-flushed
	// The buffered rows are committed with the positions ingest reached;
	// rows lost here are replayed from the log's positions at the next start.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if cerr := ow.Close(cctx); cerr != nil {
		log.Error("offline log not flushed at stop; the next start replays it", "err", cerr)
		err = errors.Join(err, fmt.Errorf("offline log: %w", cerr))
	}
	return err
}
