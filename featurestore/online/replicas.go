package online

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated means that Apply wrote its updates but not enough
// replicas acknowledged them within Options.ReplicaTimeout (WAIT). The
// writes stay on the masters; applying the same updates again writes
// nothing more and waits again.
var ErrNotReplicated = errors.New("writes not acknowledged by enough replicas")

// DefaultReplicaTimeout is the default of Options.ReplicaTimeout.
const DefaultReplicaTimeout = time.Second

// replicaSyncTTL is how long a sync key (syncKey) lives: long enough for
// its WAIT, short enough that none stay around.
const replicaSyncTTL = time.Minute

// waitReplicas waits until s.replicas replicas of every server that holds
// one of ops' keys have every write that server had made: those of the
// updates, whether this call or an earlier one wrote them (a retried
// batch whose first WAIT timed out finds its writes done and waits again).
//
// WAIT counts the acknowledgements of the calling connection's own last
// write, so each server is first sent a write of its own on the connection
// that then waits: SET of a short-lived key (syncKey) in a slot of that
// server, which replicas receive after every write the server made before.
// The servers are waited on in parallel. A Redis Cluster's servers are
// found by the client's slot map; a key whose slot moved meanwhile fails
// the wait with MOVED, and the caller's retry finds the new master.
func (s *Store) waitReplicas(ctx context.Context, ops []op) error {
	cc, isCluster := s.c.(*redis.ClusterClient)
	if !isCluster {
		return s.waitNode(ctx, s.c, "", 0)
	}
	type node struct {
		c    *redis.Client
		slot int
	}
	var nodes []node
	seen := map[string]bool{}
	for i := range ops {
		name := ops[i].name
		m, err := cc.MasterForKey(ctx, name)
		if err != nil {
			return fmt.Errorf("apply online state: find the master of %s to wait for its replicas: %w", name, err)
		}
		if addr := m.Options().Addr; !seen[addr] {
			seen[addr] = true
			nodes = append(nodes, node{m, Slot(name)})
		}
	}
	if len(nodes) == 1 {
		return s.waitNode(ctx, nodes[0].c, nodes[0].c.Options().Addr, nodes[0].slot)
	}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { errs[i] = s.waitNode(ctx, n.c, n.c.Options().Addr, n.slot) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitNode writes a sync key of slot on one connection of c and waits
// there for s.replicas acknowledgements. addr names the server in errors
// (empty for a standalone Redis).
func (s *Store) waitNode(ctx context.Context, c redis.UniversalClient, addr string, slot int) error {
	on := ""
	if addr != "" {
		on = " of " + addr
	}
	conn, err := pinned(c)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Set(ctx, syncKey(slot), "1", replicaSyncTTL).Err(); err != nil {
		return fmt.Errorf("apply online state: write before waiting for the replicas%s: %w", on, err)
	}
	n, err := conn.Wait(ctx, s.replicas, s.replicaTimeout).Result()
	if err != nil {
		return fmt.Errorf("apply online state: wait for the replicas%s: %w", on, err)
	}
	if n < int64(s.replicas) {
		return fmt.Errorf("apply online state: %d of %d replicas%s acknowledged the writes within %s: %w",
			n, s.replicas, on, s.replicaTimeout, ErrNotReplicated)
	}
	return nil
}

// pinned returns a client on a single connection of c, so that WAIT
// follows the write it counts.
func pinned(c redis.UniversalClient) (*redis.Conn, error) {
	switch c := c.(type) {
	case *redis.Client:
		return c.Conn(), nil
	default:
		return nil, fmt.Errorf("apply online state: waiting for replicas needs a standalone or Cluster client, not %T", c)
	}
}

// syncKey returns the name of a sync key in slot: fs:{w<n>}:sync, with the
// smallest n whose tag hashes to the slot.
func syncKey(slot int) string {
	return "fs:{" + syncTags()[slot] + "}:sync"
}

// syncTags holds, for every slot, the smallest hash tag w<n> in it: 16,384
// tags found by trying n = 0, 1, ... (about 160,000 of them), once.
var syncTags = sync.OnceValue(func() *[16384]string {
	var t [16384]string
	left := len(t)
	for n := 0; left > 0; n++ {
		tag := "w" + strconv.Itoa(n)
		if s := crc16(tag) % 16384; t[s] == "" {
			t[s] = tag
			left--
		}
	}
	return &t
})
