package cmd

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestEvictingRedisRefused: ingest, serve and backfill refuse a Redis that
// evicts keys when full (a maxmemory and a policy other than noeviction),
// naming the policy and the way out, before they start: evicted tiles,
// fences, positions and registry versions made lookups serve wrong
// features as present, without an error anywhere. --allow-redis-eviction
// starts with a warning; a Redis without maxmemory only warns.
func TestEvictingRedisRefused(t *testing.T) {
	lru := testenv.RedisOwn(t, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
	env := fileRegistryEnv(t)
	env["FEATURESTORE_REDIS_ADDR"] = lru
	for _, args := range [][]string{
		{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "", "--flight-addr", ""},
		{"ingest"},
		{"backfill", "--source", "card_transactions", t.TempDir()},
	} {
		code, out := runBounded(t, env, 10*time.Second, args...)
		if code != 1 || !strings.Contains(out, "maxmemory-policy allkeys-lru") || !strings.Contains(out, "--allow-redis-eviction") {
			t.Errorf("%s against an evicting Redis: exit %d, want 1 naming the policy and --allow-redis-eviction\n%s", args[0], code, out)
		}
	}

	// The check itself, on the kinds of Redis.
	check := func(c redis.UniversalClient, allow bool) (string, error) {
		var logs bytes.Buffer
		r := &redisFlags{eviction: true, allowEviction: allow}
		err := r.checkEviction(context.Background(), c, slog.New(slog.NewTextHandler(&logs, nil)))
		return logs.String(), err
	}
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: lru})
	defer c.Close()
	if logs, err := check(c, true); err != nil || !strings.Contains(logs, "starting all the same") {
		t.Errorf("allowed: %v, logged %q", err, logs)
	}
	if err := c.ConfigSet(ctx, "maxmemory-policy", "volatile-lru").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := check(c, false); err == nil || !strings.Contains(err.Error(), "volatile-lru") {
		t.Errorf("volatile-lru: %v, want an error (it evicts every hash with a TTL)", err)
	}
	if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if logs, err := check(c, false); err != nil || !strings.Contains(logs, "would evict keys if a maxmemory were set") {
		t.Errorf("no maxmemory: %v, logged %q; want a warning only", err, logs)
	}
	if err := c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory", "64mb").Err(); err != nil {
		t.Fatal(err)
	}
	if logs, err := check(c, false); err != nil || logs != "" {
		t.Errorf("noeviction: %v, logged %q", err, logs)
	}

	// A Cluster: every primary is asked.
	nodes := testenv.RedisCluster(t, 3)
	last := redis.NewClient(&redis.Options{Addr: nodes[2]})
	defer last.Close()
	for _, kv := range [][2]string{{"maxmemory", "64mb"}, {"maxmemory-policy", "allkeys-random"}} {
		if err := last.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: nodes[:1]})
	defer cc.Close()
	if _, err := check(cc, false); err == nil || !strings.Contains(err.Error(), nodes[2]) {
		t.Errorf("a Cluster with one evicting primary: %v, want an error naming %s", err, nodes[2])
	}
}

// TestEvictionWatched: a Redis made to evict while ingest or serve runs
// (CONFIG SET, after the check at start) is logged at error level, and the
// keys it evicts counted in featurestore_redis_evicted_keys.
func TestEvictionWatched(t *testing.T) {
	addr := testenv.RedisOwn(t)
	defer func(d time.Duration) { evictionCheckEvery = d }(evictionCheckEvery)
	evictionCheckEvery = 50 * time.Millisecond
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	logs := &syncBuffer{}
	prom := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); watchEviction(ctx, c, prom, slog.New(slog.NewTextHandler(logs, nil))) }()
	defer func() { cancel(); <-done }()

	time.Sleep(200 * time.Millisecond)
	if s := logs.String(); s != "" {
		t.Fatalf("logged against a Redis that does not evict: %s", s)
	}
	for _, kv := range [][2]string{{"maxmemory-policy", "allkeys-lru"}, {"maxmemory", "4mb"}} {
		if err := c.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	value := strings.Repeat("v", 1024)
	for i := range 20_000 {
		if err := c.Set(ctx, "k"+strconv.Itoa(i), value, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "Redis evicted keys") || !strings.Contains(logs.String(), "may evict keys when full") {
		if time.Now().After(deadline) {
			t.Fatalf("no error logged about the evictions:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mfs, err := prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "featurestore_redis_evicted_keys" || mfs[0].GetMetric()[0].GetGauge().GetValue() <= 0 {
		t.Errorf("featurestore_redis_evicted_keys not above 0: %v", mfs)
	}
}
