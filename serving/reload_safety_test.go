package serving

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// logRecorder is a slog.Handler keeping every record, at every level, as
// one line of text: level, message and attributes.
type logRecorder struct {
	mu    sync.Mutex
	lines []logLine
}

type logLine struct {
	level slog.Level
	text  string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, logLine{r.Level, b.String()})
	return nil
}

// matching returns the lines that contain s.
func (l *logRecorder) matching(s string) []logLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logLine
	for _, line := range l.lines {
		if strings.Contains(line.text, s) {
			out = append(out, line)
		}
	}
	return out
}

// temporaryError is what a listener returns when it runs out of file
// descriptors: net/http logs it and retries.
type temporaryError struct{}

func (temporaryError) Error() string   { return "accept: too many open files" }
func (temporaryError) Timeout() bool   { return false }
func (temporaryError) Temporary() bool { return true }

// failOnce is a listener whose first Accept fails with a temporary error.
type failOnce struct {
	net.Listener
	once sync.Once
}

func (l *failOnce) Accept() (net.Conn, error) {
	var failed bool
	l.once.Do(func() { failed = true })
	if failed {
		return nil, temporaryError{}
	}
	return l.Listener.Accept()
}

// TestHTTPFailedHandshakesLogAtDebug makes 50 TLS handshakes fail against
// the HTTPS server under mutual TLS, half with bytes that are not TLS and
// half from clients without a certificate. Anyone can cause them, so none
// may be logged at warn level or above; an error of the server itself (a
// failed Accept) still is.
func TestHTTPFailedHandshakesLogAtDebug(t *testing.T) {
	dir := t.TempDir()
	ca, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	certFile, keyFile := tlsFiles(t, dir, ca)
	caFile := filepath.Join(dir, "client-ca.pem")
	replaceFile(t, caFile, clientCA.pem)
	st, err := NewServerTLS(TLSOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	rec := &logRecorder{}
	ln := &failOnce{Listener: listen(t)}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := NewHTTPServer(newTestService(t, OnlineOptions{}), HTTPConfig{Listener: ln, TLS: st.Config("h2", "http/1.1"), Logger: slog.New(rec)})
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("http server: %v", err)
		}
	})

	const handshakes = 50
	for i := range handshakes {
		if i%2 == 0 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("\x00\x01 not a TLS record \xff\xfe\r\n\r\n"))
			c.Close()
			continue
		}
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool()})
		if err == nil {
			// TLS 1.3: the server refuses the missing certificate after
			// the client's side of the handshake is done.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			c.Read(make([]byte, 1))
			c.Close()
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(rec.matching("TLS handshake error")) < handshakes && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(rec.matching("TLS handshake error")); n < handshakes {
		t.Fatalf("%d of %d failed handshakes logged", n, handshakes)
	}
	for _, l := range rec.matching("TLS handshake error") {
		if l.level >= slog.LevelWarn {
			t.Fatalf("a failed handshake logged at %s: %s", l.level, l.text)
		}
	}
	accept := rec.matching("too many open files")
	if len(accept) != 1 || accept[0].level != slog.LevelWarn {
		t.Errorf("the failed Accept logged as %v, want once at WARN", accept)
	}
}

