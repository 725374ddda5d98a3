package serving

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// authPolicy is the policy of the auth tests for project.
func authPolicy(project string, revoked ...string) string {
	token := func(name string) string {
		for _, r := range revoked {
			if r == name {
				return ""
			}
		}
		return hashToken("tok-" + name)
	}
	return fmt.Sprintf(`
principals:
  - name: scorer
    token_sha256: [%s, %s]
    grants:
      - {project: %s, views: [card_txn]}
  - name: admin
    token_sha256: [%s]
    grants:
      - {project: "*", views: ["*"]}
  - name: elsewhere
    token_sha256: [%s]
    grants:
      - {project: other-project, views: ["*"]}
  - name: nogrants
    token_sha256: [%s]
  - name: pairs-by-cert
    certificates: [{uri: "spiffe://test/pairs"}, {cn: pairs}]
    grants:
      - {project: %s, views: [pair_txn]}
  - name: risk
    token_sha256: [%s]
    grants:
      - {project: %s, views: [txn_risk, card_txn]}
`, hashToken("tok-scorer-old"), token("scorer"), project, hashToken("tok-admin"), hashToken("tok-elsewhere"), hashToken("tok-nogrants"), project, hashToken("tok-risk"), project)
}

// authFixture serves one service behind one Auth twice: over TLS, where
// clients authenticate with tokens, and over mutual TLS, where they may
// authenticate with their certificate.
type authFixture struct {
	project    string
	policyFile string
	reg        *prometheus.Registry
	serverCA   *testCA
	clientCA   *testCA
	tlsAddr    string
	mtlsAddr   string
	// The HTTP endpoint over the same two TLS configurations.
	httpURL, mhttpURL string
}

