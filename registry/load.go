package registry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// kindTypes maps each document kind to the struct it decodes into.
var kindTypes = map[string]reflect.Type{
	KindEntity:              reflect.TypeFor[Entity](),
	KindSource:              reflect.TypeFor[Source](),
	KindFeatureView:         reflect.TypeFor[FeatureView](),
	KindFeatureService:      reflect.TypeFor[FeatureService](),
	KindOnDemandFeatureView: reflect.TypeFor[OnDemandFeatureView](),
}

// kindOrder is the order kinds are listed in messages, plans and the schema.
var kindOrder = []string{KindEntity, KindSource, KindFeatureView, KindOnDemandFeatureView, KindFeatureService}

// LoadDir reads every *.yaml and *.yml file directly in dir (the extension
// in any case) but those whose names start with a dot, decodes and
// validates the definitions, and returns the Registry. When anything is wrong
// it returns no Registry and an ErrorList with every problem found.
func LoadDir(dir string) (*Registry, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read definitions: %w", err)
	}
	files := map[string][]byte{}
	var names []string
	for _, e := range entries {
		// In any case: a.YAML is a definitions file on file systems that
		// do not tell case apart, so it is one everywhere.
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read definitions: %w", err)
		}
		files[path] = b
		names = append(names, path)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("read definitions: no *.yaml or *.yml files in %s", dir)
	}
	return load(names, files, dir)
}

// LoadFiles decodes definitions held in memory, keyed by file name, as
// LoadDir does. Relative descriptor set paths are resolved against the file
// names' directories.
func LoadFiles(files map[string][]byte) (*Registry, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	return load(names, files, "")
}

func load(names []string, files map[string][]byte, _ string) (*Registry, error) {
	slices.Sort(names)
	e := &errs{}
	var docs []document
	for _, name := range names {
		docs = append(docs, parseFile(name, files[name], e)...)
	}
	r := &Registry{}
	for _, doc := range docs {
		r.add(doc.kind, doc.obj)
	}
	r.build(e)
	if len(e.list) > 0 {
		e.list.sort()
		return nil, e.list
	}
	return r, nil
}

type document struct {
	kind string
	obj  any
}

var (
	yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	// unknownAnchorRE matches the parser's error for an alias of no
	// anchor, which has no line.
	unknownAnchorRE = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)
	// characterErrorRE matches the parser's errors about a character that
	// badCharacter finds too.
	characterErrorRE = regexp.MustCompile(`tab|control character|UTF-8|cannot start any token`)
)

// badCharacter finds the first character that YAML refuses wherever it is:
// a byte that is not UTF-8, a control character, or a tab in the
// indentation of a line. The parser reports these at the line of the
// construct around them, without a column; here the position is exact
// (the column counts characters from 1).
//
// It reports the first such character on line from or after it. A tab after
// leading spaces is valid inside a block scalar, so the one it finds is
// only the cause of a parse error on the parser's line or after it, or when
// the parser's message is about a character.
func badCharacter(data []byte, from int) (Pos, string, bool) {
	line, col, indent := 1, 1, true
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		msg := ""
		switch {
		case r == utf8.RuneError && n == 1:
			msg = fmt.Sprintf("byte 0x%02x is not UTF-8", data[i])
		case r == '\n':
			line, col, indent = line+1, 0, true
		case r == '\t' && indent:
			msg = "a tab in the indentation (YAML indents with spaces)"
		case r != '\t' && r != '\r' && (r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0):
			// A byte order mark after the start is bomPos's.
			msg = fmt.Sprintf("control character U+%04X", r)
		case r != ' ':
			indent = false
		}
		if msg != "" && line >= from {
			return Pos{Line: line, Col: col}, msg, true
		}
		i += n
		col++
	}
	return Pos{}, "", false
}

// bom is the byte order mark, U+FEFF in UTF-8.
const bom = "\ufeff"

// bomPos finds a byte order mark after the start of the file. The parser
// skips one at the start of the file; one at the start of a later document
// (after ---) becomes part of its first key ("\ufeffkind", and the
// document has no kind), and one elsewhere part of a value.
func bomPos(data []byte) (Pos, bool) {
	i := bytes.Index(data[min(len(data), 1):], []byte(bom))
	if i < 0 {
		return Pos{}, false
	}
	i++
	lineStart := bytes.LastIndexByte(data[:i], '\n') + 1
	return Pos{Line: bytes.Count(data[:i], []byte("\n")) + 1, Col: utf8.RuneCount(data[lineStart:i]) + 1}, true
}

// aliasPos finds where the alias *name is used, on line from or after it:
// the parser reports an alias of no anchor without a position.
func aliasPos(data []byte, name string, from int) (Pos, bool) {
	for i, text := range strings.Split(string(data), "\n") {
		if i+1 < from {
			continue
		}
		for at := 0; ; {
			j := strings.Index(text[at:], "*"+name)
			if j < 0 {
				break
			}
			j += at
			end := j + 1 + len(name)
			// A token of its own: after a space or flow indicator, and
			// ending at one (or the end of the line).
			before := j == 0 || strings.ContainsRune(" \t[{,:-", rune(text[j-1]))
			after := end == len(text) || strings.ContainsRune(" \t]},\r", rune(text[end]))
			if before && after {
				return Pos{Line: i + 1, Col: utf8.RuneCountInString(text[:j]) + 1}, true
			}
			at = j + 1
		}
	}
	return Pos{}, false
}

