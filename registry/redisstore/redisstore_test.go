package redisstore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
	"github.com/featurestore/featurestore/registry/redisstore"
	"github.com/featurestore/featurestore/registry/storetest"
)

func TestRedisStore(t *testing.T) {
	addr := testenv.RedisAddr(t)
	storetest.Run(t, func(t *testing.T) registry.Store {
		c := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { c.Close() })
		// One project per subtest: stores opened in a subtest share it, as
		// processes of one deployment do.
		s, err := redisstore.New(c, projectFor(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestProjectNames(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for _, p := range []string{"", "a}b", "x{y", "a:b", "sp ace"} {
		if _, err := redisstore.New(c, p); err == nil {
			t.Errorf("project %q accepted", p)
		}
	}
}

var (
	projectsMu sync.Mutex
	projects   = map[*testing.T]string{}
)

func projectFor(t *testing.T) string {
	projectsMu.Lock()
	defer projectsMu.Unlock()
	if p, ok := projects[t]; ok {
		return p
	}
	p := strings.NewReplacer("/", "-", ".", "-").Replace(testenv.UniqueName(t, "reg"))
	projects[t] = p
	return p
}

// TestApplyAfterHeadLost: a store whose head key was deleted, with its
// versions still listed, refuses an apply without permission to break.
func TestApplyAfterHeadLost(t *testing.T) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	defer c.Close()
	project := projectFor(t)
	s, err := redisstore.New(c, project)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Apply(ctx, s, storetest.Defs(t, "1h"), registry.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Del(ctx, "fs:{reg."+project+"}:head").Err(); err != nil {
		t.Fatal(err)
	}
	_, err = registry.Apply(ctx, s, storetest.Defs(t, "2h"), registry.ApplyOptions{})
	if !errors.Is(err, registry.ErrBreaking) || !strings.Contains(err.Error(), "no head") {
		t.Fatalf("apply after the head was lost: %v, want ErrBreaking", err)
	}
	if res, err := registry.Apply(ctx, s, storetest.Defs(t, "2h"), registry.ApplyOptions{AllowBreaking: true}); err != nil || res.To.Version != 1 {
		t.Fatalf("allowed apply: %+v, %v", res, err)
	}
}
