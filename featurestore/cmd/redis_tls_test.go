package cmd

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestRedisTLS runs commands against a redis-server that speaks TLS only
// and requires client certificates: with --redis-tls-ca and the client
// certificate they work; without the certificate, or trusting another CA,
// they fail saying why; files that do not load are usage errors naming the
// flag.
func TestRedisTLS(t *testing.T) {
	pki := newTestPKI(t)
	addr := testenv.RedisTLS(t, pki.certFile, pki.keyFile, pki.caFile)
	dir := t.TempDir()
	clientCert, clientKey := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	key, err := x509.MarshalPKCS8PrivateKey(pki.client.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	for path, b := range map[string][]byte{
		clientCert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pki.client.Certificate[0]}),
		clientKey:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
	} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := func(extra ...string) map[string]string {
		m := map[string]string{"FEATURESTORE_REDIS_ADDR": addr, "FEATURESTORE_PROJECT": testenv.UniqueName(t, "p")}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	secured := env("FEATURESTORE_REDIS_TLS_CA", pki.caFile, "FEATURESTORE_REDIS_TLS_CERT", clientCert, "FEATURESTORE_REDIS_TLS_KEY", clientKey)
	if code, out, errOut := runCLI(t, secured, "apply", "../../examples"); code != 0 {
		t.Fatalf("apply over TLS: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runCLI(t, secured, "plan", "../../examples"); code != 0 || !strings.Contains(out, "No changes") {
		t.Fatalf("plan over TLS: exit %d\n%s%s", code, out, errOut)
	}

	for _, tt := range []struct {
		name string
		env  map[string]string
		code int
		says string
	}{
		{"plaintext", env(), 1, "does not answer"},
		{"no client certificate", env("FEATURESTORE_REDIS_TLS_CA", pki.caFile), 1, "does not answer"},
		{"another CA", env("FEATURESTORE_REDIS_TLS_CA", newTestPKI(t).caFile, "FEATURESTORE_REDIS_TLS_CERT", clientCert, "FEATURESTORE_REDIS_TLS_KEY", clientKey),
			1, "certificate signed by unknown authority"},
		{"key without certificate", env("FEATURESTORE_REDIS_TLS_KEY", clientKey), 2, "--redis-tls-key needs --redis-tls-cert"},
		{"CA not PEM", env("FEATURESTORE_REDIS_TLS_CA", clientKey), 2, "--redis-tls-ca: " + clientKey + " holds no PEM certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.env, "plan", "../../examples")
			if code != tt.code || !strings.Contains(errOut, tt.says) {
				t.Errorf("exit %d, want %d saying %q\n%s%s", code, tt.code, tt.says, out, errOut)
			}
		})
	}
}

// writeKeyPair writes a certificate and its key as PEM files.
func writeKeyPair(t *testing.T, cert tls.Certificate, certFile, keyFile string) {
	t.Helper()
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	replaceTestFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}))
	replaceTestFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}))
}

// replaceTestFile replaces a file's content by a rename, as a secret
// mounted by Kubernetes or a certificate renewal replaces it.
func replaceTestFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// eventually calls f until it returns nil, for at most 10 seconds, and
// returns its last error.
func eventually(f func() error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTLSClientFilesRotate: the CA and client certificate files of a TLS
// client are read again when they change, and each new connection uses
// what they hold then, against a real redis-server that requires client
// certificates; content that does not load leaves the previous in use.
func TestTLSClientFilesRotate(t *testing.T) {
	pki, other := newTestPKI(t), newTestPKI(t)
	addr := testenv.RedisTLS(t, pki.certFile, pki.keyFile, pki.caFile)
	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	caPEM := func(p *testPKI) []byte {
		b, err := os.ReadFile(p.caFile)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// To begin with, the CA of another PKI: the server's certificate does
	// not chain to it.
	replaceTestFile(t, caFile, caPEM(other))
	writeKeyPair(t, pki.client, certFile, keyFile)
	f := tlsClientFiles{service: "redis", ca: caFile, cert: certFile, key: keyFile, interval: 10 * time.Millisecond}
	d, err := f.dialer(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ping := func() error {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return err
		}
		if line != "+PONG\r\n" {
			return fmt.Errorf("reply %q", line)
		}
		return nil
	}
	if err := ping(); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("with another CA: %v", err)
	}
	replaceTestFile(t, caFile, caPEM(pki))
	if err := eventually(ping); err != nil {
		t.Fatalf("once the CA file holds the server's CA: %v", err)
	}
	// A client certificate of another CA: the server refuses it.
	writeKeyPair(t, other.client, certFile, keyFile)
	if err := eventually(func() error {
		if ping() == nil {
			return errors.New("still accepted")
		}
		return nil
	}); err != nil {
		t.Fatalf("with a client certificate the server does not trust: %v", err)
	}
	// A key that does not match the certificate: the previous pair stays,
	// and the server still refuses it.
	key, _ := os.ReadFile(keyFile)
	writeKeyPair(t, pki.client, certFile, keyFile)
	replaceTestFile(t, keyFile, key)
	time.Sleep(100 * time.Millisecond)
	if err := ping(); err == nil {
		t.Fatal("a certificate with the key of another was put in use")
	}
	writeKeyPair(t, pki.client, certFile, keyFile)
	if err := eventually(ping); err != nil {
		t.Fatalf("once the pair is right again: %v", err)
	}
}
