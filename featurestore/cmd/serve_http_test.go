package cmd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/featurestore/featurestore/featurestore/testenv"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeHTTP runs 'featurestore serve' against real Redis and looks
// features up over its HTTP port: in plaintext, and with mutual TLS and an
// access policy, which the HTTP port must enforce as the gRPC one does.
func TestServeHTTP(t *testing.T) {
	lookup := func(ref string) string {
		return `{"features": {"refs": ["` + ref + `"]}, "entities": [{"join_key_values": [{"string_val": "no-such-card"}]}]}`
	}
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("secure=%v", secure), func(t *testing.T) {
			project := testenv.UniqueName(t, "serve-http")
			env := map[string]string{
				"FEATURESTORE_REGISTRY":   "file:" + t.TempDir(),
				"FEATURESTORE_REDIS_ADDR": testenv.RedisAddr(t),
				"FEATURESTORE_PROJECT":    project,
			}
			if code, out, errOut := runCLI(t, env, "apply", "../../examples"); code != 0 {
				t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
			}
			httpAddr := freeAddr(t)
			// An empty environment variable does not unset a flag: give it.
			args := []string{"serve", "--metrics-addr", "", "--grpc-addr", freeAddr(t), "--http-addr", httpAddr, "--http-max-body-bytes", "2048"}
			url := "http://" + httpAddr
			hc := &http.Client{Timeout: 5 * time.Second}
			var pki *testPKI
			if secure {
				pki = newTestPKI(t)
				tokFile := filepath.Join(t.TempDir(), "token")
				if err := os.WriteFile(tokFile, []byte("tok-scoring"), 0o600); err != nil {
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
				args = append(args, "--tls-cert", pki.certFile, "--tls-key", pki.keyFile, "--tls-client-ca", pki.caFile, "--auth-policy", policy)
				url = "https://" + httpAddr
				hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.roots, Certificates: []tls.Certificate{pki.client}}}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stderr syncBuffer
			done := make(chan int, 1)
			go func() {
				done <- runContext(ctx, args, &bytes.Buffer{}, &stderr, envMap(env))
			}()
			// Health needs no token, and says when the server is ready.
			deadline := time.Now().Add(10 * time.Second)
			for {
				resp, err := hc.Get(url + "/healthz")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("serve's /healthz not ready: %v\n%s", err, stderr.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			post := func(body, token string) (int, http.Header, []byte) {
				t.Helper()
				req, _ := http.NewRequest(http.MethodPost, url+"/v1/features:get", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatalf("POST: %v", err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, resp.Header, b
			}
			errorCode := func(b []byte) string {
				var e struct{ Code, Message string }
				json.Unmarshal(b, &e)
				return e.Code + ": " + e.Message
			}
			token := ""
			if secure {
				if code, h, b := post(lookup("card_txn:txn_count_1h"), ""); code != 401 || !strings.HasPrefix(errorCode(b), "UNAUTHENTICATED") || h.Get("WWW-Authenticate") == "" {
					t.Errorf("no token: %d %s %q", code, b, h.Get("WWW-Authenticate"))
				}
				if code, _, b := post(lookup("merchant_txn:txn_count_1h"), "tok-scoring"); code != 403 || !strings.Contains(errorCode(b), `PERMISSION_DENIED: principal "fraud-scoring" may not read feature view "merchant_txn"`) {
					t.Errorf("a view not granted: %d %s", code, b)
				}
				noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.roots}}}
				if resp, err := noCert.Get(url + "/healthz"); err == nil {
					resp.Body.Close()
					t.Errorf("no client certificate: got %d, want a failed handshake", resp.StatusCode)
				}
				token = "tok-scoring"
			}
			code, _, b := post(lookup("card_txn:txn_count_1h"), token)
			var resp pb.GetOnlineFeaturesResponse
			if err := protojson.Unmarshal(b, &resp); code != 200 || err != nil {
				t.Fatalf("lookup: %d %v %s", code, err, b)
			}
			if v := resp.GetResults()[0].GetValues()[0]; v.GetStatus() != pb.FeatureStatus_FEATURE_STATUS_PRESENT || v.GetValue().GetInt64Val() != 0 || resp.GetRegistryVersion() != 1 {
				t.Errorf("unknown card: %v, registry version %d", v, resp.GetRegistryVersion())
			}
			if code, _, b := post(lookup(strings.Repeat("x", 2048)), token); code != 413 || !strings.HasPrefix(errorCode(b), "RESOURCE_EXHAUSTED: request body larger than 2048 bytes") {
				t.Errorf("body over --http-max-body-bytes: %d %s", code, b)
			}
			cancel()
			waitStopped(t, done, stderr.String)
			if strings.Contains(stderr.String(), "tok-scoring") {
				t.Error("the token is in the log")
			}
		})
	}
}

func TestServeHTTPUsage(t *testing.T) {
	if code, _, errOut := runCLI(t, nil, "serve", "--http-max-body-bytes", "0"); code != 2 || !strings.Contains(errOut, "--http-max-body-bytes must be positive") {
		t.Errorf("--http-max-body-bytes 0: exit %d, want 2\n%s", code, errOut)
	}
	// A port in use stops the server, gRPC included, with an error.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	env := map[string]string{
		"FEATURESTORE_REGISTRY":   "file:" + t.TempDir(),
		"FEATURESTORE_REDIS_ADDR": testenv.RedisAddr(t),
	}
	code, _, errOut := runCLI(t, env, "serve", "--metrics-addr", "", "--grpc-addr", freeAddr(t), "--http-addr", busy.Addr().String())
	if code != 1 || !strings.Contains(errOut, "http listener on "+busy.Addr().String()) {
		t.Errorf("--http-addr in use: exit %d, want 1\n%s", code, errOut)
	}
}
