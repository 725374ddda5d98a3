package serving

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/derive"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/window"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
	"github.com/featurestore/featurestore/registry"
)

// Defaults of OnlineOptions.
const (
	DefaultMaxEntities     = 1000
	DefaultDefaultDeadline = time.Second
)

// Snapshots gives the registry version current now; registry.Watcher is one.
type Snapshots interface {
	Current() *registry.Snapshot
}

// OnlineOptions configures an OnlineService.
type OnlineOptions struct {
	// Project whose online state is read.
	Project string
	// MaxEntities is the most entities one request may ask for;
	// DefaultMaxEntities when zero.
	MaxEntities int
	// DefaultDeadline bounds a request whose client set no deadline;
	// DefaultDefaultDeadline when zero.
	DefaultDeadline time.Duration
	// Now is the clock that gives each request its read time; time.Now when
	// nil.
	Now func() time.Time
	// Authorize, if set, is called once per request, with the project and
	// the feature views the request reads, once they are resolved and before
	// anything is read; its error (a gRPC status) fails the request.
	// Auth.Authorize is one.
	Authorize func(ctx context.Context, project string, views []string) error
	Metrics   *Metrics
	Logger    *slog.Logger
}

// OnlineService implements featurestore.v1.OnlineService over the online
// store.
type OnlineService struct {
	pb.UnimplementedOnlineServiceServer

	opts  OnlineOptions
	regs  Snapshots
	store *online.Store

	mu   sync.Mutex // serialises plan builds
	plan atomic.Pointer[plan]

	scratch sync.Pool // of *scratch

	pingMu   sync.Mutex // guards pingFail
	pingFail string     // the online store's last ping error, "" after a success

	corruptLog logLimiter // of hashes that do not decode (corrupt.go)
	panicLog   logLimiter // of lookups that panicked, by place
}

// NewOnlineService returns the service reading store with the definitions
// of the snapshots regs gives.
func NewOnlineService(regs Snapshots, store *online.Store, opts OnlineOptions) *OnlineService {
	if opts.MaxEntities <= 0 {
		opts.MaxEntities = DefaultMaxEntities
	}
	if opts.DefaultDeadline <= 0 {
		opts.DefaultDeadline = DefaultDefaultDeadline
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &OnlineService{opts: opts, regs: regs, store: store,
		scratch: sync.Pool{New: func() any { return new(scratch) }}}
}

// planFor returns the plan of snap, building it on first use. Plans are
// told apart by snapshot, not by version number: a store that lost
// versions reuses numbers (registry.Watcher.Load).
func (s *OnlineService) planFor(snap *registry.Snapshot) *plan {
	if p := s.plan.Load(); p != nil && p.snap == snap {
		return p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.plan.Load(); p != nil && p.snap == snap {
		return p
	}
	start := time.Now()
	p := newPlan(s.opts.Project, snap)
	// Keep the current version's plan: a request that started on an older
	// version still uses the plan it built, but does not replace it.
	if s.regs.Current() == snap {
		s.plan.Store(p)
		s.opts.Metrics.setViews(p)
	}
	s.opts.Logger.Info("serving plan built", "version", p.version, "views", len(p.views), "duration", time.Since(start))
	return p
}

// Prepare plans the registry version current now, if not planned yet, so
// that its first lookup does not wait for the plan, and makes the metrics'
// series of its views at 0. Call it when a version is loaded
// (registry.WatcherOptions.OnChange); without it, both happen at the
// version's first lookup.
//
// A panic while planning (a bug) is logged with its stack rather than
// ending the process from the registry watcher's goroutine: the version's
// lookups then fail with INTERNAL, logged as any lookup that panics, until
// a version that plans is applied.
func (s *OnlineService) Prepare() {
	defer func() {
		if r := recover(); r != nil {
			s.opts.Logger.Error("planning the registry version failed: panic (a bug; please report it with this line); its lookups fail",
				"panic", fmt.Sprint(r), "at", featurestore.PanicSite(), "stack", string(debug.Stack()))
		}
	}()
	if snap := s.regs.Current(); snap != nil {
		s.planFor(snap)
	}
}

// Ready returns a readiness check for ServerConfig.Ready: nil once a
// registry version is loaded and ping (the online store's; nil for none)
// succeeds, an UNAVAILABLE status saying what is missing otherwise.
func (s *OnlineService) Ready(ping func(ctx context.Context) error) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		_, err := s.ready(ctx, ping)
		return err
	}
}

