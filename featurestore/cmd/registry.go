package cmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/online"
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
	tlsFiles tlsClientFiles
	timeout  time.Duration

	// sentinelMaster names the master Sentinel monitors: addr then lists
	// the Sentinels.
	sentinelMaster, sentinelUsername, sentinelPassword string
	// eviction is set for the commands that read or write the online
	// store (registerEviction): they check Redis's eviction policy.
	eviction, allowEviction bool
	// lookups is set for serve: its client's commands wait at most
	// redisPoolTimeout for a connection (see client).
	lookups bool
	// readReplicas is serve's --redis-read-replicas (registerReadReplicas).
	readReplicas bool
	// replicas and replicaTimeout are the writers' --redis-wait-replicas
	// and --redis-wait-timeout (registerReplicas); writes is set with
	// them, and makes checkReplication check.
	replicas       int
	replicaTimeout time.Duration
	writes         bool
}

// registerReplicas adds --redis-wait-replicas and --redis-wait-timeout,
// for the commands that write the online store.
func (r *redisFlags) registerReplicas(fs *flag.FlagSet) {
	r.writes = true
	fs.IntVar(&r.replicas, "redis-wait-replicas", 0, "Replicas of each Redis server written to (each Cluster shard's master) that must acknowledge a batch's writes (WAIT) before the batch counts as applied and its position is saved, so that a failover to one of them loses no applied event; a batch that too few acknowledge within --redis-wait-timeout fails and is tried again. 0 waits for none.")
	fs.DurationVar(&r.replicaTimeout, "redis-wait-timeout", online.DefaultReplicaTimeout, "Longest wait of a batch for --redis-wait-replicas.")
}

// registerReadReplicas adds --redis-read-replicas, for serve.
func (r *redisFlags) registerReadReplicas(fs *flag.FlagSet) {
	fs.BoolVar(&r.readReplicas, "redis-read-replicas", false, "Spread reads over the replicas as well as the masters (Redis Cluster, or Sentinel), each read to a random node of its shard: more lookups per second from the same shards, values up to the replicas' lag (usually under a millisecond) older.")
}

// storeOptions returns the online store's options of the flags; an error
// (a usage error) names the flag at fault.
func (r *redisFlags) storeOptions() (online.Options, error) {
	switch {
	case r.replicas < 0:
		return online.Options{}, fmt.Errorf("%w: --redis-wait-replicas %d: want 0 or more", errUsage, r.replicas)
	case r.replicaTimeout <= 0:
		return online.Options{}, fmt.Errorf("%w: --redis-wait-timeout %s: want a positive duration", errUsage, r.replicaTimeout)
	}
	return online.Options{Replicas: r.replicas, ReplicaTimeout: r.replicaTimeout}, nil
}

// checkReplication warns, for the commands that write the online store,
// of replicas that --redis-wait-replicas does not match: on Redis Cluster,
// masters with replicas that ingest does not wait for (a failover to one
// that lagged loses the last applied events for good, docs/operations.md);
// and a primary with fewer replicas than it waits for (its batches fail
// until it has them). A Redis that does not answer is left to what uses
// the client.
func (r *redisFlags) checkReplication(ctx context.Context, c redis.UniversalClient, log *slog.Logger) {
	if !r.writes {
		return
	}
	_, cluster := c.(*redis.ClusterClient)
	var replicated atomic.Int32 // primaries with replicas
	_ = forEachPrimary(ctx, c, func(ctx context.Context, node *redis.Client) error {
		info, err := node.Info(ctx, "replication").Result()
		if err != nil {
			return nil
		}
		n, _ := strconv.Atoi(infoField(info, "connected_slaves"))
		if n < r.replicas {
			log.Warn("Redis has fewer replicas than --redis-wait-replicas: batches that write to it fail until it has them",
				"addr", node.Options().Addr, "replicas", n, "redis_wait_replicas", r.replicas)
		}
		if n > 0 {
			replicated.Add(1)
		}
		return nil
	})
	if cluster && r.replicas == 0 && replicated.Load() > 0 {
		log.Warn("the masters of the Redis Cluster have replicas that writes do not wait for: a failover to one that lagged loses the last applied events for good; pass --redis-wait-replicas 1 (docs/operations.md)",
			"masters_with_replicas", replicated.Load())
	}
}

