package cmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/devenv"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/ingest"
	"github.com/featurestore/featurestore/registry"
	"github.com/featurestore/featurestore/registry/redisstore"
	"github.com/featurestore/featurestore/serving"
)

func devCommand() *command {
	var (
		logs       logFlags
		dataDir    string
		defs       string
		kafkaAddr  string
		redisAddr  string
		project    string
		rate       int
		metrics    string
		grpcAddr   string
		httpAddr   string
		offDir     string
		flightAddr string
	)
	return &command{
		name:    "dev",
		daemon:  true,
		usage:   "dev [flags]",
		summary: "Run everything in one process, with nothing installed (make run).",
		long: `Start an in-process Kafka broker (its data under --data-dir, so topics and
offsets survive a restart) and an in-process Redis-compatible server, create
the topics the definitions name, apply the definitions in --definitions to a
registry kept in that Redis, and print where each endpoint listens. Other
featurestore commands reach it with their default flags: for example
'featurestore versions' lists the registry of a running dev mode. Stop with
Ctrl-C.`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			logs.register(fs)
			fs.StringVar(&dataDir, "data-dir", ".featurestore/dev", "Directory for dev mode state (the in-process Kafka's log).")
			fs.StringVar(&defs, "definitions", "examples", "Directory of feature definitions to apply at start.")
			fs.StringVar(&kafkaAddr, "kafka-listen", "127.0.0.1:9092", "Loopback address of the in-process Kafka broker.")
			fs.StringVar(&redisAddr, "redis-listen", "127.0.0.1:6379", "Loopback address of the in-process Redis server.")
			fs.StringVar(&project, "project", "default", "Project whose registry dev mode fills.")
			fs.IntVar(&rate, "generate-rate", 50, "Example card transactions generated per second into the card_transactions topic, on average; 0 for none.")
			fs.StringVar(&metrics, "metrics-addr", "127.0.0.1:9464", "Address of the /metrics endpoint; empty to serve none.")
			fs.StringVar(&grpcAddr, "grpc-addr", "127.0.0.1:6566", "Address of the gRPC lookup service, host:port; not empty.")
			fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:6567", "Address of the JSON-over-HTTP lookup endpoint; empty to serve none.")
			fs.StringVar(&offDir, "offline-dir", "", "Directory of the offline log ingest writes, for featurestore export; empty for offline under --data-dir.")
			fs.StringVar(&flightAddr, "flight-addr", "127.0.0.1:8815", "Address of the Arrow Flight training export service (docs/flight.md); empty to serve none.")
			return func(ctx context.Context, env *runEnv, args []string) error {
				if len(args) != 0 {
					return fmt.Errorf("%w: dev takes no arguments", errUsage)
				}
				if strings.Contains(offDir, "://") {
					// The Flight service of dev mode reads a local directory, and
					// would read one named after the URL while ingest writes to
					// the bucket: exports would be empty.
					return fmt.Errorf("%w: --offline-dir %q: dev mode keeps its offline log in a local directory, not at a URL", errUsage, offDir)
				}
				for _, l := range []struct{ flag, what, addr string }{{"--kafka-listen", "kafka", kafkaAddr}, {"--redis-listen", "redis", redisAddr}} {
					if _, err := devenv.LoopbackAddr(l.what, l.addr, ""); err != nil {
						return fmt.Errorf("%w: %s: %v", errUsage, l.flag, err)
					}
				}
				if grpcAddr == "" {
					// An empty address would listen on every interface at
					// a random port, unlike the other listeners' "off".
					return fmt.Errorf("%w: --grpc-addr is empty: dev always serves gRPC lookups; give a host:port", errUsage)
				}
				if rate < 0 {
					return fmt.Errorf("%w: --generate-rate must not be negative (0 for none)", errUsage)
				}
				if err := checkListenAddrs(listenFlag{"--kafka-listen", kafkaAddr}, listenFlag{"--redis-listen", redisAddr},
					listenFlag{"--metrics-addr", metrics}, listenFlag{"--grpc-addr", grpcAddr},
					listenFlag{"--http-addr", httpAddr}, listenFlag{"--flight-addr", flightAddr}); err != nil {
					return err
				}
				log, err := logs.logger(env.stderr)
				if err != nil {
					return fmt.Errorf("%w: %v", errUsage, err)
				}
				if _, err := os.Stat(defs); errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("%w: no definitions directory %q: run dev in the repository (its examples directory), or give --definitions DIR", errUsage, defs)
				}
				r, err := loadDefs(defs, env.stderr)
				if err != nil {
					return err
				}
				var topics []devenv.TopicSpec
				for _, s := range r.Sources {
					topics = append(topics, devenv.TopicSpec{Name: s.Kafka.Topic})
					if s.Kafka.DeadLetterTopic != "" {
						topics = append(topics, devenv.TopicSpec{Name: s.Kafka.DeadLetterTopic})
					}
				}
				if err := os.MkdirAll(dataDir, 0o755); err != nil {
					return fmt.Errorf("dev data directory: %w", err)
				}
				if offDir == "" {
					offDir = filepath.Join(dataDir, "offline")
				}
				if err := checkDevState(dataDir, offDir); err != nil {
					return err
				}
				start := time.Now()
				startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				de, err := devenv.Start(startCtx, devenv.Options{
					DataDir:   dataDir,
					KafkaAddr: kafkaAddr,
					RedisAddr: redisAddr,
					Topics:    topics,
					Logger:    log,
				})
				if err != nil {
					return fmt.Errorf("start dev environment: %w", err)
				}
				defer func() {
					t := time.Now()
					if err := de.Close(); err != nil {
						log.Error("dev environment stop failed", "err", err)
					}
					log.Info("dev environment stopped", "duration", time.Since(t))
				}()
				log.Info("dev environment started", "duration", time.Since(start))

				rc := redis.NewClient(&redis.Options{Addr: de.RedisAddr(), ContextTimeoutEnabled: true})
				defer rc.Close()
				store, err := redisstore.New(rc, project)
				if err != nil {
					return err
				}
				res, err := registry.Apply(ctx, store, r, registry.ApplyOptions{AllowBreaking: true, Message: "dev mode start: " + defs})
				if err != nil {
					return fmt.Errorf("apply %s: %w", defs, err)
				}
				version := res.To.Version
				if version == 0 {
					version = res.From
				}
				// Ingest every source into the in-process Redis, and feed the
				// example's source with generated transactions.
				promReg := newRegistry()
				metricsURL := "(off)"
				if metrics != "" {
					addr, stop, err := serveMetrics(ctx, metrics, promReg, log, nil)
					if err != nil {
						return err
					}
					defer stop()
					metricsURL = "http://" + addr + "/metrics"
				}
				// svc is set before the watcher runs, and plans each version
				// it loads from then on (Prepare).
				var svc *serving.OnlineService
				w := registry.NewWatcher(store, registry.WatcherOptions{Logger: log, OnChange: func(*registry.Snapshot) {
					if svc != nil {
						svc.Prepare()
					}
				}})
				if _, err := w.Load(ctx); err != nil {
					return err
				}
				// Listen first, so that a port in use fails the start before anything
				// runs. Lookups are served from the same Redis.
				ln, err := net.Listen("tcp", grpcAddr)
				if err != nil {
					return listenFlagError("--grpc-addr", grpcAddr, fmt.Errorf("grpc listener: %w", err))
				}
				var hln, fln net.Listener
				if httpAddr != "" {
					if hln, err = net.Listen("tcp", httpAddr); err != nil {
						ln.Close()
						return listenFlagError("--http-addr", httpAddr, fmt.Errorf("http listener: %w", err))
					}
				}
				var offStore offline.Storage
				if flightAddr != "" {
					if offStore, err = offline.NewDir(offDir); err == nil {
						fln, err = net.Listen("tcp", flightAddr)
					}
					if err != nil {
						ln.Close()
						if hln != nil {
							hln.Close()
						}
						return listenFlagError("--flight-addr", flightAddr, fmt.Errorf("flight listener: %w", err))
					}
				}
				// Ingest is what dev mode shows: if it fails, everything
				// stops and the command fails with its error, rather than
				// serving lookups that no event will change any more.
				ctx, stopAll := context.WithCancelCause(ctx)
				defer stopAll(nil)
				svc = serving.NewOnlineService(w, online.New(rc, online.Options{}), serving.OnlineOptions{
					Project: project, Metrics: serving.NewMetrics(promReg), Logger: log,
				})
				svc.Prepare()
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); _ = w.Run(ctx) }()
				go func() {
					defer wg.Done()
					err := runIngest(ctx, offDir, promReg, log, w, ingest.ServiceConfig{
						Project:     project,
						Brokers:     func(*registry.Source) ([]string, error) { return de.KafkaBrokers(), nil },
						GroupPrefix: "featurestore",
						Group: ingest.GroupConfig{SessionTimeout: 6 * time.Second,
							// Sources applied while dev runs get their topics.
							CreateTopics: func(_ context.Context, topics []string) error {
								specs := make([]devenv.TopicSpec, len(topics))
								for i, t := range topics {
									specs[i] = devenv.TopicSpec{Name: t}
								}
								return de.CreateTopics(specs)
							}},
						Store:     online.New(rc, online.Options{}),
						Positions: ingest.NewPositions(rc, project),
						Metrics:   ingest.NewMetrics(promReg),
						Logger:    log,
					})
					if err != nil && ctx.Err() == nil {
						stopAll(&devIngestError{err})
					}
				}()
				ping := func(ctx context.Context) error { return rc.Ping(ctx).Err() }
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := serving.NewServer(svc, serving.ServerConfig{Listener: ln, Ready: svc.Ready(ping), Logger: log}).Run(ctx); err != nil {
						log.Error("serving failed", "err", err)
					}
				}()
				httpURL, curlHint := "(off)", ""
				if hln != nil {
					httpURL = "http://" + hln.Addr().String()
					curlHint = `  curl -s -H 'Content-Type: application/json' -d '{"feature_service":"fraud_detection_v1","entities":[{"join_keys":{"card_id":{"string_val":"card-0001"},"merchant_id":{"string_val":"m-001"}}}]}' ` +
						httpURL + "/v1/features:get\n"
					if r.OnDemandView("txn_risk") != nil {
						// The examples' on-demand features, with the request's values.
						curlHint += `  curl -s -H 'Content-Type: application/json' -d '{"features":{"refs":["txn_risk:*"]},"entities":[{"join_keys":{"card_id":{"string_val":"card-0001"},"merchant_id":{"string_val":"m-001"}},"request_context":{"amount":{"double_val":250},"country":{"string_val":"FR"}}}]}' ` +
							httpURL + "/v1/features:get\n"
					}
					hs := serving.NewHTTPServer(svc, serving.HTTPConfig{Listener: hln, Ping: ping, Logger: log})
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := hs.Run(ctx); err != nil {
							log.Error("http serving failed", "err", err)
						}
					}()
				}
				flightURL := "(off)"
				if fln != nil {
					flightURL = "grpc://" + fln.Addr().String()
					flightSrv := serving.NewFlightServer(serving.FlightConfig{Listener: fln, Project: project, Registry: w,
						Log: &offlineLog{st: offStore, project: project}, Metrics: serving.NewFlightMetrics(promReg), Logger: log})
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := flightSrv.Run(ctx); err != nil {
							log.Error("flight serving failed", "err", err)
						}
					}()
				}
				defer wg.Wait()
				generated := "off"
				if src := r.Source("card_transactions"); src != nil && rate > 0 {
					wg.Add(1)
					go func() { defer wg.Done(); generateTransactions(ctx, de.KafkaBrokers(), src.Kafka.Topic, rate, log) }()
					generated = fmt.Sprintf("%d card transactions/s into %s", rate, src.Kafka.Topic)
				}
				// The registry commands' flags, where dev's Redis or project
				// are not their defaults.
				regFlags := ""
				if a := de.RedisAddr(); a != "127.0.0.1:6379" {
					regFlags += " --redis-addr " + a
				}
				if project != "default" {
					regFlags += " --project " + project
				}
				abs, _ := filepath.Abs(dataDir)
				offAbs, _ := filepath.Abs(offDir)
				fmt.Fprintf(env.stdout, `featurestore dev is running.

  Kafka (in-process):   %s   topics: %d, data in %s
  Redis (in-process):   %s   online store and registry
  Registry:             version %d of project %q, from %s: %s
  Ingest:               every source into Redis; metrics at %s
  Offline log:          %s   (committed every minute)
  gRPC lookups:         %s   (featurestore.v1.OnlineService, health, reflection)
  HTTP lookups:         %s   (POST /v1/features:get, GET /healthz)
  Flight exports:       %s   (Arrow Flight DoExchange: training sets, docs/flight.md)
  Event generator:      %s

Try, from another terminal:
  featurestore versions%s
  featurestore plan%s %s
  grpcurl -plaintext -d '{"feature_service":"fraud_detection_v1","entities":[{"join_keys":{"card_id":{"string_val":"card-0001"},"merchant_id":{"string_val":"m-001"}}}]}' %s featurestore.v1.OnlineService/GetOnlineFeatures
%s
Press Ctrl-C to stop.
`, de.KafkaBrokers()[0], len(topics), abs, de.RedisAddr(), version, project, defs, summary(r), metricsURL, offAbs, ln.Addr(), httpURL, flightURL, generated, regFlags, regFlags, defs, ln.Addr(), curlHint)
				<-ctx.Done()
				fmt.Fprintln(env.stdout, "Stopping.")
				if err, ok := errors.AsType[*devIngestError](context.Cause(ctx)); ok {
					return err
				}
				return nil
			}
		},
	}
}

// devIngestError is dev mode's ingest failing: it stops dev mode.
type devIngestError struct{ err error }

func (e *devIngestError) Error() string { return "ingest failed, dev mode stopped: " + e.err.Error() }
func (e *devIngestError) Unwrap() error { return e.err }

// checkDevState refuses to start with an offline log but no dev Kafka state.
// The log holds the Kafka offsets it has written up to; the topics of a new
// Kafka state restart at offset 0, so the log would drop every new event up
// to the old offsets as a replay, while ingest applies them online, and
// exports would no longer match lookups. Only removing both starts afresh.
func checkDevState(dataDir, offDir string) error {
	if hasFiles(filepath.Join(dataDir, "kafka")) || !hasFiles(offDir) {
		return nil
	}
	return fmt.Errorf("the offline log in %s holds positions in the dev Kafka topics, whose state in %s is gone; "+
		"remove the whole data directory %s (--data-dir), and the offline log if it is elsewhere, to start afresh",
		offDir, filepath.Join(dataDir, "kafka"), dataDir)
}

// hasFiles reports whether dir holds a file, at any depth.
func hasFiles(dir string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	return found
}
