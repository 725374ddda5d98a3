package online

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

// ViewLayout is a feature view as the store lays it out: the compiled view
// and its ring of tile slots.
type ViewLayout struct {
	Project string
	Name    string
	View    *window.View
	Ring    int64

	reads *layoutReads // nil unless made by NewViewLayout
}

// layoutReads is what every read of a view shares, computed once per layout.
type layoutReads struct {
	mode readMode
	// tail holds the fields a read asks for with HMGET besides tiles,
	// boxed once: RingField when the read asks for slots, then
	// LifetimeField and LastField, those the view has; names the same as
	// strings.
	tail             []any
	names            []string
	hasLife, hasLast bool
	tiles            int        // tiles a read merges: the longest window's
	features         int        // features a read returns
	ring             string     // with windows: the value of RingField of the layout's hashes
	slots            *slotNames // readSlots: the names of the ring's slots
	// With rollup tiles (window.View.Rollup): the tiles each holds and the
	// slots of their ring; for readSlots their names. plan is the most
	// slots a read of slots asks for (window.View.ReadPlanMax).
	ratio, rollupRing int64
	rollupSlots       *slotNames
	plan              int
	scratch           *sync.Pool // of *viewScratch
}

// readMode is how a read asks Redis for a view's hash.
type readMode uint8

const (
	// readTail reads a view without windows: HMGET of its lifetime and
	// last-value fields.
	readTail readMode = iota
	// readAll reads the whole hash, HGETALL: the tiles a read needs are
	// most of the ring.
	readAll
	// readSlots reads the slots of the tiles a read needs with HMGET,
	// with the ring, lifetime and last-value fields: those tiles are a
	// small part of the ring, as for a 10-minute count of a view whose
	// longest window is a day, when only the count is asked for.
	readSlots
)

// slotReadShare is the largest share of the ring whose slots a read asks
// for by name (readSlots); a read needing more reads the whole hash. Redis
// answers an HMGET of a missing field about as fast as it skips a field in
// HGETALL, but parses every name asked for, so naming slots pays when the
// hash holds many tiles the read does not need: an entity with events in
// every tile holds a whole ring.
const slotReadShare = 4 // 1/4

// slotNames are the field names of a ring's slots, boxed for HMGET.
type slotNames struct {
	names []string
	boxed []any
}

// ringSlots holds the slotNames of each ring in use, shared by every
// layout of that ring: a ring is up to a few thousand slots.
var ringSlots sync.Map // ringKey -> *slotNames

// ringKey names a ring: of tiles or of rollup tiles, and its size.
type ringKey struct {
	rollup bool
	size   int64
}

func slotsOf(rollup bool, ring int64) *slotNames {
	key := ringKey{rollup, ring}
	if sn, ok := ringSlots.Load(key); ok {
		return sn.(*slotNames)
	}
	sn := &slotNames{names: make([]string, ring), boxed: make([]any, ring)}
	for k := range ring {
		if rollup {
			sn.names[k] = RollupSlotField(k, ring)
		} else {
			sn.names[k] = SlotField(k, ring)
		}
		sn.boxed[k] = sn.names[k]
	}
	actual, _ := ringSlots.LoadOrStore(key, sn)
	return actual.(*slotNames)
}

// NewViewLayout returns the layout of a compiled view of a source of the
// given reach (registry.Source.Reach).
func NewViewLayout(project, name string, v *window.View, reach time.Duration) ViewLayout {
	tiles := int64(0)
	if v.Tile() > 0 {
		tiles = v.MaxWindow() / v.Tile()
	}
	l := ViewLayout{Project: project, Name: name, View: v, Ring: RingSize(v.Tile(), tiles, reach)}
	l.reads = newLayoutReads(v, l.Ring)
	return l
}

// Select returns the layout of reads of some of l's features, given by
// their indexes in l.View.Features: the same hashes and ring, read with
// l.View.Project(features). Its reads return results as l's do, the
// features not selected left zero, and merge and decode only what the
// selected features need; when those need a small part of the ring (a
// short window of a view with a long one), a read asks Redis for the slots
// of their tiles only, not for the whole hash. With every feature
// selected, it returns l.
func (l ViewLayout) Select(features []int) (ViewLayout, error) {
	pv, err := l.View.Project(features)
	if err != nil {
		return ViewLayout{}, fmt.Errorf("view %q: %w", l.Name, err)
	}
	if pv == l.View {
		return l, nil
	}
	s := ViewLayout{Project: l.Project, Name: l.Name, View: pv, Ring: l.Ring}
	s.reads = newLayoutReads(pv, l.Ring)
	return s, nil
}

