package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
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

// TestReplayLostStreamFails: after a replay's last batch of a partition,
// before its final flush, another writer commits the partition's offline
// log (ingest appending to the same log). The final flush drops the rows
// it buffered, as a writer that lost its partition does, and succeeds: the
// replay must fail, saying to run it again, not report success; and run
// again, it resumes from the log's position and completes it.
func TestReplayLostStreamFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "replaylost")
	testenv.CreateTopic(t, brokers, topic, 1)
	rows, _, maxT := backfillRows(23, 300, false)
	e := newBackfillEnvOf(t, maxT, topic)
	var msgs []kafka.Message
	for _, r := range rows {
		if r.bad != "" {
			continue
		}
		ev := r.ev
		msgs = append(msgs, kafka.Message{Value: fmt.Appendf(nil, `{"card":%q,"ts":%d,"amount":%g,"merchant":%q}`, ev.card, ev.time, ev.amount, ev.merchant)})
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: time.Millisecond}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	last := int64(len(msgs) - 1)

	replay := func(progress func(BackfillProgress)) error {
		ow, err := offline.OpenWriter(ctx, e.st, e.project, offline.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = Replay(ctx, ReplayConfig{Project: e.project, Registry: e.r, Source: e.r.Source("txns"), Brokers: brokers,
			Store: e.store, Positions: NewPositions(e.rc, e.project+".backfill"), Offline: ow, BatchSize: 100, Progress: progress})
		return err
	}
	// The other writer commits the log of one view up to offset 99 with the
	// replay's rows of it, once the replay has read the whole partition.
	other := func(p BackfillProgress) {
		if !p.Final {
			return
		}
		ow, err := offline.OpenWriter(ctx, e.st, e.project, offline.Options{})
		if err != nil {
			t.Fatal(err)
		}
		s, err := offline.NewSchema(e.project, e.r, "card_txn")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := ow.Resume(ctx, s, topic, 0); err != nil {
			t.Fatal(err)
		}
		if err := ow.Append(ctx, s, offline.Batch{Topic: topic, End: offline.Position{Offset: 99}}); err != nil {
			t.Fatal(err)
		}
		if err := ow.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	err := replay(other)
	if !errors.Is(err, offline.ErrStreamLost) || !strings.Contains(err.Error(), "run the backfill again") {
		t.Fatalf("replay: %v, want an error wrapping ErrStreamLost that says to run the backfill again", err)
	}
	t.Logf("replay: %v", err)
	if err := replay(nil); err != nil {
		t.Fatalf("replay again: %v", err)
	}
	for _, view := range []string{"card_txn", "card_recent"} {
		snap, err := offline.ReadSnapshot(ctx, e.st, e.project, view)
		if err != nil {
			t.Fatal(err)
		}
		if pos, ok := snap.Position(topic, 0); !ok || pos.Offset != last {
			t.Errorf("view %s after the second replay: position %d (ok %v), want %d", view, pos.Offset, ok, last)
		}
	}
}
