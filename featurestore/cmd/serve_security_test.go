package cmd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/featurestore/featurestore/featurestore/testenv"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// testPKI is a CA with one server certificate for 127.0.0.1 and one client
// certificate, written as PEM files to a directory.
type testPKI struct {
	caFile, certFile, keyFile string
	roots                     *x509.CertPool
	client                    tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, IPAddresses: ips,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		k, _ := x509.MarshalPKCS8PrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})
	}
	p := &testPKI{caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "server.pem"), keyFile: filepath.Join(dir, "server-key.pem"), roots: x509.NewCertPool()}
	p.roots.AddCert(ca)
	sc, sk := leaf(2, "featurestore", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	for path, b := range map[string][]byte{p.caFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), p.certFile: sc, p.keyFile: sk} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cc, ck := leaf(3, "fraud-scoring", x509.ExtKeyUsageClientAuth, nil)
	if p.client, err = tls.X509KeyPair(cc, ck); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestServeSecure runs 'featurestore serve' with mutual TLS and an access
// policy against real Redis: health checks need no token, lookups need one
// granted the views they read.
func TestServeSecure(t *testing.T) {
	pki := newTestPKI(t)
	project := testenv.UniqueName(t, "serve-secure")
	env := map[string]string{
		"FEATURESTORE_REGISTRY":     "file:" + t.TempDir(),
		"FEATURESTORE_REDIS_ADDR":   testenv.RedisAddr(t),
		"FEATURESTORE_PROJECT":      project,
		"FEATURESTORE_METRICS_ADDR": "",
	}
	if code, out, errOut := runCLI(t, env, "apply", "../../examples"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("tok-scoring\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, hash, errOut := runCLI(t, nil, "token", "hash", tokFile)
	if code != 0 {
		t.Fatalf("token hash: exit %d\n%s", code, errOut)
	}
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, fmt.Appendf(nil, "principals:\n  - name: fraud-scoring\n    token_sha256: [%s]\n    grants: [{project: %s, views: [card_txn]}]\n", strings.TrimSpace(hash), project), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- runContext(ctx, []string{"serve", "--grpc-addr", addr, "--http-addr", "", "--tls-cert", pki.certFile, "--tls-key", pki.keyFile,
			"--tls-client-ca", pki.caFile, "--auth-policy", policy}, &bytes.Buffer{}, &stderr, envMap(env))
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pki.roots, Certificates: []tls.Certificate{pki.client}})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitServing(t, conn, 10*time.Second, stderr.String)
	client := pb.NewOnlineServiceClient(conn)
	get := func(ctx context.Context, ref, key string) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := client.GetOnlineFeatures(ctx, &pb.GetOnlineFeaturesRequest{
			Kind:     &pb.GetOnlineFeaturesRequest_Features{Features: &pb.FeatureList{Refs: []string{ref}}},
			Entities: []*pb.EntityKey{{JoinKeyValues: []*pb.Value{{Kind: &pb.Value_StringVal{StringVal: key}}}}},
		})
		return err
	}
	withToken := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer tok-scoring")
	if err := get(ctx, "card_txn:txn_count_1h", "c1"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("lookup without a token: %v", err)
	}
	if err := get(withToken, "card_txn:txn_count_1h", "c1"); err != nil {
		t.Errorf("lookup of a granted view: %v", err)
	}
	if err := get(withToken, "merchant_txn:txn_count_1h", "m1"); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `feature view "merchant_txn"`) {
		t.Errorf("lookup of a view not granted: %v", err)
	}
	plain, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pki.roots})))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := healthpb.NewHealthClient(plain).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("health check without a client certificate: %v", err)
	}
	cancel()
	waitStopped(t, done, stderr.String)
	if strings.Contains(stderr.String(), "tok-scoring") {
		t.Error("the token is in the log")
	}
}

func TestServeSecurityUsage(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--tls-cert", "c.pem"},
		{"serve", "--tls-key", "k.pem"},
		{"serve", "--tls-client-ca", "ca.pem"},
	} {
		if code, _, errOut := runCLI(t, nil, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2\n%s", args, code, errOut)
		}
	}
}
