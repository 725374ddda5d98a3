package serving

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/featurestore/featurestore/featurestore/export"
	"github.com/featurestore/featurestore/featurestore/offline"
)

// Defaults of FlightConfig.
const (
	DefaultFlightMaxExports        = 2
	DefaultFlightMaxUploadBytes    = 1 << 30
	DefaultFlightUploadIdleTimeout = time.Minute
)

// flightExchangeMethod is the full gRPC name of Arrow Flight's DoExchange,
// the training export.
const flightExchangeMethod = "/arrow.flight.protocol.FlightService/DoExchange"

// flightSendRows and flightSendBytes bound the rows and about the bytes of
// one record batch sent back: a client that uploaded its table as one large
// batch still gets messages below gRPC's default limit of 4 MiB.
const (
	flightSendRows  = 64 << 10
	flightSendBytes = 2 << 20
)

// flightMaxMessageBytes bounds one message a call sends, far below the
// upload's bound: gRPC holds a message whole before the handler sees it,
// and the first one is read before the call's views are authorized and
// before it takes an export slot. A record batch of the upload must fit;
// pyarrow writers send one batch per message, of max_chunksize rows.
const flightMaxMessageBytes = 256 << 20

// flightCallsPerExport is how many calls one principal may have open at
// once per export slot (MaxExports): each may hold a message of up to
// flightMaxMessageBytes, the first one read before its views are
// authorized, so any authenticated principal could otherwise make the
// server hold that much per call, over as many calls and connections as it
// opens. Twice the slots leaves a principal room for its exports and as
// many calls sending their table or waiting for a slot.
const flightCallsPerExport = 2

// flightMaxConcurrentStreams bounds the calls in flight on one connection:
// a training job runs a few exports at most (more than MaxExports are
// refused anyway) and a few health checks, while every call, even an open
// health watch, holds a goroutine and buffers on the server.
const flightMaxConcurrentStreams = 32

// FlightCommand is the JSON command of the FlightDescriptor that starts a
// training export: what to export for the entity table that follows.
type FlightCommand struct {
	// FeatureService names a feature service; or Features lists references
	// view:feature (view:* for every feature of a view). Exactly one is set.
	FeatureService string   `json:"feature_service,omitempty"`
	Features       []string `json:"features,omitempty"`
	// TimestampColumn names the entity table's timestamp column;
	// "event_timestamp" when empty.
	TimestampColumn string `json:"timestamp_column,omitempty"`
	// KeyColumns maps a join key to the entity table column that holds it,
	// where the names differ.
	KeyColumns map[string]string `json:"key_columns,omitempty"`
	// AllowEmpty exports feature views that have nothing committed in the
	// offline log as the features of no events (null, counts 0), with a
	// warning in the schema's metadata; without it such a call fails with
	// FailedPrecondition.
	AllowEmpty bool `json:"allow_empty,omitempty"`
}

// FlightConfig configures a FlightServer.
type FlightConfig struct {
	// Addr is the address to listen on, host:port. Ignored when Listener
	// is set.
	Addr string
	// Listener, if set, is served instead of listening on Addr.
	Listener net.Listener
	// Project whose offline log Log reads.
	Project string
	// Registry gives the definitions current when an export starts;
	// registry.Watcher is one.
	Registry Snapshots
	// Log reads the project's offline log.
	Log export.Log
	// MaxExports bounds the exports running at once, uploads included. A
	// call takes its place once its first message is read and the caller
	// authorized, so that a call that sends nothing holds none; a call
	// beyond the bound then gets RESOURCE_EXHAUSTED at once.
	// DefaultFlightMaxExports when zero.
	MaxExports int
	// MaxUploadBytes bounds the entity table one call may send (its Arrow
	// IPC messages, compressed buffers counted at the size they claim
	// uncompressed); DefaultFlightMaxUploadBytes when zero.
	MaxUploadBytes int64
	// UploadIdleTimeout bounds the wait for each message of the upload,
	// the first one included: a client that sends nothing for this long
	// gets DEADLINE_EXCEEDED, so that an idle or stalled call cannot keep
	// an export's resources. The download is not bounded: a training loop
	// may consume it slowly. DefaultFlightUploadIdleTimeout when zero.
	UploadIdleTimeout time.Duration
	// Memory is the memory budget of one export (export.Options.Memory);
	// export.DefaultMemory when zero.
	Memory int64
	// Parallelism is how many goroutines one export computes with;
	// GOMAXPROCS when zero.
	Parallelism int
	// TempDir is where uploads and spill files go; the system's temporary
	// directory when empty. Each call's files are removed when it ends,
	// however it ends.
	TempDir string
	// ShutdownTimeout is how long Run waits for exports in flight once ctx
	// ends, before cutting them off; DefaultShutdownTimeout when zero, none
	// when negative (NoShutdownGrace).
	ShutdownTimeout time.Duration
	// TLS, if set, serves TLS only, with this configuration.
	TLS *tls.Config
	// Auth, if set, authenticates every call but health checks, and an
	// export needs a principal granted every feature view it reads.
	Auth    *Auth
	Metrics *FlightMetrics
	Logger  *slog.Logger
	// Ping, if set, checks that the offline log is reachable
	// (offline.Ping). gRPC health reports SERVING, for the server and for
	// FlightServiceName, while a registry version is loaded and Ping
	// succeeds, checked at start and every HealthInterval.
	Ping func(ctx context.Context) error
	// HealthInterval is how often health is checked;
	// DefaultHealthInterval when zero.
	HealthInterval time.Duration
}

// FlightServer serves point-in-time correct training sets over Arrow
// Flight, so that a training job gets one without files in between.
//
// The export is one DoExchange call. The client sends a FlightDescriptor of
// type CMD whose command is a FlightCommand in JSON, with the entity table
// as an Arrow stream (its schema, then record batches: the join key
// columns, the timestamp column, any label columns), and closes its side.
// The server answers the training set as an Arrow stream: the entity
// table's columns in its row order, then one column per feature, exactly
// as `featurestore export` writes them (package export), with the schema
// metadata featurestore.project and featurestore.registry_version.
//
// Errors are gRPC statuses: INVALID_ARGUMENT for a bad command, an unknown
// feature, a missing or mistyped column or a bad row; RESOURCE_EXHAUSTED
// when the entity table exceeds MaxUploadBytes, one message (a record
// batch) exceeds 256 MiB, MaxExports are running, or the principal has
// flightCallsPerExport times MaxExports calls open;
// DEADLINE_EXCEEDED when the client sends no message of its upload for
// UploadIdleTimeout; UNAUTHENTICATED and PERMISSION_DENIED under Auth;
// UNAVAILABLE before a registry version is loaded; CANCELLED when the
// client goes away, which stops the export. The entity table and the spill
// files are kept in a temporary directory for the call and removed when it
// ends.
type FlightServer struct {
	flight.BaseFlightServer

	cfg    FlightConfig
	grpc   *grpc.Server
	health *healthServer
	slots  chan struct{}
	mem    memory.Allocator

	callsMu sync.Mutex
	calls   map[string]int // open DoExchange calls by principal ("" without auth)
}

// FlightServiceName is the Arrow Flight service's name, which gRPC health
// checks can name.
const FlightServiceName = "arrow.flight.protocol.FlightService"

// NewFlightServer returns the Flight server of cfg; start it with Run.
func NewFlightServer(cfg FlightConfig) *FlightServer {
	if cfg.MaxExports <= 0 {
		cfg.MaxExports = DefaultFlightMaxExports
	}
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = DefaultFlightMaxUploadBytes
	}
	if cfg.UploadIdleTimeout <= 0 {
		cfg.UploadIdleTimeout = DefaultFlightUploadIdleTimeout
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
	s := &FlightServer{cfg: cfg, slots: make(chan struct{}, cfg.MaxExports), mem: memory.NewGoAllocator(), calls: map[string]int{}}
	opts := append(serverOptions(cfg.TLS, cfg.Auth),
		// One message is one record batch of the upload; the sent batches
		// are cut to flightSendRows rows.
		grpc.MaxRecvMsgSize(int(min(cfg.MaxUploadBytes+1<<20, flightMaxMessageBytes))),
		grpc.MaxConcurrentStreams(flightMaxConcurrentStreams),
		grpc.MaxSendMsgSize(math.MaxInt32),
	)
	s.grpc = grpc.NewServer(opts...)
	flight.RegisterFlightServiceServer(s.grpc, s)
	s.health = registerHealth(s.grpc)
	return s
}

// Run serves until ctx ends, then stops gracefully: exports in flight get
// ShutdownTimeout to finish, and the rest are cancelled.
func (s *FlightServer) Run(ctx context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("flight listener on %s: %w", s.cfg.Addr, err)
		}
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	(&healthWatch{hs: s.health, services: []string{FlightServiceName}, ready: s.ready,
		interval: s.cfg.HealthInterval, log: s.cfg.Logger, name: "flight"}).start(watchCtx)
	s.cfg.Logger.Info("flight listening", "addr", ln.Addr().String(), "tls", s.cfg.TLS != nil, "auth", s.cfg.Auth != nil,
		"max_exports", s.cfg.MaxExports, "max_upload_bytes", s.cfg.MaxUploadBytes, "upload_idle_timeout", s.cfg.UploadIdleTimeout)
	return serveUntilDone(ctx, s.grpc, ln, s.health, s.cfg.ShutdownTimeout, s.cfg.Logger, "flight", "cancelling exports")
}

// ready tells whether an export can run: a registry version is loaded and
// the offline log answers.
func (s *FlightServer) ready(ctx context.Context) error {
	if s.cfg.Registry.Current() == nil {
		return errors.New("no registry version loaded yet")
	}
	if s.cfg.Ping != nil {
		if err := s.cfg.Ping(ctx); err != nil {
			return fmt.Errorf("offline log: %w", err)
		}
	}
	return nil
}

// exchange is what one export call did, for its log line and metrics.
type exchange struct {
	principal   string
	views       []string
	uploadBytes int64
	rows        int64
	stats       export.Stats
	// panicked is set when the export panicked (a bug), for the log.
	panicked *export.PanicError
}

// DoExchange runs one training export; see FlightServer. A panic of the
// export (a bug) fails this call alone, INTERNAL, logged with its stack:
// the lookups the process serves go on.
func (s *FlightServer) DoExchange(stream flight.FlightService_DoExchangeServer) error {
	start := time.Now()
	var x exchange
	err := export.Recovered(func() error { return s.exchange(stream, &x) })
	var pe *export.PanicError
	if errors.As(err, &pe) {
		x.panicked, err = pe, status.Errorf(codes.Internal, "export: %v", pe)
	}
	s.done(&x, start, err)
	return err
}

// acquire takes one of the MaxExports slots, or fails with
// RESOURCE_EXHAUSTED at once; release gives it back.
func (s *FlightServer) acquire() (release func(), err error) {
	select {
	case s.slots <- struct{}{}:
	default:
		return nil, status.Errorf(codes.ResourceExhausted, "%d exports are running, as many as the server runs at once; retry later", cap(s.slots))
	}
	s.cfg.Metrics.running(1)
	return func() {
		s.cfg.Metrics.running(-1)
		<-s.slots
	}, nil
}

func (s *FlightServer) done(x *exchange, start time.Time, err error) {
	code := status.Code(err)
	d := time.Since(start)
	s.cfg.Metrics.observe(code, d, x)
	log := s.cfg.Logger.With("principal", x.principal, "views", x.views, "upload_bytes", x.uploadBytes, "rows", x.rows, "duration", d)
	switch code {
	case codes.OK:
		log.Info("flight export done", "events", x.stats.Events, "events_used", x.stats.EventsUsed, "spilled_bytes", x.stats.Spilled)
	case codes.Internal, codes.Unknown:
		if x.panicked != nil {
			log = log.With("stack", string(x.panicked.Stack))
		}
		log.Error("flight export failed", "code", code.String(), "err", err)
	default:
		log.Info("flight export refused or stopped", "code", code.String(), "err", err)
	}
}

// openCall counts a call of principal, or fails with RESOURCE_EXHAUSTED
// if the principal has as many open as it may (flightCallsPerExport);
// closeCall ends it.
func (s *FlightServer) openCall(principal string) (closeCall func(), err error) {
	limit := flightCallsPerExport * s.cfg.MaxExports
	s.callsMu.Lock()
	defer s.callsMu.Unlock()
	if s.calls[principal] >= limit {
		who := "calls are open"
		if principal != "" {
			who = fmt.Sprintf("calls of principal %q are open", principal)
		}
		return nil, status.Errorf(codes.ResourceExhausted, "%d %s, as many as one principal may have (twice --flight-max-exports); retry once one ends", limit, who)
	}
	s.calls[principal]++
	return func() {
		s.callsMu.Lock()
		defer s.callsMu.Unlock()
		if s.calls[principal]--; s.calls[principal] == 0 {
			delete(s.calls, principal)
		}
	}, nil
}

// MetaWarning is the key of the training set's schema metadata that says
// why some of its feature columns hold no values of events, when the server
// knows: their views' offline logs have nothing committed.
const MetaWarning = "featurestore.warning"

func (s *FlightServer) exchange(stream flight.FlightService_DoExchangeServer, x *exchange) error {
	ctx := stream.Context()
	x.principal, _ = PrincipalFromContext(ctx)
	closeCall, err := s.openCall(x.principal)
	if err != nil {
		return err
	}
	defer closeCall()
	up := &upload{stream: stream, max: s.cfg.MaxUploadBytes, idle: s.cfg.UploadIdleTimeout}
	defer func() { x.uploadBytes = up.n }()
	// The first message carries the descriptor and the entity table's
	// schema; nothing more is read before the command is checked.
	rdr, err := flight.NewRecordReader(up, ipc.WithAllocator(s.mem))
	if err != nil {
		if errors.Is(err, io.EOF) {
			return status.Error(codes.InvalidArgument, "the stream ended before the entity table's schema: send a command descriptor and the entity table as an Arrow stream")
		}
		return s.uploadStatus(ctx, err)
	}
	defer rdr.Release()
	cmd, err := parseFlightCommand(rdr.LatestFlightDescriptor())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	snap := s.cfg.Registry.Current()
	if snap == nil {
		return status.Error(codes.Unavailable, "no registry version loaded yet")
	}
	opts := export.Options{
		Registry:        snap.Registry,
		Log:             s.cfg.Log,
		Service:         cmd.FeatureService,
		Features:        cmd.Features,
		KeyColumns:      cmd.KeyColumns,
		TimestampColumn: cmd.TimestampColumn,
		Metadata: map[string]string{
			"featurestore.project":          s.cfg.Project,
			"featurestore.registry_version": strconv.FormatInt(snap.Version, 10),
		},
		Memory:      s.cfg.Memory,
		Parallelism: s.cfg.Parallelism,
		Logger:      s.cfg.Logger.With("flight_principal", x.principal),
	}
	// Resolve the features, then authorize, before the schema is checked:
	// a principal learns nothing of the columns or rows of views it may not
	// read, nor whether a name it may not read exists (unresolved).
	var authorize authorizeFunc
	if s.cfg.Auth != nil {
		authorize = s.cfg.Auth.Authorize
	}
	views, err := export.Check(opts, nil)
	if err != nil {
		return unresolved(ctx, authorize, s.cfg.Project, snap.Registry, cmd.FeatureService, cmd.Features, err)
	}
	x.views = views
	if err := authorizeViews(ctx, authorize, s.cfg.Project, cmd.FeatureService, views); err != nil {
		return err
	}
	if _, err := export.Check(opts, rdr.Schema()); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	// A view with nothing committed (a wrong --project or --offline-dir
	// of serve, most often) would give the features of no events: an
	// error unless the command allows it, and then the caller reads why in
	// the schema's metadata, the operator in the log.
	empty, err := export.Uncommitted(ctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Errorf(codes.Internal, "export: %v", err)
	}
	if len(empty) > 0 {
		what := fmt.Sprintf("feature views %s have nothing committed in the offline log of project %q", strings.Join(empty, ", "), s.cfg.Project)
		if !cmd.AllowEmpty {
			opts.Logger.Warn("flight export of views with an empty offline log refused", "views", empty)
			return status.Errorf(codes.FailedPrecondition, "%s: their features would be those of no events; check the server's --project and --offline-dir, or that ingest has committed its log (once a minute); \"allow_empty\": true in the command exports them as null, counts 0", what)
		}
		opts.Metadata[MetaWarning] = what + ": their features are those of no events (null, counts 0)"
		opts.Logger.Warn("flight export of views with an empty offline log", "views", empty)
	}
	// Only a call that sent a valid command and schema, for views its
	// caller may read, takes a slot: any authenticated principal can open
	// calls, and ones that never send must not starve the exports.
	release, err := s.acquire()
	if err != nil {
		return err
	}
	defer release()

	dir, err := os.MkdirTemp(s.cfg.TempDir, "featurestore-flight-")
	if err != nil {
		return status.Errorf(codes.Internal, "temporary directory: %v", err)
	}
	defer os.RemoveAll(dir)
	table := filepath.Join(dir, "entities.arrows")
	if x.rows, err = spool(rdr, table, s.mem); err != nil {
		return s.uploadStatus(ctx, err)
	}
	opts.Entities, opts.EntitiesFormat, opts.TempDir = table, export.FormatArrow, dir
	out := &flightOutput{stream: stream, mem: s.mem}
	opts.Output = out
	x.stats, err = export.Run(ctx, opts)
	errors.As(err, &x.panicked)
	if err == nil {
		err = out.close()
	}
	if err != nil {
		return exportStatus(ctx, err, table)
	}
	return nil
}

// parseFlightCommand reads the FlightCommand of a descriptor, refusing
// unknown fields.
func parseFlightCommand(d *flight.FlightDescriptor) (*FlightCommand, error) {
	if d == nil {
		return nil, errors.New("no flight descriptor: send a descriptor of type CMD with the export command in JSON, with the first message")
	}
	if d.GetType() != flight.DescriptorCMD {
		return nil, fmt.Errorf("flight descriptor of type %s: want CMD, with the export command in JSON", d.GetType())
	}
	dec := json.NewDecoder(bytes.NewReader(d.GetCmd()))
	dec.DisallowUnknownFields()
	var cmd FlightCommand
	if err := dec.Decode(&cmd); err != nil {
		return nil, fmt.Errorf("command: %w (want JSON like {\"feature_service\": \"name\"} or {\"features\": [\"view:feature\"]}, optionally with \"timestamp_column\", \"key_columns\" and \"allow_empty\")", err)
	}
	if dec.More() {
		return nil, errors.New("command: more than one JSON value")
	}
	return &cmd, nil
}

// upload reads the messages of the call, counting their bytes (compressed
// buffers at their uncompressed size) against the bound, and waiting at
// most idle for each.
type upload struct {
	stream flight.FlightService_DoExchangeServer
	n, max int64
	idle   time.Duration
	// timedOut is set once a message did not come in time: the stream's
	// Recv may still be running, and must not be called again.
	timedOut error
}

var (
	// errUploadTooLarge ends an upload larger than its bound.
	errUploadTooLarge = errors.New("entity table too large")
	// errUploadIdle ends an upload whose client sent nothing for the idle
	// timeout.
	errUploadIdle = errors.New("no message of the upload")
)

type received struct {
	fd  *flight.FlightData
	err error
}

func (u *upload) Recv() (*flight.FlightData, error) {
	if u.timedOut != nil {
		return nil, u.timedOut
	}
	// The stream's Recv takes no deadline, and the call's context lives as
	// long as the connection, which keepalive pings hold open. So it runs
	// on its own goroutine; after a timeout the handler returns, gRPC
	// cancels the stream, and that Recv returns and the goroutine ends.
	got := make(chan received, 1)
	go func() {
		fd, err := u.stream.Recv()
		got <- received{fd, err}
	}()
	timer := time.NewTimer(u.idle)
	defer timer.Stop()
	var r received
	select {
	case r = <-got:
	case <-timer.C:
		u.timedOut = fmt.Errorf("%w for %v, the upload idle timeout (--flight-upload-idle-timeout): send the command and the entity table without pausing", errUploadIdle, u.idle)
		return nil, u.timedOut
	}
	fd, err := r.fd, r.err
	if err != nil {
		return nil, err
	}
	// arrow-go trusts the sizes in the message's metadata: unchecked, a
	// few bytes could make it allocate gigabytes, a crash of the server.
	// A compressed body is counted at the size its buffers claim once
	// decompressed, before arrow-go decompresses it: counted as sent, a
	// few kilobytes of ZSTD could expand to gigabytes within the bound.
	body := int64(len(fd.DataBody))
	if len(fd.DataHeader) > 0 {
		decoded, err := offline.CheckIPCMessageSize(fd.DataHeader, fd.DataBody)
		if err != nil {
			return nil, err
		}
		body = max(body, decoded)
	}
	u.n += int64(len(fd.DataHeader)+len(fd.AppMetadata)) + body
	if u.n > u.max {
		return nil, fmt.Errorf("%w: more than the %d bytes a call may send, counting compressed buffers at their uncompressed size", errUploadTooLarge, u.max)
	}
	return fd, nil
}

// uploadStatus turns an error reading the upload into a status.
func (s *FlightServer) uploadStatus(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, errUploadTooLarge):
		return status.Errorf(codes.ResourceExhausted, "%v", err)
	case errors.Is(err, errUploadIdle):
		return status.Errorf(codes.DeadlineExceeded, "%v", err)
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.OK && st.Code() != codes.Unknown {
		return st.Err()
	}
	return status.Errorf(codes.InvalidArgument, "read the entity table: %v", err)
}