// registerEviction adds --allow-redis-eviction, and makes checkEviction
// check.
func (r *redisFlags) registerEviction(fs *flag.FlagSet) {
	r.eviction = true
	fs.BoolVar(&r.allowEviction, "allow-redis-eviction", false, "Start even if Redis may evict keys when full (maxmemory set and maxmemory-policy other than noeviction), which makes lookups serve wrong features as present: for a store rebuilt from Kafka after any eviction.")
}

// checkEviction refuses a Redis (every primary of a Cluster) that may
// evict keys when full: a maxmemory and a maxmemory-policy other than
// noeviction. Evicted tiles and fences, positions or registry versions
// are not an error anywhere: lookups serve the features of the events
// left as present (zeros for an evicted entity), and ingest writes later
// events into fresh hashes. With --allow-redis-eviction it warns instead.
// INFO is read rather than CONFIG, which managed services refuse; a Redis
// that does not answer is left to what uses the client.
func (r *redisFlags) checkEviction(ctx context.Context, c redis.UniversalClient, log *slog.Logger) error {
	if !r.eviction {
		return nil
	}
	check := func(ctx context.Context, node *redis.Client) error {
		info, err := node.Info(ctx, "memory").Result()
		if err != nil {
			log.Warn("cannot read the eviction policy of Redis (INFO memory)", "addr", node.Options().Addr, "err", err)
			return nil
		}
		policy, maxmemory, may := evictionOf(info)
		if !may {
			if policy != "" && policy != "noeviction" {
				log.Warn("Redis would evict keys if a maxmemory were set: set maxmemory-policy noeviction", "addr", node.Options().Addr, "maxmemory_policy", policy)
			}
			return nil
		}
		what := fmt.Sprintf("the Redis at %s evicts keys when full (maxmemory %s bytes, maxmemory-policy %s): evicted tiles, fences, positions or registry versions make lookups serve wrong features as present; set maxmemory-policy noeviction (a full Redis then refuses writes, and ingest waits)",
			node.Options().Addr, maxmemory, policy)
		if r.allowEviction {
			log.Warn(what + "; starting all the same (--allow-redis-eviction)")
			return nil
		}
		return &evictionError{what + ", or pass --allow-redis-eviction"}
	}
	// A Cluster's primaries are found by asking it: unreachable, that
	// fails too, and is left to what uses the client, as above.
	err := forEachPrimary(ctx, c, check)
	if _, ours := errors.AsType[*evictionError](err); err != nil && !ours {
		log.Warn("cannot read the eviction policy of Redis Cluster", "err", err)
		return nil
	}
	return err
}

// forEachPrimary calls fn with the Redis of a standalone client, or with
// each primary of a Cluster.
func forEachPrimary(ctx context.Context, c redis.UniversalClient, fn func(context.Context, *redis.Client) error) error {
	switch cc := c.(type) {
	case *redis.ClusterClient:
		return cc.ForEachMaster(ctx, fn)
	case *redis.Client:
		return fn(ctx, cc)
	}
	return nil
}

// evictionOf returns the maxmemory-policy and maxmemory of an INFO memory
// reply, and whether they let the node evict keys when full.
func evictionOf(info string) (policy, maxmemory string, may bool) {
	policy, maxmemory = infoField(info, "maxmemory_policy"), infoField(info, "maxmemory")
	return policy, maxmemory, policy != "" && policy != "noeviction" && maxmemory != "0" && maxmemory != ""
}

// evictionError is checkEviction's refusal of a Redis.
type evictionError struct{ msg string }

func (e *evictionError) Error() string { return e.msg }

// evictionCheckEvery is how often a running ingest or serve reads the
// eviction policy and the evicted keys of Redis again (watchEviction).
var evictionCheckEvery = 30 * time.Second

