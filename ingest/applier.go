package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// This file is where a Kafka message becomes a tile: Apply decodes each
// message, checks its time (not too far ahead of the message's Kafka
// timestamp, not too late), drops it if its event id says it is a copy
// (dedup.go), routes it to every online feature view of
// the source by entity key, and merges the events of each (view, entity)
// into that entity's tiles, lifetime state and last values in Redis, fenced
// by the messages' offsets.

// DeadLetter is a message, or its use by one view, that was rejected.
type DeadLetter struct {
	Message kafka.Message
	Reason  Reason
	View    string // empty when the whole event was rejected
	Detail  string
}

// DeadLetterSink receives rejected messages. Send returns once they are
// durable; a failure makes the batch fail and be retried.
type DeadLetterSink interface {
	Send(ctx context.Context, letters []DeadLetter) error
}

// Further rejection reasons, decided after decoding.
const (
	ReasonLate Reason = "late"
	// ReasonFuture: the event time is further ahead of the message's Kafka
	// timestamp than the source's max_future_skew.
	ReasonFuture Reason = "future"
)

// resultDuplicateID counts the events dropped as duplicates by event id:
// not rejections, so not dead-lettered.
const resultDuplicateID = "duplicate_id"

// viewPlan is a feature view compiled for ingest.
type viewPlan struct {
	def    *registry.FeatureView
	win    *window.View
	keyIdx []int // per entity join key: its index in Layout.Keys
	ring   int64
	ttl    time.Duration
	// With rollup tiles: the tiles each holds, and the slots of their ring.
	ratio, rollupRing int64
}

// Applier applies the messages of one source to the online store and, once
// SetOffline gave it one, to the offline log (offline.go). It is a
// PartitionHandler.
type Applier struct {
	project  string
	src      *registry.Source
	layout   Layout
	views    []*viewPlan
	lateness int64 // ms
	skew     int64 // ms: how far ahead of its Kafka timestamp an event may be
	dedup    bool  // the source has an event id: drop duplicates (dedup.go)
	store    *online.Store
	pos      *Positions
	dlq      DeadLetterSink
	log      *slog.Logger
	metrics  *Metrics
	// The offline log and the source's views logged in it (SetOffline).
	offline  *offline.Writer
	offViews []*offlineView

	mu    sync.Mutex
	parts map[int]*partitionState
}

// partitionState is what the applier keeps of one partition between
// batches: the decoder, the high water, and the buffers of the last batch.
type partitionState struct {
	dec Decoder
	ev  Event
	hw  int64
	has bool
	b   batch
	off offlineBatch
	// ids are the events remembered for dedup by event id (dedup.go);
	// messages up to warmUntil only rebuild them, while warming; warmed
	// is the last offset rebuilt.
	ids               dedupSet
	warming           bool
	warmUntil, warmed int64
	// The saved position this partition expects to find before it applies
	// a batch (checkPosition): the one Resume loaded or Apply saved last.
	// known is false until then.
	known, saved bool
	savedAt      int64
	// lost is the offset of a save that failed: its reply may be what was
	// lost (a connection cut after Redis ran it), so finding it stored is
	// this partition's own save, not another consumer's.
	hasLost bool
	lost    int64
	// record is the sum of the record at the saved position's offset, as
	// Resume loaded it (hasRecord), for the reader to check (anchored).
	record    uint64
	hasRecord bool
	// done is the last offset of a batch whose Redis writes and dead
	// letters went through (hasDone): the partition worker retries a batch
	// whole when a later step fails (the offline log, the position), and
	// the retry must not send those letters again, nor count those events
	// again (as duplicates of themselves).
	hasDone bool
	done    int64
	// carry is what a batch whose writes failed saw of its fences, for the
	// next attempt at it (batchCarry).
	carry batchCarry
	// rejectLogged is when logRejections last logged; rejected counts the
	// rejections since then, by reason.
	rejectLogged time.Time
	rejected     map[Reason]int64
	// at is the offset of the message prepare is taking, -1 outside its
	// loop over the messages; poison holds the messages prepare panicked
	// on (a bug), by offset, with the detail of their dead letter: the
	// retry of their batch rejects them instead of taking them again.
	at     int64
	poison map[int64]string
}

