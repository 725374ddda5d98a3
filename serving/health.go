package serving

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// healthServer is gRPC's health server whose Watch streams end at
// Shutdown. gRPC's own keeps them open until the client leaves, so one
// watcher (client-side health checking keeps a stream per connection)
// would hold a graceful stop for its whole timeout.
type healthServer struct {
	*health.Server
	stopping context.Context // done at Shutdown
	stop     context.CancelFunc
}

func newHealthServer() *healthServer {
	ctx, cancel := context.WithCancel(context.Background())
	return &healthServer{Server: health.NewServer(), stopping: ctx, stop: cancel}
}

// Shutdown reports NOT_SERVING for every service, for good, and ends the
// Watch streams once they have sent it.
func (h *healthServer) Shutdown() {
	h.Server.Shutdown()
	h.stop()
}

// Watch is health.Server's Watch until Shutdown; then the watcher gets the
// final status (NOT_SERVING) if it has not had it yet, and the stream ends
// with UNAVAILABLE, which a client retries elsewhere.
func (h *healthServer) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(h.stopping, cancel)()
	ws := &watchStream{Health_WatchServer: stream, ctx: ctx}
	err := h.Server.Watch(req, ws)
	if h.stopping.Err() == nil || stream.Context().Err() != nil {
		return err
	}
	// gRPC's Watch may see its context end before the NOT_SERVING update
	// Shutdown queued for it: send the status now if it was not sent.
	if resp, err := h.Server.Check(stream.Context(), req); err == nil && (!ws.sent || resp.GetStatus() != ws.last) {
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	return status.Error(codes.Unavailable, "server shutting down")
}

// watchStream is a Watch stream with a context of its own, that remembers
// the last status sent.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx  context.Context
	sent bool
	last healthpb.HealthCheckResponse_ServingStatus
}

func (w *watchStream) Context() context.Context { return w.ctx }

func (w *watchStream) Send(r *healthpb.HealthCheckResponse) error {
	w.sent, w.last = true, r.GetStatus()
	return w.Health_WatchServer.Send(r)
}

// registerHealth registers a new health server on g and returns it.
func registerHealth(g *grpc.Server) *healthServer {
	hs := newHealthServer()
	healthpb.RegisterHealthServer(g, hs)
	return hs
}

// healthWatch reports a readiness check through a gRPC health server:
// SERVING while ready returns nil, NOT_SERVING otherwise, for the server as
// a whole ("") and for each of services. Without a check it reports
// SERVING.
type healthWatch struct {
	hs       *healthServer
	services []string
	ready    func(ctx context.Context) error
	interval time.Duration
	log      *slog.Logger
	name     string // of the server, in log lines
}

// start sets the status from a first check and, with a check, goes on
// checking every interval until ctx ends, logging each change.
func (h *healthWatch) start(ctx context.Context) {
	h.set(h.check(ctx))
	if h.ready != nil {
		go h.watch(ctx)
	}
}

// check calls ready with a deadline of one interval.
func (h *healthWatch) check(ctx context.Context) error {
	if h.ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, h.interval)
	defer cancel()
	return h.ready(ctx)
}

// set reports SERVING if err is nil, NOT_SERVING otherwise. After the
// health server's Shutdown it changes nothing.
func (h *healthWatch) set(err error) {
	st := healthpb.HealthCheckResponse_SERVING
	if err != nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	h.hs.SetServingStatus("", st)
	for _, s := range h.services {
		h.hs.SetServingStatus(s, st)
	}
}

func (h *healthWatch) watch(ctx context.Context) {
	tick := time.NewTicker(h.interval)
	defer tick.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := h.check(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && last == nil:
			h.log.Warn(h.name+" health: NOT_SERVING", "err", err)
		case err == nil && last != nil:
			h.log.Info(h.name + " health: SERVING again")
		}
		last = err
		h.set(err)
	}
}
