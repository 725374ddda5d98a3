package registry

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Registry is a validated, immutable set of definitions.
type Registry struct {
	Entities []*Entity         `json:"entities"`
	Sources  []*Source         `json:"sources"`
	Views    []*FeatureView    `json:"feature_views"`
	Services []*FeatureService `json:"feature_services"`
	// OnDemandViews is left out of the JSON when empty, so that registries
	// without any keep the digests they had before the kind existed.
	OnDemandViews []*OnDemandFeatureView `json:"on_demand_feature_views,omitempty"`

	entities      map[string]*Entity
	sources       map[string]*Source
	views         map[string]*FeatureView
	services      map[string]*FeatureService
	onDemandViews map[string]*OnDemandFeatureView
}

// Entity returns the named entity, or nil.
func (r *Registry) Entity(name string) *Entity { return r.entities[name] }

// Source returns the named source, or nil.
func (r *Registry) Source(name string) *Source { return r.sources[name] }

// View returns the named feature view, or nil.
func (r *Registry) View(name string) *FeatureView { return r.views[name] }

// OnDemandView returns the named on-demand feature view, or nil.
func (r *Registry) OnDemandView(name string) *OnDemandFeatureView { return r.onDemandViews[name] }

// Service returns the named feature service, or nil.
func (r *Registry) Service(name string) *FeatureService { return r.services[name] }

// ViewsOfSource returns the feature views computed from the named source.
func (r *Registry) ViewsOfSource(source string) []*FeatureView {
	var out []*FeatureView
	for _, v := range r.Views {
		if v.Source == source {
			out = append(out, v)
		}
	}
	return out
}

// ResolveRefs expands references (view:feature or view:*, of feature views
// and on-demand feature views) into features in order, and reports an
// unknown view or feature by name.
func (r *Registry) ResolveRefs(refs []FeatureRef) ([]FeatureRef, error) {
	var out []FeatureRef
	for _, ref := range refs {
		names, ok := r.featureNames(ref.View)
		if !ok {
			known := slices.Collect(maps.Keys(r.views))
			known = slices.AppendSeq(known, maps.Keys(r.onDemandViews))
			return nil, fmt.Errorf("unknown feature view %q in %q%s", ref.View, ref.String(), Nearest(ref.View, known))
		}
		if ref.Feature == "*" {
			for _, f := range names {
				out = append(out, FeatureRef{View: ref.View, Feature: f})
			}
			continue
		}
		if !slices.Contains(names, ref.Feature) {
			return nil, fmt.Errorf("unknown feature %q in feature view %q%s", ref.Feature, ref.View, Nearest(ref.Feature, names))
		}
		out = append(out, ref)
	}
	return out, nil
}

// featureNames returns the names of the features of the named feature view
// or on-demand feature view, in order, and whether there is one.
func (r *Registry) featureNames(view string) ([]string, bool) {
	var names []string
	if v := r.views[view]; v != nil {
		for _, f := range v.Features {
			names = append(names, f.Name)
		}
		return names, true
	}
	if v := r.onDemandViews[view]; v != nil {
		for _, f := range v.Features {
			names = append(names, f.Name)
		}
		return names, true
	}
	return nil, false
}

func (r *Registry) add(kind string, obj any) {
	switch o := obj.(type) {
	case *Entity:
		r.Entities = append(r.Entities, o)
	case *Source:
		r.Sources = append(r.Sources, o)
	case *FeatureView:
		r.Views = append(r.Views, o)
	case *FeatureService:
		r.Services = append(r.Services, o)
	case *OnDemandFeatureView:
		r.OnDemandViews = append(r.OnDemandViews, o)
	default:
		panic("registry: unknown kind " + kind)
	}
}

// named is what every top-level definition has.
type named interface {
	comparable
	Pos() Pos
	PosOf(field string) Pos
}

// index sorts objects by name and maps those with one, reporting names
// given twice.
func index[T named](e *errs, kind string, objs []T, name func(T) string) map[string]T {
	slices.SortStableFunc(objs, func(a, b T) int { return cmp.Compare(name(a), name(b)) })
	m := make(map[string]T, len(objs))
	for _, o := range objs {
		n := name(o)
		if n == "" {
			// Left out or not a string, which is reported already. It
			// is no duplicate of another without a name, and no
			// reference finds it (a view without an entity would find
			// an entity without a name).
			continue
		}
		if first, dup := m[n]; dup {
			e.add(o.PosOf("name"), "%s %q defined twice (first at %s)", kindLabel(kind), n, first.PosOf("name"))
			continue
		}
		m[n] = o
	}
	return m
}

// build indexes the definitions, applies defaults, validates them, and
// derives what lookups need. Problems go to e.
func (r *Registry) build(e *errs) {
	r.entities = index(e, KindEntity, r.Entities, func(o *Entity) string { return o.Name })
	r.sources = index(e, KindSource, r.Sources, func(o *Source) string { return o.Name })
	r.views = index(e, KindFeatureView, r.Views, func(o *FeatureView) string { return o.Name })
	r.services = index(e, KindFeatureService, r.Services, func(o *FeatureService) string { return o.Name })
	r.onDemandViews = index(e, KindOnDemandFeatureView, r.OnDemandViews, func(o *OnDemandFeatureView) string { return o.Name })
	for _, o := range r.Entities {
		r.checkEntity(e, o)
	}
	for _, o := range r.Sources {
		r.checkSource(e, o)
	}
	for _, o := range r.Views {
		r.checkView(e, o)
	}
	for _, o := range r.OnDemandViews {
		r.checkOnDemandView(e, o)
	}
	for _, o := range r.Services {
		r.checkService(e, o)
	}
}

// CanonicalJSON is the registry's content in a stable form: objects sorted by
// name, defaults written out, positions left out. Equal definitions give equal
// bytes wherever they were written.
func (r *Registry) CanonicalJSON() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		panic("registry: marshal: " + err.Error()) // all types marshal
	}
	return b
}

// Digest is the SHA-256 of the canonical JSON, as "sha256:<hex>".
func (r *Registry) Digest() string {
	sum := sha256.Sum256(r.CanonicalJSON())
	return "sha256:" + hex.EncodeToString(sum[:])
}

// FromJSON rebuilds a registry from its canonical JSON, as stores keep it.
// A field it does not know is an error, not dropped: a version applied by a
// newer build may carry an attribute (a filter, say) that changes what the
// features mean, and computing them without it would be silently wrong.
func FromJSON(b []byte) (*Registry, error) {
	r := &Registry{}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(r); err != nil {
		if strings.HasPrefix(err.Error(), "json: unknown field ") {
			return nil, fmt.Errorf("registry snapshot uses fields this build does not know (upgrade featurestore to read it): %w", err)
		}
		return nil, fmt.Errorf("decode registry snapshot: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode registry snapshot: data after the definitions")
	}
	if err := r.nullElement(); err != nil {
		return nil, fmt.Errorf("decode registry snapshot: %w", err)
	}
	e := &errs{}
	r.build(e)
	if len(e.list) > 0 {
		return nil, fmt.Errorf("invalid registry snapshot: %w", e.list)
	}
	return r, nil
}

// nullElement reports a null in a list of objects, which JSON decodes to a
// nil pointer that the checks would dereference. The YAML decoder never
// leaves one.
func (r *Registry) nullElement() error {
	null := func(what string, i int) error { return fmt.Errorf("%s[%d] is null", what, i) }
	for i, o := range r.Entities {
		if o == nil {
			return null("entities", i)
		}
	}
	for i, o := range r.Sources {
		if o == nil {
			return null("sources", i)
		}
	}
	for i, o := range r.Views {
		if o == nil {
			return null("feature_views", i)
		}
		for j, f := range o.Features {
			if f == nil {
				return null(fmt.Sprintf("feature view %q: features", o.Name), j)
			}
			for k, c := range f.Filter {
				if c == nil {
					return null(fmt.Sprintf("feature view %q: feature %q: filter", o.Name, f.Name), k)
				}
			}
		}
	}
	for i, o := range r.Services {
		if o == nil {
			return null("feature_services", i)
		}
	}
	for i, o := range r.OnDemandViews {
		if o == nil {
			return null("on_demand_feature_views", i)
		}
		for j, f := range o.Features {
			if f == nil {
				return null(fmt.Sprintf("on-demand feature view %q: features", o.Name), j)
			}
		}
	}
	return nil
}

// Empty returns a registry with no definitions.
func Empty() *Registry {
	r := &Registry{}
	r.build(&errs{})
	return r
}