func newAuthFixture(t *testing.T) *authFixture {
	t.Helper()
	dir := t.TempDir()
	f := &authFixture{reg: prometheus.NewRegistry(), serverCA: newTestCA(t, "server CA"), clientCA: newTestCA(t, "client CA")}
	svcOpts := OnlineOptions{}
	svc := newTestService(t, svcOpts)
	f.project = svc.opts.Project
	f.policyFile = filepath.Join(dir, "policy.yaml")
	replaceFile(t, f.policyFile, []byte(authPolicy(f.project)))
	auth, err := NewAuth(AuthOptions{PolicyFile: f.policyFile, ReloadInterval: time.Nanosecond, Registerer: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	svc.opts.Authorize = auth.Authorize
	certFile, keyFile := tlsFiles(t, dir, f.serverCA)
	st, err := NewServerTLS(TLSOptions{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	f.tlsAddr = startLoopback(t, svc, ServerConfig{TLS: st.Config(), Auth: auth})
	caFile := filepath.Join(dir, "client-ca.pem")
	replaceFile(t, caFile, f.clientCA.pem)
	mst, err := NewServerTLS(TLSOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	f.mtlsAddr = startLoopback(t, svc, ServerConfig{TLS: mst.Config(), Auth: auth})
	f.httpURL = serveHTTP(t, svc, HTTPConfig{TLS: st.Config("h2", "http/1.1"), Interceptor: auth.UnaryInterceptor(), Middleware: auth.HTTPMiddleware})
	f.mhttpURL = serveHTTP(t, svc, HTTPConfig{TLS: mst.Config("h2", "http/1.1"), Interceptor: auth.UnaryInterceptor(), Middleware: auth.HTTPMiddleware})
	return f
}

// httpClient returns the URL of the HTTP endpoint and a client of it, with
// a client certificate of the given spec for the mutual TLS one.
func (f *authFixture) httpClient(t *testing.T, cert *certSpec) (string, *http.Client) {
	t.Helper()
	cfg := &tls.Config{RootCAs: f.serverCA.pool()}
	url := f.httpURL
	if cert != nil {
		cfg.Certificates = []tls.Certificate{f.clientCA.clientCert(t, *cert)}
		url = f.mhttpURL
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return url, &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// conn returns a connection to the TLS server, or with a client
// certificate of the given spec to the mutual TLS server.
func (f *authFixture) conn(t *testing.T, cert *certSpec) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: f.serverCA.pool()}
	if cert == nil {
		return dial(t, f.tlsAddr, credentials.NewTLS(cfg))
	}
	cfg.Certificates = []tls.Certificate{f.clientCA.clientCert(t, *cert)}
	return dial(t, f.mtlsAddr, credentials.NewTLS(cfg))
}

// withAuthorization adds authorization metadata to ctx, if v is not empty.
func withAuthorization(ctx context.Context, v ...string) context.Context {
	for _, s := range v {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", s)
	}
	return ctx
}

// authCase is one call and what it must get.
type authCase struct {
	name   string
	authz  []string  // authorization values sent
	cert   *certSpec // client certificate (mutual TLS server), if any
	req    *pb.GetOnlineFeaturesRequest
	code   codes.Code
	msg    string // the exact status message, for errors
	reason string // the reason label counted, for denials
}

func authCases(project string) []authCase {
	card := []*pb.EntityKey{skey("c1")}
	pair := []*pb.EntityKey{{JoinKeyValues: []*pb.Value{sval("u1"), ival(42)}}}
	cardTxn := &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h", "card_txn:last_amount"), Entities: card}
	cardMore := &pb.GetOnlineFeaturesRequest{Kind: refs("card_more:n_10m"), Entities: card}
	fraud := &pb.GetOnlineFeaturesRequest{Kind: &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: "fraud"}, Entities: card}
	pairs := &pb.GetOnlineFeaturesRequest{Kind: refs("pair_txn:*"), Entities: pair}
	const (
		missing = "authentication required: send authorization: Bearer <token>, or a client certificate"
		invalid = "invalid credentials"
	)
	denied := func(principal, view string) string {
		return fmt.Sprintf("principal %q may not read feature view %q of project %q", principal, view, project)
	}
	serviceDenied := func(principal, service string) string {
		return fmt.Sprintf("principal %q may not read feature service %q of project %q", principal, service, project)
	}
	lookup := func(entities []*pb.EntityKey, refList ...string) *pb.GetOnlineFeaturesRequest {
		return &pb.GetOnlineFeaturesRequest{Kind: refs(refList...), Entities: entities}
	}
	service := func(name string) *pb.GetOnlineFeaturesRequest {
		return &pb.GetOnlineFeaturesRequest{Kind: &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: name}, Entities: card}
	}
	return []authCase{
		{name: "no credentials", req: cardTxn, code: codes.Unauthenticated, msg: missing, reason: reasonMissing},
		{name: "unknown token", authz: []string{"Bearer tok-nobody"}, req: cardTxn, code: codes.Unauthenticated, msg: invalid, reason: reasonInvalidToken},
		{name: "token hash as token", authz: []string{"Bearer " + hashToken("tok-scorer")}, req: cardTxn, code: codes.Unauthenticated, msg: invalid, reason: reasonInvalidToken},
		{name: "basic scheme", authz: []string{"Basic dG9rLXNjb3Jlcg=="}, req: cardTxn, code: codes.Unauthenticated, msg: `authorization: want "Bearer <token>"`, reason: reasonMalformed},
		{name: "empty bearer", authz: []string{"Bearer "}, req: cardTxn, code: codes.Unauthenticated, msg: `authorization: want "Bearer <token>"`, reason: reasonMalformed},
		{name: "two tokens", authz: []string{"Bearer tok-scorer", "Bearer tok-admin"}, req: cardTxn, code: codes.Unauthenticated, msg: "more than one authorization value", reason: reasonMalformed},
		{name: "granted view", authz: []string{"Bearer tok-scorer"}, req: cardTxn},
		{name: "second token of a principal", authz: []string{"Bearer tok-scorer-old"}, req: cardTxn},
		{name: "scheme in any case", authz: []string{"bearer   tok-scorer"}, req: cardTxn},
		{name: "view not granted", authz: []string{"Bearer tok-scorer"}, req: cardMore, code: codes.PermissionDenied, msg: denied("scorer", "card_more"), reason: reasonNotGranted},
		// A service's views are not named: they are as private as the views.
		{name: "service spanning a view not granted", authz: []string{"Bearer tok-scorer"}, req: fraud, code: codes.PermissionDenied, msg: serviceDenied("scorer", "fraud"), reason: reasonNotGranted},
		{name: "views granted in another project", authz: []string{"Bearer tok-elsewhere"}, req: cardTxn, code: codes.PermissionDenied, msg: denied("elsewhere", "card_txn"), reason: reasonNotGranted},
		{name: "no grants", authz: []string{"Bearer tok-nogrants"}, req: cardTxn, code: codes.PermissionDenied, msg: denied("nogrants", "card_txn"), reason: reasonNotGranted},
		{name: "every view of every project", authz: []string{"Bearer tok-admin"}, req: fraud},
		{name: "every view, two entities", authz: []string{"Bearer tok-admin"}, req: pairs},
		{name: "certificate uri", cert: &certSpec{uris: []string{"spiffe://test/pairs"}}, req: pairs},
		{name: "certificate cn", cert: &certSpec{cn: "pairs"}, req: pairs},
		{name: "certificate, view not granted", cert: &certSpec{cn: "pairs"}, req: cardTxn, code: codes.PermissionDenied, msg: denied("pairs-by-cert", "card_txn"), reason: reasonNotGranted},
		{name: "certificate of no principal", cert: &certSpec{cn: "stranger", uris: []string{"spiffe://test/stranger"}}, req: pairs, code: codes.Unauthenticated, msg: "the client certificate identifies no principal", reason: reasonUnknownCert},
		{name: "token decides over certificate", cert: &certSpec{cn: "pairs"}, authz: []string{"Bearer tok-scorer"}, req: pairs, code: codes.PermissionDenied, msg: denied("scorer", "pair_txn"), reason: reasonNotGranted},
		{name: "wrong token over a valid certificate", cert: &certSpec{cn: "pairs"}, authz: []string{"Bearer tok-nobody"}, req: pairs, code: codes.Unauthenticated, msg: invalid, reason: reasonInvalidToken},
		// Names cannot be probed: a request naming what its principal may
		// not read is denied the same whether the names exist or not, and
		// told what is wrong with it only where it names what it may read.
		{name: "unknown view, not granted", authz: []string{"Bearer tok-scorer"}, req: lookup(card, "nope:x"), code: codes.PermissionDenied, msg: denied("scorer", "nope"), reason: reasonNotGranted},
		{name: "unknown view beside a granted one", authz: []string{"Bearer tok-scorer"}, req: lookup(card, "card_txn:n_1h", "nope:x"), code: codes.PermissionDenied, msg: denied("scorer", "nope"), reason: reasonNotGranted},
		{name: "unknown feature of a view not granted", authz: []string{"Bearer tok-scorer"}, req: lookup(card, "card_more:nope"), code: codes.PermissionDenied, msg: denied("scorer", "card_more"), reason: reasonNotGranted},
		{name: "unknown feature of a granted view", authz: []string{"Bearer tok-scorer"}, req: lookup(card, "card_txn:nope"), code: codes.InvalidArgument, msg: `unknown feature "nope" in feature view "card_txn"`},
		{name: "bad reference to a granted view", authz: []string{"Bearer tok-scorer"}, req: lookup(card, "card_txn:n_1h", "card_txn:n_1h"), code: codes.InvalidArgument, msg: `feature "card_txn:n_1h" requested more than once`},
		{name: "unknown view, every view granted", authz: []string{"Bearer tok-admin"}, req: lookup(card, "nope:x"), code: codes.InvalidArgument, msg: `unknown feature view "nope" in "nope:x"`},
		{name: "unknown service, not every view granted", authz: []string{"Bearer tok-scorer"}, req: service("nope"), code: codes.PermissionDenied, msg: serviceDenied("scorer", "nope"), reason: reasonNotGranted},
		{name: "unknown service, every view granted", authz: []string{"Bearer tok-admin"}, req: service("nope"), code: codes.InvalidArgument, msg: `unknown feature service "nope"`},
		{name: "unknown view, unauthenticated", req: lookup(card, "nope:x"), code: codes.Unauthenticated, msg: missing, reason: reasonMissing},
		// An on-demand feature needs its view granted, and the views of
		// the inputs its expression reads.
		{name: "on-demand feature and the view it reads", authz: []string{"Bearer tok-risk"}, req: withAmount(lookup(card, "txn_risk:jump"))},
		{name: "on-demand feature reading a view not granted", authz: []string{"Bearer tok-risk"}, req: withAmount(lookup(card, "txn_risk:over_mean")), code: codes.PermissionDenied, msg: denied("risk", "card_more"), reason: reasonNotGranted},
		{name: "on-demand view not granted", authz: []string{"Bearer tok-scorer"}, req: withAmount(lookup(card, "txn_risk:jump")), code: codes.PermissionDenied, msg: denied("scorer", "txn_risk"), reason: reasonNotGranted},
	}
}

// withAmount adds the request field amount to req, for on-demand features.
func withAmount(req *pb.GetOnlineFeaturesRequest) *pb.GetOnlineFeaturesRequest {
	req.RequestContext = map[string]*pb.Value{"amount": dval(10)}
	return req
}

// checkDenials compares the denial counters of protocol with the number of
// cases denied for each reason.
func checkDenials(t *testing.T, reg *prometheus.Registry, protocol string, cases []authCase) {
	t.Helper()
	want := map[string]float64{}
	for _, c := range cases {
		if c.reason != "" {
			want[c.reason]++
		}
	}
	for _, r := range []string{reasonMissing, reasonMalformed, reasonInvalidToken, reasonUnknownCert, reasonMethod, reasonNotGranted} {
		if got := counter(t, reg, "featurestore_serving_auth_denied_total", map[string]string{"protocol": protocol, "reason": r}); got != want[r] {
			t.Errorf("%s denials for %s: %v, want %v", protocol, r, got, want[r])
		}
	}
}

func TestAuthGRPC(t *testing.T) {
	f := newAuthFixture(t)
	cases := authCases(f.project)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(withAuthorization(context.Background(), c.authz...), 5*time.Second)
			defer cancel()
			resp, err := pb.NewOnlineServiceClient(f.conn(t, c.cert)).GetOnlineFeatures(ctx, c.req)
			st := status.Convert(err)
			if st.Code() != c.code || (c.code != codes.OK && st.Message() != c.msg) {
				t.Fatalf("got %s %q, want %s %q", st.Code(), st.Message(), c.code, c.msg)
			}
			if c.code == codes.OK && len(resp.GetResults()) != len(c.req.GetEntities()) {
				t.Errorf("%d results for %d entities", len(resp.GetResults()), len(c.req.GetEntities()))
			}
		})
	}
	checkDenials(t, f.reg, "grpc", cases)
	checkDenials(t, f.reg, "http", nil)

	t.Run("health is open", func(t *testing.T) {
		for _, conn := range []*grpc.ClientConn{f.conn(t, nil), f.conn(t, &certSpec{cn: "stranger"})} {
			resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: pb.OnlineService_ServiceDesc.ServiceName})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health: %v %v", resp, err)
			}
		}
	})

	t.Run("reflection needs a principal", func(t *testing.T) {
		list := func(ctx context.Context, conn *grpc.ClientConn) error {
			stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
			if err != nil {
				return err
			}
			defer stream.CloseSend()
			// A Send the server refused before reading it ends in io.EOF;
			// Recv then tells the status.
			if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
				return err
			}
			_, err = stream.Recv()
			return err
		}
		ctx := context.Background()
		if err := list(ctx, f.conn(t, nil)); status.Code(err) != codes.Unauthenticated {
			t.Errorf("without credentials: %v, want Unauthenticated", err)
		}
		if err := list(withAuthorization(ctx, "Bearer tok-nogrants"), f.conn(t, nil)); err != nil {
			t.Errorf("a principal without grants: %v", err)
		}
		if err := list(ctx, f.conn(t, &certSpec{cn: "pairs"})); err != nil {
			t.Errorf("a principal by certificate: %v", err)
		}
	})
}