// watchEviction reads, every evictionCheckEvery until ctx ends, Redis's
// evicted_keys (summed over a Cluster's primaries) into the gauge
// featurestore_redis_evicted_keys, and logs at error level when it grew
// or when a node may evict keys it did not before (a policy or maxmemory
// changed at run time by CONFIG SET, after the check at start).
func watchEviction(ctx context.Context, c redis.UniversalClient, prom prometheus.Registerer, log *slog.Logger) {
	evicted := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "featurestore_redis_evicted_keys",
		Help: "Keys Redis evicted since it started (evicted_keys of INFO stats, summed over a Cluster's primaries), read every 30s: above 0, lookups may serve wrong features (docs/operations.md, Redis memory).",
	})
	prom.MustRegister(evicted)
	var mu sync.Mutex
	last := map[string]int64{}      // evicted_keys by node
	evicting := map[string]string{} // node -> policy, of the nodes that may evict
	check := func(ctx context.Context, node *redis.Client) error {
		info, err := node.Info(ctx, "memory", "stats").Result()
		if err != nil {
			return nil // unreachable: what uses the client says so
		}
		addr := node.Options().Addr
		n, _ := strconv.ParseInt(infoField(info, "evicted_keys"), 10, 64)
		policy, maxmemory, may := evictionOf(info)
		mu.Lock()
		defer mu.Unlock()
		if before, seen := last[addr]; n > before && (seen || n > 0) {
			log.Error("Redis evicted keys: lookups may serve wrong features as present (docs/operations.md: Redis memory)",
				"addr", addr, "evicted_keys", n, "since_last_check", n-before, "maxmemory_policy", policy)
		}
		last[addr] = n
		if may && evicting[addr] != policy {
			log.Error("Redis may evict keys when full: set maxmemory-policy noeviction", "addr", addr, "maxmemory", maxmemory, "maxmemory_policy", policy)
			evicting[addr] = policy
		} else if !may {
			delete(evicting, addr)
		}
		return nil
	}
	read := func() {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = forEachPrimary(ctx, c, check)
		var sum int64
		mu.Lock()
		for _, n := range last {
			sum += n
		}
		mu.Unlock()
		evicted.Set(float64(sum))
	}
	t := time.NewTicker(evictionCheckEvery)
	defer t.Stop()
	for {
		read()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// infoField returns the value of a field of an INFO reply, "" if absent.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (r *redisFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.addr, "redis-addr", "127.0.0.1:6379", "Redis address host:port; several, comma-separated, for Redis Cluster seeds.")
	fs.BoolVar(&r.cluster, "redis-cluster", false, "Talk to Redis Cluster (implied by several addresses); one node's address without it is refused at start.")
	fs.StringVar(&r.username, "redis-username", "", "Redis ACL user name.")
	fs.StringVar(&r.password, "redis-password", "", "Redis password (prefer the environment variable to the flag).")
	fs.IntVar(&r.db, "redis-db", 0, "Redis database number (standalone only).")
	fs.StringVar(&r.sentinelMaster, "redis-sentinel-master", "", "Name of the master that Redis Sentinel monitors: --redis-addr then lists the Sentinels (comma-separated), which the commands ask for the master's address, again after each failover.")
	fs.StringVar(&r.sentinelUsername, "redis-sentinel-username", "", "ACL user name of the Sentinels, when they require one.")
	fs.StringVar(&r.sentinelPassword, "redis-sentinel-password", "", "Password of the Sentinels, when they require one (prefer the environment variable to the flag); --redis-password is the master's.")
	fs.BoolVar(&r.tls, "redis-tls", false, "Connect to Redis over TLS (implied by the other --redis-tls flags), checking the servers' certificates against the system's roots or --redis-tls-ca.")
	r.tlsFiles.register(fs, "redis", "Redis servers")
	positiveDurationVar(fs, &r.timeout, "redis-timeout", 2*time.Second, "Dial, read and write timeout of Redis commands.")
}

// redisPoolTimeout bounds a lookup's wait for a connection of serve's
// client's pool, all in use: below serve's default deadline.
const redisPoolTimeout = 250 * time.Millisecond