// writePolicy writes data to path in place, as an editor or a shell
// redirection does: a reader may see it truncated.
func writePolicy(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyHalfWrittenNeverInForce writes the policy file in place in two
// steps, the first cut short just before "_sandbox" so that it still parses
// and grants card_txn instead of card_txn_sandbox. The cut content must
// never be in force; the whole one must be at the first look an interval
// after it was written.
func TestPolicyHalfWrittenNeverInForce(t *testing.T) {
	const interval = 100 * time.Millisecond
	path := filepath.Join(t.TempDir(), "policy.yaml")
	policyOf := func(view string) string {
		return "principals:\n  - name: tester\n    token_sha256: [" + hashToken("tok") + "]\n" +
			"    grants:\n      - project: payments\n        views:\n          - " + view + "\n"
	}
	writePolicy(t, path, policyOf("merchant_txn"))
	reg := prometheus.NewRegistry()
	auth, err := NewAuth(AuthOptions{PolicyFile: path, ReloadInterval: interval, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	// views returns the views tester may read, by a use of the policy
	// (which looks at the file when the interval has passed).
	views := func() []string {
		p := auth.policy.Get().byToken("tok")
		var views []string
		for _, v := range []string{"merchant_txn", "card_txn", "card_txn_sandbox"} {
			if p != nil && p.allowed("payments", v) {
				views = append(views, v)
			}
		}
		return views
	}
	wait := func() { time.Sleep(interval + interval/2) } // the next use looks

	whole := policyOf("card_txn_sandbox")
	cut := whole[:strings.Index(whole, "_sandbox")]
	if _, err := parsePolicy(path, []byte(cut)); err != nil {
		t.Fatalf("the cut policy does not parse, so the test shows nothing: %v", err)
	}
	// A look while the writer is at the cut: the file was modified just
	// now, so the cut content waits for a second look.
	wait()
	writePolicy(t, path, cut)
	if got := views(); fmt.Sprint(got) != "[merchant_txn]" {
		t.Fatalf("after a look at the cut file: views %v, want the previous [merchant_txn]", got)
	}
	writePolicy(t, path, whole)
	wait()
	if got := views(); fmt.Sprint(got) != "[card_txn_sandbox]" {
		t.Errorf("a look an interval after the file was completed: views %v, want [card_txn_sandbox]", got)
	}
	if n := counter(t, reg, "featurestore_serving_auth_policy_reloads_total", map[string]string{"result": "ok"}); n != 1 {
		t.Errorf("ok reloads %v, want 1 (the completed file only)", n)
	}
}

// certServedBy returns a function giving the certificate st serves to a
// new connection now (looking at its files first, as a handshake does).
func certServedBy(t *testing.T, st *ServerTLS) func() *x509.Certificate {
	cfg := st.Config("http/1.1")
	return func() *x509.Certificate {
		c, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Certificates[0].Leaf
	}
}

// issueValid returns a server certificate and key signed by ca, valid from
// notBefore to notAfter.
func issueValid(t *testing.T, ca *testCA, notBefore, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	spec := serverSpec
	spec.notBefore, spec.notAfter = notBefore, notAfter
	return ca.issue(t, spec)
}

// TestTLSReloadRefusesInvalidCertificate rotates to a certificate that
// expired a day ago, then to one valid from tomorrow: the previous pair
// stays in use, and each is counted as a failed reload.
func TestTLSReloadRefusesInvalidCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "server CA")
	certFile, keyFile := tlsFiles(t, dir, ca)
	reg := prometheus.NewRegistry()
	rec := &logRecorder{}
	st, err := NewServerTLS(TLSOptions{CertFile: certFile, KeyFile: keyFile, ReloadInterval: time.Nanosecond, Registerer: reg, Logger: slog.New(rec)})
	if err != nil {
		t.Fatal(err)
	}
	served := certServedBy(t, st)
	good := served()
	day := 24 * time.Hour
	for i, c := range []struct {
		name                string
		notBefore, notAfter time.Time
		why                 string
	}{
		{"expired a day ago", time.Now().Add(-30 * day), time.Now().Add(-day), "expired"},
		{"valid from tomorrow", time.Now().Add(day), time.Now().Add(30 * day), "not valid before"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cert, key := issueValid(t, ca, c.notBefore, c.notAfter)
			replaceFile(t, keyFile, key)
			replaceFile(t, certFile, cert)
			for range 3 {
				if got := served(); got.SerialNumber.Cmp(good.SerialNumber) != 0 {
					t.Fatalf("serving a certificate valid from %v to %v", got.NotBefore, got.NotAfter)
				}
			}
			if n := counter(t, reg, "featurestore_serving_tls_reloads_total", map[string]string{"result": "error"}); n != float64(i+1) {
				t.Errorf("failed reloads %v, want %d", n, i+1)
			}
			if l := rec.matching(c.why); len(l) != 1 || l[0].level != slog.LevelError {
				t.Errorf("log lines saying %q: %v, want one at ERROR", c.why, l)
			}
		})
	}
	// A good pair after them is served.
	cert, key := ca.issue(t, serverSpec)
	replaceFile(t, keyFile, key)
	replaceFile(t, certFile, cert)
	if got := served(); got.SerialNumber.Cmp(good.SerialNumber) == 0 {
		t.Error("the good certificate written after the refused ones is not served")
	}
}

