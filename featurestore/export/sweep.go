package export

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

// group is the unit of computation: the rows of one entity whose keys fall
// in one bucket, and the events of the entity's views with those keys.
type group struct {
	entity *entityPlan
	level  int
	rows   []spillFile
	events [][]spillFile // per view of the entity, in entity.views order
}

// memory returns about how many bytes computing the group holds at once:
// the spilled batches, the sort references, the key table, and the
// results. Events are spilled only for keys the table's Bloom filter
// holds, so the group's distinct keys are about as many as its rows: the
// key table is counted per row (keyBytes), and its index per event (4
// bytes, while the references are made).
func (g *group) memory() int64 {
	var n int64
	rowBytes := int64(8)
	for _, c := range g.entity.columns {
		rowBytes += int64(sizeOfKind(c.kind))
	}
	for _, f := range g.rows {
		n += f.bytes + f.rows*(rowRefSize+keyBytes+2*rowBytes)
	}
	for _, fs := range g.events {
		for _, f := range fs {
			n += f.bytes + f.rows*(evRefSize+4)
		}
	}
	return n
}

func (g *group) rowCount() int64 {
	var n int64
	for _, f := range g.rows {
		n += f.rows
	}
	return n
}

// keyRef is a spill key with its hash. Keys sort by hash first, which is
// much cheaper than comparing strings, then by their bytes: any total order
// serves, as long as rows and events use the same one.
type keyRef struct {
	h uint64
	s string
}

func newKeyRef(s string) keyRef {
	return keyRef{h: sortHash(unsafe.Slice(unsafe.StringData(s), len(s))), s: s}
}

// sortHash is the hash keys sort by: hashKey, rotated by half. The keys of
// one group share the top bits of hashKey (the buckets are ranges of it),
// and the sorts distribute by the top bits of the hash they sort by: with
// hashKey's own, a group's keys crowded into a fraction of the buckets.
func sortHash(key []byte) uint64 { return bits.RotateLeft64(hashKey(key), 32) }

func (k keyRef) compare(o keyRef) int {
	if k.h != o.h {
		return cmp.Compare(k.h, o.h)
	}
	return strings.Compare(k.s, o.s)
}

// sortRows sorts rows by key and time. Keys compare by hash alone, unless
// two keys of the group share a hash, which a check after the sort finds.
func sortRows(rows []rowRef) {
	sortByHash(rows, func(r *rowRef) uint64 { return r.key.h }, func(rs []rowRef) {
		slices.SortFunc(rs, func(a, b rowRef) int {
			if c := cmp.Compare(a.key.h, b.key.h); c != 0 {
				return c
			}
			return cmp.Compare(a.t, b.t)
		})
	})
	if oneKeyPerHash(rows, func(r *rowRef) keyRef { return r.key }) {
		return
	}
	slices.SortFunc(rows, func(a, b rowRef) int {
		if c := a.key.compare(b.key); c != 0 {
			return c
		}
		return cmp.Compare(a.t, b.t)
	})
}

// sortEventsByKey sorts events by key bytes and order key: the order when
// two keys among them share a hash. Their keys are in keys.
func sortEventsByKey(evs []evRef, keys []keyRef) {
	slices.SortFunc(evs, func(a, b evRef) int {
		if c := keys[a.key].compare(keys[b.key]); c != 0 {
			return c
		}
		return evCompare(&a, &b)
	})
}

