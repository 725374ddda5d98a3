package window

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// Part says which state of a view holds a feature.
type Part uint8

// The parts of a view's state.
const (
	PartWindow    Part = 1 // sliding-window aggregations: one TileState per tile
	PartLifetime  Part = 2 // lifetime aggregations: the LifetimeState
	PartLastValue Part = 3 // last values: the LastValues
)

func (p Part) String() string {
	switch p {
	case PartWindow:
		return "window"
	case PartLifetime:
		return "lifetime"
	case PartLastValue:
		return "last value"
	}
	return fmt.Sprintf("Part(%d)", uint8(p))
}

// View is a feature view compiled for computing: its features' states,
// filters and windows, resolved against the source's fields once. A View is
// immutable and safe for concurrent use.
//
// Features that differ only in name and window length share one state: the
// state of a tile does not depend on the windows that read it. So count over
// 10m, 1h and 1d keeps one count per tile, and a read merges the tiles once
// for all three, shortest window first.
type View struct {
	name     string
	tile     int64 // ms
	ttl      int64 // ms, 0 for none
	fields   []Field
	features []feature
	defs     [4][]*stateDef // the distinct states of each Part, in view order
	slotOf   [4]map[uint32]int
	sig      [4]uint64 // identifies the layout of each part's states
	maxTiles int64     // tiles of the longest window, 0 without windows
	infos    []FeatureInfo
	// projected marks a view made by Project: it holds only some states,
	// so it reads and never encodes.
	projected bool
	// rollup is the length of the view's rollup tiles in ms, a multiple of
	// tile, 0 for none; coarse is the view with tile rollup, which encodes
	// and decodes them (the same states and fingerprints).
	rollup int64
	coarse *View
}

// FeatureInfo describes one feature of a compiled view.
type FeatureInfo struct {
	Name        string
	Aggregation registry.Aggregation // empty for a last value
	Type        registry.ValueType   // of the value
	Kind        featurestore.Kind    // of the value
	Part        Part
	Window      int64 // window length in ms; 0 for lifetime and last values
}

type feature struct {
	FeatureInfo
	tiles int64     // window length in tiles
	def   *stateDef // the state the feature reads
}

// stateDef is what a state computes: everything of a feature but its name
// and window.
type stateDef struct {
	part      Part
	agg       registry.Aggregation
	in        featurestore.Kind // of the field; KindNull for count
	field     int               // index in Event.Fields; -1 for count
	filter    Filter
	n         int
	precision int
	fp        uint32 // fingerprint of the definition, which names the state in encodings
	slot      int    // index in its part
	name      string // of the first feature reading it, for messages
	features  []int  // indexes of the features reading it, shortest window first
}

// Compile compiles a feature view computed from src. It checks what it
// relies on (fields, types, windows, n, precision) whether or not the
// registry validated the view, and fills in the registry's defaults (tile 1m,
// precision 14) where they are unset.
func Compile(v *registry.FeatureView, src *registry.Source) (*View, error) {
	if src == nil {
		return nil, fmt.Errorf("feature view %q: no source", v.Name)
	}
	fields, err := SourceFields(src)
	if err != nil {
		return nil, fmt.Errorf("feature view %q: %w", v.Name, err)
	}
	tile := v.Tile.Std()
	if tile == 0 {
		tile = registry.DefaultTile.Std()
	}
	if tile < time.Millisecond || tile%time.Millisecond != 0 {
		return nil, fmt.Errorf("feature view %q: tile %s is not a positive whole number of milliseconds", v.Name, v.Tile)
	}
	if v.TTL < 0 || v.TTL.Std()%time.Millisecond != 0 {
		return nil, fmt.Errorf("feature view %q: ttl %s is not a whole number of milliseconds", v.Name, v.TTL)
	}
	cv := &View{name: v.Name, tile: tile.Milliseconds(), ttl: v.TTL.Std().Milliseconds(), fields: fields}
	names := map[string]bool{}
	for _, f := range v.Features {
		if names[f.Name] {
			return nil, fmt.Errorf("feature view %q: feature %q defined twice", v.Name, f.Name)
		}
		names[f.Name] = true
		cf, err := cv.compileFeature(f)
		if err != nil {
			return nil, fmt.Errorf("feature view %q: feature %q: %w", v.Name, f.Name, err)
		}
		cv.features = append(cv.features, cf)
	}
	seen := [4]map[string]*stateDef{}
	for i := range cv.features {
		f := &cv.features[i]
		p := f.Part
		if seen[p] == nil {
			seen[p], cv.slotOf[p] = map[string]*stateDef{}, map[uint32]int{}
		}
		id := cv.identity(f.def)
		if def, ok := seen[p][id]; ok {
			f.def = def // the same state as an earlier feature
		} else {
			f.def.fp, f.def.slot, f.def.name = uint32(xxhash.Sum64String(id)), len(cv.defs[p]), f.Name
			if _, dup := cv.slotOf[p][f.def.fp]; dup {
				return nil, fmt.Errorf("feature view %q: feature %q: fingerprint collision with another feature; change its definition", v.Name, f.Name)
			}
			seen[p][id] = f.def
			cv.slotOf[p][f.def.fp] = f.def.slot
			cv.defs[p] = append(cv.defs[p], f.def)
		}
		f.def.features = append(f.def.features, i)
		cv.maxTiles = max(cv.maxTiles, f.tiles)
		cv.infos = append(cv.infos, f.FeatureInfo)
	}
	for _, defs := range cv.defs {
		for _, def := range defs {
			slices.SortStableFunc(def.features, func(a, b int) int { return cmp.Compare(cv.features[a].tiles, cv.features[b].tiles) })
		}
	}
	cv.sign()
	if v.Rollup != 0 {
		g := v.Rollup.Std()
		if g%tile != 0 || g < 2*tile || g.Milliseconds() >= cv.MaxWindow() {
			return nil, fmt.Errorf("feature view %q: rollup %s is not a multiple of tile %s at least twice as long and shorter than the longest window", v.Name, v.Rollup, v.Tile)
		}
		cv.setRollup(g.Milliseconds())
	}
	return cv, nil
}

