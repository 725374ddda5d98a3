package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/featurestore/featurestore/featurestore/derive"
)

// The JSON Schema (registry/featurestore.schema.json) and the reference page
// (docs/yaml-reference.md) are generated from the struct tags the decoder
// reads — yaml, required, default, doc — and from the enum values of the
// field types, so neither can name a field the loader does not know or miss
// one it does. TestGenerated fails when the committed files are stale.
//
// The schema checks one document on its own, as an editor sees it; rules that
// involve other definitions (references, windows against the view's tile,
// field types declared by the source) are left to the loader.

// durationUnits are the units ParseDuration accepts, longest first where one
// is a prefix of another.
const durationUnits = "ms|s|m|h|d"

var (
	// durationPattern matches what ParseDuration accepts, leaving out only
	// durations too long for an int64 of nanoseconds.
	durationPattern = `^([0-9]+(` + durationUnits + `))+$|^0$`
	// windowPattern matches what Window.UnmarshalText accepts.
	windowPattern = `^lifetime$|` + durationPattern
	// featureRefPattern matches what ParseFeatureRef accepts.
	featureRefPattern = "^" + unanchored(nameRE) + ":(" + unanchored(nameRE) + `|\*)$`
	// positiveDurationPattern matches the durations durationPattern does
	// but 0: a component with a number other than 0.
	positiveDurationPattern = `^([0-9]+(` + durationUnits + `))*0*[1-9][0-9]*(` + durationUnits + `)([0-9]+(` + durationUnits + `))*$`
	// tilePattern matches durations of whole seconds, at least 1s, as
	// checkView takes for a tile: milliseconds in thousands only, and a
	// component other than 0. It refuses "500ms500ms", which is 1s, as no
	// pattern can add the components up.
	tilePattern = `^([0-9]+(d|h|m|s)|[0-9]*000ms)*(0*[1-9][0-9]*(d|h|m|s)|0*[1-9][0-9]*000ms)([0-9]+(d|h|m|s)|[0-9]*000ms)*$`
	// inputRefRE matches the inputs of an on-demand view: a feature
	// reference that names one feature.
	inputRefRE = regexp.MustCompile("^" + unanchored(nameRE) + ":" + unanchored(nameRE) + "$")
	// brokerRE matches what checkBroker accepts: host:port with a host
	// (in brackets if it has colons) and a port from 1 to 65535.
	brokerRE = regexp.MustCompile(`^(\[[^\[\]]+\]|[^:\[\]]+):0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$`)

	literalType = reflect.TypeFor[Literal]()
)

// unanchored returns the pattern of re without its leading ^ and trailing $.
func unanchored(re *regexp.Regexp) string {
	return strings.TrimSuffix(strings.TrimPrefix(re.String(), "^"), "$")
}

// fieldRule narrows a field beyond what its Go type says, with the checks
// validate.go makes on the value alone. Rules are keyed by "Type.field"; a
// key that names no field makes the generators panic, so they cannot outlive
// the field they describe.
type fieldRule struct {
	pattern    *regexp.Regexp // the value, or each value of a map or list
	exclude    []string       // values pattern matches that are refused
	keyPattern *regexp.Regexp // each key of a map
	keyExclude []string       // keys keyPattern matches that are refused
	bounded    bool           // min and max apply
	min, max   int
	enum       []string // replaces the enum values of the field's type
	duration   string   // replaces the pattern of a duration, which 0 then does not match
}