// eventRefs returns the references of the events of spilled batches,
// sorted by key hash and order key, or by key bytes and order key if two
// keys share a hash (unique false). It distributes them by the top bits of
// their key hash as it makes them (a counting pass over the hashes, then
// each reference written straight to its bucket's place), which keeps
// their order within a bucket: the order the log was scanned in, in which
// a key's events mostly come in time order already, as Kafka partitions
// hold them, so that sorting a bucket is mostly merging a few runs.
//
// Keys are interned in kt as the batches are read in order, which finds
// keys sharing a hash while each key's bytes are in the cache, not by
// comparing each sorted event's key with the one before it, a cache miss
// each; unique is false if any keys of kt share a hash.
//
// Field inline (an index in the batches' fields, or -1), an int64 or
// double one, is copied into the references (evRef.val) while the batches
// are read in order, so that the sweep, which visits events in key order,
// does not read it from its batch at random.
func eventRefs(batches []evBatch, n int, inline int, kt *keyTable) (evs []evRef, unique bool) {
	nbits := 0
	if n >= radixMin {
		nbits = hashBucketBits(n)
	}
	shift := uint(64 - nbits)   // 64: one bucket
	refs := make([]int32, 0, n) // per event, its key in kt.keys
	end := make([]int, 1<<nbits+1)
	for _, b := range batches {
		keys := b.rec.Column(evKey).(*array.Binary)
		for i := range int(b.rec.NumRows()) {
			key := keys.Value(i)
			k := kt.add(sortHash(key), key)
			refs = append(refs, k)
			end[kt.keys[k].h>>shift+1]++
		}
	}
	for b := 1; b < len(end); b++ {
		end[b] += end[b-1]
	}
	next := slices.Clone(end[:len(end)-1])
	evs = make([]evRef, len(refs))
	k := 0
	for bi, b := range batches {
		times := b.rec.Column(evTime).(*array.Int64).Int64Values()
		parts := b.rec.Column(evPartition).(*array.Int32).Int32Values()
		offs := b.rec.Column(evOffset).(*array.Int64).Int64Values()
		vals, valid := inlineValues(b, inline)
		for i := range times {
			key := refs[k]
			k++
			h := kt.keys[key].h
			d := h >> shift
			e := &evs[next[d]]
			next[d]++
			*e = evRef{h: h, key: key, time: times[i], off: offs[i], part: parts[i], rec: int32(bi), i: int32(i)}
			if vals != nil {
				e.val, e.valid = uint64(vals[i]), valid == nil || valid.IsValid(i)
			}
		}
	}
	var tmp []evRef
	start := 0
	for _, e := range end[1:] {
		if e-start > 1 {
			tmp = sortEvRuns(evs[start:e], tmp)
		}
		start = e
	}
	if kt.shared {
		sortEventsByKey(evs, kt.keys)
		return evs, false
	}
	return evs, true
}

// inlineValues returns the values of field j of a batch as int64 (a
// double's bits), and the field's array if it has nulls; nil values if j
// is -1 or the field is not int64 or double.
func inlineValues(b evBatch, j int) (vals []int64, valid arrow.Array) {
	if j < 0 {
		return nil, nil
	}
	switch a := b.fields[j].(type) {
	case *array.Int64:
		vals = a.Int64Values()
	case *array.Float64:
		f := a.Float64Values()
		vals = unsafe.Slice((*int64)(unsafe.Pointer(unsafe.SliceData(f))), len(f))
	default:
		return nil, nil
	}
	if b.fields[j].NullN() > 0 {
		valid = b.fields[j]
	}
	return vals, valid
}

// keyTable interns a group's keys: the first key added with a hash is
// kept, and a later key with that hash and the same bytes gets its index
// and string, so that the rows and events of a key refer to one copy of
// its bytes (rows by their string, events by the index) and compare equal
// by their pointers. A key with the hash of another is kept apart, and
// shared records that it happened: it is added again at each occurrence
// (24 bytes each), which only keys whose 64-bit hashes collide within a
// group pay.
type keyTable struct {
	keys   []keyRef // the keys added once, and each occurrence of a key sharing another's hash
	slots  []int32  // open addressing by hash: 1 + an index in keys, or 0
	n      int      // keys in slots
	shift  uint     // 64 - log2(len(slots))
	shared bool     // two keys added have one hash
}

// add adds a key of hash h, and returns its index in t.keys. The key's
// string refers to key's bytes if it is new.
func (t *keyTable) add(h uint64, key []byte) int32 {
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
	}
	mask := len(t.slots) - 1
	for i := int((h * 0x9e3779b97f4a7c15) >> t.shift); ; i = (i + 1) & mask {
		k := t.slots[i]
		if k == 0 {
			t.keys = append(t.keys, keyRef{h: h, s: unsafe.String(unsafe.SliceData(key), len(key))})
			t.slots[i] = int32(len(t.keys))
			t.n++
			return int32(len(t.keys) - 1)
		}
		if r := &t.keys[k-1]; r.h == h {
			if r.s == string(key) {
				return k - 1
			}
			t.shared = true
			t.keys = append(t.keys, keyRef{h: h, s: unsafe.String(unsafe.SliceData(key), len(key))})
			return int32(len(t.keys) - 1)
		}
	}
}

