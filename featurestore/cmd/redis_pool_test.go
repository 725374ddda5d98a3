package cmd

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/serving"
)

// TestRedisClientPoolTimeout: with every connection of serve's client in
// use, a command with serve's default deadline waits out PoolTimeout,
// counted as a pool timeout, before the deadline ends the wait, which
// go-redis counts nowhere. The client of ingest and backfill keeps
// go-redis's longer default, so that partitions queueing for connections
// while Redis is slow do not fail their batches.
func TestRedisClientPoolTimeout(t *testing.T) {
	r := redisFlags{addr: testenv.RedisAddr(t), timeout: 2 * time.Second, lookups: true}
	uc, err := r.client()
	if err != nil {
		t.Fatal(err)
	}
	rc := uc.(*redis.Client)
	defer rc.Close()
	ctx := context.Background()
	for range rc.Options().PoolSize {
		held := rc.Conn()
		if err := held.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		defer held.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, serving.DefaultDefaultDeadline)
	defer cancel()
	// go-redis retries a pool timeout: the command may still end at its
	// deadline, but each wait that PoolTimeout ended is counted.
	if err := rc.Get(ctx, "pool-timeout").Err(); err == nil {
		t.Fatal("get with the pool exhausted succeeded")
	}
	if s := rc.PoolStats(); s.Timeouts < 1 {
		t.Errorf("no pool timeout counted: %+v", *s)
	}

	r.lookups = false
	other, err := r.client()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if got, want := other.(*redis.Client).Options().PoolTimeout, r.timeout+time.Second; got != want {
		t.Errorf("pool timeout of the client of ingest and backfill %v, want go-redis's default %v", got, want)
	}
}

// TestRedisClientRefusedFailsFast: a command of the client every command
// builds, against a Redis that refuses connections, fails with the dial
// error before serve's default deadline, not with the deadline's
// "context deadline exceeded" (as it did with go-redis's 5 dials per
// attempt), so that a lookup's UNAVAILABLE names the cause.
func TestRedisClientRefusedFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	for _, cluster := range []bool{false, true} {
		r := redisFlags{addr: refused, timeout: 2 * time.Second, cluster: cluster}
		rc, err := r.client()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), serving.DefaultDefaultDeadline)
		err = rc.Get(ctx, "refused").Err()
		cancel()
		if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("cluster %v: got %v, want the dial's connection refused", cluster, err)
		}
	}
}
