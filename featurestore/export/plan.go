package export

import (
	"errors"
	"fmt"
	"slices"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// plan is a resolved feature selection: the output's feature columns in
// request order, the views they come from, compiled, and the entities whose
// keys the entity table must carry.
type plan struct {
	entities []*entityPlan
	views    []*viewPlan
	// columns are the stored features computed: those requested, then
	// those that requested on-demand features read (not written out).
	columns []*column
	// outputs are the output's feature columns, in request order.
	outputs []outColumn
	// requestFields are the request fields of the on-demand features
	// requested, which the entity table must have as columns, by name.
	requestFields map[string]featurestore.Kind
}

// onlyStored reports whether the output's feature columns are the stored
// columns, in order: no on-demand feature is requested.
func (p *plan) onlyStored() bool {
	if len(p.outputs) != len(p.columns) {
		return false
	}
	for i, o := range p.outputs {
		if o.stored != i {
			return false
		}
	}
	return true
}

// entityPlan is one entity of the selected views.
type entityPlan struct {
	index int
	name  string
	keys  []string // join key names, as declared
	kinds []featurestore.KeyKind
	views []*viewPlan
	// columns are the entity's feature columns in the order of its result
	// files: view by view, each view's columns in request order.
	columns []*column
}

// viewPlan is one selected feature view.
type viewPlan struct {
	index  int // in plan.views
	name   string
	def    *registry.FeatureView
	entity *entityPlan
	// win is the view compiled with the selected features only: each state
	// is a function of the events that reach it alone, so the values are
	// those of the full view, and unselected features cost nothing.
	win *window.View
	// fields are the source fields the selected features read (their field
	// and their filters' fields), by name, with the index of each in
	// win.Fields().
	fields   []window.Field
	fieldIdx []int
	columns  []*column
}

// column is one output feature column.
type column struct {
	name    string // view:feature, as serving names it
	kind    featurestore.Kind
	view    *viewPlan
	feature int // index in view.win.Features()
	index   int // in plan.columns
}

// newPlan resolves a feature service, or feature references (view:feature,
// view:*), against a registry. Exactly one of service and refs is set.
func newPlan(r *registry.Registry, service string, refs []string) (*plan, error) {
	var resolved []registry.FeatureRef
	switch {
	case service != "" && len(refs) > 0:
		return nil, errors.New("give a feature service or feature references, not both")
	case service != "":
		s := r.Service(service)
		if s == nil {
			var known []string
			for _, s := range r.Services {
				known = append(known, s.Name)
			}
			return nil, fmt.Errorf("unknown feature service %q%s", service, registry.Nearest(service, known))
		}
		resolved = s.Resolved()
	case len(refs) == 0:
		return nil, errors.New("no features requested: give a feature service or feature references")
	default:
		parsed := make([]registry.FeatureRef, 0, len(refs))
		for _, s := range refs {
			ref, err := registry.ParseFeatureRef(s)
			if err != nil {
				return nil, err
			}
			parsed = append(parsed, ref)
		}
		var err error
		if resolved, err = r.ResolveRefs(parsed); err != nil {
			return nil, err
		}
	}
	p := &plan{}
	seen := map[registry.FeatureRef]bool{}
	for _, ref := range resolved {
		if seen[ref] {
			return nil, fmt.Errorf("feature %q requested more than once", ref.String())
		}
		seen[ref] = true
	}
	stored, buildOutputs, err := planOnDemand(r, resolved)
	if err != nil {
		return nil, err
	}
	byView := map[string][]registry.FeatureRef{}
	var viewOrder []string
	for _, ref := range stored {
		v := r.View(ref.View)
		if v == nil {
			return nil, fmt.Errorf("unknown feature view %q in %q", ref.View, ref.String())
		}
		if v.Feature(ref.Feature) == nil {
			return nil, fmt.Errorf("unknown feature %q in feature view %q", ref.Feature, ref.View)
		}
		if _, ok := byView[ref.View]; !ok {
			viewOrder = append(viewOrder, ref.View)
		}
		byView[ref.View] = append(byView[ref.View], ref)
	}
	views := map[string]*viewPlan{}
	entities := map[string]*entityPlan{}
	for _, name := range viewOrder {
		vp, err := p.addView(r, r.View(name), byView[name], entities)
		if err != nil {
			return nil, err
		}
		views[name] = vp
	}
	byRef := make(map[registry.FeatureRef]int, len(stored))
	for _, ref := range stored {
		vp := views[ref.View]
		i := vp.win.FeatureIndex(ref.Feature)
		c := &column{name: ref.String(), kind: vp.win.Features()[i].Kind, view: vp, feature: i, index: len(p.columns)}
		byRef[ref] = c.index
		p.columns = append(p.columns, c)
		vp.columns = append(vp.columns, c)
	}
	p.outputs, p.requestFields = buildOutputs(byRef)
	for i := range p.outputs {
		if o := &p.outputs[i]; o.od == nil {
			o.kind = p.columns[o.stored].kind
		}
	}
	for _, e := range p.entities {
		for _, vp := range e.views {
			e.columns = append(e.columns, vp.columns...)
		}
	}
	return p, nil
}

// addView compiles view v reduced to the features refs select.
func (p *plan) addView(r *registry.Registry, v *registry.FeatureView, refs []registry.FeatureRef, entities map[string]*entityPlan) (*viewPlan, error) {
	if !v.IsOffline() {
		return nil, fmt.Errorf("feature view %q is not kept offline (offline: false): it cannot be exported", v.Name)
	}
	src := r.Source(v.Source)
	if src == nil {
		return nil, fmt.Errorf("feature view %q: unknown source %q", v.Name, v.Source)
	}
	reduced := *v
	// Rollup tiles are how the online store lays long windows out; an
	// export merges the events themselves, and the selected features may
	// have no window the rollup is shorter than.
	reduced.Rollup = 0
	reduced.Features = nil
	for _, f := range v.Features {
		if slices.ContainsFunc(refs, func(ref registry.FeatureRef) bool { return ref.Feature == f.Name }) {
			reduced.Features = append(reduced.Features, f)
		}
	}
	win, err := window.Compile(&reduced, src)
	if err != nil {
		return nil, err
	}
	ent := entities[v.Entity]
	if ent == nil {
		def := r.Entity(v.Entity)
		if def == nil {
			return nil, fmt.Errorf("feature view %q: unknown entity %q", v.Name, v.Entity)
		}
		ent = &entityPlan{index: len(p.entities), name: def.Name}
		for _, k := range def.JoinKeys {
			kind := featurestore.KeyString
			if k.Type == registry.KeyInt64 {
				kind = featurestore.KeyInt64
			}
			ent.keys = append(ent.keys, k.Name)
			ent.kinds = append(ent.kinds, kind)
		}
		entities[v.Entity] = ent
		p.entities = append(p.entities, ent)
	}
	vp := &viewPlan{index: len(p.views), name: v.Name, def: v, entity: ent, win: win}
	used := map[string]bool{}
	for _, f := range reduced.Features {
		if f.Field != "" {
			used[f.Field] = true
		}
		for _, c := range f.Filter {
			used[c.Field] = true
		}
	}
	for i, f := range win.Fields() {
		if used[f.Name] {
			vp.fields = append(vp.fields, f)
			vp.fieldIdx = append(vp.fieldIdx, i)
		}
	}
	ent.views = append(ent.views, vp)
	p.views = append(p.views, vp)
	return vp, nil
}
