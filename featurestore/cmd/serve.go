package cmd

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"math"
	"time"

	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/registry"
	"github.com/featurestore/featurestore/serving"
)

func serveCommand() *command {
	var (
		reg             registryFlags
		logs            logFlags
		sec             securityFlags
		grpcAddr        string
		httpAddr        string
		httpMaxBody     int64
		metricsAddr     string
		profiles        bool
		maxEntities     int
		defaultDeadline time.Duration
		maxStreams      uint
		shutdownTimeout time.Duration
		watchEvery      time.Duration
		off             offlineFlags
		flightAddr      string
		flightExports   int
		flightUpload    int64
		flightIdle      time.Duration
		flightMemory    string
		flightParallel  int
		flightTempDir   string
	)
	return &command{
		name:    "serve",
		daemon:  true,
		usage:   "serve [flags]",
		summary: "Serve online feature lookups over gRPC and as JSON over HTTP, and training exports over Arrow Flight.",
		long: `Serve featurestore.v1.OnlineService on --grpc-addr: the current values of
features for entity keys, read from the online store in Redis in one round
trip per request, windows merged at request time. Each request is resolved
against one registry version; new versions are picked up without a restart.
The gRPC health service and server reflection are on, so grpcurl and load
tools work. Stops on SIGTERM or Ctrl-C, letting calls in flight finish for up
to --shutdown-timeout. Serves Prometheus metrics on --metrics-addr.

The same lookups are served as JSON over HTTP on --http-addr, for curl and
languages without gRPC tooling: POST /v1/features:get takes a
GetOnlineFeaturesRequest in the proto3 JSON mapping and answers the
GetOnlineFeaturesResponse; GET /healthz answers 200 once a registry version
is loaded and Redis answers. TLS and the access policy apply to it too.

With --offline-dir, training sets are served over Arrow Flight on
--flight-addr, for training jobs that use pyarrow.flight: a DoExchange call
sends a command descriptor (JSON: {"feature_service": NAME} or {"features":
[REFS]}, optionally "timestamp_column" and "key_columns") and the entity
table as an Arrow stream, and receives the training set that 'featurestore
export' would write, as an Arrow stream (docs/flight.md has a Python
example). At most --flight-max-exports run at once (a principal may have
twice as many calls open), each within --flight-export-memory; uploads and spill files go to
--flight-temp-dir and are removed when the call ends. A call whose upload
sends nothing for --flight-upload-idle-timeout is ended.

With --tls-cert and --tls-key the server speaks TLS only; --tls-client-ca
also requires client certificates. With --auth-policy every call except
health checks must authenticate (bearer token or client certificate), and a
lookup must be granted every feature view it reads. Certificates and the
policy are re-read when their files change ('featurestore token' makes
tokens; docs/operations.md, Security, has an example policy).`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			reg.register(fs)
			reg.redis.registerEviction(fs)
			reg.redis.lookups = true
			reg.redis.registerReadReplicas(fs)
			logs.register(fs)
			sec.register(fs)
			fs.StringVar(&grpcAddr, "grpc-addr", "127.0.0.1:6566", "Address of the gRPC server, host:port; not empty (the gRPC service is always served).")
			fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:6567", "Address of the JSON-over-HTTP lookup endpoint, host:port; empty to serve none.")
			fs.Int64Var(&httpMaxBody, "http-max-body-bytes", serving.DefaultMaxBodyBytes, "Largest HTTP lookup request body, in bytes; a larger one is refused with 413.")
			fs.StringVar(&metricsAddr, "metrics-addr", "127.0.0.1:9465", "Address of the /metrics endpoint; empty to serve none.")
			fs.BoolVar(&profiles, "pprof", false, pprofUsage)
			fs.IntVar(&maxEntities, "max-entities", serving.DefaultMaxEntities, "Most entities one request may ask for.")
			fs.DurationVar(&defaultDeadline, "default-deadline", serving.DefaultDefaultDeadline, "Deadline of a request whose client set none.")
			fs.UintVar(&maxStreams, "max-concurrent-streams", serving.DefaultMaxConcurrentStreams, "Most calls in flight on one client connection, 1 to 4294967295.")
			fs.DurationVar(&shutdownTimeout, "shutdown-timeout", serving.DefaultShutdownTimeout, "How long calls in flight may take to finish at shutdown; 0 cuts them off at once.")
			positiveDurationVar(fs, &watchEvery, "watch-interval", registry.DefaultWatchInterval, "Longest time between two reads of the registry head.")
			off.register(fs)
			fs.StringVar(&flightAddr, "flight-addr", "127.0.0.1:8815", "Address of the Arrow Flight training export service, host:port; empty to serve none. Needs --offline-dir.")
			fs.IntVar(&flightExports, "flight-max-exports", serving.DefaultFlightMaxExports, "Most Flight exports running at once; more are refused with RESOURCE_EXHAUSTED. One principal may have twice as many calls open.")
			fs.Int64Var(&flightUpload, "flight-max-upload-bytes", serving.DefaultFlightMaxUploadBytes, "Largest entity table one Flight export may send, in bytes of Arrow IPC messages, compressed buffers counted at their uncompressed size; a larger one is refused with RESOURCE_EXHAUSTED.")
			fs.DurationVar(&flightIdle, "flight-upload-idle-timeout", serving.DefaultFlightUploadIdleTimeout, "Longest wait for each message of a Flight export's upload, the first one included; a client that sends nothing for this long is cut off with DEADLINE_EXCEEDED. The download is not bounded: a training loop may read it slowly.")
			fs.StringVar(&flightMemory, "flight-export-memory", "1GiB", "About how much memory one Flight export may hold at once, like 512MiB or 4GiB.")
			fs.IntVar(&flightParallel, "flight-parallelism", 0, "Partitions one Flight export computes at once; 0 for GOMAXPROCS (the CPUs the process may use).")
			fs.StringVar(&flightTempDir, "flight-temp-dir", "", "Directory for the entity tables and spill files of Flight exports; empty for the system's temporary directory.")
			return func(ctx context.Context, env *runEnv, args []string) error {
				if len(args) != 0 {
					return fmt.Errorf("%w: serve takes no arguments", errUsage)
				}
				if maxEntities <= 0 {
					return fmt.Errorf("%w: --max-entities must be positive", errUsage)
				}
				if defaultDeadline <= 0 {
					return fmt.Errorf("%w: --default-deadline must be positive", errUsage)
				}
				if maxStreams == 0 || maxStreams > math.MaxUint32 {
					// gRPC takes a uint32, and 0 for its default: neither a
					// wrapped value nor 0 may stand for 1024 unsaid.
					return fmt.Errorf("%w: --max-concurrent-streams must be between 1 and %d", errUsage, uint32(math.MaxUint32))
				}
				if shutdownTimeout < 0 {
					return fmt.Errorf("%w: --shutdown-timeout must not be negative (0 cuts calls off at once)", errUsage)
				}
				// The servers read zero as their default.
				grace := shutdownTimeout
				if grace == 0 {
					grace = serving.NoShutdownGrace
				}
				if httpMaxBody <= 0 {
					return fmt.Errorf("%w: --http-max-body-bytes must be positive", errUsage)
				}
				if grpcAddr == "" {
					// An empty address would listen on every interface at
					// a random port, unlike the other listeners' "off".
					return fmt.Errorf("%w: --grpc-addr is empty: serve always serves gRPC lookups; give a host:port", errUsage)
				}
				if err := sec.check(); err != nil {
					return err
				}
				flightSet := false
				fs.Visit(func(f *flag.Flag) { flightSet = flightSet || f.Name == "flight-addr" })
				if flightAddr != "" && off.dir == "" && flightSet {
					return fmt.Errorf("%w: --flight-addr needs --offline-dir", errUsage)
				}
				flightListen := flightAddr
				if off.dir == "" {
					flightListen = "" // not served
				}
				if err := checkListenAddrs(listenFlag{"--grpc-addr", grpcAddr}, listenFlag{"--http-addr", httpAddr},
					listenFlag{"--metrics-addr", metricsAddr}, listenFlag{"--flight-addr", flightListen}); err != nil {
					return err
				}
				if flightExports <= 0 {
					return fmt.Errorf("%w: --flight-max-exports must be positive", errUsage)
				}
				if flightUpload <= 0 {
					return fmt.Errorf("%w: --flight-max-upload-bytes must be positive", errUsage)
				}
				if flightIdle <= 0 {
					return fmt.Errorf("%w: --flight-upload-idle-timeout must be positive", errUsage)
				}
				if flightParallel < 0 {
					return fmt.Errorf("%w: --flight-parallelism must not be negative", errUsage)
				}
				flightMem, err := parseMemory("--flight-export-memory", flightMemory)
				if err != nil {
					return err
				}
				log, err := logs.logger(env.stderr)
				if err != nil {
					return fmt.Errorf("%w: %v", errUsage, err)
				}
				d, err := startDaemon(ctx, &reg, log, metricsAddr, profiles, watchEvery, nil)
				if err != nil {
					return err
				}
				defer d.stop()
				w, rc, promReg := d.watcher, d.rc, d.prom
				promReg.MustRegister(online.NewPoolCollector(rc))
				serverTLS, auth, err := sec.build(promReg, log)
				if err != nil {
					return err
				}
				var authorize func(context.Context, string, []string) error
				var tlsConfig *tls.Config
				if auth != nil {
					authorize = auth.Authorize
				}
				if serverTLS != nil {
					tlsConfig = serverTLS.Config()
				}
				if w.Current() == nil {
					log.Warn("no registry version yet; requests fail with UNAVAILABLE until one is applied", "project", reg.project)
				}
				svc := serving.NewOnlineService(w, online.New(rc, online.Options{}), serving.OnlineOptions{
					Project:         reg.project,
					MaxEntities:     maxEntities,
					DefaultDeadline: defaultDeadline,
					Authorize:       authorize,
					Metrics:         serving.NewMetrics(promReg),
					Logger:          log,
				})
				d.onLoad(svc.Prepare)
				ping := func(ctx context.Context) error { return rc.Ping(ctx).Err() }
				servers := []func(context.Context) error{listensOn("--grpc-addr", grpcAddr, serving.NewServer(svc, serving.ServerConfig{
					Addr:                 grpcAddr,
					MaxConcurrentStreams: uint32(maxStreams),
					ShutdownTimeout:      grace,
					TLS:                  tlsConfig,
					Auth:                 auth,
					Ready:                svc.Ready(ping),
					Logger:               log,
				}).Run)}
				if httpAddr != "" {
					hc := serving.HTTPConfig{
						Addr:            httpAddr,
						MaxBodyBytes:    httpMaxBody,
						ShutdownTimeout: grace,
						Ping:            ping,
						Logger:          log,
					}
					if serverTLS != nil {
						hc.TLS = serverTLS.Config("h2", "http/1.1")
					}
					if auth != nil {
						hc.Interceptor, hc.Middleware = auth.UnaryInterceptor(), auth.HTTPMiddleware
					}
					servers = append(servers, listensOn("--http-addr", httpAddr, serving.NewHTTPServer(svc, hc).Run))
				}
				switch {
				case flightAddr == "":
				case off.dir == "":
					log.Info("no Arrow Flight training exports: --offline-dir is not set")
				default:
					st, closeSt, err := off.storage(ctx)
					if err != nil {
						return err
					}
					defer closeSt()
					fc := serving.FlightConfig{
						Addr:              flightAddr,
						Project:           reg.project,
						Registry:          w,
						Log:               &offlineLog{st: st, project: reg.project},
						MaxExports:        flightExports,
						MaxUploadBytes:    flightUpload,
						UploadIdleTimeout: flightIdle,
						Memory:            flightMem,
						Parallelism:       flightParallel,
						TempDir:           flightTempDir,
						ShutdownTimeout:   grace,
						TLS:               tlsConfig,
						Auth:              auth,
						Metrics:           serving.NewFlightMetrics(promReg),
						Logger:            log,
						Ping:              func(ctx context.Context) error { return offline.Ping(ctx, st) },
					}
					servers = append(servers, listensOn("--flight-addr", flightAddr, serving.NewFlightServer(fc).Run))
				}
				return runAll(ctx, servers...)
			}
		},
	}
}

// listensOn returns run, with a taken address in its error explained by the
// flag that sets it.
func listensOn(flagName, addr string, run func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error { return listenFlagError(flagName, addr, run(ctx)) }
}

// runAll runs every fn until ctx ends or one of them fails, which stops the
// others, and returns the first error.
func runAll(ctx context.Context, fns ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(fns))
	for _, fn := range fns {
		go func() {
			err := fn(ctx)
			if err != nil {
				cancel()
			}
			errc <- err
		}()
	}
	var first error
	for range fns {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}
