package cmd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/ingest"
	"github.com/featurestore/featurestore/registry"
)

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "featurestore")
	if out, err := exec.Command("go", "build", "-o", bin, "../..").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// TestIngestProcessKilledAndRestarted runs 'featurestore ingest' as a real
// process on the example definitions against real Kafka and Redis, kills it
// with SIGKILL mid-stream, starts two more that rebalance the partitions
// between them mid-stream, and checks that every event is counted exactly
// once (the lifetime count, and every exact feature of the view against a
// brute-force reference), copies by event id and late events not at all (the dedup state is
// rebuilt after the kill and each rebalance), and that malformed and late
// events reach the dead-letter topic.
func TestIngestProcessKilledAndRestarted(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	redisAddr := testenv.RedisAddr(t)
	topic := testenv.UniqueName(t, "txns")
	dlqTopic := topic + ".dlq"
	testenv.CreateTopic(t, brokers, topic, 3)
	testenv.CreateTopic(t, brokers, dlqTopic, 1)
	project := strings.NewReplacer("/", "-", ".", "-").Replace(testenv.UniqueName(t, "p"))
	defs := copyDir(t, "../../examples")
	edit(t, filepath.Join(defs, "sources.yaml"), "topic: card_transactions", "topic: "+topic)
	edit(t, filepath.Join(defs, "sources.yaml"), "dead_letter_topic: card_transactions.dlq", "dead_letter_topic: "+dlqTopic)
	env := map[string]string{"FEATURESTORE_REDIS_ADDR": redisAddr, "FEATURESTORE_PROJECT": project}
	if code, out, errOut := runCLI(t, env, "apply", defs); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	r, err := registry.LoadDir(defs)
	if err != nil {
		t.Fatal(err)
	}

	// 3000 events for 30 cards and 10 merchants over the last hour; among
	// them, every 30th event from the 300th on is followed by a copy of the
	// event 10 before it (same txn_id and time, so a duplicate by event id,
	// within the 5m lateness) and by an event of the same card 10 minutes
	// older than it (late); and 20 malformed ones.
	rng := rand.New(rand.NewPCG(3, 4))
	now := time.Now().UTC()
	accepted := map[string][]refTxn{} // the accepted events of each card
	var msgs []kafka.Message
	var valid []kafka.Message // the 3000, by index
	dups, late := 0, 0
	for i := range 3000 {
		card, merchant := fmt.Sprintf("card-%d", rng.IntN(30)), fmt.Sprintf("m-%d", rng.IntN(10))
		ts := now.Add(-time.Duration(3000-i) * time.Second)
		amount := rng.IntN(500)
		accepted[card] = append(accepted[card], refTxn{ts.UnixMilli(), float64(amount) + 0.25})
		valid = append(valid, cardEvent(i, card, merchant, amount, ts))
		msgs = append(msgs, valid[i])
		if i >= 300 && i%30 == 0 {
			msgs = append(msgs, valid[i-10], cardEvent(10_000+i, card, merchant, 1, ts.Add(-10*time.Minute)))
			dups++
			late++
		}
	}
	for i := range 20 {
		msgs = append(msgs, kafka.Message{Key: []byte("bad"), Value: fmt.Appendf(nil, `{"card_id": "x", "event_time": %d`, i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, Balancer: &kafka.Hash{}, BatchSize: 500, BatchTimeout: time.Millisecond}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	bin := buildBinary(t)
	logDir := t.TempDir() // the processes share one offline log
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "ingest", "--log-level", "warn", "--metrics-addr", "127.0.0.1:0", "--session-timeout", "6s", "--batch-size", "20", "--max-batch-size", "20")
		cmd.Env = append(os.Environ(), "FEATURESTORE_REDIS_ADDR="+redisAddr, "FEATURESTORE_PROJECT="+project,
			"FEATURESTORE_KAFKA_BROKERS="+strings.Join(brokers, ","), "FEATURESTORE_OFFLINE_DIR="+logDir)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := testenv.StartTied(cmd); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rc.Close()
	applied := func() int64 { return appliedCount(ctx, rc, project, topic, 3) }
	wait := ingestWaiter(t, ctx, applied, nil)
	first := start()
	wait("progress", func() bool { return applied() > 300 })
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	killedAt := applied()
	// Two new processes in the group: the second joins while the first is
	// working, so the partitions are rebalanced mid-stream.
	second := start()
	wait("progress after the restart", func() bool { return applied() > killedAt+300 })
	third := start()
	wait("every event", func() bool { return applied() == int64(len(msgs)) })
	// Both are in the group, so past start-up and listening for SIGTERM.
	kc := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	group := "featurestore." + project + ".card_transactions"
	wait("two group members", func() bool {
		res, err := kc.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		return err == nil && len(res.Groups) == 1 && res.Groups[0].GroupState == "Stable" && len(res.Groups[0].Members) == 2
	})
	for _, p := range []*exec.Cmd{second, third} {
		if err := p.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []*exec.Cmd{second, third} {
		if err := p.Wait(); err != nil {
			t.Errorf("ingest did not stop cleanly on SIGTERM: %v", err)
		}
	}
	t.Logf("killed after %d of %d messages; two new processes shared the rest", killedAt, len(msgs))

	// Every event counted once: lifetime counts per card, and the exact
	// features of the view against a brute-force reference of the accepted
	// events. Every event logged once per offline view, although the killed
	// process lost what it had not committed: its partitions were replayed
	// from the log's positions.
	checkCardTxn(t, ctx, rc, r, project, accepted)
	checkLoggedOnce(t, ctx, logDir, project, len(valid))

	// The malformed and the late events are in the dead-letter topic, with
	// their reason (the duplicates by event id are dropped, not letters).
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: dlqTopic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer rd.Close()
	invalid, lateLetters := 0, 0
	for invalid < 20 || lateLetters < late {
		m, err := rd.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("dead letters: %v (found %d invalid, %d late)", err, invalid, lateLetters)
		}
		for _, h := range m.Headers {
			if h.Key == ingest.HeaderReason && string(h.Value) == string(ingest.ReasonInvalidPayload) {
				invalid++
			}
			if h.Key == ingest.HeaderReason && string(h.Value) == string(ingest.ReasonLate) {
				lateLetters++
			}
		}
	}
	t.Logf("%d duplicates by event id dropped, %d late events dead-lettered", dups, late)
}

// appliedCount returns how many messages of the first partitions of topic
// project's ingest has applied, by the positions it saved in Redis for the
// example source.
func appliedCount(ctx context.Context, rc redis.UniversalClient, project, topic string, partitions int) int64 {
	pos := ingest.NewPositions(rc, project)
	var n int64
	for p := range partitions {
		if got, ok, _ := pos.Load(ctx, "card_transactions", topic, p); ok {
			n += got.Offset + 1
		}
	}
	return n
}

// ingestWaiter returns a function that polls cond every 20 ms until it
// holds, and fails the test, saying what it waited for, when ctx ends (with
// the events applied so far) or when a message arrives on exited (the
// ingest process ended; nil for none).
func ingestWaiter(t *testing.T, ctx context.Context, applied func() int64, exited <-chan error) func(what string, cond func() bool) {
	return func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case err := <-exited:
				t.Fatalf("ingest exited while waiting for %s: %v", what, err)
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s (applied %d)", what, applied())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// checkCardTxn checks what ingest wrote to the online store for project's
// example view card_txn against a brute-force reference of each card's
// accepted events: the lifetime count, and every exact feature
// (cardTxnReference) at the present time.
func checkCardTxn(t *testing.T, ctx context.Context, rc redis.UniversalClient, r *registry.Registry, project string, accepted map[string][]refTxn) {
	t.Helper()
	store := online.New(rc, online.Options{})
	src := r.Source("card_transactions")
	wv, err := window.Compile(r.View("card_txn"), src)
	if err != nil {
		t.Fatal(err)
	}
	layout := online.NewViewLayout(project, "card_txn", wv, src.Reach())
	var reqs []online.ViewRead
	var cards []string
	for card := range accepted {
		cards = append(cards, card)
		reqs = append(reqs, online.ViewRead{Layout: &layout, Entity: featurestore.StringKey(card)})
	}
	readAt := time.Now().UnixMilli()
	res, err := online.ReadViews(ctx, store, reqs, readAt)
	if err != nil {
		t.Fatal(err)
	}
	life := wv.FeatureIndex("lifetime_txn_count")
	for i, card := range cards {
		if got, want := res[i][life].Value, len(accepted[card]); !got.Equal(featurestore.Int64Value(int64(want))) {
			t.Errorf("card %s: lifetime count %v, want %d", card, got, want)
		}
		for name, want := range cardTxnReference(accepted[card], readAt) {
			got := res[i][wv.FeatureIndex(name)].Value
			if name == "amount_stddev_1d" {
				if math.Abs(got.Double()-want.Double()) > 1e-9*want.Double() {
					t.Errorf("card %s: %s = %v, want %v", card, name, got, want)
				}
			} else if !got.Equal(want) {
				t.Errorf("card %s: %s = %v, want %v", card, name, got, want)
			}
		}
	}
}

// checkLoggedOnce checks that the offline log in dir holds, for each of
// project's example offline views, n distinct events, none twice.
func checkLoggedOnce(t *testing.T, ctx context.Context, dir, project string, n int) {
	t.Helper()
	st, err := offline.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, view := range []string{"card_txn", "merchant_txn"} {
		snap, err := offline.ReadSnapshot(ctx, st, project, view)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[[2]int64]int{}
		err = offline.Scan(ctx, st, snap, snap.Between(0, 1<<62), func(_ offline.FileInfo, rec arrow.RecordBatch) error {
			parts := rec.Column(rec.Schema().FieldIndices(offline.ColPartition)[0]).(*array.Int32)
			offs := rec.Column(rec.Schema().FieldIndices(offline.ColOffset)[0]).(*array.Int64)
			for i := range int(rec.NumRows()) {
				seen[[2]int64{int64(parts.Value(i)), offs.Value(i)}]++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		twice := 0
		for _, n := range seen {
			if n > 1 {
				twice++
			}
		}
		if len(seen) != n || twice > 0 {
			t.Errorf("%s: the offline log holds %d distinct events (%d more than once), want each of the %d accepted ones once", view, len(seen), twice, n)
		}
	}
}

// cardEvent is a card transaction of the example source, approved, online,
// in FR, with txn_id t-<i> and an amount of amount+0.25.
func cardEvent(i int, card, merchant string, amount int, ts time.Time) kafka.Message {
	return kafka.Message{Key: []byte(card), Value: fmt.Appendf(nil,
		`{"txn_id":"t-%d","card_id":%q,"merchant_id":%q,"amount":%d.25,"currency":"EUR","country":"FR","channel":"online","approved":true,"event_time":%q}`,
		i, card, merchant, amount, ts.Format(time.RFC3339Nano))}
}

// cardEvents returns n transactions of the example source (cardEvent),
// of 30 cards and 10 merchants drawn from seed, one every step up to now,
// in time order, and the accepted events of each card. Their ids are
// seed*1,000,000 + 0..n-1: other seeds give other ids.
func cardEvents(seed uint64, n int, step time.Duration) ([]kafka.Message, map[string][]refTxn) {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	now := time.Now().UTC()
	accepted := map[string][]refTxn{}
	var msgs []kafka.Message
	for i := range n {
		card, amount := fmt.Sprintf("card-%d", rng.IntN(30)), rng.IntN(500)
		ts := now.Add(-time.Duration(n-i) * step)
		accepted[card] = append(accepted[card], refTxn{ts.UnixMilli(), float64(amount) + 0.25})
		msgs = append(msgs, cardEvent(int(seed)*1_000_000+i, card, fmt.Sprintf("m-%d", rng.IntN(10)), amount, ts))
	}
	return msgs, accepted
}

// produce writes msgs to topic, all acknowledged by every replica, retrying
// those that failed until ctx ends (a broker just started may refuse
// writes for a moment). A retried message that the broker had written
// after all would be in the topic twice, which the caller's checks find.
func produce(t *testing.T, ctx context.Context, brokers []string, topic string, msgs []kafka.Message) {
	t.Helper()
	// A transport of its own: kafka-go's default one keeps metadata and
	// connections of a broker that may since have restarted.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, Balancer: &kafka.Hash{},
		BatchSize: 500, BatchTimeout: time.Millisecond, Transport: &kafka.Transport{}}
	defer w.Close()
	for len(msgs) > 0 {
		err := w.WriteMessages(ctx, msgs...)
		var failed kafka.WriteErrors
		switch {
		case err == nil:
			return
		case ctx.Err() != nil:
			t.Fatalf("produce to %s: %v", topic, err)
		case errors.As(err, &failed):
			var again []kafka.Message
			for i, e := range failed {
				if e != nil {
					again = append(again, msgs[i])
				}
			}
			msgs = again
		}
		t.Logf("produce to %s: %v; retrying %d messages", topic, err, len(msgs))
		time.Sleep(200 * time.Millisecond)
	}
}

// refTxn is an accepted event of TestIngestProcessKilledAndRestarted.
type refTxn struct {
	time   int64 // Unix ms
	amount float64
}

// cardTxnReference computes the exact features of the example view card_txn
// (1-minute tiles) at time t from a card's accepted events, directly from
// DESIGN's definition: a window of W covers the tiles floor(t/g)-W/g+1 ..
// floor(t/g), events at or before t. Every event of the test is approved,
// online, in FR, with an amount below 1000.
func cardTxnReference(evs []refTxn, t int64) map[string]featurestore.Value {
	const g = int64(time.Minute / time.Millisecond)
	in := func(w time.Duration) []refTxn {
		from := t - t%g - (w.Milliseconds()/g-1)*g
		var sel []refTxn
		for _, e := range evs {
			if e.time >= from && e.time <= t {
				sel = append(sel, e)
			}
		}
		return sel
	}
	sum := func(sel []refTxn) float64 {
		s := 0.0 // exact: multiples of 0.25 far below 2^53
		for _, e := range sel {
			s += e.amount
		}
		return s
	}
	want := map[string]featurestore.Value{}
	for _, w := range []struct {
		suffix string
		d      time.Duration
	}{{"10m", 10 * time.Minute}, {"1h", time.Hour}, {"1d", 24 * time.Hour}} {
		sel := in(w.d)
		want["txn_count_"+w.suffix] = featurestore.Int64Value(int64(len(sel)))
		want["amount_sum_"+w.suffix] = featurestore.DoubleValue(sum(sel))
	}
	day := in(24 * time.Hour)
	want["declined_count_1h"] = featurestore.Int64Value(0)
	want["large_online_count_1d"] = featurestore.Int64Value(0)
	if len(day) > 0 {
		newest := slices.Clone(day)
		slices.SortFunc(newest, func(a, b refTxn) int { return cmp.Compare(b.time, a.time) })
		max, last := newest[0].amount, []float64{}
		for i, e := range newest {
			max = math.Max(max, e.amount)
			if i < 5 {
				last = append(last, e.amount)
			}
		}
		want["amount_max_1d"] = featurestore.DoubleValue(max)
		want["last_amounts"] = featurestore.DoubleListValue(last)
		// Population standard deviation, from exact integer sums of 4x.
		var n, s, q int64
		for _, e := range day {
			x := int64(4 * e.amount)
			n, s, q = n+1, s+x, q+x*x
		}
		want["amount_stddev_1d"] = featurestore.DoubleValue(math.Sqrt(float64(n*q-s*s)) / float64(4*n))
		want["last_country"] = featurestore.StringValue("FR")
	}
	return want
}
