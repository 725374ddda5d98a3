package online

import (
	"context"
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

// layoutReads is what every read of a view shares, computed once per layout
// so that a read builds no field names and boxes no arguments.
type layoutReads struct {
	// slots holds the HMGET arguments "t:<i mod Ring>" for i in
	// [0, Ring+tiles): the slots of any run of consecutive tiles, wherever
	// it starts in the ring, are a subslice.
	slots []any
	// tail holds the fields after the tiles: LifetimeField and LastField,
	// those the view has.
	tail             []any
	hasLife, hasLast bool
	tiles            int        // tiles a read merges: the longest window's
	nfields          int        // fields a read asks for
	features         int        // features a read returns
	scratch          *sync.Pool // of *viewScratch
}

// NewViewLayout returns the layout of a compiled view with the source's
// allowed lateness.
func NewViewLayout(project, name string, v *window.View, lateness time.Duration) ViewLayout {
	tiles := int64(0)
	if v.Tile() > 0 {
		tiles = v.MaxWindow() / v.Tile()
	}
	l := ViewLayout{Project: project, Name: name, View: v, Ring: RingSize(v.Tile(), tiles, lateness)}
	l.reads = newLayoutReads(v, l.Ring)
	return l
}

func newLayoutReads(v *window.View, ring int64) *layoutReads {
	r := &layoutReads{
		hasLife:  v.HasPart(window.PartLifetime),
		hasLast:  v.HasPart(window.PartLastValue),
		features: len(v.Features()),
	}
	if v.HasPart(window.PartWindow) {
		r.tiles = v.TilesNeeded(0).Len()
		r.slots = make([]any, ring+int64(r.tiles))
		for i := range r.slots {
			r.slots[i] = SlotField(int64(i), ring)
		}
	}
	if r.hasLife {
		r.tail = append(r.tail, LifetimeField)
	}
	if r.hasLast {
		r.tail = append(r.tail, LastField)
	}
	r.nfields = r.tiles + len(r.tail)
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
func ReadViews(ctx context.Context, s *Store, reqs []ViewRead, t int64) ([][]window.FeatureValue, error) {
	var b ReadBuffer
	return b.ReadViews(ctx, s, reqs, t)
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
}

// read decodes the reply to one view read, vals in the order of the
// layout's fields ("" for absent: the store never writes an empty value),
// and puts the view's features at t into dst.
func (sc *viewScratch) read(v *window.View, lr *layoutReads, vals []string, t int64, dst []window.FeatureValue) error {
	sc.used = sc.used[:0]
	if lr.tiles > 0 {
		first := v.TilesNeeded(t).First
		for j, s := range vals[:lr.tiles] {
			if s == "" {
				continue
			}
			k, blob, err := DecodeSlot(bytesOf(s))
			if err != nil {
				return err
			}
			if k != first+int64(j) {
				continue // the slot holds another tile
			}
			if len(sc.used) == len(sc.tiles) {
				sc.tiles = append(sc.tiles, v.NewTileState(k))
			}
			ts := sc.tiles[len(sc.used)]
			ts.Reset(k)
			if err := ts.UnmarshalBinary(blob); err != nil {
				return err
			}
			sc.used = append(sc.used, ts)
		}
	}
	i := lr.tiles
	var life *window.LifetimeState
	if lr.hasLife {
		if s := vals[i]; s != "" {
			if sc.life == nil {
				sc.life = v.NewLifetimeState()
			}
			if err := sc.life.UnmarshalBinary(bytesOf(s)); err != nil {
				return err
			}
			life = sc.life
		}
		i++
	}
	var last *window.LastValues
	if lr.hasLast {
		if s := vals[i]; s != "" {
			if sc.last == nil {
				sc.last = v.NewLastValues()
			}
			if err := sc.last.UnmarshalBinary(bytesOf(s)); err != nil {
				return err
			}
			last = sc.last
		}
	}
	res, err := sc.rd.Read(t, sc.used, life, last)
	if err != nil {
		return err
	}
	// res is the reader's buffer, reused by its next Read; its values refer
	// to no state of the scratch (decoding copies strings, lists are built
	// per read), so they stay valid after the scratch is reused.
	copy(dst, res)
	return nil
}
