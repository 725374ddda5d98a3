package online

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestSyncKeys checks the sync keys' slots against the definition and
// that every slot has one.
func TestSyncKeys(t *testing.T) {
	seen := map[string]bool{}
	for slot := range 16384 {
		k := syncKey(slot)
		if got := Slot(k); got != slot {
			t.Fatalf("syncKey(%d) = %q, in slot %d", slot, k, got)
		}
		if seen[k] {
			t.Fatalf("syncKey(%d) = %q, also another slot's", slot, k)
		}
		seen[k] = true
	}
	if k := syncKey(Slot("fs:{w0}:sync")); k != "fs:{w0}:sync" {
		t.Errorf("the first tag's slot has %q", k)
	}
}

// TestApplyWaitsForReplica applies with Options.Replicas against a Redis
// with one replica: the replica holds the writes when Apply returns; while
// it is paused Apply fails with ErrNotReplicated after the timeout, the
// writes being on the primary; applied again once it is back, the same
// updates write nothing and Apply succeeds, the replica holding all.
func TestApplyWaitsForReplica(t *testing.T) {
	primary := testenv.RedisOwnNode(t, "--repl-diskless-sync-delay", "0")
	host, port, _ := net.SplitHostPort(primary.Addr)
	replica := testenv.RedisOwnNode(t, "--replicaof", host, port)
	ctx := testContext(t)
	if err := testenv.WaitReplicated(ctx, primary.Addr); err != nil {
		t.Fatal(err)
	}
	pc, rc := newClient(t, primary.Addr), newClient(t, replica.Addr)
	s := New(pc, Options{Replicas: 1, ReplicaTimeout: 300 * time.Millisecond})
	updates := func(offset int64) []Update {
		var ups []Update
		for i := range 20 {
			k := Key{View: "txn", Entity: featurestore.StringKey(fmt.Sprintf("card_%d", i))}
			ups = append(ups, counterUpdate(k, "t", []event{{0, offset, 5, 1}}, nil))
		}
		return ups
	}
	same := func(what string) {
		t.Helper()
		for i := range 20 {
			k := Key{View: "txn", Entity: featurestore.StringKey(fmt.Sprintf("card_%d", i))}
			if p, r := hgetall(t, pc, k), hgetall(t, rc, k); !maps.Equal(p, r) || len(p) == 0 {
				t.Fatalf("%s: %s on the primary %q, on the replica %q", what, k, p, r)
			}
		}
	}

	if err := s.Apply(ctx, updates(1)); err != nil {
		t.Fatal(err)
	}
	same("Apply returned") // read at once: WAIT said the replica had it

	replica.Pause()
	start := time.Now()
	err := s.Apply(ctx, updates(2))
	took := time.Since(start)
	replica.Resume()
	if !errors.Is(err, ErrNotReplicated) || !strings.Contains(err.Error(), "0 of 1 replicas acknowledged the writes within 300ms") {
		t.Fatalf("Apply with the replica paused: %v, want ErrNotReplicated", err)
	}
	if took < 300*time.Millisecond || took > 10*time.Second {
		t.Errorf("Apply with the replica paused returned after %v, want the timeout", took)
	}
	if got := hgetall(t, pc, Key{View: "txn", Entity: featurestore.StringKey("card_0")})["f:t:0"]; got != "2" {
		t.Fatalf("the primary's fence after the failed wait: %q, want the writes done", got)
	}
	writes := s.Stats().Writes
	if err := s.Apply(ctx, updates(2)); err != nil {
		t.Fatalf("Apply again after the replica came back: %v", err)
	}
	if st := s.Stats(); st.Writes != writes {
		t.Errorf("Apply again wrote %d hashes, want none (stats %+v)", st.Writes-writes, st)
	}
	same("Apply again returned")
	if n := counter(t, []byte(hgetall(t, rc, Key{View: "txn", Entity: featurestore.StringKey("card_3")})["t:5"])); n != 2 {
		t.Errorf("the replica's counter: %d, want 2", n)
	}

	// A Redis without replicas never acknowledges.
	alone := New(newClient(t, testenv.RedisOwn(t)), Options{Replicas: 1, ReplicaTimeout: 100 * time.Millisecond})
	if err := alone.Apply(ctx, updates(1)); !errors.Is(err, ErrNotReplicated) {
		t.Errorf("Apply on a Redis without replicas: %v, want ErrNotReplicated", err)
	}
}

// TestClusterApplyWaitsForReplicas is TestApplyWaitsForReplica on a Redis
// Cluster: Apply waits on the master of every shard it wrote to, and the
// error names the master whose replica did not acknowledge.
func TestClusterApplyWaitsForReplicas(t *testing.T) {
	cluster := testenv.RedisClusterReplicated(t, 3)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Masters, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	ctx := testContext(t)
	s := New(c, Options{Replicas: 1, ReplicaTimeout: 300 * time.Millisecond})
	keys := make([]Key, 60)
	updates := func(offset int64) []Update {
		ups := make([]Update, len(keys))
		for i := range keys {
			keys[i] = Key{View: "txn", Entity: featurestore.StringKey(fmt.Sprintf("card_%d", i))}
			ups[i] = counterUpdate(keys[i], "t", []event{{0, offset, 5, 1}}, nil)
		}
		return ups
	}
	// Each replica, read directly (READONLY), must hold its master's keys.
	onReplicas := func(what string) {
		t.Helper()
		for _, k := range keys {
			m, err := c.MasterForKey(ctx, k.Name())
			if err != nil {
				t.Fatal(err)
			}
			i := slices.Index(cluster.Masters, m.Options().Addr)
			r := redis.NewClient(&redis.Options{Addr: cluster.Replicas[i], ContextTimeoutEnabled: true})
			if err := r.ReadOnly(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			got, err := r.HGet(ctx, k.Name(), "f:t:0").Result()
			r.Close()
			if err != nil || got != "2" {
				t.Fatalf("%s: %s on the replica %s: fence %q, %v; want 2", what, k, cluster.Replicas[i], got, err)
			}
		}
	}
	if err := s.Apply(ctx, updates(1)); err != nil {
		t.Fatal(err)
	}
	paused := cluster.Node(cluster.Replicas[1])
	paused.Pause()
	err := s.Apply(ctx, updates(2))
	paused.Resume()
	want := "0 of 1 replicas of " + cluster.Masters[1] + " acknowledged"
	if !errors.Is(err, ErrNotReplicated) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Apply with a replica paused: %v, want ErrNotReplicated with %q", err, want)
	}
	for _, m := range []int{0, 2} {
		if strings.Contains(err.Error(), cluster.Masters[m]) {
			t.Errorf("the error names master %s, whose replica was not paused: %v", cluster.Masters[m], err)
		}
	}
	if err := s.Apply(ctx, updates(2)); err != nil {
		t.Fatalf("Apply again after the replica came back: %v", err)
	}
	onReplicas("Apply again returned")
}
