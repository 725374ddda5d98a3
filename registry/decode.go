package registry

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The decoder turns a YAML node tree into definition structs, driven by their
// struct tags: yaml (the field name), required, default and doc.
// It records the position of every
// object and field, and reports every problem it meets rather than stopping at
// the first. The JSON Schema and the reference page read the same tags.

type nodeUnmarshaler interface {
	unmarshalNode(n *yaml.Node) error
}

// nodeError is an error of unmarshalNode about a node within the one it
// was given (an element of a list), which is where it is reported.
type nodeError struct {
	n   *yaml.Node
	err error
}

func (e *nodeError) Error() string { return e.err.Error() }
func (e *nodeError) Unwrap() error { return e.err }

type posSetter interface {
	setPos(p Pos, fields map[string]Pos, bad map[string]bool)
}

var (
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	nodeUnmarshalerType = reflect.TypeFor[nodeUnmarshaler]()
	durationType        = reflect.TypeFor[Duration]()
	windowType          = reflect.TypeFor[Window]()
	featureRefType      = reflect.TypeFor[FeatureRef]()
)

type decoder struct {
	file string
	errs *errs
	// aliasNodes counts the nodes the aliases of the file's documents so
	// far expand to.
	aliasNodes int
}

// maxAliasNodes bounds the nodes that aliases may add to one file when the
// decoder expands them at each use. Without a bound, a few kilobytes of
// aliases of aliases ("billion laughs") expand to millions of nodes and
// gigabytes; no definition file comes near it.
const maxAliasNodes = 1_000_000

// aliasBomb adds the nodes the aliases in the document root expand to
// (counting aliases within what an alias names) to the file's count, and
// returns the alias at which the count passes maxAliasNodes, or nil. It
// takes time linear in the document's size, not in the expansion.
func (d *decoder) aliasBomb(root *yaml.Node) *yaml.Node {
	sizes := map[*yaml.Node]int{}
	var size func(n *yaml.Node) int
	size = func(n *yaml.Node) int {
		if n == nil {
			return 0
		}
		if s, ok := sizes[n]; ok {
			return s
		}
		sizes[n] = maxAliasNodes + 1 // a node that contains itself
		s := 1
		if n.Kind == yaml.AliasNode {
			s = size(n.Alias)
		}
		for _, c := range n.Content {
			s = min(s+size(c), maxAliasNodes+1)
		}
		sizes[n] = s
		return s
	}
	var walk func(n *yaml.Node) *yaml.Node
	walk = func(n *yaml.Node) *yaml.Node {
		if n.Kind == yaml.AliasNode {
			if d.aliasNodes = min(d.aliasNodes+size(n.Alias), maxAliasNodes+1); d.aliasNodes > maxAliasNodes {
				return n
			}
			return nil
		}
		for _, c := range n.Content {
			if a := walk(c); a != nil {
				return a
			}
		}
		return nil
	}
	return walk(root)
}

func (d *decoder) pos(n *yaml.Node) Pos { return Pos{File: d.file, Line: n.Line, Col: n.Column} }

func (d *decoder) fail(n *yaml.Node, ctx, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if ctx != "" {
		msg = ctx + ": " + msg
	}
	d.errs.add(d.pos(n), "%s", msg)
}

// fieldInfo describes one decodable struct field.
type fieldInfo struct {
	index    int
	name     string
	required bool
	def      string
	doc      string
	missing  string // added to the error of a required field left out
}

func structFields(t reflect.Type) []fieldInfo {
	var out []fieldInfo
	for i := range t.NumField() {
		sf := t.Field(i)
		name := sf.Tag.Get("yaml")
		if name == "" || name == "-" || !sf.IsExported() {
			continue
		}
		out = append(out, fieldInfo{
			index:    i,
			name:     name,
			required: sf.Tag.Get("required") == "true",
			def:      sf.Tag.Get("default"),
			doc:      sf.Tag.Get("doc"),
			missing:  sf.Tag.Get("missing"),
		})
	}
	return out
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func describeNode(n *yaml.Node) string {
	n = resolveAlias(n)
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!int":
			return "integer " + n.Value
		case "!!float":
			return "number " + n.Value
		case "!!bool":
			return "boolean " + n.Value
		case "!!str":
			return strconv.Quote(n.Value)
		}
		return n.ShortTag() + " " + strconv.Quote(n.Value)
	}
	return "an unsupported node"
}

var (
	// leadingZeroRE matches integers that YAML 1.1, and so the parser,
	// reads as octal (017 is 15), and YAML 1.2 as decimal (017 is 17).
	// The parser reads 08 and 09, not octal, as floats: refused too.
	leadingZeroRE = regexp.MustCompile(`^[-+]?0[0-9_]+$`)
	// prefixedIntRE matches the hexadecimal, octal and binary integers the
	// parser accepts (0x1F, 0o17, 0b101).
	prefixedIntRE = regexp.MustCompile(`^[-+]?0[xXoObB]`)
)

