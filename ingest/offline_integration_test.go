package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// offlineDefs has the online view of e2eDefs (also logged offline), and a
// view that is only logged offline, keyed by a shop that some events lack.
const offlineDefs = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Entity
name: shop
join_keys: [{name: shop_id, type: int64}]
---
kind: Source
name: txns
kafka: {topic: %s}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card_id: card, shop_id: shop}
fields: {amount: double, merchant: string}
allowed_lateness: 10m
# The events are of one fixed night, maybe ahead of the day the test runs.
max_future_skew: 3650d
event_id_field: id
---
kind: FeatureView
name: card_txn
entity: card
source: txns
tile: 1m
ttl: 1h
features:
  - {name: n_1h, aggregation: count, window: 1h}
  - {name: sum_10m, aggregation: sum, field: amount, window: 10m}
  - {name: merchants_1h, aggregation: count_distinct, field: merchant, window: 1h}
  - {name: n_lifetime, aggregation: count, window: lifetime}
  - {name: last_merchant, field: merchant, type: string}
---
kind: FeatureView
name: shop_sums
entity: shop
source: txns
tile: 1m
online: false
features:
  - {name: amount_1h, aggregation: sum, field: amount, window: 1h}
`

// flakyStorage is a real directory whose manifest commits fail while
// failures remain: the commit of a flush is lost after its files were
// written, as when a process dies between the two.
type flakyStorage struct {
	offline.Storage
	failures atomic.Int32
	failed   atomic.Int32
}

func (s *flakyStorage) Create(ctx context.Context, name string, data []byte) error {
	if s.failures.Add(-1) >= 0 {
		s.failed.Add(1)
		return errors.New("injected failure: manifest commit lost")
	}
	return s.Storage.Create(ctx, name, data)
}

// loggedRow is one event of the offline log as the test compares it.
type loggedRow struct {
	view      string
	partition int
	offset    int64
	time      int64
	key       string
	amount    float64
	merchant  string
}

// readLog returns every row of a view's committed log.
func readLog(ctx context.Context, t *testing.T, st offline.Storage, r *registry.Registry, project, view string) []loggedRow {
	t.Helper()
	snap, err := offline.ReadSnapshot(ctx, st, project, view)
	if err != nil {
		t.Fatal(err)
	}
	fields, err := window.SourceFields(r.Source("txns"))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, k := range r.Entity(r.View(view).Entity).JoinKeys {
		keys = append(keys, k.Name)
	}
	dec := offline.NewEventDecoder(fields, keys)
	var rows []loggedRow
	var ev window.Event
	err = offline.Scan(ctx, st, snap, snap.Between(-1<<62, 1<<62), func(_ offline.FileInfo, rec arrow.RecordBatch) error {
		if err := dec.Bind(rec); err != nil {
			return err
		}
		for i := range int(rec.NumRows()) {
			dec.Event(i, &ev)
			k, err := dec.Key(i)
			if err != nil {
				return err
			}
			row := loggedRow{view: view, partition: int(ev.Partition), offset: ev.Offset, time: ev.Time, key: k.String()}
			for j, f := range fields {
				switch v := ev.Fields[j]; {
				case v.IsNull():
				case f.Name == "amount":
					row.amount = v.Double()
				case f.Name == "merchant":
					row.merchant = v.Str()
				}
			}
			rows = append(rows, row)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestIngestOfflineLogEffectivelyOnce produces events to real Kafka (out of
// order, some late, some malformed, some without the shop key, some
// produced twice, over three partitions) and ingests them into real Redis and an offline log in a
// directory. The first process dies part way: its consumer stops without
// the log's buffered rows being committed, after Redis saved positions past
// them. The second process resumes, has one manifest commit fail, and runs
// to the end. The log must then hold every accepted event of each offline
// view exactly once, as a brute-force reference computes them from the
// produced events, and the online view must equal its reference.
func TestIngestOfflineLogEffectivelyOnce(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), ContextTimeoutEnabled: true})
	defer rc.Close()
	topic := testenv.UniqueName(t, "txns")
	testenv.CreateTopic(t, brokers, topic, 3)
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, offlineDefs, topic)})
	if err != nil {
		t.Fatal(err)
	}
	src := r.Source("txns")

	rng := rand.New(rand.NewPCG(5, 6))
	const n = 4000
	t0 := time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC).UnixMilli() // crosses midnight: files of two dates
	var events []rawEvent
	shops := make([]int64, n) // 0: no shop
	for i := range n {
		ts := t0 + int64(i)*int64(4*time.Hour/time.Millisecond)/n - rng.Int64N(int64(3*time.Minute/time.Millisecond))
		if rng.IntN(50) == 0 {
			ts -= int64(30 * time.Minute / time.Millisecond) // beyond the lateness
		}
		e := rawEvent{
			partition: rng.IntN(3), card: fmt.Sprintf("c%d", rng.IntN(15)), time: ts,
			amount: float64(rng.IntN(4000)) / 4, merchant: fmt.Sprintf("m%d", rng.IntN(40)), bad: rng.IntN(100) == 0,
			id: fmt.Sprintf("e%d", i),
		}
		if rng.IntN(10) > 0 {
			shops[i] = 1 + rng.Int64N(8)
		}
		if j := i - 1 - rng.IntN(min(i+1, 200)); j >= 0 && rng.IntN(12) == 0 && !events[j].bad {
			// The same event produced again (same id, time and partition):
			// dropped as a duplicate, unless by now beyond the lateness.
			e, shops[i] = events[j], shops[j]
		}
		events = append(events, e)
	}
	kw := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: time.Millisecond,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return int(m.Key[0] - '0') })}
	msgs := make([]kafka.Message, n)
	for i, e := range events {
		shop := ""
		if shops[i] != 0 {
			shop = fmt.Sprintf(`,"shop":%d`, shops[i])
		}
		v := fmt.Appendf(nil, `{"card":%q,"id":%q,"ts":%d,"amount":%g,"merchant":%q%s}`, e.card, e.id, e.time, e.amount, e.merchant, shop)
		if e.bad {
			v = []byte(`{"card":` + e.card)
		}
		msgs[i] = kafka.Message{Key: []byte{byte('0' + e.partition)}, Value: v}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The first process sees the first half of the events, the second the
	// rest: each run then appends enough to flush by size, and the first
	// stops with rows buffered.
	if err := kw.WriteMessages(ctx, msgs[:n/2]...); err != nil {
		t.Fatal(err)
	}
	next := map[int]int64{}
	shopOf := map[[2]int64]int64{} // (partition, offset): shop
	for i := range events {
		events[i].offset = next[events[i].partition]
		next[events[i].partition]++
		shopOf[[2]int64{int64(events[i].partition), events[i].offset}] = shops[i]
	}

	dir, err := offline.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := &flakyStorage{Storage: dir}
	store := online.New(rc, online.Options{})
	project := testenv.UniqueName(t, "p")
	pos := NewPositions(rc, project)
	sink := &memSink{}
	cfg := GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 20, SessionTimeout: 6 * time.Second}
	applied := func() int64 {
		var total int64
		for p := range 3 {
			if got, ok, _ := pos.Load(ctx, src.Name, topic, p); ok {
				total += got.Offset + 1
			}
		}
		return total
	}
	// Small flushes, so that some commits happen during each run and some
	// rows are still buffered when the first process dies.
	opts := offline.Options{FlushRows: 150, FlushAge: time.Hour}
	start := func(crash bool, resumes *atomic.Int32) (*offline.Writer, func()) {
		w, err := offline.OpenWriter(ctx, st, project, opts)
		if err != nil {
			t.Fatal(err)
		}
		a, err := NewApplier(project, r, src, store, pos, sink, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.SetOffline(w, r); err != nil {
			t.Fatal(err)
		}
		if crash {
			// Only Resume and Apply: the stop releases nothing, as a
			// process killed would not.
			return w, runGroupAsync(t, cfg, struct{ PartitionHandler }{a})
		}
		return w, runGroupAsync(t, cfg, &resumeCounter{a, resumes})
	}

	_, stop := start(true, nil)
	waitFor(t, "ingest of the first half", 60*time.Second, func() bool { return applied() == n/2 })
	stop() // and the writer is dropped with its buffers: a crash
	part := applied()
	behind := 0
	for p := range 3 {
		on, _, _ := pos.Load(ctx, src.Name, topic, p)
		snap, err := offline.ReadSnapshot(ctx, st, project, "card_txn")
		if err != nil {
			t.Fatal(err)
		}
		if off, ok := snap.Position(topic, int32(p)); !ok || off.Offset < on.Offset {
			behind++
		}
	}
	if part >= n || behind == 0 {
		t.Fatalf("the first run did not stop with the log behind Redis (applied %d of %d, %d partitions behind)", part, n, behind)
	}

	// The second process takes the third quarter, with rows buffered at
	// its end; a third joins, the partitions are rebalanced between them,
	// and both ingest the last quarter. The partitions the second gives up
	// must be resumed from its rows, which it commits as it lets them go.
	st.failures.Store(1)
	if err := kw.WriteMessages(ctx, msgs[n/2:3*n/4]...); err != nil {
		t.Fatal(err)
	}
	var resumed3 atomic.Int32
	w2, stop2 := start(false, &atomic.Int32{})
	waitFor(t, "ingest of the third quarter", 90*time.Second, func() bool { return applied() == 3*n/4 })
	w3, stop3 := start(false, &resumed3)
	waitFor(t, "the third process to take partitions", 60*time.Second, func() bool { return resumed3.Load() > 0 })
	// The second commits what it holds, as a flush by age would, before the
	// third commits anything.
	if err := w2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := kw.WriteMessages(ctx, msgs[3*n/4:]...); err != nil {
		t.Fatal(err)
	}
	kw.Close()
	waitFor(t, "ingest to the end", 90*time.Second, func() bool { return applied() == n })
	stop2()
	stop3()
	for _, w := range []*offline.Writer{w2, w3} {
		if err := w.Close(ctx); err != nil {
			// The injected failure may fall on this commit: a second one makes it.
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if st.failed.Load() != 1 {
		t.Fatalf("%d injected commit failures, want 1", st.failed.Load())
	}
	t.Logf("first process died after %d of %d events with the log behind on %d partitions; one commit failed after; two processes shared the rest", part, n, behind)

	accepted, rejected := acceptReference(events, 3, 10*time.Minute)
	t.Logf("%d events: %d accepted, rejected %v", n, len(accepted), rejected)
	for _, view := range []string{"card_txn", "shop_sums"} {
		var want []loggedRow
		for _, e := range accepted {
			row := loggedRow{view: view, partition: e.partition, offset: e.offset, time: e.time, amount: e.amount, merchant: e.merchant}
			if view == "card_txn" {
				row.key = strconv.Quote(e.card)
			} else {
				shop := shopOf[[2]int64{int64(e.partition), e.offset}]
				if shop == 0 {
					continue // no shop: dead-lettered for this view alone
				}
				row.key = fmt.Sprint(shop)
				row.merchant = "" // not a field of the view
			}
			want = append(want, row)
		}
		got := readLog(ctx, t, st, r, project, view)
		order := func(x, y loggedRow) int {
			return cmp.Or(cmp.Compare(x.partition, y.partition), cmp.Compare(x.offset, y.offset))
		}
		slices.SortFunc(want, order)
		slices.SortFunc(got, order)
		if len(got) != len(want) {
			t.Errorf("%s: the log holds %d events, want %d", view, len(got), len(want))
		}
		bad := 0
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				if bad++; bad <= 5 {
					t.Errorf("%s: row %d is %+v, want %+v", view, i, got[i], want[i])
				}
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d rows differ", view, bad)
		}
		t.Logf("%s: %d events logged once each", view, len(got))
	}
	missing := 0
	for _, l := range sink.letters {
		if l.Reason == ReasonMissingKey && l.View == "shop_sums" {
			missing++
		}
	}
	wantMissing := 0
	for _, e := range events {
		if !e.bad && shopOf[[2]int64{int64(e.partition), e.offset}] == 0 && slices.ContainsFunc(accepted, func(a rawEvent) bool { return a.partition == e.partition && a.offset == e.offset }) {
			wantMissing++
		}
	}
	if missing < wantMissing {
		t.Errorf("%d missing_key dead letters for shop_sums, want at least %d", missing, wantMissing)
	}
	checkAgainstReference(ctx, t, r, src, store, project, accepted, rng)
}

// resumeCounter is an Applier that counts the partitions it resumes.
type resumeCounter struct {
	*Applier
	n *atomic.Int32
}

func (r *resumeCounter) Resume(ctx context.Context, topic string, p int) (int64, error) {
	next, err := r.Applier.Resume(ctx, topic, p)
	r.n.Add(1)
	return next, err
}