// grow doubles the slots (from 1024) and places the keys again: those in
// slots come before any key sharing their hash, which stays out.
func (t *keyTable) grow() {
	size := max(2*len(t.slots), 1024)
	t.slots = make([]int32, size)
	t.shift = uint(64 - bits.Len(uint(size-1)))
	mask := size - 1
	for k, r := range t.keys {
		for i := int((r.h * 0x9e3779b97f4a7c15) >> t.shift); ; i = (i + 1) & mask {
			if t.slots[i] == 0 {
				t.slots[i] = int32(k + 1)
				break
			}
			if t.keys[t.slots[i]-1].h == r.h {
				break // a key sharing the hash of one in slots
			}
		}
	}
}

// maxRuns is the most ascending runs sortEvRuns merges; more go to the
// quicksort.
const maxRuns = 8

// sortEvRuns sorts events by evLess. Events that come in a few ascending
// runs (the order of a scan of the log) are merged, through tmp, which it
// returns grown for the next call; others are sorted by sortEvRefs.
func sortEvRuns(xs []evRef, tmp []evRef) []evRef {
	runs := 1
	for i := 1; i < len(xs); i++ {
		if evLess(&xs[i], &xs[i-1]) {
			if runs++; runs > maxRuns {
				sortEvRefs(xs)
				return tmp
			}
		}
	}
	// Merge the first run with the next, and so on: xs[:a] is sorted.
	a := runEnd(xs, 0)
	for a < len(xs) {
		b := runEnd(xs, a)
		tmp = append(tmp[:0], xs[:a]...)
		i, j, o := 0, a, 0
		for i < len(tmp) && j < b {
			if evLess(&xs[j], &tmp[i]) {
				xs[o] = xs[j]
				j++
			} else {
				xs[o] = tmp[i]
				i++
			}
			o++
		}
		copy(xs[o:], tmp[i:]) // what is left of xs[j:b] is in place
		a = b
	}
	return tmp
}

// runEnd returns the end of the ascending run that starts at i.
func runEnd(xs []evRef, i int) int {
	for i++; i < len(xs) && !evLess(&xs[i], &xs[i-1]); i++ {
	}
	return i
}

// evLess orders events by key hash and order key.
func evLess(a, b *evRef) bool {
	if a.h != b.h {
		return a.h < b.h
	}
	if a.time != b.time {
		return a.time < b.time
	}
	if a.part != b.part {
		return a.part < b.part
	}
	return a.off < b.off
}

// evCompare is evLess as a comparison.
func evCompare(a, b *evRef) int {
	return cmp.Or(cmp.Compare(a.h, b.h), cmp.Compare(a.time, b.time), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off))
}

// sortEvRefs sorts events by evLess: a quicksort (median of three, Hoare
// partition, so that runs of equal events split evenly) down to insertion
// sort of short runs; past a depth that only an adversarial input reaches,
// the rest goes to the library's pattern-defeating sort.
func sortEvRefs(xs []evRef) {
	depth := 2 * bits.Len(uint(len(xs)))
	for len(xs) > 12 {
		if depth == 0 {
			slices.SortFunc(xs, func(a, b evRef) int { return evCompare(&a, &b) })
			return
		}
		depth--
		last := len(xs) - 1
		m := len(xs) / 2
		// Median of xs[0], xs[m], xs[last] into xs[0], the pivot.
		if evLess(&xs[m], &xs[0]) {
			xs[m], xs[0] = xs[0], xs[m]
		}
		if evLess(&xs[last], &xs[m]) {
			xs[last], xs[m] = xs[m], xs[last]
			if evLess(&xs[m], &xs[0]) {
				xs[m], xs[0] = xs[0], xs[m]
			}
		}
		xs[0], xs[m] = xs[m], xs[0]
		pivot := xs[0]
		i, j := 1, last
		for {
			for i <= j && evLess(&xs[i], &pivot) {
				i++
			}
			for i <= j && evLess(&pivot, &xs[j]) {
				j--
			}
			if i >= j {
				break
			}
			xs[i], xs[j] = xs[j], xs[i]
			i++
			j--
		}
		xs[0], xs[j] = xs[j], xs[0]
		// Recurse into the shorter side, loop on the longer.
		if j < len(xs)-j {
			sortEvRefs(xs[:j])
			xs = xs[j+1:]
		} else {
			sortEvRefs(xs[j+1:])
			xs = xs[:j]
		}
	}
	for i := 1; i < len(xs); i++ {
		for k := i; k > 0 && evLess(&xs[k], &xs[k-1]); k-- {
			xs[k], xs[k-1] = xs[k-1], xs[k]
		}
	}
}