// setRollup gives v rollup tiles of g ms.
func (v *View) setRollup(g int64) {
	c := *v
	c.tile, c.rollup, c.coarse = g, 0, nil
	v.rollup, v.coarse = g, &c
}

// sign sets the signature of each part's states, from their fingerprints in
// order.
func (v *View) sign() {
	for p, defs := range v.defs {
		d := xxhash.New()
		for _, def := range defs {
			_, _ = d.Write(binary.LittleEndian.AppendUint32(nil, def.fp))
		}
		v.sig[p] = d.Sum64()
	}
}

// Project returns a view that reads only some of v's features, given by
// their indexes in Features, for reads that need only those: a lookup of a
// 10-minute count need not merge, nor decode, a day of tiles and their
// sketches. The projection has v's Features, so results keep their indexes,
// but only the states the given features read, and their longest window
// (TilesNeeded, MaxWindow). Decoding a tile, lifetime or last values with it
// skips the bodies of the other states; its Reader returns the given
// features as v's does, from the same tiles merged in the same order, and
// zero FeatureValues for the others.
//
// A projection only reads: its states lack the others' events, so encoding
// one (AppendBinary) panics. With every feature given, Project returns v.
func (v *View) Project(features []int) (*View, error) {
	keep := make([]bool, len(v.features))
	n := 0
	for _, i := range features {
		if i < 0 || i >= len(v.features) {
			return nil, fmt.Errorf("project view %q: feature index %d out of range [0, %d)", v.name, i, len(v.features))
		}
		if !keep[i] {
			keep[i] = true
			n++
		}
	}
	if n == len(v.features) && !v.projected {
		return v, nil
	}
	pv := &View{name: v.name, tile: v.tile, ttl: v.ttl, fields: v.fields, infos: v.infos, projected: true}
	pv.features = slices.Clone(v.features)
	for p, defs := range v.defs {
		pv.slotOf[p] = map[uint32]int{}
		for _, d := range defs {
			kept := slices.DeleteFunc(slices.Clone(d.features), func(i int) bool { return !keep[i] })
			if len(kept) == 0 {
				continue
			}
			nd := *d
			nd.slot, nd.features = len(pv.defs[p]), kept
			pv.slotOf[p][nd.fp] = nd.slot
			pv.defs[p] = append(pv.defs[p], &nd)
			for _, i := range kept {
				pv.features[i].def = &nd
				pv.maxTiles = max(pv.maxTiles, pv.features[i].tiles)
			}
		}
	}
	for i := range pv.features {
		if !keep[i] {
			pv.features[i].def = nil // read by no state of the projection
		}
	}
	pv.sign()
	if v.rollup > 0 {
		pv.setRollup(v.rollup)
	}
	return pv, nil
}

// Projected reports whether v was made by Project, and so reads only some
// of its features.
func (v *View) Projected() bool { return v.projected }

var errNoField = errors.New("needs field")

