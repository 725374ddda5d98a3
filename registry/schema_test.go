package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite registry/featurestore.schema.json and docs/yaml-reference.md")

// TestGenerated checks that the committed schema and reference page are what
// the code generates; with -update it rewrites them.
func TestGenerated(t *testing.T) {
	for _, g := range []struct {
		path, name string
		gen        func() []byte
	}{
		{"featurestore.schema.json", "registry/featurestore.schema.json", JSONSchema},
		{"../docs/yaml-reference.md", "docs/yaml-reference.md", ReferenceMarkdown},
	} {
		t.Run(filepath.Base(g.path), func(t *testing.T) {
			want := g.gen()
			if !bytes.Equal(g.gen(), want) {
				t.Fatalf("%s: generating twice gives different output", g.name)
			}
			if !bytes.HasSuffix(want, []byte("\n")) || bytes.HasSuffix(want, []byte("\n\n")) {
				t.Errorf("%s: output must end in exactly one newline", g.name)
			}
			if *update {
				if err := os.WriteFile(g.path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			got, err := os.ReadFile(g.path)
			if err != nil {
				t.Fatalf("%v; run: go test ./registry -run TestGenerated -update", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s is out of date with the definition types; run: go test ./registry -run TestGenerated -update", g.name)
			}
		})
	}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(JSONSchema()))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("featurestore.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("featurestore.schema.json")
	if err != nil {
		t.Fatalf("the schema does not compile: %v", err)
	}
	return s
}

// yamlDocs decodes the documents of a YAML stream into JSON-like values, as
// an editor hands them to the schema. Empty documents are left out.
func yamlDocs(t *testing.T, data []byte) []any {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []any
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if v != nil {
			out = append(out, jsonValue(v))
		}
	}
}

func jsonValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			v[k] = jsonValue(x)
		}
		return v
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[fmt.Sprint(k)] = jsonValue(x)
		}
		return m
	case []any:
		for i, x := range v {
			v[i] = jsonValue(x)
		}
		return v
	}
	return v
}

