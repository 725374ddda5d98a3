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

// TestApplyAfterHeadLost: a store whose head key alone was deleted (or
// evicted) takes the highest version stored as its head, so a plan is made
// against the last version applied (a breaking change is refused), and the
// next commit is a new version on top, not version 1 again over the first.
func TestApplyAfterHeadLost(t *testing.T) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	defer c.Close()
	project := projectFor(t)
	s, err := redisstore.New(c, project)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"1h", "2h"} {
		if _, err := registry.Apply(ctx, s, storetest.Defs(t, w), registry.ApplyOptions{AllowBreaking: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Del(ctx, "fs:{reg."+project+"}:head").Err(); err != nil {
		t.Fatal(err)
	}
	if head, err := s.Head(ctx); err != nil || head != 2 {
		t.Fatalf("head after its key was deleted: %d, %v; want 2", head, err)
	}
	res, err := registry.Apply(ctx, s, storetest.Defs(t, "3h"), registry.ApplyOptions{})
	if !errors.Is(err, registry.ErrBreaking) || res.From != 2 {
		t.Fatalf("apply of a breaking change: from %d, %v; want ErrBreaking against version 2", res.From, err)
	}
	res, err = registry.Apply(ctx, s, storetest.Defs(t, "3h"), registry.ApplyOptions{AllowBreaking: true})
	if err != nil || res.From != 2 || res.To.Version != 3 {
		t.Fatalf("allowed apply: from %d to %d, %v; want 2 to 3", res.From, res.To.Version, err)
	}
	// Version 1 is still the first definitions.
	first, err := s.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := storetest.Defs(t, "1h").Digest(); first.Digest != want {
		t.Errorf("version 1 has digest %s, want the first apply's %s", first.Digest, want)
	}
	if head, err := s.Head(ctx); err != nil || head != 3 {
		t.Errorf("head after the apply: %d, %v; want 3", head, err)
	}
}
