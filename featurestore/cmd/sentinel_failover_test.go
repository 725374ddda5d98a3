package cmd

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// sentinelProject starts a Redis master and replica behind Sentinel
// (testenv.RedisSentinel), and applies the example definitions, on a topic
// of their own with partitions, to a project of the test's own on it. It
// returns the registry, the project and the environment of the commands.
func sentinelProject(t *testing.T, partitions int) (sr *testenv.SentinelRedis, brokers []string, r *registry.Registry, project string, env map[string]string) {
	t.Helper()
	sr = testenv.RedisSentinel(t)
	brokers = testenv.KafkaBrokers(t)
	r, project, env = applyExamples(t, brokers, partitions, map[string]string{"FEATURESTORE_REDIS_ADDR": sr.Sentinel, "FEATURESTORE_REDIS_SENTINEL_MASTER": sr.Master})
	return sr, brokers, r, project, env
}

// TestRedisSentinelFailover runs 'featurestore ingest' and 'featurestore
// serve' against a Redis master and replica that Sentinel monitors
// (--redis-sentinel-master), and fails the master over to a replica that
// lacks its last writes: the replica is paused and its link cut while
// ingest applies 1,000 events, then the master is killed and the replica,
// resumed, promoted. On a standalone Redis ingest's position lives on the
// server of the entity hashes and is written after them, so the promoted
// replica's position is as old as its hashes: ingest sees the position
// went back (with no new event: its idle check), applies those events
// again, and every event counts once
// (against the brute-force reference); lookups fail with 503 during the
// failover and succeed again once the Sentinel has promoted the replica.
func TestRedisSentinelFailover(t *testing.T) {
	sr, brokers, r, project, env := sentinelProject(t, 2)
	topic := r.Source("card_transactions").Kafka.Topic
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: sr.Master, SentinelAddrs: []string{sr.Sentinel}})
	defer rc.Close()

	const phase = 1000
	msgs, accepted := cardEvents(13, 3*phase, 100*time.Millisecond)
	applied := func() int64 { return appliedCount(ctx, rc, project, topic, 2) }
	wait := ingestWaiter(t, ctx, applied, nil)
	stopIngest := startCommand(ctx, env, "ingest", "--metrics-addr", "", "--session-timeout", "6s")
	defer func() {
		if out := stopIngest(); t.Failed() {
			t.Logf("ingest:\n%s", out)
		}
	}()
	httpAddr := startServeHTTP(t, ctx, env)
	body := `{"features":{"refs":["card_txn:lifetime_txn_count"]},"entities":[{"join_key_values":[{"string_val":"card-1"}]}]}`
	lookup := httpLookup(httpAddr, body)

	produce(t, ctx, brokers, topic, msgs[:phase])
	wait("the first events applied", func() bool { return applied() == phase })
	if err := testenv.WaitReplicated(ctx, sr.Primary.Addr); err != nil {
		t.Fatal(err)
	}
	// Paused, the replica cannot connect again when the master cuts its
	// link: the master's writes from then on reach no replica.
	sr.Replica.Pause()
	paused := true
	defer func() {
		if paused {
			sr.Replica.Resume()
		}
	}()
	pc := redis.NewClient(&redis.Options{Addr: sr.Primary.Addr})
	defer pc.Close()
	if err := pc.ClientKillByFilter(ctx, "TYPE", "replica").Err(); err != nil {
		t.Fatalf("cut the replica's link: %v", err)
	}
	produce(t, ctx, brokers, topic, msgs[phase:2*phase])
	wait("the second events applied on the master", func() bool { return applied() == 2*phase })

	sr.Primary.Kill()
	sr.Replica.Resume()
	paused = false
	killed := time.Now()
	var failures []string
	for {
		code, b, _ := lookup()
		if code == http.StatusOK {
			break
		}
		if code != http.StatusServiceUnavailable {
			t.Fatalf("a lookup during the failover: %d %s, want 503", code, b)
		}
		if len(failures) < 3 {
			failures = append(failures, b)
		}
		if time.Since(killed) > time.Minute {
			t.Fatalf("lookups still fail a minute after the master died: %q", failures)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("lookups succeed again %v after the master died; first failures: %.300q",
		time.Since(killed).Round(100*time.Millisecond), failures)
	role, err := redis.NewClient(&redis.Options{Addr: sr.Replica.Addr}).Do(ctx, "ROLE").Slice()
	if err != nil || len(role) == 0 || role[0] != "master" {
		t.Fatalf("the replica's role after the failover: %v %v", role, err)
	}
	// The promoted replica's positions are as old as its hashes: each
	// partition finds its position went back within ingest's idle check
	// (5 s), without new events, and applies the second events again.
	wait("the second events applied again", func() bool { return applied() == 2*phase })
	t.Logf("the second events applied again %v after the master died", time.Since(killed).Round(100*time.Millisecond))
	produce(t, ctx, brokers, topic, msgs[2*phase:])
	wait("every event applied", func() bool { return applied() == 3*phase })
	checkCardTxn(t, ctx, rc, r, project, accepted)
}
