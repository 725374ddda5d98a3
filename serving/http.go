package serving

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// Routes of the HTTP server.
const (
	// HTTPLookupPath answers POST with a GetOnlineFeaturesRequest in JSON
	// (the proto3 JSON mapping) with the GetOnlineFeaturesResponse in JSON.
	HTTPLookupPath = "/v1/features:get"
	// HTTPHealthPath answers GET with 200 when the server can answer
	// lookups, 503 when it cannot.
	HTTPHealthPath = "/healthz"
	// HTTPTimeoutHeader sets a lookup's deadline, as a duration such as
	// 250ms or 2s, as a gRPC client's deadline does; without it the
	// server's default deadline applies.
	HTTPTimeoutHeader = "X-Featurestore-Timeout"
)

// Defaults of HTTPConfig.
const (
	DefaultMaxBodyBytes = 4 << 20
	// Bounds on how long a client may take to send a request and read its
	// response, so slow or stalled clients cannot hold connections forever.
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 30 * time.Second
	httpWriteTimeout      = 30 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	// httpMaxLookupTimeout caps what HTTPTimeoutHeader may ask for: a
	// lookup running past the write timeout would lose its connection
	// instead of answering 503 UNAVAILABLE.
	httpMaxLookupTimeout = httpWriteTimeout - time.Second
)

// The method labels of lookups in the serving request duration histogram,
// over gRPC and HTTP.
const (
	grpcLookupMethod = "GetOnlineFeatures"
	httpLookupMethod = "POST " + HTTPLookupPath
)

// jsonIn decodes requests. Responses are written by appendResponseJSON.
var jsonIn = protojson.UnmarshalOptions{}

// HTTPConfig configures an HTTPServer.
type HTTPConfig struct {
	// Addr is the address to listen on, host:port. Ignored when Listener
	// is set.
	Addr string
	// Listener, if set, is served instead of listening on Addr.
	Listener net.Listener
	// TLS, if set, makes the server speak HTTPS with this configuration
	// (certificates, client certificate policy).
	TLS *tls.Config
	// MaxBodyBytes bounds the size of a lookup request body; a larger one
	// is refused with 413. DefaultMaxBodyBytes when zero.
	MaxBodyBytes int64
	// ShutdownTimeout is how long Run waits for requests in flight to
	// finish once ctx ends, before closing their connections;
	// DefaultShutdownTimeout when zero, none when negative
	// (NoShutdownGrace).
	ShutdownTimeout time.Duration
	// Ping checks that the online store answers. HTTPHealthPath reports
	// not ready while it fails; nil leaves the store out of the check.
	Ping func(ctx context.Context) error
	// Middleware, if set, wraps the lookup route (HTTPLookupPath) and the
	// answer to unknown paths, but not HTTPHealthPath, so that probes need
	// no credentials. It may refuse a request with WriteHTTPError.
	Middleware func(http.Handler) http.Handler
	// Interceptor, if set, runs around every lookup exactly as a gRPC
	// unary interceptor runs around GetOnlineFeatures, so one interceptor
	// serves both protocols. It sees the request's Authorization header as
	// the incoming metadata "authorization", and the client's address and
	// TLS state (credentials.TLSInfo) through peer.FromContext.
	Interceptor grpc.UnaryServerInterceptor
	Logger      *slog.Logger
}

// HTTPServer answers the lookups of an OnlineService as JSON over HTTP, for
// curl and for languages without gRPC tooling. Every lookup goes through
// the same code as the gRPC method; only the encoding differs.
type HTTPServer struct {
	cfg     HTTPConfig
	svc     *OnlineService
	handler http.Handler
}

// NewHTTPServer returns the HTTP server of svc; start it with Run.
func NewHTTPServer(svc *OnlineService, cfg HTTPConfig) *HTTPServer {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &HTTPServer{cfg: cfg, svc: svc}
	wrap := func(h http.Handler) http.Handler { return h }
	if cfg.Middleware != nil {
		wrap = cfg.Middleware
	}
	mux := http.NewServeMux()
	mux.Handle(HTTPLookupPath, wrap(http.HandlerFunc(s.serveLookup)))
	mux.HandleFunc(HTTPHealthPath, s.serveHealth)
	mux.Handle("/", wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteHTTPError(w, &httpError{http.StatusNotFound, codes.NotFound,
			fmt.Sprintf("no route %s: lookups are POST %s, health is GET %s", r.URL.Path, HTTPLookupPath, HTTPHealthPath)})
	})))
	s.handler = mux
	return s
}