// TestAuthHTTP runs the cases of TestAuthGRPC against the JSON endpoint:
// the same decisions, as 401 and 403 with the JSON error body.
func TestAuthHTTP(t *testing.T) {
	f := newAuthFixture(t)
	cases := authCases(f.project)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url, client := f.httpClient(t, c.cert)
			body, err := protojson.Marshal(c.req)
			if err != nil {
				t.Fatal(err)
			}
			req, err := http.NewRequest(http.MethodPost, url+HTTPLookupPath, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			for _, v := range c.authz {
				req.Header.Add("Authorization", v)
			}
			reply := do(t, client, req)
			if c.code == codes.OK {
				if reply.status != http.StatusOK {
					t.Fatalf("status %d: %s", reply.status, reply.body)
				}
				return
			}
			code, msg := errorBody(t, reply)
			if reply.status != httpStatusOf(c.code) || code != codeName(c.code) || msg != c.msg {
				t.Errorf("got %d %s %q, want %d %s %q", reply.status, code, msg, httpStatusOf(c.code), codeName(c.code), c.msg)
			}
			if challenge := reply.header.Get("WWW-Authenticate"); (reply.status == http.StatusUnauthorized) != (challenge != "") {
				t.Errorf("status %d with WWW-Authenticate %q", reply.status, challenge)
			}
		})
	}
	checkDenials(t, f.reg, "http", cases)
	checkDenials(t, f.reg, "grpc", nil)

	t.Run("health is open", func(t *testing.T) {
		url, client := f.httpClient(t, nil)
		resp, err := client.Get(url + HTTPHealthPath)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("health: %d", resp.StatusCode)
		}
	})

	t.Run("no credentials: refused before the body is read", func(t *testing.T) {
		// A body that never ends: the answer can only come from the
		// headers.
		url, client := f.httpClient(t, nil)
		pr, pw := io.Pipe()
		defer pw.Close()
		req, err := http.NewRequest(http.MethodPost, url+HTTPLookupPath, pr)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		client.Timeout = 5 * time.Second
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("no answer before the body ended: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("status %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})

	t.Run("plaintext refused", func(t *testing.T) {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Post(strings.Replace(f.httpURL, "https:", "http:", 1)+HTTPLookupPath, "application/json", strings.NewReader("{}"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("plaintext request to the TLS endpoint: %d", resp.StatusCode)
			}
		}
	})
}

