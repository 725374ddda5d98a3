package online

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/testenv"
)

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
	addrs := testenv.RedisCluster(t, 3)
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
