package cmd

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/serving"
)

// TestRedisClientPoolTimeout: with every connection of the online store's
// client in use, a command with serve's default deadline waits out
// PoolTimeout, counted as a pool timeout, before the deadline ends the wait,
// which go-redis counts nowhere.
func TestRedisClientPoolTimeout(t *testing.T) {
	r := redisFlags{addr: testenv.RedisAddr(t), timeout: 2 * time.Second}
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
}