// Handler returns the server's routes, with Middleware applied, for serving
// from another http.Server.
func (s *HTTPServer) Handler() http.Handler { return s.handler }

// Run serves until ctx ends, then shuts down gracefully: it stops
// accepting connections, lets requests in flight finish for up to
// ShutdownTimeout and closes the rest.
func (s *HTTPServer) Run(ctx context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("http listener on %s: %w", s.cfg.Addr, err)
		}
	}
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.cfg.TLS,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		ErrorLog:          httpErrorLog(s.cfg.Logger),
	}
	scheme := "http"
	if s.cfg.TLS != nil {
		scheme = "https"
	}
	s.cfg.Logger.Info("http listening", "addr", scheme+"://"+ln.Addr().String())
	errc := make(chan error, 1)
	go func() {
		if s.cfg.TLS != nil {
			// The certificates come from TLSConfig.
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	start := time.Now()
	if s.cfg.ShutdownTimeout < 0 {
		srv.Close() // no grace period
	} else {
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			s.cfg.Logger.Warn("http graceful shutdown timed out; closing connections", "timeout", s.cfg.ShutdownTimeout)
			srv.Close()
		}
	}
	<-errc
	s.cfg.Logger.Info("http server stopped", "duration", time.Since(start))
	return nil
}

// clientCaused are the prefixes of the lines net/http logs about a single
// connection that its client can cause at will: a failed TLS handshake (no
// client certificate under mutual TLS, bytes that are not TLS), a broken
// HTTP/2 preface or connection. They go to debug level, as failed
// authentication does, so that anyone who can connect cannot flood the log.
var clientCaused = []string{
	"http: TLS handshake error",
	"http2: server: error reading preface",
	"http2: server connection error",
	"http2: server closing client connection",
	"http2: received GOAWAY",
	"timeout waiting for SETTINGS frames",
	"timeout waiting for PING response",
}

// httpErrorLog returns the http.Server.ErrorLog that writes to logger: lines
// a client can cause at debug level, the others (a failed Accept, a panic
// in a handler) at warn level.
func httpErrorLog(logger *slog.Logger) *log.Logger {
	return log.New(httpErrorWriter{logger}, "", 0)
}

type httpErrorWriter struct{ log *slog.Logger }

func (w httpErrorWriter) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	for _, prefix := range clientCaused {
		if strings.HasPrefix(line, prefix) {
			w.log.Debug("http connection failed", "err", line)
			return len(p), nil
		}
	}
	w.log.Warn("http server error", "err", line)
	return len(p), nil
}

// serveLookup answers one lookup. Requests that never reach the service
// (wrong method, content type or size, malformed JSON) are counted in the
// request duration histogram too, so a misbehaving client shows.
func (s *HTTPServer) serveLookup(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req *pb.GetOnlineFeaturesRequest
	r, cancel, err := withTimeout(r, s.svc.opts.DefaultDeadline)
	defer cancel()
	if err == nil {
		req, err = s.decode(w, r)
	}
	buf := responseBuffers.Get().(*[]byte)
	defer func() {
		if cap(*buf) <= maxPooledResponse {
			responseBuffers.Put(buf)
		}
	}()
	if err == nil {
		var resp *pb.GetOnlineFeaturesResponse
		if resp, err = s.call(r, req); err == nil {
			if *buf, err = appendResponseJSON((*buf)[:0], resp); err != nil {
				err = status.Errorf(codes.Internal, "encode response: %v", err)
			}
		}
	}
	if m := s.svc.opts.Metrics; m != nil {
		m.duration.WithLabelValues(httpLookupMethod, errorCode(err).String()).Observe(time.Since(start).Seconds())
		if req != nil {
			m.entities.Observe(float64(len(req.GetEntities())))
		}
	}
	if err != nil {
		WriteHTTPError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(*buf)
}

// withTimeout gives r the deadline its HTTPTimeoutHeader asks for, at most
// httpMaxLookupTimeout; without the header, the lookup's default deadline
// def applies, cut to httpMaxLookupTimeout too.
func withTimeout(r *http.Request, def time.Duration) (*http.Request, context.CancelFunc, error) {
	v := r.Header.Get(HTTPTimeoutHeader)
	if v == "" && def <= httpMaxLookupTimeout {
		return r, func() {}, nil // the lookup applies it
	}
	d := def
	if v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			return r, func() {}, status.Errorf(codes.InvalidArgument, "%s: %q is not a positive duration such as 250ms or 2s", HTTPTimeoutHeader, v)
		}
	}
	if d > httpMaxLookupTimeout {
		// The server's cap ends the lookup, not the client's deadline: an
		// online store that has not answered by then is UNAVAILABLE.
		ctx, cancel := context.WithTimeoutCause(r.Context(), httpMaxLookupTimeout, errServerDeadline)
		return r.WithContext(ctx), cancel, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return r.WithContext(ctx), cancel, nil
}

