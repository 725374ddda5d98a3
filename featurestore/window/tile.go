package window

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/featurestore/featurestore/featurestore"
)

// stateSet holds the states of the features of one part of a view, for one
// tile, for the lifetime, or for the last values. Features without events
// take no bytes in the encoding.
type stateSet struct {
	view  *View
	part  Part
	slots []slot
	sub   decoder // decodes one state's body; kept to avoid an allocation per state
	// other holds the states of features the view does not know, as
	// decoded (not by a projection, which never encodes), and otherBuf
	// their bodies: states written by other definitions of the view, as
	// during a rolling registry change, which a write must keep.
	other    []otherState
	otherBuf []byte
}

// otherState is a state of a feature the set's view does not know: its
// fingerprint, newest event time and body, otherBuf[start:end], kept as
// read, its times relative to the same base as the set's.
type otherState struct {
	fp         uint32
	newest     int64
	start, end int
}

type slot struct {
	st     State
	has    bool  // an event was added
	newest int64 // greatest event time added
}

func (v *View) newSet(p Part) stateSet {
	s := stateSet{view: v, part: p, slots: make([]slot, len(v.defs[p]))}
	for i, d := range v.defs[p] {
		s.slots[i].st = d.newState()
	}
	return s
}

func (s *stateSet) reset() {
	for i := range s.slots {
		sl := &s.slots[i]
		sl.st.Reset()
		sl.has, sl.newest = false, 0
	}
	s.other, s.otherBuf = s.other[:0], s.otherBuf[:0]
}

// hasOther reports whether the set holds a state of the feature of
// fingerprint fp, which its view does not know.
func (s *stateSet) hasOther(fp uint32) bool {
	for _, o := range s.other {
		if o.fp == fp {
			return true
		}
	}
	return false
}

// keepOther adds a state of a feature the view does not know.
func (s *stateSet) keepOther(fp uint32, newest int64, body []byte) {
	start := len(s.otherBuf)
	s.otherBuf = append(s.otherBuf, body...)
	s.other = append(s.other, otherState{fp: fp, newest: newest, start: start, end: len(s.otherBuf)})
}

func (s *stateSet) empty() bool {
	for i := range s.slots {
		if s.slots[i].has {
			return false
		}
	}
	return true
}

// add adds an event to the features that take it: those whose filter it
// passes and, except count and last values, that have a value in it. A last
// value takes a null (or mistyped) field as null.
func (s *stateSet) add(ev *Event) {
	key := ev.Key()
	for i, f := range s.view.defs[s.part] {
		if !f.filter.Match(ev) {
			continue
		}
		v := ev.Field(f.field)
		if f.field >= 0 && v.Kind() != f.in {
			if s.part != PartLastValue {
				continue
			}
			v = featurestore.Value{}
		}
		sl := &s.slots[i]
		sl.st.Add(v, key)
		if !sl.has || ev.Time > sl.newest {
			sl.has, sl.newest = true, ev.Time
		}
	}
}

func (s *stateSet) compatible(o *stateSet) error { return s.view.check(o) }

// check fails unless o has the layout of the view's states of its part: it
// was made by this view, or by one compiled from the same definitions.
func (v *View) check(o *stateSet) error {
	if o.view != v && (o.view.sig[o.part] != v.sig[o.part] || len(o.slots) != len(v.defs[o.part])) {
		return fmt.Errorf("%s state of view %q does not match view %q", o.part, o.view.name, v.name)
	}
	return nil
}

// merge adds the events of o. Of the states of features the view does not
// know, which it cannot merge, it keeps s's and adds those of o's features
// that s lacks.
func (s *stateSet) merge(o *stateSet) {
	s.mergeKnown(o)
	for _, ot := range o.other {
		if !s.hasOther(ot.fp) {
			s.keepOther(ot.fp, ot.newest, o.otherBuf[ot.start:ot.end])
		}
	}
}

// mergeKnown adds the events of o to the states of the view's features.
func (s *stateSet) mergeKnown(o *stateSet) {
	for i := range s.slots {
		sl, ol := &s.slots[i], &o.slots[i]
		if !ol.has {
			continue
		}
		sl.st.Merge(ol.st)
		if !sl.has || ol.newest > sl.newest {
			sl.has, sl.newest = true, ol.newest
		}
	}
}

