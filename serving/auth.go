package serving

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionalphapb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/featurestore/featurestore/featurestore/reload"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// AuthOptions configures Auth.
type AuthOptions struct {
	// PolicyFile is the YAML access policy: principals, their credentials
	// and their grants (the format is described in policy.go and in
	// docs/operations.md).
	PolicyFile string
	// ReloadInterval is the least time between two looks at the policy file;
	// DefaultReloadInterval when zero.
	ReloadInterval time.Duration
	// Registerer, if set, gets the auth metrics.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Auth authenticates calls and authorizes what they read, denying whatever
// the policy does not grant.
//
// A call authenticates with a bearer token (gRPC metadata or HTTP header
// "authorization: Bearer <token>") or, when the server requires client
// certificates, with its verified certificate. A token, when sent, decides:
// a wrong token fails the call even over a valid certificate. Which calls
// need what:
//
//   - health checks (grpc.health.v1.Health) are open to all, so that load
//     balancers and orchestrators need no credentials;
//   - server reflection needs an authenticated principal, whatever its grants:
//     it lists the API, not data;
//   - GetOnlineFeatures needs a principal granted every feature view the
//     request reads (OnlineOptions.Authorize, set to Auth.Authorize);
//   - the Flight training export (DoExchange on a FlightServer) needs a
//     principal granted every feature view the export reads;
//   - any other method is denied.
//
// Calls without valid credentials get UNAUTHENTICATED, with the same message
// for an unknown, revoked or wrong token; calls reading a view not granted get
// PERMISSION_DENIED naming the view and the principal. The policy file is
// looked at during calls, at most once per ReloadInterval, and takes effect
// when its content changes; a change that does not parse is logged and
// counted, and the previous policy stays in force.
//
// On a Server, set ServerConfig.Auth. On an HTTPServer, set
// HTTPConfig.Interceptor to UnaryInterceptor and Middleware to
// HTTPMiddleware: HTTP lookups then get the same decisions, as 401 and 403.
type Auth struct {
	opts    AuthOptions
	policy  *reload.Value[policy]
	denied  *prometheus.CounterVec
	reloads *prometheus.CounterVec
}

// access is what a method requires; the zero value denies it.
type access int

const (
	accessDenied access = iota
	accessOpen
	accessPrincipal // any authenticated principal
	accessViews     // a principal, and the service authorizes the views read
)

var methodAccess = map[string]access{
	healthpb.Health_Check_FullMethodName:                                   accessOpen,
	healthpb.Health_List_FullMethodName:                                    accessOpen,
	healthpb.Health_Watch_FullMethodName:                                   accessOpen,
	reflectionpb.ServerReflection_ServerReflectionInfo_FullMethodName:      accessPrincipal,
	reflectionalphapb.ServerReflection_ServerReflectionInfo_FullMethodName: accessPrincipal,
	pb.OnlineService_GetOnlineFeatures_FullMethodName:                      accessViews,
	flightExchangeMethod:                                                   accessViews,
}

// Reasons a call is denied: the values of the reason label.
const (
	reasonMissing       = "missing_credentials"
	reasonMalformed     = "malformed_credentials"
	reasonInvalidToken  = "invalid_token"
	reasonUnknownCert   = "unknown_certificate"
	reasonMethod        = "method_not_allowed"
	reasonNotGranted    = "not_granted"
	reasonNotAuthorized = "not_authorized"
)

// NewAuth loads the policy file; an error lists every problem in it with its
// line and column.
func NewAuth(opts AuthOptions) (*Auth, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Auth{
		opts: opts,
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_serving_auth_denied_total",
			Help: "Calls denied by authentication or authorization, by protocol (grpc or http) and reason.",
		}, []string{"protocol", "reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_serving_auth_policy_reloads_total",
			Help: "Reloads of the changed auth policy file, by result (ok or error).",
		}, []string{"result"}),
	}
	parse := func(data [][]byte) (*policy, error) { return parsePolicy(opts.PolicyFile, data[0]) }
	pol, err := reload.New([]string{opts.PolicyFile}, opts.ReloadInterval, parse, a.reloaded)
	if err != nil {
		return nil, fmt.Errorf("auth policy: %w", err)
	}
	a.policy = pol
	// Pre-create the series, so that a dashboard shows zero rather than
	// nothing before the first denial or reload, and rate() sees the first.
	for _, proto := range []string{"grpc", "http"} {
		for _, r := range []string{reasonMissing, reasonMalformed, reasonInvalidToken, reasonUnknownCert, reasonMethod, reasonNotGranted, reasonNotAuthorized} {
			a.denied.WithLabelValues(proto, r)
		}
	}
	for _, r := range reloadResults {
		a.reloads.WithLabelValues(r)
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(a.denied, a.reloads)
	}
	a.opts.Logger.Info("auth policy loaded", "file", opts.PolicyFile, "principals", len(pol.Current().principals))
	return a, nil
}

