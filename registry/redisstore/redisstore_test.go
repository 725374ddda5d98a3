package redisstore_test

import (
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
