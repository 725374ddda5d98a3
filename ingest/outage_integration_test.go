package ingest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// flakyProxy forwards TCP connections to a target, and can be taken down:
// then it cuts the connections it has and closes each new one at once, as
// a Redis that crashed, restarts or is cut off by the network does.
type flakyProxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
	cut   atomic.Int64 // connections cut or refused
}

func startProxy(t *testing.T, target string) *flakyProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		l.Close()
		p.setDown(true)
		p.wg.Wait()
	})
	return p
}

func (p *flakyProxy) addr() string { return p.l.Addr().String() }

func (p *flakyProxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			p.cut.Add(1)
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.down { // went down while dialling
			p.mu.Unlock()
			p.cut.Add(1)
			c.Close()
			up.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		p.wg.Go(func() { pipe(up, c) })
		p.wg.Go(func() { pipe(c, up) })
	}
}

// setDown takes the proxy down (cutting every connection) or up again.
func (p *flakyProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
			p.cut.Add(1)
		}
	}
}

// outageHandler wraps the applier and records what the partition workers
// do around an outage.
type outageHandler struct {
	PartitionHandler
	down     atomic.Bool // the proxy is down
	mu       sync.Mutex
	attempts map[int][]attempt // per partition: the Apply calls, in order
	maxSize  int               // the largest batch
	// Apply calls that started and returned while Redis was down, and
	// succeeded: there must be none.
	upWhileDown int
}

type attempt struct {
	first, last int64
	at          time.Time // when it returned
	ok          bool
}

func (h *outageHandler) Apply(ctx context.Context, topic string, p int, msgs []kafka.Message) error {
	startedDown := h.down.Load()
	err := h.PartitionHandler.Apply(ctx, topic, p, msgs)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.maxSize = max(h.maxSize, len(msgs))
	h.attempts[p] = append(h.attempts[p], attempt{msgs[0].Offset, msgs[len(msgs)-1].Offset, time.Now(), err == nil})
	if err == nil && startedDown && h.down.Load() {
		h.upWhileDown++
	}
	return err
}

// acceptReference returns the events a correct ingest accepts: per
// partition in offset order, those that are well formed and not later than
// the allowed lateness behind the partition's newest event so far; and the
// count of rejections by reason.
func acceptReference(events []rawEvent, partitions int, lateness time.Duration) ([]rawEvent, map[Reason]int) {
	var accepted []rawEvent
	rejected := map[Reason]int{}
	for p := range partitions {
		var hw int64
		has := false
		seen := map[dedupKey]bool{} // (id, time) of the accepted events with an id
		for _, e := range events {
			if e.partition != p {
				continue
			}
			switch {
			case e.bad:
				rejected[ReasonInvalidPayload]++
			case has && e.time < hw-lateness.Milliseconds():
				rejected[ReasonLate]++
			case e.id != "" && seen[dedupKey{e.id, e.time}]:
				rejected[resultDuplicateID]++
			default:
				if e.id != "" {
					seen[dedupKey{e.id, e.time}] = true
				}
				accepted = append(accepted, e)
				if !has || e.time > hw {
					hw, has = e.time, true
				}
			}
		}
	}
	return accepted, rejected
}