// yamlInt reads the integer of a scalar the parser resolved as one. Only
// decimal digits are accepted, so that every YAML reader (an editor, a
// linter, another tool reading the definitions) sees the same number.
func yamlInt(n *yaml.Node) (int64, error) {
	switch {
	case leadingZeroRE.MatchString(n.Value):
		return 0, fmt.Errorf("integer %s: write it without the leading zero (YAML 1.1 reads a leading zero as octal, YAML 1.2 does not)", n.Value)
	case prefixedIntRE.MatchString(n.Value):
		return 0, fmt.Errorf("integer %s: write it in decimal digits", n.Value)
	}
	// Base 0 for the underscores the parser accepts (1_000); the prefixes
	// that base 0 would read are refused above.
	i, err := strconv.ParseInt(n.Value, 0, 64)
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("integer %s out of range", n.Value)
	}
	if err != nil {
		return 0, fmt.Errorf("expected an integer, got %q", n.Value)
	}
	return i, nil
}

// expected says in words what a value of type t looks like.
func expected(t reflect.Type) string {
	switch t {
	case durationType:
		return `a duration like "10m"`
	case windowType:
		return `a duration like "1h", or "lifetime"`
	case featureRefType:
		return `a feature reference like "view:feature"`
	}
	if e, ok := reflect.New(t).Elem().Interface().(enum); ok {
		return "one of " + strings.Join(e.enumValues(), ", ")
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	case reflect.Pointer:
		return expected(t.Elem())
	}
	return t.String()
}

// decode fills v (settable) from n. ctx names the enclosing object for
// messages; rec records the position of n under path in the enclosing
// object's field map. It reports whether v was decoded without error.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, ctx, path string, rec map[string]Pos) bool {
	n = resolveAlias(n)
	if rec != nil && path != "" {
		rec[path] = d.pos(n)
	}
	t := v.Type()
	where := ctx
	if path != "" {
		if where != "" {
			where += ": "
		}
		where += path
	}

	if reflect.PointerTo(t).Implements(nodeUnmarshalerType) {
		if err := v.Addr().Interface().(nodeUnmarshaler).unmarshalNode(n); err != nil {
			at := n
			if ne := (*nodeError)(nil); errors.As(err, &ne) {
				at = ne.n
			}
			d.fail(at, where, "%v", err)
			return false
		}
		return true
	}
	if reflect.PointerTo(t).Implements(textUnmarshalerType) {
		// A duration of 0 may be written bare: YAML reads it as an integer.
		bareZero := t == durationType && n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" && n.Value == "0"
		if !bareZero && (n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str") {
			d.fail(n, where, "expected %s, got %s", expected(t), describeNode(n))
			return false
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.fail(n, where, "%v", err)
			return false
		}
		return true
	}

	switch t.Kind() {
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
			d.fail(n, where, "expected a string, got %s", describeNode(n))
			return false
		}
		v.SetString(n.Value)
		return true
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.fail(n, where, "expected true or false, got %s", describeNode(n))
			return false
		}
		// An explicit tag (!!bool yes) passes the check above with any
		// value.
		b, err := strconv.ParseBool(strings.ToLower(n.Value))
		if err != nil {
			d.fail(n, where, "expected true or false, got %q", n.Value)
			return false
		}
		v.SetBool(b)
		return true
	case reflect.Int, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" && !leadingZeroRE.MatchString(n.Value) {
			d.fail(n, where, "expected an integer, got %s", describeNode(n))
			return false
		}
		i, err := yamlInt(n)
		if err == nil && v.OverflowInt(i) {
			err = fmt.Errorf("integer %s out of range", n.Value)
		}
		if err != nil {
			d.fail(n, where, "%v", err)
			return false
		}
		v.SetInt(i)
		return true
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		ok := d.decode(n, p.Elem(), ctx, path, rec)
		if ok || t.Elem().Kind() == reflect.Struct {
			v.Set(p)
		}
		return ok
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, where, "expected a list, got %s", describeNode(n))
			return false
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		ok := true
		for i, c := range n.Content {
			elemPath := fmt.Sprintf("%s[%d]", path, i)
			et := t.Elem()
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct && !reflect.PointerTo(et).Implements(textUnmarshalerType) {
				// Nested objects are named by their name field where they
				// have one: feature "amount_sum_1h", not features[3].
				label := elemPath
				if name := mappingName(c); name != "" {
					label = labelFor(path) + " " + strconv.Quote(name)
				}
				if rec != nil {
					rec[elemPath] = d.pos(resolveAlias(c))
				}
				nctx := label
				if ctx != "" {
					nctx = ctx + ": " + label
				}
				ok = d.decode(c, s.Index(i), nctx, "", nil) && ok
				continue
			}
			ok = d.decode(c, s.Index(i), ctx, elemPath, rec) && ok
		}
		v.Set(s)
		return ok
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.fail(n, where, "expected a mapping, got %s", describeNode(n))
			return false
		}
		m := reflect.MakeMapWithSize(t, len(n.Content)/2)
		seen := map[string]*yaml.Node{}
		ok := true
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := resolveAlias(n.Content[i]), n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
				d.fail(k, where, "expected a string key, got %s", describeNode(k))
				ok = false
				continue
			}
			if first, dup := seen[k.Value]; dup {
				d.fail(k, where, "key %q given twice (first at line %d:%d)", k.Value, first.Line, first.Column)
				ok = false
				continue
			}
			seen[k.Value] = k
			if rec != nil {
				rec[keyField(path+"."+k.Value)] = d.pos(k)
			}
			ev := reflect.New(t.Elem()).Elem()
			if d.decode(val, ev, ctx, path+"."+k.Value, rec) {
				m.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), ev)
			} else {
				ok = false
			}
		}
		v.Set(m)
		return ok
	case reflect.Struct:
		if path != "" {
			ctx = where
		}
		return d.decodeStruct(n, v, ctx, nil)
	}
	d.fail(n, where, "cannot decode %s", t)
	return false
}

