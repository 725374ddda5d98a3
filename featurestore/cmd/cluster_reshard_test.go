package cmd

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRedisClusterReshard adds a master to the Redis Cluster under running
// 'featurestore ingest' and 'featurestore serve', and moves a quarter of
// the slots to it (redis-cli --cluster reshard) while ingest applies
// batches and lookups run: the clients follow the slots (MOVED, ASK), no
// lookup fails, and every event is counted once in the end, against the
// brute-force reference, some of the cards on the new master.
func TestRedisClusterReshard(t *testing.T) {
	cluster, brokers, r, project, seeds, env := clusterProject(t, 3)
	topic := r.Source("card_transactions").Kafka.Topic
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(seeds, ","), ClusterStateReloadInterval: clusterStateReload})
	defer rc.Close()
	msgs, accepted := cardEvents(19, 6000, 10*time.Millisecond)
	applied := func() int64 { return appliedCount(ctx, rc, project, topic, 3) }
	wait := ingestWaiter(t, ctx, applied, nil)
	startIngestSmallBatches(t, ctx, env)
	httpAddr := startServeHTTP(t, ctx, env)
	lookup := httpLookup(httpAddr, lifetimeCountsBody(slices.Sorted(maps.Keys(accepted))))

	produce(t, ctx, brokers, topic, msgs[:1000])
	wait("ingest under way", func() bool { return applied() > 500 })
	added := cluster.AddMaster(t)
	start, appliedBefore := time.Now(), applied()
	done := make(chan error, 1)
	go func() { done <- cluster.Reshard(added, 4096) }()
	// While the slots move: events produced 20 every 20 ms, and lookups.
	next, lastProduce := 1000, time.Time{}
	lookups, failed := 0, []string{}
	for resharding := true; resharding; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			resharding = false
		default:
		}
		if next < len(msgs) && time.Since(lastProduce) > 20*time.Millisecond {
			produce(t, ctx, brokers, topic, msgs[next:min(next+20, len(msgs))])
			next, lastProduce = min(next+20, len(msgs)), time.Now()
		}
		code, b, _ := lookup()
		lookups++
		if code != http.StatusOK && len(failed) < 5 {
			failed = append(failed, fmt.Sprintf("%d %.200s", code, b))
		}
	}
	during := applied() - appliedBefore
	t.Logf("4096 slots moved to the new master in %v, while ingest applied %d events; %d lookups meanwhile, failures: %q",
		time.Since(start).Round(100*time.Millisecond), during, lookups, failed)
	if during < 100 {
		t.Errorf("ingest applied %d events while the slots moved, want it busy", during)
	}
	if len(failed) > 0 {
		t.Errorf("lookups failed while the slots moved: %q", failed)
	}
	produce(t, ctx, brokers, topic, msgs[next:])
	wait("every event applied", func() bool { return applied() == int64(len(msgs)) })
	checkCardTxn(t, ctx, rc, r, project, accepted)

	nc := redis.NewClient(&redis.Options{Addr: added})
	defer nc.Close()
	if n, err := nc.DBSize(ctx).Result(); err != nil || n == 0 {
		t.Errorf("the new master holds %d keys (%v), want some of the cards'", n, err)
	}
	code, b, _ := lookup()
	var total int64
	for _, n := range firstInt64s(t, b) {
		total += n
	}
	if code != http.StatusOK || total != int64(len(msgs)) {
		t.Errorf("a lookup after the resharding: %d, counts %d events, want %d", code, total, len(msgs))
	}
}