// radixMin is the length from which sortByHash distributes by hash first.
const radixMin = 4096

// sortByHash sorts xs with sortBucket, which must order by hash(x) first.
// Long slices are first distributed in place by the top bits of the hash
// (American flag sort: one pass to count, one to move each element to its
// bucket), so that the comparison sort runs on buckets of a few keys each:
// several times faster than sorting the whole slice by comparisons, with no
// extra memory but the bucket counts. (Distributing by 8 bits at a time,
// and long buckets again, was slower.)
func sortByHash[T any](xs []T, hash func(*T) uint64, sortBucket func([]T)) {
	if len(xs) < radixMin {
		sortBucket(xs)
		return
	}
	nbits := hashBucketBits(len(xs))
	shift := 64 - nbits
	next := make([]int, 1<<nbits)  // next free place of each bucket
	end := make([]int, 1<<nbits+1) // end[b] is the start of bucket b+1
	for i := range xs {
		end[hash(&xs[i])>>shift+1]++
	}
	for b := 1; b < len(end); b++ {
		end[b] += end[b-1]
	}
	copy(next, end[:len(next)]) // each bucket starts where the one before ends
	end = end[1:]
	for b := range next {
		for next[b] < end[b] {
			x := xs[next[b]]
			d := int(hash(&x) >> shift)
			for d != b { // carry x to its bucket, taking what was there
				xs[next[d]], x = x, xs[next[d]]
				next[d]++
				d = int(hash(&x) >> shift)
			}
			xs[next[b]] = x
			next[b]++
		}
	}
	start := 0
	for b := range end {
		if end[b]-start > 1 {
			sortBucket(xs[start:end[b]])
		}
		start = end[b]
	}
}

// hashBucketBits returns how many top bits of the hash distribute n
// elements: about 8 elements per bucket, at most 2^16 buckets.
func hashBucketBits(n int) int { return min(max(bits.Len(uint(n))-3, 8), 16) }

// oneKeyPerHash reports whether, in xs sorted by key hash, all the elements
// with one hash have one key.
func oneKeyPerHash[T any](xs []T, key func(*T) keyRef) bool {
	for i := 1; i < len(xs); i++ {
		if a, b := key(&xs[i-1]), key(&xs[i]); a.h == b.h && a.s != b.s {
			return false
		}
	}
	return true
}

// rowRef is an entity row in a group: its key, timestamp and number.
type rowRef struct {
	key keyRef
	t   int64
	row int64
}

// evRef is an event in a group: its key (hash, and index in the group's
// keyTable) and order key, where its fields are (batch and index), and the
// value of the field the sweep reads inline (viewSweep.inline): its int64
// value or double's bits, and whether it is not null. 56 bytes and no
// pointer: the references are moved and sorted without write barriers,
// and the collector does not scan them.
type evRef struct {
	h     uint64
	time  int64
	off   int64
	val   uint64
	key   int32
	part  int32
	rec   int32
	i     int32
	valid bool
}

const (
	rowRefSize = 48
	evRefSize  = 56
	// keyBytes is what keyTable holds per distinct key: its keyRef (24
	// bytes) and two to four slots, and the slack of the keys slice.
	keyBytes = 48
)

// evBatch is a spilled events batch with its columns typed.
type evBatch struct {
	rec    arrow.RecordBatch
	fields []arrow.Array
}

// viewSweep computes one view's features over a group's keys in order.
type viewSweep struct {
	vp      *viewPlan
	v       *window.View
	rd      *window.Reader
	evs     []evRef
	keys    []keyRef // of evs (evRef.key)
	unique  bool     // each key hash of evs names one key
	batches []evBatch
	pos     int // first event of the current key
	cur     int // next event to add
	end     int // end of the current key's events
	ev      window.Event
	res     []window.FeatureValue

	hasTiles bool
	// newestOnly: the view's reads depend on the newest events alone (see
	// window.View.NewestOnly), so only those are added before a read: the
	// events of the newest order key, one unless two topics share it.
	// lastFromNewest: its last values do (window.View.LastValuesFromNewest),
	// so only the newest of the events added for a read go to them.
	newestOnly, lastFromNewest bool
	// each lists the fields (indexes in vp.fields) read for every event
	// added, but inline; lastOnly those read, with lastFromNewest, for the
	// newest event of a read only: fields no aggregation reads.
	each, lastOnly []int
	// inline is the field (an index in vp.fields) read for every event
	// added from its reference (evRef.val), not its batch: the first
	// int64 or double field of those, or -1.
	inline     int
	inlineKind featurestore.Kind
	tiles      []*window.TileState // ascending tile index; none before the oldest a read still needs
	free       []*window.TileState
	life       *window.LifetimeState
	last       *window.LastValues
}