// NewApplier compiles the online views of source src in registry r.
func NewApplier(project string, r *registry.Registry, src *registry.Source, store *online.Store, pos *Positions, dlq DeadLetterSink, log *slog.Logger) (*Applier, error) {
	l, err := NewLayout(r, src)
	if err != nil {
		return nil, err
	}
	if _, err := NewDecoder(src, l, ""); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Applier{project: project, src: src, layout: l, lateness: src.AllowedLateness.Std().Milliseconds(),
		skew: src.FutureSkew().Milliseconds(), store: store, pos: pos, dlq: dlq, log: log, parts: map[int]*partitionState{}}
	a.dedup = src.EventIDField != ""
	for _, v := range r.ViewsOfSource(src.Name) {
		if !v.IsOnline() {
			continue
		}
		w, err := window.Compile(v, src)
		if err != nil {
			return nil, fmt.Errorf("feature view %q: %w", v.Name, err)
		}
		vp := &viewPlan{def: v, win: w}
		for _, k := range r.Entity(v.Entity).JoinKeys {
			i := l.KeyIndex(k.Name)
			if i < 0 {
				return nil, fmt.Errorf("feature view %q: source %q has no key %q", v.Name, src.Name, k.Name)
			}
			vp.keyIdx = append(vp.keyIdx, i)
		}
		vp.ring = online.NewViewLayout(project, v.Name, w, src.Reach()).Ring
		if w.Rollup() > 0 {
			vp.ratio = w.Rollup() / w.Tile()
			vp.rollupRing = online.RollupRingSize(vp.ring, vp.ratio)
		}
		// An event up to the future skew ahead of the clock is read once the
		// clock reaches it: the key lives that much longer.
		vp.ttl = max(w.Retention(src.Reach()), v.TTL.Std()+src.FutureSkew())
		if w.HasPart(window.PartLifetime) || (w.HasPart(window.PartLastValue) && v.TTL == 0) {
			vp.ttl = online.NoExpiry // lifetime values and last values without a TTL never expire
		}
		a.views = append(a.views, vp)
	}
	return a, nil
}

// abortCounter is told of the records of aborted transactions that the
// partition reader dropped; the Applier counts them as events with the
// result aborted_transaction.
type abortCounter interface{ countAborted(n int) }

// stallRecorder is told when a partition's reader stalls until an operator
// acts (a position past its end, a topic created again) and when it reads
// again, and of the events retention deleted before they were read.
type stallRecorder interface {
	recordStalled(partition int, stalled bool)
	countLost(partition int, n int64)
}

// failureRecorder is told of each failed attempt to apply a batch.
type failureRecorder interface{ recordApplyFailure(partition int) }

func (a *Applier) recordApplyFailure(int)            { a.metrics.countApplyFailure(a.src.Name) }
func (a *Applier) recordStalled(p int, stalled bool) { a.metrics.setStalled(a.src.Name, p, stalled) }
func (a *Applier) countLost(p int, n int64)          { a.metrics.countLost(a.src.Name, p, n) }

func (a *Applier) countAborted(n int) {
	a.metrics.countEvents(a.src.Name, "", ResultAbortedTransaction, n)
}

// SetMetrics makes the applier record its metrics in m.
//
// The series of the source and its views start at 0 (Metrics.startSource),
// so that an alert on their rate sees a series before the first event of
// each kind.
func (a *Applier) SetMetrics(m *Metrics) {
	a.metrics = m
	a.startMetrics()
}

// startMetrics makes the series of the source and its views, online and
// offline (SetOffline), at 0.
func (a *Applier) startMetrics() {
	if a.metrics != nil {
		a.metrics.startSource(a.src.Name, a.onlineViews(), a.offlineOnlyViews(), a.dedup)
	}
}

// onlineViews returns the names of the source's online views.
func (a *Applier) onlineViews() []string {
	var names []string
	for _, vp := range a.views {
		names = append(names, vp.def.Name)
	}
	return names
}

// offlineOnlyViews returns the names of the source's views logged offline
// and not served online.
func (a *Applier) offlineOnlyViews() []string {
	var names []string
	for _, ov := range a.offViews {
		if !ov.online {
			names = append(names, ov.schema.View)
		}
	}
	return names
}