// ready is Ready's check, returning the registry version it found.
//
// Health checks are open to anyone, so the error says what is missing but
// not why: a ping error names the store's address. The reason is logged
// instead, when it changes rather than at every probe.
func (s *OnlineService) ready(ctx context.Context, ping func(ctx context.Context) error) (*registry.Snapshot, error) {
	snap := s.regs.Current()
	if snap == nil {
		return nil, status.Error(codes.Unavailable, "no registry version loaded yet")
	}
	if ping != nil {
		err := ping(ctx)
		s.pingMu.Lock()
		switch {
		case err != nil && err.Error() != s.pingFail:
			s.pingFail = err.Error()
			s.opts.Logger.Warn("online store unreachable", "err", err)
		case err == nil && s.pingFail != "":
			s.pingFail = ""
			s.opts.Logger.Info("online store reachable again")
		}
		s.pingMu.Unlock()
		if err != nil {
			return nil, status.Error(codes.Unavailable, "online store: unreachable")
		}
	}
	return snap, nil
}

// GetOnlineFeatures implements featurestore.v1.OnlineService.
//
// The response comes encoded, for gRPC to send as it is (encode.go): its
// fields are in the message's unknown fields, in the protobuf wire format,
// and the Go fields are empty. proto.Marshal writes it out as the message
// it encodes; a caller in the same process that wants the fields can
// proto.Unmarshal those bytes.
func (s *OnlineService) GetOnlineFeatures(ctx context.Context, req *pb.GetOnlineFeaturesRequest) (*pb.GetOnlineFeaturesResponse, error) {
	start := time.Now()
	resp, err := s.lookup(ctx, req, true)
	if m := s.opts.Metrics; m != nil {
		m.duration.WithLabelValues(grpcLookupMethod, status.Code(err).String()).Observe(time.Since(start).Seconds())
		m.entities.Observe(float64(len(req.GetEntities())))
	}
	return resp, err
}

// getOnlineFeatures answers a lookup with the response's messages, for
// encoders other than protobuf's (JSON).
func (s *OnlineService) getOnlineFeatures(ctx context.Context, req *pb.GetOnlineFeaturesRequest) (*pb.GetOnlineFeaturesResponse, error) {
	return s.lookup(ctx, req, false)
}

// lookup answers a lookup, with the response encoded if encode. A panic
// while answering (a bug) fails this lookup alone, INTERNAL, logged with
// its stack and counted: the calls in flight beside it go on, and the
// lookup's scratch, whose state the panic left unknown, is not reused.
func (s *OnlineService) lookup(ctx context.Context, req *pb.GetOnlineFeaturesRequest, encode bool) (resp *pb.GetOnlineFeaturesResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, s.panicked(req, r)
		}
	}()
	sc := s.scratch.Get().(*scratch)
	resp, err = s.answer(ctx, req, encode, sc)
	s.release(sc)
	return resp, err
}

// panicked logs and counts a lookup that panicked with r, and returns its
// status.
//
// A panic that every lookup meets (a bug in planning a registry version,
// say) would log a stack per lookup: each place is logged at most once a
// minute, like corrupt hashes (corrupt.go); the counter counts them all.
func (s *OnlineService) panicked(req *pb.GetOnlineFeaturesRequest, r any) error {
	s.opts.Metrics.panicked()
	site := featurestore.PanicSite()
	if ok, suppressed := s.panicLog.allow(site, time.Now()); ok {
		s.opts.Logger.Error("lookup failed: panic (a bug; please report it with this line)", "panic", fmt.Sprint(r), "at", site,
			"feature_service", req.GetFeatureService(), "features", len(req.GetFeatures().GetRefs()), "entities", len(req.GetEntities()),
			"suppressed", suppressed, "stack", string(debug.Stack()))
	}
	return status.Error(codes.Internal, "internal error: the lookup failed (the server logged why)")
}