func newViewSweep(vp *viewPlan) *viewSweep {
	v := vp.win
	s := &viewSweep{vp: vp, v: v, rd: v.NewReader(), hasTiles: v.HasPart(window.PartWindow), newestOnly: v.NewestOnly(), lastFromNewest: v.LastValuesFromNewest(),
		life: v.NewLifetimeState(), last: v.NewLastValues(),
		ev: window.Event{Fields: make([]featurestore.Value, len(v.Fields()))}, inline: -1}
	agg := v.FieldsAggregated()
	for j, fi := range vp.fieldIdx {
		k := vp.fields[j].Kind
		switch {
		case s.lastFromNewest && !agg[fi]:
			s.lastOnly = append(s.lastOnly, j)
		case s.inline < 0 && (k == featurestore.KindInt64 || k == featurestore.KindDouble):
			s.inline, s.inlineKind = j, k
		default:
			s.each = append(s.each, j)
		}
	}
	return s
}

// readInline sets the inline field of s.ev to that of event e.
func (s *viewSweep) readInline(e *evRef) {
	var v featurestore.Value
	switch {
	case !e.valid:
	case s.inlineKind == featurestore.KindDouble:
		v = featurestore.DoubleValue(math.Float64frombits(e.val))
	default:
		v = featurestore.Int64Value(int64(e.val))
	}
	s.ev.Fields[s.vp.fieldIdx[s.inline]] = v
}

// load sets s.ev to event e: its order key and the fields read for every
// event added (each, and inline).
func (s *viewSweep) load(e *evRef) {
	s.ev.Time, s.ev.Partition, s.ev.Offset = e.time, e.part, e.off
	s.readFields(e, s.each)
	if s.inline >= 0 {
		s.readInline(e)
	}
}

// readFields sets the fields js of s.ev to those of event e.
func (s *viewSweep) readFields(e *evRef, js []int) {
	b := &s.batches[e.rec]
	for _, j := range js {
		s.ev.Fields[s.vp.fieldIdx[j]] = valueAt(b.fields[j], s.vp.fields[j].Kind, int(e.i))
	}
}

// startKey moves to the events of key, skipping those of smaller keys (keys
// with events and no rows), and empties the states.
func (s *viewSweep) startKey(key keyRef) {
	if s.unique {
		// Keys compare by hash alone, but for one check of the bytes: the
		// events with the key's hash are another key's if their first is.
		// Rows of keys sharing a hash come sorted by their bytes, so the
		// events stay where they are for the next row key.
		for s.pos < len(s.evs) && s.evs[s.pos].h < key.h {
			s.pos++
		}
		s.end = s.pos
		if s.pos < len(s.evs) && s.evs[s.pos].h == key.h && s.keys[s.evs[s.pos].key].s == key.s {
			for s.end < len(s.evs) && s.evs[s.end].h == key.h {
				s.end++
			}
		}
	} else {
		for s.pos < len(s.evs) && s.keys[s.evs[s.pos].key].compare(key) < 0 {
			s.pos++
		}
		s.end = s.pos
		for s.end < len(s.evs) && s.keys[s.evs[s.end].key] == key {
			s.end++
		}
	}
	s.cur = s.pos
	s.free = append(s.free, s.tiles...)
	s.tiles = s.tiles[:0]
	s.life.Reset()
	s.last.Reset()
}

// newestRun returns the first of the events in [from, to) that have the
// order key of the last one, to-1.
func (s *viewSweep) newestRun(from, to int) int {
	n := &s.evs[to-1]
	i := to - 1
	for i > from {
		e := &s.evs[i-1]
		if e.time != n.time || e.part != n.part || e.off != n.off {
			break
		}
		i--
	}
	return i
}

