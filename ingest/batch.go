package ingest

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/window"
)

// batch is the working memory of one Apply call on one partition, kept for
// the next call: the accepted events, their routing to (view, entity)
// groups, the updates and the encoded writes. Reusing it keeps a batch to a
// few allocations per entity written, whatever the number of events; a
// batch that coalesces several events of an entity writes it once.
//
// Nothing in a batch outlives the next Apply call on the partition: the
// values of the writes point into enc, and events' fields into values.
type batch struct {
	events  []window.Event       // accepted events, in offset order
	values  []featurestore.Value // their fields, one run per event
	uses    []use                // per accepted event and view: the group it feeds
	groupOf map[string]int32     // view index and entity key bytes: the group
	groups  []group
	byGroup []window.Event // the events of each group, sorted by tile, then offset
	tiles   []int64        // the distinct tiles of each group, ascending
	rollups []int64        // the distinct rollup tiles of each group, ascending
	fields  []string       // the fields each group's update reads
	firsts  []int64        // each group's lowest offset, for its update
	updates []online.Update
	letters []DeadLetter
	dupIDs  int // events dropped as duplicates by event id (dedup.go)
	markers int // transaction markers stepped over (isTransactionMarker)
	key     []byte
	part    []int32 // the partition, as Update.Partitions

	// What merges write, valid until the next batch.
	enc    []byte
	sets   []online.Field
	fences []online.Fence

	views []viewScratch // per view of the applier
}

// use is one event feeding one group.
type use struct{ group, event int32 }

// group is the events of one entity in one view, and the outcome of their
// update.
type group struct {
	view     int
	entity   featurestore.EntityKey
	start, n int32 // its events in batch.byGroup
	tiles    []int64
	rollups  []int64 // its rollup tiles; their fields follow the tiles'
	fields   []string
	first    int64 // the lowest offset of its events
	blind    bool  // its update was blind
	// maxTile is the highest tile index a tile slot of the view can hold
	// (maxTile). A slot holding a tile beyond it holds one of another tile
	// size, or from a clock far ahead: it must not block the group's tiles.
	maxTile int64

	// Set by the last merge.
	fence  int64 // the stored fence of the partition
	fresh  int32 // events above it, applied by the write
	merged bool  // merged with a state read from Redis
	// Whether a blind write would have gone through, judged from the state
	// read (when merged).
	blindable bool
	// The stored fence before the batch wrote anything (seen): the first a
	// merge that read the hash found, in this attempt or an earlier attempt
	// at the same batch (batchCarry). Events above it are the batch's
	// even when the last merge finds them fenced: a write of the batch
	// whose reply was lost landed, and the client or the partition worker
	// tried again. The metrics count them applied, not duplicate.
	before int64
	seen   bool
}

// appliedAbove returns the fence above which the group's events were
// applied by its batch.
func (g *group) appliedAbove() int64 {
	if g.seen {
		return g.before
	}
	return g.fence // written blind: nothing read
}

// batchCarry keeps what a failed attempt at a batch saw of its groups'
// fences, for the next attempt at the same batch: the partition worker
// tries a failed batch again as it was, and prepare makes the same groups
// from it.
type batchCarry struct {
	first, last int64
	fences      map[string]int64 // by the batch's group key (batch.groupOf)
}

// keep records the fences the groups of the batch (its first and last
// offsets) saw before their writes: those read in this attempt or carried
// from an earlier one. The groups of the first written updates, whose
// Store.Apply succeeded, are all known: one not read was written blind,
// which goes through only where the hash holds none of its events. A blind
// write whose Store.Apply failed may have been refused (a replay) or never
// sent, and is not kept: if it landed but lost its reply, its events count
// duplicate, the lesser mistake.
func (b *batch) keep(c *batchCarry, first, last int64, written int) {
	c.first, c.last = first, last
	if c.fences == nil {
		c.fences = map[string]int64{}
	}
	clear(c.fences)
	for k, gi := range b.groupOf {
		switch g := &b.groups[gi]; {
		case g.seen:
			c.fences[k] = g.before
		case int(gi) < written:
			c.fences[k] = online.NoOffset
		}
	}
}

