package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer returns the path of the redis-server binary that
// .ci/services.sh installs; without it the test skips, or fails where
// RequireServices is true.
func redisServer(t testing.TB, what string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if RequireServices() {
			t.Fatalf("redis-server is not on PATH; it is needed for %s (%s): %v", what, hint, err)
		}
		t.Skipf("redis-server is not on PATH; skipping %s: %v", what, err)
	}
	return bin
}

// startRedis starts a redis-server with args, without persistence, its
// working directory and log in dir; it stops when the test ends, and its
// log, named by label, is shown if the test failed.
func startRedis(t testing.TB, bin, dir, label string, args ...string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append(args, "--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no")...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("log of %s:\n%s", label, b)
			}
		}
	})
}

// RedisOwn starts a redis-server of the test's own on a free loopback port,
// with the extra configuration args (such as "--maxmemory", "64mb"), for
// tests that change what the shared one's other users rely on. It returns
// its address once it answers, and stops when the test ends.
func RedisOwn(t testing.TB, args ...string) string {
	t.Helper()
	bin := redisServer(t, "a test with a Redis of its own")
	dir := t.TempDir()
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	startRedis(t, bin, dir, "the redis-server "+addr, append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port)}, args...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	if err := waitFor(ctx, func() error { return c.Ping(ctx).Err() }); err != nil {
		t.Fatalf("the redis-server at %s does not answer: %v", addr, err)
	}
	return addr
}

// RedisTLS starts a redis-server that speaks TLS only, on a free loopback
// port, with the server certificate and key of the given PEM files, and
// that requires client certificates chaining to caFile. It returns its
// address once it accepts connections, and stops when the test ends.
func RedisTLS(t testing.TB, certFile, keyFile, caFile string) string {
	t.Helper()
	bin := redisServer(t, "the Redis TLS test")
	dir := t.TempDir()
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	startRedis(t, bin, dir, "the TLS redis-server "+addr, "--bind", "127.0.0.1", "--port", "0", "--tls-port", strconv.Itoa(port),
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "yes")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitFor(ctx, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("the TLS redis-server at %s does not accept connections: %v", addr, err)
	}
	return addr
}

// RedisCluster starts a Redis Cluster of the given number of masters (no
// replicas) from the redis-server binary that .ci/services.sh installs, on
// free loopback ports, waits until every node agrees the cluster is ready,
// and stops it when the test ends. It returns the nodes' addresses.
//
// Like the other services it skips on a developer's machine without the
// binary, and fails where RequireServices is true. It also skips under
// -short: starting the nodes takes a second or two.
func RedisCluster(t testing.TB, nodes int) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not starting a Redis Cluster")
	}
	bin := redisServer(t, "the Redis Cluster test")
	dir := t.TempDir()
	addrs := make([]string, nodes)
	for i := range nodes {
		port := freePort(t)
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		nodeDir := filepath.Join(dir, strconv.Itoa(i))
		if err := os.Mkdir(nodeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		startRedis(t, bin, nodeDir, "node "+addrs[i], "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--protected-mode", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(nodeDir, "nodes.conf"))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clients := make([]*redis.Client, nodes)
	for i, a := range addrs {
		clients[i] = redis.NewClient(&redis.Options{Addr: a})
		defer clients[i].Close()
		if err := waitFor(ctx, func() error { return clients[i].Ping(ctx).Err() }); err != nil {
			t.Fatalf("node %s does not answer: %v", a, err)
		}
	}
	for i, c := range clients {
		first, last := i*16384/nodes, (i+1)*16384/nodes-1
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last).Err(); err != nil {
			t.Fatalf("node %s: CLUSTER ADDSLOTSRANGE %d %d: %v", addrs[i], first, last, err)
		}
		if i > 0 {
			host, port, _ := net.SplitHostPort(addrs[i])
			if err := clients[0].ClusterMeet(ctx, host, port).Err(); err != nil {
				t.Fatalf("CLUSTER MEET %s: %v", addrs[i], err)
			}
		}
	}
	for i, c := range clients {
		err := waitFor(ctx, func() error {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", nodes)) {
				return fmt.Errorf("not ready: %s", info)
			}
			shards, err := c.ClusterShards(ctx).Result()
			if err != nil {
				return err
			}
			for _, sh := range shards {
				if len(sh.Slots) == 0 || len(sh.Nodes) == 0 {
					return fmt.Errorf("node sees a shard without slots or nodes: %+v", sh)
				}
			}
			if len(shards) != nodes {
				return fmt.Errorf("node sees %d shards", len(shards))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("cluster not ready at %s: %v", addrs[i], err)
		}
	}
	return addrs
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitFor(ctx context.Context, check func() error) error {
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last: %v", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
