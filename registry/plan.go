package registry

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
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
	// Reason, when set, says why a breaking change is one, where the
	// field's name does not.
	Reason string
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
	diffKind(p, KindEntity, objMap(old.Entities), objMap(new.Entities), nil)
	diffKind(p, KindSource, objMap(old.Sources), objMap(new.Sources), func(name string, fields []FieldChange) []FieldChange {
		return refineSource(old.Source(name), new.Source(name), fields)
	})
	diffKind(p, KindFeatureView, objMap(old.Views), objMap(new.Views), func(name string, fields []FieldChange) []FieldChange {
		return refineView(old.View(name), new.View(name), fields)
	})
	diffKind(p, KindOnDemandFeatureView, objMap(old.OnDemandViews), objMap(new.OnDemandViews), func(name string, fields []FieldChange) []FieldChange {
		return refineOnDemand(old, new, name, fields)
	})
	diffKind(p, KindFeatureService, objMap(old.Services), objMap(new.Services), nil)
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

// diffKind compares the objects of one kind. refine, when given, revises
// the field changes of an updated object where the generic JSON diff cannot
// tell what they mean.
func diffKind(p *Plan, kind string, old, new map[string]map[string]any, refine func(name string, fields []FieldChange) []FieldChange) {
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
			if len(fields) > 0 && refine != nil {
				fields = refine(name, fields)
			}
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
// alters what existing features mean. refineSource and refineView revise
// what it cannot decide from the path alone.
func breaking(kind, path string, before, after bool) bool {
	parts := strings.Split(path, ".")
	switch kind {
	case KindEntity:
		return parts[0] == "join_keys"
	case KindSource:
		switch parts[0] {
		case "timestamp", "format":
			return true
		case "keys":
			// A new mapping gives a key to views of another entity, and
			// one no view uses can go (removing one a view uses is a
			// validation error); reading an existing key from another
			// field moves every entity's state.
			return len(parts) == 1 || before && after
		case "kafka":
			// The online store fences each entity's events per topic
			// (featurestore/online), so on another topic the fences start
			// over while the tiles stay: events already counted, from a
			// mirror say, count again. Brokers and connections name where
			// the topic is, not which one.
			return len(parts) > 1 && parts[1] == "topic"
		case "protobuf":
			// The file's name says nothing of what it holds, and the
			// descriptor itself is judged by refineSource, field by field.
			// Another message is another event type.
			return len(parts) == 1 || parts[1] == "message"
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
	case KindOnDemandFeatureView:
		switch parts[0] {
		case "features":
			// As in a feature view; every feature has a type, so a type
			// is never declared or dropped.
			return len(parts) == 3 && (parts[2] == "expression" || parts[2] == "type")
		case "inputs", "request_fields":
			// A variable read elsewhere, of another type, or gone changes
			// what an expression that uses it computes, even when the
			// expression is the same (an input turned into a request field
			// of its name). A new request field is needed by no lookup of
			// an existing feature: serving and export ask only for the
			// request fields the requested features use. refineOnDemand
			// judges a new input.
			return before
		}
	}
	return false
}

// refineOnDemand judges a new input of an on-demand view: the entities of
// all its inputs are what the view's features are looked up by, so an input
// of an entity that no other input has makes every lookup of the existing
// features give that entity's join keys, or fail.
func refineOnDemand(old, new *Registry, name string, fields []FieldChange) []FieldChange {
	o, n := old.OnDemandView(name), new.OnDemandView(name)
	if o == nil || n == nil {
		return fields
	}
	entities := map[string]bool{}
	for _, ref := range o.Inputs {
		if v := old.View(ref.View); v != nil {
			entities[v.Entity] = true
		}
	}
	for i, f := range fields {
		input, ok := strings.CutPrefix(f.Path, "inputs.")
		if !ok || f.Old != "" {
			continue
		}
		ref, ok := n.Inputs[input]
		if v := new.View(ref.View); ok && v != nil {
			fields[i].Breaking = !entities[v.Entity]
		}
	}
	return fields
}

// refineView judges a feature's declared type by the type the feature
// serves: an aggregation's type is optional and can only be its output
// type, so declaring or dropping it changes nothing. The change still shows,
// since the definitions, and so the version's digest, differ.
func refineView(o, n *FeatureView, fields []FieldChange) []FieldChange {
	for i, f := range fields {
		if f.Path == "ttl" && largerTTL(o, n) {
			// Ingest lets an entity's hash expire with the view's ttl,
			// while the offline log keeps every event, so a last value
			// within the new ttl but past the old one is found by exports
			// and not by lookups.
			fields[i].Breaking = true
			fields[i].Reason = "a last value whose Redis key expired under the old ttl is missing online, not in exports, until written again"
			continue
		}
		rest, ok := strings.CutPrefix(f.Path, "features.")
		if !ok {
			continue
		}
		name, ok := strings.CutSuffix(rest, ".type")
		if !ok {
			continue
		}
		if of, nf := o.Feature(name), n.Feature(name); of != nil && nf != nil {
			fields[i].Breaking = servedType(of) != servedType(nf)
		}
	}
	return fields
}

// largerTTL reports whether n keeps last values that o had longer (a ttl of
// zero keeps them for ever), for a last-value feature that both have.
func largerTTL(o, n *FeatureView) bool {
	if o.TTL == 0 || n.TTL != 0 && n.TTL <= o.TTL {
		return false
	}
	return slices.ContainsFunc(n.Features, func(f *Feature) bool {
		of := o.Feature(f.Name)
		return f.IsLastValue() && of != nil && of.IsLastValue()
	})
}

// servedType is the type of a feature's value: the declared one, or an
// aggregation's output type when none is declared.
func servedType(f *Feature) ValueType {
	if t := f.ValueType(); t != "" {
		return t
	}
	return f.Type
}

// refineSource replaces the change of a Protobuf source's descriptor set,
// which the generic diff sees as opaque bytes, with the changes of the
// message's fields. Only a change of a field the source reads before and
// after is breaking: producers add and retire other fields all the time.
func refineSource(o, n *Source, fields []FieldChange) []FieldChange {
	if o == nil || n == nil || o.Protobuf == nil || n.Protobuf == nil {
		return fields
	}
	at := slices.IndexFunc(fields, func(f FieldChange) bool { return f.Path == "protobuf.descriptor" })
	if at >= 0 {
		fields[at].Old, fields[at].New = fileDigest(o.Protobuf.Descriptor), fileDigest(n.Protobuf.Descriptor)
		fields[at].Breaking = false
	} else {
		at = slices.IndexFunc(fields, func(f FieldChange) bool { return f.Path == "protobuf.message" })
	}
	if at < 0 {
		return fields
	}
	omd, oerr := o.Protobuf.MessageDescriptor()
	nmd, nerr := n.Protobuf.MessageDescriptor()
	if oerr != nil || nerr != nil {
		// Not seen with validated definitions; without the fields, any
		// change may be one of meaning.
		fields[at].Breaking = true
		return fields
	}
	// A field read only before is no longer read, and one read only after
	// has no values yet that it could change.
	read, nread := protoPathsRead(o), protoPathsRead(n)
	maps.DeleteFunc(read, func(p string, _ bool) bool { return !nread[p] })
	paths := map[string]bool{}
	for p := range read {
		paths[p] = true
	}
	for _, md := range []protoreflect.MessageDescriptor{omd, nmd} {
		for i := range md.Fields().Len() {
			paths[string(md.Fields().Get(i).Name())] = true
		}
	}
	var changes []FieldChange
	for _, p := range slices.Sorted(maps.Keys(paths)) {
		a, b := describeProtoField(omd, p), describeProtoField(nmd, p)
		if a != b {
			changes = append(changes, FieldChange{Path: "protobuf.descriptor." + p, Old: a, New: b, Breaking: read[p]})
		}
	}
	return slices.Insert(fields, at+1, changes...)
}

// protoPathsRead returns the message fields a source reads, with every
// message field on the way to a nested one.
func protoPathsRead(o *Source) map[string]bool {
	out := map[string]bool{}
	add := func(path string) {
		if path == "" {
			return
		}
		parts := strings.Split(path, ".")
		for i := range parts {
			out[strings.Join(parts[:i+1], ".")] = true
		}
	}
	add(o.Timestamp.Field)
	for _, p := range o.Keys {
		add(p)
	}
	for p := range o.Fields {
		add(p)
	}
	add(o.EventIDField)
	return out
}

// describeProtoField renders the field at a dot-separated path of md like
// its declaration, "optional double = 3", with what decoding depends on:
// cardinality, kind or message type, and number. It returns "" when there
// is no such field.
func describeProtoField(md protoreflect.MessageDescriptor, path string) string {
	parts := strings.Split(path, ".")
	for i, name := range parts {
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return ""
		}
		if i == len(parts)-1 {
			typ := fd.Kind().String()
			switch fd.Kind() {
			case protoreflect.MessageKind, protoreflect.GroupKind:
				typ = string(fd.Message().FullName())
			case protoreflect.EnumKind:
				typ = string(fd.Enum().FullName())
			}
			return fmt.Sprintf("%s %s = %d", fd.Cardinality(), typ, fd.Number())
		}
		if fd.Message() == nil || fd.IsList() || fd.IsMap() {
			return ""
		}
		md = fd.Message()
	}
	return ""
}

// fileDigest renders a file's contents by size and digest, the start of
// what sha256sum prints for it.
func fileDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return fmt.Sprintf("<%d bytes, sha256:%x>", len(b), sum[:8])
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
			switch {
			case f.Breaking && f.Reason != "":
				mark = "   [BREAKING: " + f.Reason + "]"
			case f.Breaking:
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
