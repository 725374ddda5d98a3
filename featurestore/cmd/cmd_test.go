package cmd

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the binary's Main in-process with the given environment.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runContext(context.Background(), args, &out, &errOut, envMap(env))
	return code, out.String(), errOut.String()
}

// startCommand runs a long-running command (ingest, serve) in-process in
// the background until stop is called, which returns what it wrote to
// standard error.
func startCommand(ctx context.Context, env map[string]string, args ...string) (stop func() string) {
	stop, _ = startCommandLog(ctx, env, args...)
	return stop
}

// startCommandLog is startCommand, also returning a function that returns
// the command's standard error so far.
func startCommandLog(ctx context.Context, env map[string]string, args ...string) (stop, log func() string) {
	ctx, cancel := context.WithCancel(ctx)
	var errOut syncBuffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		runContext(ctx, args, io.Discard, &errOut, envMap(env))
	}()
	return func() string {
		cancel()
		<-done
		return errOut.String()
	}, errOut.String
}

func TestValidate(t *testing.T) {
	code, out, errOut := runCLI(t, nil, "validate", "../../examples")
	if code != 0 || !strings.Contains(out, "valid: 2 entities, 1 source, 2 feature views") {
		t.Fatalf("validate examples: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, nil, "validate", "testdata/broken")
	want := `testdata/broken/entities.yaml:5:11: entity "card": join key "card_id": type: unknown join key type "uuid" (one of: string, int64)
testdata/broken/views.yaml:4:9: feature view "card_txn": unknown source "card_transactions"
testdata/broken/views.yaml:10:13: feature view "card_txn": feature "amount_sum_1h": window 1m30s is not a multiple of tile 1m
3 error(s) in testdata/broken.
`
	if code != 1 || errOut != want || out != "" {
		t.Fatalf("validate broken: exit %d\nstdout:\n%s\nstderr:\n%s\nwant stderr:\n%s", code, out, errOut, want)
	}
	if code, _, _ := runCLI(t, nil, "validate"); code != 2 {
		t.Errorf("validate without a directory: exit %d, want 2", code)
	}
	// Plan applies nothing either way; only apply says so.
	code, out, errOut = runCLI(t, map[string]string{"FEATURESTORE_REGISTRY": "file:" + t.TempDir()}, "plan", "testdata/broken")
	if code != 1 || !strings.HasSuffix(errOut, "3 error(s) in testdata/broken.\n") {
		t.Fatalf("plan broken: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

func TestPlanApplyPlan(t *testing.T) {
	env := map[string]string{"FEATURESTORE_REGISTRY": "file:" + t.TempDir()}
	code, out, errOut := runCLI(t, env, "plan", "../../examples")
	if code != 0 || !strings.Contains(out, "against an empty registry") || !strings.Contains(out, "Plan: 9 to create, 0 to change, 0 to delete.") {
		t.Fatalf("first plan: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, env, "apply", "--message", "first", "../../examples")
	if code != 0 || !strings.Contains(out, "Applied registry version 1 (sha256:") {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, env, "plan", "--detailed-exitcode", "../../examples")
	if code != 0 || !strings.Contains(out, "against registry version 1") || !strings.HasSuffix(out, "No changes.\n") {
		t.Fatalf("plan after apply: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, env, "apply", "../../examples")
	if code != 0 || !strings.Contains(out, "Registry version 1 is current; nothing to apply.") {
		t.Fatalf("second apply: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, env, "versions")
	if code != 0 || !strings.Contains(out, "VERSION") || !strings.Contains(out, "first") {
		t.Fatalf("versions: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, env, "show")
	if code != 0 || !strings.Contains(out, `"feature_views"`) {
		t.Fatalf("show: exit %d\n%s", code, out)
	}
}

func TestApplyRefusesBrokenAndBreaking(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"FEATURESTORE_REGISTRY": "file:" + dir}
	if code, _, errOut := runCLI(t, env, "apply", "testdata/broken"); code != 1 || !strings.Contains(errOut, "nothing was applied") {
		t.Fatalf("apply broken: exit %d\n%s", code, errOut)
	}
	if code, out, _ := runCLI(t, env, "versions"); code != 0 || !strings.Contains(out, "No versions") {
		t.Fatalf("a broken directory must apply nothing:\n%s", out)
	}
	defs := copyDir(t, "../../examples")
	if code, out, errOut := runCLI(t, env, "apply", defs); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	edit(t, filepath.Join(defs, "card_features.yaml"), "window: 10m", "window: 15m")
	code, out, errOut := runCLI(t, env, "apply", defs)
	if code != 1 || !strings.Contains(out, "[BREAKING]") || !strings.Contains(errOut, "breaking changes") {
		t.Fatalf("breaking apply: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, env, "apply", "--allow-breaking", defs)
	if code != 0 || !strings.Contains(out, "Applied registry version 2") {
		t.Fatalf("allowed breaking apply: exit %d\n%s%s", code, out, errOut)
	}
}

func TestHelpAndUsage(t *testing.T) {
	for _, c := range commands() {
		code, out, _ := runCLI(t, nil, c.name, "--help")
		if code != 0 || !strings.Contains(out, "Usage: featurestore "+c.name) {
			t.Errorf("%s --help: exit %d\n%s", c.name, code, out)
		}
	}
	code, out, _ := runCLI(t, nil, "plan", "--help")
	if code != 0 || !strings.Contains(out, "[FEATURESTORE_REDIS_ADDR]") {
		t.Errorf("plan --help must name the environment variables:\n%s", out)
	}
	if code, _, errOut := runCLI(t, nil, "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, nil, "plan", "--no-such-flag", "x"); code != 2 || !strings.Contains(errOut, "no-such-flag") {
		t.Errorf("unknown flag: exit %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, map[string]string{"FEATURESTORE_REDIS_TIMEOUT": "soon"}, "versions"); code != 2 || !strings.Contains(errOut, "FEATURESTORE_REDIS_TIMEOUT") {
		t.Errorf("bad environment value: exit %d %s", code, errOut)
	}
	for _, name := range []string{"schema", "version"} {
		if code, out, errOut := runCLI(t, nil, name, "extra"); code != 2 || out != "" || !strings.Contains(errOut, name+" takes no arguments") {
			t.Errorf("%s with an argument: exit %d %s%s", name, code, out, errOut)
		}
	}
	if code, out, _ := runCLI(t, nil); code != 0 || !strings.Contains(out, "Commands:") {
		t.Errorf("no arguments: exit %d %s", code, out)
	}
}

func TestFlagsBeatEnvironment(t *testing.T) {
	dirFlag, dirEnv := t.TempDir(), t.TempDir()
	env := map[string]string{"FEATURESTORE_REGISTRY": "file:" + dirEnv}
	if code, out, errOut := runCLI(t, env, "apply", "--registry", "file:"+dirFlag, "../../examples"); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	if _, out, _ := runCLI(t, env, "versions"); !strings.Contains(out, "No versions") {
		t.Errorf("the flag must win over the environment; the env registry has:\n%s", out)
	}
}
