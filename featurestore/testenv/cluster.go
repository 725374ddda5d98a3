package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// RedisNode is a redis-server of the test's own.
type RedisNode struct {
	Addr string

	mu    sync.Mutex
	t     testing.TB
	cmd   *exec.Cmd
	start func() *exec.Cmd
	label string
}

// startRedis starts a redis-server with args, without persistence, its
// working directory and log in dir; it stops when the test ends, and its
// log, named by label, is shown if the test failed.
func startRedis(t testing.TB, bin, dir, label string, args ...string) *RedisNode {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	n := &RedisNode{t: t, label: label}
	n.start = func() *exec.Cmd {
		cmd := exec.Command(bin, append(args, "--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no")...)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := StartTied(cmd); err != nil {
			t.Fatalf("start %s: %v", bin, err)
		}
		return cmd
	}
	n.cmd = n.start()
	t.Cleanup(func() {
		n.Kill()
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("log of %s:\n%s", label, b)
			}
		}
	})
	return n
}

// awaitPing waits, 10 s at most, until the server answers PING, over TLS
// with tlsConf when it is set, and fails the test otherwise.
func (n *RedisNode) awaitPing(t testing.TB, tlsConf *tls.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: n.Addr, TLSConfig: tlsConf})
	defer c.Close()
	if err := waitFor(ctx, func() error { return c.Ping(ctx).Err() }); err != nil {
		t.Fatalf("%s does not answer: %v", n.label, err)
	}
}

// Kill kills the server with SIGKILL, as a crash would, and waits until it
// has exited. It may be called more than once.
func (n *RedisNode) Kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Kill()
		_ = n.cmd.Wait()
		n.cmd = nil
	}
}

// Restart starts a killed server again, with the same arguments and
// directory (a Cluster node keeps its nodes.conf), and empty (no
// persistence).
func (n *RedisNode) Restart() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		n.t.Fatalf("restart %s: it is running", n.label)
	}
	n.cmd = n.start()
}

// Pause stops the server (SIGSTOP) until Resume: it holds its connections
// and answers nothing, as a server stuck or cut off from the network.
func (n *RedisNode) Pause() { n.signal(syscall.SIGSTOP) }

// Resume lets a paused server go on (SIGCONT).
func (n *RedisNode) Resume() { n.signal(syscall.SIGCONT) }

func (n *RedisNode) signal(sig os.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		n.t.Fatalf("signal %s: it is not running", n.label)
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatalf("signal %s: %v", n.label, err)
	}
}

// RedisOwn starts a redis-server of the test's own on a free loopback port,
// with the extra configuration args (such as "--maxmemory", "64mb"), for
// tests that change what the shared one's other users rely on. It returns
// its address once it answers, and stops when the test ends.
func RedisOwn(t testing.TB, args ...string) string {
	t.Helper()
	return RedisOwnNode(t, args...).Addr
}

// RedisOwnNode is RedisOwn, returning the server, which the test may kill,
// pause and resume.
func RedisOwnNode(t testing.TB, args ...string) *RedisNode {
	t.Helper()
	bin := redisServer(t, "a test with a Redis of its own")
	dir := t.TempDir()
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	n := startRedis(t, bin, dir, "the redis-server "+addr, append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port)}, args...)...)
	n.Addr = addr
	n.awaitPing(t, nil)
	return n
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
	return startCluster(t, nodes, false).Masters
}

// ReplicatedCluster is a Redis Cluster whose masters each have a replica
// (RedisClusterReplicated).
type ReplicatedCluster struct {
	// Masters are the masters' addresses, Replicas[i] that of Masters[i]'s
	// replica.
	Masters, Replicas []string
	nodes             map[string]*RedisNode
	// start starts a node of the cluster's configuration, not yet in it.
	start func(testing.TB) string
}

