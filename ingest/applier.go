package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// This file is where a Kafka message becomes a tile: Apply decodes each
// message, checks its lateness, routes it to every online feature view of
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
)

// viewPlan is a feature view compiled for ingest.
type viewPlan struct {
	def      *registry.FeatureView
	win      *window.View
	keyIdx   []int // per entity join key: its index in Layout.Keys
	keyKinds []featurestore.Kind
	ring     int64
	ttl      time.Duration
}

// Applier applies the messages of one source to the online store. It is a
// PartitionHandler.
type Applier struct {
	project  string
	src      *registry.Source
	layout   Layout
	views    []*viewPlan
	lateness int64 // ms
	store    *online.Store
	pos      *Positions
	dlq      DeadLetterSink
	log      *slog.Logger
	metrics  *Metrics

	mu    sync.Mutex
	parts map[int]*partitionState
}

type partitionState struct {
	dec Decoder
	ev  Event
	hw  int64
	has bool
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
		store: store, pos: pos, dlq: dlq, log: log, parts: map[int]*partitionState{}}
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
			vp.keyKinds = append(vp.keyKinds, l.Keys[i].Kind)
		}
		vp.ring = online.NewViewLayout(project, v.Name, w, src.AllowedLateness.Std()).Ring
		vp.ttl = max(w.Retention(src.AllowedLateness.Std()), v.TTL.Std())
		if w.HasPart(window.PartLifetime) || (w.HasPart(window.PartLastValue) && v.TTL == 0) {
			vp.ttl = online.NoExpiry // lifetime values and last values without a TTL never expire
		}
		a.views = append(a.views, vp)
	}
	return a, nil
}

// SetMetrics makes the applier record its metrics in m.
func (a *Applier) SetMetrics(m *Metrics) { a.metrics = m }

func (a *Applier) partition(p int) *partitionState {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := a.parts[p]
	if ps == nil {
		dec, _ := NewDecoder(a.src, a.layout, "") // checked in NewApplier
		ps = &partitionState{dec: dec}
		a.parts[p] = ps
	}
	return ps
}

// Resume implements PartitionHandler: the saved position, or the start.
func (a *Applier) Resume(ctx context.Context, _ string, p int) (int64, error) {
	pos, ok, err := a.pos.Load(ctx, a.src.Name, p)
	if err != nil {
		return 0, err
	}
	ps := a.partition(p)
	if !ok {
		ps.hw, ps.has = 0, false
		return kafka.FirstOffset, nil
	}
	ps.hw, ps.has = pos.HW, pos.HasHW
	return pos.Offset + 1, nil
}

type groupKey struct {
	view   int
	entity featurestore.EntityKey
}

// Apply implements PartitionHandler.
func (a *Applier) Apply(ctx context.Context, topic string, p int, msgs []kafka.Message) error {
	start := time.Now()
	ps := a.partition(p)
	hw, has := ps.hw, ps.has
	var letters []DeadLetter
	groups := map[groupKey][]window.Event{}
	var order []groupKey
	parts := make([]featurestore.KeyPart, 0, 4)
	for _, m := range msgs {
		ev := &ps.ev
		if err := ps.dec.Decode(m.Value, ev); err != nil {
			de := err.(*DecodeError)
			letters = append(letters, DeadLetter{Message: m, Reason: de.Reason, Detail: de.Detail})
			continue
		}
		if has && ev.Time < hw-a.lateness {
			letters = append(letters, DeadLetter{Message: m, Reason: ReasonLate,
				Detail: fmt.Sprintf("event time %s is more than %s behind the partition's newest %s", fmtMs(ev.Time), a.src.AllowedLateness, fmtMs(hw))})
			continue
		}
		if !has || ev.Time > hw {
			hw, has = ev.Time, true
		}
		fields := slices.Clone(ev.Fields)
		for vi, vp := range a.views {
			parts = parts[:0]
			missing := ""
			for j, ki := range vp.keyIdx {
				kv := ev.Keys[ki]
				switch {
				case kv.IsNull():
					missing = a.layout.Keys[ki].Name
				case vp.keyKinds[j] == featurestore.KindString:
					parts = append(parts, featurestore.StringPart(kv.Str()))
				default:
					parts = append(parts, featurestore.Int64Part(kv.Int64()))
				}
			}
			if missing != "" {
				letters = append(letters, DeadLetter{Message: m, Reason: ReasonMissingKey, View: vp.def.Name,
					Detail: fmt.Sprintf("no value for join key %q of feature view %q", missing, vp.def.Name)})
				continue
			}
			ek, err := featurestore.NewEntityKey(parts...)
			if err != nil {
				letters = append(letters, DeadLetter{Message: m, Reason: ReasonMissingKey, View: vp.def.Name, Detail: err.Error()})
				continue
			}
			gk := groupKey{view: vi, entity: ek}
			if _, seen := groups[gk]; !seen {
				order = append(order, gk)
			}
			groups[gk] = append(groups[gk], window.Event{Time: ev.Time, Partition: int32(p), Offset: m.Offset, Fields: fields})
		}
	}
	updates := make([]online.Update, 0, len(order))
	fresh := make([]int, len(order)) // per update: events the last merge applied
	for i, gk := range order {
		updates = append(updates, a.update(topic, int32(p), a.views[gk.view], gk.entity, groups[gk], &fresh[i]))
	}
	const chunk = 512
	for i := 0; i < len(updates); i += chunk {
		if err := a.store.Apply(ctx, updates[i:min(i+chunk, len(updates))]); err != nil {
			return fmt.Errorf("apply %s/%d@%d..%d: %w", topic, p, msgs[0].Offset, msgs[len(msgs)-1].Offset, err)
		}
	}
	if len(letters) > 0 && a.dlq != nil {
		if err := a.dlq.Send(ctx, letters); err != nil {
			return fmt.Errorf("dead-letter %d messages of %s/%d: %w", len(letters), topic, p, err)
		}
	}
	if err := a.pos.Save(ctx, a.src.Name, p, Position{Offset: msgs[len(msgs)-1].Offset, HW: hw, HasHW: has}); err != nil {
		return err
	}
	ps.hw, ps.has = hw, has
	a.record(p, msgs, letters, order, groups, fresh, start)
	return nil
}

