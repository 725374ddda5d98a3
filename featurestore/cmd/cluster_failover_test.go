package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// clusterProject starts a Redis Cluster of 3 masters with a replica each,
// and applies the example definitions, on a topic of their own with
// partitions, to a project of the test's own on it. It returns the
// registry, the project, the cluster's addresses as seeds, and the
// environment of the commands.
func clusterProject(t *testing.T, partitions int) (cluster *testenv.ReplicatedCluster, brokers []string, r *registry.Registry, project, seeds string, env map[string]string) {
	t.Helper()
	cluster = testenv.RedisClusterReplicated(t, 3)
	brokers = testenv.KafkaBrokers(t)
	seeds = strings.Join(append(append([]string{}, cluster.Masters...), cluster.Replicas...), ",")
	r, project, env = applyExamples(t, brokers, partitions, map[string]string{"FEATURESTORE_REDIS_ADDR": seeds, "FEATURESTORE_REDIS_CLUSTER": "true"})
	return cluster, brokers, r, project, seeds, env
}

// applyExamples applies the example definitions, on a topic of their own
// with partitions, to a project of the test's own in the Redis that
// redisEnv points the commands at. It returns the registry, the project,
// and the environment of the commands: redisEnv's, the project's, the
// brokers', and logs at error level.
func applyExamples(t *testing.T, brokers []string, partitions int, redisEnv map[string]string) (r *registry.Registry, project string, env map[string]string) {
	t.Helper()
	defs := examplesOnNewTopic(t, brokers, partitions)
	r, err := registry.LoadDir(defs)
	if err != nil {
		t.Fatal(err)
	}
	project = strings.NewReplacer("/", "-", ".", "-").Replace(testenv.UniqueName(t, "p"))
	env = maps.Clone(redisEnv)
	env["FEATURESTORE_PROJECT"], env["FEATURESTORE_KAFKA_BROKERS"], env["FEATURESTORE_LOG_LEVEL"] = project, strings.Join(brokers, ","), "error"
	if code, out, errOut := runCLI(t, env, "apply", defs); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	return r, project, env
}

// startIngestSmallBatches runs 'featurestore ingest' with env until the
// test ends, with batches of 20 messages and little read ahead, so that
// what the test does to Redis comes while batches are being applied. Its
// log is shown if the test failed.
func startIngestSmallBatches(t *testing.T, ctx context.Context, env map[string]string) {
	t.Helper()
	stop := startCommand(ctx, env, "ingest", "--metrics-addr", "", "--session-timeout", "6s",
		"--batch-size", "20", "--max-batch-size", "20", "--buffer-memory", "32KiB")
	t.Cleanup(func() {
		if out := stop(); t.Failed() {
			t.Logf("ingest:\n%s", out)
		}
	})
}

// lifetimeCountsBody is the body of an HTTP lookup of the example view's
// lifetime count of each card, in order.
func lifetimeCountsBody(cards []string) string {
	var ents []string
	for _, card := range cards {
		ents = append(ents, fmt.Sprintf(`{"join_key_values":[{"string_val":%q}]}`, card))
	}
	return `{"features":{"refs":["card_txn:lifetime_txn_count"]},"entities":[` + strings.Join(ents, ",") + `]}`
}