func (a *Applier) partition(p int) *partitionState {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := a.parts[p]
	if ps == nil {
		dec, _ := NewDecoder(a.src, a.layout, "") // checked in NewApplier
		ps = &partitionState{dec: dec}
		ps.ids.reset(a.src.MaxDedupIDs())
		a.parts[p] = ps
	}
	return ps
}

// forget drops the state of partition p, and its lag and dedup series (the
// partition's next owner exports its own): the events remembered for dedup
// (up to dedup_max_ids), the batch buffers grown to the largest batch and
// the last batch's dead letters with their messages. Kept, they would add up
// over every partition the process ever owned until the next registry
// version, not the ones it owns. A partition taken again starts from a new
// state, which Resume fills from Redis, as for a new owner.
func (a *Applier) forget(p int) {
	a.mu.Lock()
	ps := a.parts[p]
	delete(a.parts, p)
	a.mu.Unlock()
	if ps != nil && len(ps.rejected) > 0 {
		// The counts since the last events rejected line, not logged yet.
		a.log.Warn("events rejected", a.rejectedAttrs(ps, a.src.Kafka.Topic, p)...)
	}
	a.metrics.forgetPartition(a.src.Name, p)
}

// Resume implements PartitionHandler: the saved position, or the start;
// with an offline log, the smallest of it and the offline views' positions.
func (a *Applier) Resume(ctx context.Context, topic string, p int) (int64, error) {
	a.metrics.assignPartition(a.src.Name, p)
	pos, ok, err := a.pos.Load(ctx, a.src.Name, topic, p)
	if err != nil {
		return 0, err
	}
	ps := a.partition(p)
	ps.known, ps.saved, ps.savedAt = true, ok, pos.Offset
	ps.record, ps.hasRecord = pos.Record, ok && pos.HasRecord
	ps.hasLost = false
	clear(ps.carry.fences) // another consumer may have applied the partition since
	if pos, ok, err = a.resumeOffline(ctx, topic, p, pos, ok); err != nil {
		return 0, err
	}
	ps.ids.reset(a.src.MaxDedupIDs())
	ps.warming = false
	if a.dedup {
		a.metrics.setDedupIDs(a.src.Name, p, 0, 0) // until rebuilt (warm)
	}
	if !ok {
		ps.hw, ps.has = 0, false
		return kafka.FirstOffset, nil
	}
	ps.hw, ps.has = pos.HW, pos.HasHW
	if a.dedup && pos.HasDedup && pos.HasHW && pos.DedupFrom <= pos.Offset {
		// Read from the oldest remembered event, rebuilding (warm).
		ps.warming, ps.warmUntil, ps.warmed = true, pos.Offset, pos.DedupFrom-1
		a.logRereads(ps, p, pos.DedupFrom)
		return pos.DedupFrom, nil
	}
	a.logRereads(ps, p, pos.Offset+1)
	return pos.Offset + 1, nil
}

// anchor implements anchored: the record at the position Resume loaded.
func (a *Applier) anchor(p int) (offset int64, sum uint64, ok bool) {
	a.mu.Lock()
	ps := a.parts[p]
	a.mu.Unlock()
	if ps == nil || !ps.hasRecord {
		return 0, 0, false
	}
	return ps.savedAt, ps.record, true
}

// logRereads says why a partition resumed at from reads events that Redis
// holds already, when it does: the "partition started" line's offset would
// otherwise look like a replay. Those events only rebuild the ids
// remembered for dedup, or fill the offline log; the fences keep Redis as
// it is.
func (a *Applier) logRereads(ps *partitionState, p int, from int64) {
	if !ps.saved || from > ps.savedAt {
		return
	}
	a.log.Info("partition reads again events Redis holds, to remember their ids for dedup or to log them offline; they are not applied twice",
		"partition", p, "read_from", from, "applied_up_to", ps.savedAt)
}