// AddMaster starts another node, joins it to the cluster as a master
// without slots (redis-cli --cluster add-node), and returns its address
// once every node agrees on the cluster's configuration. Masters lists it
// from then on.
func (c *ReplicatedCluster) AddMaster(t testing.TB) string {
	t.Helper()
	addr := c.start(t)
	c.nodes[addr].awaitPing(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := redis.NewClient(&redis.Options{Addr: addr})
	defer cl.Close()
	redisCLI(t, "--cluster", "add-node", addr, c.Masters[0])
	id, err := cl.ClusterMyID(ctx).Result()
	if err != nil {
		t.Fatalf("node %s: CLUSTER MYID: %v", addr, err)
	}
	// Every node must know it (by gossip), and it the slots' owners
	// (cluster_state:ok), before slots can move to it.
	for a, n := range c.nodes {
		if n.cmd == nil {
			continue
		}
		other := redis.NewClient(&redis.Options{Addr: a})
		err := waitFor(ctx, func() error {
			nodes, err := other.ClusterNodes(ctx).Result()
			if err == nil && !strings.Contains(nodes, id) {
				return fmt.Errorf("node %s does not know %s yet", a, addr)
			}
			info, err := other.ClusterInfo(ctx).Result()
			if err == nil && !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("node %s: %s", a, info)
			}
			return err
		})
		other.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := checkCluster(addr); err != nil {
		t.Fatal(err)
	}
	c.Masters = append(c.Masters, addr)
	return addr
}

// checkCluster waits, a minute at most, until redis-cli --cluster check
// passes from the node at addr: every node agrees on the slots' owners,
// which they learn by gossip, no slot is open, all are covered.
func checkCluster(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return waitFor(ctx, func() error {
		_, err := runRedisCLI("--cluster", "check", addr)
		return err
	})
}

// Reshard moves n slots from the other masters to the master at to, keys
// and all, while the cluster serves (redis-cli --cluster reshard: each slot
// marked migrating and importing, its keys moved with MIGRATE, then given
// to to), and returns once it is done and the cluster checks out. It may
// run in a goroutine of its own: it reports failure as an error.
func (c *ReplicatedCluster) Reshard(to string, n int) error {
	cl := redis.NewClient(&redis.Options{Addr: to})
	defer cl.Close()
	id, err := cl.ClusterMyID(context.Background()).Result()
	if err != nil {
		return fmt.Errorf("node %s: CLUSTER MYID: %w", to, err)
	}
	if _, err := runRedisCLI("--cluster", "reshard", to, "--cluster-from", "all", "--cluster-to", id,
		"--cluster-slots", strconv.Itoa(n), "--cluster-yes"); err != nil {
		return err
	}
	return checkCluster(to)
}

// redisCLI runs redis-cli with args, and fails the test with its output
// if it fails. It needs the redis-cli that .ci/services.sh installs.
func redisCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runRedisCLI(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func runRedisCLI(args ...string) (string, error) {
	bin, err := exec.LookPath("redis-cli")
	if err != nil {
		return "", fmt.Errorf("redis-cli is not on PATH (%s): %w", hint, err)
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("redis-cli %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Kill kills the node at addr with SIGKILL, as a crash would, and waits
// until it has exited. A killed master's replica takes its slots over
// about two seconds later (cluster-node-timeout 1s).
func (c *ReplicatedCluster) Kill(addr string) { c.Node(addr).Kill() }

// Node returns the node at addr, to pause, resume or restart it. A killed
// master started again comes back empty, and as a replica of the node that
// took its slots over.
func (c *ReplicatedCluster) Node(addr string) *RedisNode {
	n := c.nodes[addr]
	if n == nil {
		panic("testenv: no cluster node at " + addr)
	}
	return n
}

// RedisClusterReplicated is RedisCluster with a replica per master, which
// fails over when its master has been unreachable for a second. Every
// replica is in sync with its master when it returns.
func RedisClusterReplicated(t testing.TB, masters int) *ReplicatedCluster {
	t.Helper()
	return startCluster(t, masters, true)
}

func startCluster(t testing.TB, masters int, replicated bool) *ReplicatedCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not starting a Redis Cluster")
	}
	bin := redisServer(t, "the Redis Cluster test")
	dir := t.TempDir()
	nodes := masters
	if replicated {
		nodes *= 2
	}
	c := &ReplicatedCluster{nodes: map[string]*RedisNode{}}
	c.start = func(t testing.TB) string {
		t.Helper()
		port := freePort(t)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		nodeDir := filepath.Join(dir, strconv.Itoa(len(c.nodes)))
		if err := os.Mkdir(nodeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		args := []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--protected-mode", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(nodeDir, "nodes.conf")}
		if replicated {
			// Fail over a second after a master stops answering, whatever
			// the replica's last contact with it; replicas sync at once
			// (diskless syncs wait 5 s by default for more replicas).
			args = append(args, "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
				"--repl-diskless-sync-delay", "0")
		}
		n := startRedis(t, bin, nodeDir, "node "+addr, args...)
		n.Addr = addr
		c.nodes[addr] = n
		return addr
	}
	addrs := make([]string, nodes)
	for i := range nodes {
		addrs[i] = c.start(t)
	}
	c.Masters, c.Replicas = addrs[:masters], addrs[masters:]

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clients := make([]*redis.Client, nodes)
	for i, a := range addrs {
		clients[i] = redis.NewClient(&redis.Options{Addr: a})
		defer clients[i].Close()
		if err := waitFor(ctx, func() error { return clients[i].Ping(ctx).Err() }); err != nil {
			t.Fatalf("node %s does not answer: %v", a, err)
		}
	}
	for i, cl := range clients {
		if i < masters {
			first, last := i*16384/masters, (i+1)*16384/masters-1
			if err := cl.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last).Err(); err != nil {
				t.Fatalf("node %s: CLUSTER ADDSLOTSRANGE %d %d: %v", addrs[i], first, last, err)
			}
		}
		if i > 0 {
			host, port, _ := net.SplitHostPort(addrs[i])
			if err := clients[0].ClusterMeet(ctx, host, port).Err(); err != nil {
				t.Fatalf("CLUSTER MEET %s: %v", addrs[i], err)
			}
		}
	}
	if replicated {
		for i := range masters {
			id, err := clients[i].ClusterMyID(ctx).Result()
			if err != nil {
				t.Fatalf("node %s: CLUSTER MYID: %v", addrs[i], err)
			}
			replica := clients[masters+i]
			// The replica must know its master first: MEET spreads by gossip.
			err = waitFor(ctx, func() error { return replica.Do(ctx, "CLUSTER", "REPLICATE", id).Err() })
			if err != nil {
				t.Fatalf("node %s: CLUSTER REPLICATE %s: %v", c.Replicas[i], id, err)
			}
		}
	}
	for i, cl := range clients {
		err := waitFor(ctx, func() error {
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", nodes)) {
				return fmt.Errorf("not ready: %s", info)
			}
			shards, err := cl.ClusterShards(ctx).Result()
			if err != nil {
				return err
			}
			for _, sh := range shards {
				if len(sh.Slots) == 0 || len(sh.Nodes) != nodes/masters {
					return fmt.Errorf("node sees a shard without slots or with %d nodes: %+v", len(sh.Nodes), sh)
				}
				for _, n := range sh.Nodes {
					if n.Health != "online" {
						return fmt.Errorf("node sees node %s:%d %s", n.IP, n.Port, n.Health)
					}
				}
			}
			if len(shards) != masters {
				return fmt.Errorf("node sees %d shards", len(shards))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("cluster not ready at %s: %v", addrs[i], err)
		}
	}
	if replicated {
		for i := range masters {
			if err := WaitReplicated(ctx, addrs[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c
}

// WaitReplicated waits until the replica of the master at addr holds
// every write the master had when it was called: after it, killing the
// master loses none of them. It asks the master itself (WAIT, after a
// write of its own on the same connection): a replica listed as online
// may not yet receive writes, for up to a second after a full sync.
func WaitReplicated(ctx context.Context, addr string) error {
	return waitReplicated(ctx, &redis.Options{Addr: addr})
}

// waitReplicated is WaitReplicated for the master that opts reach.
func waitReplicated(ctx context.Context, opts *redis.Options) error {
	addr := opts.Addr
	c := redis.NewClient(opts)
	defer c.Close()
	conn := c.Conn()
	defer conn.Close()
	// A key of one of the master's slots, in a Cluster: others are MOVED.
	written := false
	for n := 0; !written; n++ {
		err := conn.Set(ctx, "testenv:replicated:"+strconv.Itoa(n), "1", time.Minute).Err()
		switch {
		case err == nil:
			written = true
		case !strings.HasPrefix(err.Error(), "MOVED ") || n > 1000:
			return fmt.Errorf("master %s: write: %w", addr, err)
		}
	}
	err := waitFor(ctx, func() error {
		n, err := conn.Wait(ctx, 1, time.Second).Result()
		if err == nil && n < 1 {
			err = errors.New("the replica has not acknowledged the write")
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("master %s: %w", addr, err)
	}
	return nil
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
