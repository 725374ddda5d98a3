package serving

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// newTestService returns a service of testDefs over real Redis, for a new
// project: every lookup finds nothing, which is all the security tests need.
func newTestService(t testing.TB, opts OnlineOptions) *OnlineService {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), ContextTimeoutEnabled: true})
	t.Cleanup(func() { rc.Close() })
	snaps := &staticSnapshots{}
	snaps.p.Store(loadSnapshot(t, 1, testDefs))
	if opts.Project == "" {
		opts.Project = testenv.UniqueName(t, "secure")
	}
	return NewOnlineService(snaps, online.New(rc, online.Options{}), opts)
}

// startLoopback runs the real Server on a loopback TCP port and returns its
// address.
func startLoopback(t testing.TB, svc *OnlineService, cfg ServerConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	cfg.ShutdownTimeout = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(svc, cfg).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return ln.Addr().String()
}

// dial returns a client of addr with the given transport credentials.
func dial(t testing.TB, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// lookup asks for one feature of one card.
func lookup(ctx context.Context, conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := pb.NewOnlineServiceClient(conn).GetOnlineFeatures(ctx, &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{skey("c1")}})
	return err
}

// tlsFiles writes a server certificate and key signed by ca to dir.
func tlsFiles(t testing.TB, dir string, ca *testCA) (certFile, keyFile string) {
	t.Helper()
	c, k := ca.issue(t, serverSpec)
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	replaceFile(t, certFile, c)
	replaceFile(t, keyFile, k)
	return certFile, keyFile
}

// servedCert does a TLS handshake with addr and returns the server's
// certificate.
func servedCert(t testing.TB, addr string, cfg *tls.Config) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// counter returns the value of the counter name with the given labels in
// reg, 0 if it has none.
func counter(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	return metric(t, reg, name, labels).GetCounter().GetValue()
}

// histogramCount returns the sample count of the histogram name with the
// given labels in reg, 0 if it has none.
func histogramCount(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) uint64 {
	t.Helper()
	return metric(t, reg, name, labels).GetHistogram().GetSampleCount()
}

// metric returns the metric name with the given labels in reg, nil if it
// has none.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m
		}
	}
	return nil
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "server CA")
	certFile, keyFile := tlsFiles(t, dir, ca)
	reg := prometheus.NewRegistry()
	st, err := NewServerTLS(TLSOptions{CertFile: certFile, KeyFile: keyFile, ReloadInterval: time.Nanosecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	addr := startLoopback(t, newTestService(t, OnlineOptions{}), ServerConfig{TLS: st.Config()})
	ctx := context.Background()

	for _, c := range []struct {
		name  string
		creds credentials.TransportCredentials
		want  codes.Code
	}{
		{"tls", credentials.NewTLS(&tls.Config{RootCAs: ca.pool()}), codes.OK},
		{"tls 1.2", credentials.NewTLS(&tls.Config{RootCAs: ca.pool(), MaxVersion: tls.VersionTLS12}), codes.OK},
		{"plaintext", insecure.NewCredentials(), codes.Unavailable},
		{"untrusted server certificate", credentials.NewTLS(&tls.Config{RootCAs: newTestCA(t, "other").pool()}), codes.Unavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := lookup(ctx, dial(t, addr, c.creds)); status.Code(err) != c.want {
				t.Errorf("lookup: %v, want %s", err, c.want)
			}
		})
	}

	t.Run("tls 1.1 refused", func(t *testing.T) {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err == nil {
			conn.Close()
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
	})

	t.Run("health over tls", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(dial(t, addr, credentials.NewTLS(&tls.Config{RootCAs: ca.pool()}))).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health: %v %v", resp, err)
		}
	})

	t.Run("rotation", func(t *testing.T) {
		client := &tls.Config{RootCAs: ca.pool()}
		before := servedCert(t, addr, client)
		// A new certificate and key: the next handshake presents it.
		c, k := ca.issue(t, serverSpec)
		replaceFile(t, keyFile, k)
		replaceFile(t, certFile, c)
		after := servedCert(t, addr, client)
		if after.SerialNumber.Cmp(before.SerialNumber) == 0 {
			t.Fatal("the rotated certificate is not served")
		}
		if got := counter(t, reg, "featurestore_serving_tls_reloads_total", map[string]string{"result": "ok"}); got != 1 {
			t.Errorf("ok reloads %v, want 1", got)
		}
		// A certificate that does not match the key: the previous pair
		// stays in use, and the failure is counted once.
		c2, _ := ca.issue(t, serverSpec)
		replaceFile(t, certFile, c2)
		for range 3 {
			if got := servedCert(t, addr, client); got.SerialNumber.Cmp(after.SerialNumber) != 0 {
				t.Fatal("a certificate that does not match its key is served")
			}
		}
		if got := counter(t, reg, "featurestore_serving_tls_reloads_total", map[string]string{"result": "error"}); got != 1 {
			t.Errorf("failed reloads %v, want 1", got)
		}
		if err := lookup(ctx, dial(t, addr, credentials.NewTLS(client))); err != nil {
			t.Errorf("lookup after a failed reload: %v", err)
		}
		// A file that disappears mid-rotation is a failure too.
		if err := os.Remove(certFile); err != nil {
			t.Fatal(err)
		}
		if got := servedCert(t, addr, client); got.SerialNumber.Cmp(after.SerialNumber) != 0 {
			t.Fatal("the served certificate changed while its file was missing")
		}
		c3, k3 := ca.issue(t, serverSpec)
		replaceFile(t, keyFile, k3)
		replaceFile(t, certFile, c3)
		if got := servedCert(t, addr, client); got.SerialNumber.Cmp(after.SerialNumber) == 0 {
			t.Fatal("the certificate written after the failures is not served")
		}
	})
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "server CA")
	clientCA, otherCA := newTestCA(t, "client CA"), newTestCA(t, "other client CA")
	certFile, keyFile := tlsFiles(t, dir, ca)
	caFile := filepath.Join(dir, "client-ca.pem")
	replaceFile(t, caFile, clientCA.pem)
	st, err := NewServerTLS(TLSOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile, ReloadInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	addr := startLoopback(t, newTestService(t, OnlineOptions{}), ServerConfig{TLS: st.Config()})
	trusted := clientCA.clientCert(t, certSpec{cn: "scorer"})
	untrusted := otherCA.clientCert(t, certSpec{cn: "scorer"})
	withCert := func(certs ...tls.Certificate) credentials.TransportCredentials {
		return credentials.NewTLS(&tls.Config{RootCAs: ca.pool(), Certificates: certs})
	}
	ctx := context.Background()

	for _, c := range []struct {
		name  string
		creds credentials.TransportCredentials
		want  codes.Code
	}{
		{"trusted client certificate", withCert(trusted), codes.OK},
		{"no client certificate", withCert(), codes.Unavailable},
		{"client certificate of another CA", withCert(untrusted), codes.Unavailable},
		{"plaintext", insecure.NewCredentials(), codes.Unavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := lookup(ctx, dial(t, addr, c.creds)); status.Code(err) != c.want {
				t.Errorf("lookup: %v, want %s", err, c.want)
			}
		})
	}

	t.Run("server certificate as client certificate", func(t *testing.T) {
		// Signed by the client CA, but for server authentication only.
		c, k := clientCA.issue(t, serverSpec)
		cert, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		if err := lookup(ctx, dial(t, addr, withCert(cert))); status.Code(err) != codes.Unavailable {
			t.Errorf("lookup: %v, want Unavailable", err)
		}
	})

	t.Run("client CA rotation", func(t *testing.T) {
		replaceFile(t, caFile, otherCA.pem)
		if err := lookup(ctx, dial(t, addr, withCert(trusted))); status.Code(err) != codes.Unavailable {
			t.Errorf("certificate of the removed CA: %v, want Unavailable", err)
		}
		if err := lookup(ctx, dial(t, addr, withCert(untrusted))); err != nil {
			t.Errorf("certificate of the new CA: %v", err)
		}
	})
}

func TestNewServerTLSErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "CA")
	certFile, keyFile := tlsFiles(t, dir, ca)
	notPEM := filepath.Join(dir, "not.pem")
	replaceFile(t, notPEM, []byte("not a certificate\n"))
	_, otherKey := ca.issue(t, serverSpec)
	otherKeyFile := filepath.Join(dir, "other-key.pem")
	replaceFile(t, otherKeyFile, otherKey)
	missing := filepath.Join(dir, "missing.pem")
	for _, c := range []struct {
		name string
		opts TLSOptions
		want string
	}{
		{"no key", TLSOptions{CertFile: certFile}, "tls: a certificate file and a key file are both required"},
		{"missing file", TLSOptions{CertFile: missing, KeyFile: keyFile}, "tls: open " + missing + ": no such file or directory"},
		{"key of another certificate", TLSOptions{CertFile: certFile, KeyFile: otherKeyFile}, "tls certificate " + certFile + " and key " + otherKeyFile + ": tls: private key does not match public key"},
		{"not a certificate", TLSOptions{CertFile: notPEM, KeyFile: keyFile}, "tls certificate " + notPEM + " and key " + keyFile + ": tls: failed to find any PEM data in certificate input"},
		{"client CA not PEM", TLSOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: notPEM}, "tls client CA file " + notPEM + ": no PEM certificate found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewServerTLS(c.opts)
			if err == nil || err.Error() != c.want {
				t.Errorf("got %v, want %q", err, c.want)
			}
		})
	}
}

// BenchmarkSecureLookup measures a one-entity lookup over loopback gRPC,
// client and server in this process, in plaintext, over TLS, and over TLS
// with the access policy, so the cost of each shows against the others.
func BenchmarkSecureLookup(b *testing.B) {
	dir := b.TempDir()
	ca := newTestCA(b, "CA")
	certFile, keyFile := tlsFiles(b, dir, ca)
	st, err := NewServerTLS(TLSOptions{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		b.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	svc := newTestService(b, OnlineOptions{})
	replaceFile(b, policyFile, []byte("principals:\n  - {name: b, token_sha256: ["+hashToken("tok")+"], grants: [{project: "+svc.opts.Project+", views: [card_txn]}]}\n"))
	auth, err := NewAuth(AuthOptions{PolicyFile: policyFile})
	if err != nil {
		b.Fatal(err)
	}
	authorized := newTestService(b, OnlineOptions{Project: svc.opts.Project, Authorize: auth.Authorize})
	tlsCreds := credentials.NewTLS(&tls.Config{RootCAs: ca.pool()})
	for _, c := range []struct {
		name  string
		addr  string
		creds credentials.TransportCredentials
		ctx   context.Context
	}{
		{"plaintext", startLoopback(b, svc, ServerConfig{}), insecure.NewCredentials(), context.Background()},
		{"tls", startLoopback(b, svc, ServerConfig{TLS: st.Config()}), tlsCreds, context.Background()},
		{"tls+auth", startLoopback(b, authorized, ServerConfig{TLS: st.Config(), Auth: auth}), tlsCreds, withAuthorization(context.Background(), "Bearer tok")},
	} {
		b.Run(c.name, func(b *testing.B) {
			conn := dial(b, c.addr, c.creds)
			b.ReportAllocs()
			for b.Loop() {
				if err := lookup(c.ctx, conn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