func (a *Auth) reloaded(pol *policy, err error) {
	if err != nil {
		a.reloads.WithLabelValues(reloadError).Inc()
		a.opts.Logger.Error("auth policy changed but does not load; the previous policy stays in force", "file", a.opts.PolicyFile, "err", err)
		return
	}
	a.reloads.WithLabelValues(reloadOK).Inc()
	a.opts.Logger.Info("auth policy reloaded", "file", a.opts.PolicyFile, "principals", len(pol.principals))
}

// caller is the authentication of one call, kept in its context.
type caller struct {
	p        *principal
	protocol string
	// pol is the policy p was found in: a call whose message arrives
	// after the policy changed is authenticated again (tapHandle).
	pol *policy
	// authorized is set by Authorize. The service calls it on the goroutine
	// of the call, before the interceptor reads it.
	authorized bool
}

type callerKey struct{}

// PrincipalFromContext returns the name of the principal a call was
// authenticated as, if any.
func PrincipalFromContext(ctx context.Context) (string, bool) {
	c, ok := ctx.Value(callerKey{}).(*caller)
	if !ok {
		return "", false
	}
	return c.p.name, true
}

// authenticate finds the principal of a call from its authorization values
// (header or metadata) and its verified client certificate, if any. The error
// is an UNAUTHENTICATED status that tells no more than needed: every wrong
// token gets the same message.
func (a *Auth) authenticate(protocol string, authz []string, cert *x509.Certificate) (*caller, error) {
	pol := a.policy.Get()
	var p *principal
	switch {
	case len(authz) > 1:
		return nil, a.unauthenticated(protocol, reasonMalformed, "more than one authorization value")
	case len(authz) == 1:
		token, ok := bearerToken(authz[0])
		if !ok {
			return nil, a.unauthenticated(protocol, reasonMalformed, `authorization: want "Bearer <token>"`)
		}
		if p = pol.byToken(token); p == nil {
			return nil, a.unauthenticated(protocol, reasonInvalidToken, "invalid credentials")
		}
	case cert != nil:
		var n int
		if p, n = pol.byCertificate(cert); p == nil {
			a.opts.Logger.Debug("client certificate names no single principal", "subject", cert.Subject.String(), "principals", n)
			return nil, a.unauthenticated(protocol, reasonUnknownCert, "the client certificate identifies no principal")
		}
	default:
		return nil, a.unauthenticated(protocol, reasonMissing, "authentication required: send authorization: Bearer <token>, or a client certificate")
	}
	return &caller{p: p, protocol: protocol, pol: pol}, nil
}

func (a *Auth) unauthenticated(protocol, reason, msg string) error {
	a.denied.WithLabelValues(protocol, reason).Inc()
	a.opts.Logger.Debug("call denied", "protocol", protocol, "reason", reason)
	return status.Error(codes.Unauthenticated, msg)
}

// bearerToken returns the token of an "authorization: Bearer <token>" value.
func bearerToken(v string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(v), " ")
	token = strings.TrimSpace(token)
	return token, ok && strings.EqualFold(scheme, "bearer") && token != ""
}

// Authorize lets a call read the feature views of the project only if its
// principal is granted all of them; it is the OnlineOptions.Authorize of a
// service behind Auth. A call that did not go through Auth's authentication
// is UNAUTHENTICATED; a view not granted is PERMISSION_DENIED naming it.
func (a *Auth) Authorize(ctx context.Context, project string, views []string) error {
	c, ok := ctx.Value(callerKey{}).(*caller)
	if !ok {
		return a.unauthenticated("grpc", reasonMissing, "authentication required")
	}
	for _, v := range views {
		if !c.p.allowed(project, v) {
			a.denied.WithLabelValues(c.protocol, reasonNotGranted).Inc()
			a.opts.Logger.Info("call denied", "protocol", c.protocol, "reason", reasonNotGranted, "principal", c.p.name, "project", project, "view", v)
			return status.Errorf(codes.PermissionDenied, "principal %q may not read feature view %q of project %q", c.p.name, v, project)
		}
	}
	c.authorized = true
	return nil
}

// check authenticates a gRPC call to method and decides whether it may
// proceed; it returns the context the handler gets.
func (a *Auth) check(ctx context.Context, method string) (context.Context, *caller, access, error) {
	acc := methodAccess[method]
	if acc == accessOpen {
		return ctx, nil, acc, nil
	}
	protocol := "grpc"
	if ctx.Value(http.ServerContextKey) != nil {
		// A lookup over HTTP that HTTPServer runs through the interceptor.
		protocol = "http"
	}
	// The caller the tap found from the call's headers, unless the policy
	// changed since (the client chooses when it sends the message after
	// its headers: a token revoked meanwhile must not be honoured).
	c, ok := ctx.Value(tappedKey{}).(*caller)
	if !ok || c.pol != a.policy.Get() {
		var err error
		if c, err = a.authenticateCall(ctx, protocol); err != nil {
			return nil, nil, acc, err
		}
	}
	if acc == accessDenied {
		a.denied.WithLabelValues(protocol, reasonMethod).Inc()
		a.opts.Logger.Info("call denied", "protocol", protocol, "reason", reasonMethod, "principal", c.p.name, "method", method)
		return nil, nil, acc, status.Errorf(codes.PermissionDenied, "method %s is not allowed when authentication is on", method)
	}
	return context.WithValue(ctx, callerKey{}, c), c, acc, nil
}