// checkPosition makes sure the saved position is the one the partition
// expects before a batch is applied. Redis that lost state (a restart
// without persistence, a failover to a replica that lags) has an older
// position or none, and older fences: a batch applied on top of it would set
// the fences of its keys past the events lost, and the replay from what
// Redis holds would skip them as applied. So the partition is resumed
// instead, from what Redis holds now. A newer position means another
// consumer applied the partition meanwhile: resuming takes it up from
// there. On Redis Cluster this sees only what the shard of the position
// lost: a failover of a shard of entity hashes that loses their last
// writes goes unseen, and loses those events (docs/operations.md), unless
// the store waits for replicas (online.Options.Replicas) before the
// position is saved.
func (a *Applier) checkPosition(ctx context.Context, ps *partitionState, topic string, p int) error {
	if !ps.known {
		return nil // applied without Resume: nothing to expect
	}
	pos, ok, err := a.pos.Load(ctx, a.src.Name, topic, p)
	if err != nil {
		return err
	}
	cur := pos.Offset
	if ok && ps.hasLost && cur == ps.lost && (!ps.saved || cur > ps.savedAt) {
		ps.saved, ps.savedAt = true, cur // the failed save went through
	}
	ps.hasLost = false
	if ok == ps.saved && (!ok || cur == ps.savedAt) {
		return nil
	}
	ps.known = false
	if !ok || ps.saved && cur < ps.savedAt {
		a.log.Error("the saved position of the partition went back: Redis lost state (a restart without persistence, or a failover to a replica that lags); replaying from what it holds",
			"source", a.src.Name, "partition", p, "expected_offset", ps.savedAt, "found", ok, "found_offset", cur)
		a.metrics.countReset(a.src.Name, resetWentBack)
		return fmt.Errorf("%s/%d: the saved position went back from offset %d: %w", a.src.Name, p, ps.savedAt, ErrResumePartition)
	}
	a.log.Warn("the saved position of the partition moved on: another consumer applied it; resuming from there",
		"source", a.src.Name, "partition", p, "found_offset", cur)
	a.metrics.countReset(a.src.Name, resetMovedOn)
	return fmt.Errorf("%s/%d: the saved position moved on to offset %d: %w", a.src.Name, p, cur, ErrResumePartition)
}

// checkIdle implements idleChecker: checkPosition, for a partition that
// gets no messages, so that a position lost meanwhile has its events
// applied again without waiting for the next one.
func (a *Applier) checkIdle(ctx context.Context, topic string, p int) error {
	return a.checkPosition(ctx, a.partition(p), topic, p)
}

// rebuildUntil returns the offset up to which the partition, just resumed,
// only rebuilds its dedup state (Resume returned an offset before its
// position), or -1.
func (a *Applier) rebuildUntil(p int) int64 {
	if ps := a.partition(p); ps.warming {
		return ps.warmUntil
	}
	return -1
}

// warm rebuilds the events remembered for dedup from the messages up to
// the position the partition resumed at (dedup.go): every one that decodes
// with an id and is not too far ahead of its timestamp, each once (a batch
// retried after a failure brings them again). It applies and rejects
// nothing.
func (a *Applier) warm(ps *partitionState, p int, msgs []kafka.Message) {
	for _, m := range msgs {
		if m.Offset <= ps.warmed {
			continue
		}
		ps.warmed = m.Offset
		ev := &ps.ev
		if ps.dec.Decode(m.Value, ev) != nil || !ev.HasID || a.future(m, ev) {
			continue
		}
		ps.ids.add(dedupKey{ev.ID, ev.Time}, m.Offset)
	}
	ps.ids.commit(ps.hw - a.lateness)
	a.metrics.setDedupIDs(a.src.Name, p, ps.ids.len(), 0) // what the cap forgets here was counted before
}

// isTransactionMarker tells whether m is the commit or abort marker that a
// transactional producer's transaction leaves in each partition it wrote
// to: a record of its own offset in a control batch, which the partition
// reader hands over marked (controlRecord) since it takes an offset. Only
// the reader knows a record's batch: a plain record with a marker's bytes
// is an event that does not decode, and is dead-lettered.
//
// The records of aborted transactions never reach the applier: the
// partition reader drops them (partitionReader).
func isTransactionMarker(m kafka.Message) bool {
	_, ok := m.WriterData.(controlRecord)
	return ok
}

// future tells whether the event is further ahead of its message's Kafka
// timestamp than the source allows. The timestamp, not the clock: a replay
// decides the same. Messages without one (zero) are not checked. The
// timestamp is the producer's CreateTime even on a topic of LogAppendTime:
// kafka-go's record batch decoder drops the batch's max timestamp, where
// the broker's append time is (docs/operations.md: a poisoned partition).
func (a *Applier) future(m kafka.Message, ev *Event) bool {
	return !m.Time.IsZero() && ev.Time > m.Time.UnixMilli()+a.skew
}