// restore gives the batch's groups the fences an earlier attempt at the
// same batch (its first and last offsets) kept, and forgets them.
func (b *batch) restore(c *batchCarry, first, last int64) {
	if len(c.fences) == 0 {
		return
	}
	if c.first == first && c.last == last {
		for k, gi := range b.groupOf {
			if f, ok := c.fences[k]; ok {
				b.groups[gi].before, b.groups[gi].seen = f, true
			}
		}
	}
	clear(c.fences)
}

// applied returns how many of the group's events its batch applied.
func (b *batch) applied(g *group) int {
	above, n := g.appliedAbove(), 0
	for _, e := range b.byGroup[g.start : g.start+g.n] {
		if e.Offset > above {
			n++
		}
	}
	return n
}

// viewScratch holds what a batch reuses per view: states to merge into, and
// the names of tile slots.
type viewScratch struct {
	tile   *window.TileState
	rollup *window.TileState // of a view with rollup tiles
	// rollupSlots are the field names of the rollup ring's slots.
	rollupSlots map[int64]string
	life        *window.LifetimeState
	last        *window.LastValues
	slots       map[int64]string // slot index: field name
	// rings is the value of online.RingField of the view's hashes
	// (online.TiledRingValue): its ring, rollup tiles and tile size.
	rings []byte
	// The share of the view's writes that could go blind, estimated over
	// the batches so far (1 to start with: a new consumer is usually
	// catching up, when most writes start new tiles).
	blindRate float64
}

// reset prepares the batch for n messages.
func (b *batch) reset(a *Applier, p int, n int) {
	nf := len(a.layout.Fields)
	if cap(b.values) < n*nf {
		b.values = make([]featurestore.Value, 0, n*nf)
	}
	clear(b.values[:cap(b.values)]) // drop the last batch's strings
	b.events, b.values, b.uses = b.events[:0], b.values[:0], b.uses[:0]
	if b.groupOf == nil {
		b.groupOf = map[string]int32{}
	}
	clear(b.groupOf)
	clear(b.groups)
	clear(b.letters)
	b.dupIDs, b.markers = 0, 0
	b.groups, b.letters = b.groups[:0], b.letters[:0]
	b.byGroup, b.tiles, b.rollups, b.fields, b.firsts = b.byGroup[:0], b.tiles[:0], b.rollups[:0], b.fields[:0], b.firsts[:0]
	clear(b.updates)
	b.updates = b.updates[:0]
	b.enc, b.sets, b.fences = b.enc[:0], b.sets[:0], b.fences[:0]
	b.part = append(b.part[:0], int32(p))
	if b.views == nil {
		b.views = make([]viewScratch, len(a.views))
		for i, vp := range a.views {
			vs := &b.views[i]
			w := vp.win
			if w.HasPart(window.PartWindow) {
				vs.tile = w.NewTileState(0)
			}
			if w.Rollup() > 0 {
				vs.rollup = w.NewRollupState(0)
				vs.rollupSlots = map[int64]string{}
			}
			if w.HasPart(window.PartLifetime) {
				vs.life = w.NewLifetimeState()
			}
			if w.HasPart(window.PartLastValue) {
				vs.last = w.NewLastValues()
			}
			vs.slots = map[int64]string{}
			vs.blindRate = 1
			vs.rings = online.TiledRingValue(vp.ring, vp.ratio, w.Tile())
		}
	}
}

// accept adds an accepted event: its fields are copied, so that ev can be
// reused.
func (b *batch) accept(ev *Event, p int32, offset int64) int32 {
	n := len(b.values)
	b.values = append(b.values, ev.Fields...)
	b.events = append(b.events, window.Event{Time: ev.Time, Partition: p, Offset: offset, Fields: b.values[n:len(b.values):len(b.values)]})
	return int32(len(b.events) - 1)
}