// leafLocations returns the JSON pointers of the values a validation error
// blames, sorted and without repeats; "" is the document itself.
func leafLocations(err error) []string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []string{"not a validation error: " + err.Error()}
	}
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			out = append(out, "/"+strings.Join(e.InstanceLocation, "/"))
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	for i, l := range out {
		out[i] = strings.TrimSuffix(l, "/")
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestSchemaAcceptsValidDefinitions(t *testing.T) {
	s := compileSchema(t)
	files, _ := filepath.Glob("../examples/*.yaml")
	base, _ := filepath.Glob("testdata/base/*.yaml")
	files = append(files, base...)
	if len(files) < 2 {
		t.Fatalf("found only %v", files)
	}
	inputs := map[string][]byte{}
	for _, f := range files {
		inputs[f] = readFile(t, f)
	}
	for _, kind := range kindOrder {
		inputs["reference example "+kind] = []byte(kindExamples[kind])
	}
	for name, data := range inputs {
		docs := yamlDocs(t, data)
		if len(docs) == 0 {
			t.Errorf("%s: no documents", name)
		}
		for i, doc := range docs {
			if err := s.Validate(doc); err != nil {
				t.Errorf("%s: document %d does not validate:\n%v", name, i+1, err)
			}
		}
	}
}

// TestSchemaRejects checks that the schema blames exactly the values it
// should in definitions the loader rejects.
func TestSchemaRejects(t *testing.T) {
	s := compileSchema(t)
	tests := []struct {
		file string // a testdata file, or "" for src
		doc  int    // document of the file, from 0
		src  string
		want []string // JSON pointers of the blamed values
	}{
		{file: "unknown_field.bad.yaml", doc: 0, want: []string{"", "/features/0"}}, // tilee, feild
		{file: "unknown_field.bad.yaml", doc: 1, want: []string{""}},                // colour
		{file: "kinds.bad.yaml", doc: 0, want: []string{"/kind"}},                   // Entiti
		{file: "kinds.bad.yaml", doc: 1, want: []string{""}},                        // no kind
		{file: "kinds.bad.yaml", doc: 2, want: []string{""}},                        // a list
		{file: "wrong_types.bad.yaml", doc: 0, want: []string{"/features/0/n", "/online", "/tile", "/ttl"}},
		{file: "wrong_types.bad.yaml", doc: 1, want: []string{"/join_keys"}},
		{file: "wrong_types.bad.yaml", doc: 2, want: []string{"/features"}},
		{file: "agg_types.bad.yaml", doc: 0, want: []string{"/features/10/precision", "/features/4/aggregation"}},
		{file: "window.bad.yaml", doc: 0, want: []string{"/features/4/window"}},
		{file: "filter.bad.yaml", doc: 0, want: []string{"/features/0/filter/5/op"}},
		{file: "names.bad.yaml", doc: 0, want: []string{"/join_keys/0/name", "/join_keys/0/type", "/name"}},
		{file: "names.bad.yaml", doc: 1, want: []string{"/features/0/name", "/name"}},
		{file: "missing_required.bad.yaml", doc: 0, want: []string{"", "/features/0"}},
		{file: "missing_required.bad.yaml", doc: 1, want: []string{""}},
		{file: "missing_required.bad.yaml", doc: 2, want: []string{"/features"}},
		{file: "dangling.bad.yaml", doc: 1, want: []string{"/features/4"}}, // "not a ref"
		{file: "source.bad.yaml", doc: 0, want: []string{
			"/fields/amount", "/fields/tags", "/kafka/brokers/0", "/kafka/dead_letter_topic", "/kafka/topic", "/keys/card_id", "/timestamp/encoding",
		}},
		{src: "kind: Source\nname: s\nkafka: {topic: t}\ntimestamp: {field: ts}\nkeys: {k: k}\nallowed_lateness: 60\n", want: []string{"/allowed_lateness"}},
		{src: "kind: Source\nname: s\nkafka: {topic: t}\ntimestamp: {field: ts}\nkeys: {k: k}\nallowed_lateness: \"60\"\n", want: []string{"/allowed_lateness"}},
		{src: "kind: Source\nname: s\nkafka: {topic: t}\ntimestamp: {field: ts}\nkeys: {}\nallowed_lateness: 0s\n", want: []string{"/keys"}},
		{src: "kind: FeatureService\nname: s\nfeatures: [v:f]\nowner: [a, b]\n", want: []string{"/owner"}},
		{src: "kind: Entity\nname: e\njoin_keys: [{name: k, type: string, default: x}]\n", want: []string{"/join_keys/0"}},
		{src: "kind: entity\nname: e\njoin_keys: [{name: k, type: string}]\n", want: []string{"/kind"}},
	}
	for _, tt := range tests {
		var name string
		src := []byte(tt.src)
		if tt.file != "" {
			src = readFile(t, filepath.Join("testdata", tt.file))
			name = fmt.Sprintf("%s#%d", tt.file, tt.doc)
		} else {
			name = strings.SplitN(tt.src, "\n", 2)[0] + "…"
		}
		t.Run(name, func(t *testing.T) {
			var doc any
			if tt.file != "" {
				docs := yamlDocs(t, src)
				if tt.doc >= len(docs) {
					t.Fatalf("%s has %d documents", tt.file, len(docs))
				}
				doc = docs[tt.doc]
			} else {
				doc = yamlDocs(t, src)[0]
			}
			err := s.Validate(doc)
			if err == nil {
				t.Fatal("the schema accepts it")
			}
			if got := leafLocations(err); !slices.Equal(got, tt.want) {
				t.Errorf("blamed %q, want %q\n%v", got, tt.want, err)
			}
		})
	}
}

// TestSchemaAgreesWithLoader checks, on definitions whose validity does not
// depend on other definitions, that the schema and the loader agree.
func TestSchemaAgreesWithLoader(t *testing.T) {
	s := compileSchema(t)
	base := readFile(t, "testdata/base/base.yaml")
	view := func(extra, feature string) string {
		if feature == "" {
			feature = "{name: f, aggregation: count, window: 1h}"
		}
		return "kind: FeatureView\nname: v\nentity: card\nsource: txns\n" + extra + "features:\n  - " + feature + "\n"
	}
	source := func(kafka, extra string) string {
		if !strings.Contains(extra, "allowed_lateness") {
			extra += "allowed_lateness: 0s\n"
		}
		return "kind: Source\nname: s\nkafka: {topic: t" + kafka + "}\ntimestamp: {field: ts}\nkeys: {card_id: card_id}\n" + extra
	}
	long := strings.Repeat("a", 63)
	tests := []struct {
		doc   string
		valid bool
	}{
		{view("", ""), true},
		{view("tile: 1m\n", ""), true},
		{view("tile: 60\n", ""), false},
		{view("tile: \"60\"\n", ""), false},
		{view("ttl: 0\n", ""), true},
		{view("ttl: \"0\"\n", ""), true},
		{view("online: yes\n", ""), false},
		{view("online: false\n", ""), true},
		{strings.Replace(view("", ""), "name: v", "name: 9lives", 1), false},
		{strings.Replace(view("", ""), "name: v", "name: _"+long[1:], 1), true},
		{strings.Replace(view("", ""), "name: v", "name: "+long+"a", 1), false},
		{view("", "{name: f, aggregation: count, window: 1h, colour: red}"), false},
		{view("", "{name: f, aggregation: Count, window: 1h}"), false},
		{view("", "{name: f, aggregation: median, field: amount, window: 1h}"), false},
		{view("", "{name: f, aggregation: count, window: lifetime}"), true},
		{view("", "{name: f, aggregation: count, window: Lifetime}"), false},
		{view("", "{name: f, aggregation: count, window: 60}"), false},
		{view("", "{name: f, aggregation: count, window: 1h30m}"), true},
		{view("", "{name: f, aggregation: count, window: 1.5h}"), false},
		{view("", "{name: f, aggregation: last_n, field: amount, window: 1h, n: 0}"), false},
		{view("", "{name: f, aggregation: last_n, field: amount, window: 1h, n: 1}"), true},
		{view("", fmt.Sprintf("{name: f, aggregation: last_n, field: amount, window: 1h, n: %d}", MaxLastN)), true},
		{view("", fmt.Sprintf("{name: f, aggregation: last_n, field: amount, window: 1h, n: %d}", MaxLastN+1)), false},
		{view("", "{name: f, aggregation: last_n, field: amount, window: 1h, n: five}"), false},
		{view("", "{name: f, aggregation: last_n, field: amount, window: 1h, n: 5, type: double_list}"), true},
		{view("", "{name: f, field: amount, type: double}"), true},
		{view("", "{name: f, field: amount, type: float}"), false},
		{view("", fmt.Sprintf("{name: f, aggregation: count_distinct, field: country, window: 1h, precision: %d}", MinPrecision-1)), false},
		{view("", fmt.Sprintf("{name: f, aggregation: count_distinct, field: country, window: 1h, precision: %d}", MinPrecision)), true},
		{view("", fmt.Sprintf("{name: f, aggregation: count_distinct, field: country, window: 1h, precision: %d}", MaxPrecision)), true},
		{view("", fmt.Sprintf("{name: f, aggregation: count_distinct, field: country, window: 1h, precision: %d}", MaxPrecision+1)), false},
		{view("", "{name: f, aggregation: count, window: 1h, filter: [{field: country, op: in, value: [FR, DE]}]}"), true},
		{view("", "{name: f, aggregation: count, window: 1h, filter: [{field: amount, op: ge, value: 12.5}]}"), true},
		{view("", "{name: f, aggregation: count, window: 1h, filter: [{field: country, op: between, value: FR}]}"), false},
		{view("", "{name: f, aggregation: count, window: 1h, filter: [{field: country, op: eq, value: {a: b}}]}"), false},
		{view("", "{name: f, aggregation: count, window: 1h, filter: [{field: country, op: eq, value: [[FR]]}]}"), false},
		{view("", "{name: f, aggregation: count, window: 1h, filter: [{field: country, op: eq, value: null}]}"), false},
		{view("", "{name: f, aggregation: count, window: 1h, filter: [{field: country, op: eq}]}"), false},
		{source("", ""), true},
		{source(", connection: main", ""), true},
		{source(", connection: \"\"", ""), true},
		{source(", connection: my-cluster", ""), false},
		{source(", dead_letter_topic: t.dlq", ""), true},
		{source(", dead_letter_topic: \"bad topic\"", ""), false},
		{source("", "event_id_field: \"\"\n"), true},
		{source("", "event_id_field: meta.id\n"), true},
		{source("", "event_id_field: meta..id\n"), false},
		{source("", "fields: {amount: double, meta.qty: int64}\n"), true},
		{source("", "fields: {amount: float}\n"), false},
		{source("", "fields: {tags: string_list}\n"), false},
		{source("", "fields: {9lives: string}\n"), false},
		{source("", "format: avro\n"), false},
		{source("", "framing: confluent\n"), true},
		{source("", "framing: none\n"), true},
		{source("", "framing: avro\n"), false},
		{source("", "allowed_lateness: 0\n"), true},
		{source("", "allowed_lateness: 1\n"), false},
		{source("", "allowed_lateness: \"0\"\n"), true},
		{strings.Replace(source("", ""), "{card_id: card_id}", "{card-id: card_id}", 1), false},
		{strings.Replace(source("", ""), "{field: ts}", "{field: ts, encoding: epoch_ns}", 1), false},
		{"kind: FeatureService\nname: fs\nfeatures: [card_stats:n_1h]\n", true},
		{"kind: FeatureService\nname: fs\nfeatures: [\"card_stats:*\"]\n", true},
		{"kind: FeatureService\nname: fs\nfeatures: [card_stats]\n", false},
		{"kind: FeatureService\nname: fs\nfeatures: [\"card_stats:n_1h:x\"]\n", false},
		{"kind: FeatureService\nname: fs\nfeatures: []\n", false},
		{"kind: Entity\nname: e\njoin_keys: [{name: k, type: double}]\n", false},
		{"kind: Entity\nname: e\njoin_keys: [{name: k, type: int64}]\n", true},
		{"kind: Entity\nname: e\njoin_keys: [{name: \"\", type: int64}]\n", false},
		{"kind: Entity\nname: e\ndescription:\njoin_keys: [{name: k, type: int64}]\n", true},
		{"kind: Entity\nname:\njoin_keys: [{name: k, type: int64}]\n", false},
		{view("tile: 1s\n", "{name: f, aggregation: count, window: 1h}"), true},
		{view("tile: 1000ms\n", "{name: f, aggregation: count, window: 1h}"), true},
		{view("tile: 1500ms\n", "{name: f, aggregation: count, window: 1h}"), false},
		{view("tile: 0s\n", ""), false},
		{view("tile: 0\n", ""), false},
		{view("tile:\nttl:\nonline:\nrollup:\n", ""), true},
		{view("online: false\noffline: false\n", ""), false},
		{view("offline: false\n", ""), true},
		{view("", "{name: f, aggregation: count, window: 1h, n: null, filter: null}"), true},
		{source("", "max_future_skew: 1ms\n"), true},
		{source("", "max_future_skew: 0s\n"), false},
		{source("", "max_future_skew: 0\n"), false},
		{source("", "max_future_skew:\nprotobuf:\nformat:\n"), true},
		{source("", "dedup_max_ids: 1\n"), true},
		{source("", fmt.Sprintf("dedup_max_ids: %d\n", MaxDedupMaxIDs)), true},
		{source("", fmt.Sprintf("dedup_max_ids: %d\n", MaxDedupMaxIDs+1)), false},
		{source("", "dedup_max_ids: 0\n"), false},
		{source(", brokers: [\"localhost:9092\", \"[::1]:9092\"]", ""), true},
		{source(", brokers: [localhost]", ""), false},
		{source(", brokers: [\"localhost:abc\"]", ""), false},
		{source(", brokers: [\":9092\"]", ""), false},
		{strings.Replace(source("", ""), "{topic: t", "{topic: \".\"", 1), false},
		{source(", dead_letter_topic: \"..\"", ""), false},
		{source(", dead_letter_topic: \"...\"", ""), true},
		{"kind: OnDemandFeatureView\nname: od\ninputs: {x: \"card_stats:n_1h\"}\nrequest_fields: {y: double}\nfeatures: [{name: f, type: double, expression: \"x + y\"}]\n", true},
		{"kind: OnDemandFeatureView\nname: od\ninputs: {x: \"card_stats:*\"}\nfeatures: [{name: f, type: int64, expression: \"1\"}]\n", false},
		{"kind: OnDemandFeatureView\nname: od\ninputs: {len: \"card_stats:n_1h\"}\nfeatures: [{name: f, type: int64, expression: \"1\"}]\n", false},
		{"kind: OnDemandFeatureView\nname: od\ninputs: {x: \"card_stats:n_1h\"}\nrequest_fields: {not: double}\nfeatures: [{name: f, type: int64, expression: \"1\"}]\n", false},
	}
	for _, tt := range tests {
		_, loadErr := LoadFiles(map[string][]byte{"base.yaml": base, "doc.yaml": []byte(tt.doc)})
		docs := yamlDocs(t, []byte(tt.doc))
		var schemaErr error
		if len(docs) != 1 {
			schemaErr = fmt.Errorf("%d documents", len(docs))
		} else {
			schemaErr = s.Validate(docs[0])
		}
		if (loadErr == nil) != tt.valid {
			t.Errorf("loader: valid = %v, want %v:\n%s%v", loadErr == nil, tt.valid, tt.doc, loadErr)
		}
		if (schemaErr == nil) != tt.valid {
			t.Errorf("schema: valid = %v, want %v:\n%s%v", schemaErr == nil, tt.valid, tt.doc, schemaErr)
		}
	}
}

// TestSchemaPatterns checks the patterns of the scalar types against the
// functions that parse them.
func TestSchemaPatterns(t *testing.T) {
	check := func(pattern string, parses func(string) bool, inputs []string) {
		t.Helper()
		re := regexp.MustCompile(pattern)
		for _, in := range inputs {
			if got, want := re.MatchString(in), parses(in); got != want {
				t.Errorf("pattern %s matches %q: %v, but it parses: %v", pattern, in, got, want)
			}
		}
	}
	durations := []string{
		"0", "0s", "1m", "90s", "1h30m", "30d", "250ms", "1ms", "1d1h1m1s1ms", "1s1h", "007m",
		"", "60", "00", "-1m", "1y", "1.5h", "1 m", "1M", "ms", "m1", "1m30", "1mm", "1sm", "lifetime", " 1m", "1m ",
	}
	check(durationPattern, func(s string) bool { _, err := ParseDuration(s); return err == nil }, durations)
	check(windowPattern, func(s string) bool { var w Window; return w.UnmarshalText([]byte(s)) == nil },
		append(durations, "Lifetime", "lifetime1m", "1mlifetime"))
	check(positiveDurationPattern, func(s string) bool { d, err := ParseDuration(s); return err == nil && d > 0 },
		append(durations, "0ms", "00s0m", "0s1ms", "000d"))
	check(tilePattern, func(s string) bool {
		d, err := ParseDuration(s)
		return err == nil && d >= Duration(time.Second) && d.Std()%time.Second == 0
	}, append(durations, "1000ms", "2000ms", "1500ms", "0s1000ms", "01000ms", "1s000ms", "000ms", "0000ms1m", "10000ms", "100ms"))
	check(brokerRE.String(), func(s string) bool { return checkBroker(s) == nil }, []string{
		"localhost:9092", "[::1]:9092", "10.0.0.1:1", "h:65535", "h:65536", "h:0", "h:00", "h:09092", "h:-1", "h:+1",
		"h:abc", ":9092", "[]:9092", "h", "h:", "a:b:1", "[a]b:1", "a]:1", "a[:1", "[::1]", "::1:9092", "h :1",
	})
	check(featureRefPattern, func(s string) bool { _, err := ParseFeatureRef(s); return err == nil }, []string{
		"v:f", "card_txn:amount_sum_1h", "v:*", "_v:_f", "v:f:g", "v:", ":f", "v", "v:**", "v:f*", "9v:f", "v:9f",
		"v-1:f", "*:f", "v :f", strings.Repeat("a", 63) + ":f", strings.Repeat("a", 64) + ":f",
	})
}

// TestSchemaCoversDecoder walks the types the decoder fills and checks that
// the schema has each of their fields, with its description, default and
// requiredness, and nothing else.
func TestSchemaCoversDecoder(t *testing.T) {
	var root map[string]any
	if err := json.Unmarshal(JSONSchema(), &root); err != nil {
		t.Fatal(err)
	}
	defs := root["$defs"].(map[string]any)
	if got := root["properties"].(map[string]any)["kind"].(map[string]any)["enum"]; fmt.Sprint(got) != fmt.Sprint(kindOrder) {
		t.Errorf("kind enum %v, want %v", got, kindOrder)
	}
	allOf := root["allOf"].([]any)
	if len(allOf) != len(kindOrder) {
		t.Fatalf("allOf has %d entries, want one per kind", len(allOf))
	}
	for i, kind := range kindOrder {
		c := allOf[i].(map[string]any)
		if got := c["if"].(map[string]any)["properties"].(map[string]any)["kind"].(map[string]any)["const"]; got != kind {
			t.Errorf("allOf[%d] tests kind %v, want %s", i, got, kind)
		}
		if got := c["then"].(map[string]any)["$ref"]; got != "#/$defs/"+kindTypes[kind].Name() {
			t.Errorf("allOf[%d] refers to %v", i, got)
		}
	}
	types := objectTypes()
	if len(defs) != len(types) {
		t.Errorf("$defs has %d types, the decoder %d", len(defs), len(types))
	}
	for _, typ := range types {
		def, ok := defs[typ.Name()].(map[string]any)
		if !ok {
			t.Errorf("$defs has no %s", typ.Name())
			continue
		}
		if def["additionalProperties"] != false {
			t.Errorf("%s: additionalProperties must be false", typ.Name())
		}
		props := def["properties"].(map[string]any)
		var wantProps, wantRequired []string
		if isKindType(typ) {
			wantProps = append(wantProps, "kind")
		}
		for _, f := range structFields(typ) {
			wantProps = append(wantProps, f.name)
			if f.required {
				wantRequired = append(wantRequired, f.name)
			}
			where := typ.Name() + "." + f.name
			p, ok := props[f.name].(map[string]any)
			if !ok {
				t.Errorf("%s: missing from the schema", where)
				continue
			}
			if f.doc == "" {
				t.Errorf("%s: no doc tag", where)
			}
			if p["description"] != f.doc {
				t.Errorf("%s: description %q, want %q", where, p["description"], f.doc)
			}
			got, has := p["default"]
			if n, ok := got.(float64); ok {
				got = strconv.FormatFloat(n, 'f', -1, 64) // 1000000, not 1e+06
			}
			if has != (f.def != "") || (has && fmt.Sprint(got) != f.def) {
				t.Errorf("%s: default %v, want %q", where, got, f.def)
			}
		}
		slices.Sort(wantProps)
		if got := slices.Sorted(maps.Keys(props)); !slices.Equal(got, wantProps) {
			t.Errorf("%s: properties %v, want %v", typ.Name(), got, wantProps)
		}
		var gotRequired []string
		if r, ok := def["required"].([]any); ok {
			for _, x := range r {
				gotRequired = append(gotRequired, x.(string))
			}
		}
		if !slices.Equal(gotRequired, wantRequired) {
			t.Errorf("%s: required %v, want %v", typ.Name(), gotRequired, wantRequired)
		}
	}

	prop := func(typ, field string) map[string]any {
		return defs[typ].(map[string]any)["properties"].(map[string]any)[field].(map[string]any)
	}
	for _, tt := range []struct {
		typ, field, key string
		want            any
	}{
		{"FeatureView", "tile", "default", DefaultTile.String()},

		{"FeatureView", "online", "default", true},
		{"FeatureView", "online", "type", []any{"boolean", "null"}}, // null: not given
		{"Feature", "precision", "default", float64(DefaultPrecision)},
		{"Feature", "n", "maximum", float64(MaxLastN)},
		{"Feature", "window", "pattern", windowPattern},
		{"Source", "format", "default", string(FormatJSON)},
		{"Timestamp", "encoding", "default", string(TimeRFC3339)},
		{"Source", "kafka", "$ref", "#/$defs/Kafka"},
		{"Entity", "join_keys", "minItems", float64(1)},
	} {
		if got := prop(tt.typ, tt.field)[tt.key]; fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s.%s: %s is %v, want %v", tt.typ, tt.field, tt.key, got, tt.want)
		}
	}
	// Durations: a string of the pattern, or a bare 0, or null when
	// optional; the tile is a positive whole number of seconds.
	if got := fmt.Sprint(prop("FeatureView", "ttl")["anyOf"]); got != fmt.Sprint([]any{
		map[string]any{"type": "string", "pattern": durationPattern}, map[string]any{"const": float64(0)}, map[string]any{"type": "null"}}) {
		t.Errorf("FeatureView.ttl: anyOf %s, want the duration pattern, 0 or null", got)
	}
	if got := prop("FeatureView", "tile")["pattern"]; got != tilePattern {
		t.Errorf("FeatureView.tile: pattern %v, want %s", got, tilePattern)
	}
	if got := fmt.Sprint(prop("Feature", "type")["enum"]); !strings.Contains(got, "double_list") {
		t.Errorf("Feature.type enum %s lacks the list types last_n features declare", got)
	}
	if got := fmt.Sprint(prop("Source", "fields")["additionalProperties"].(map[string]any)["enum"]); strings.Contains(got, "_list") {
		t.Errorf("Source.fields types %s include list types", got)
	}
	if got := prop("FeatureService", "features")["items"].(map[string]any)["pattern"]; got != featureRefPattern {
		t.Errorf("FeatureService.features items pattern %v", got)
	}
}