// applyChunk bounds the updates of one Store.Apply call: one pipeline of
// this many script calls, and one of reads, at a time.
const applyChunk = 1024

// Apply implements PartitionHandler.
func (a *Applier) Apply(ctx context.Context, topic string, p int, msgs []kafka.Message) error {
	start := time.Now()
	ps := a.partition(p)
	if ps.warming {
		// Messages up to the resumed position only rebuild; warming stays
		// set, so that a batch retried after a failure skips them again.
		n := 0
		for n < len(msgs) && msgs[n].Offset <= ps.warmUntil {
			n++
		}
		if n > 0 {
			a.warm(ps, p, msgs[:n])
		}
		if msgs = msgs[n:]; len(msgs) == 0 {
			return nil
		}
	}
	if err := a.checkPosition(ctx, ps, topic, p); err != nil {
		return err
	}
	// What an earlier attempt at this batch already did, and counted: the
	// dead letters sent and the events counted up to offset after.
	after := int64(-1)
	if ps.hasDone && msgs[0].Offset <= ps.done {
		after = ps.done
	}
	b := &ps.b
	defer ps.ids.discard() // what a failed batch would have remembered
	hw, has, err := a.prepareGuarded(ps, topic, p, msgs, after)
	if err != nil {
		return err
	}
	b.restore(&ps.carry, msgs[0].Offset, msgs[len(msgs)-1].Offset)
	for i := 0; i < len(b.updates); i += applyChunk {
		if err := a.store.Apply(ctx, b.updates[i:min(i+applyChunk, len(b.updates))]); err != nil {
			b.keep(&ps.carry, msgs[0].Offset, msgs[len(msgs)-1].Offset, i)
			return fmt.Errorf("apply %s/%d@%d..%d: %w", topic, p, msgs[0].Offset, msgs[len(msgs)-1].Offset, err)
		}
	}
	b.learn()
	letters := b.letters
	if after >= 0 {
		letters = slices.DeleteFunc(slices.Clone(letters), func(l DeadLetter) bool { return l.Message.Offset <= after })
	}
	if len(letters) > 0 && a.dlq != nil {
		if err := a.dlq.Send(ctx, letters); err != nil {
			return fmt.Errorf("dead-letter %d messages of %s/%d: %w", len(letters), topic, p, err)
		}
	}
	if last := msgs[len(msgs)-1].Offset; !ps.hasDone || last > ps.done {
		a.recordEvents(b, letters, after)
		a.logRejections(ps, topic, p, letters, time.Now())
		ps.hasDone, ps.done = true, last
	}
	pos := a.position(ps, msgs, hw, has)
	if err := a.appendOffline(ctx, ps, topic, p, msgs, pos); err != nil {
		return err
	}
	stored, err := a.pos.Save(ctx, a.src.Name, topic, p, pos)
	if err != nil {
		ps.hasLost, ps.lost = true, pos.Offset
		return err
	}
	// What is stored, which stays ahead of pos while the partition is read
	// again from an earlier offset to fill the offline log.
	ps.known, ps.saved, ps.savedAt = true, true, stored
	ps.hw, ps.has = hw, has
	for o := range ps.poison {
		if o <= pos.Offset {
			delete(ps.poison, o)
		}
	}
	if a.dedup {
		forgot := ps.ids.commit(hw - a.lateness)
		a.metrics.setDedupIDs(a.src.Name, p, ps.ids.len(), forgot)
	}
	a.recordBatch(start)
	return nil
}

// prepareGuarded is prepare, with a panic (a bug) turned into the batch's
// error rather than the process's end, which would come back at every
// restart at the same message. When the panic came while one message was
// taken, that message is remembered as poison: the partition worker tries
// the batch again, and this time the message goes to the dead letters
// (invalid_payload, the detail naming the panic) and the rest is applied.
func (a *Applier) prepareGuarded(ps *partitionState, topic string, p int, msgs []kafka.Message, after int64) (hw int64, has bool, err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		site := featurestore.PanicSite()
		err = fmt.Errorf("prepare %s/%d@%d..%d: panic (a bug; please report it): %v at %s", topic, p, msgs[0].Offset, msgs[len(msgs)-1].Offset, r, site)
		if ps.at >= 0 {
			if ps.poison == nil {
				ps.poison = map[int64]string{}
			}
			ps.poison[ps.at] = capDetail(fmt.Sprintf("ingest panicked on this event (a bug; please report it): %v at %s", r, site))
			err = fmt.Errorf("%w; the batch is tried again without offset %d, which goes to the dead letters", err, ps.at)
		}
	}()
	hw, has = a.prepare(ps, topic, p, msgs, after)
	return hw, has, nil
}