// route adds event ei to the group of its entity in view vi, or returns the
// name of the join key it lacks.
func (b *batch) route(a *Applier, vi int, ev *Event, ei int32) (missing string, err error) {
	vp := a.views[vi]
	// The map key: the view's index and the entity key's binary form (see
	// featurestore.EntityKey), so that a lookup allocates nothing.
	k, missing := a.layout.appendEntityKey(append(b.key[:0], byte(vi), byte(vi>>8)), ev, vp.keyIdx)
	b.key = k
	if missing != "" {
		return missing, nil
	}
	gi, ok := b.groupOf[string(k)]
	if !ok {
		var ek featurestore.EntityKey
		if err := ek.UnmarshalBinary(k[2:]); err != nil {
			return "", err
		}
		gi = int32(len(b.groups))
		b.groupOf[string(k)] = gi
		b.groups = append(b.groups, group{view: vi, entity: ek})
	}
	b.groups[gi].n++
	b.uses = append(b.uses, use{gi, ei})
	return "", nil
}

// appendEntityKey appends to k the binary form of the entity key (as
// featurestore.EntityKey encodes it) of the event's values of the join keys
// at keyIdx in l.Keys. missing names the first of them the event has no
// value for; k is then incomplete.
func (l *Layout) appendEntityKey(k []byte, ev *Event, keyIdx []int) (_ []byte, missing string) {
	for _, ki := range keyIdx {
		kv := ev.Keys[ki]
		switch {
		case kv.IsNull():
			return k, l.Keys[ki].Name
		case kv.Kind() == featurestore.KindString:
			s := kv.Str()
			k = append(k, byte(featurestore.KeyString))
			k = binary.AppendUvarint(k, uint64(len(s)))
			k = append(k, s...)
		default:
			k = append(k, byte(featurestore.KeyInt64))
			k = binary.AppendVarint(k, kv.Int64())
		}
	}
	return k, ""
}

// arrange lays out the events of each group contiguously, sorted by tile,
// and lists each group's tiles and the fields its update reads.
func (b *batch) arrange(a *Applier) {
	var at int32
	for i := range b.groups {
		g := &b.groups[i]
		g.start, at = at, at+g.n
		g.n = 0
	}
	b.byGroup = slices.Grow(b.byGroup[:0], int(at))[:at]
	for _, u := range b.uses {
		g := &b.groups[u.group]
		b.byGroup[g.start+g.n] = b.events[u.event]
		g.n++
	}
	for i := range b.groups {
		g := &b.groups[i]
		vp := a.views[g.view]
		w := vp.win
		evs := b.byGroup[g.start : g.start+g.n]
		g.first = evs[0].Offset // uses are in offset order
		if len(evs) > 1 && w.HasPart(window.PartWindow) {
			// Stable: within a tile, events stay in offset order.
			slices.SortStableFunc(evs, func(x, y window.Event) int { return cmp.Compare(w.TileOf(x.Time), w.TileOf(y.Time)) })
		}
		vs := &b.views[g.view]
		nt, nr, nf := len(b.tiles), len(b.rollups), len(b.fields)
		if w.HasPart(window.PartWindow) {
			for j := range evs {
				if k := w.TileOf(evs[j].Time); len(b.tiles) == nt || b.tiles[len(b.tiles)-1] != k {
					b.tiles = append(b.tiles, k)
					b.fields = append(b.fields, vs.slotField(k, vp.ring))
				}
			}
		}
		if vp.ratio > 0 {
			for _, k := range b.tiles[nt:] {
				if K := w.RollupOf(k); len(b.rollups) == nr || b.rollups[len(b.rollups)-1] != K {
					b.rollups = append(b.rollups, K)
					b.fields = append(b.fields, vs.rollupSlotField(K, vp.rollupRing))
				}
			}
		}
		if w.HasPart(window.PartLifetime) {
			b.fields = append(b.fields, online.LifetimeField)
		}
		if w.HasPart(window.PartLastValue) {
			b.fields = append(b.fields, online.LastField)
		}
		if w.HasPart(window.PartWindow) {
			b.fields = append(b.fields, online.RingField)
		}
		g.tiles = b.tiles[nt:len(b.tiles):len(b.tiles)]
		g.rollups = b.rollups[nr:len(b.rollups):len(b.rollups)]
		g.fields = b.fields[nf:len(b.fields):len(b.fields)]
	}
}

