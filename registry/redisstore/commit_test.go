package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
	"github.com/featurestore/featurestore/registry/redisstore"
	"github.com/featurestore/featurestore/registry/storetest"
)

// A commit whose reply is lost on the way back is retried by the client; the
// retry finds the head one past what it expected. It must report the commit
// it made, not a conflict: "nothing was applied" would be false.
func TestCommitReplyLost(t *testing.T) {
	ctx := context.Background()
	p := startReplyDropper(t, testenv.RedisAddr(t))
	// One connection, so the reply held back is the commit's; go-redis
	// retries a command whose connection broke before its reply.
	c := redis.NewClient(&redis.Options{Addr: p.addr(), PoolSize: 1, MaxRetries: 3})
	t.Cleanup(func() { c.Close() })
	s, err := redisstore.New(c, projectFor(t))
	if err != nil {
		t.Fatal(err)
	}
	// The first commit also loads the script, so that the reply dropped
	// below is the commit's and not a NOSCRIPT error.
	if _, err := registry.Apply(ctx, s, storetest.Defs(t, "1h"), registry.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	r2 := storetest.Defs(t, "2h")
	p.dropNext.Store(true)
	res, err := registry.Apply(ctx, s, r2, registry.ApplyOptions{AllowBreaking: true})
	if p.dropped.Load() != 1 {
		t.Fatalf("the proxy dropped %d replies, want 1", p.dropped.Load())
	}
	if err != nil {
		t.Fatalf("apply whose reply was lost: %v; want version 2 reported as applied", err)
	}
	if res.To.Version != 2 || res.To.Digest != r2.Digest() {
		t.Fatalf("apply reported %+v", res.To)
	}
	snap, err := registry.Current(ctx, s)
	if err != nil || snap.Version != 2 || snap.Digest != r2.Digest() {
		t.Fatalf("current after the apply: %+v, %v", snap, err)
	}

	// Another applier's commit is still a conflict, even with the same
	// definitions: only the retry of one call is the same commit.
	_, err = s.Commit(ctx, 1, registry.VersionInfo{Digest: r2.Digest()}, r2.CanonicalJSON())
	if !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("commit against a stale head: %v, want ErrConflict", err)
	}
}

// retryAfterOther runs the next script call, then calls other, then runs
// the call again: go-redis's retry of a script whose reply was lost, with
// another applier's commit landing in between.
type retryAfterOther struct {
	armed atomic.Bool
	other func()
}

func (h *retryAfterOther) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *retryAfterOther) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "evalsha" || !h.armed.Swap(false) {
			return next(ctx, cmd)
		}
		if err := next(ctx, cmd); err != nil {
			return err
		}
		h.other()
		return next(ctx, cmd)
	}
}
func (h *retryAfterOther) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestCommitRetriedAfterAnotherCommit: the retry of a commit whose reply was
// lost comes after another applier committed on top of it. Version 2 is
// still this call's commit, and must be reported so, not as a conflict.
func TestCommitRetriedAfterAnotherCommit(t *testing.T) {
	ctx := context.Background()
	project := projectFor(t)
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	c2 := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { c.Close(); c2.Close() })
	s, err := redisstore.New(c, project)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := redisstore.New(c2, project)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Apply(ctx, s, storetest.Defs(t, "1h"), registry.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var otherErr error
	h := &retryAfterOther{other: func() {
		_, otherErr = registry.Apply(ctx, s2, storetest.Defs(t, "3h"), registry.ApplyOptions{AllowBreaking: true})
	}}
	c.AddHook(h)
	h.armed.Store(true)
	r2 := storetest.Defs(t, "2h")
	res, err := registry.Apply(ctx, s, r2, registry.ApplyOptions{AllowBreaking: true})
	if otherErr != nil {
		t.Fatalf("the other apply: %v", otherErr)
	}
	if err != nil {
		t.Fatalf("apply whose retry came after another commit: %v; want version 2 reported as applied", err)
	}
	if res.To.Version != 2 || res.To.Digest != r2.Digest() {
		t.Fatalf("apply reported %+v", res.To)
	}
	if snap, err := registry.Current(ctx, s); err != nil || snap.Version != 3 {
		t.Fatalf("current after both applies: %+v, %v; want version 3", snap, err)
	}
}

// replyDropper forwards TCP connections to Redis. Armed, it swallows the
// reply to the next script call (EVALSHA) and cuts that connection, as a network that fails
// after the command reached Redis does.
type replyDropper struct {
	l        net.Listener
	target   string
	dropNext atomic.Bool
	dropped  atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startReplyDropper(t *testing.T, target string) *replyDropper {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &replyDropper{l: l, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *replyDropper) addr() string { return p.l.Addr().String() }

func (p *replyDropper) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		var dropReply atomic.Bool // this connection sent the script call
		p.wg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 && bytes.Contains(bytes.ToLower(buf[:n]), []byte("evalsha")) && p.dropNext.CompareAndSwap(true, false) {
					dropReply.Store(true)
				}
				if n > 0 {
					if _, werr := up.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			up.Close()
			c.Close()
		})
		p.wg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := up.Read(buf)
				if n > 0 && dropReply.Load() {
					p.dropped.Add(1)
					break
				}
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			up.Close()
			c.Close()
		})
	}
}