// foreignAlias returns the first alias in the document root whose anchor is
// in an earlier document, or nil. The parser keeps the anchors of a file's
// earlier documents, but the YAML spec makes an alias of an anchor that
// does not occur before it in its document an error, and other readers of
// the file (PyYAML, for one) refuse it.
func foreignAlias(root *yaml.Node) *yaml.Node {
	own := map[*yaml.Node]bool{}
	var collect func(n *yaml.Node)
	collect = func(n *yaml.Node) {
		own[n] = true
		for _, c := range n.Content {
			collect(c)
		}
	}
	collect(root)
	var find func(n *yaml.Node) *yaml.Node
	find = func(n *yaml.Node) *yaml.Node {
		if n.Kind == yaml.AliasNode && !own[n.Alias] {
			return n
		}
		for _, c := range n.Content {
			if a := find(c); a != nil {
				return a
			}
		}
		return nil
	}
	return find(root)
}

// lastLine returns the last line of the node n and what it contains, or a
// line before it: it is a lower bound.
func lastLine(n *yaml.Node) int {
	last := n.Line
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		// A block scalar's lines are below its indicator, at least one
		// for each line break in its value.
		last += strings.Count(n.Value, "\n")
	}
	for _, c := range n.Content {
		last = max(last, lastLine(c))
	}
	return last
}

// parseFile decodes the documents of one file, recording every problem.
func parseFile(name string, data []byte, e *errs) []document {
	d := &decoder{file: name, errs: e}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []document
	// docStart is a line at or before the start of the document being
	// decoded: after the end of those decoded before.
	docStart := 1
	// The documents from the one with a byte order mark on are not
	// decoded: what the mark is part of is wrong in ways that hide it.
	bomLine := 0
	if pos, ok := bomPos(data); ok {
		pos.File = name
		e.add(pos, "invalid YAML: a byte order mark inside the file (only the start of a file may have one)")
		bomLine = pos.Line
	}
	for {
		var root yaml.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			line, msg := 0, strings.TrimPrefix(err.Error(), "yaml: ")
			if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
				line, _ = strconv.Atoi(m[1])
				msg = m[2]
			}
			if bomLine > 0 && (line == 0 || line >= bomLine) {
				return out
			}
			pos, char, ok := Pos{}, "", false
			if line > 0 {
				pos, char, ok = badCharacter(data, line)
			}
			if !ok && characterErrorRE.MatchString(msg) {
				pos, char, ok = badCharacter(data, docStart)
			}
			if ok {
				pos.File = name
				e.add(pos, "invalid YAML: %s", char)
				return out
			}
			if m := unknownAnchorRE.FindStringSubmatch(err.Error()); m != nil {
				if pos, ok := aliasPos(data, m[1], docStart); ok {
					pos.File = name
					e.add(pos, "invalid YAML: unknown anchor %q (an alias *%s repeats the value marked &%s before it)", m[1], m[1], m[1])
					return out
				}
			}
			// The parser gives the line where it noticed the problem, often
			// the start of the construct around it, and no column.
			e.add(Pos{File: name, Line: max(line, 1), Col: 1}, "invalid YAML at or after this line: %s", msg)
			return out
		}
		if bomLine > 0 && lastLine(&root) >= bomLine {
			return out
		}
		docStart = max(docStart, lastLine(&root)+1)
		if len(root.Content) == 0 {
			continue // an empty document, as after a trailing ---
		}
		if a := foreignAlias(&root); a != nil {
			d.fail(a, "", "invalid YAML: alias *%s names an anchor of another document (anchors are per document: write the value out, or define the anchor in this document)", a.Value)
			continue
		}
		if a := d.aliasBomb(root.Content[0]); a != nil {
			d.fail(a, "", "invalid YAML: aliases expand to more than %d nodes (write the definitions out)", maxAliasNodes)
			continue
		}
		n := resolveAlias(root.Content[0])
		if isNull(n) {
			continue
		}
		if n.Kind != yaml.MappingNode {
			d.fail(n, "", "expected a definition (a mapping with a kind), got %s", describeNode(n))
			continue
		}
		var kindNode *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "kind" {
				kindNode = resolveAlias(n.Content[i+1])
			}
		}
		if kindNode == nil {
			d.fail(n, "", "missing required field \"kind\" (one of %s)", strings.Join(kindOrder, ", "))
			continue
		}
		t, ok := kindTypes[kindNode.Value]
		if !ok || kindNode.Kind != yaml.ScalarNode {
			d.fail(kindNode, "", "unknown kind %s (one of %s)", describeNode(kindNode), strings.Join(kindOrder, ", "))
			continue
		}
		v := reflect.New(t)
		ctx := kindLabel(kindNode.Value)
		if name := mappingName(n); name != "" {
			ctx += " " + strconv.Quote(name)
		}
		d.decodeStruct(n, v.Elem(), ctx, map[string]bool{"kind": true})
		// Objects with errors still take part in duplicate and reference
		// checks, so one run reports as much as it can.
		out = append(out, document{kind: kindNode.Value, obj: v.Interface()})
	}
}

// kindLabel is how messages name a kind: feature view, not FeatureView.
func kindLabel(kind string) string {
	switch kind {
	case KindEntity:
		return "entity"
	case KindSource:
		return "source"
	case KindFeatureView:
		return "feature view"
	case KindFeatureService:
		return "feature service"
	case KindOnDemandFeatureView:
		return "on-demand feature view"
	}
	return kind
}
