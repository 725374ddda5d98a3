package serving

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthWatch reports a readiness check through a gRPC health server:
// SERVING while ready returns nil, NOT_SERVING otherwise, for the server as
// a whole ("") and for each of services. Without a check it reports
// SERVING.
type healthWatch struct {
	hs       *health.Server
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