func (v *View) compileFeature(f *registry.Feature) (feature, error) {
	d := &stateDef{agg: f.Aggregation, field: -1, n: f.N, precision: f.Precision}
	cf := feature{FeatureInfo: FeatureInfo{Name: f.Name, Aggregation: f.Aggregation}, def: d}
	if f.Field != "" {
		d.field = fieldIndex(v.fields, f.Field)
		if d.field < 0 {
			return feature{}, fmt.Errorf("field %q is not declared by the source", f.Field)
		}
		d.in = v.fields[d.field].Kind
	}
	var inTypes []featurestore.Kind
	num := []featurestore.Kind{featurestore.KindInt64, featurestore.KindDouble}
	scalars := []featurestore.Kind{featurestore.KindString, featurestore.KindInt64, featurestore.KindDouble, featurestore.KindBool}
	switch f.Aggregation {
	case registry.AggCount:
		if f.Field != "" {
			return feature{}, errors.New("count takes no field")
		}
		cf.Kind = featurestore.KindInt64
	case registry.AggSum, registry.AggMin, registry.AggMax:
		inTypes, cf.Kind = num, d.in
	case registry.AggMean, registry.AggStddev:
		inTypes, cf.Kind = num, featurestore.KindDouble
	case registry.AggCountDistinct:
		inTypes, cf.Kind = []featurestore.Kind{featurestore.KindString, featurestore.KindInt64, featurestore.KindBool}, featurestore.KindInt64
		if d.precision == 0 {
			d.precision = registry.DefaultPrecision
		}
		if d.precision < registry.MinPrecision || d.precision > registry.MaxPrecision {
			return feature{}, fmt.Errorf("precision %d out of range %d..%d", d.precision, registry.MinPrecision, registry.MaxPrecision)
		}
	case registry.AggLast, registry.AggNone:
		inTypes, cf.Kind = scalars, d.in
	case registry.AggLastN:
		inTypes, cf.Kind = scalars, d.in.ListOf()
		if d.n < 1 || d.n > registry.MaxLastN {
			return feature{}, fmt.Errorf("last_n needs n from 1 to %d, got %d", registry.MaxLastN, d.n)
		}
	default:
		return feature{}, fmt.Errorf("unknown aggregation %q", f.Aggregation)
	}
	if f.Aggregation != registry.AggCount {
		if f.Field == "" {
			return feature{}, errNoField
		}
		if !slices.Contains(inTypes, d.in) {
			return feature{}, fmt.Errorf("%s cannot take field %q of type %s", aggName(f.Aggregation), f.Field, d.in)
		}
	}
	cf.Type = registry.ValueType(cf.Kind.String())
	if f.Type != "" && f.Type != cf.Type {
		return feature{}, fmt.Errorf("type %s does not match the value type %s", f.Type, cf.Type)
	}
	w := f.Window.Length.Std()
	switch {
	case f.Aggregation == registry.AggNone:
		if !f.Window.IsZero() {
			return feature{}, errors.New("a last value takes no window")
		}
		cf.Part = PartLastValue
	case f.Window.Lifetime:
		cf.Part = PartLifetime
	case w <= 0 || w%time.Duration(v.tile*int64(time.Millisecond)) != 0:
		return feature{}, fmt.Errorf("window %s is not a positive multiple of tile %dms", f.Window, v.tile)
	case w.Milliseconds()/v.tile > registry.MaxTilesPerWindow:
		return feature{}, fmt.Errorf("window %s spans more than %d tiles", f.Window, registry.MaxTilesPerWindow)
	default:
		cf.Part, cf.Window, cf.tiles = PartWindow, w.Milliseconds(), w.Milliseconds()/v.tile
	}
	filter, err := CompileFilter(f.Filter, v.fields)
	if err != nil {
		return feature{}, err
	}
	d.filter, d.part = filter, cf.Part
	return cf, nil
}

func aggName(a registry.Aggregation) string {
	if a == registry.AggNone {
		return "a last value"
	}
	return "aggregation " + string(a)
}

