package cmd

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

func TestParseFlagsEnvironment(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"default", nil, nil, "127.0.0.1:9465"},
		{"environment", nil, map[string]string{"FEATURESTORE_METRICS_ADDR": ":1"}, ":1"},
		{"set empty turns it off", nil, map[string]string{"FEATURESTORE_METRICS_ADDR": ""}, ""},
		{"flag wins", []string{"--metrics-addr", ":2"}, map[string]string{"FEATURESTORE_METRICS_ADDR": ":1"}, ":2"},
		{"empty flag wins", []string{"--metrics-addr="}, map[string]string{"FEATURESTORE_METRICS_ADDR": ":1"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			addr := fs.String("metrics-addr", "127.0.0.1:9465", "")
			if err := parseFlags(fs, c.args, envMap(c.env)); err != nil {
				t.Fatal(err)
			}
			if *addr != c.want {
				t.Errorf("--metrics-addr = %q, want %q", *addr, c.want)
			}
		})
	}
}

// TestCommandLineOnlyFlags: FEATURESTORE_VERSION (a name deployments use
// for other things) does not set show's --version, nor
// FEATURESTORE_ALLOW_BREAKING apply's --allow-breaking.
func TestCommandLineOnlyFlags(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	version := fs.Int64("version", 0, "")
	allow := fs.Bool("allow-breaking", false, "")
	env := map[string]string{"FEATURESTORE_VERSION": "1.4.2", "FEATURESTORE_ALLOW_BREAKING": "true"}
	if err := parseFlags(fs, nil, envMap(env)); err != nil || *version != 0 || *allow {
		t.Errorf("from the environment: %v, --version %d, --allow-breaking %v; want neither set", err, *version, *allow)
	}
	if err := parseFlags(fs, []string{"--version", "3", "--allow-breaking"}, envMap(env)); err != nil || *version != 3 || !*allow {
		t.Errorf("on the command line: %v, --version %d, --allow-breaking %v", err, *version, *allow)
	}
}

// TestRedisClientLogs: go-redis's own messages (here, a pool that cannot
// dial) come out through the command's logger, in its format, not as plain
// lines on stderr.
func TestRedisClientLogs(t *testing.T) {
	var buf syncBuffer
	l := logFlags{level: "warn", format: "json"}
	if _, err := l.logger(&buf); err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer rc.Close()
	for i := 0; i < 20 && buf.String() == ""; i++ {
		_ = rc.Ping(context.Background()).Err()
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatal("go-redis logged nothing")
	}
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["msg"] != "redis client" || rec["level"] != "WARN" {
			t.Errorf("not a JSON record of the command's logger: %q (%v)", line, err)
		}
	}
}

// TestRedisTimeoutNegative: a --redis-timeout that is not positive is a
// usage error (exit 2, as docs/operations.md says of bad flag values);
// taken, every dial timed out at once, and the command said Redis does not
// answer.
func TestRedisTimeoutNegative(t *testing.T) {
	addr := testenv.RedisAddr(t)
	code, _, errOut := runCLI(t, map[string]string{"FEATURESTORE_REDIS_ADDR": addr}, "versions", "--project", "auditcmd", "--redis-timeout", "-1s")
	if code != 2 || !strings.Contains(errOut, "--redis-timeout") {
		t.Fatalf("versions --redis-timeout -1s against a live Redis at %s: exit %d, want 2 naming --redis-timeout; got:\n%s", addr, code, errOut)
	}
}