// responseBuffers keeps the buffers responses are encoded into; buffers
// grown past maxPooledResponse by a huge response are left to the GC.
var responseBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxPooledResponse = 1 << 20

// decode reads the request of r, refusing what is not a JSON
// GetOnlineFeaturesRequest within the size bound.
func (s *HTTPServer) decode(w http.ResponseWriter, r *http.Request) (*pb.GetOnlineFeaturesRequest, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, &httpError{http.StatusMethodNotAllowed, codes.Unimplemented,
			fmt.Sprintf("method %s not allowed: %s takes POST", r.Method, HTTPLookupPath)}
	}
	if err := checkJSON(r.Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	max := s.cfg.MaxBodyBytes
	tooLarge := &httpError{http.StatusRequestEntityTooLarge, codes.ResourceExhausted,
		fmt.Sprintf("request body larger than %d bytes", max)}
	if r.ContentLength > max {
		return nil, tooLarge
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, max)); err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return nil, tooLarge
		}
		return nil, &httpError{http.StatusBadRequest, codes.InvalidArgument, fmt.Sprintf("read request body: %v", err)}
	}
	if buf.Len() == 0 {
		return nil, status.Error(codes.InvalidArgument, "empty request body: send a GetOnlineFeaturesRequest in JSON")
	}
	req := &pb.GetOnlineFeaturesRequest{}
	if err := jsonIn.Unmarshal(buf.Bytes(), req); err != nil {
		// A null Value, which protojson refuses, is gRPC's empty Value.
		if !nullValues(buf.Bytes()) || jsonIn.Unmarshal(buf.Bytes(), req) != nil {
			return nil, status.Errorf(codes.InvalidArgument, "malformed GetOnlineFeaturesRequest: %s", protoErrorText(err))
		}
	}
	return req, nil
}

// checkJSON accepts application/json, in UTF-8 if a charset is given.
func checkJSON(contentType string) error {
	if contentType == "" {
		return &httpError{http.StatusUnsupportedMediaType, codes.InvalidArgument,
			"no Content-Type: send the request as application/json"}
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/json" {
		return &httpError{http.StatusUnsupportedMediaType, codes.InvalidArgument,
			fmt.Sprintf("Content-Type %q: send the request as application/json", contentType)}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return &httpError{http.StatusUnsupportedMediaType, codes.InvalidArgument,
			fmt.Sprintf("Content-Type %q: JSON must be UTF-8", contentType)}
	}
	return nil
}

// protoErrorText is the message of a protojson error without its "proto:"
// prefix, which protobuf-go spells with a random kind of space on purpose.
func protoErrorText(err error) string {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "proto:"); ok {
		msg = strings.TrimLeft(rest, " \u00a0")
	}
	return msg
}

var lookupInfo = &grpc.UnaryServerInfo{FullMethod: pb.OnlineService_GetOnlineFeatures_FullMethodName}

