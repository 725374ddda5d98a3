package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/registry"
)

// This file hands the events an Applier accepts to the offline log, so that
// the log and the online store hold the same accepted events.
//
// Each batch is appended to the log after it is applied online and its dead
// letters are sent, and before its position is saved: once Redis says a
// batch is done, the log has it buffered. Buffered rows are committed with
// the partition's position later (offline.Writer flushes by size and age),
// so a crash can lose rows the online store has; resuming at the smallest of
// the online and offline positions replays them, with the high-water event
// time saved there: the online fences skip the replayed events, the log's
// fence skips what it committed, and the late-event decisions are the same.

// offlineView is a feature view logged offline, compiled for routing.
type offlineView struct {
	schema *offline.Schema
	keyIdx []int // per entity join key: its index in Layout.Keys
	// online is set when the view is also an online view of the applier,
	// whose routing already dead-letters events missing a join key.
	online bool
}

// offlineBatch is what a partition keeps to route a batch's accepted events
// to the offline views by entity, reused from batch to batch.
type offlineBatch struct {
	groupOf  map[string]int32 // view index and entity key bytes: index in entities[view]
	entities [][]offline.EntityEvents
	key      []byte
}

// SetOffline makes the applier log the accepted events of the source's
// offline views (registry FeatureView.IsOffline) with w, including views
// that are not served online. Call it before the applier is used; r is the
// registry the applier was made from.
func (a *Applier) SetOffline(w *offline.Writer, r *registry.Registry) error {
	a.offline, a.offViews = w, nil
	if w == nil {
		return nil
	}
	for _, v := range r.ViewsOfSource(a.src.Name) {
		if !v.IsOffline() {
			continue
		}
		s, err := offline.NewSchema(a.project, r, v.Name)
		if err != nil {
			return err
		}
		ov := &offlineView{schema: s, online: v.IsOnline()}
		for _, k := range r.Entity(v.Entity).JoinKeys {
			i := a.layout.KeyIndex(k.Name)
			if i < 0 {
				return fmt.Errorf("feature view %q: source %q has no key %q", v.Name, a.src.Name, k.Name)
			}
			ov.keyIdx = append(ov.keyIdx, i)
		}
		a.offViews = append(a.offViews, ov)
	}
	a.startMetrics() // for the views logged offline only
	return nil
}

// reset prepares the partition's offline routing for a batch.
func (ob *offlineBatch) reset(views int) {
	if ob.groupOf == nil {
		ob.groupOf = map[string]int32{}
	}
	clear(ob.groupOf)
	if len(ob.entities) != views {
		ob.entities = make([][]offline.EntityEvents, views)
	}
	for i := range ob.entities {
		es := ob.entities[i]
		for j := range es {
			clear(es[j].Events) // drop the last batch's field values
			es[j] = offline.EntityEvents{Events: es[j].Events[:0]}
		}
		ob.entities[i] = es[:0]
	}
}

// routeOffline adds accepted event ei of the batch to the entity group of
// each offline view, and dead-letters, for views not served online, an
// event without a value for one of the view's join keys.
func (a *Applier) routeOffline(ps *partitionState, m kafka.Message, ev *Event, ei int32) {
	ob := &ps.off
	for vi, ov := range a.offViews {
		k, missing := a.layout.appendEntityKey(append(ob.key[:0], byte(vi), byte(vi>>8)), ev, ov.keyIdx)
		ob.key = k
		if missing != "" {
			if !ov.online {
				ps.b.letters = append(ps.b.letters, DeadLetter{Message: m, Reason: ReasonMissingKey, View: ov.schema.View,
					Detail: fmt.Sprintf("no value for join key %q of feature view %q", missing, ov.schema.View)})
			}
			continue
		}
		es := ob.entities[vi]
		gi, ok := ob.groupOf[string(k)]
		if !ok {
			var ek featurestore.EntityKey
			if err := ek.UnmarshalBinary(k[2:]); err != nil {
				if !ov.online {
					ps.b.letters = append(ps.b.letters, DeadLetter{Message: m, Reason: ReasonMissingKey, View: ov.schema.View, Detail: err.Error()})
				}
				continue
			}
			gi = int32(len(es))
			ob.groupOf[string(k)] = gi
			if len(es) < cap(es) {
				es = es[:gi+1]
				es[gi].Key = ek
			} else {
				es = append(es, offline.EntityEvents{Key: ek})
			}
			ob.entities[vi] = es
		}
		es[gi].Events = append(es[gi].Events, ps.b.events[ei])
	}
}