// Encoding of a set: the version byte, the part, the number of states with
// events and, for each of those in view order, its fingerprint (4 bytes
// little-endian), its newest event time (varint, relative to the previous
// entry's, the first to base: states fed by the same events take one byte),
// and its body, preceded by its length (uvarint). A decoder skips states
// whose fingerprint it does not know in what it reads (they belong to
// another definition: a feature removed, or one that a process of newer
// definitions added during a rolling change) and keeps them, as they are,
// for the encoding: they follow the view's states, in the order read.
func (s *stateSet) appendBinary(b []byte, base int64) []byte {
	if s.view.projected {
		// Writing it back would drop every state the projection leaves out.
		panic(fmt.Sprintf("window: encoding a %s state of a projection of view %q", s.part, s.view.name))
	}
	n := len(s.other)
	for i := range s.slots {
		if s.slots[i].has {
			n++
		}
	}
	b = append(b, encodingVersion, byte(s.part))
	b = appendUvarint(b, uint64(n))
	prev := base
	for i, f := range s.view.defs[s.part] {
		sl := &s.slots[i]
		if !sl.has {
			continue
		}
		b = binary.LittleEndian.AppendUint32(b, f.fp)
		b = appendVarint(b, sl.newest-prev)
		prev = sl.newest
		// Reserve one byte for the length, the common case, and move the
		// body if it needs more.
		at := len(b)
		b = append(b, 0)
		b = sl.st.appendBody(b, base)
		size := len(b) - at - 1
		if size < 0x80 {
			b[at] = byte(size)
			continue
		}
		var lb [binary.MaxVarintLen64]byte
		ln := binary.PutUvarint(lb[:], uint64(size))
		b = append(b, lb[:ln-1]...)
		copy(b[at+ln:], b[at+1:at+1+size])
		copy(b[at:], lb[:ln])
	}
	for _, o := range s.other {
		b = binary.LittleEndian.AppendUint32(b, o.fp)
		b = appendVarint(b, o.newest-prev)
		prev = o.newest
		b = appendUvarint(b, uint64(o.end-o.start))
		b = append(b, s.otherBuf[o.start:o.end]...)
	}
	return b
}

// decode replaces the set with the one encoded in b; inTile bounds newest
// event times to [base, base+tile).
func (s *stateSet) decode(b []byte, base int64, inTile bool) error {
	s.reset()
	d := &decoder{b: b}
	if v := d.byte(); d.err == nil && v != encodingVersion {
		d.fail("unknown version %d", v)
	}
	if p := Part(d.byte()); d.err == nil && p != s.part {
		d.fail("%s state, want %s", p, s.part)
	}
	n := d.count(1<<20, 6)
	slots := s.view.slotOf[s.part]
	prev := base
	for range n {
		fp := d.uint32()
		newest := prev + d.varint()
		prev = newest
		size := d.count(len(b), 1)
		body := d.bytes(size)
		if d.err != nil {
			break
		}
		i, known := slots[fp]
		if !known {
			if !s.view.projected {
				s.keepOther(fp, newest, body)
			}
			continue
		}
		sl := &s.slots[i]
		switch {
		case sl.has:
			d.fail("feature %q twice", s.view.defs[s.part][i].name)
		case inTile && (newest < base || newest-base >= s.view.tile):
			d.fail("feature %q: event time %d outside the tile", s.view.defs[s.part][i].name, newest)
		}
		if d.err != nil {
			break
		}
		f := s.view.defs[s.part][i]
		s.sub = decoder{b: body}
		sub := &s.sub
		sl.st.decodeBody(sub, base)
		if l, ok := sl.st.(*Last); ok && sub.err == nil {
			// Last keeps any value; the feature only values of its field's
			// kind, and null for a last value.
			if v, _ := l.Result(); v.Kind() != f.in && !(v.IsNull() && s.part == PartLastValue) {
				sub.fail("value of kind %s for a field of kind %s", v.Kind(), f.in)
			}
		}
		if err := sub.end(); err != nil {
			s.reset()
			return fmt.Errorf("feature %q: %w", f.name, err)
		}
		sl.has, sl.newest = true, newest
	}
	if err := d.end(); err != nil {
		s.reset()
		return err
	}
	return nil
}

// TileState holds the states of a view's windowed features for the events
// of one tile.
type TileState struct {
	set   stateSet
	index int64
}

// NewTileState returns an empty state of tile k for the view.
func (v *View) NewTileState(k int64) *TileState {
	return &TileState{set: v.newSet(PartWindow), index: k}
}

// Index returns the tile's index.
func (t *TileState) Index() int64 { return t.index }

// Start returns the first millisecond of the tile.
func (t *TileState) Start() int64 { return t.index * t.set.view.tile }

// Reset empties the state and makes it the state of tile k, keeping its
// buffers.
func (t *TileState) Reset(k int64) {
	t.set.reset()
	t.index = k
}

// IsEmpty reports whether no feature of the tile has an event.
func (t *TileState) IsEmpty() bool { return t.set.empty() }

// ErrWrongTile is returned when an event or a state is added to the state of
// another tile.
var ErrWrongTile = errors.New("wrong tile")

// Add adds an event of the tile.
func (t *TileState) Add(ev *Event) error {
	if k := t.set.view.TileOf(ev.Time); k != t.index {
		return fmt.Errorf("add event at %d to tile %d: %w (it is in tile %d)", ev.Time, t.index, ErrWrongTile, k)
	}
	t.set.add(ev)
	return nil
}

// Merge adds the events of o, a state of the same tile of the same view
// that holds none of the events already in t. Of the states of features
// the view does not know (UnmarshalBinary), which cannot be merged, t keeps
// its own and takes those of o's features it lacks.
func (t *TileState) Merge(o *TileState) error {
	if err := t.set.compatible(&o.set); err != nil {
		return err
	}
	if o.index != t.index {
		return fmt.Errorf("merge tile %d into tile %d: %w", o.index, t.index, ErrWrongTile)
	}
	t.set.merge(&o.set)
	return nil
}

