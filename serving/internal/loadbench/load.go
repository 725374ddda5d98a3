package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// A client issues one lookup of entities random entities per call. Each
// load goroutine has its own.
type client interface {
	// lookup reads the features of the entities and reports how many of
	// them had data.
	lookup(ctx context.Context, entities []int) (hits int, err error)
}

// stats are the measurements of one run of one row.
type stats struct {
	requests int
	elapsed  time.Duration
	lat      []time.Duration // every request's, sorted
	hits     int             // entities found with data
	lookups  int             // entities looked up
	errs     int
	firstErr error
	cpu      cpuDelta
}

func (s *stats) reqPerSec() float64 { return float64(s.requests) / s.elapsed.Seconds() }

// quantile returns the q-quantile of the latencies, nearest rank.
func (s *stats) quantile(q float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(s.lat)))) - 1
	return s.lat[min(max(i, 0), len(s.lat)-1)]
}

// run drives closed-loop load: conc goroutines, each with its own client,
// each sending its next request when the last one is answered, for d.
func run(ctx context.Context, clients []client, entitiesPerReq, nEntities int, d time.Duration, seed uint64) *stats {
	type worker struct {
		lat          []time.Duration
		hits, errs   int
		firstErr     error
		requests     int
		lookups      int
		entityBuffer []int
	}
	ws := make([]worker, len(clients))
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i, c := range clients {
		w := &ws[i]
		w.lat = make([]time.Duration, 0, 1<<16)
		w.entityBuffer = make([]int, entitiesPerReq)
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Go(func() {
			for {
				for j := range w.entityBuffer {
					w.entityBuffer[j] = rng.IntN(nEntities)
				}
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				hits, err := c.lookup(ctx, w.entityBuffer)
				w.lat = append(w.lat, time.Since(t0))
				w.requests++
				w.lookups += entitiesPerReq
				w.hits += hits
				if err != nil {
					if w.errs == 0 {
						w.firstErr = err
					}
					w.errs++
				}
			}
		})
	}
	wg.Wait()
	s := &stats{elapsed: time.Since(start)}
	for i := range ws {
		w := &ws[i]
		s.lat = append(s.lat, w.lat...)
		s.requests += w.requests
		s.lookups += w.lookups
		s.hits += w.hits
		s.errs += w.errs
		if s.firstErr == nil {
			s.firstErr = w.firstErr
		}
	}
	slices.Sort(s.lat)
	return s
}

// grpcClient looks features up through the server, as a model server would:
// the list of 10 feature references, one deadline per call.
type grpcClient struct {
	c    pb.OnlineServiceClient
	ids  []string
	req  *pb.GetOnlineFeaturesRequest
	vals []*pb.Value_StringVal
}

func newGRPCClient(c pb.OnlineServiceClient, ids []string, n int, service string, layout pb.ResponseLayout) *grpcClient {
	g := &grpcClient{c: c, ids: ids, req: &pb.GetOnlineFeaturesRequest{
		Kind:   &pb.GetOnlineFeaturesRequest_Features{Features: &pb.FeatureList{Refs: features}},
		Layout: layout,
	}}
	if service != "" {
		g.req.Kind = &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: service}
	}
	for range n {
		v := &pb.Value_StringVal{}
		g.vals = append(g.vals, v)
		g.req.Entities = append(g.req.Entities, &pb.EntityKey{JoinKeyValues: []*pb.Value{{Kind: v}}})
	}
	return g
}

func (g *grpcClient) lookup(ctx context.Context, entities []int) (int, error) {
	for i, e := range entities {
		g.vals[i].StringVal = g.ids[e]
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := g.c.GetOnlineFeatures(ctx, g.req)
	if err != nil {
		return 0, err
	}
	if g.req.Layout == pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS {
		// txn_count_2h counts the entity's events: 0 means no data.
		if len(resp.Columns) != len(features) || len(resp.Columns[1].Int64Values) != len(entities) {
			return 0, fmt.Errorf("%d columns for %d features, %d entities", len(resp.Columns), len(features), len(entities))
		}
		hits := 0
		for _, n := range resp.Columns[1].Int64Values {
			if n > 0 {
				hits++
			}
		}
		return hits, nil
	}
	if len(resp.Results) != len(entities) {
		return 0, fmt.Errorf("%d results for %d entities", len(resp.Results), len(entities))
	}
	hits := 0
	for _, r := range resp.Results {
		// txn_count_2h counts the entity's events: 0 means no data.
		if len(r.Values) == len(features) && r.Values[1].GetValue().GetInt64Val() > 0 {
			hits++
		}
	}
	return hits, nil
}

// healthClient makes the cheapest call the server answers, a gRPC health
// check: what gRPC alone costs, the floor under any lookup.
type healthClient struct {
	c healthpb.HealthClient
}

func (h healthClient) lookup(ctx context.Context, entities []int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := h.c.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		return 0, err
	}
	return len(entities), nil
}

// rawClient is the ceiling: the Redis reads of a lookup, the same pipeline
// the server sends (HGETALL of card_windows, HMGET of card_last's last
// values; same keys, arguments built the same way, over RESP2 as the
// server's client), straight from go-redis, with no gRPC and no decoding.
// lastField is the HMGET argument of card_last's reads, boxed once.
var lastField any = online.LastField

type rawClient struct {
	rc      *redis.Client
	project string
	ids     []string
	views   []string
	names   []string
	args    []any
	cmds    []*redis.StringSliceCmd
	batch   []redis.Cmder
}

func (r *rawClient) lookup(ctx context.Context, entities []int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	n := len(entities) * len(r.views)
	r.names = r.names[:0]
	for _, e := range entities {
		for _, v := range r.views {
			r.names = append(r.names, online.Key{Project: r.project, View: v, Entity: featurestore.StringKey(r.ids[e])}.Name())
		}
	}
	r.args, r.cmds, r.batch = r.args[:0], r.cmds[:0], r.batch[:0]
	if cap(r.args) < 2*n {
		r.args = make([]any, 0, 2*n)
	}
	for i := range n {
		a := len(r.args)
		if r.views[i%len(r.views)] == "card_last" {
			// A view without windows: the server reads its one field.
			r.args = append(r.args, "hmget", &r.names[i], lastField)
		} else {
			r.args = append(r.args, "hgetall", &r.names[i])
		}
		cmd := redis.NewStringSliceCmd(ctx, r.args[a:len(r.args):len(r.args)]...)
		r.cmds = append(r.cmds, cmd)
		r.batch = append(r.batch, cmd)
	}
	pipe := r.rc.Pipeline()
	_ = pipe.BatchProcess(ctx, r.batch...)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	hits := 0
	for i, cmd := range r.cmds {
		// The last-value blob of card_last: absent means no data.
		if r.views[i%len(r.views)] != "card_last" {
			continue
		}
		if vals := cmd.Val(); len(vals) == 1 && vals[0] != "" {
			hits++
		}
	}
	return hits, nil
}