// TestAuthPolicyReload revokes a token, breaks the policy file and mends
// it, checking at each step what the server lets through.
func TestAuthPolicyReload(t *testing.T) {
	f := newAuthFixture(t)
	conn := f.conn(t, nil)
	call := func(token string) error {
		return lookup(withAuthorization(context.Background(), "Bearer "+token), conn)
	}
	reloads := func(result string) float64 {
		return counter(t, f.reg, "featurestore_serving_auth_policy_reloads_total", map[string]string{"result": result})
	}
	if err := call("tok-scorer"); err != nil {
		t.Fatalf("before the change: %v", err)
	}
	unknown := call("tok-nobody")

	replaceFile(t, f.policyFile, []byte(authPolicy(f.project, "scorer")))
	revoked := call("tok-scorer")
	if status.Code(revoked) != codes.Unauthenticated || status.Convert(revoked).Message() != status.Convert(unknown).Message() {
		t.Errorf("revoked token: %v; an unknown token gets %v", revoked, unknown)
	}
	if err := call("tok-scorer-old"); err != nil {
		t.Errorf("the principal's other token: %v", err)
	}
	if got := reloads("ok"); got != 1 {
		t.Errorf("ok reloads %v, want 1", got)
	}

	// A policy that does not parse leaves the last good one in force, and
	// is reported once however many calls see it.
	replaceFile(t, f.policyFile, []byte("principals:\n  - name: scorer\n    token_sha256: [not-a-hash]\n"))
	for range 3 {
		if err := call("tok-scorer-old"); err != nil {
			t.Errorf("with a broken policy file: %v", err)
		}
		if err := call("tok-scorer"); status.Code(err) != codes.Unauthenticated {
			t.Errorf("revoked token with a broken policy file: %v", err)
		}
	}
	if got := reloads("error"); got != 1 {
		t.Errorf("failed reloads %v, want 1", got)
	}

	replaceFile(t, f.policyFile, []byte(authPolicy(f.project)))
	if err := call("tok-scorer"); err != nil {
		t.Errorf("token granted again: %v", err)
	}
	if got := reloads("ok"); got != 2 {
		t.Errorf("ok reloads %v, want 2", got)
	}
}