var fieldRules = map[string]fieldRule{
	"Entity.name":              {pattern: nameRE},
	"JoinKey.name":             {pattern: nameRE},
	"Source.name":              {pattern: nameRE},
	"Source.keys":              {keyPattern: nameRE, pattern: fieldPathRE},
	"Source.fields":            {keyPattern: fieldPathRE},
	"Source.event_id_field":    {pattern: fieldPathRE},
	"Source.max_future_skew":   {duration: positiveDurationPattern},
	"Source.dedup_max_ids":     {bounded: true, min: 1, max: MaxDedupMaxIDs},
	"Kafka.topic":              {pattern: topicRE, exclude: reservedTopics},
	"Kafka.brokers":            {pattern: brokerRE},
	"Kafka.connection":         {pattern: nameRE},
	"Kafka.dead_letter_topic":  {pattern: topicRE, exclude: reservedTopics},
	"Timestamp.field":          {pattern: fieldPathRE},
	"FeatureView.name":         {pattern: nameRE},
	"FeatureView.tile":         {duration: tilePattern},
	"Feature.name":             {pattern: nameRE},
	"OnDemandFeatureView.name": {pattern: nameRE},
	// Variables are names that are not words of the expression language
	// (checkVarName); an input names one feature.
	"OnDemandFeatureView.inputs":         {keyPattern: nameRE, keyExclude: exprWords(), pattern: inputRefRE},
	"OnDemandFeatureView.request_fields": {keyPattern: nameRE, keyExclude: exprWords()},
	"OnDemandFeature.name":               {pattern: nameRE},
	// A last_n feature may declare its list type; ValueType's enum values
	// are the scalar types events carry.
	"Feature.type":        {enum: featureTypes()},
	"Feature.n":           {bounded: true, min: 1, max: MaxLastN},
	"Feature.precision":   {bounded: true, min: MinPrecision, max: MaxPrecision},
	"FeatureService.name": {pattern: nameRE},
}

// notAllFalse lists, by type, the boolean fields that may not all be false
// (checkView: a view neither online nor offline computes nothing). Left
// out, they are true.
var notAllFalse = map[string][]string{
	"FeatureView": {"online", "offline"},
}

// exprWords are the words of the expression language, which cannot name
// the variables of an on-demand view.
func exprWords() []string {
	return slices.Concat(exprKeywords, derive.Functions)
}

// featureTypes lists the types a feature may declare: the scalar types and
// the lists last_n makes of them.
func featureTypes() []string {
	scalars := ValueType("").enumValues()
	out := append([]string(nil), scalars...)
	for _, t := range scalars {
		out = append(out, string(ValueType(t).ListOf()))
	}
	return out
}

// ruleFor returns the rule of the named field of t.
func ruleFor(t reflect.Type, field string) (fieldRule, bool) {
	r, ok := fieldRules[t.Name()+"."+field]
	return r, ok
}

// checkRules panics when a rule names no field of the definition types.
func checkRules() {
	known := map[string]bool{}
	for _, t := range objectTypes() {
		for _, f := range structFields(t) {
			known[t.Name()+"."+f.name] = true
		}
	}
	for key := range fieldRules {
		if !known[key] {
			panic("registry: field rule " + key + " names no field")
		}
	}
	for typ, fields := range notAllFalse {
		for _, f := range fields {
			if !known[typ+"."+f] {
				panic("registry: rule notAllFalse " + typ + "." + f + " names no field")
			}
		}
	}
}

// isScalar reports whether values of t are written as YAML scalars (or, for
// Literal, lists of them) although t is a struct or a named number.
func isScalar(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(nodeUnmarshalerType) || p.Implements(textUnmarshalerType)
}

// objectOf returns the struct type whose objects a field of type t holds,
// through pointers, lists and maps, or nil for scalars.
func objectOf(t reflect.Type) reflect.Type {
	for {
		switch {
		case isScalar(t):
			return nil
		case t.Kind() == reflect.Pointer, t.Kind() == reflect.Slice, t.Kind() == reflect.Map:
			t = t.Elem()
		case t.Kind() == reflect.Struct:
			return t
		default:
			return nil
		}
	}
}

// objectTypes returns the kinds' types in kindOrder, each followed by the
// nested object types first reached from it, depth first in field order.
func objectTypes() []reflect.Type {
	seen := map[reflect.Type]bool{}
	var out []reflect.Type
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		if seen[t] {
			return
		}
		seen[t] = true
		out = append(out, t)
		for _, f := range structFields(t) {
			if o := objectOf(t.Field(f.index).Type); o != nil {
				walk(o)
			}
		}
	}
	for _, kind := range kindOrder {
		walk(kindTypes[kind])
	}
	return out
}