// TestDefaultsAreApplied checks that each default the tags document is what
// the loader applies: writing a field out with its documented default must
// not change the loaded definitions.
func TestDefaultsAreApplied(t *testing.T) {
	const fixture = `kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts}
keys: {card_id: card_id}
fields: {country: string}
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: card
source: txns
features:
  - {name: f, aggregation: count_distinct, field: country, window: 1h, filter: [{field: country, op: ne, value: FR}]}
---
kind: FeatureService
name: fs
features: ["v:f"]
`
	var docs []*yaml.Node
	dec := yaml.NewDecoder(strings.NewReader(fixture))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, &n)
	}
	load := func() (*Registry, error) {
		var b bytes.Buffer
		for i, d := range docs {
			if i > 0 {
				b.WriteString("---\n")
			}
			out, err := yaml.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(out)
		}
		return LoadFiles(map[string][]byte{"fixture.yaml": b.Bytes()})
	}
	want, err := load()
	if err != nil {
		t.Fatal(err)
	}

	// Find every mapping the decoder turns into a struct.
	type point struct {
		n *yaml.Node
		t reflect.Type
	}
	var points []point
	var walk func(n *yaml.Node, typ reflect.Type)
	walk = func(n *yaml.Node, typ reflect.Type) {
		points = append(points, point{n, typ})
		for _, f := range structFields(typ) {
			ft := typ.Field(f.index).Type
			o := objectOf(ft)
			if o == nil {
				continue
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value != f.name {
					continue
				}
				v := n.Content[i+1]
				if ft.Kind() == reflect.Slice {
					for _, e := range v.Content {
						walk(e, o)
					}
				} else {
					walk(v, o)
				}
			}
		}
	}
	for _, d := range docs {
		m := d.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == "kind" {
				walk(m, kindTypes[m.Content[i+1].Value])
			}
		}
	}

	covered := map[string]bool{}
	for _, pt := range points {
		for _, f := range structFields(pt.t) {
			if f.def == "" {
				continue
			}
			given := false
			for i := 0; i+1 < len(pt.n.Content); i += 2 {
				given = given || pt.n.Content[i].Value == f.name
			}
			if given {
				continue
			}
			tag := "!!str"
			switch k := pt.t.Field(f.index).Type; {
			case k.Kind() == reflect.Bool || k.Kind() == reflect.Pointer && k.Elem().Kind() == reflect.Bool:
				tag = "!!bool"
			case k.Kind() == reflect.Int:
				tag = "!!int"
			}
			where := pt.t.Name() + "." + f.name
			covered[where] = true
			pt.n.Content = append(pt.n.Content,
				&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: f.name},
				&yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: f.def})
			got, err := load()
			pt.n.Content = pt.n.Content[:len(pt.n.Content)-2]
			if err != nil {
				t.Errorf("%s: the documented default %q does not load:\n%v", where, f.def, err)
				continue
			}
			if got.Digest() != want.Digest() {
				t.Errorf("%s: writing the documented default %q changes the definitions:\n%s\n%s", where, f.def, want.CanonicalJSON(), got.CanonicalJSON())
			}
		}
	}
	for _, typ := range objectTypes() {
		for _, f := range structFields(typ) {
			if f.def != "" && !covered[typ.Name()+"."+f.name] {
				t.Errorf("%s.%s has a default the fixture cannot test; give the fixture a %s without it", typ.Name(), f.name, typ.Name())
			}
		}
	}
}