// answer answers a lookup with sc's buffers.
func (s *OnlineService) answer(ctx context.Context, req *pb.GetOnlineFeaturesRequest, encode bool, sc *scratch) (*pb.GetOnlineFeaturesResponse, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, s.opts.DefaultDeadline, errServerDeadline)
		defer cancel()
	}
	snap := s.regs.Current()
	if snap == nil {
		return nil, status.Error(codes.Unavailable, "no registry version loaded yet")
	}
	p := s.planFor(snap)

	var sel *selection
	var err error
	service := ""
	switch k := req.GetKind().(type) {
	case *pb.GetOnlineFeaturesRequest_FeatureService:
		service = k.FeatureService
		sel, err = p.service(service)
	case *pb.GetOnlineFeaturesRequest_Features:
		sel, err = p.parseRefs(k.Features.GetRefs())
	default:
		err = errors.New("set feature_service or features")
	}
	if err != nil {
		return nil, unresolved(ctx, s.opts.Authorize, s.opts.Project, snap.Registry, service, req.GetFeatures().GetRefs(), err)
	}
	if err := authorizeViews(ctx, s.opts.Authorize, s.opts.Project, service, sel.viewNames); err != nil {
		return nil, err
	}
	columns := false
	switch l := req.GetLayout(); l {
	case pb.ResponseLayout_RESPONSE_LAYOUT_UNSPECIFIED, pb.ResponseLayout_RESPONSE_LAYOUT_ROWS:
	case pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS:
		columns = true
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown layout %d", l)
	}
	ents := req.GetEntities()
	switch {
	case len(ents) == 0:
		return nil, status.Error(codes.InvalidArgument, "no entities requested")
	case len(ents) > s.opts.MaxEntities:
		return nil, status.Errorf(codes.InvalidArgument, "%d entities requested, more than the %d allowed per request", len(ents), s.opts.MaxEntities)
	}
	reqVals, reqStride, err := sel.requestValues(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	sc.keys = slices.Grow(sc.keys[:0], len(ents)*len(sel.entities))[:len(ents)*len(sel.entities)]
	if err := putEntityKeys(sc.keys, ents, sel.entities); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}

	nv, ne := len(sel.views), len(sel.entities)
	sc.reads = slices.Grow(sc.reads[:0], len(ents)*nv)
	for i := range ents {
		for j := range sel.views {
			sc.reads = append(sc.reads, online.ViewRead{Layout: &sel.layouts[j], Entity: sc.keys[i*ne+sel.viewEntity[j]]})
		}
	}
	now := s.opts.Now()
	t := now.UnixMilli()
	readStart := time.Now()
	vals, err := sc.buf.ReadViews(ctx, s.store, sc.reads, t)
	if err != nil {
		return nil, s.readFailed(ctx, err, time.Since(readStart))
	}
	s.opts.Metrics.readDone(time.Since(readStart), readOK)
	s.opts.Metrics.readAgain(sc.buf.ReadAgain())
	s.opts.Metrics.tilesMerged(sc.buf.TilesMerged())
	if corrupt := sc.buf.Corrupt(); len(corrupt) > 0 {
		s.corruptState(corrupt, sc.reads)
	}
	if len(sel.ods) > 0 {
		vals = sel.computeODs(sc, vals, len(ents), reqVals, reqStride, s.opts.Metrics)
	}
	s.opts.Metrics.countValues(sel, vals, len(ents))
	switch {
	case encode && columns:
		return encodeColumns(sc, req, sel, vals, p.version, now), nil
	case encode:
		return encodeResponse(sc, req, sel, vals, p.version, now), nil
	case columns:
		return fillColumns(req, sel, vals, p.version, now), nil
	}
	return fill(req, sel, vals, p.version, now), nil
}