// client returns the Redis client; an error (a usage error) names the flag
// at fault.
func (r *redisFlags) client() (redis.UniversalClient, error) {
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
		// One dial per attempt: go-redis's default, 5 dials 100ms apart
		// inside every command attempt, times its command retries, made
		// a lookup against a Redis that refuses connections wait out its
		// whole deadline and fail with "context deadline exceeded", the
		// dial error only in go-redis's log. With one, the retries of the
		// command (MaxRetries, with backoff) still ride out a restart,
		// and a refused connection fails in about 0.1s, saying so.
		DialerRetries: 1,
		IsClusterMode: r.sentinelMaster == "" && (r.cluster || len(addrs) > 1),
		// RESP2: nothing here needs RESP3's types, and go-redis reads
		// RESP2 replies (HGETALL's flat array above all) with fewer
		// allocations and no push-notification checks.
		Protocol: 2,
	}
	if r.sentinelMaster != "" {
		if r.cluster {
			return nil, fmt.Errorf("%w: --redis-sentinel-master and --redis-cluster exclude each other: Sentinel monitors standalone masters", errUsage)
		}
		opts.MasterName, opts.SentinelUsername, opts.SentinelPassword = r.sentinelMaster, r.sentinelUsername, r.sentinelPassword
	} else if r.sentinelUsername != "" || r.sentinelPassword != "" {
		return nil, fmt.Errorf("%w: --redis-sentinel-username and --redis-sentinel-password need --redis-sentinel-master", errUsage)
	}
	if r.readReplicas {
		if !opts.IsClusterMode && opts.MasterName == "" {
			return nil, fmt.Errorf("%w: --redis-read-replicas needs Redis Cluster (--redis-cluster) or Sentinel (--redis-sentinel-master), which tell where the replicas are", errUsage)
		}
		// go-redis sends READONLY to replicas' connections; with
		// Sentinel it makes a client of one shard, the master and the
		// replicas the Sentinels list.
		opts.ReadOnly, opts.RouteRandomly = true, true
	}
	if r.lookups {
		// A wait for a connection, all in use, that the command's context
		// ends is counted nowhere by go-redis; one that PoolTimeout ends
		// is a pool timeout (featurestore_redis_pool_timeouts_total),
		// retried like other errors while the deadline allows. go-redis's
		// default, ReadTimeout+1s, outlasts every lookup (1s by default),
		// so a lookup behind an exhausted pool would fail uncounted. A
		// connection not free within this is a pool too small anyway.
		// Ingest and backfill keep go-redis's default: a process owning
		// more partitions than the pool has connections (10 per core)
		// queues their batches for connections while Redis is slow, and
		// a wait of 250ms there would fail batches as if Redis were down.
		opts.PoolTimeout = redisPoolTimeout
	}
	if r.tls || r.tlsFiles.given() {
		// TLS by a dialer of its own, whose files are read again when
		// they change: go-redis's TLSConfig is fixed.
		td, err := r.tlsFiles.dialer(r.timeout)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		opts.Dialer = td.DialContext
	}
	if opts.IsClusterMode {
		co := opts.Cluster()
		// go-redis reloads the slot map on MOVED and ASK replies, and
		// otherwise once a minute: after a primary dies, commands of its
		// slots would dial the dead node for up to a minute after its
		// replica took over (a refused dial triggers no reload).
		co.ClusterStateReloadInterval = clusterStateReload
		return redis.NewClusterClient(co), nil
	}
	return redis.NewUniversalClient(opts), nil
}

// clusterStateReload is how old the slot map of a Redis Cluster client
// may get before a command reloads it (in the background).
const clusterStateReload = 2 * time.Second

// checkMode refuses a standalone client of a Redis that is a node of a
// Redis Cluster (one seed address without --redis-cluster): the node
// answers for its own slots only, so every key of another node would fail
// with MOVED, a lookup or a write at a time.
func (r *redisFlags) checkMode(ctx context.Context, c redis.UniversalClient) error {
	if _, standalone := c.(*redis.Client); !standalone {
		return nil
	}
	info, err := c.Info(ctx, "cluster").Result()
	if err != nil {
		return nil // not reachable: what uses the client says so
	}
	if strings.Contains(info, "cluster_enabled:1") {
		return fmt.Errorf("the Redis at %s is a node of a Redis Cluster: pass --redis-cluster (or the nodes' addresses, comma-separated)", r.addr)
	}
	return nil
}

