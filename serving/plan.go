package serving

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// plan is what one registry version needs at request time, computed once
// per version so that requests only look names up.
type plan struct {
	snap     *registry.Snapshot // the version planned
	version  int64
	views    map[string]*viewPlan
	ods      map[string]*odPlan // on-demand feature views
	services map[string]*selection
	// errs holds the services that could not be planned, by name, with why.
	serviceErrs map[string]error

	// lists caches the selections of feature lists by listKey, so that
	// clients that send the same list with every request resolve it once
	// per version. Readers load the map without locking; writers, under
	// listsMu, replace it with a copy.
	lists   atomic.Pointer[map[string]*selection]
	listsMu sync.Mutex
}

// maxCachedLists bounds the feature lists a plan caches: lists are chosen by
// clients, so a client sending ever new lists must not grow the cache
// forever. Lists beyond it are resolved on every request.
const maxCachedLists = 1024

// entityPlan is an entity's join keys in declared order.
type entityPlan struct {
	name  string
	keys  []string
	kinds []featurestore.KeyKind
}

// viewPlan is one feature view as the store lays it out.
type viewPlan struct {
	name     string
	entity   *entityPlan
	layout   online.ViewLayout
	features map[string]int // feature name to its index in the compiled view
	infos    []window.FeatureInfo
	// err is set when the view cannot be served (offline only, or its
	// definition does not compile); requesting it fails with err.
	err error
}

// column is one requested feature.
type column struct {
	view     *viewPlan // nil for an on-demand feature
	vidx     int       // index of its view's results: in selection.views, or len(views)+k for selection.ods[k]
	index    int       // index of the feature in the view's read result
	name     string
	windowed bool // a windowed aggregation, whose responses carry the interval covered
	kind     featurestore.Kind
}

// selection is a resolved set of features: the columns in response order and
// the distinct views they come from.
type selection struct {
	// entities are the distinct entities of the selected views, in the
	// order first met; each view's is entities[eidx[view]].
	entities []*entityPlan
	eidx     map[*viewPlan]int
	names    []string
	cols     []column
	views    []*viewPlan // the stored views read: those requested, and those on-demand features read
	// layouts[j] reads views[j] for the features the selection uses of it,
	// directly or through on-demand features (online.ViewLayout.Select):
	// a lookup of a short window of a view with a long one reads and
	// merges the short window's tiles only.
	layouts []online.ViewLayout
	// ods are the on-demand views of the requested features; their
	// results follow the stored views' (computeODs), width per entity in
	// all.
	ods   []*selOD
	width int
	// requestFields are the request fields the requested on-demand
	// features use, sorted by name: one per name and kind, as two views
	// may declare one name with different kinds, and each view takes the
	// value converted to its own.
	requestFields []requestField
	// viewNames are the names of views, for authorization: the stored
	// views', then the on-demand views'; viewEntity[j] is eidx[views[j]].
	viewNames  []string
	viewEntity []int
	// colViews are the distinct views of the columns, stored or on-demand,
	// and colView[c] is the index in colViews of column c's, for metrics.
	colViews      []string
	colView       []int
	valueCounters atomic.Pointer[valueCounters] // made on first use
	windowed      int                           // columns that are windowed
	namesWire     []byte                        // names, as field 1 of an encoded response
}

// addEntity adds an entity to the selection's, once, and returns its index
// in sel.entities.
func (sel *selection) addEntity(e *entityPlan) int {
	ei := slices.Index(sel.entities, e)
	if ei < 0 {
		ei = len(sel.entities)
		sel.entities = append(sel.entities, e)
	}
	return ei
}

// newPlan compiles every view of a snapshot. A view that fails does not fail
// the plan: only requests for it do.
func newPlan(project string, snap *registry.Snapshot) *plan {
	r := snap.Registry
	p := &plan{
		snap:        snap,
		version:     snap.Version,
		views:       make(map[string]*viewPlan, len(r.Views)),
		ods:         make(map[string]*odPlan, len(r.OnDemandViews)),
		services:    make(map[string]*selection, len(r.Services)),
		serviceErrs: map[string]error{},
	}
	entities := make(map[string]*entityPlan, len(r.Entities))
	for _, e := range r.Entities {
		ep := &entityPlan{name: e.Name}
		for _, k := range e.JoinKeys {
			kind := featurestore.KeyString
			if k.Type == registry.KeyInt64 {
				kind = featurestore.KeyInt64
			}
			ep.keys = append(ep.keys, k.Name)
			ep.kinds = append(ep.kinds, kind)
		}
		entities[e.Name] = ep
	}
	for _, v := range r.Views {
		vp := &viewPlan{name: v.Name, entity: entities[v.Entity]}
		p.views[v.Name] = vp
		if !v.IsOnline() {
			vp.err = fmt.Errorf("feature view %q is not online", v.Name)
			continue
		}
		src := r.Source(v.Source)
		compiled, err := window.Compile(v, src)
		if err != nil {
			vp.err = fmt.Errorf("feature view %q: %w", v.Name, err)
			continue
		}
		vp.layout = online.NewViewLayout(project, v.Name, compiled, src.Reach())
		vp.infos = compiled.Features()
		vp.features = make(map[string]int, len(vp.infos))
		for i, f := range vp.infos {
			vp.features[f.Name] = i
		}
	}
	for _, od := range r.OnDemandViews {
		p.ods[od.Name] = newODPlan(od, p.views)
	}
	for _, s := range r.Services {
		sel, err := p.selectRefs(s.Resolved())
		if err != nil {
			p.serviceErrs[s.Name] = fmt.Errorf("feature service %q: %w", s.Name, err)
			continue
		}
		p.services[s.Name] = sel
	}
	return p
}