// slotField returns the field of tile k's slot, from a cache: field names
// are few (one per slot of the ring) and asked for per event.
func (vs *viewScratch) slotField(k, ring int64) string {
	return cachedSlotField(vs.slots, k, ring, online.SlotField)
}

// rollupSlotField returns the field of rollup tile K's slot, from a cache.
func (vs *viewScratch) rollupSlotField(K, ring int64) string {
	return cachedSlotField(vs.rollupSlots, K, ring, online.RollupSlotField)
}

// cachedSlotField returns name(k, ring) from cache, by slot, adding it.
func cachedSlotField(cache map[int64]string, k, ring int64, name func(k, ring int64) string) string {
	s := k % ring
	if s < 0 {
		s += ring
	}
	f, ok := cache[s]
	if !ok {
		f = name(k, ring)
		cache[s] = f
	}
	return f
}

// makeUpdates makes the fenced updates of the batch's groups.
func (b *batch) makeUpdates(a *Applier, topic string) {
	b.firsts = slices.Grow(b.firsts[:0], len(b.groups))
	clock := time.Now().UnixMilli()
	for i := range b.events {
		clock = max(clock, b.events[i].Time)
	}
	for i := range b.groups {
		g := &b.groups[i]
		vp := a.views[g.view]
		g.blind = b.views[g.view].blindRate >= 0.5
		g.maxTile = 0
		if vp.win.HasPart(window.PartWindow) {
			g.maxTile = maxTile(vp.win, clock, a.skew)
		}
		b.firsts = append(b.firsts, g.first)
		b.updates = append(b.updates, online.Update{
			Key:        online.Key{Project: a.project, View: vp.def.Name, Entity: g.entity},
			Topic:      topic,
			Partitions: b.part,
			Fields:     g.fields,
			Blind:      g.blind,
			First:      b.firsts[i : i+1 : i+1],
			MaxTile:    g.maxTile,
			Merge:      func(st online.State) (online.Write, error) { return b.merge(a, i, st) },
		})
	}
}

// maxTile returns the highest index of a tile of view w that a hash can
// hold at the given clock (ms; the batch's newest event time if later):
// the tile of the clock plus the source's future skew (ms), and one more
// for clock skew between processes, as the ring allows (online.RingSize).
// An index beyond it is of a tile of another tile size (online/ring.go),
// or of an event from a clock far ahead.
func maxTile(w *window.View, clock, skew int64) int64 {
	return w.TileOf(clock+skew) + 1
}