// TestHealthHidesStoreAddress checks that the open health endpoints do not
// tell an anonymous caller where the online store is, and that the detail
// is logged once rather than per probe.
func TestHealthHidesStoreAddress(t *testing.T) {
	const detail = "dial tcp 10.20.30.40:6379: connect: connection refused"
	rec := &logRecorder{}
	svc := newTestService(t, OnlineOptions{Logger: slog.New(rec)})
	ping := func(context.Context) error { return errors.New(detail) }
	url := serveHTTP(t, svc, HTTPConfig{Ping: ping})
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, url+HTTPHealthPath, nil)
		r := do(t, nil, req)
		code, msg := errorBody(t, r)
		if r.status != 503 || code != "UNAVAILABLE" || strings.Contains(string(r.body), "10.20.30.40") || !strings.Contains(msg, "online store") {
			t.Errorf("health: %d %s", r.status, r.body)
		}
	}
	if err := svc.Ready(ping)(context.Background()); err == nil || strings.Contains(err.Error(), "10.20.30.40") {
		t.Errorf("gRPC readiness check: %v", err)
	}
	if l := rec.matching("10.20.30.40"); len(l) != 1 {
		t.Errorf("log lines with the store's address: %v, want one", l)
	}
}

// TestTLSReloadWaitsForNotBefore: a certificate not valid yet (issued by a
// clock a little ahead) is refused, and served as soon as it is valid,
// without the files changing again; before, it was set aside for good and
// the old certificate served until it expired.
func TestTLSReloadWaitsForNotBefore(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "server CA")
	certFile, keyFile := tlsFiles(t, dir, ca)
	reg := prometheus.NewRegistry()
	st, err := NewServerTLS(TLSOptions{CertFile: certFile, KeyFile: keyFile, ReloadInterval: time.Nanosecond, Registerer: reg, Logger: slog.New(&logRecorder{})})
	if err != nil {
		t.Fatal(err)
	}
	served := certServedBy(t, st)
	old := served()
	validFrom := time.Now().Add(time.Second)
	cert, key := issueValid(t, ca, validFrom, validFrom.Add(24*time.Hour))
	replaceFile(t, keyFile, key)
	replaceFile(t, certFile, cert)
	if got := served(); got.SerialNumber.Cmp(old.SerialNumber) != 0 {
		t.Fatalf("serving a certificate valid from %v at %v", got.NotBefore, time.Now())
	}
	time.Sleep(time.Until(validFrom) + 100*time.Millisecond)
	if got := served(); got.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Errorf("still serving the old certificate once the new one is valid")
	}
}

// TestPolicyChangeAppliedAfterQuietSpell: the policy file is looked at only
// when used; a change written long before the first use after a quiet
// spell (the file settled) is in force at that use, not one interval later.
func TestPolicyChangeAppliedAfterQuietSpell(t *testing.T) {
	const interval = 100 * time.Millisecond
	path := filepath.Join(t.TempDir(), "policy.yaml")
	policyOf := func(token string) string {
		return "principals:\n  - name: tester\n    token_sha256: [" + hashToken(token) + "]\n" +
			"    grants:\n      - project: payments\n        views: [merchant_txn]\n"
	}
	writePolicy(t, path, policyOf("tok"))
	auth, err := NewAuth(AuthOptions{PolicyFile: path, ReloadInterval: interval, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	writePolicy(t, path, policyOf("tok-new")) // revokes "tok"
	time.Sleep(3 * interval)
	if p := auth.policy.Get().byToken("tok"); p != nil {
		t.Error("the revoked token is still honoured at the first use after the change settled")
	}
}