func newLayoutReads(v *window.View, ring int64) *layoutReads {
	r := &layoutReads{
		hasLife:  v.HasPart(window.PartLifetime),
		hasLast:  v.HasPart(window.PartLastValue),
		features: len(v.Features()),
	}
	if v.HasPart(window.PartWindow) {
		r.tiles = v.TilesNeeded(0).Len()
		r.plan = v.ReadPlanMax()
		r.mode = readAll
		if v.Rollup() > 0 {
			r.ratio = v.Rollup() / v.Tile()
			r.rollupRing = RollupRingSize(ring, r.ratio)
		}
		r.ring = string(TiledRingValue(ring, r.ratio, v.Tile()))
		if ring > 0 && int64(r.plan)*slotReadShare <= ring {
			r.mode = readSlots
			r.slots = slotsOf(false, ring)
			if r.ratio > 0 {
				r.rollupSlots = slotsOf(true, r.rollupRing)
			}
			r.names = append(r.names, RingField)
		}
	}
	if r.hasLife {
		r.names = append(r.names, LifetimeField)
	}
	if r.hasLast {
		r.names = append(r.names, LastField)
	}
	for _, n := range r.names {
		r.tail = append(r.tail, n)
	}
	r.scratch = &sync.Pool{New: func() any { return &viewScratch{rd: v.NewReader()} }}
	return r
}

// readsOf returns the shared read state of l, building it for a layout not
// made by NewViewLayout.
func (l *ViewLayout) readsOf() *layoutReads {
	if l.reads != nil {
		return l.reads
	}
	return newLayoutReads(l.View, l.Ring)
}

// ViewRead asks for every feature of one view for one entity.
type ViewRead struct {
	Layout *ViewLayout
	Entity featurestore.EntityKey
}

// ReadViews reads the features of each request at time t (Unix ms), in one
// round trip, merging tiles at read time so that windows decay without new
// events. Results follow the requests; each holds the view's features in
// order. Every result slice is freshly allocated; ReadBuffer.ReadViews
// reuses its buffers instead.
//
// A hash that does not decode fails the call, with an error that wraps
// ErrCorruptState and names the key: ReadBuffer.ReadViews serves the other
// reads and reports it per read instead.
func ReadViews(ctx context.Context, s *Store, reqs []ViewRead, t int64) ([][]window.FeatureValue, error) {
	var b ReadBuffer
	res, err := b.ReadViews(ctx, s, reqs, t)
	if err == nil && len(b.corrupt) > 0 {
		c := b.corrupt[0]
		return nil, fmt.Errorf("read %s: %w", c.Key, c.Err)
	}
	return res, err
}

// viewScratch is what decoding one view's reply reuses: a reader, and
// states that are reset for each read instead of allocated. A scratch
// serves one read at a time; layouts pool them.
type viewScratch struct {
	rd    *window.Reader
	tiles []*window.TileState // decoded tiles, kept for reuse
	used  []*window.TileState // the tiles of the current read
	life  *window.LifetimeState
	last  *window.LastValues
	// Of a view with rollup tiles: decoded rollup tiles, those of the
	// current read, and its plan.
	rtiles, rused []*window.TileState
	plan          []window.TileRange
}