// TestAuthInterceptor checks what no registered service exercises: methods
// outside the policy are denied, and a service that never calls Authorize
// serves nothing.
func TestAuthInterceptor(t *testing.T) {
	f := newAuthFixture(t)
	auth, err := NewAuth(AuthOptions{PolicyFile: f.policyFile})
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer tok-admin"))
	called := false
	handler := func(ctx context.Context, req any) (any, error) {
		called = true
		if name, ok := PrincipalFromContext(ctx); !ok || name != "admin" {
			t.Errorf("principal %q, %v; want admin", name, ok)
		}
		return "ok", nil
	}

	_, err = auth.UnaryInterceptor()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: pb.RegistryService_ListVersions_FullMethodName}, handler)
	if status.Code(err) != codes.PermissionDenied || called {
		t.Errorf("a method outside the policy: %v, handler called %v", err, called)
	}
	if _, ok := PrincipalFromContext(ctx); ok {
		t.Error("a principal in a context that was not authenticated")
	}
	_, err = auth.UnaryInterceptor()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: pb.OnlineService_GetOnlineFeatures_FullMethodName}, handler)
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "the request was not authorized" {
		t.Errorf("a lookup the service did not authorize: %v", err)
	}

	// The same over a real server: a service wired without Authorize.
	svc := newTestService(t, OnlineOptions{Project: f.project})
	dir := t.TempDir()
	certFile, keyFile := tlsFiles(t, dir, f.serverCA)
	st, err := NewServerTLS(TLSOptions{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	addr := startLoopback(t, svc, ServerConfig{TLS: st.Config(), Auth: auth})
	conn := dial(t, addr, credentials.NewTLS(&tls.Config{RootCAs: f.serverCA.pool()}))
	if err := lookup(withAuthorization(context.Background(), "Bearer tok-admin"), conn); status.Code(err) != codes.PermissionDenied {
		t.Errorf("lookup through a service without Authorize: %v", err)
	}

	// Authorize without authentication before it: denied.
	if err := auth.Authorize(context.Background(), f.project, []string{"card_txn"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Authorize of an unauthenticated context: %v", err)
	}
}

func TestNewAuthErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	replaceFile(t, bad, []byte("principals:\n  - name: a\n"))
	missing := filepath.Join(dir, "missing.yaml")
	for _, c := range []struct{ file, want string }{
		{bad, bad + `:2:5: principal "a": no token_sha256 and no certificates: it could never authenticate`},
		{missing, "open " + missing + ": no such file or directory"},
	} {
		_, err := NewAuth(AuthOptions{PolicyFile: c.file})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewAuth(%s): %v, want %q", c.file, err, c.want)
		}
	}
}