// TestReferenceProse checks that the hand-written parts of the reference
// page cover the code, and that its examples are valid definitions.
func TestReferenceProse(t *testing.T) {
	for _, typ := range objectTypes() {
		if typeIntros[typ.Name()] == "" {
			t.Errorf("reference.go: typeIntros has nothing on %s", typ.Name())
		}
		if _, ok := typeTitles[typ.Name()]; !ok && !isKindType(typ) {
			t.Errorf("reference.go: typeTitles has no heading for %s", typ.Name())
		}
	}
	files := map[string][]byte{}
	for _, kind := range kindOrder {
		if kindExamples[kind] == "" {
			t.Errorf("reference.go: kindExamples has no %s", kind)
		}
		files[kind+".yaml"] = []byte(kindExamples[kind])
	}
	if _, err := LoadFiles(files); err != nil {
		t.Errorf("the reference examples do not load:\n%v", err)
	}
	for _, a := range append([]string{""}, Aggregation("").enumValues()...) {
		if aggMeanings[Aggregation(a)] == "" {
			t.Errorf("reference.go: aggMeanings has nothing on aggregation %q", a)
		}
	}
	for _, op := range Op("").enumValues() {
		if opMeanings[Op(op)] == "" {
			t.Errorf("reference.go: opMeanings has nothing on operator %q", op)
		}
	}
	page := string(ReferenceMarkdown())
	for _, want := range []string{"0.81%", fmt.Sprint(MaxTilesPerWindow), fmt.Sprint(MaxLastN), "| `tile` | [duration](#durations-and-windows) | no | `1m` |"} {
		if !strings.Contains(page, want) {
			t.Errorf("the reference page does not mention %q", want)
		}
	}
}

