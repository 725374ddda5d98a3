package cmd

import (
	"strings"
	"testing"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestRedisSentinelTLS: behind Sentinel, --redis-tls-ca applies to the
// Sentinels and to the master alike, every server speaking TLS only:
// apply and plan work, and without the CA they fail saying why.
func TestRedisSentinelTLS(t *testing.T) {
	pki := newTestPKI(t)
	sr := testenv.RedisSentinelTLS(t, pki.certFile, pki.keyFile, pki.caFile)
	env := map[string]string{"FEATURESTORE_REDIS_ADDR": sr.Sentinel, "FEATURESTORE_REDIS_SENTINEL_MASTER": sr.Master,
		"FEATURESTORE_PROJECT": testenv.UniqueName(t, "p"), "FEATURESTORE_REDIS_TLS_CA": pki.caFile}
	if code, out, errOut := runCLI(t, env, "apply", "../../examples"); code != 0 {
		t.Fatalf("apply through Sentinel over TLS: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runCLI(t, env, "plan", "../../examples"); code != 0 || !strings.Contains(out, "No changes") {
		t.Fatalf("plan through Sentinel over TLS: exit %d\n%s%s", code, out, errOut)
	}
	delete(env, "FEATURESTORE_REDIS_TLS_CA")
	env["FEATURESTORE_REDIS_TLS"] = "true" // the system's roots
	if code, out, errOut := runCLI(t, env, "plan", "../../examples"); code == 0 || !strings.Contains(errOut, "certificate signed by unknown authority") {
		t.Errorf("plan trusting the system's roots: exit %d, want a failure naming the certificate\n%s%s", code, out, errOut)
	}
}