// read decodes the reply to one view read, kv the hash's fields and values
// in pairs (field, value, field, value, ...), and puts the view's features at
// t into dst. It keeps the tiles of the longest window at t, whatever slot
// they are in (each slot holds one tile, its index in its value), the
// lifetime and the last values, and skips the version and the fences.
func (sc *viewScratch) read(v *window.View, lr *layoutReads, kv []string, t int64, dst []window.FeatureValue) error {
	sc.used, sc.rused = sc.used[:0], sc.rused[:0]
	var need, rollups window.TileRange
	var plan []window.TileRange
	if lr.tiles > 0 {
		need = v.TilesNeeded(t)
	}
	// Rollup tiles are read from a hash laid out in the layout's rings
	// only; from another, every tile is merged. No tile is merged from a
	// hash whose ring records another tile size (RingTile): its indexes
	// mean other times.
	withRollups, tiles := false, lr.tiles > 0
	if tiles {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == RingField {
				if kv[i+1] == lr.ring {
					withRollups = lr.ratio > 0
				} else if g, ok := RingTile(bytesOf(kv[i+1])); ok && g != v.Tile() {
					tiles = false
				}
				break
			}
		}
		if withRollups {
			sc.plan, rollups = v.ReadPlan(sc.plan[:0], t)
			plan = sc.plan
		}
	}
	var life *window.LifetimeState
	var last *window.LastValues
	for i := 0; i+1 < len(kv); i += 2 {
		f, s := kv[i], kv[i+1]
		if s == "" {
			continue
		}
		switch {
		case len(f) > len(tilePrefix) && f[:len(tilePrefix)] == tilePrefix:
			if !tiles {
				continue // a tile left by an earlier version of the view, or of another tile size
			}
			k, blob, err := DecodeSlot(bytesOf(s))
			if err != nil {
				return fmt.Errorf("field %s: %w", f, err)
			}
			if !need.Contains(k) || (withRollups && !inRanges(plan, k)) {
				continue // outside the window, not read with rollups, or a tile not yet readable
			}
			if len(sc.used) == len(sc.tiles) {
				sc.tiles = append(sc.tiles, v.NewTileState(k))
			}
			ts := sc.tiles[len(sc.used)]
			ts.Reset(k)
			if err := ts.UnmarshalBinary(blob); err != nil {
				return fmt.Errorf("field %s: %w", f, err)
			}
			sc.used = append(sc.used, ts)
		case withRollups && IsRollupSlotField(f):
			K, blob, err := DecodeSlot(bytesOf(s))
			if err != nil {
				return fmt.Errorf("field %s: %w", f, err)
			}
			if !rollups.Contains(K) {
				continue
			}
			if len(sc.rused) == len(sc.rtiles) {
				sc.rtiles = append(sc.rtiles, v.NewRollupState(K))
			}
			rs := sc.rtiles[len(sc.rused)]
			rs.Reset(K)
			if err := rs.UnmarshalBinary(blob); err != nil {
				return fmt.Errorf("field %s: %w", f, err)
			}
			sc.rused = append(sc.rused, rs)
		case f == LifetimeField && lr.hasLife:
			if sc.life == nil {
				sc.life = v.NewLifetimeState()
			}
			if err := sc.life.UnmarshalBinary(bytesOf(s)); err != nil {
				return fmt.Errorf("field %s: %w", f, err)
			}
			life = sc.life
		case f == LastField && lr.hasLast:
			if sc.last == nil {
				sc.last = v.NewLastValues()
			}
			if err := sc.last.UnmarshalBinary(bytesOf(s)); err != nil {
				return fmt.Errorf("field %s: %w", f, err)
			}
			last = sc.last
		}
	}
	var res []window.FeatureValue
	var err error
	if withRollups {
		res, err = sc.rd.ReadRollups(t, sc.used, sc.rused, life, last)
	} else {
		res, err = sc.rd.Read(t, sc.used, life, last)
	}
	if err != nil {
		return err
	}
	// res is the reader's buffer, reused by its next Read; its values refer
	// to no state of the scratch (decoding copies strings, lists are built
	// per read), so they stay valid after the scratch is reused.
	copy(dst, res)
	return nil
}

// inRanges reports whether tile k is in one of the ranges.
func inRanges(ranges []window.TileRange, k int64) bool {
	for _, r := range ranges {
		if r.Contains(k) {
			return true
		}
	}
	return false
}

// readError puts into dst the features of a read whose hash does not
// decode: window.StatusError, no value, no event time, and the interval
// each would cover at t, as a read of an empty hash gives it, so that a
// windowed feature covers the same interval for every entity of a lookup.
func (sc *viewScratch) readError(t int64, dst []window.FeatureValue) {
	res, err := sc.rd.Read(t, nil, nil, nil)
	for i := range dst {
		var covered window.Interval
		if err == nil { // no state, nothing to check: it cannot fail
			covered = res[i].Covered
		}
		dst[i] = window.FeatureValue{Status: window.StatusError, Covered: covered}
	}
}