// readAt adds the key's events with event time <= t, in order, to the
// states, and reads the view at t. Rows of a key come in time order, so the
// states never hold an event after t: the condition the window Reader
// requires, and the point-in-time guarantee.
func (s *viewSweep) readAt(t int64) error {
	var need window.TileRange
	if s.hasTiles {
		need = s.v.TilesNeeded(t)
	}
	if s.newestOnly {
		// Skip to the newest events up to t (those of the newest order
		// key: events of two topics can share one): the events before
		// them change no read from now on.
		j := s.cur
		for j < s.end && s.evs[j].time <= t {
			j++
		}
		if j > s.cur {
			s.cur = s.newestRun(s.cur, j)
		}
	}
	first := s.cur
	for ; s.cur < s.end && s.evs[s.cur].time <= t; s.cur++ {
		e := &s.evs[s.cur]
		s.load(e)
		if s.hasTiles {
			// A tile before need.First is read neither now nor by a later
			// row of the key: skip it.
			if k := s.v.TileOf(e.time); k >= need.First {
				n := len(s.tiles)
				if n == 0 || s.tiles[n-1].Index() != k {
					s.tiles = append(s.tiles, s.tile(k))
					n++
				}
				if err := s.tiles[n-1].Add(&s.ev); err != nil {
					return err
				}
			}
		}
		s.life.Add(&s.ev)
		if !s.lastFromNewest {
			s.last.Add(&s.ev)
		}
	}
	if s.cur > first && s.lastFromNewest {
		// The newest events added: the last, still in s.ev but for the
		// fields only last values read, and any before it of the same
		// order key (the values decide between those).
		s.readFields(&s.evs[s.cur-1], s.lastOnly)
		s.last.Add(&s.ev)
		for i := s.newestRun(first, s.cur); i < s.cur-1; i++ {
			e := &s.evs[i]
			s.load(e)
			s.readFields(e, s.lastOnly)
			s.last.Add(&s.ev)
		}
	}
	if s.hasTiles {
		drop := 0
		for drop < len(s.tiles) && s.tiles[drop].Index() < need.First {
			drop++
		}
		if drop > 0 {
			s.free = append(s.free, s.tiles[:drop]...)
			s.tiles = append(s.tiles[:0], s.tiles[drop:]...)
		}
	}
	res, err := s.rd.Read(t, s.tiles, s.life, s.last)
	if err != nil {
		return fmt.Errorf("feature view %q: %w", s.vp.name, err)
	}
	s.res = res
	return nil
}

// tile returns an empty state of tile k, reusing a dropped one.
func (s *viewSweep) tile(k int64) *window.TileState {
	if n := len(s.free); n > 0 {
		ts := s.free[n-1]
		s.free = s.free[:n-1]
		ts.Reset(k)
		return ts
	}
	return s.v.NewTileState(k)
}

func (s *viewSweep) release() {
	for _, b := range s.batches {
		b.rec.Release()
	}
	s.batches = nil
}

