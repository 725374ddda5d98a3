package ingest

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestReplayKafka produces events to a real topic, replays it from the
// earliest offset through the applier into real Redis and an offline log,
// and compares online lookups and an export with the references; replaying
// again reads nothing, and a malformed message is reported.
func TestReplayKafka(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "replay")
	testenv.CreateTopic(t, brokers, topic, 3)

	rows, t0, maxT := backfillRows(21, 3000, false)
	e := newBackfillEnvOf(t, maxT, topic)
	// In event-time order per partition: nothing is late.
	var accepted []rawEvent
	var msgs []kafka.Message
	bad := 0
	for _, r := range rows {
		if r.bad != "" {
			continue
		}
		accepted = append(accepted, r.ev)
	}
	slices.SortStableFunc(accepted, func(x, y rawEvent) int { return cmp.Compare(x.time, y.time) })
	next := map[int]int64{}
	for i := range accepted {
		ev := &accepted[i]
		p := i % 3
		ev.partition, ev.offset = p, next[p]
		next[p]++
		msgs = append(msgs, kafka.Message{Key: []byte{byte('0' + p)},
			Value: fmt.Appendf(nil, `{"card":%q,"ts":%d,"amount":%g,"merchant":%q}`, ev.card, ev.time, ev.amount, ev.merchant)})
		if i%500 == 0 {
			msgs = append(msgs, kafka.Message{Key: []byte{byte('0' + p)}, Value: []byte(`{"card":`)})
			next[p]++
			bad++
		}
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: time.Millisecond,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return int(m.Key[0] - '0') })}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	replay := func() ReplayResult {
		ow, err := offline.OpenWriter(ctx, e.st, e.project, offline.Options{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := Replay(ctx, ReplayConfig{Project: e.project, Registry: e.r, Source: e.r.Source("txns"), Brokers: brokers,
			Store: e.store, Positions: NewPositions(e.rc, e.project+".backfill"), Offline: ow, BatchSize: 300})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := replay()
	var read int64
	for _, n := range res.Messages {
		read += n
	}
	if read != int64(len(msgs)) || res.Rejected[ReasonInvalidPayload] != int64(bad) {
		t.Fatalf("replay read %d messages, rejected %v; want %d, %d invalid", read, res.Rejected, len(msgs), bad)
	}
	rng := rand.New(rand.NewPCG(8, 9))
	n := e.checkOnline(ctx, t, accepted, rng)
	m := e.checkExport(ctx, t, accepted, t0, rng)
	t.Logf("replayed %d messages; %d online and %d exported values equal the reference", read, n, m)

	res = replay()
	for p, n := range res.Messages {
		if n != 0 {
			t.Errorf("second replay read %d messages of partition %d", n, p)
		}
	}
	e.checkOnline(ctx, t, accepted, rng)
	e.checkExport(ctx, t, accepted, t0, rng)
}