// registryFlags say where the registry is.
type registryFlags struct {
	location string
	project  string
	redis    redisFlags
}

// defaultProject is the project a file registry keeps at the top of its
// directory; other projects live in DIR/projects/NAME.
const defaultProject = "default"

func (r *registryFlags) register(fs *flag.FlagSet) {
	// Both are checked as they are set, so that a bad value is wrong usage
	// (exit 2) reported before any command reads or opens anything.
	r.location, r.project = "redis", defaultProject
	fs.Var(&checkedString{&r.location, checkLocation}, "registry", "Where registry versions live: redis (on --redis-addr), or file:DIR for a local directory.")
	fs.Var(&checkedString{&r.project, redisstore.ValidProject}, "project", "Project whose registry to use; projects are independent namespaces.")
	r.redis.register(fs)
}

// checkedString is a string flag that refuses values check refuses.
type checkedString struct {
	p     *string
	check func(string) error
}

func (c *checkedString) String() string {
	if c == nil || c.p == nil { // the flag package's zero value, for its help
		return ""
	}
	return *c.p
}

func (c *checkedString) Set(s string) error {
	if err := c.check(s); err != nil {
		return err
	}
	*c.p = s
	return nil
}

// fileDir returns the directory of a file:DIR registry location, and
// whether the location is one.
func fileDir(location string) (string, bool) {
	if !strings.HasPrefix(location, "file:") {
		return "", false
	}
	return strings.TrimPrefix(strings.TrimPrefix(location, "file:"), "//"), true
}

func checkLocation(location string) error {
	if dir, ok := fileDir(location); ok {
		if dir == "" {
			return errors.New("file: needs a directory, like file:./registry")
		}
		return nil
	}
	if location != "redis" {
		return errors.New("use redis or file:DIR")
	}
	return nil
}

// snapshot returns registry version v of the project, the current one when
// v is 0, and closes the store: callers that only read one version keep no
// registry connection open. flagName is the flag that gave v.
func (r *registryFlags) snapshot(ctx context.Context, flagName string, v int64) (*registry.Snapshot, error) {
	if v < 0 {
		return nil, fmt.Errorf("%w: %s %d: versions are numbered from 1 (0 for the current one)", errUsage, flagName, v)
	}
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
			where := r.location
			if where == "redis" {
				where = "redis at " + r.redis.addr
			}
			return nil, fmt.Errorf("nothing has been applied to project %q of the registry (%s) yet: check --project and --registry, or run apply", r.project, where)
		}
	}
	return store.Get(ctx, v)
}

// open returns the configured store; close releases it. A file registry
// keeps the default project in DIR itself, as before projects had their
// own, and every other project in DIR/projects/NAME, so that projects
// sharing a directory are as independent as projects sharing a Redis.
func (r *registryFlags) open(ctx context.Context) (registry.Store, func(), error) {
	// The flags were checked as they were set; this guards callers that
	// fill registryFlags some other way.
	if err := checkLocation(r.location); err != nil {
		return nil, nil, fmt.Errorf("%w: --registry %q: %v", errUsage, r.location, err)
	}
	if err := redisstore.ValidProject(r.project); err != nil {
		return nil, nil, fmt.Errorf("%w: --project: %v", errUsage, err)
	}
	if dir, isFile := fileDir(r.location); isFile {
		if r.project != defaultProject {
			dir = filepath.Join(dir, "projects", r.project)
		}
		s, err := registry.OpenFileStore(dir)
		if err != nil {
			return nil, nil, err
		}
		return s, func() {}, nil
	}
	c, err := r.redis.client()
	if err != nil {
		return nil, nil, err
	}
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("registry: redis at %s does not answer: %w (start Redis, or `featurestore dev` and keep it running, or use --registry file:DIR)", r.redis.addr, err)
	}
	if err := r.redis.checkMode(ctx, c); err != nil {
		c.Close()
		return nil, nil, err
	}
	s, err := redisstore.New(c, r.project)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return s, func() { c.Close() }, nil
}