// selectLayouts sets sel.layouts: for each view read, its layout selecting
// the features that the columns and the on-demand features' expressions
// read of it, once the columns are resolved.
func (sel *selection) selectLayouts() error {
	used := make([][]int, len(sel.views))
	for _, col := range sel.cols {
		if col.view != nil {
			used[col.vidx] = append(used[col.vidx], col.index)
		}
	}
	for _, s := range sel.ods {
		for _, f := range s.feats {
			for _, v := range s.od.feats[f].Expr().Uses() {
				if x := s.od.vars[v]; x.view != nil {
					used[s.views[v]] = append(used[s.views[v]], x.index)
				}
			}
		}
	}
	sel.layouts = make([]online.ViewLayout, len(sel.views))
	for j, vp := range sel.views {
		l, err := vp.layout.Select(used[j])
		if err != nil {
			return err
		}
		sel.layouts[j] = l
	}
	return nil
}

// viewNames returns the names of the plan's feature views and on-demand
// feature views, for suggestions.
func (p *plan) viewNames() []string {
	names := slices.Collect(maps.Keys(p.views))
	return slices.AppendSeq(names, maps.Keys(p.ods))
}

// service returns the selection of a feature service.
func (p *plan) service(name string) (*selection, error) {
	if sel := p.services[name]; sel != nil {
		return sel, nil
	}
	if err := p.serviceErrs[name]; err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("unknown feature service %q%s", name, registry.Nearest(name, slices.Collect(maps.Keys(p.services))))
}

// parseRefs resolves "view:feature" and "view:*" references in order,
// from the plan's cache when the same list was resolved before.
func (p *plan) parseRefs(refs []string) (*selection, error) {
	if len(refs) == 0 {
		return nil, fmt.Errorf("no features requested")
	}
	var kb [256]byte
	key := listKey(kb[:0], refs)
	var cached map[string]*selection
	if m := p.lists.Load(); m != nil {
		cached = *m
		if sel := cached[string(key)]; sel != nil {
			return sel, nil
		}
	}
	sel, err := p.resolveRefs(refs)
	if err != nil || len(cached) >= maxCachedLists {
		return sel, err
	}
	p.listsMu.Lock()
	defer p.listsMu.Unlock()
	var next map[string]*selection
	if m := p.lists.Load(); m != nil {
		next = maps.Clone(*m)
	} else {
		next = map[string]*selection{}
	}
	next[string(key)] = sel
	p.lists.Store(&next)
	return sel, nil
}

// listKey appends to b a key for a list of references that no other list
// shares: each reference preceded by its length.
func listKey(b []byte, refs []string) []byte {
	for _, r := range refs {
		b = binary.AppendUvarint(b, uint64(len(r)))
		b = append(b, r...)
	}
	return b
}

// resolveRefs is parseRefs without the cache.
func (p *plan) resolveRefs(refs []string) (*selection, error) {
	out := make([]registry.FeatureRef, 0, len(refs))
	for _, s := range refs {
		view, feature, ok := strings.Cut(s, ":")
		if !ok || view == "" || feature == "" || strings.Contains(feature, ":") {
			return nil, fmt.Errorf("invalid feature reference %q: expected view:feature", s)
		}
		if od := p.ods[view]; od != nil && feature == "*" {
			if od.err != nil {
				return nil, od.err
			}
			for _, f := range od.feats {
				out = append(out, registry.FeatureRef{View: view, Feature: f.Name})
			}
			continue
		}
		vp := p.views[view]
		if vp == nil && p.ods[view] == nil {
			return nil, fmt.Errorf("unknown feature view %q in %q%s", view, s, registry.Nearest(view, p.viewNames()))
		}
		if vp != nil && vp.err != nil {
			return nil, vp.err
		}
		if vp != nil && feature == "*" {
			for _, f := range vp.infos {
				out = append(out, registry.FeatureRef{View: view, Feature: f.Name})
			}
			continue
		}
		out = append(out, registry.FeatureRef{View: view, Feature: feature})
	}
	return p.selectRefs(out)
}