// appendOffline appends the batch's accepted events to the offline log of
// each offline view, with the partition's position after the batch.
func (a *Applier) appendOffline(ctx context.Context, ps *partitionState, topic string, p int, msgs []kafka.Message, end Position) error {
	if a.offline == nil {
		return nil
	}
	b := offline.Batch{Topic: topic, Partition: int32(p), IngestTime: time.Now().UnixMilli(),
		End: offline.Position{Offset: end.Offset, HW: end.HW, HasHW: end.HasHW, DedupFrom: end.DedupFrom, HasDedup: end.HasDedup}}
	for vi, ov := range a.offViews {
		b.Entities = ps.off.entities[vi]
		if err := a.offline.Append(ctx, ov.schema, b); err != nil {
			if errors.Is(err, offline.ErrStreamLost) {
				// Resume gives the log's new position, older than this
				// batch: the partition is read again from there.
				return fmt.Errorf("offline log of %s/%d@%d..%d: %w: %w", topic, p, msgs[0].Offset, msgs[len(msgs)-1].Offset, ErrResumePartition, err)
			}
			return fmt.Errorf("offline log of %s/%d@%d..%d: %w", topic, p, msgs[0].Offset, msgs[len(msgs)-1].Offset, err)
		}
	}
	return nil
}

// resumeOffline lowers the resume position to the smallest committed
// position of the offline views, with its high-water time.
//
// A view whose log has no position for the partition yet is either new
// (a new view, or the log just turned on), whose log starts where ingest
// resumes, or one whose first commit was lost in a crash, whose log must
// start where that process started. The two are told apart by a start mark
// in Redis, set once when the view's log first resumes the partition: the
// position the log starts after, or the start of the partition. A view
// without a position resumes from its mark.
func (a *Applier) resumeOffline(ctx context.Context, topic string, p int, pos Position, ok bool) (Position, bool, error) {
	if a.offline == nil {
		return pos, ok, nil
	}
	for _, ov := range a.offViews {
		op, has, err := a.offline.Resume(ctx, ov.schema, topic, int32(p))
		if err != nil {
			return Position{}, false, fmt.Errorf("resume offline log of %s for %s/%d: %w", ov.schema.View, topic, p, err)
		}
		if !has && a.pos != nil {
			// The mark is set only if there is none: the first process to
			// resume the partition for the view fixes where its log starts.
			mark, fromStart, err := a.pos.markOfflineStart(ctx, a.src.Name, topic, p, ov.schema.View, pos, ok)
			if err != nil {
				return Position{}, false, err
			}
			if fromStart {
				return Position{}, false, nil // from the start of the partition
			}
			op, has = offline.Position{Offset: mark.Offset, HW: mark.HW, HasHW: mark.HasHW, DedupFrom: mark.DedupFrom, HasDedup: mark.HasDedup}, true
		}
		if has && ok && op.Offset < pos.Offset {
			pos = Position{Offset: op.Offset, HW: op.HW, HasHW: op.HasHW, DedupFrom: op.DedupFrom, HasDedup: op.HasDedup}
		}
	}
	return pos, ok, nil
}

// partitionReleaser is a PartitionHandler that keeps state of a partition
// beyond its batches: Release is called when the partition worker stops
// (rebalance or shutdown), before the partition can be resumed elsewhere.
type partitionReleaser interface {
	Release(ctx context.Context, topic string, partition int) error
}

// Release drops what the applier keeps of the partition (forget) and
// commits what the offline log buffered of it, so that the partition's next
// owner resumes from it. Were it left buffered, this process would commit
// it later by age, after the next owner resumed from the older position,
// and the log would take the next owner's rows for a lost race and drop
// them.
func (a *Applier) Release(ctx context.Context, topic string, p int) error {
	a.forget(p)
	if a.offline == nil {
		return nil
	}
	for _, ov := range a.offViews {
		// Resume commits the stream's buffered rows and position first.
		if _, _, err := a.offline.Resume(ctx, ov.schema, topic, int32(p)); err != nil {
			return fmt.Errorf("commit offline log of %s for %s/%d: %w", ov.schema.View, topic, p, err)
		}
	}
	return nil
}