// record updates the metrics after a batch was applied.
func (a *Applier) record(p int, msgs []kafka.Message, letters []DeadLetter, order []groupKey, groups map[groupKey][]window.Event, fresh []int, start time.Time) {
	m := a.metrics
	if m == nil {
		return
	}
	now := time.Now()
	m.observeBatch(a.src.Name, now.Sub(start).Seconds())
	last := msgs[len(msgs)-1]
	m.setLag(a.src.Name, p, last.HighWaterMark-last.Offset-1)
	for _, l := range letters {
		m.countEvents(a.src.Name, l.View, string(l.Reason), 1)
	}
	applied := make([]int, len(a.views))
	dups := make([]int, len(a.views))
	for i, gk := range order {
		evs := groups[gk]
		applied[gk.view] += fresh[i]
		dups[gk.view] += len(evs) - fresh[i]
		for j := len(evs) - fresh[i]; j < len(evs); j++ {
			m.observeFreshness(a.src.Name, now.Sub(time.UnixMilli(evs[j].Time)).Seconds())
		}
	}
	for vi, vp := range a.views {
		m.countEvents(a.src.Name, vp.def.Name, ResultApplied, applied[vi])
		m.countEvents(a.src.Name, vp.def.Name, ResultDuplicate, dups[vi])
	}
}

func fmtMs(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }

// update builds the fenced merge of one entity's events into its state in
// one view.
func (a *Applier) update(topic string, p int32, vp *viewPlan, ek featurestore.EntityKey, evs []window.Event, applied *int) online.Update {
	w := vp.win
	var tiles []int64
	if w.HasPart(window.PartWindow) {
		for _, e := range evs {
			if k := w.TileOf(e.Time); !slices.Contains(tiles, k) {
				tiles = append(tiles, k)
			}
		}
	}
	fields := make([]string, 0, len(tiles)+2)
	for _, k := range tiles {
		fields = append(fields, online.SlotField(k, vp.ring))
	}
	lifeAt, lastAt := -1, -1
	if w.HasPart(window.PartLifetime) {
		lifeAt = len(fields)
		fields = append(fields, online.LifetimeField)
	}
	if w.HasPart(window.PartLastValue) {
		lastAt = len(fields)
		fields = append(fields, online.LastField)
	}
	return online.Update{
		Key:        online.Key{Project: a.project, View: vp.def.Name, Entity: ek},
		Topic:      topic,
		Partitions: []int32{p},
		Fields:     fields,
		Merge: func(st online.State) (online.Write, error) {
			fence := st.Fences[0]
			fresh := evs
			if fence != online.NoOffset {
				fresh = nil
				for _, e := range evs {
					if e.Offset > fence {
						fresh = append(fresh, e)
					}
				}
			}
			*applied = len(fresh)
			if len(fresh) == 0 {
				return online.Write{}, nil
			}
			out := online.Write{Fences: []online.Fence{{Partition: p, Offset: fresh[len(fresh)-1].Offset}}, TTL: vp.ttl}
			for i, k := range tiles {
				ts := w.NewTileState(k)
				if b := st.Fields[i]; b != nil {
					sk, blob, err := online.DecodeSlot(b)
					if err != nil {
						return online.Write{}, fmt.Errorf("tile slot of %s: %w", ek, err)
					}
					if sk > k {
						continue // the slot holds a newer tile: these events can no longer be read
					}
					if sk == k {
						if err := ts.UnmarshalBinary(blob); err != nil {
							return online.Write{}, err
						}
					}
				}
				n := 0
				for j := range fresh {
					if w.TileOf(fresh[j].Time) == k {
						if err := ts.Add(&fresh[j]); err != nil {
							return online.Write{}, err
						}
						n++
					}
				}
				if n > 0 {
					out.Set = append(out.Set, online.Field{Name: fields[i], Value: online.AppendSlot(nil, k, ts.AppendBinary(nil))})
				}
			}
			if lifeAt >= 0 {
				ls := w.NewLifetimeState()
				if b := st.Fields[lifeAt]; b != nil {
					if err := ls.UnmarshalBinary(b); err != nil {
						return online.Write{}, err
					}
				}
				for j := range fresh {
					ls.Add(&fresh[j])
				}
				out.Set = append(out.Set, online.Field{Name: online.LifetimeField, Value: ls.AppendBinary(nil)})
			}
			if lastAt >= 0 {
				lv := w.NewLastValues()
				if b := st.Fields[lastAt]; b != nil {
					if err := lv.UnmarshalBinary(b); err != nil {
						return online.Write{}, err
					}
				}
				for j := range fresh {
					lv.Add(&fresh[j])
				}
				out.Set = append(out.Set, online.Field{Name: online.LastField, Value: lv.AppendBinary(nil)})
			}
			return out, nil
		},
	}
}
