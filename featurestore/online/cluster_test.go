package online

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/testenv"
)

// startCluster starts a Redis Cluster of three masters from the redis-server
// binary that .ci/services.sh installs, and stops it when the test ends. Like
// testenv, it skips on a developer's machine without the binary and fails in
// CI.
func startCluster(t *testing.T) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not starting a Redis Cluster")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if testenv.RequireServices() {
			t.Fatalf("redis-server is not on PATH; it is needed for the Redis Cluster test: %v", err)
		}
		t.Skipf("redis-server is not on PATH; skipping the Redis Cluster test: %v", err)
	}
	const nodes = 3
	dir := t.TempDir()
	addrs := make([]string, nodes)
	for i := range nodes {
		port := freePort(t)
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		nodeDir := filepath.Join(dir, strconv.Itoa(i))
		if err := os.Mkdir(nodeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		logf, err := os.Create(filepath.Join(nodeDir, "redis.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin,
			"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--protected-mode", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(nodeDir, "nodes.conf"),
			"--dir", nodeDir, "--save", "", "--appendonly", "no", "--daemonize", "no")
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
					t.Logf("log of node %s:\n%s", addrs[i], b)
				}
			}
		})
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

func freePort(t *testing.T) int {
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

// pipelineCounter counts the pipelines each node receives.
type pipelineCounter struct {
	mu     *sync.Mutex
	byNode map[string]int
	addr   string
}

func (h *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		h.byNode[h.addr]++
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

// TestCluster runs the store on a three-node Redis Cluster through a
// UniversalClient: slots agree with the server's, every script call is
// accepted (one key each), and a Read of many keys costs one pipeline per
// node.
func TestCluster(t *testing.T) {
	addrs := startCluster(t)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	cc := c.(*redis.ClusterClient)
	var mu sync.Mutex
	counts := map[string]int{}
	cc.OnNewNode(func(n *redis.Client) {
		n.AddHook(&pipelineCounter{mu: &mu, byNode: counts, addr: n.Options().Addr})
	})
	ctx := testContext(t)
	s := New(c, Options{})

	// The server's slots for the check values and the tricky keys.
	names := []string{"foo", "bar", "{user1000}.following", "123456789"}
	for _, e := range trickyEntities(t) {
		names = append(names, Key{View: "card_txn", Entity: e}.Name())
	}
	for _, n := range names {
		want, err := cc.ClusterKeySlot(ctx, n).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := Slot(n); int64(got) != want {
			t.Errorf("Slot(%q) = %d, CLUSTER KEYSLOT says %d", n, got, want)
		}
	}

	views := []string{"txn", "profile"}
	var ups []Update
	var lookups []Lookup
	nodesUsed := map[int]bool{}
	for i := range 300 {
		e := featurestore.StringKey(fmt.Sprintf("card_%d", i))
		for _, v := range views {
			k := Key{View: v, Entity: e}
			ups = append(ups, counterUpdate(k, "t", []event{{int32(i % 4), int64(i), 1, uint64(i)}}, nil))
			lookups = append(lookups, Lookup{Key: k, Fields: []string{TileField(1), VersionField}})
		}
		nodesUsed[Slot(Key{View: views[0], Entity: e}.Name())*3/16384] = true
	}
	if len(nodesUsed) != 3 {
		t.Fatalf("keys cover %d of 3 nodes", len(nodesUsed))
	}
	if err := s.Apply(ctx, ups); err != nil {
		t.Fatal(err)
	}
	// Replayed: nothing changes.
	if err := s.Apply(ctx, ups); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Writes != 600 || st.Skips != 600 {
		t.Errorf("stats %+v, want 600 writes and 600 skips", st)
	}

	mu.Lock()
	clear(counts)
	mu.Unlock()
	got, err := s.Read(ctx, lookups)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, l := range lookups {
		if n := counter(t, got[i][0]); n != uint64(i/2) || string(got[i][1]) != "1" {
			t.Errorf("%s: counter %d at version %s, want %d at version 1", l.Key, n, got[i][1], i/2)
		}
	}
	if len(counts) != 3 {
		t.Errorf("read touched %d nodes, want 3: %v", len(counts), counts)
	}
	for node, n := range counts {
		if n != 1 {
			t.Errorf("node %s got %d pipelines for one Read, want 1", node, n)
		}
	}
}