// TestIngestRedisOutage ingests from real Kafka into real Redis through a
// proxy that cuts Redis off twice mid-stream, for a few seconds each, while
// events keep arriving. Consumption must pause without giving up or moving
// past unapplied events, retry with backoff on a bounded batch, resume, and
// end with every feature equal to the brute-force reference: nothing lost,
// nothing counted twice, although writes failed half-way through batches.
func TestIngestRedisOutage(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	redisAddr := testenv.RedisAddr(t)
	topic := testenv.UniqueName(t, "txns")
	const partitions = 3
	testenv.CreateTopic(t, brokers, topic, partitions)
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, e2eDefs, topic)})
	if err != nil {
		t.Fatal(err)
	}
	src := r.Source("txns")

	// Events over two hours, out of order within a few minutes, some late
	// beyond the allowed lateness and some malformed, as in
	// TestIngestEndToEnd.
	rng := rand.New(rand.NewPCG(7, 8))
	const n = 6000
	t0 := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC).UnixMilli()
	events := make([]rawEvent, n)
	msgs := make([]kafka.Message, n)
	next := map[int]int64{}
	for i := range events {
		ts := t0 + int64(i)*int64(2*time.Hour/time.Millisecond)/n - rng.Int64N(int64(3*time.Minute/time.Millisecond))
		if rng.IntN(50) == 0 {
			ts -= int64(30 * time.Minute / time.Millisecond)
		}
		e := rawEvent{partition: rng.IntN(partitions), card: fmt.Sprintf("c%d", rng.IntN(15)), time: ts,
			amount: float64(rng.IntN(4000)) / 4, merchant: fmt.Sprintf("m%d", rng.IntN(40)), bad: rng.IntN(100) == 0}
		e.offset = next[e.partition] // offsets follow production order within a partition
		next[e.partition]++
		events[i] = e
		v := fmt.Appendf(nil, `{"card":%q,"ts":%d,"amount":%g,"merchant":%q}`, e.card, e.time, e.amount, e.merchant)
		if e.bad {
			v = []byte(`{"card":` + e.card)
		}
		msgs[i] = kafka.Message{Key: []byte{byte('0' + e.partition)}, Value: v}
	}

	// Ingest talks to Redis through the proxy; the test checks directly.
	proxy := startProxy(t, redisAddr)
	viaProxy := redis.NewClient(&redis.Options{Addr: proxy.addr(), ContextTimeoutEnabled: true,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	defer viaProxy.Close()
	direct := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer direct.Close()
	project := testenv.UniqueName(t, "p")
	sink := &memSink{}
	a, err := NewApplier(project, r, src, online.New(viaProxy, online.Options{}), NewPositions(viaProxy, project), sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &outageHandler{PartitionHandler: a, attempts: map[int][]attempt{}}
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, SessionTimeout: 6 * time.Second,
		BatchSize: 20, MaxBatchSize: 200, RetryMin: 50 * time.Millisecond, RetryMax: 400 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second}
	stop := sync.OnceFunc(runGroupAsync(t, cfg, h))
	defer stop()

	pos := NewPositions(direct, project)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	applied := func() int64 {
		var total int64
		for p := range partitions {
			if got, ok, _ := pos.Load(ctx, src.Name, topic, p); ok {
				total += got.Offset + 1
			}
		}
		return total
	}

	// Produce steadily in the background, 100 events every 100ms, so that
	// events keep arriving during the outages.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchSize: 100, BatchTimeout: time.Millisecond,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return int(m.Key[0] - '0') })}
	defer w.Close()
	var produced atomic.Int64
	produceErr := make(chan error, 1)
	go func() {
		for i := 0; i < n; i += 100 {
			if err := w.WriteMessages(ctx, msgs[i:min(i+100, n)]...); err != nil {
				produceErr <- err
				return
			}
			produced.Store(int64(min(i+100, n)))
			if !sleep(ctx, 100*time.Millisecond) {
				produceErr <- ctx.Err()
				return
			}
		}
		produceErr <- nil
	}()

	// Two outages mid-stream, each once ingest is under way.
	type outage struct{ from, to time.Time }
	var outages []outage
	for i, after := range []int64{n / 5, n / 2} {
		waitFor(t, fmt.Sprintf("ingest to apply %d events", after), time.Minute, func() bool { return applied() >= after })
		proxy.setDown(true)
		h.down.Store(true)
		from := time.Now()
		held := applied()
		// An attempt takes up to a second to fail: go-redis retries too.
		time.Sleep(time.Duration(3+i) * time.Second)
		// Consumption paused: nothing was applied while Redis was away.
		if got := applied(); got != held {
			t.Errorf("outage %d: %d events applied while Redis was down", i+1, got-held)
		}
		h.down.Store(false)
		proxy.setDown(false)
		outages = append(outages, outage{from, time.Now()})
	}
	if err := <-produceErr; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ingest to apply every event", time.Minute, func() bool { return applied() == n })
	stop()

	h.mu.Lock()
	defer h.mu.Unlock()
	failed := func(p int) int {
		n := 0
		for _, a := range h.attempts[p] {
			if !a.ok {
				n++
			}
		}
		return n
	}
	t.Logf("proxy cut %d connections; largest batch %d messages; failed attempts per partition: %d, %d, %d",
		proxy.cut.Load(), h.maxSize, failed(0), failed(1), failed(2))
	if h.upWhileDown > 0 {
		t.Errorf("%d batches applied while Redis was down", h.upWhileDown)
	}
	if h.maxSize > cfg.MaxBatchSize {
		t.Errorf("a batch of %d messages, above MaxBatchSize %d: memory is not bounded", h.maxSize, cfg.MaxBatchSize)
	}
	// A failed batch is tried again as it was; after a batch is applied,
	// the next starts right after it: nothing skipped, nothing read twice.
	for p := range partitions {
		as := h.attempts[p]
		for j := 1; j < len(as); j++ {
			prev, cur := as[j-1], as[j]
			switch {
			case !prev.ok && (cur.first != prev.first || cur.last != prev.last):
				t.Errorf("partition %d: after the failed batch %d..%d came %d..%d", p, prev.first, prev.last, cur.first, cur.last)
			case prev.ok && cur.first != prev.last+1:
				t.Errorf("partition %d: after the batch %d..%d came %d..%d", p, prev.first, prev.last, cur.first, cur.last)
			}
		}
	}
	for i, o := range outages {
		// Every partition tried again during each outage (events kept
		// arriving), and backed off: no more attempts than the backoff
		// schedule (RetryMin doubling up to RetryMax) fits in the outage.
		bound := 1
		for d, sum := cfg.RetryMin, time.Duration(0); sum+d <= o.to.Sub(o.from); d = min(2*d, cfg.RetryMax) {
			sum += d
			bound++
		}
		for p := range partitions {
			n := 0
			for _, a := range h.attempts[p] {
				if !a.ok && !a.at.Before(o.from) && !a.at.After(o.to) {
					n++
				}
			}
			if n < 2 {
				t.Errorf("outage %d: partition %d made %d failed attempts, want retries", i+1, p, n)
			}
			if n > bound {
				t.Errorf("outage %d: partition %d made %d attempts, more than the backoff allows (%d)", i+1, p, n, bound)
			}
		}
	}

	accepted, rejected := acceptReference(events, partitions, 10*time.Minute)
	got := map[Reason]int{}
	for _, l := range sink.letters {
		got[l.Reason]++
	}
	// Batches that failed after their dead letters were sent send them again.
	if got[ReasonInvalidPayload] < rejected[ReasonInvalidPayload] || got[ReasonLate] < rejected[ReasonLate] {
		t.Errorf("dead letters %v, want at least %v", got, rejected)
	}
	checkAgainstReference(ctx, t, r, src, online.New(direct, online.Options{}), project, accepted, rng)
}

// checkAgainstReference reads every card of the e2eDefs view at the newest
// event time and at random later times, and compares each feature with
// reference.
func checkAgainstReference(ctx context.Context, t *testing.T, r *registry.Registry, src *registry.Source, store *online.Store, project string, accepted []rawEvent, rng *rand.Rand) {
	t.Helper()
	w, err := window.Compile(r.View("card_txn"), src)
	if err != nil {
		t.Fatal(err)
	}
	layout := online.NewViewLayout(project, "card_txn", w, src.Reach())
	if len(accepted) == 0 {
		t.Fatal("no accepted events")
	}
	maxT := int64(0)
	for _, e := range accepted {
		maxT = max(maxT, e.time)
	}
	for round := range 40 {
		at := maxT + rng.Int64N(int64(2*time.Hour/time.Millisecond))
		if round == 0 {
			at = maxT
		}
		var reqs []ViewRead
		var names []string
		for c := range 15 {
			card := fmt.Sprintf("c%d", c)
			names = append(names, card)
			reqs = append(reqs, online.ViewRead{Layout: &layout, Entity: featurestore.StringKey(card)})
		}
		res, err := online.ReadViews(ctx, store, reqs, at)
		if err != nil {
			t.Fatal(err)
		}
		for i, card := range names {
			want := reference(accepted, card, at)
			for f, fv := range res[i] {
				if !fv.Value.Equal(want[f].Value) || fv.Status != want[f].Status {
					t.Fatalf("at %d card %s feature %s: got %v (%d), want %v (%d)", at, card, w.Features()[f].Name, fv.Value, fv.Status, want[f].Value, want[f].Status)
				}
			}
		}
	}
}