// merge folds the events of group gi above the stored fence into the stored
// state: the merge function of the group's update.
func (b *batch) merge(a *Applier, gi int, st online.State) (online.Write, error) {
	g := &b.groups[gi]
	vp := a.views[g.view]
	w := vp.win
	vs := &b.views[g.view]
	evs := b.byGroup[g.start : g.start+g.n]
	fence := st.Fences[0]
	g.fence, g.fresh = fence, 0
	last := int64(-1)
	for j := range evs {
		if evs[j].Offset > fence {
			g.fresh++
			last = max(last, evs[j].Offset)
		}
	}
	if !st.Blind {
		g.merged = true
		g.blindable = b.blindable(g, vp, st)
		if !g.seen {
			g.before, g.seen = fence, true
		}
	}
	if g.fresh == 0 {
		return online.Write{}, nil
	}
	sets := len(b.sets)
	fields := st.Fields
	var moved []online.Field
	var deletes []string
	if w.HasPart(window.PartWindow) {
		// The hash's tiles are in another ring (the view's longest window,
		// the source's lateness or future skew changed) or in none
		// recorded: a tile written to its slot in this ring could take the
		// slot of a tile still read, or be dropped for one.
		// The ring also records the tile size: tiles of another tile size
		// are dropped, and of a hash that does not record it only the tiles
		// whose indexes can be of this tile size are kept.
		if stored := fields[len(fields)-1]; !st.Blind && st.Version > 0 && string(stored) != string(vs.rings) {
			if st.Tiles == nil {
				return online.Write{}, online.ErrNeedTiles
			}
			var err error
			if fields, moved, deletes, err = relayout(g, vp, st, stored); err != nil {
				return online.Write{}, fmt.Errorf("lay out the tiles of %s again: %w", g.entity, err)
			}
		}
		if string(fields[len(fields)-1]) != string(vs.rings) {
			b.sets = append(b.sets, online.Field{Name: online.RingField, Value: vs.rings})
		}
	}
	j := 0 // events of the current tile start here
	for i, k := range g.tiles {
		end := j
		for end < len(evs) && w.TileOf(evs[end].Time) == k {
			end++
		}
		if err := b.mergeSlot(vs.tile, k, g.maxTile, fields[i], g.fields[i], evs[j:end], fence); err != nil {
			return online.Write{}, fmt.Errorf("tile slot %s of %s: %w", g.fields[i], g.entity, err)
		}
		j = end
	}
	j = 0 // events of the current rollup tile start here: the events are by tile
	for ri, K := range g.rollups {
		end := j
		for end < len(evs) && w.RollupOf(w.TileOf(evs[end].Time)) == K {
			end++
		}
		i := len(g.tiles) + ri
		if err := b.mergeSlot(vs.rollup, K, w.RollupOf(g.maxTile), fields[i], g.fields[i], evs[j:end], fence); err != nil {
			return online.Write{}, fmt.Errorf("rollup tile slot %s of %s: %w", g.fields[i], g.entity, err)
		}
		j = end
	}
	at := len(g.tiles) + len(g.rollups)
	if vs.life != nil {
		ls := vs.life
		ls.Reset()
		if v := fields[at]; v != nil {
			if err := ls.UnmarshalBinary(v); err != nil {
				return online.Write{}, err
			}
		}
		for r := range evs {
			if evs[r].Offset > fence {
				ls.Add(&evs[r])
			}
		}
		start := len(b.enc)
		b.enc = ls.AppendBinary(b.enc)
		b.sets = append(b.sets, online.Field{Name: online.LifetimeField, Value: b.enc[start:len(b.enc):len(b.enc)]})
		at++
	}
	if vs.last != nil {
		lv := vs.last
		lv.Reset()
		if v := fields[at]; v != nil {
			if err := lv.UnmarshalBinary(v); err != nil {
				return online.Write{}, err
			}
		}
		for r := range evs {
			if evs[r].Offset > fence {
				lv.Add(&evs[r])
			}
		}
		start := len(b.enc)
		b.enc = lv.AppendBinary(b.enc)
		b.sets = append(b.sets, online.Field{Name: online.LastField, Value: b.enc[start:len(b.enc):len(b.enc)]})
	}
	// The tiles the events did not change go to their new slots too.
	for _, m := range moved {
		if !slices.ContainsFunc(b.sets[sets:], func(f online.Field) bool { return f.Name == m.Name }) {
			b.sets = append(b.sets, m)
		}
	}
	fences := len(b.fences)
	b.fences = append(b.fences, online.Fence{Partition: b.part[0], Offset: last})
	return online.Write{
		Delete: deletes,
		Set:    b.sets[sets:len(b.sets):len(b.sets)],
		Fences: b.fences[fences:len(b.fences):len(b.fences)],
		TTL:    vp.ttl,
	}, nil
}