// prepare decodes the messages of a batch, rejects what is malformed or
// late, routes the rest to the (view, entity) groups they feed and makes
// the groups' updates (ps.b.updates). It returns the high water after the
// batch. Nothing of it is kept unless the batch is applied.
func (a *Applier) prepare(ps *partitionState, topic string, p int, msgs []kafka.Message, after int64) (hw int64, has bool) {
	b := &ps.b
	ps.at = -1
	b.reset(a, p, len(msgs))
	ps.off.reset(len(a.offViews))
	hw, has = ps.hw, ps.has
	for _, m := range msgs {
		ps.at = m.Offset
		if isTransactionMarker(m) {
			if m.Offset > after {
				b.markers++
			}
			continue
		}
		if detail, ok := ps.poison[m.Offset]; ok {
			b.letters = append(b.letters, DeadLetter{Message: m, Reason: ReasonInvalidPayload, Detail: detail})
			continue
		}
		ev := &ps.ev
		if err := ps.dec.Decode(m.Value, ev); err != nil {
			de := err.(*DecodeError)
			b.letters = append(b.letters, DeadLetter{Message: m, Reason: de.Reason, Detail: de.Detail})
			continue
		}
		if a.future(m, ev) {
			b.letters = append(b.letters, DeadLetter{Message: m, Reason: ReasonFuture,
				Detail: fmt.Sprintf("event time %s is more than %s ahead of the message's Kafka timestamp %s", fmtMs(ev.Time), registry.Duration(a.src.FutureSkew()), fmtMs(m.Time.UnixMilli()))})
			continue
		}
		// Every event with an id from here on is remembered for dedup,
		// late and duplicate ones too (dedup.go), after the oldest outside
		// the lateness are forgotten.
		remember := a.dedup && ev.HasID
		if remember && has {
			ps.ids.prune(hw - a.lateness)
		}
		if has && ev.Time < hw-a.lateness {
			b.letters = append(b.letters, DeadLetter{Message: m, Reason: ReasonLate,
				Detail: fmt.Sprintf("event time %s is more than %s behind the partition's newest %s", fmtMs(ev.Time), a.src.AllowedLateness, fmtMs(hw))})
			if remember {
				ps.ids.add(dedupKey{ev.ID, ev.Time}, m.Offset)
			}
			continue
		}
		if remember {
			k := dedupKey{ev.ID, ev.Time}
			dup := ps.ids.has(k)
			ps.ids.add(k, m.Offset)
			if dup {
				if m.Offset > after {
					b.dupIDs++
				}
				continue
			}
		}
		if !has || ev.Time > hw {
			hw, has = ev.Time, true
		}
		ei := b.accept(ev, int32(p), m.Offset)
		for vi, vp := range a.views {
			missing, err := b.route(a, vi, ev, ei)
			switch {
			case err != nil:
				b.letters = append(b.letters, DeadLetter{Message: m, Reason: ReasonMissingKey, View: vp.def.Name, Detail: err.Error()})
			case missing != "":
				b.letters = append(b.letters, DeadLetter{Message: m, Reason: ReasonMissingKey, View: vp.def.Name,
					Detail: fmt.Sprintf("no value for join key %q of feature view %q", missing, vp.def.Name)})
			}
		}
		if len(a.offViews) > 0 {
			a.routeOffline(ps, m, ev, ei)
		}
	}
	ps.at = -1
	// Here each group holds the accepted events of one entity in one view,
	// in offset order (b.uses), before they are arranged by tile: the place
	// to hand each view's accepted events to another store.
	b.arrange(a)
	b.makeUpdates(a, topic)
	return hw, has
}