// spool writes the entity table of the call to path, an Arrow IPC stream,
// and returns its rows: the export reads it twice.
func spool(rdr *flight.Reader, path string, mem memory.Allocator) (int64, error) {
	fh, err := os.Create(path)
	if err != nil {
		return 0, fmt.Errorf("spool the entity table: %w", err)
	}
	defer fh.Close()
	bw := bufio.NewWriterSize(fh, 1<<20)
	w := ipc.NewWriter(bw, ipc.WithSchema(rdr.Schema()), ipc.WithAllocator(mem))
	var rows int64
	for rdr.Next() {
		rec := rdr.RecordBatch()
		if err := w.Write(rec); err != nil {
			return rows, fmt.Errorf("spool the entity table: %w", err)
		}
		rows += rec.NumRows()
	}
	if err := rdr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return rows, err
	}
	if err := w.Close(); err != nil {
		return rows, fmt.Errorf("spool the entity table: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return rows, fmt.Errorf("spool the entity table: %w", err)
	}
	return rows, fh.Close()
}

// flightOutput sends the export's output to the client.
type flightOutput struct {
	stream flight.FlightService_DoExchangeServer
	mem    memory.Allocator
	w      *flight.Writer
}

func (o *flightOutput) Begin(schema *arrow.Schema) error {
	o.w = flight.NewRecordWriter(o.stream, ipc.WithSchema(schema), ipc.WithAllocator(o.mem))
	return nil
}

func (o *flightOutput) Write(rec arrow.RecordBatch) error {
	n := rec.NumRows()
	per := min(n, flightSendRows)
	if size := export.BatchBytes(rec); size > flightSendBytes {
		per = max(min(per, n*flightSendBytes/size), 1)
	}
	if per == n {
		return o.w.Write(rec)
	}
	for i := int64(0); i < n; i += per {
		part := rec.NewSlice(i, min(i+per, n))
		err := o.w.Write(part)
		part.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// close ends the stream, sending the schema if no batch was sent.
func (o *flightOutput) close() error {
	if o.w == nil {
		return nil
	}
	return o.w.Close()
}

// exportStatus turns an error of export.Run into a status. The entity
// table's temporary path means the rows the client sent; other errors are
// the server's.
func exportStatus(ctx context.Context, err error, table string) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return st.Err()
	}
	if msg := err.Error(); strings.Contains(msg, table) {
		return status.Error(codes.InvalidArgument, strings.ReplaceAll(msg, table, "entity table"))
	}
	return status.Errorf(codes.Internal, "export: %v", err)
}

// FlightMetrics are the metrics of a FlightServer. A nil *FlightMetrics
// records nothing.
type FlightMetrics struct {
	exports  *prometheus.CounterVec
	duration prometheus.Histogram
	inFlight prometheus.Gauge
	rows     prometheus.Counter
	upload   prometheus.Counter
}

// NewFlightMetrics registers the Flight export metrics with reg.
func NewFlightMetrics(reg prometheus.Registerer) *FlightMetrics {
	m := &FlightMetrics{
		exports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_serving_flight_exports_total",
			Help: "Flight training exports, by gRPC code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "featurestore_serving_flight_export_duration_seconds",
			Help:    "Duration of Flight training exports that succeeded, upload included.",
			Buckets: prometheus.ExponentialBuckets(0.1, 3, 10),
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "featurestore_serving_flight_exports_in_flight",
			Help: "Flight training exports running now.",
		}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestore_serving_flight_export_rows_total",
			Help: "Entity rows of Flight training exports that succeeded.",
		}),
		upload: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestore_serving_flight_upload_bytes_total",
			Help: "Bytes of entity tables received by Flight training exports.",
		}),
	}
	// Every code's series starts at 0, so that an alert on the rate of
	// failed exports sees a series before the first one.
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		m.exports.WithLabelValues(c.String())
	}
	reg.MustRegister(m.exports, m.duration, m.inFlight, m.rows, m.upload)
	return m
}

func (m *FlightMetrics) running(d float64) {
	if m != nil {
		m.inFlight.Add(d)
	}
}

func (m *FlightMetrics) observe(code codes.Code, d time.Duration, x *exchange) {
	if m == nil {
		return
	}
	m.exports.WithLabelValues(code.String()).Inc()
	m.upload.Add(float64(x.uploadBytes))
	if code == codes.OK {
		m.duration.Observe(d.Seconds())
		m.rows.Add(float64(x.rows))
	}
}