// mergeSlot merges the events of run above fence into the state ts of
// tile (or rollup tile) k, stored in the slot value stored (nil when the
// slot is empty), and adds the write of field to the batch's sets. A slot
// holding a newer tile keeps it, and the events, which can no longer be
// read, are dropped, unless that tile is beyond maxK (group.maxTile, or
// its rollup tile): then it is of another tile size, or from a clock far
// ahead, and is overwritten. No event above the fence writes nothing.
func (b *batch) mergeSlot(ts *window.TileState, k, maxK int64, stored []byte, field string, run []window.Event, fence int64) error {
	ts.Reset(k)
	if stored != nil {
		sk, blob, err := online.DecodeSlot(stored)
		if err != nil {
			return err
		}
		if sk > k && sk <= maxK {
			return nil
		}
		if sk == k {
			if err := ts.UnmarshalBinary(blob); err != nil {
				return err
			}
		}
	}
	n := 0
	for r := range run {
		if run[r].Offset > fence {
			if err := ts.Add(&run[r]); err != nil {
				return err
			}
			n++
		}
	}
	if n > 0 {
		at := len(b.enc)
		b.enc = online.AppendSlot(b.enc, k, nil)
		b.enc = ts.AppendBinary(b.enc)
		b.sets = append(b.sets, online.Field{Name: field, Value: b.enc[at:len(b.enc):len(b.enc)]})
	}
	return nil
}

// relayout lays the hash's tiles (st.Tiles) out in the view's ring. Slot
// values move as they are, not decoded and encoded again: a process of
// other definitions (during a rolling registry change) may have written
// features this view lacks, whose state must stay. Of two tiles for one
// slot the newer stays, as in any write: the ring spans every tile still
// read or written by this view. Two copies of one tile, which writes before
// rings were recorded could leave in two slots, are merged (each holds
// events the other lacks). The rollup tiles of a view that keeps them are
// made again from the tiles, which hold every event of any rollup tile
// still read (ring.go), and those of another layout deleted.
//
// ring is the hash's RingField. Tile indexes of different tile sizes are
// not comparable, and a change of the tile size starts the windows from
// empty: if ring records another tile size, every tile and rollup tile is
// dropped; if it records none (written before it did), the tiles whose
// index is beyond g.maxTile, which cannot be of this tile size, are. A
// tile beyond g.maxTile of a hash of this tile size (from a clock far
// ahead) is placed after the others, so that it takes no slot of theirs.
//
// It returns the update's fields with the values of the tiles' slots in
// the new layout, the slots whose values change, and the tile fields to
// delete.
func relayout(g *group, vp *viewPlan, st online.State, ring []byte) (fields [][]byte, moved []online.Field, deletes []string, err error) {
	tile, known := online.RingTile(ring)
	other := known && tile != vp.win.Tile()
	tiles := make([]slotTile, 0, len(st.Tiles))
	at := map[int64]int{} // tile index: its place in tiles
	for _, f := range st.Tiles {
		if other || online.IsRollupSlotField(f.Name) {
			continue
		}
		k, _, err := online.DecodeSlot(f.Value)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("tile slot %s: %w", f.Name, err)
		}
		if !known && k > g.maxTile {
			continue
		}
		i, ok := at[k]
		if !ok {
			at[k] = len(tiles)
			tiles = append(tiles, slotTile{k, f.Value})
			continue
		}
		merged, err := mergeSlots(vp.win, k, tiles[i].value, f.Value)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("tile slot %s: %w", f.Name, err)
		}
		tiles[i].value = merged
	}
	// Newest first, those beyond g.maxTile last.
	slices.SortFunc(tiles, func(a, b slotTile) int {
		if ab, bb := a.k > g.maxTile, b.k > g.maxTile; ab != bb {
			if ab {
				return 1
			}
			return -1
		}
		return cmp.Compare(b.k, a.k)
	})
	placed := map[string][]byte{}
	for _, t := range tiles {
		if name := online.SlotField(t.k, vp.ring); placed[name] == nil {
			placed[name] = t.value
		}
	}
	if vp.ratio > 0 {
		if err := placeRollups(vp, tiles, placed); err != nil {
			return nil, nil, nil, err
		}
	}
	stored := map[string][]byte{}
	for _, f := range st.Tiles {
		stored[f.Name] = f.Value
		if placed[f.Name] == nil {
			deletes = append(deletes, f.Name)
		}
	}
	for name, v := range placed {
		if !bytes.Equal(stored[name], v) {
			moved = append(moved, online.Field{Name: name, Value: slices.Clone(v)})
		}
	}
	slices.SortFunc(moved, func(a, b online.Field) int { return cmp.Compare(a.Name, b.Name) })
	fields = slices.Clone(st.Fields)
	for i := range len(g.tiles) + len(g.rollups) {
		fields[i] = placed[g.fields[i]]
	}
	return fields, moved, deletes, nil
}