// errServerDeadline is the cause of a lookup's context ending at a deadline
// the server set (DefaultDeadline, when the caller set none), rather than at
// the caller's own.
var errServerDeadline = errors.New("the server's deadline for the lookup passed")

// readFailed returns the status of a lookup whose online store read took d
// and failed with err, and records it.
//
// A caller that gave up first (its deadline passed, or it cancelled) is
// told so, DEADLINE_EXCEEDED or CANCELLED, and that is no failure of the
// store: logged at debug, counted as canceled, so that clients with tight
// deadlines do not look like an outage. The server's own deadline passing
// is one: the store did not answer in time, UNAVAILABLE as when it cannot
// be reached, safe to retry.
func (s *OnlineService) readFailed(ctx context.Context, err error, d time.Duration) error {
	if dl, ok := ctx.Deadline(); ok && ctx.Err() == nil && !time.Now().Before(dl) {
		// The store's client gave up at the deadline (a network deadline
		// set from it) before the context's timer fired: wait for it, it is
		// due, to know whose deadline it was.
		<-ctx.Done()
	}
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), errServerDeadline) {
		s.opts.Metrics.readDone(d, readCanceled)
		s.opts.Logger.Debug("online store read abandoned by the caller", "err", err)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return status.Error(codes.DeadlineExceeded, "the call's deadline passed before the online store answered")
		}
		return status.Error(codes.Canceled, "request canceled")
	}
	s.opts.Metrics.readDone(d, readError)
	s.opts.Logger.Warn("online store read failed", "err", err)
	return status.Errorf(codes.Unavailable, "online store: %v", err)
}

// scratch is what a request reuses from the requests before it: its keys,
// reads and read buffers. The response never refers to it.
type scratch struct {
	keys        []featurestore.EntityKey
	reads       []online.ViewRead
	buf         online.ReadBuffer
	sizes, rows []int            // of encodeResponse
	ev          derive.Evaluator // of on-demand features
	odVals      []any            // an on-demand view's variables, as Value.Any gives them
}

// release returns a request's scratch to the pool, keeping no key alive.
func (s *OnlineService) release(sc *scratch) {
	clear(sc.keys)
	clear(sc.reads)
	s.scratch.Put(sc)
}

// entityKeys checks the join-key values of each row against the entities'
// declarations and returns the keys, row by row: the key of entity e in row i
// is at i*len(entities)+e.
func entityKeys(ents []*pb.EntityKey, entities []*entityPlan) ([]featurestore.EntityKey, error) {
	keys := make([]featurestore.EntityKey, len(ents)*len(entities))
	if err := putEntityKeys(keys, ents, entities); err != nil {
		return nil, err
	}
	return keys, nil
}

