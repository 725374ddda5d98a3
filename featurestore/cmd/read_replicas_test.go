package cmd

import (
	"context"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// TestServeReadsReplicas runs 'featurestore serve --redis-read-replicas'
// against a Redis Cluster with replicas and against a master and replica
// behind Sentinel: lookups of what ingest wrote (once the replicas have
// it) give every card's count, and the replicas answer some of the reads.
func TestServeReadsReplicas(t *testing.T) {
	t.Run("cluster", func(t *testing.T) {
		cluster, brokers, r, project, _, env := clusterProject(t, 1)
		testReadReplicas(t, brokers, r, project, env, cluster.Masters, cluster.Replicas)
	})
	t.Run("sentinel", func(t *testing.T) {
		sr, brokers, r, project, env := sentinelProject(t, 1)
		testReadReplicas(t, brokers, r, project, env, []string{sr.Primary.Addr}, []string{sr.Replica.Addr})
	})
}

func testReadReplicas(t *testing.T, brokers []string, r *registry.Registry, project string, env map[string]string, masters, replicas []string) {
	topic := r.Source("card_transactions").Kafka.Topic
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var rc redis.UniversalClient
	if len(masters) > 1 {
		rc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: masters})
	} else {
		rc = redis.NewClient(&redis.Options{Addr: masters[0]})
	}
	defer rc.Close()
	msgs, accepted := cardEvents(17, 300, time.Second)
	applied := func() int64 { return appliedCount(ctx, rc, project, topic, 1) }
	wait := ingestWaiter(t, ctx, applied, nil)
	stopIngest := startCommand(ctx, env, "ingest", "--metrics-addr", "", "--session-timeout", "6s")
	defer stopIngest()
	produce(t, ctx, brokers, topic, msgs)
	wait("every event applied", func() bool { return applied() == int64(len(msgs)) })
	for _, m := range masters {
		if err := testenv.WaitReplicated(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	reads := func() int64 {
		var n int64
		for _, a := range replicas {
			c := redis.NewClient(&redis.Options{Addr: a})
			info, err := c.Info(ctx, "commandstats").Result()
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			for _, cmd := range []string{"hgetall", "hmget"} {
				if v, ok := strings.CutPrefix(infoField(info, "cmdstat_"+cmd), "calls="); ok {
					calls, _ := strconv.ParseInt(v[:strings.IndexByte(v, ',')], 10, 64)
					n += calls
				}
			}
		}
		return n
	}
	before := reads()

	serveEnv := maps.Clone(env)
	serveEnv["FEATURESTORE_REDIS_READ_REPLICAS"] = "true"
	httpAddr := startServeHTTP(t, ctx, serveEnv)
	lookup := httpLookup(httpAddr, `{"features":{"refs":["card_txn:lifetime_txn_count"]},"entities":[{"join_key_values":[{"string_val":"card-1"}]}]}`)
	want := int64(len(accepted["card-1"]))
	for i := 0; i < 50; i++ {
		code, b, _ := lookup()
		for code == 0 || code == http.StatusServiceUnavailable { // serve starting
			time.Sleep(50 * time.Millisecond)
			code, b, _ = lookup()
		}
		if code != http.StatusOK {
			t.Fatalf("lookup %d: %d %s", i, code, b)
		}
		if got := firstInt64s(t, b); len(got) != 1 || got[0] != want {
			t.Fatalf("lookup %d: card-1 counts %v events, want %d", i, got, want)
		}
	}
	if n := reads() - before; n == 0 {
		t.Errorf("the replicas answered no lookup read")
	} else {
		t.Logf("the replicas answered %d reads of 50 lookups", n)
	}
}