// slotTile is a tile slot's value and the index of the tile it holds.
type slotTile struct {
	k     int64
	value []byte
}

// placeRollups makes the rollup tiles of the given tiles, one copy of each,
// newest first, and puts their slot values in placed, by field; of two
// rollup tiles for one slot, the newer stays.
func placeRollups(vp *viewPlan, tiles []slotTile, placed map[string][]byte) error {
	w := vp.win
	var rs *window.TileState
	flush := func() {
		if rs == nil || rs.IsEmpty() {
			return
		}
		name := online.RollupSlotField(rs.Index(), vp.rollupRing)
		if placed[name] == nil {
			placed[name] = rs.AppendBinary(online.AppendSlot(nil, rs.Index(), nil))
		}
	}
	ts := w.NewTileState(0)
	for _, t := range tiles {
		k := t.k
		_, blob, err := online.DecodeSlot(t.value)
		if err != nil {
			return err
		}
		ts.Reset(k)
		if err := ts.UnmarshalBinary(blob); err != nil {
			return fmt.Errorf("tile %d: %w", k, err)
		}
		if K := w.RollupOf(k); rs == nil || rs.Index() != K {
			flush()
			rs = w.NewRollupState(K)
		}
		if err := rs.MergeTile(ts); err != nil {
			return err
		}
	}
	flush()
	return nil
}

// mergeSlots merges two slot values of tile k, decoded with view w: two
// copies of one tile, which only writes made before rings were recorded
// can leave.
func mergeSlots(w *window.View, k int64, a, b []byte) ([]byte, error) {
	decode := func(v []byte) (*window.TileState, error) {
		_, blob, err := online.DecodeSlot(v)
		if err != nil {
			return nil, err
		}
		ts := w.NewTileState(k)
		return ts, ts.UnmarshalBinary(blob)
	}
	ta, err := decode(a)
	if err != nil {
		return nil, err
	}
	tb, err := decode(b)
	if err != nil {
		return nil, err
	}
	if err := ta.Merge(tb); err != nil {
		return nil, err
	}
	return ta.AppendBinary(online.AppendSlot(nil, k, nil)), nil
}

// blindable reports whether a blind write of group g would have gone through
// on the stored state st: the conditions of online.Update.Blind.
func (b *batch) blindable(g *group, vp *viewPlan, st online.State) bool {
	if st.Fences[0] >= g.first {
		return false
	}
	fields := st.Fields
	if vp.win.HasPart(window.PartWindow) {
		r := fields[len(fields)-1]
		if string(r) != string(b.views[g.view].rings) && (r != nil || st.Version > 0) {
			return false // another ring, or none recorded
		}
		fields = fields[:len(fields)-1]
	}
	for i, v := range fields {
		if v == nil {
			continue
		}
		if i >= len(g.tiles) {
			return false // lifetime state or last values
		}
		if sk, _, err := online.DecodeSlot(v); err != nil || sk == g.tiles[i] {
			return false
		}
	}
	return true
}

// learn updates each view's estimate of how many writes could go blind with
// the outcome of the batch's updates, once they are written.
func (b *batch) learn() {
	const weight = 0.3 // of the latest batch
	for vi := range b.views {
		ok, n := 0, 0
		for i := range b.groups {
			g := &b.groups[i]
			if g.view != vi {
				continue
			}
			n++
			if (g.blind && !g.merged) || (g.merged && g.blindable) {
				ok++
			}
		}
		if n > 0 {
			vs := &b.views[vi]
			vs.blindRate = (1-weight)*vs.blindRate + weight*float64(ok)/float64(n)
		}
	}
}