// labelFor names the elements of the list field path in messages.
func labelFor(path string) string {
	switch path {
	case "features":
		return "feature"
	case "join_keys":
		return "join key"
	}
	return strings.TrimSuffix(path, "s")
}

// mappingName returns the value of the "name" key of a mapping node, if any.
func mappingName(n *yaml.Node) string {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

// decodeStruct fills the struct v from the mapping n. Keys in skip are
// accepted and ignored (the document's kind).
func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, ctx string, skip map[string]bool) bool {
	t := v.Type()
	fields := structFields(t)
	if n.Kind != yaml.MappingNode {
		d.fail(n, ctx, "expected a mapping, got %s", describeNode(n))
		// The empty object still takes part in the checks (a feature of
		// its view, say): it is where the value was, and every field of
		// it failed, so that no check reports it again.
		if ps, isPS := v.Addr().Interface().(posSetter); isPS {
			bad := make(map[string]bool, len(fields))
			for _, f := range fields {
				bad[f.name] = true
			}
			ps.setPos(d.pos(n), nil, bad)
		}
		return false
	}
	byName := make(map[string]fieldInfo, len(fields))
	for _, f := range fields {
		byName[f.name] = f
	}
	rec := map[string]Pos{}
	bad := map[string]bool{}
	seen := map[string]*yaml.Node{}
	ok := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolveAlias(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.fail(k, ctx, "expected a field name, got %s", describeNode(k))
			ok = false
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.fail(k, ctx, "field %q given twice (first at line %d:%d)", k.Value, first.Line, first.Column)
			ok = false
			continue
		}
		seen[k.Value] = k
		if skip[k.Value] {
			continue
		}
		f, known := byName[k.Value]
		if !known {
			d.fail(k, ctx, "unknown field %q%s", k.Value, suggest(k.Value, fields))
			ok = false
			continue
		}
		if isNull(resolveAlias(val)) {
			// "description:" with nothing after it is the field left out:
			// not recorded, so that checks of whether a field was given
			// apply the default. A required one is reported below.
			continue
		}
		if !d.decode(val, v.Field(f.index), ctx, f.name, rec) {
			bad[f.name] = true
			ok = false
		}
	}
	for _, f := range fields {
		if !f.required {
			continue
		}
		if _, given := seen[f.name]; !given {
			d.fail(n, ctx, "missing required field %q%s", f.name, f.missing)
			bad[f.name] = true
			ok = false
		} else if k := seen[f.name]; !bad[f.name] && isEmpty(v.Field(f.index)) {
			d.fail(k, ctx, "field %q must not be empty", f.name)
			bad[f.name] = true
			ok = false
		}
	}
	if ps, isPS := v.Addr().Interface().(posSetter); isPS {
		ps.setPos(d.pos(n), rec, bad)
	}
	return ok
}

// suggest proposes the known field nearest to an unknown one.
func suggest(name string, fields []fieldInfo) string {
	best, bestDist := "", 3
	for _, f := range fields {
		if dist := editDistance(name, f.name); dist < bestDist {
			best, bestDist = f.name, dist
		}
	}
	if best == "" {
		names := make([]string, len(fields))
		for i, f := range fields {
			names[i] = f.name
		}
		return " (known fields: " + strings.Join(names, ", ") + ")"
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// isEmpty reports whether a required field given holds nothing: an empty
// string, list, map or mapping. A duration of 0s is a value (allowed_lateness:
// 0s accepts no event out of order).
func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Slice, reflect.Map:
		return v.Len() == 0
	}
	if v.Type() == reflect.TypeFor[Duration]() {
		return false
	}
	return v.IsZero()
}