// TestSchemaAcceptsNullOptionalField: a field written without a value
// (description:) counts as not given, in the loader and in the schema.
func TestSchemaAcceptsNullOptionalField(t *testing.T) {
	s := compileSchema(t)
	doc := "kind: FeatureView\nname: v2\nentity: card\nsource: txns\ndescription:\ntile:\nfeatures: [{name: n, aggregation: count, window: 1h}]\n"
	if _, err := loadWithBase(t, doc); err != nil {
		t.Fatalf("loader: %v", err)
	}
	if err := s.Validate(yamlDocs(t, []byte(doc))[0]); err != nil {
		t.Errorf("the schema refuses what the loader accepts: %v", err)
	}
}

// TestSchemaChecksPerDocumentRules: rules that involve one document only
// are in the schema too.
func TestSchemaChecksPerDocumentRules(t *testing.T) {
	s := compileSchema(t)
	view := func(extra string) string {
		return "kind: FeatureView\nname: v2\nentity: card\nsource: txns\n" + extra + "features: [{name: n, aggregation: count, window: 1h}]\n"
	}
	source := func(extra string) string {
		return "kind: Source\nname: s2\nkafka: {topic: t2}\ntimestamp: {field: ts}\nkeys: {card_id: c}\nallowed_lateness: 0s\n" + extra
	}
	od := func(name, feature, input string) string {
		return "kind: OnDemandFeatureView\nname: " + name + "\ninputs: {" + input + ": \"card_stats:n_1h\"}\nfeatures: [{name: " + feature + ", type: int64, expression: \"1\"}]\n"
	}
	for name, doc := range map[string]string{
		"on-demand view name":    od("bad-name", "f", "x"),
		"on-demand feature name": od("od", "bad-name", "x"),
		"on-demand input name":   od("od", "f", "bad-name"),
		"tile 500ms":             view("tile: 500ms\n"),
		"online and offline off": view("online: false\noffline: false\n"),
		"max_future_skew 0":      source("max_future_skew: 0s\n"),
		"dedup_max_ids 0":        source("dedup_max_ids: 0\n"),
		"broker without port":    strings.Replace(source(""), "{topic: t2}", "{topic: t2, brokers: [localhost]}", 1),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := loadWithBase(t, doc); err == nil {
				t.Fatalf("the loader accepts it")
			}
			if err := s.Validate(yamlDocs(t, []byte(doc))[0]); err == nil {
				t.Errorf("the schema accepts what the loader refuses:\n%s", doc)
			}
		})
	}
	var root map[string]any
	if err := json.Unmarshal(JSONSchema(), &root); err != nil {
		t.Fatal(err)
	}
	if d := root["description"].(string); !strings.Contains(d, "OnDemandFeatureView") {
		t.Errorf("the schema's description does not name OnDemandFeatureView: %s", d)
	}
}