// BenchmarkAuth measures what the policy adds to a lookup: the interceptor
// authenticating a token among n and Authorize granting two views.
func BenchmarkAuth(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("tokens=%d", n), func(b *testing.B) {
			var sb strings.Builder
			sb.WriteString("principals:\n")
			for i := range n {
				fmt.Fprintf(&sb, "  - {name: p%d, token_sha256: [%s], grants: [{project: p, views: [card_txn, card_more]}]}\n", i, hashToken(fmt.Sprintf("tok-%d", i)))
			}
			file := filepath.Join(b.TempDir(), "policy.yaml")
			replaceFile(b, file, []byte(sb.String()))
			auth, err := NewAuth(AuthOptions{PolicyFile: file})
			if err != nil {
				b.Fatal(err)
			}
			ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", fmt.Sprintf("Bearer tok-%d", n-1)))
			info := &grpc.UnaryServerInfo{FullMethod: pb.OnlineService_GetOnlineFeatures_FullMethodName}
			views := []string{"card_txn", "card_more"}
			handler := func(ctx context.Context, _ any) (any, error) { return nil, auth.Authorize(ctx, "p", views) }
			intercept := auth.UnaryInterceptor()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := intercept(ctx, nil, info, handler); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestAuthRevokedBetweenHeadersAndMessage: a call is authenticated from its
// headers before its message is read, and the client chooses when it sends
// the message; a token revoked in between must not be honoured for it.
func TestAuthRevokedBetweenHeadersAndMessage(t *testing.T) {
	f := newAuthFixture(t)
	conn := f.conn(t, nil)
	ctx, cancel := context.WithTimeout(withAuthorization(context.Background(), "Bearer tok-scorer"), 5*time.Second)
	defer cancel()
	desc := &grpc.StreamDesc{StreamName: "GetOnlineFeatures"}
	s, err := conn.NewStream(ctx, desc, "/featurestore.v1.OnlineService/GetOnlineFeatures")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the headers reach the server, which authenticates them
	replaceFile(t, f.policyFile, []byte(authPolicy(f.project, "scorer")))
	// Another call looks at the policy file and loads the change.
	if err := lookup(withAuthorization(context.Background(), "Bearer tok-scorer"), conn); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a new call with the revoked token: %v", err)
	}
	req := &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{skey("c1")}}
	if err := s.SendMsg(req); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var resp pb.GetOnlineFeaturesResponse
	if err := s.RecvMsg(&resp); status.Code(err) != codes.Unauthenticated {
		t.Errorf("the message sent after the token was revoked: %v, want UNAUTHENTICATED", err)
	}
}