// call runs the lookup through the service's one implementation, inside
// the Interceptor if there is one. The request context carries no deadline,
// so the service applies its default one, as for a gRPC client that sets
// none; a client that goes away cancels the lookup.
func (s *HTTPServer) call(r *http.Request, req *pb.GetOnlineFeaturesRequest) (*pb.GetOnlineFeaturesResponse, error) {
	if s.cfg.Interceptor == nil {
		return s.svc.getOnlineFeatures(r.Context(), req)
	}
	out, err := s.cfg.Interceptor(grpcContext(r), req, lookupInfo, func(ctx context.Context, req any) (any, error) {
		return s.svc.getOnlineFeatures(ctx, req.(*pb.GetOnlineFeaturesRequest))
	})
	if err != nil {
		return nil, err
	}
	resp, ok := out.(*pb.GetOnlineFeaturesResponse)
	if !ok {
		return nil, status.Errorf(codes.Internal, "interceptor returned a %T", out)
	}
	return resp, nil
}

// grpcContext gives r's context what a gRPC interceptor looks at: the
// authorization metadata and the peer.
func grpcContext(r *http.Request) context.Context {
	ctx := r.Context()
	if a := r.Header.Values("Authorization"); len(a) > 0 {
		ctx = metadata.NewIncomingContext(ctx, metadata.MD{"authorization": a})
	}
	p := &peer.Peer{}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		p.Addr = net.TCPAddrFromAddrPort(ap)
	}
	if la, ok := ctx.Value(http.LocalAddrContextKey).(net.Addr); ok {
		p.LocalAddr = la
	}
	if r.TLS != nil {
		p.AuthInfo = credentials.TLSInfo{State: *r.TLS, CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}
	}
	return peer.NewContext(ctx, p)
}

// serveHealth reports readiness: a registry version is loaded and the
// online store answers Ping within the default deadline.
func (s *HTTPServer) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		WriteHTTPError(w, &httpError{http.StatusMethodNotAllowed, codes.Unimplemented,
			fmt.Sprintf("method %s not allowed: %s takes GET", r.Method, HTTPHealthPath)})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.svc.opts.DefaultDeadline)
	snap, err := s.svc.ready(ctx, s.cfg.Ping)
	cancel()
	if err != nil {
		WriteHTTPError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Status          string `json:"status"`
		RegistryVersion int64  `json:"registry_version"`
	}{"ok", snap.Version})
}

// httpError is a refusal decided by HTTP itself, with a status of its own
// and the gRPC code its JSON body names.
type httpError struct {
	status int
	code   codes.Code
	msg    string
}

func (e *httpError) Error() string { return e.msg }

// errorCode is the gRPC code of err: OK for nil.
func errorCode(err error) codes.Code {
	var he *httpError
	if errors.As(err, &he) {
		return he.code
	}
	return status.Code(err)
}

// WriteHTTPError answers with err as the JSON body
// {"code": "INVALID_ARGUMENT", "message": "..."}. The HTTP status follows
// from err's gRPC status code (status.Code): INVALID_ARGUMENT 400,
// NOT_FOUND 404, UNAUTHENTICATED 401, PERMISSION_DENIED 403,
// RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, any other
// 500. An error without a gRPC status is INTERNAL, and its text is not
// shown to the client.
func WriteHTTPError(w http.ResponseWriter, err error) {
	code, msg, httpStatus := codes.Internal, "internal error", http.StatusInternalServerError
	var he *httpError
	if errors.As(err, &he) {
		code, msg, httpStatus = he.code, he.msg, he.status
	} else if st, ok := status.FromError(err); ok && st.Code() != codes.OK {
		code, msg, httpStatus = st.Code(), st.Message(), httpStatusOf(st.Code())
	}
	writeJSON(w, httpStatus, struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{codeName(code), msg})
}

func writeJSON(w http.ResponseWriter, httpStatus int, v any) {
	b, _ := json.Marshal(v) // plain structs of strings and numbers
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(httpStatus)
	w.Write(append(b, '\n'))
}

func httpStatusOf(c codes.Code) int {
	switch c {
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// codeNames are the canonical names of the gRPC codes (google.rpc.Code),
// which codes.Code.String spells in camel case.
var codeNames = [...]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

func codeName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "UNKNOWN"
}
