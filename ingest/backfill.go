package ingest

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/online"
)

// This file applies historical events that do not come from Kafka (the
// rows of backfill files) to the online store, through the same routing,
// tile arrangement and fenced merges as Apply. The events come with
// positions of their own, a pseudo-topic and offsets, which fence them as
// Kafka offsets fence streamed events, so that applying them again is a
// no-op.
//
// Two things differ from Apply, on purpose:
//   - No lateness check. Allowed lateness bounds how far out of order a
//     stream may be; a backfill loads history that is old by design, in any
//     order, and every decodable event of it is accepted (online and
//     offline alike). Merges put each event into its tile whatever the order.
//   - Events that no online read can reach any more are not written online:
//     for a view without lifetime values or unbounded last values, an event
//     older than the view's retention (longest window plus lateness, or the
//     TTL) before now. They still go to the offline log.

// Backfiller applies backfill events of one source's online views. It is not
// safe for concurrent use; one per goroutine.
type Backfiller struct {
	a   *Applier
	b   batch
	now func() time.Time
}

// NewBackfiller returns a backfiller of the applier's views; now is the
// clock that decides which events are too old to be read online (time.Now
// when nil).
func (a *Applier) NewBackfiller(now func() time.Time) *Backfiller {
	if now == nil {
		now = time.Now
	}
	return &Backfiller{a: a, now: now}
}

// BackfillApplied counts what a Backfiller.Apply call did, in uses of an
// event by an online view.
type BackfillApplied struct {
	Applied    int64 // written online
	Duplicates int64 // at or below the fence: applied before
	Expired    int64 // too old to be read online: not written
	// Letters are the uses rejected for a missing join key; the message
	// holds only the pseudo-topic, partition and offset.
	Letters []DeadLetter
}

// Apply applies events, whose positions are (topic, partition, offsets[i]),
// to the online store. Offsets must increase.
func (f *Backfiller) Apply(ctx context.Context, topic string, partition int32, evs []Event, offsets []int64) (BackfillApplied, error) {
	var res BackfillApplied
	if len(evs) != len(offsets) {
		return res, fmt.Errorf("backfill %s/%d: %d events and %d offsets", topic, partition, len(evs), len(offsets))
	}
	if len(evs) == 0 {
		return res, nil
	}
	a, b := f.a, &f.b
	b.reset(a, int(partition), len(evs))
	nowMs := f.now().UnixMilli()
	horizon := make([]int64, len(a.views))
	for vi, vp := range a.views {
		horizon[vi] = math.MinInt64
		if vp.ttl != online.NoExpiry {
			horizon[vi] = nowMs - vp.ttl.Milliseconds()
		}
	}
	for i := range evs {
		if i > 0 && offsets[i] <= offsets[i-1] {
			return res, fmt.Errorf("backfill %s/%d: offset %d after %d", topic, partition, offsets[i], offsets[i-1])
		}
		ev := &evs[i]
		ei := int32(-1)
		for vi, vp := range a.views {
			// A missing key is reported whether or not the event is too
			// old to be written online: its use by the view is rejected
			// offline too.
			missing := ""
			for _, ki := range vp.keyIdx {
				if ev.Keys[ki].IsNull() {
					missing = a.layout.Keys[ki].Name
					break
				}
			}
			var err error
			if missing == "" {
				if ev.Time < horizon[vi] {
					res.Expired++
					continue
				}
				if ei < 0 {
					ei = b.accept(ev, partition, offsets[i])
				}
				if missing, err = b.route(a, vi, ev, ei); err == nil && missing == "" {
					continue
				}
			}
			detail := fmt.Sprintf("no value for join key %q of feature view %q", missing, vp.def.Name)
			if err != nil {
				detail = err.Error()
			}
			res.Letters = append(res.Letters, DeadLetter{
				Message: kafka.Message{Topic: topic, Partition: int(partition), Offset: offsets[i]},
				Reason:  ReasonMissingKey, View: vp.def.Name, Detail: detail})
		}
	}
	b.arrange(a)
	b.makeUpdates(a, topic)
	for i := 0; i < len(b.updates); i += applyChunk {
		if err := a.store.Apply(ctx, b.updates[i:min(i+applyChunk, len(b.updates))]); err != nil {
			return res, fmt.Errorf("backfill %s/%d@%d..%d: %w", topic, partition, offsets[0], offsets[len(offsets)-1], err)
		}
	}
	b.learn()
	for i := range b.groups {
		g := &b.groups[i]
		n := b.applied(g)
		res.Applied += int64(n)
		res.Duplicates += int64(int(g.n) - n)
	}
	return res, nil
}
