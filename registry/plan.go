package registry

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Action is what a plan does to one object.
type Action string

// The actions of a plan.
const (
	Create Action = "create"
	Update Action = "update"
	Delete Action = "delete"
)

// FieldChange is one changed field of an object, by dotted path
// (features.amount_sum_1h.window). Old or New is empty when the field was
// added or removed.
type FieldChange struct {
	Path     string
	Old, New string
	// Breaking is set when the change alters what an existing feature
	// means, so that values computed before and after it disagree.
	Breaking bool
}

// Change is what a plan does to one object.
type Change struct {
	Kind   string
	Name   string
	Action Action
	Fields []FieldChange // for updates
}

// Breaking reports whether any field change is breaking.
func (c Change) Breaking() bool {
	return slices.ContainsFunc(c.Fields, func(f FieldChange) bool { return f.Breaking })
}

// Plan is the difference between the registry in use and new definitions.
type Plan struct {
	Changes []Change
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool { return len(p.Changes) == 0 }

// Breaking returns the breaking field changes, as "kind name: path".
func (p *Plan) Breaking() []string {
	var out []string
	for _, c := range p.Changes {
		for _, f := range c.Fields {
			if f.Breaking {
				out = append(out, fmt.Sprintf("%s %q: %s", kindLabel(c.Kind), c.Name, f.Path))
			}
		}
	}
	return out
}

// Diff compares the registry in use (old, nil for none) with new definitions.
func Diff(old, new *Registry) *Plan {
	if old == nil {
		old = Empty()
	}
	p := &Plan{}
	diffKind(p, KindEntity, objMap(old.Entities), objMap(new.Entities))
	diffKind(p, KindSource, objMap(old.Sources), objMap(new.Sources))
	diffKind(p, KindFeatureView, objMap(old.Views), objMap(new.Views))
	diffKind(p, KindFeatureService, objMap(old.Services), objMap(new.Services))
	return p
}

// objMap turns objects into generic JSON trees keyed by name, with feature
// lists keyed by feature name so that a diff follows features, not indexes.
func objMap[T any](objs []T) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, o := range objs {
		b, _ := json.Marshal(o)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		if feats, ok := m["features"].([]any); ok {
			byName := map[string]any{}
			order := make([]string, 0, len(feats))
			for _, f := range feats {
				if fm, ok := f.(map[string]any); ok {
					name, _ := fm["name"].(string)
					byName[name] = fm
					order = append(order, name)
				} else {
					s := fmt.Sprint(f)
					byName[s] = s
					order = append(order, s)
				}
			}
			m["features"] = byName
			m["feature order"] = strings.Join(order, ", ")
		}
		out[m["name"].(string)] = m
	}
	return out
}

func diffKind(p *Plan, kind string, old, new map[string]map[string]any) {
	names := slices.Sorted(maps.Keys(old))
	for n := range new {
		if _, ok := old[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		o, inOld := old[name]
		n, inNew := new[name]
		switch {
		case !inOld:
			p.Changes = append(p.Changes, Change{Kind: kind, Name: name, Action: Create})
		case !inNew:
			p.Changes = append(p.Changes, Change{Kind: kind, Name: name, Action: Delete})
		default:
			var fields []FieldChange
			diffValue(kind, "", o, n, &fields)
			if len(fields) > 0 {
				p.Changes = append(p.Changes, Change{Kind: kind, Name: name, Action: Update, Fields: fields})
			}
		}
	}
}

func diffValue(kind, path string, o, n any, out *[]FieldChange) {
	om, oIsMap := o.(map[string]any)
	nm, nIsMap := n.(map[string]any)
	if oIsMap && nIsMap {
		keys := slices.Sorted(maps.Keys(om))
		for k := range nm {
			if _, ok := om[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			ov, inO := om[k]
			nv, inN := nm[k]
			switch {
			case !inO:
				*out = append(*out, FieldChange{Path: p, New: render(nv), Breaking: breaking(kind, p, false, true)})
			case !inN:
				*out = append(*out, FieldChange{Path: p, Old: render(ov), Breaking: breaking(kind, p, true, false)})
			default:
				diffValue(kind, p, ov, nv, out)
			}
		}
		return
	}
	if a, b := render(o), render(n); a != b {
		*out = append(*out, FieldChange{Path: path, Old: a, New: b, Breaking: breaking(kind, path, true, true)})
	}
}

func render(v any) string {
	s, ok := v.(string)
	if !ok {
		b, _ := json.Marshal(v)
		s = string(b)
	}
	if len(s) > 200 {
		// Descriptor sets and the like: a digest says whether they changed.
		sum := sha256.Sum256([]byte(s))
		return fmt.Sprintf("<%d bytes, sha256:%x>", len(s), sum[:8])
	}
	return s
}

// breaking decides whether changing path (present before and/or after)
// alters what existing features mean.
func breaking(kind, path string, before, after bool) bool {
	_ = after
	parts := strings.Split(path, ".")
	switch kind {
	case KindEntity:
		return parts[0] == "join_keys"
	case KindSource:
		switch parts[0] {
		case "keys", "timestamp", "format", "protobuf":
			return true
		case "fields":
			// A new field means nothing yet, and removing a field a
			// feature reads is a validation error; a new type for a field
			// is a change of meaning.
			return before && after
		}
	case KindFeatureView:
		switch parts[0] {
		case "entity", "source", "tile":
			return true
		case "features":
			// Adding or removing a whole feature is not breaking; a
			// changed computation of an existing one is.
			if len(parts) < 3 {
				return false
			}
			switch parts[2] {
			case "aggregation", "field", "type", "window", "n", "precision", "filter":
				return true
			}
			return false
		}
	}
	return false
}

// Render writes the plan in a readable form.
func (p *Plan) Render(w io.Writer) {
	if p.Empty() {
		fmt.Fprintln(w, "No changes.")
		return
	}
	counts := map[Action]int{}
	for _, c := range p.Changes {
		counts[c.Action]++
		sign := map[Action]string{Create: "+", Update: "~", Delete: "-"}[c.Action]
		fmt.Fprintf(w, "  %s %s %q\n", sign, kindLabel(c.Kind), c.Name)
		for _, f := range c.Fields {
			mark := ""
			if f.Breaking {
				mark = "   [BREAKING]"
			}
			switch {
			case f.Old == "":
				fmt.Fprintf(w, "      + %s: %s%s\n", f.Path, f.New, mark)
			case f.New == "":
				fmt.Fprintf(w, "      - %s: %s%s\n", f.Path, f.Old, mark)
			default:
				fmt.Fprintf(w, "      ~ %s: %s -> %s%s\n", f.Path, f.Old, f.New, mark)
			}
		}
	}
	fmt.Fprintf(w, "Plan: %d to create, %d to change, %d to delete.\n", counts[Create], counts[Update], counts[Delete])
	if b := p.Breaking(); len(b) > 0 {
		fmt.Fprintf(w, "%d breaking change(s): they alter what existing features mean. Give the feature a new name, or apply with --allow-breaking.\n", len(b))
	}
}