// firstInt64s returns the first value of each entity of an HTTP lookup's
// response b, an int64 (a count).
func firstInt64s(t *testing.T, b string) []int64 {
	t.Helper()
	var res struct {
		Results []struct {
			Values []struct {
				Value struct {
					Int64Val int64 `json:"int64_val,string"`
				} `json:"value"`
			} `json:"values"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(b), &res); err != nil {
		t.Fatalf("lookup response %q: %v", b, err)
	}
	var n []int64
	for _, r := range res.Results {
		n = append(n, r.Values[0].Value.Int64Val)
	}
	return n
}

// startServeHTTP runs 'featurestore serve' with env until the test ends,
// and returns the address of its HTTP lookups. Its log is shown if the
// test failed.
func startServeHTTP(t *testing.T, ctx context.Context, env map[string]string) string {
	t.Helper()
	httpAddr := freeAddr(t)
	stop := startCommand(ctx, env, "serve", "--metrics-addr", "", "--grpc-addr", freeAddr(t), "--http-addr", httpAddr, "--flight-addr", "")
	t.Cleanup(func() {
		if out := stop(); t.Failed() {
			t.Logf("serve:\n%s", out)
		}
	})
	return httpAddr
}

// httpLookup returns a function that posts body to the HTTP lookup at
// httpAddr, and returns the status (0 when the call failed), the body (or
// the error) and how long it took.
func httpLookup(httpAddr, body string) func() (int, string, time.Duration) {
	hc := &http.Client{Timeout: 5 * time.Second}
	return func() (int, string, time.Duration) {
		start := time.Now()
		resp, err := hc.Post("http://"+httpAddr+"/v1/features:get", "application/json", strings.NewReader(body))
		if err != nil {
			return 0, err.Error(), time.Since(start)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start)
	}
}

// TestRedisClusterFailover runs 'featurestore ingest' and 'featurestore
// serve' against a Redis Cluster whose masters have replicas, and kills
// (SIGKILL) the master that holds the registry and some of the cards while
// both run: lookups fail fast with 503 (UNAVAILABLE), never hang, until the
// replica has taken the slots over, and succeed again within seconds (the
// clients reload the slot map every 2 s); ingest goes on with the events
// produced after the failover. The replica had every write when its master
// died, so every event is then counted once (against the brute-force
// reference). Then another master is killed while batches are applied:
// ingest goes on to the end of the topic, and no card's count is more than
// its events (a write the replica had not received may be lost).
func TestRedisClusterFailover(t *testing.T) {
	cluster, brokers, r, project, seeds, env := clusterProject(t, 3)
	topic := r.Source("card_transactions").Kafka.Topic

	// 3000 events of 30 cards over the last 50 minutes: 2000 before the
	// failover, the others after it.
	const before, total = 2000, 3000
	msgs, accepted := cardEvents(7, total, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	produce(t, ctx, brokers, topic, msgs[:before])

	// The test's own reads reload the slot map as often as the commands'
	// (go-redis's default is a minute, during which they would dial the
	// dead master).
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(seeds, ","), ClusterStateReloadInterval: clusterStateReload})
	defer rc.Close()
	applied := func() int64 { return appliedCount(ctx, rc, project, topic, 3) }
	wait := ingestWaiter(t, ctx, applied, nil)
	// Small batches and little read ahead: the second failover comes
	// while batches are being applied.
	startIngestSmallBatches(t, ctx, env)
	httpAddr := startServeHTTP(t, ctx, env)

	// A lookup of every card: the cards' hashes are on every shard.
	cards := slices.Sorted(maps.Keys(accepted))
	lookup := httpLookup(httpAddr, lifetimeCountsBody(cards))
	// perCard returns the lifetime counts a lookup gives, by card (in
	// cards order).
	perCard := func(b string) []int64 { return firstInt64s(t, b) }
	counted := func(b string) int64 {
		var n int64
		for _, c := range perCard(b) {
			n += c
		}
		return n
	}
	wait("the first events applied", func() bool { return applied() == before })
	wait("a lookup that counts them", func() bool {
		code, b, _ := lookup()
		return code == http.StatusOK && counted(b) == before
	})

	// Kill the master of the registry's slot once its replica has every
	// write.
	m, err := rc.MasterForKey(ctx, "fs:{reg."+project+"}:head")
	if err != nil {
		t.Fatal(err)
	}
	victim := m.Options().Addr
	if err := testenv.WaitReplicated(ctx, victim); err != nil {
		t.Fatal(err)
	}
	cluster.Kill(victim)
	killed := time.Now()
	var failures []string
	var slowest time.Duration
	for {
		code, b, took := lookup()
		slowest = max(slowest, took)
		if code == http.StatusOK {
			break
		}
		if len(failures) < 3 {
			failures = append(failures, fmt.Sprintf("%d %.200s", code, b))
		}
		if code != http.StatusServiceUnavailable {
			t.Fatalf("a lookup during the failover: %d %s, want 503", code, b)
		}
		if time.Since(killed) > time.Minute {
			t.Fatalf("lookups still fail a minute after the master died: %v", failures)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("lookups succeed again %v after the master died (slowest call %v); first failures: %q",
		time.Since(killed).Round(100*time.Millisecond), slowest.Round(time.Millisecond), failures)

	produce(t, ctx, brokers, topic, msgs[before:])
	wait("every event applied after the failover", func() bool { return applied() == total })
	t.Logf("every event applied %v after the master died", time.Since(killed).Round(100*time.Millisecond))
	wait("a lookup that counts every event", func() bool {
		code, b, _ := lookup()
		return code == http.StatusOK && counted(b) == total
	})
	checkCardTxn(t, ctx, rc, r, project, accepted)

	// Another master killed while ingest applies batches, without waiting
	// for its replica: the writes it had not passed on are lost (see the
	// operations page), but ingest goes on to the end of the topic, and no
	// event is ever counted twice.
	more, moreAccepted := cardEvents(9, 6000, 10*time.Millisecond)
	produce(t, ctx, brokers, topic, more)
	var second string
	for _, m := range cluster.Masters {
		if m != victim {
			second = m
			break
		}
	}
	wait("progress", func() bool { return applied() > total+1000 })
	at := applied() - total
	cluster.Kill(second)
	killed = time.Now()
	t.Logf("second master killed after about %d of %d events", at, len(more))
	wait("every event applied after the second failover", func() bool { return applied() == total+int64(len(more)) })
	t.Logf("every event applied %v after the second master died", time.Since(killed).Round(100*time.Millisecond))
	var lookedUp []int64
	wait("a lookup after the second failover", func() bool {
		code, b, _ := lookup()
		if code == http.StatusOK {
			lookedUp = perCard(b)
		}
		return code == http.StatusOK
	})
	lost := 0
	for i, card := range cards {
		low, high := len(accepted[card]), len(accepted[card])+len(moreAccepted[card])
		if got := int(lookedUp[i]); got < low || got > high {
			t.Errorf("card %s: lifetime count %d after the second failover, want %d to %d", card, got, low, high)
		} else {
			lost += high - got
		}
	}
	t.Logf("the second failover lost %d of %d events", lost, len(more))
}

// TestRedisClusterFailoverWaitReplicas shows what --redis-wait-replicas is
// for. The replica of a master is paused (SIGSTOP) and its link cut while
// ingest applies events to the master's cards, the master is killed, and
// the replica, resumed, takes its slots over without those writes.
// Ingest's position is on another shard.
//
//   - Without the flag, ingest saved the position past the lost writes, and
//     the master's cards lose exactly the events applied while the replica
//     was paused, for good: the online store equals the reference without
//     them (the limit the operations page documents).
//   - With --redis-wait-replicas 1, the batches fail until a replica
//     acknowledges them, so the position stays behind; after the failover
//     ingest writes them again to the new master, which has no replica
//     until the old master is started again and syncs from it; then the
//     position moves on and every event is counted once.
func TestRedisClusterFailoverWaitReplicas(t *testing.T) {
	for _, wait := range []bool{false, true} {
		t.Run(fmt.Sprintf("wait=%v", wait), func(t *testing.T) { testFailoverWaitReplicas(t, wait) })
	}
}

func testFailoverWaitReplicas(t *testing.T, wait bool) {
	cluster, brokers, r, project, seeds, env := clusterProject(t, 1)
	topic := r.Source("card_transactions").Kafka.Topic
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(seeds, ","), ClusterStateReloadInterval: clusterStateReload})
	defer rc.Close()

	// The victim: a master that holds neither the registry nor the
	// position of the topic's one partition.
	taken := map[string]bool{}
	for _, k := range []string{"fs:{reg." + project + "}:head", "fs:{pos." + project + ".card_transactions/" + topic + "/0}"} {
		m, err := rc.MasterForKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		taken[m.Options().Addr] = true
	}
	victim := -1
	for i, m := range cluster.Masters {
		if !taken[m] {
			victim = i
			break
		}
	}
	master, replica := cluster.Node(cluster.Masters[victim]), cluster.Node(cluster.Replicas[victim])
	onVictim := map[string]bool{}
	for i := range 30 {
		card := fmt.Sprintf("card-%d", i)
		m, err := rc.MasterForKey(ctx, online.Key{Project: project, View: "card_txn", Entity: featurestore.StringKey(card)}.Name())
		if err != nil {
			t.Fatal(err)
		}
		onVictim[card] = m.Options().Addr == master.Addr
	}

	// 3000 events of 30 cards: 1000 replicated, 1000 applied while the
	// replica is paused, 1000 after the failover.
	const phase = 1000
	msgs, accepted := cardEvents(11, 3*phase, 100*time.Millisecond)
	applied := func() int64 { return appliedCount(ctx, rc, project, topic, 1) }
	waitFor := ingestWaiter(t, ctx, applied, nil)
	// Batches of 100: each phase takes several, and with the flag the
	// partition stops at the first of the second events.
	args := []string{"ingest", "--metrics-addr", "", "--session-timeout", "6s", "--batch-size", "100", "--max-batch-size", "100"}
	if wait {
		args = append(args, "--redis-wait-replicas", "1", "--redis-wait-timeout", "200ms")
	}
	env["FEATURESTORE_LOG_LEVEL"] = "warn"
	stopIngest, ingestLog := startCommandLog(ctx, env, args...)
	defer func() {
		if out := stopIngest(); t.Failed() {
			t.Logf("ingest:\n%s", out)
		}
	}()
	produce(t, ctx, brokers, topic, msgs[:phase])
	waitFor("the first events applied", func() bool { return applied() == phase })
	// Without the flag, ingest warned at start of the replicas it does
	// not wait for.
	const unwaited = "the masters of the Redis Cluster have replicas that writes do not wait for"
	if got := strings.Contains(ingestLog(), unwaited); got == wait {
		t.Errorf("ingest warned %q: %v, want %v", unwaited, got, !wait)
	}
	if err := testenv.WaitReplicated(ctx, master.Addr); err != nil {
		t.Fatal(err)
	}

	// Paused, the replica cannot connect again when the master cuts its
	// link: the master's writes from then on reach no replica (a paused
	// replica alone would still receive them, in its socket's buffer).
	replica.Pause()
	paused := true
	defer func() {
		if paused {
			replica.Resume()
		}
	}()
	mc := redis.NewClient(&redis.Options{Addr: master.Addr})
	defer mc.Close()
	if err := mc.ClientKillByFilter(ctx, "TYPE", "replica").Err(); err != nil {
		t.Fatalf("cut the replica's link: %v", err)
	}
	produce(t, ctx, brokers, topic, msgs[phase:2*phase])
	// victimFence returns the newest offset applied to the victim's cards:
	// at or past phase once the master has some of the second events. (With
	// --redis-wait-replicas, the partition goes no further than the first
	// batch that holds some: it fails until a replica acknowledges it.)
	victimFence := func() int64 {
		var n int64
		for card, on := range onVictim {
			if on {
				v, err := rc.HGet(ctx, online.Key{Project: project, View: "card_txn", Entity: featurestore.StringKey(card)}.Name(), "f:"+topic+":0").Int64()
				if err == nil {
					n = max(n, v)
				}
			}
		}
		return n
	}
	if wait {
		waitFor("second events written to the victim's master", func() bool { return victimFence() >= phase })
		time.Sleep(time.Second)
		if got := applied(); got >= 2*phase {
			t.Fatalf("position at %d events while the replica of the cards' master is paused, want it behind %d", got, 2*phase)
		}
	} else {
		waitFor("the second events applied", func() bool { return applied() == 2*phase })
	}

	master.Kill()
	replica.Resume()
	paused = false
	killed := time.Now()
	rr := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer rr.Close()
	waitFor("the replica to take the slots over", func() bool {
		role, err := rr.Do(ctx, "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "master"
	})
	t.Logf("the replica took over %v after the master died", time.Since(killed).Round(100*time.Millisecond))
	// The test's client reads the victim's cards from the new master once
	// it has reloaded the slot map.
	victimKey := ""
	for card, on := range onVictim {
		if on {
			victimKey = online.Key{Project: project, View: "card_txn", Entity: featurestore.StringKey(card)}.Name()
		}
	}
	waitFor("the victim's cards readable", func() bool { return rc.HGet(ctx, victimKey, "v").Err() == nil })
	if wait {
		// The new master has no replica: ingest writes the batch again
		// and waits in vain.
		waitFor("second events written to the new master", func() bool { return victimFence() >= phase })
		time.Sleep(time.Second)
		if got := applied(); got >= 2*phase {
			t.Fatalf("position at %d events while the new master has no replica, want it behind %d", got, 2*phase)
		}
		master.Restart()
		restarted := time.Now()
		waitFor("the second events applied", func() bool { return applied() == 2*phase })
		t.Logf("the second events applied %v after the old master started again, as a replica", time.Since(restarted).Round(100*time.Millisecond))
	}

	produce(t, ctx, brokers, topic, msgs[2*phase:])
	waitFor("every event applied", func() bool { return applied() == 3*phase })
	if wait {
		checkCardTxn(t, ctx, rc, r, project, accepted)
		return
	}
	// Without waiting: the victim's cards have every event but the second
	// ones.
	want := map[string][]refTxn{}
	next := map[string]int{}
	lost := 0
	for i, m := range msgs {
		card := string(m.Key)
		ev := accepted[card][next[card]]
		next[card]++
		if i >= phase && i < 2*phase && onVictim[card] {
			lost++
			continue
		}
		want[card] = append(want[card], ev)
	}
	if lost == 0 {
		t.Fatal("no event of the victim's cards among the second ones")
	}
	t.Logf("without waiting for replicas, the failover lost %d events for good", lost)
	checkCardTxn(t, ctx, rc, r, project, want)
}