// authenticateCall authenticates a call from the authorization metadata of
// ctx and the verified client certificate of its connection, if any.
func (a *Auth) authenticateCall(ctx context.Context, protocol string) (*caller, error) {
	var cert *x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			cert = verifiedCert(&ti.State)
		}
	}
	return a.authenticate(protocol, metadata.ValueFromIncomingContext(ctx, "authorization"), cert)
}

// tappedKey keeps the caller that tapHandle authenticated in the call's
// context, so that the interceptor does not hash its token again.
type tappedKey struct{}

// tapHandle is the grpc.InTapHandle of a server behind Auth: it
// authenticates a call from its headers and its connection, as soon as its
// headers arrive, and refuses it with UNAUTHENTICATED before any message is
// read. gRPC decodes a unary request before interceptors run, so without it
// a caller with no credentials could make the server receive and decode up
// to the message limit per call, as many calls at a time as a connection
// may hold. It runs on the connection's reading goroutine, which
// authentication does not block: a token's hash, and the policy file looked
// at most once per ReloadInterval. Which methods a principal may call is
// still the interceptors' to decide; health checks pass.
func (a *Auth) tapHandle(ctx context.Context, info *tap.Info) (context.Context, error) {
	if methodAccess[info.FullMethodName] == accessOpen {
		return ctx, nil
	}
	c, err := a.authenticateCall(ctx, "grpc")
	if err != nil {
		return ctx, err
	}
	return context.WithValue(ctx, tappedKey{}, c), nil
}

// UnaryInterceptor returns the interceptor that enforces the policy on
// unary calls.
func (a *Auth) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, c, acc, err := a.check(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		resp, err := handler(ctx, req)
		if err == nil && acc == accessViews && !c.authorized {
			// Fail closed: a service wired without OnlineOptions.Authorize
			// must not serve every view to every principal.
			a.denied.WithLabelValues(c.protocol, reasonNotAuthorized).Inc()
			a.opts.Logger.Error("call not authorized by the service: set OnlineOptions.Authorize", "method", info.FullMethod)
			return nil, status.Error(codes.PermissionDenied, "the request was not authorized")
		}
		return resp, err
	}
}

// StreamInterceptor returns the interceptor that enforces the policy on
// streaming calls (reflection, health watches, Flight exports).
func (a *Auth) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, c, acc, err := a.check(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		if acc != accessViews {
			return handler(srv, &authStream{ServerStream: ss, ctx: ctx})
		}
		// Streamed data cannot be withdrawn once sent: the stream sends
		// nothing until the service has called Authorize, and fails closed
		// if it never does.
		err = handler(srv, &authStream{ServerStream: ss, ctx: ctx, views: c})
		if err == nil && !c.authorized {
			a.denied.WithLabelValues(c.protocol, reasonNotAuthorized).Inc()
			a.opts.Logger.Error("call not authorized by the service: it must call Auth.Authorize", "method", info.FullMethod)
			return status.Error(codes.PermissionDenied, "the request was not authorized")
		}
		return err
	}
}

type authStream struct {
	grpc.ServerStream
	ctx context.Context
	// views, if set, is the caller of a method that reads feature views:
	// nothing is sent before it is authorized.
	views *caller
}

func (s *authStream) Context() context.Context { return s.ctx }

func (s *authStream) SendMsg(m any) error {
	if s.views != nil && !s.views.authorized {
		return status.Error(codes.PermissionDenied, "the request was not authorized")
	}
	return s.ServerStream.SendMsg(m)
}

// HTTPMiddleware is the HTTPConfig.Middleware that goes with
// HTTPConfig.Interceptor set to UnaryInterceptor: it adds the challenge
// "WWW-Authenticate: Bearer" (RFC 6750) to 401 answers, and authenticates
// a lookup from its headers and client certificate before its body is
// read, so that a caller without credentials cannot make the server read
// and parse up to the body limit (4 MiB by default) of JSON per request.
// The interceptor then authenticates and authorizes the lookup as a gRPC
// call.
func (a *Auth) HTTPMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w = &challengeWriter{ResponseWriter: w}
		if r.URL.Path == HTTPLookupPath {
			if _, err := a.authenticate("http", r.Header.Values("Authorization"), verifiedCert(r.TLS)); err != nil {
				WriteHTTPError(w, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// verifiedCert returns the client certificate of a connection that TLS
// verified, or nil.
func verifiedCert(state *tls.ConnectionState) *x509.Certificate {
	if state == nil || len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return nil
	}
	return state.VerifiedChains[0][0]
}

type challengeWriter struct{ http.ResponseWriter }

func (w *challengeWriter) WriteHeader(code int) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="featurestore"`)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *challengeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
