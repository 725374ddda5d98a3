package window

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/featurestore/featurestore/featurestore"
)

// Status tells whether a feature has a value at a read time, and if not,
// why. The numbers are those of the serving API's FeatureStatus.
type Status uint8

// The statuses of a feature value.
const (
	// StatusPresent: the value is set. Count, sum and count_distinct are
	// always present (0 over no events), and so is last_n (an empty list).
	StatusPresent Status = 1
	// StatusNotFound: no value: a last value without any event, or a mean,
	// min, max, stddev or last over no events.
	StatusNotFound Status = 2
	// StatusExpired: the newest event of a last value is older than the TTL.
	StatusExpired Status = 3
	// StatusNull: the newest event of a last value has no value (null or
	// absent) for the feature's field.
	StatusNull Status = 4
	// StatusError: no value: the state the value would be read from does
	// not decode. A Reader never gives it; the online store's reads do
	// (online.ReadBuffer.ReadViews), for every feature of the view.
	StatusError Status = 5
)

func (s Status) String() string {
	switch s {
	case StatusPresent:
		return "present"
	case StatusNotFound:
		return "not found"
	case StatusExpired:
		return "expired"
	case StatusNull:
		return "null"
	case StatusError:
		return "error"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// FeatureValue is the value of one feature at a read time.
type FeatureValue struct {
	// Value is set iff Status is StatusPresent.
	Value  featurestore.Value
	Status Status
	// EventTime is, for a last value, the event time of the newest event
	// (also when expired or null); for an aggregation, the greatest event
	// time among the events it aggregated. HasEventTime is false when no
	// event is involved (such as a count of zero).
	EventTime    int64
	HasEventTime bool
	// Covered is the interval of event time the value is computed from:
	// Covered(t, W, g) for a window, [Unbounded, t+1) for a lifetime, and
	// for a last value [t-TTL, t+1) with a TTL, [Unbounded, t+1) without.
	Covered Interval
}

// Reader reads a view's features at a time from its states. It keeps
// buffers between reads, so it is not safe for concurrent use; use one per
// goroutine, or a sync.Pool.
type Reader struct {
	view    *View
	scratch []State      // per windowed state, merges the tiles
	empty   []State      // per lifetime state, the result without state
	present []*TileState // the given tiles a read needs, newest first
	out     []FeatureValue
	// With rollup tiles (ReadRollups): per windowed state, the merge of the
	// tiles after the last whole rollup tile and the rollup tiles, and the
	// merge of that with the tiles before the first one; the given rollup
	// tiles a read needs, newest first.
	base, whole []State
	rollups     []*TileState
}

// NewReader returns a Reader for the view.
func (v *View) NewReader() *Reader {
	r := &Reader{view: v, out: make([]FeatureValue, len(v.features))}
	for _, d := range v.defs[PartWindow] {
		r.scratch = append(r.scratch, d.newState())
	}
	for _, d := range v.defs[PartLifetime] {
		r.empty = append(r.empty, d.newState())
	}
	if v.rollup > 0 {
		for _, d := range v.defs[PartWindow] {
			r.base, r.whole = append(r.base, d.newState()), append(r.whole, d.newState())
		}
	}
	return r
}

// Read returns every feature of the view at time t, in the order of
// View.Features, computed from tiles (each tile index at most once, in any
// order; tiles outside TilesNeeded(t) are ignored, missing tiles are empty),
// the lifetime state and the last values (nil for empty). The states must
// hold no event later than t in the tile of t, the lifetime state and the last
// values (see the package documentation). The result is valid until the
// next Read; its values do not refer to the Reader's buffers.
func (r *Reader) Read(t int64, tiles []*TileState, life *LifetimeState, last *LastValues) ([]FeatureValue, error) {
	return r.read(t, tiles, nil, false, life, last)
}

// ReadRollups is Read from tiles and rollup tiles (NewRollupState) of a
// view that keeps them: a window merges the rollup tiles it covers whole
// and the tiles at its ends (ReadPlan), which gives the values Read gives
// from every tile, bit for bit: every state merges exactly. Each rollup tile
// must hold the events of all its tiles, and every rollup tile of
// ReadPlan(t) with events must be given (each index at most once, in any
// order), with the tiles of ReadPlan(t); other tiles are ignored.
func (r *Reader) ReadRollups(t int64, tiles, rollups []*TileState, life *LifetimeState, last *LastValues) ([]FeatureValue, error) {
	if r.view.rollup == 0 {
		return nil, fmt.Errorf("view %q keeps no rollup tiles", r.view.name)
	}
	return r.read(t, tiles, rollups, true, life, last)
}

func (r *Reader) read(t int64, tiles, rollups []*TileState, useRollups bool, life *LifetimeState, last *LastValues) ([]FeatureValue, error) {
	v := r.view
	// Newest first: each state merges tiles back in time, and the features
	// reading it take their results as their windows end.
	// Only the tiles given are visited, not every slot of the longest
	// window: a week of 5-minute tiles is 2016 slots, most of them empty.
	need := v.TilesNeeded(t)
	r.present = r.present[:0]
	for _, ts := range tiles {
		if ts == nil {
			continue
		}
		if err := v.check(&ts.set); err != nil {
			return nil, err
		}
		if need.Contains(ts.index) {
			r.present = append(r.present, ts)
		}
	}
	newestFirst := func(a, b *TileState) int { return cmp.Compare(b.index, a.index) }
	if !slices.IsSortedFunc(r.present, newestFirst) {
		if slices.IsSortedFunc(r.present, func(a, b *TileState) int { return newestFirst(b, a) }) {
			slices.Reverse(r.present) // export gives them oldest first
		} else {
			slices.SortFunc(r.present, newestFirst)
		}
	}
	if useRollups {
		r.rollups = r.rollups[:0]
		for _, ts := range rollups {
			if ts == nil {
				continue
			}
			if err := v.coarse.check(&ts.set); err != nil {
				return nil, err
			}
			if ts.set.view.tile != v.rollup {
				return nil, fmt.Errorf("tile state of view %q given as a rollup tile", v.name)
			}
			r.rollups = append(r.rollups, ts)
		}
		slices.SortFunc(r.rollups, newestFirst)
	}
	for _, d := range v.defs[PartWindow] {
		r.readWindows(d, t, need.Last, useRollups)
	}
	for _, d := range v.defs[PartLifetime] {
		sl := &slot{st: r.empty[d.slot]}
		if life != nil {
			if err := v.check(&life.set); err != nil {
				return nil, err
			}
			if life.set.slots[d.slot].has {
				sl = &life.set.slots[d.slot]
			}
		}
		res := readAggregate(sl)
		res.Covered = Interval{Start: Unbounded, End: t + 1}
		for _, i := range d.features {
			r.out[i] = res
		}
	}
	for _, d := range v.defs[PartLastValue] {
		if last != nil {
			if err := v.check(&last.set); err != nil {
				return nil, err
			}
		}
		res := v.readLast(d, t, last)
		for _, i := range d.features {
			r.out[i] = res
		}
	}
	return r.out, nil
}

// readWindows merges the tiles of a state, newest first, and reads each
// feature of the state when the merge reaches the start of its window.
// With rollups, the features whose windows cover a rollup tile whole are
// read from rollup tiles and the tiles at their ends (readRollups).
func (r *Reader) readWindows(d *stateDef, t, k int64, rollups bool) {
	acc := r.scratch[d.slot]
	acc.Reset()
	merged := slot{st: acc}
	next := 0 // in r.present
	for fi, i := range d.features {
		f := &r.view.features[i]
		if rollups {
			if cLo, cHi := r.view.split(k, f.tiles); cLo <= cHi {
				r.readRollups(d, d.features[fi:], t, k)
				return
			}
		}
		// Features come by window length, so each takes the tiles of the
		// one before and those up to its own start.
		for ; next < len(r.present) && k-r.present[next].index < f.tiles; next++ {
			sl := &r.present[next].set.slots[d.slot]
			if !sl.has {
				continue
			}
			acc.Merge(sl.st)
			if !merged.has || sl.newest > merged.newest {
				merged.has, merged.newest = true, sl.newest
			}
		}
		res := readAggregate(&merged)
		res.Covered = Interval{Start: (k - f.tiles + 1) * r.view.tile, End: t + 1}
		r.out[i] = res
	}
}

// readRollups reads the features of state d, by window length, whose
// windows each cover at least one rollup tile whole, at t in tile k. They
// share the tiles after the last whole rollup tile and rollup tiles back
// to each one's first (base); each adds the tiles before its first.
func (r *Reader) readRollups(d *stateDef, features []int, t, k int64) {
	v := r.view
	rt := v.rollup / v.tile
	_, cHi := v.split(k, 1)
	base, whole := r.base[d.slot], r.whole[d.slot]
	base.Reset()
	based := slot{st: base}
	add := func(acc *slot, sl *slot) {
		if !sl.has {
			return
		}
		acc.st.Merge(sl.st)
		if !acc.has || sl.newest > acc.newest {
			acc.has, acc.newest = true, sl.newest
		}
	}
	for _, ts := range r.present {
		if ts.index < (cHi+1)*rt {
			break // newest first
		}
		add(&based, &ts.set.slots[d.slot])
	}
	nextRollup := 0
	for _, i := range features {
		f := &v.features[i]
		cLo, _ := v.split(k, f.tiles)
		for ; nextRollup < len(r.rollups) && r.rollups[nextRollup].index >= cLo; nextRollup++ {
			if r.rollups[nextRollup].index <= cHi {
				add(&based, &r.rollups[nextRollup].set.slots[d.slot])
			}
		}
		whole.Reset()
		merged := slot{st: whole}
		add(&merged, &based)
		first, end := k-f.tiles+1, cLo*rt // the tiles before the first rollup tile
		at, _ := slices.BinarySearchFunc(r.present, end-1, func(ts *TileState, x int64) int { return cmp.Compare(x, ts.index) })
		for ; at < len(r.present) && r.present[at].index >= first; at++ {
			add(&merged, &r.present[at].set.slots[d.slot])
		}
		res := readAggregate(&merged)
		res.Covered = Interval{Start: first * v.tile, End: t + 1}
		r.out[i] = res
	}
}

// readAggregate reads an aggregation's state.
func readAggregate(sl *slot) FeatureValue {
	res := FeatureValue{Status: StatusNotFound}
	if val, ok := sl.st.Result(); ok {
		res.Value, res.Status = val, StatusPresent
	}
	if sl.has {
		res.EventTime, res.HasEventTime = sl.newest, true
	}
	return res
}

func (v *View) readLast(d *stateDef, t int64, last *LastValues) FeatureValue {
	res := FeatureValue{Status: StatusNotFound, Covered: Interval{Start: Unbounded, End: t + 1}}
	if v.ttl > 0 {
		res.Covered.Start = t - v.ttl
	}
	if last == nil {
		return res
	}
	sl := &last.set.slots[d.slot]
	if !sl.has {
		return res
	}
	res.EventTime, res.HasEventTime = sl.newest, true
	val, _ := sl.st.Result()
	switch {
	case Expired(t, sl.newest, v.ttl):
		res.Status = StatusExpired
	case val.IsNull():
		res.Status = StatusNull
	default:
		res.Value, res.Status = val, StatusPresent
	}
	return res
}
