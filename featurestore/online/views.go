package online

import (
	"context"
	"fmt"
	"slices"
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

	readers *sync.Pool // of *window.Reader, which keep buffers between reads
}

// NewViewLayout returns the layout of a compiled view with the source's
// allowed lateness.
func NewViewLayout(project, name string, v *window.View, lateness time.Duration) ViewLayout {
	tiles := int64(0)
	if v.Tile() > 0 {
		tiles = v.MaxWindow() / v.Tile()
	}
	return ViewLayout{Project: project, Name: name, View: v, Ring: RingSize(v.Tile(), tiles, lateness),
		readers: &sync.Pool{New: func() any { return v.NewReader() }}}
}

// reader returns a reader of the view, from the layout's pool when it was
// made by NewViewLayout.
func (l *ViewLayout) reader() *window.Reader {
	if l.readers == nil {
		return l.View.NewReader()
	}
	return l.readers.Get().(*window.Reader)
}

// release gives a reader back to the layout's pool.
func (l *ViewLayout) release(rd *window.Reader) {
	if l.readers != nil {
		l.readers.Put(rd)
	}
}

// ViewRead asks for every feature of one view for one entity.
type ViewRead struct {
	Layout *ViewLayout
	Entity featurestore.EntityKey
}

// ReadViews reads the features of each request at time t (Unix ms), in one
// round trip, merging tiles at read time so that windows decay without new
// events. Results follow the requests; each holds the view's features in
// order. Every result slice is freshly allocated.
func ReadViews(ctx context.Context, s *Store, reqs []ViewRead, t int64) ([][]window.FeatureValue, error) {
	lookups := make([]Lookup, len(reqs))
	for i, r := range reqs {
		v := r.Layout.View
		var fields []string
		if v.HasPart(window.PartWindow) {
			need := v.TilesNeeded(t)
			for k := need.First; k <= need.Last; k++ {
				fields = append(fields, SlotField(k, r.Layout.Ring))
			}
		}
		fields = append(fields, LifetimeField, LastField)
		lookups[i] = Lookup{Key: Key{Project: r.Layout.Project, View: r.Layout.Name, Entity: r.Entity}, Fields: fields}
	}
	raw, err := s.Read(ctx, lookups)
	if err != nil {
		return nil, err
	}
	out := make([][]window.FeatureValue, len(reqs))
	for i, r := range reqs {
		v := r.Layout.View
		vals := raw[i]
		n := len(vals) - 2
		var tiles []*window.TileState
		if v.HasPart(window.PartWindow) {
			first := v.TilesNeeded(t).First
			for j := 0; j < n; j++ {
				if vals[j] == nil {
					continue
				}
				k, blob, err := DecodeSlot(vals[j])
				if err != nil {
					return nil, fmt.Errorf("read %s: %w", lookups[i].Key, err)
				}
				if k != first+int64(j) {
					continue // the slot holds another tile
				}
				ts := v.NewTileState(k)
				if err := ts.UnmarshalBinary(blob); err != nil {
					return nil, fmt.Errorf("read %s: %w", lookups[i].Key, err)
				}
				tiles = append(tiles, ts)
			}
		}
		var life *window.LifetimeState
		if b := vals[n]; b != nil && v.HasPart(window.PartLifetime) {
			life = v.NewLifetimeState()
			if err := life.UnmarshalBinary(b); err != nil {
				return nil, fmt.Errorf("read %s: %w", lookups[i].Key, err)
			}
		}
		var last *window.LastValues
		if b := vals[n+1]; b != nil && v.HasPart(window.PartLastValue) {
			last = v.NewLastValues()
			if err := last.UnmarshalBinary(b); err != nil {
				return nil, fmt.Errorf("read %s: %w", lookups[i].Key, err)
			}
		}
		rd := r.Layout.reader()
		res, err := rd.Read(t, tiles, life, last)
		if err != nil {
			r.Layout.release(rd)
			return nil, fmt.Errorf("read %s: %w", lookups[i].Key, err)
		}
		out[i] = slices.Clone(res) // res is the reader's buffer, reused by its next Read
		r.Layout.release(rd)
	}
	return out, nil
}
