package cmd

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestSecondProcessSeesNewVersion runs 'featurestore watch' as a separate
// process against real Redis, applies versions from this process, and checks
// that the watcher reports each one. The delay is logged; the contract is 2 s.
func TestSecondProcessSeesNewVersion(t *testing.T) {
	redisAddr := testenv.RedisAddr(t)
	project := strings.NewReplacer("/", "-", ".", "-").Replace(testenv.UniqueName(t, "watch"))
	bin := filepath.Join(t.TempDir(), "featurestore")
	build := exec.Command("go", "build", "-o", bin, "../..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	watch := exec.CommandContext(ctx, bin, "watch", "--log-level", "warn")
	watch.Env = append(os.Environ(), "FEATURESTORE_REDIS_ADDR="+redisAddr, "FEATURESTORE_PROJECT="+project)
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	watch.Stderr = os.Stderr
	if err := testenv.StartTied(watch); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = watch.Wait()
	}()
	lines := make(chan string, 16)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	next := func(prefix string) time.Time {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("watch exited before printing %q", prefix)
				}
				if strings.HasPrefix(l, prefix) {
					return time.Now()
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("watch did not print %q within 10s", prefix)
			}
		}
	}
	next("no version yet")

	env := map[string]string{"FEATURESTORE_REDIS_ADDR": redisAddr, "FEATURESTORE_PROJECT": project}
	defs := copyDir(t, "../../examples")
	for i, change := range []func(){
		func() {},
		func() { edit(t, filepath.Join(defs, "card_features.yaml"), "window: 10m", "window: 20m") },
	} {
		change()
		applied := time.Now()
		if code, out, errOut := runCLI(t, env, "apply", "--allow-breaking", defs); code != 0 {
			t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
		}
		seen := next("version " + string(rune('1'+i)) + " ")
		t.Logf("the watch process saw version %d %v after apply returned", i+1, seen.Sub(applied))
	}
}