// position is where the partition stands once msgs are applied, with the
// high water hw: with dedup by event id, the offset a resume rebuilds the
// remembered events from (dedup.go).
func (a *Applier) position(ps *partitionState, msgs []kafka.Message, hw int64, has bool) Position {
	m := &msgs[len(msgs)-1]
	last := m.Offset
	pos := Position{Offset: last, HW: hw, HasHW: has, Record: recordSum(m.Key, m.Value), HasRecord: true}
	if a.dedup {
		pos.DedupFrom, pos.HasDedup = ps.ids.from(hw-a.lateness, last+1), true
	}
	return pos
}

// recordBatch records, once a batch is applied, how long it took.
func (a *Applier) recordBatch(start time.Time) {
	a.metrics.observeBatch(a.src.Name, time.Since(start).Seconds())
}

// recordLag implements lagRecorder.
func (a *Applier) recordLag(p int, lag int64) { a.metrics.setLag(a.src.Name, p, lag) }

// recordEvents counts the events of a batch whose Redis writes went
// through, and the dead letters sent, leaving out the events at or below
// offset after (-1 for none), which an earlier attempt at the batch
// counted (prepare left those out of the duplicates by id and the
// transaction markers already).
func (a *Applier) recordEvents(b *batch, letters []DeadLetter, after int64) {
	m := a.metrics
	if m == nil {
		return
	}
	now := time.Now()
	for _, l := range letters {
		m.countEvents(a.src.Name, l.View, string(l.Reason), 1)
	}
	m.countEvents(a.src.Name, "", resultDuplicateID, b.dupIDs)
	m.countEvents(a.src.Name, "", ResultTransactionMarker, b.markers)
	applied := make([]int, len(a.views))
	dups := make([]int, len(a.views))
	fresh := m.freshnessOf(a.src.Name)
	for i := range b.groups {
		g := &b.groups[i]
		above := g.appliedAbove()
		for _, e := range b.byGroup[g.start : g.start+g.n] {
			switch {
			case e.Offset <= after:
			case e.Offset > above:
				applied[g.view]++
				// An event ahead of this clock (within max_future_skew)
				// is fresh: 0, as a histogram's sum must never go down.
				fresh.Observe(max(0, now.Sub(time.UnixMilli(e.Time)).Seconds()))
			default:
				dups[g.view]++
			}
		}
	}
	for vi, vp := range a.views {
		m.countEvents(a.src.Name, vp.def.Name, ResultApplied, applied[vi])
		m.countEvents(a.src.Name, vp.def.Name, ResultDuplicate, dups[vi])
	}
}

// rejectLogEvery bounds the warnings of rejected events to one per partition
// in this time.
const rejectLogEvery = time.Minute

// logRejections warns of rejected events, at most once a minute per
// partition, with their counts by reason since the last warning and the
// first one's detail: without a dead-letter topic the metrics are their
// only other trace.
func (a *Applier) logRejections(ps *partitionState, topic string, p int, letters []DeadLetter, now time.Time) {
	if len(letters) == 0 && len(ps.rejected) == 0 {
		return
	}
	if ps.rejected == nil {
		ps.rejected = map[Reason]int64{}
	}
	for _, l := range letters {
		ps.rejected[l.Reason]++
	}
	if now.Sub(ps.rejectLogged) < rejectLogEvery || len(letters) == 0 {
		return
	}
	l := letters[0]
	a.log.Warn("events rejected", append(a.rejectedAttrs(ps, topic, p),
		"first_offset", l.Message.Offset, "first_reason", string(l.Reason), "first_detail", l.Detail)...)
	ps.rejectLogged = now
	clear(ps.rejected)
}

// rejectedAttrs returns the attributes of an events rejected line: the
// counts by reason, the partition and the dead-letter topic.
func (a *Applier) rejectedAttrs(ps *partitionState, topic string, p int) []any {
	attrs := make([]any, 0, 2*len(ps.rejected)+12)
	for _, r := range slices.Sorted(maps.Keys(ps.rejected)) {
		attrs = append(attrs, string(r), ps.rejected[r])
	}
	dlq := a.src.Kafka.DeadLetterTopic
	if dlq == "" {
		dlq = "none (counted only)"
	}
	return append(attrs, "topic", topic, "partition", p, "dead_letter_topic", dlq)
}

func fmtMs(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }
