package serving

import (
	"fmt"
	"slices"
	"strings"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
	"github.com/featurestore/featurestore/registry"
)

// This file is where on-demand features are computed at lookup time: after
// the stored views of a request are read, each on-demand view of the
// selection gets a slot in the read results (after the stored views'), with
// its features computed from its inputs' results and the request's
// request_context, by package derive, as export computes them.

// odPlan is an on-demand feature view as lookups compute it.
type odPlan struct {
	name     string
	vars     []odVar
	feats    []*registry.OnDemandFeature
	features map[string]int // feature name to its index in feats
	// err is set when the view cannot be served (an input's view cannot);
	// requesting it fails with err.
	err error
}

// odVar is a variable of an on-demand view: a stored feature (view set) or
// a request field.
type odVar struct {
	name  string
	kind  featurestore.Kind
	view  *viewPlan
	index int // of the feature in view's read result
}

func newODPlan(od *registry.OnDemandFeatureView, views map[string]*viewPlan) *odPlan {
	p := &odPlan{name: od.Name, features: make(map[string]int, len(od.Features))}
	for i, f := range od.Features {
		p.feats = append(p.feats, f)
		p.features[f.Name] = i
	}
	for _, v := range od.Vars() {
		x := odVar{name: v.Name, kind: v.Type.Kind()}
		if v.Input != nil {
			vp := views[v.Input.View]
			if vp.err != nil {
				p.err = fmt.Errorf("on-demand feature view %q: input %q: %w", od.Name, v.Name, vp.err)
				return p
			}
			x.view, x.index = vp, vp.features[v.Input.Feature]
		}
		p.vars = append(p.vars, x)
	}
	return p
}

// selOD is an on-demand view of a selection.
type selOD struct {
	od *odPlan
	// views[v] is the index in selection.views of the view of variable v,
	// -1 for a request field and for an input no requested feature uses.
	views []int
	// feats are the indexes of the requested features in od.feats.
	feats []int
	// reqs[v] is the index in selection.requestFields of the request
	// field of variable v, of its name and kind; -1 for an input and a
	// field no requested feature uses.
	reqs []int
}

// addOD adds the on-demand view of a requested feature to the selection,
// once, and the feature with the stored views its expression reads (only
// those: a lookup reads, and must be granted, no view that no requested
// feature uses), and returns the view's index in sel.ods.
//
// The entities of all the view's inputs join the selection's, read or not:
// they are what the view's features are looked up by (registry's
// OnDemandFeatureView.Inputs), so every row must give their keys, checked
// like any other, even when the requested features use request fields only.
func (sel *selection) addOD(od *odPlan, feature int, addView func(*viewPlan) int) int {
	k := slices.IndexFunc(sel.ods, func(s *selOD) bool { return s.od == od })
	if k < 0 {
		s := &selOD{od: od, views: make([]int, len(od.vars))}
		for v, x := range od.vars {
			s.views[v] = -1
			if x.view != nil {
				sel.addEntity(x.view.entity)
			}
		}
		k = len(sel.ods)
		sel.ods = append(sel.ods, s)
	}
	s := sel.ods[k]
	s.feats = append(s.feats, feature)
	for _, v := range od.feats[feature].Expr().Uses() {
		if x := od.vars[v]; x.view != nil && s.views[v] < 0 {
			s.views[v] = addView(x.view)
		}
	}
	return k
}

// requestValues checks the request values of a lookup (its
// request_context, and each row's) against the request fields that the
// selection's on-demand features use, and returns their values by row: row
// i's value of requestFields[j] is at vals[i*stride+j], where stride is 0
// when no row gives values of its own (every row takes the request's). A
// name that views declare with different kinds gives a value of each kind,
// converted from the one given (an int64 for an int64 field and a double
// one), or an error naming the feature whose kind it cannot take.
func (sel *selection) requestValues(req *pb.GetOnlineFeaturesRequest) (vals []featurestore.Value, stride int, err error) {
	// unused returns the first name of ctx in order that no requested
	// feature uses, "" if none.
	unused := func(ctx map[string]*pb.Value) string {
		first := ""
		for name := range ctx {
			if !sel.usesRequestField(name) && (first == "" || name < first) {
				first = name
			}
		}
		return first
	}
	if name := unused(req.GetRequestContext()); name != "" {
		return nil, 0, fmt.Errorf("request_context %q is used by no requested feature", name)
	}
	perRow := false
	for i, e := range req.GetEntities() {
		if name := unused(e.GetRequestContext()); name != "" {
			return nil, 0, fmt.Errorf("entity %d: request_context %q is used by no requested feature", i, name)
		}
		perRow = perRow || len(e.GetRequestContext()) > 0
	}
	if len(sel.requestFields) == 0 {
		return nil, 0, nil
	}
	// value returns the value of field j for a row whose own values are
	// row (nil for the request's only).
	value := func(row map[string]*pb.Value, j int) (featurestore.Value, error) {
		rf := &sel.requestFields[j]
		v, ok := row[rf.name]
		if !ok {
			if v, ok = req.GetRequestContext()[rf.name]; !ok {
				return featurestore.Value{}, fmt.Errorf("request_context has no %q, which %s uses", rf.name, rf.feature)
			}
		}
		val, err := requestValue(v, rf.kind)
		if err != nil {
			return featurestore.Value{}, fmt.Errorf("request_context %q: %w (used by %s)", rf.name, err, rf.feature)
		}
		return val, nil
	}
	nf := len(sel.requestFields)
	if !perRow {
		vals = make([]featurestore.Value, nf)
		for j := range nf {
			if vals[j], err = value(nil, j); err != nil {
				return nil, 0, err
			}
		}
		return vals, 0, nil
	}
	vals = make([]featurestore.Value, len(req.GetEntities())*nf)
	for i, e := range req.GetEntities() {
		for j := range nf {
			if vals[i*nf+j], err = value(e.GetRequestContext(), j); err != nil {
				return nil, 0, fmt.Errorf("entity %d: %w", i, err)
			}
		}
	}
	return vals, nf, nil
}

// requestField is a request field the selection uses, of one kind: its
// name and kind, and the first requested feature that uses it so, for
// messages.
type requestField struct {
	name    string
	kind    featurestore.Kind
	feature string
}

// requestField returns the index in sel.requestFields of the field of
// that name and kind, -1 if none.
func (sel *selection) requestField(name string, kind featurestore.Kind) int {
	return slices.IndexFunc(sel.requestFields, func(f requestField) bool { return f.name == name && f.kind == kind })
}

// usesRequestField reports whether a requested feature uses the request
// field name, of any kind.
func (sel *selection) usesRequestField(name string) bool {
	_, ok := slices.BinarySearchFunc(sel.requestFields, name, func(f requestField, name string) int { return strings.Compare(f.name, name) })
	return ok
}

// requestValue converts a request_context value to a value of kind want.
// An int64 is taken for a double field; a value with no kind is null.
func requestValue(v *pb.Value, want featurestore.Kind) (featurestore.Value, error) {
	switch k := v.GetKind().(type) {
	case nil:
		return featurestore.Value{}, nil
	case *pb.Value_StringVal:
		if want == featurestore.KindString {
			return featurestore.StringValue(k.StringVal), nil
		}
	case *pb.Value_Int64Val:
		switch want {
		case featurestore.KindInt64:
			return featurestore.Int64Value(k.Int64Val), nil
		case featurestore.KindDouble:
			return featurestore.DoubleValue(float64(k.Int64Val)), nil
		}
	case *pb.Value_DoubleVal:
		if want == featurestore.KindDouble {
			return featurestore.DoubleValue(k.DoubleVal), nil
		}
	case *pb.Value_BoolVal:
		if want == featurestore.KindBool {
			return featurestore.BoolValue(k.BoolVal), nil
		}
	}
	return featurestore.Value{}, fmt.Errorf("want a %s value, got %s", want, valueKindName(v))
}

// computeODs returns the read results of ne entities with the selection's
// on-demand views computed: vals holds the stored views' results,
// len(sel.views) per entity; the result holds sel.width per entity, the
// on-demand views' after the stored ones.
func (sel *selection) computeODs(sc *scratch, vals [][]window.FeatureValue, ne int, req []featurestore.Value, stride int, m *Metrics) [][]window.FeatureValue {
	nv, w := len(sel.views), sel.width
	all := make([][]window.FeatureValue, ne*w)
	per := 0
	for _, s := range sel.ods {
		per += len(s.od.feats)
	}
	out := make([]window.FeatureValue, ne*per)
	// Request values go into interfaces once, not once per feature and row.
	reqAny := make([]any, len(req))
	for j, v := range req {
		reqAny[j] = v.Any()
	}
	for i := range ne {
		copy(all[i*w:i*w+nv], vals[i*nv:(i+1)*nv])
		for k, s := range sel.ods {
			res := out[:len(s.od.feats):len(s.od.feats)]
			out = out[len(s.od.feats):]
			s.compute(sc, res, vals[i*nv:(i+1)*nv], reqAny[i*stride:], m)
			all[i*w+nv+k] = res
		}
	}
	return all
}

// compute fills res, by feature of the on-demand view, with the requested
// features for one entity, whose stored views' results are views and
// request values req (by selection.requestFields, nil for null).
func (s *selOD) compute(sc *scratch, res []window.FeatureValue, views [][]window.FeatureValue, req []any, m *Metrics) {
	od := s.od
	// Each value goes into an interface once for all the view's features.
	sc.odVals = slices.Grow(sc.odVals[:0], len(od.vars))[:len(od.vars)]
	clear(sc.odVals)
	for v, x := range od.vars {
		if x.view == nil {
			if s.reqs[v] >= 0 {
				sc.odVals[v] = req[s.reqs[v]]
			}
			continue
		}
		if s.views[v] < 0 {
			continue // not read: no requested feature uses it
		}
		fv := &views[s.views[v]][x.index]
		if fv.Status == window.StatusPresent {
			sc.odVals[v] = fv.Value.Any()
		}
	}
	for _, fi := range s.feats {
		f := od.feats[fi]
		e := f.Expr()
		// An input without a value gives its status: error before not
		// found before expired before null.
		st := window.StatusPresent
		for _, v := range e.Uses() {
			x := od.vars[v]
			if x.view == nil {
				if sc.odVals[v] == nil && st == window.StatusPresent {
					st = window.StatusNull
				}
				continue
			}
			st = worse(st, views[s.views[v]][x.index].Status)
		}
		if st != window.StatusPresent {
			res[fi] = window.FeatureValue{Status: st}
			continue
		}
		val, err := sc.ev.EvalBoxed(e, sc.odVals)
		if err != nil {
			m.onDemandError(od.name, f.Name)
		}
		if err != nil || val.IsNull() {
			res[fi] = window.FeatureValue{Status: window.StatusNull}
			continue
		}
		res[fi] = window.FeatureValue{Status: window.StatusPresent, Value: val}
	}
}

// worse returns the status an on-demand feature takes from two of its
// inputs' statuses: error over not found over expired over null over
// present. An input that could not be read (error) makes the feature
// unknown, not missing: it is not computed as if the input had no event.
func worse(a, b window.Status) window.Status {
	rank := func(s window.Status) int {
		switch s {
		case window.StatusError:
			return 4
		case window.StatusNotFound:
			return 3
		case window.StatusExpired:
			return 2
		case window.StatusNull:
			return 1
		}
		return 0
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}
