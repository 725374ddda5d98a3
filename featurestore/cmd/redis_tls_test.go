package cmd

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