// computeGroup computes the features of a group's rows and writes them,
// sorted by row number, to a results file.
func (x *exporter) computeGroup(ctx context.Context, g *group) (spillFile, error) {
	e := g.entity
	var rowRecs []arrow.RecordBatch
	defer func() {
		for _, r := range rowRecs {
			r.Release()
		}
	}()
	// The rows' and the events' keys, interned, so that comparing a row's
	// key with another row's or an event's finds them equal by their
	// pointers, not by reading their bytes. An event's key may refer to a
	// row's batch or another view's: all stay until the sweep is done.
	var kt keyTable
	rows := make([]rowRef, 0, g.rowCount())
	for _, f := range g.rows {
		err := readSpill(f, x.mem, func(rec arrow.RecordBatch) error {
			rec.Retain()
			rowRecs = append(rowRecs, rec)
			keys := rec.Column(0).(*array.Binary)
			ts := rec.Column(1).(*array.Int64).Int64Values()
			nums := rec.Column(2).(*array.Int64).Int64Values()
			for i := range ts {
				key := keys.Value(i)
				rows = append(rows, rowRef{key: kt.keys[kt.add(sortHash(key), key)], t: ts[i], row: nums[i]})
			}
			return nil
		})
		if err != nil {
			return spillFile{}, err
		}
	}
	sortRows(rows)
	sweeps := make([]*viewSweep, len(e.views))
	defer func() {
		for _, s := range sweeps {
			if s != nil {
				s.release()
			}
		}
	}()
	for vi, vp := range e.views {
		s := newViewSweep(vp)
		sweeps[vi] = s
		var n int64
		for _, f := range g.events[vi] {
			n += f.rows
		}
		for _, f := range g.events[vi] {
			err := readSpill(f, x.mem, func(rec arrow.RecordBatch) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				rec.Retain()
				s.batches = append(s.batches, evBatch{rec: rec, fields: rec.Columns()[evFields:]})
				return nil
			})
			if err != nil {
				return spillFile{}, err
			}
		}
		s.evs, s.unique = eventRefs(s.batches, int(n), s.inline, &kt)
	}
	for _, s := range sweeps {
		s.keys = kt.keys
	}

	direct := make([]*directColumn, len(e.columns))
	if x.direct != nil {
		direct = x.direct[e.index]
	}
	schema := resultsSchema(e, direct)
	out := array.NewRecordBuilder(x.mem, schema)
	defer out.Release()
	out.Reserve(len(rows))
	rowB := out.Field(0).(*array.Int64Builder)
	for a := 0; a < len(rows); {
		if err := ctx.Err(); err != nil {
			return spillFile{}, err
		}
		key := rows[a].key
		b := a + 1
		for b < len(rows) && rows[b].key == key {
			b++
		}
		for _, s := range sweeps {
			s.startKey(key)
		}
		for r := a; r < b; r++ {
			rowB.Append(rows[r].row)
			c := 1
			for _, s := range sweeps {
				// Rows of a key at the same time read the same values.
				if r == a || rows[r-1].t != rows[r].t {
					if err := s.readAt(rows[r].t); err != nil {
						return spillFile{}, fmt.Errorf("key %s at %d: %w", keyString([]byte(key.s)), rows[r].t, err)
					}
				}
				for _, col := range s.vp.columns {
					if d := direct[c-1]; d != nil {
						d.set(rows[r].row, &s.res[col.feature])
						out.Field(c).AppendNull() // the column is read from d
					} else {
						appendFeature(out.Field(c), col.kind, &s.res[col.feature])
					}
					c++
				}
			}
		}
		x.progress.add(phaseCompute, int64(b-a))
		a = b
	}
	swept := out.NewRecordBatch()
	defer swept.Release()
	for _, s := range sweeps {
		s.release()
	}
	if x.keep(swept, e) {
		return spillFile{}, nil
	}
	return x.writeSorted(swept, e, g)
}

// keep keeps a group's results in memory, and records where each row's
// are, if the export indexes rows and the spill memory has room.
func (x *exporter) keep(swept arrow.RecordBatch, e *entityPlan) bool {
	if x.at == nil || !x.keptMem.take(BatchBytes(swept)) {
		return false
	}
	swept.Retain()
	x.keptMu.Lock()
	bi := uint64(len(x.kept[e.index]))
	x.kept[e.index] = append(x.kept[e.index], swept)
	x.keptMu.Unlock()
	at := x.at[e.index]
	for i, row := range swept.Column(0).(*array.Int64).Int64Values() {
		at[row] = bi<<32 | uint64(i) // rows are distinct across groups
	}
	return true
}

// writeSorted writes a group's results in row number order.
func (x *exporter) writeSorted(swept arrow.RecordBatch, e *entityPlan, g *group) (spillFile, error) {
	n := int(swept.NumRows())
	nums := swept.Column(0).(*array.Int64).Int64Values()
	perm := make([]int32, n)
	for i := range perm {
		perm[i] = int32(i)
	}
	slices.SortFunc(perm, func(a, b int32) int { return cmp.Compare(nums[a], nums[b]) })
	p := newPartitioner(x.spillMem, x.dir, swept.Schema(), 0, 1, 1<<62, x.mem)
	bw := p.buckets[0]
	bw.b = array.NewRecordBuilder(x.mem, swept.Schema())
	bw.fields = bw.b.Fields()
	step := x.resultBatchRows(g)
	for start := 0; start < n; start += step {
		for _, i := range perm[start:min(start+step, n)] {
			bw.b.Field(0).(*array.Int64Builder).Append(nums[i])
			for c, col := range e.columns {
				appendFrom(bw.b.Field(c+1), col.kind, swept.Column(c+1), int(i))
			}
			bw.buffered++
			bw.out.rows++
		}
		if err := bw.flush(); err != nil {
			return spillFile{}, err
		}
	}
	files, err := p.close()
	if err != nil {
		return spillFile{}, err
	}
	return files[0], nil
}