// identity returns the canonical form of what a state computes: its part,
// aggregation, field and its type, the tile for windows, n, precision and
// filter; not the feature's name nor its window length. Features with the
// same identity share a state, and the state's fingerprint in encodings is a
// hash of it. So a state written under an old definition is read under a new
// one only if it computes the same thing (renaming a feature or changing its
// window keeps it); otherwise it is skipped, and the feature starts empty.
func (v *View) identity(d *stateDef) string {
	b := make([]byte, 0, 128)
	str := func(s string) { b = binary.AppendUvarint(b, uint64(len(s))); b = append(b, s...) }
	num := func(x int64) { b = binary.AppendVarint(b, x) }
	num(int64(d.part))
	str(string(d.agg))
	if d.field >= 0 {
		str(v.fields[d.field].Name)
	} else {
		str("")
	}
	num(int64(d.in))
	if d.part == PartWindow {
		num(v.tile)
	}
	num(int64(d.n))
	num(int64(d.precision))
	for _, c := range d.filter.conds {
		str(v.fields[c.field].Name)
		num(int64(c.kind))
		str(string(c.op))
		num(int64(len(c.lits)))
		for _, l := range c.lits {
			b = l.AppendBinary(b)
		}
	}
	return string(b)
}

// newState returns an empty state.
func (f *stateDef) newState() State {
	switch f.agg {
	case registry.AggCount:
		return NewCount()
	case registry.AggSum:
		return NewSum(f.in)
	case registry.AggMean:
		return NewMean(f.in)
	case registry.AggStddev:
		return NewStddev(f.in)
	case registry.AggMin:
		return NewMin(f.in)
	case registry.AggMax:
		return NewMax(f.in)
	case registry.AggLastN:
		return NewLastN(f.in, f.n)
	case registry.AggCountDistinct:
		return NewCountDistinct(f.precision)
	}
	return NewLast() // last and last values
}

// Name returns the view's name.
func (v *View) Name() string { return v.name }

// Tile returns the tile size in ms.
func (v *View) Tile() int64 { return v.tile }

// TTL returns the TTL of last values in ms, 0 for none.
func (v *View) TTL() int64 { return v.ttl }

// Fields returns the source's fields in the order of Event.Fields. The slice
// must not be modified.
func (v *View) Fields() []Field { return v.fields }

// FieldIndex returns the index of the named field in Event.Fields, or -1.
func (v *View) FieldIndex(name string) int { return fieldIndex(v.fields, name) }

// Features returns the view's features in definition order, the order of
// Read's results. The slice must not be modified.
func (v *View) Features() []FeatureInfo { return v.infos }

// FeatureIndex returns the index of the named feature in Features, or -1.
func (v *View) FeatureIndex(name string) int {
	for i := range v.features {
		if v.features[i].Name == name {
			return i
		}
	}
	return -1
}

// HasPart reports whether any feature of the view is held in part p, so that
// stores can skip states that would always be empty.
func (v *View) HasPart(p Part) bool { return int(p) < len(v.defs) && len(v.defs[p]) > 0 }

// NewestOnly reports whether a read of the view depends on the newest events
// alone: its features are last values, none with a filter. Adding only the
// newest events up to t to its LastValues (empty, or holding older events)
// then reads at t as adding every event up to t does. The newest events are
// those of the greatest order key: one, unless events of several topics
// share it (see Last), when the values decide and all must be added.
func (v *View) NewestOnly() bool {
	for p, defs := range v.defs {
		if Part(p) != PartLastValue && len(defs) > 0 {
			return false
		}
	}
	return v.HasPart(PartLastValue) && v.LastValuesFromNewest()
}

// LastValuesFromNewest reports whether the view's LastValues depend on the
// newest events alone: no last value has a filter. Adding only the newest
// of a run of events (all of the greatest order key) to a LastValues then
// leaves it as adding them all.
func (v *View) LastValuesFromNewest() bool {
	for _, d := range v.defs[PartLastValue] {
		if !d.filter.Empty() {
			return false
		}
	}
	return true
}

// FieldsAggregated reports, for each field of Fields, whether a windowed or
// lifetime aggregation reads it, as its value or in its filter: the fields
// every event added to a TileState or LifetimeState must carry. The others
// are read by last values only.
func (v *View) FieldsAggregated() []bool {
	read := make([]bool, len(v.fields))
	for _, p := range []Part{PartWindow, PartLifetime} {
		if int(p) >= len(v.defs) {
			continue
		}
		for _, d := range v.defs[p] {
			if d.field >= 0 {
				read[d.field] = true
			}
			for _, c := range d.filter.conds {
				read[c.field] = true
			}
		}
	}
	return read
}

// TileOf returns the index of the view's tile that holds time t.
func (v *View) TileOf(t int64) int64 { return TileOf(t, v.tile) }

// TilesNeeded returns the tiles a read at t merges: those of the longest
// window, ending with the tile of t. It is empty when the view has no
// windowed features.
func (v *View) TilesNeeded(t int64) TileRange {
	k := v.TileOf(t)
	return TileRange{First: k - v.maxTiles + 1, Last: k}
}