// putEntityKeys is entityKeys into keys, of len(ents)*len(entities).
func putEntityKeys(keys []featurestore.EntityKey, ents []*pb.EntityKey, entities []*entityPlan) error {
	var partsBuf [4]featurestore.KeyPart
	for i, ek := range ents {
		vals, named := ek.GetJoinKeyValues(), ek.GetJoinKeys()
		switch {
		case len(vals) > 0 && len(named) > 0:
			return fmt.Errorf("entity %d: give join_key_values or join_keys, not both", i)
		case len(named) == 0 && len(entities) > 1:
			names := make([]string, len(entities))
			for j, e := range entities {
				names[j] = e.name
			}
			return fmt.Errorf("entity %d: the features belong to entities %v: name the join keys (join_keys)", i, names)
		}
		for e, ent := range entities {
			parts := partsBuf[:0]
			if len(ent.keys) > len(partsBuf) {
				parts = make([]featurestore.KeyPart, 0, len(ent.keys))
			}
			parts = parts[:len(ent.keys)]
			if len(named) == 0 {
				if len(vals) != len(ent.keys) {
					return fmt.Errorf("entity %d: entity %q has %d join keys %v, got %d values", i, ent.name, len(ent.keys), ent.keys, len(vals))
				}
				for j, v := range vals {
					part, err := keyPart(v, ent.kinds[j])
					if err != nil {
						return fmt.Errorf("entity %d: join key %q (position %d) of entity %q: %w", i, ent.keys[j], j, ent.name, err)
					}
					parts[j] = part
				}
			} else {
				for j, name := range ent.keys {
					v, ok := named[name]
					if !ok {
						msg := fmt.Sprintf("entity %d: no value for join key %q of entity %q", i, name, ent.name)
						// A misspelt key name is the likely cause.
						if other := unusedKeys(named, entities); len(other) > 0 {
							msg += fmt.Sprintf(" (the request names %q, which no entity of the requested features has)", other)
						}
						return errors.New(msg)
					}
					part, err := keyPart(v, ent.kinds[j])
					if err != nil {
						return fmt.Errorf("entity %d: join key %q of entity %q: %w", i, name, ent.name, err)
					}
					parts[j] = part
				}
			}
			k, err := featurestore.NewEntityKey(parts...)
			if err != nil {
				return fmt.Errorf("entity %d: %w", i, err)
			}
			keys[i*len(entities)+e] = k
		}
		for name := range named {
			used := false
			for _, ent := range entities {
				used = used || slices.Contains(ent.keys, name)
			}
			if !used {
				return fmt.Errorf("entity %d: join key %q belongs to no entity of the requested features", i, name)
			}
		}
	}
	return nil
}