// selectRefs builds the selection of resolved references: each must name a
// known feature and appear once. The features may belong to several
// entities; rows must then name their join keys.
func (p *plan) selectRefs(refs []registry.FeatureRef) (*selection, error) {
	sel := &selection{names: make([]string, 0, len(refs)), cols: make([]column, 0, len(refs)), eidx: map[*viewPlan]int{}}
	seen := make(map[registry.FeatureRef]bool, len(refs))
	vidx := map[*viewPlan]int{}
	addView := func(vp *viewPlan) int {
		vi, ok := vidx[vp]
		if !ok {
			vi = len(sel.views)
			vidx[vp] = vi
			sel.views = append(sel.views, vp)
			sel.eidx[vp] = sel.addEntity(vp.entity)
		}
		return vi
	}
	for _, ref := range refs {
		if seen[ref] {
			return nil, fmt.Errorf("feature %q requested more than once", ref.String())
		}
		seen[ref] = true
		name := ref.String()
		if od := p.ods[ref.View]; od != nil {
			if od.err != nil {
				return nil, od.err
			}
			i, ok := od.features[ref.Feature]
			if !ok {
				return nil, fmt.Errorf("unknown feature %q in on-demand feature view %q%s", ref.Feature, ref.View, registry.Nearest(ref.Feature, slices.Collect(maps.Keys(od.features))))
			}
			k := sel.addOD(od, i, addView)
			for _, v := range od.feats[i].Expr().Uses() {
				if x := od.vars[v]; x.view == nil && sel.requestField(x.name, x.kind) < 0 {
					sel.requestFields = append(sel.requestFields, requestField{name: x.name, kind: x.kind, feature: name})
				}
			}
			sel.names = append(sel.names, name)
			sel.cols = append(sel.cols, column{vidx: k, index: i, name: name, kind: od.feats[i].Expr().Kind()})
			continue
		}
		vp := p.views[ref.View]
		if vp == nil {
			return nil, fmt.Errorf("unknown feature view %q in %q%s", ref.View, ref.String(), registry.Nearest(ref.View, p.viewNames()))
		}
		if vp.err != nil {
			return nil, vp.err
		}
		i, ok := vp.features[ref.Feature]
		if !ok {
			return nil, fmt.Errorf("unknown feature %q in feature view %q%s", ref.Feature, ref.View, registry.Nearest(ref.Feature, slices.Collect(maps.Keys(vp.features))))
		}
		vi := addView(vp)
		windowed := vp.infos[i].Part == window.PartWindow
		if windowed {
			sel.windowed++
		}
		sel.names = append(sel.names, name)
		sel.cols = append(sel.cols, column{view: vp, vidx: vi, index: i, name: name, windowed: windowed, kind: vp.infos[i].Kind})
	}
	// On-demand views' results follow the stored views'.
	for c := range sel.cols {
		if sel.cols[c].view == nil {
			sel.cols[c].vidx += len(sel.views)
		}
	}
	sel.width = len(sel.views) + len(sel.ods)
	// Stable, so that of a name's kinds the first requested feature's comes
	// first, and messages name it.
	slices.SortStableFunc(sel.requestFields, func(a, b requestField) int { return strings.Compare(a.name, b.name) })
	for _, s := range sel.ods {
		s.reqs = make([]int, len(s.od.vars))
		for v, x := range s.od.vars {
			s.reqs[v] = -1
			if x.view == nil {
				s.reqs[v] = sel.requestField(x.name, x.kind)
			}
		}
	}
	if err := sel.selectLayouts(); err != nil {
		return nil, err
	}
	for _, vp := range sel.views {
		sel.viewNames = append(sel.viewNames, vp.name)
		sel.viewEntity = append(sel.viewEntity, sel.eidx[vp])
	}
	for _, s := range sel.ods {
		sel.viewNames = append(sel.viewNames, s.od.name)
	}
	for _, col := range sel.cols {
		view, _, _ := strings.Cut(col.name, ":")
		i := slices.Index(sel.colViews, view)
		if i < 0 {
			i = len(sel.colViews)
			sel.colViews = append(sel.colViews, view)
		}
		sel.colView = append(sel.colView, i)
	}
	sel.namesWire = appendWireNames(nil, sel.names)
	return sel, nil
}