// defaultValue converts a default tag to the JSON value of a field of type t.
func defaultValue(t reflect.Type, def string) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isScalar(t) {
		return def
	}
	switch t.Kind() {
	case reflect.Bool:
		b, err := strconv.ParseBool(def)
		if err != nil {
			panic(fmt.Sprintf("registry: default %q of a %s: %v", def, t, err))
		}
		return b
	case reflect.Int, reflect.Int64:
		i, err := strconv.ParseInt(def, 10, 64)
		if err != nil {
			panic(fmt.Sprintf("registry: default %q of a %s: %v", def, t, err))
		}
		return i
	}
	return def
}

// JSONSchema returns a JSON Schema (draft 2020-12) of one definition
// document, pretty-printed with a trailing newline. It is the content of
// registry/featurestore.schema.json, which editors use to check and complete
// definitions as they are typed.
func JSONSchema() []byte {
	checkRules()
	defs := map[string]any{}
	for _, t := range objectTypes() {
		defs[t.Name()] = objectSchema(t)
	}
	var allOf []any
	for _, kind := range kindOrder {
		def := defs[kindTypes[kind].Name()].(map[string]any)
		def["properties"].(map[string]any)["kind"] = map[string]any{"const": kind}
		allOf = append(allOf, map[string]any{
			"if": map[string]any{
				"properties": map[string]any{"kind": map[string]any{"const": kind}},
				"required":   []string{"kind"},
			},
			"then": map[string]any{"$ref": "#/$defs/" + kindTypes[kind].Name()},
		})
	}
	root := map[string]any{
		"$schema": "https://json-schema.org/draft/2020-12/schema",
		"title":   "Feature store definition",
		"description": "One YAML document of feature store definitions: " + orList(kindOrder) + ". " +
			"Generated from the Go types of package registry; see docs/yaml-reference.md. " +
			"Rules that involve other definitions (references, windows against the view's tile, the source's field types) are checked when the definitions are loaded.",
		"type":     "object",
		"required": []string{"kind"},
		"properties": map[string]any{
			"kind": map[string]any{
				"description": "What the document defines.",
				"enum":        kindOrder,
			},
		},
		"allOf": allOf,
		"$defs": defs,
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(root); err != nil {
		panic("registry: encode JSON Schema: " + err.Error())
	}
	return b.Bytes()
}

// objectSchema is the schema of a mapping decoded into the struct t.
func objectSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	required := []string{}
	for _, f := range structFields(t) {
		props[f.name] = fieldSchema(t, f)
		if f.required {
			required = append(required, f.name)
		}
	}
	s := map[string]any{
		"type":                 "object",
		"properties":           props,
		"additionalProperties": false,
	}
	if len(required) > 0 {
		s["required"] = required
	}
	if fields := notAllFalse[t.Name()]; fields != nil {
		allFalse := map[string]any{}
		for _, f := range fields {
			allFalse[f] = map[string]any{"const": false}
		}
		s["not"] = map[string]any{"required": fields, "properties": allFalse}
	}
	return s
}

// orList joins items as "an a, b or c".
func orList(items []string) string {
	out := strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
	if strings.ContainsRune("AEIOU", rune(out[0])) {
		return "an " + out
	}
	return "a " + out
}

// nullable makes the schema s of an optional field take null too: the
// loader takes "description:" with nothing after it as not given.
func nullable(s map[string]any) map[string]any {
	null := map[string]any{"type": "null"}
	switch {
	case s["$ref"] != nil:
		out := map[string]any{"anyOf": []any{map[string]any{"$ref": s["$ref"]}, null}}
		for k, v := range s {
			if k != "$ref" {
				out[k] = v // the description and default
			}
		}
		return out
	case s["anyOf"] != nil:
		s["anyOf"] = append(s["anyOf"].([]any), null)
	case s["oneOf"] != nil:
		s["oneOf"] = append(s["oneOf"].([]any), null)
	case s["type"] != nil:
		s["type"] = []any{s["type"], "null"}
		if e, ok := s["enum"].([]string); ok {
			vals := make([]any, 0, len(e)+1)
			for _, v := range e {
				vals = append(vals, v)
			}
			s["enum"] = append(vals, nil)
		}
	default:
		panic(fmt.Sprintf("registry: no null for the schema %v", s))
	}
	return s
}