// MergeTile adds the events of o, the state of a tile of the view, to t,
// the state of the rollup tile that holds it (View.NewRollupState), which
// holds none of o's events already. The states of features the view does
// not know are left out: a rollup tile holds the view's features only.
func (t *TileState) MergeTile(o *TileState) error {
	if err := t.set.compatible(&o.set); err != nil {
		return err
	}
	g, og := t.set.view.tile, o.set.view.tile
	if g <= og || g%og != 0 || TileOf(o.index, g/og) != t.index {
		return fmt.Errorf("merge tile %d of %dms into tile %d of %dms: %w", o.index, og, t.index, g, ErrWrongTile)
	}
	// The states of features the view does not know cannot be merged:
	// the rollup tile holds the view's features only.
	t.set.mergeKnown(&o.set)
	return nil
}

// AppendBinary appends the encoding of the tile's states; the tile index is
// not part of it.
func (t *TileState) AppendBinary(b []byte) []byte { return t.set.appendBinary(b, t.Start()) }

// UnmarshalBinary replaces the states with those encoded in b, which must
// be the encoding of the same tile (see Reset). States of features the view
// does not have (any more, or yet: written by other definitions during a
// rolling change) are not read, but kept as they are (unless the view is a
// projection) for AppendBinary, and for Merge of another copy of the tile;
// features without state are empty. Corrupt input is an error wrapping
// ErrCorrupt; the state is then empty.
func (t *TileState) UnmarshalBinary(b []byte) error {
	if err := t.set.decode(b, t.Start(), true); err != nil {
		return fmt.Errorf("decode tile %d of view %q: %w", t.index, t.set.view.name, err)
	}
	return nil
}

// LifetimeState holds the states of a view's lifetime aggregations.
type LifetimeState struct {
	set stateSet
}

// NewLifetimeState returns an empty lifetime state for the view.
func (v *View) NewLifetimeState() *LifetimeState {
	return &LifetimeState{set: v.newSet(PartLifetime)}
}

// Add adds an event.
func (l *LifetimeState) Add(ev *Event) { l.set.add(ev) }

// Merge adds the events of o, a state of the same view that holds none of
// the events already in l.
func (l *LifetimeState) Merge(o *LifetimeState) error {
	if err := l.set.compatible(&o.set); err != nil {
		return err
	}
	l.set.merge(&o.set)
	return nil
}

// Reset empties the state.
func (l *LifetimeState) Reset() { l.set.reset() }

// IsEmpty reports whether no feature has an event.
func (l *LifetimeState) IsEmpty() bool { return l.set.empty() }

// AppendBinary appends the encoding of the states.
func (l *LifetimeState) AppendBinary(b []byte) []byte { return l.set.appendBinary(b, 0) }

// UnmarshalBinary replaces the states with those encoded in b, as
// TileState.UnmarshalBinary does.
func (l *LifetimeState) UnmarshalBinary(b []byte) error {
	if err := l.set.decode(b, 0, false); err != nil {
		return fmt.Errorf("decode lifetime state of view %q: %w", l.set.view.name, err)
	}
	return nil
}

// LastValues holds the newest event's value of each last-value feature.
type LastValues struct {
	set stateSet
}

// NewLastValues returns an empty state for the view's last values.
func (v *View) NewLastValues() *LastValues {
	return &LastValues{set: v.newSet(PartLastValue)}
}

// Add adds an event.
func (l *LastValues) Add(ev *Event) { l.set.add(ev) }

// Merge keeps, for each feature, the newer of the two newest events.
func (l *LastValues) Merge(o *LastValues) error {
	if err := l.set.compatible(&o.set); err != nil {
		return err
	}
	l.set.merge(&o.set)
	return nil
}

// Reset empties the state.
func (l *LastValues) Reset() { l.set.reset() }

// IsEmpty reports whether no feature has an event.
func (l *LastValues) IsEmpty() bool { return l.set.empty() }

// Newest returns the greatest event time held, and whether there is one.
// With a TTL, nothing in the state is served after Newest()+TTL: a store can
// let it expire then.
func (l *LastValues) Newest() (int64, bool) {
	var t int64
	has := false
	for _, sl := range l.set.slots {
		if sl.has && (!has || sl.newest > t) {
			t, has = sl.newest, true
		}
	}
	return t, has
}

// AppendBinary appends the encoding of the states.
func (l *LastValues) AppendBinary(b []byte) []byte { return l.set.appendBinary(b, 0) }

// UnmarshalBinary replaces the states with those encoded in b, as
// TileState.UnmarshalBinary does.
func (l *LastValues) UnmarshalBinary(b []byte) error {
	if err := l.set.decode(b, 0, false); err != nil {
		return fmt.Errorf("decode last values of view %q: %w", l.set.view.name, err)
	}
	return nil
}
