package cmd

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/registry"
	"github.com/featurestore/featurestore/registry/redisstore"
)

// redisFlags say how to reach Redis, for the registry and the online store.
type redisFlags struct {
	addr     string
	cluster  bool
	username string
	password string
	db       int
	tls      bool
	timeout  time.Duration
}

func (r *redisFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.addr, "redis-addr", "127.0.0.1:6379", "Redis address host:port; several, comma-separated, for Redis Cluster seeds.")
	fs.BoolVar(&r.cluster, "redis-cluster", false, "Talk to Redis Cluster (implied by several addresses).")
	fs.StringVar(&r.username, "redis-username", "", "Redis ACL user name.")
	fs.StringVar(&r.password, "redis-password", "", "Redis password (prefer the environment variable to the flag).")
	fs.IntVar(&r.db, "redis-db", 0, "Redis database number (standalone only).")
	fs.BoolVar(&r.tls, "redis-tls", false, "Connect to Redis over TLS.")
	fs.DurationVar(&r.timeout, "redis-timeout", 2*time.Second, "Dial, read and write timeout of Redis commands.")
}

func (r *redisFlags) client() redis.UniversalClient {
	addrs := strings.Split(r.addr, ",")
	for i := range addrs {
		addrs[i] = strings.TrimSpace(addrs[i])
	}
	opts := &redis.UniversalOptions{
		Addrs:                 addrs,
		Username:              r.username,
		Password:              r.password,
		DB:                    r.db,
		DialTimeout:           r.timeout,
		ReadTimeout:           r.timeout,
		WriteTimeout:          r.timeout,
		ContextTimeoutEnabled: true,
		IsClusterMode:         r.cluster || len(addrs) > 1,
		// RESP2: nothing here needs RESP3's types, and go-redis reads
		// RESP2 replies (HGETALL's flat array above all) with fewer
		// allocations and no push-notification checks.
		Protocol: 2,
	}
	if r.tls {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return redis.NewUniversalClient(opts)
}

// registryFlags say where the registry is.
type registryFlags struct {
	location string
	project  string
	redis    redisFlags
}

func (r *registryFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.location, "registry", "redis", "Where registry versions live: redis (on --redis-addr), or file:DIR for a local directory.")
	fs.StringVar(&r.project, "project", "default", "Project whose registry to use; projects are independent namespaces.")
	r.redis.register(fs)
}

// snapshot returns registry version v of the project, the current one when
// v is 0, and closes the store: callers that only read one version keep no
// registry connection open.
func (r *registryFlags) snapshot(ctx context.Context, v int64) (*registry.Snapshot, error) {
	store, closeStore, err := r.open(ctx)
	if err != nil {
		return nil, err
	}
	defer closeStore()
	if v == 0 {
		if v, err = store.Head(ctx); err != nil {
			return nil, err
		}
		if v == 0 {
			return nil, errors.New("nothing has been applied to the registry yet")
		}
	}
	return store.Get(ctx, v)
}

// open returns the configured store; close releases it.
func (r *registryFlags) open(ctx context.Context) (registry.Store, func(), error) {
	switch {
	case strings.HasPrefix(r.location, "file:"):
		dir := strings.TrimPrefix(strings.TrimPrefix(r.location, "file:"), "//")
		if dir == "" {
			return nil, nil, errors.New("--registry file: needs a directory, like file:./registry")
		}
		s, err := registry.OpenFileStore(dir)
		if err != nil {
			return nil, nil, err
		}
		return s, func() {}, nil
	case r.location == "redis":
		c := r.redis.client()
		if err := c.Ping(ctx).Err(); err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("registry: redis at %s does not answer: %w (start Redis, or use --registry file:DIR)", r.redis.addr, err)
		}
		s, err := redisstore.New(c, r.project)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return s, func() { c.Close() }, nil
	}
	return nil, nil, fmt.Errorf("--registry %q: use redis or file:DIR", r.location)
}