// fieldSchema is the schema of the field f of the struct t.
func fieldSchema(t reflect.Type, f fieldInfo) map[string]any {
	ft := t.Field(f.index).Type
	s := typeSchema(ft)
	if f.doc != "" {
		s["description"] = f.doc
	}
	if f.def != "" {
		s["default"] = defaultValue(ft, f.def)
	}
	rule, _ := ruleFor(t, f.name)
	if rule.enum != nil {
		s["enum"] = rule.enum
	}
	if rule.bounded {
		s["minimum"], s["maximum"] = rule.min, rule.max
	}
	if rule.duration != "" {
		if ft != durationType {
			panic("registry: a duration rule for " + t.Name() + "." + f.name)
		}
		delete(s, "anyOf")
		s["type"], s["pattern"] = "string", rule.duration
	}
	if rule.keyPattern != nil {
		names := map[string]any{"pattern": rule.keyPattern.String()}
		if rule.keyExclude != nil {
			names["not"] = map[string]any{"enum": rule.keyExclude}
		}
		s["propertyNames"] = names
	}
	if rule.pattern != nil {
		target := s
		switch ft.Kind() {
		case reflect.Map:
			target = s["additionalProperties"].(map[string]any)
		case reflect.Slice:
			target = s["items"].(map[string]any)
		}
		p := rule.pattern.String()
		if !f.required && ft.Kind() == reflect.String {
			// The loader takes an empty optional string as not given.
			p = "^$|" + p
		}
		target["pattern"] = p
		if rule.exclude != nil {
			target["not"] = map[string]any{"enum": rule.exclude}
		}
	}
	// The decoder rejects a required field that is present but empty.
	if f.required {
		switch s["type"] {
		case "string":
			if s["pattern"] == nil && s["enum"] == nil {
				s["minLength"] = 1
			}
		case "array":
			s["minItems"] = 1
		case "object":
			s["minProperties"] = 1
		}
		return s
	}
	return nullable(s)
}

// scalarTypes are the JSON types of the elements of a Literal.
var scalarTypes = []string{"string", "number", "boolean"}

// typeSchema is the schema of a value of type t, following the decoder's
// order of precedence: node unmarshalers, text unmarshalers, then kinds.
func typeSchema(t reflect.Type) map[string]any {
	switch t {
	case literalType:
		return map[string]any{"oneOf": []any{
			map[string]any{"type": scalarTypes},
			map[string]any{"type": "array", "items": map[string]any{"type": scalarTypes}},
		}}
	case durationType:
		// A bare 0 is an integer to YAML, and accepted.
		return map[string]any{"anyOf": []any{
			map[string]any{"type": "string", "pattern": durationPattern},
			map[string]any{"const": 0},
		}}
	case windowType:
		return map[string]any{"type": "string", "pattern": windowPattern}
	case featureRefType:
		return map[string]any{"type": "string", "pattern": featureRefPattern}
	}
	p := reflect.PointerTo(t)
	if p.Implements(nodeUnmarshalerType) {
		panic("registry: no JSON Schema for " + t.String())
	}
	if p.Implements(textUnmarshalerType) {
		// The decoder hands text unmarshalers YAML strings only.
		s := map[string]any{"type": "string"}
		if e, ok := reflect.New(t).Elem().Interface().(enum); ok {
			s["enum"] = e.enumValues()
		}
		return s
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Pointer:
		return typeSchema(t.Elem())
	case reflect.Slice:
		return map[string]any{"type": "array", "items": typeSchema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": typeSchema(t.Elem())}
	case reflect.Struct:
		return map[string]any{"$ref": "#/$defs/" + t.Name()}
	}
	panic("registry: no JSON Schema for " + t.String())
}