// unusedKeys returns, sorted, the join key names of a request that no entity
// of the requested features has.
func unusedKeys[V any](named map[string]V, entities []*entityPlan) []string {
	var out []string
	for name := range named {
		used := false
		for _, ent := range entities {
			used = used || slices.Contains(ent.keys, name)
		}
		if !used {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// cell is the messages of one value of a response, allocated together: a
// response takes a handful of allocations, not several per value. The
// scalar variants of Value are here too; a value uses one of them.
type cell struct {
	fv        pb.FeatureValue
	value     pb.Value
	eventTime timestamppb.Timestamp
	str       pb.Value_StringVal
	i64       pb.Value_Int64Val
	dbl       pb.Value_DoubleVal
	boolean   pb.Value_BoolVal
}

// span is the interval a windowed column covers. Every entity of a request
// is read at the same time, so the rows of a column share one.
type span struct {
	iv         pb.Interval
	start, end timestamppb.Timestamp
	covered    window.Interval
}

// head is the response with its read time, allocated together.
type head struct {
	resp     pb.GetOnlineFeaturesResponse
	readTime timestamppb.Timestamp
}

// fill builds the response: values[i*sel.width+j] holds view j's features
// for entity i (stored views, then on-demand ones).
func fill(req *pb.GetOnlineFeaturesRequest, sel *selection, vals [][]window.FeatureValue, version int64, now time.Time) *pb.GetOnlineFeaturesResponse {
	meta := req.IncludeMetadata == nil || *req.IncludeMetadata
	ne, nc, nv := len(req.GetEntities()), len(sel.cols), sel.width
	results := make([]pb.EntityResult, ne)
	resultPtrs := make([]*pb.EntityResult, ne)
	cells := make([]cell, ne*nc)
	fvPtrs := make([]*pb.FeatureValue, ne*nc)
	var spans []span // per column, when meta
	if meta && sel.windowed > 0 {
		spans = make([]span, nc)
	}
	for i := range ne {
		row := fvPtrs[i*nc : (i+1)*nc : (i+1)*nc]
		for c, col := range sel.cols {
			fv := &vals[i*nv+col.vidx][col.index]
			cl := &cells[i*nc+c]
			out := &cl.fv
			out.Status = pb.FeatureStatus(fv.Status)
			if fv.Status == window.StatusPresent {
				cl.setValue(fv.Value)
				out.Value = &cl.value
			}
			if meta {
				if fv.HasEventTime {
					setTime(&cl.eventTime, fv.EventTime)
					out.EventTime = &cl.eventTime
				}
				if col.windowed {
					out.Window = spans[c].interval(fv.Covered)
				}
			}
			row[c] = out
		}
		results[i].Values = row
		resultPtrs[i] = &results[i]
	}
	h := &head{}
	h.readTime.Seconds, h.readTime.Nanos = now.Unix(), int32(now.Nanosecond())
	h.resp.FeatureNames = sel.names
	h.resp.Results = resultPtrs
	h.resp.ReadTime = &h.readTime
	h.resp.RegistryVersion = version
	return &h.resp
}

// fillColumns is fill for RESPONSE_LAYOUT_COLUMNS.
func fillColumns(req *pb.GetOnlineFeaturesRequest, sel *selection, vals [][]window.FeatureValue, version int64, now time.Time) *pb.GetOnlineFeaturesResponse {
	meta := req.IncludeMetadata == nil || *req.IncludeMetadata
	ne, nv := len(req.GetEntities()), sel.width
	cols := make([]pb.FeatureColumn, len(sel.cols))
	h := &head{}
	h.resp.Columns = make([]*pb.FeatureColumn, len(sel.cols))
	for c, col := range sel.cols {
		out := &cols[c]
		h.resp.Columns[c] = out
		out.Type = valueType(col.kind)
		out.Statuses = make([]pb.FeatureStatus, ne)
		if meta {
			out.HasEventTime = make([]bool, ne)
			out.EventTimesUnixMs = make([]int64, ne)
		}
		switch col.kind {
		case featurestore.KindString:
			out.StringValues = make([]string, ne)
		case featurestore.KindInt64:
			out.Int64Values = make([]int64, ne)
		case featurestore.KindDouble:
			out.DoubleValues = make([]float64, ne)
		case featurestore.KindBool:
			out.BoolValues = make([]bool, ne)
		default:
			out.ListValues = make([]*pb.Value, ne)
		}
		for i := range ne {
			fv := &vals[i*nv+col.vidx][col.index]
			out.Statuses[i] = pb.FeatureStatus(fv.Status)
			present := fv.Status == window.StatusPresent && fv.Value.Kind() == col.kind
			switch col.kind {
			case featurestore.KindString:
				if present {
					out.StringValues[i] = fv.Value.Str()
				}
			case featurestore.KindInt64:
				if present {
					out.Int64Values[i] = fv.Value.Int64()
				}
			case featurestore.KindDouble:
				if present {
					out.DoubleValues[i] = fv.Value.Double()
				}
			case featurestore.KindBool:
				out.BoolValues[i] = present && fv.Value.Bool()
			default:
				cl := &cell{}
				if present {
					cl.setValue(fv.Value)
				}
				out.ListValues[i] = &cl.value
			}
			if meta && fv.HasEventTime {
				out.HasEventTime[i], out.EventTimesUnixMs[i] = true, fv.EventTime
			}
		}
		if meta && col.windowed {
			var sp span
			out.Window = sp.interval(vals[col.vidx][col.index].Covered)
		}
	}
	h.readTime.Seconds, h.readTime.Nanos = now.Unix(), int32(now.Nanosecond())
	h.resp.FeatureNames = sel.names
	h.resp.ReadTime = &h.readTime
	h.resp.RegistryVersion = version
	return &h.resp
}

// interval returns the message of the interval covered, shared with the
// rows before when they covered the same.
func (sp *span) interval(covered window.Interval) *pb.Interval {
	if sp.iv.Start != nil && sp.covered == covered {
		return &sp.iv
	}
	if sp.iv.Start != nil {
		// Rows of a request are read at one time, so this does not happen;
		// should it, the row gets an interval of its own.
		sp = &span{}
	}
	sp.covered = covered
	setTime(&sp.start, covered.Start)
	setTime(&sp.end, covered.End)
	sp.iv.Start, sp.iv.End = &sp.start, &sp.end
	return &sp.iv
}
