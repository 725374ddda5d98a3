package serving

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// Defaults of ServerConfig.
const (
	DefaultMaxConcurrentStreams = 1024
	// DefaultMaxRecvMsgSize bounds a lookup request: --max-entities
	// entities of composite keys of long strings (join key values may be
	// 1 KiB) fit in it. Callers without credentials never reach it under
	// an auth policy: they are refused from their headers (Auth.tapHandle).
	DefaultMaxRecvMsgSize  = 16 << 20
	DefaultMaxSendMsgSize  = 64 << 20
	DefaultShutdownTimeout = 10 * time.Second
	// NoShutdownGrace, as a ShutdownTimeout, gives calls in flight no time
	// to finish: they are cut off as soon as ctx ends.
	NoShutdownGrace time.Duration = -1
	// DefaultHealthInterval is how often Run checks ServerConfig.Ready.
	DefaultHealthInterval = 2 * time.Second
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Addr is the address to listen on, host:port. Ignored when Listener
	// is set.
	Addr string
	// Listener, if set, is served instead of listening on Addr (tests use
	// bufconn).
	Listener net.Listener
	// MaxConcurrentStreams bounds the calls in flight on one connection;
	// DefaultMaxConcurrentStreams when zero.
	MaxConcurrentStreams uint32
	// MaxRecvMsgSize and MaxSendMsgSize bound message sizes in bytes;
	// the defaults when zero.
	MaxRecvMsgSize, MaxSendMsgSize int
	// ShutdownTimeout is how long Run waits for calls in flight to finish
	// once ctx ends, before cutting them off; DefaultShutdownTimeout when
	// zero, none when negative (NoShutdownGrace).
	ShutdownTimeout time.Duration
	// TLS, if set, serves TLS only, with this configuration
	// (ServerTLS.Config gives one that follows certificate rotation).
	TLS *tls.Config
	// Auth, if set, authenticates and authorizes every call but health
	// checks; the OnlineService must have Auth.Authorize as its Authorize.
	Auth *Auth
	// Ready, if set, tells whether the server can answer lookups (a
	// registry version is loaded, the online store answers): Run calls it
	// at start and every HealthInterval, with a deadline of one interval,
	// and the gRPC health service reports SERVING while it returns nil and
	// NOT_SERVING otherwise. Nil: SERVING from start to shutdown.
	// OnlineService.Ready makes one.
	Ready func(ctx context.Context) error
	// HealthInterval is how often Ready is called; DefaultHealthInterval
	// when zero.
	HealthInterval time.Duration
	Logger         *slog.Logger
}

// Server is the gRPC server of the online service, with health and
// reflection.
type Server struct {
	cfg    ServerConfig
	grpc   *grpc.Server
	health *healthServer
}

// NewServer returns a server of svc; start it with Run.
func NewServer(svc pb.OnlineServiceServer, cfg ServerConfig) *Server {
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.MaxRecvMsgSize <= 0 {
		cfg.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	if cfg.MaxSendMsgSize <= 0 {
		cfg.MaxSendMsgSize = DefaultMaxSendMsgSize
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = DefaultHealthInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	opts := append(serverOptions(cfg.TLS, cfg.Auth),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgSize),
		// Calls run on long-lived workers, whose stacks have grown to the
		// depth of a lookup, instead of a new goroutine each, whose stack
		// grows (is copied) on every call: about 8% of the server's CPU
		// at 16 concurrent lookups. Beyond that many calls in flight, the
		// rest get goroutines of their own.
		grpc.NumStreamWorkers(uint32(16*runtime.GOMAXPROCS(0))),
	)
	gs := grpc.NewServer(opts...)
	pb.RegisterOnlineServiceServer(gs, svc)
	hs := registerHealth(gs)
	reflection.Register(gs)
	return &Server{cfg: cfg, grpc: gs, health: hs}
}

// serverOptions are the options the gRPC and Flight servers share:
// keepalive enforcement, TLS when tlsCfg is set, and auth's tap handle and
// interceptors.
func serverOptions(tlsCfg *tls.Config, auth *Auth) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}),
	}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	if auth != nil {
		opts = append(opts, grpc.InTapHandle(auth.tapHandle))
		opts = append(opts, grpc.ChainUnaryInterceptor(auth.UnaryInterceptor()), grpc.ChainStreamInterceptor(auth.StreamInterceptor()))
	}
	return opts
}

// Run serves until ctx ends, then stops gracefully: health turns to
// NOT_SERVING, calls in flight get ShutdownTimeout to finish, and the rest
// are cut off.
func (s *Server) Run(ctx context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("grpc listener on %s: %w", s.cfg.Addr, err)
		}
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	(&healthWatch{hs: s.health, services: []string{pb.OnlineService_ServiceDesc.ServiceName}, ready: s.cfg.Ready,
		interval: s.cfg.HealthInterval, log: s.cfg.Logger, name: "grpc"}).start(watchCtx)
	s.cfg.Logger.Info("grpc listening", "addr", ln.Addr().String(), "tls", s.cfg.TLS != nil, "auth", s.cfg.Auth != nil)
	return serveUntilDone(ctx, s.grpc, ln, s.health, s.cfg.ShutdownTimeout, s.cfg.Logger, "grpc", "cutting calls off")
}

// serveUntilDone serves g on ln until ctx ends, then stops it gracefully:
// health turns NOT_SERVING and its Watch streams end, calls in flight get
// up to timeout to finish, and the rest are cut off. name and cutOff word
// its log lines.
func serveUntilDone(ctx context.Context, g *grpc.Server, ln net.Listener, h *healthServer, timeout time.Duration, log *slog.Logger, name, cutOff string) error {
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s server: %w", name, err)
	case <-ctx.Done():
	}
	start := time.Now()
	h.Shutdown()
	if timeout < 0 {
		g.Stop() // no grace period
	} else {
		done := make(chan struct{})
		go func() { g.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(timeout):
			log.Warn(name+" graceful stop timed out; "+cutOff, "timeout", timeout)
			g.Stop()
			<-done
		}
	}
	<-errc
	log.Info(name+" server stopped", "duration", time.Since(start))
	return nil
}
