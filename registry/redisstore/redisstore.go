// Package redisstore keeps registry versions in Redis, so that every process
// of a deployment sees the same definitions. It works with standalone Redis
// and Redis Cluster alike: all its keys share one hash slot.
//
// Layout, for project P (the braces are the cluster hash tag):
//
//	fs:{reg.P}:head       the newest version number
//	fs:{reg.P}:snapshots  hash: version -> canonical JSON of the definitions
//	fs:{reg.P}:info       hash: version -> JSON VersionInfo
//	fs:{reg.P}:commits    hash: version -> random id of the Commit call that made it
//	fs:{reg.P}:events     pub/sub channel: the version just committed
//
// Commits only ever move the head up by one, so the head is always the
// highest version stored: a head key lost alone (deleted, evicted) is
// taken to be that version, by reads and commits alike, so that a plan is
// made against the last version applied and no version is overwritten.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/registry"
)

// Store is a registry.Store and registry.Notifier on Redis.
type Store struct {
	c                                     redis.UniversalClient
	head, snapshots, info, commits, event string
}

// New returns the store of the named project on c. The caller keeps
// ownership of c; Close does not close it.
func New(c redis.UniversalClient, project string) (*Store, error) {
	if err := validProject(project); err != nil {
		return nil, err
	}
	p := "fs:{reg." + project + "}:"
	return &Store{c: c, head: p + "head", snapshots: p + "snapshots", info: p + "info", commits: p + "commits", event: p + "events"}, nil
}

// ValidProject reports whether p can name a project: it is part of every
// Redis key of the project, inside the cluster hash tag, so braces, colons
// and spaces are out.
func ValidProject(p string) error { return validProject(p) }

func validProject(p string) error {
	if p == "" {
		return errors.New("empty project name")
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return fmt.Errorf("invalid project name %q: use letters, digits, _ and -", p)
		}
	}
	return nil
}

// Head returns the newest version number, 0 for none.
func (s *Store) Head(ctx context.Context) (int64, error) {
	v, err := s.c.Get(ctx, s.head).Int64()
	if errors.Is(err, redis.Nil) {
		// A lost head key: the highest version stored (see the package
		// documentation), 0 when there is none.
		fields, err := s.c.HKeys(ctx, s.snapshots).Result()
		if err != nil {
			return 0, fmt.Errorf("read registry versions from redis: %w", err)
		}
		var top int64
		for _, f := range fields {
			if n, err := strconv.ParseInt(f, 10, 64); err == nil && n > top {
				top = n
			}
		}
		return top, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read registry head from redis: %w", err)
	}
	return v, nil
}

// Get returns version v.
func (s *Store) Get(ctx context.Context, v int64) (*registry.Snapshot, error) {
	field := strconv.FormatInt(v, 10)
	pipe := s.c.Pipeline()
	snap := pipe.HGet(ctx, s.snapshots, field)
	info := pipe.HGet(ctx, s.info, field)
	if _, err := pipe.Exec(ctx); err != nil {
		if errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("registry version %d does not exist", v)
		}
		return nil, fmt.Errorf("read registry version %d from redis: %w", v, err)
	}
	var vi registry.VersionInfo
	if err := json.Unmarshal([]byte(info.Val()), &vi); err != nil {
		return nil, fmt.Errorf("registry version %d: info: %w", v, err)
	}
	return registry.SnapshotOf(vi, []byte(snap.Val()))
}

// Info returns the info of version v, without its definitions.
func (s *Store) Info(ctx context.Context, v int64) (registry.VersionInfo, error) {
	b, err := s.c.HGet(ctx, s.info, strconv.FormatInt(v, 10)).Bytes()
	if errors.Is(err, redis.Nil) {
		return registry.VersionInfo{}, fmt.Errorf("registry version %d does not exist", v)
	}
	if err != nil {
		return registry.VersionInfo{}, fmt.Errorf("read registry version %d from redis: %w", v, err)
	}
	var vi registry.VersionInfo
	if err := json.Unmarshal(b, &vi); err != nil {
		return registry.VersionInfo{}, fmt.Errorf("registry version %d: info: %w", v, err)
	}
	return vi, nil
}

// Versions lists every version, newest first.
func (s *Store) Versions(ctx context.Context) ([]registry.VersionInfo, error) {
	m, err := s.c.HGetAll(ctx, s.info).Result()
	if err != nil {
		return nil, fmt.Errorf("list registry versions: %w", err)
	}
	out := make([]registry.VersionInfo, 0, len(m))
	for k, b := range m {
		var vi registry.VersionInfo
		if err := json.Unmarshal([]byte(b), &vi); err != nil {
			return nil, fmt.Errorf("registry version %s: info: %w", k, err)
		}
		out = append(out, vi)
	}
	slices.SortFunc(out, func(a, b registry.VersionInfo) int { return int(b.Version - a.Version) })
	return out, nil
}

// commitScript writes a version only if the head is still the expected one,
// and announces it, in one atomic step. It records the commit id (ARGV[4])
// with the version, so that the same call run again finds its own commit:
// the client retries a script whose reply was lost, and that retry finds
// version expected+1 committed with its id, which is success, not a
// conflict, even if other commits came on top of it meanwhile.
//
// A lost head key is the highest version stored, as Head reads it.
var commitScript = redis.NewScript(`
local head = redis.call('GET', KEYS[1])
if head then
  head = tonumber(head)
else
  head = 0
  for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do
    local n = tonumber(f)
    if n and n > head then head = n end
  end
end
local expected = tonumber(ARGV[1])
if head ~= expected then
  if head > expected and redis.call('HGET', KEYS[5], expected + 1) == ARGV[4] then
    return {1, expected + 1}
  end
  return {0, head}
end
local v = head + 1
redis.call('HSET', KEYS[2], v, ARGV[2])
redis.call('HSET', KEYS[3], v, ARGV[3])
redis.call('HSET', KEYS[5], v, ARGV[4])
redis.call('SET', KEYS[1], v)
redis.call('PUBLISH', KEYS[4], v)
return {1, v}
`)

// Commit stores content as version expected+1 if the head is still expected.
func (s *Store) Commit(ctx context.Context, expected int64, info registry.VersionInfo, content []byte) (registry.VersionInfo, error) {
	info.Version = expected + 1
	ib, err := json.Marshal(info)
	if err != nil {
		return registry.VersionInfo{}, err
	}
	// Unique per call, so only a retry of this call matches it.
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return registry.VersionInfo{}, err
	}
	// The channel is passed as a key so the script declares everything it
	// touches; it shares the hash tag, so the slot is the same.
	keys := []string{s.head, s.snapshots, s.info, s.event, s.commits}
	res, err := commitScript.Run(ctx, s.c, keys, expected, content, ib, hex.EncodeToString(id)).Int64Slice()
	if err != nil {
		return registry.VersionInfo{}, fmt.Errorf("commit registry version to redis: %w", err)
	}
	if res[0] == 0 {
		return registry.VersionInfo{}, fmt.Errorf("%w: head is version %d, not %d", registry.ErrConflict, res[1], expected)
	}
	return info, nil
}

// Notify announces commits published on the store's channel until ctx ends.
func (s *Store) Notify(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	sub := s.c.Subscribe(ctx, s.event)
	go func() {
		defer sub.Close()
		ch := sub.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-ch:
				if !ok {
					return
				}
				select {
				case out <- struct{}{}:
				default: // a wake-up is already pending
				}
			}
		}
	}()
	return out
}

// Close does nothing: the client belongs to the caller.
func (s *Store) Close() error { return nil }