// Rollup returns the length of the view's rollup tiles in ms (a multiple of
// Tile), 0 when it keeps none. Rollup tile K holds the events of tiles
// K*r to K*r+r-1, r = Rollup/Tile, and lets a read of a long window merge
// one state where it would merge r (ReadRollups).
func (v *View) Rollup() int64 { return v.rollup }

// RollupOf returns the index of the rollup tile that holds tile k.
func (v *View) RollupOf(k int64) int64 { return TileOf(k, v.rollup/v.tile) }

// NewRollupState returns an empty state of rollup tile K. It panics on a
// view without rollup tiles.
func (v *View) NewRollupState(K int64) *TileState {
	if v.coarse == nil {
		panic(fmt.Sprintf("window: view %q keeps no rollup tiles", v.name))
	}
	return v.coarse.NewTileState(K)
}

// split returns the rollup tiles that a window of n tiles ending with tile
// k covers whole, cLo to cHi (none when cLo > cHi). The window then merges
// those and, of its tiles, those before cLo*r and from (cHi+1)*r on: fewer
// than r at each end.
func (v *View) split(k, n int64) (cLo, cHi int64) {
	r := v.rollup / v.tile
	return -TileOf(-(k - n + 1), r), TileOf(k+1, r) - 1
}

// ReadPlan appends to dst what ReadRollups merges at t: the tiles, as
// ranges in increasing order without overlap, and returns them with the
// rollup tiles. Without rollup tiles it is TilesNeeded(t) and an empty
// range.
func (v *View) ReadPlan(dst []TileRange, t int64) (tiles []TileRange, rollups TileRange) {
	need := v.TilesNeeded(t)
	rollups = TileRange{First: 1, Last: 0}
	if v.rollup == 0 || need.Len() == 0 {
		return append(dst, need), rollups
	}
	k := need.Last
	r := v.rollup / v.tile
	start := len(dst)
	for _, d := range v.defs[PartWindow] {
		for _, i := range d.features {
			n := v.features[i].tiles
			cLo, cHi := v.split(k, n)
			if cLo > cHi {
				dst = append(dst, TileRange{First: k - n + 1, Last: k})
				continue
			}
			if rollups.Len() == 0 {
				rollups = TileRange{First: cLo, Last: cHi}
			}
			rollups.First = min(rollups.First, cLo)
			dst = append(dst, TileRange{First: k - n + 1, Last: cLo*r - 1}, TileRange{First: (cHi + 1) * r, Last: k})
		}
	}
	ranges := dst[start:]
	slices.SortFunc(ranges, func(a, b TileRange) int { return cmp.Compare(a.First, b.First) })
	out := ranges[:0]
	for _, x := range ranges {
		switch {
		case x.Len() == 0:
		case len(out) > 0 && x.First <= out[len(out)-1].Last+1:
			out[len(out)-1].Last = max(out[len(out)-1].Last, x.Last)
		default:
			out = append(out, x)
		}
	}
	return dst[:start+len(out)], rollups
}

// ReadPlanMax returns the most tiles and rollup tiles a ReadPlan of the
// view holds, at any time.
func (v *View) ReadPlanMax() int {
	if v.rollup == 0 {
		return v.TilesNeeded(0).Len()
	}
	most := 0
	var buf []TileRange
	for j := range v.rollup / v.tile {
		tiles, rollups := v.ReadPlan(buf[:0], j*v.tile)
		n := rollups.Len()
		for _, r := range tiles {
			n += r.Len()
		}
		most, buf = max(most, n), tiles
	}
	return most
}

// MaxWindow returns the length of the view's longest window in ms, 0 when it
// has none.
func (v *View) MaxWindow() int64 { return v.maxTiles * v.tile }

// TileExpiry returns the time from which tile k is never read again: a read
// at t needs tile k iff k*g <= t < (k+n)*g, for the longest window of n
// tiles. An online store can let the tile expire at that time.
func (v *View) TileExpiry(k int64) int64 { return (k + v.maxTiles) * v.tile }

// Retention returns a relative time to live for a key holding tiles,
// refreshed at every write (PEXPIRE) and counted from the time of the write:
// the longest window plus the lateness. A tile is read until its start plus
// the longest window, so this is enough for every tile that starts no later
// than lateness after the write, which holds for events up to lateness ahead
// of the writer's clock; for events that far in the future, or to expire
// exactly, use TileExpiry.
func (v *View) Retention(lateness time.Duration) time.Duration {
	return time.Duration(v.MaxWindow())*time.Millisecond + lateness
}
