package registry

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestLoadBadFiles loads each testdata/*.bad.yaml next to the valid
// testdata/base definitions and expects exactly these errors, all at once.
func TestLoadBadFiles(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"agg_types.bad.yaml", []string{
			`testdata/agg_types.bad.yaml:8:12: feature view "v10": feature "a": aggregation sum cannot take field "country" of type string (takes int64, double)`,
			`testdata/agg_types.bad.yaml:12:11: feature view "v10": feature "b": type string does not match the type double of field "amount" in source "txns"`,
			`testdata/agg_types.bad.yaml:15:12: feature view "v10": feature "c": count counts events and takes no field; use filter to count only some`,
			`testdata/agg_types.bad.yaml:19:12: feature view "v10": feature "d": field "amout" is not declared in the fields of source "txns" (declared: amount, approved, country, qty)`,
			`testdata/agg_types.bad.yaml:22:18: feature view "v10": feature "e": aggregation: unknown aggregation "median" (one of: count, sum, mean, min, max, last, last_n, count_distinct, stddev)`,
			`testdata/agg_types.bad.yaml:27:12: feature view "v10": feature "f": aggregation count_distinct cannot take field "amount" of type double (takes string, int64, bool)`,
			`testdata/agg_types.bad.yaml:32:11: feature view "v10": feature "g": type int64 does not match the output type double of mean`,
			`testdata/agg_types.bad.yaml:34:5: feature view "v10": feature "h": a last-value feature needs type`,
			`testdata/agg_types.bad.yaml:36:5: feature view "v10": feature "i": last_n needs n from 1 to 1000, got 0`,
			`testdata/agg_types.bad.yaml:43:8: feature view "v10": feature "j": n is only for last_n`,
			`testdata/agg_types.bad.yaml:44:16: feature view "v10": feature "j": precision is only for count_distinct`,
			`testdata/agg_types.bad.yaml:49:16: feature view "v10": feature "k": precision must be from 4 to 16, got 20`,
		}},
		{"anchors.bad.yaml", []string{
			`testdata/anchors.bad.yaml:9:5: invalid YAML: alias *key names an anchor of another document (anchors are per document: write the value out, or define the anchor in this document)`,
		}},
		{"dangling.bad.yaml", []string{
			`testdata/dangling.bad.yaml:3:9: feature view "v6": unknown entity "crad" (did you mean "card"?)`,
			`testdata/dangling.bad.yaml:4:9: feature view "v6": unknown source "txn" (did you mean "txns"?)`,
			`testdata/dangling.bad.yaml:14:5: feature service "fs6": unknown feature view "card_stat" in "card_stat:n_1h" (did you mean "card_stats"?)`,
			`testdata/dangling.bad.yaml:15:5: feature service "fs6": feature view "card_stats" has no feature "n_1d" (did you mean "n_1h"?)`,
			`testdata/dangling.bad.yaml:16:5: feature service "fs6": feature "card_stats:n_1h" listed twice (first at testdata/dangling.bad.yaml:13:5)`,
			`testdata/dangling.bad.yaml:17:5: feature service "fs6": features[4]: invalid feature reference "not a ref": expected view:feature`,
			`testdata/dangling.bad.yaml:28:9: feature view "v7": source "txns" has no field for join key "merchant_id" of entity "merchant" (add it to the source's keys)`,
		}},
		{"duplicate.bad.yaml", []string{
			`testdata/duplicate.bad.yaml:2:7: entity "card" defined twice (first at testdata/base/base.yaml:2:7)`,
			`testdata/duplicate.bad.yaml:6:11: entity "card": join key "card_id" given twice (first at testdata/duplicate.bad.yaml:4:11)`,
			`testdata/duplicate.bad.yaml:17:11: feature view "v5": feature "n" defined twice (first at testdata/duplicate.bad.yaml:14:11)`,
			`testdata/duplicate.bad.yaml:29:3: source "s5": keys: key "card_id" given twice (first at line 28:3)`,
		}},
		{"filter.bad.yaml", []string{
			`testdata/filter.bad.yaml:12:16: feature view "v11": feature "a": filter[0]: value "lots" (string) does not fit field "amount" of type double`,
			`testdata/filter.bad.yaml:15:16: feature view "v11": feature "a": filter[1]: operator in needs a list of values, got string`,
			`testdata/filter.bad.yaml:17:13: feature view "v11": feature "a": filter[2]: operator gt does not apply to bool field "approved"`,
			`testdata/filter.bad.yaml:19:16: feature view "v11": feature "a": field "channel" is not declared in the fields of source "txns" (declared: amount, approved, country, qty)`,
			`testdata/filter.bad.yaml:24:16: feature view "v11": feature "a": filter[4]: operator eq needs one value, got a list (use in)`,
			`testdata/filter.bad.yaml:26:13: feature view "v11": feature "a": filter[5]: op: unknown operator "between" (one of: eq, ne, gt, ge, lt, le, in, not_in)`,
			`testdata/filter.bad.yaml:30:16: feature view "v11": feature "a": filter[6]: value 3 (integer) does not fit field "country" of type string`,
			`testdata/filter.bad.yaml:33:16: feature view "v11": feature "a": filter[7]: operator in needs at least one value`,
		}},
		{"integers.bad.yaml", []string{
			`testdata/integers.bad.yaml:9:8: feature view "v12": feature "a": n: integer 017: write it without the leading zero (YAML 1.1 reads a leading zero as octal, YAML 1.2 does not)`,
			`testdata/integers.bad.yaml:14:16: feature view "v12": feature "b": precision: integer 010: write it without the leading zero (YAML 1.1 reads a leading zero as octal, YAML 1.2 does not)`,
			`testdata/integers.bad.yaml:19:8: feature view "v12": feature "c": n: integer 0o17: write it in decimal digits`,
			`testdata/integers.bad.yaml:24:8: feature view "v12": feature "d": n: integer 0x1F: write it in decimal digits`,
			`testdata/integers.bad.yaml:29:8: feature view "v12": feature "e": n: expected an integer, got "1__000"`,
			`testdata/integers.bad.yaml:34:8: feature view "v12": feature "f": n: integer 08: write it without the leading zero (YAML 1.1 reads a leading zero as octal, YAML 1.2 does not)`,
			`testdata/integers.bad.yaml:40:41: feature view "v12": feature "g": filter[0]: value: integer -017: write it without the leading zero (YAML 1.1 reads a leading zero as octal, YAML 1.2 does not)`,
			`testdata/integers.bad.yaml:44:8: feature view "v12": feature "h": n: integer 0_1: write it without the leading zero (YAML 1.1 reads a leading zero as octal, YAML 1.2 does not)`,
			`testdata/integers.bad.yaml:61:16: source "s17": dedup_max_ids: integer 0100: write it without the leading zero (YAML 1.1 reads a leading zero as octal, YAML 1.2 does not)`,
		}},
		{"join_keys.bad.yaml", []string{
			`testdata/join_keys.bad.yaml:63:5: feature service "fs7": join key "id" is int64 in entity "b" of "vb:*" but string in entity "a" of "va:n" (at testdata/join_keys.bad.yaml:62:5); lookups and exports take one value per join key name, so the types must match`,
			`testdata/join_keys.bad.yaml:87:5: feature service "fs9": join key "bank" is int64 in entity "c" of "vc:n" but string in entity "account" of "account_stats:n" (at testdata/join_keys.bad.yaml:86:5); lookups and exports take one value per join key name, so the types must match`,
		}},
		{"kinds.bad.yaml", []string{
			`testdata/kinds.bad.yaml:1:7: unknown kind "Entiti" (one of Entity, Source, FeatureView, OnDemandFeatureView, FeatureService)`,
			`testdata/kinds.bad.yaml:4:1: missing required field "kind" (one of Entity, Source, FeatureView, OnDemandFeatureView, FeatureService)`,
			`testdata/kinds.bad.yaml:6:1: expected a definition (a mapping with a kind), got a list`,
		}},
		{"missing_required.bad.yaml", []string{
			`testdata/missing_required.bad.yaml:1:1: feature view "v4": missing required field "entity"`,
			`testdata/missing_required.bad.yaml:5:5: feature view "v4": features[0]: missing required field "name"`,
			`testdata/missing_required.bad.yaml:8:1: source "s4": missing required field "kafka"`,
			`testdata/missing_required.bad.yaml:8:1: source "s4": missing required field "allowed_lateness" (it was 0s when left out, before it was required: write 0s to keep rejecting every event older than the newest of its partition, or the disorder of your producers, such as 5m)`,
			`testdata/missing_required.bad.yaml:17:1: feature service "fs4": field "features" must not be empty`,
			`testdata/missing_required.bad.yaml:19:1: entity: missing required field "name"`,
			`testdata/missing_required.bad.yaml:22:1: entity: missing required field "name"`,
		}},
		{"names.bad.yaml", []string{
			`testdata/names.bad.yaml:2:7: entity "card-holder": invalid name "card-holder": use letters, digits and _, starting with a letter or _, at most 63 characters`,
			`testdata/names.bad.yaml:4:11: entity "card-holder": join key: invalid name "holder id": use letters, digits and _, starting with a letter or _, at most 63 characters`,
			`testdata/names.bad.yaml:5:11: entity "card-holder": join key "holder id": type: unknown join key type "double" (one of: string, int64)`,
			`testdata/names.bad.yaml:8:7: feature view "9lives": invalid name "9lives": use letters, digits and _, starting with a letter or _, at most 63 characters`,
			`testdata/names.bad.yaml:12:11: feature view "9lives": feature "count:1h": invalid name "count:1h": use letters, digits and _, starting with a letter or _, at most 63 characters`,
		}},
		{"topic_length.bad.yaml", []string{
			`testdata/topic_length.bad.yaml:15:9: feature view "long_offline": the topic of source "long_topic" has 190 bytes; a view logged offline takes topics of at most 180, which name its log files (set offline: false, or use a shorter topic)`,
		}},
		{"source.bad.yaml", []string{
			`testdata/source.bad.yaml:3:9: source "s12": format protobuf needs a protobuf section with descriptor_set and message`,
			`testdata/source.bad.yaml:5:10: source "s12": kafka: invalid topic name "bad topic!" (letters, digits, '.', '_' and '-', at most 249)`,
			`testdata/source.bad.yaml:6:13: source "s12": kafka: invalid broker "localhost": expected host:port`,
			`testdata/source.bad.yaml:7:15: source "s12": kafka: set brokers or connection, not both`,
			`testdata/source.bad.yaml:8:22: source "s12": kafka: invalid topic name "bad topic!" (letters, digits, '.', '_' and '-', at most 249)`,
			`testdata/source.bad.yaml:11:13: source "s12": timestamp: encoding: unknown time encoding "epoch_ns" (one of: rfc3339, epoch_s, epoch_ms, epoch_us)`,
			`testdata/source.bad.yaml:13:12: source "s12": keys.card_id: invalid field path "card..id" (names joined by '.')`,
			`testdata/source.bad.yaml:15:11: source "s12": fields.amount: unknown type "float" (one of: string, int64, double, bool)`,
			`testdata/source.bad.yaml:16:9: source "s12": fields.tags: list types are not event field types`,
			`testdata/source.bad.yaml:23:3: source "s13": protobuf is only for format protobuf`,
			`testdata/source.bad.yaml:23:19: source "s13": protobuf: read descriptor set: open testdata/missing.pb: no such file or directory`,
			`testdata/source.bad.yaml:27:22: source "s13": kafka: dead_letter_topic must differ from topic "t13"`,
			`testdata/source.bad.yaml:38:19: source "s14": protobuf: read descriptor set: open testdata/missing.pb: no such file or directory`,
			`testdata/source.bad.yaml:55:12: source "s15": keys.card_id: empty field path`,
			`testdata/source.bad.yaml:56:18: source "s15": max_future_skew must be positive (the default is 5m)`,
			`testdata/source.bad.yaml:57:16: source "s15": dedup_max_ids must be from 1 to 100000000, got 0 (the default is 1000000)`,
			`testdata/source.bad.yaml:64:10: source "s16": kafka: invalid topic name "." (Kafka refuses "." and "..")`,
			`testdata/source.bad.yaml:65:13: source "s16": kafka: invalid broker "localhost:abc": port "abc" is not a number from 1 to 65535`,
			`testdata/source.bad.yaml:65:30: source "s16": kafka: invalid broker "localhost:99999": port "99999" is not a number from 1 to 65535`,
			`testdata/source.bad.yaml:65:49: source "s16": kafka: invalid broker ":9092": expected host:port, with a host before the colon`,
			`testdata/source.bad.yaml:65:58: source "s16": kafka: invalid broker "localhost:-1": port "-1" is not a number from 1 to 65535`,
			`testdata/source.bad.yaml:66:22: source "s16": kafka: invalid topic name ".." (Kafka refuses "." and "..")`,
			`testdata/source.bad.yaml:70:3: source "s16": keys: join key: invalid name "card-id": use letters, digits and _, starting with a letter or _, at most 63 characters`,
			`testdata/source.bad.yaml:71:19: source "s16": allowed_lateness 3651d is more than 3650d`,
			`testdata/source.bad.yaml:72:18: source "s16": max_future_skew 106751d is more than 3650d`,
		}},
		{"syntax.bad.yaml", []string{
			`testdata/syntax.bad.yaml:4:1: invalid YAML at or after this line: found unexpected end of stream`,
		}},
		{"on_demand.bad.yaml", []string{
			`testdata/on_demand.bad.yaml:5:6: on-demand feature view "risk": input "m": feature view "card_stats" has no feature "n_2h" (did you mean "n_1h"?)`,
			`testdata/on_demand.bad.yaml:6:6: on-demand feature view "risk": input "o": unknown feature view "other"`,
			`testdata/on_demand.bad.yaml:7:6: on-demand feature view "risk": input "p": name one feature, not "card_stats:*"`,
			`testdata/on_demand.bad.yaml:8:3: on-demand feature view "risk": input "len": "len" is a word of the expression language`,
			`testdata/on_demand.bad.yaml:11:3: on-demand feature view "risk": request field "n": an input has the same name`,
			`testdata/on_demand.bad.yaml:12:7: on-demand feature view "risk": request field "xs": type double_list: use string, int64, double or bool`,
			`testdata/on_demand.bad.yaml:17:11: on-demand feature view "risk": feature "a" defined twice (first at testdata/on_demand.bad.yaml:14:11)`,
			`testdata/on_demand.bad.yaml:18:11: on-demand feature view "risk": feature "a": type string_list: use string, int64, double or bool`,
			`testdata/on_demand.bad.yaml:22:7: on-demand feature view "card_stats": a feature view has the same name (at testdata/base/base.yaml:34:7); references view:feature must name one`,
			`testdata/on_demand.bad.yaml:23:1: on-demand feature view "card_stats": field "inputs" must not be empty`,
			`testdata/on_demand.bad.yaml:38:17: on-demand feature view "risk2": feature "b": expression: unknown name amout (1:5) (did you mean "amount"?)`,
			`testdata/on_demand.bad.yaml:41:17: on-demand feature view "risk2": feature "c": expression: expression gives float64 values, not int64`,
			`testdata/on_demand.bad.yaml:44:17: on-demand feature view "risk2": feature "d": expression: unknown name now (1:1) (now is not among the functions expressions may call: the same inputs must always give the same value)`,
			`testdata/on_demand.bad.yaml:50:5: feature service "svc": feature view "risk2" has no feature "zz" (did you mean "b"?)`,
			`testdata/on_demand.bad.yaml:51:5: feature service "svc": unknown feature view "risk3" in "risk3:*" (did you mean "risk"?)`,
		}},
		{"unknown_field.bad.yaml", []string{
			`testdata/unknown_field.bad.yaml:5:1: feature view "v1": unknown field "tilee" (did you mean "tile"?)`,
			`testdata/unknown_field.bad.yaml:7:5: feature view "v1": feature "s": aggregation sum needs field`,
			`testdata/unknown_field.bad.yaml:9:5: feature view "v1": feature "s": unknown field "feild" (did you mean "field"?)`,
			`testdata/unknown_field.bad.yaml:14:1: entity "e1": unknown field "colour" (known fields: name, description, join_keys)`,
		}},
		{"window.bad.yaml", []string{
			`testdata/window.bad.yaml:10:13: feature view "v8": feature "a": window 1m30s is not a multiple of tile 1m`,
			`testdata/window.bad.yaml:11:5: feature view "v8": feature "b": aggregation count needs window (a duration or lifetime)`,
			`testdata/window.bad.yaml:16:13: feature view "v8": feature "c": window is only for aggregations; a last value is bounded by the view's ttl`,
			`testdata/window.bad.yaml:19:13: feature view "v8": feature "d": window 30d spans 43200 tiles of 1m; at most 10080 are allowed (use a larger tile)`,
			`testdata/window.bad.yaml:22:13: feature view "v8": feature "e": window: invalid duration "10x": unknown unit "x" (use ms, s, m, h, d), or "lifetime"`,
			`testdata/window.bad.yaml:25:13: feature view "v8": feature "f": window 30s is not a multiple of tile 1m`,
			`testdata/window.bad.yaml:31:7: feature view "v9": tile 500ms must be a whole number of seconds, at least 1s`,
			`testdata/window.bad.yaml:32:9: feature view "v9": online and offline are both false: the view would compute nothing`,
			`testdata/window.bad.yaml:44:9: feature view "v10": rollup 1m30s is not a multiple of tile 1m at least twice as long`,
			`testdata/window.bad.yaml:52:9: feature view "v11": rollup 1h is not shorter than the longest window (1h): no window would read a rollup tile`,
		}},
		{"wrong_types.bad.yaml", []string{
			`testdata/wrong_types.bad.yaml:5:7: feature view "v2": tile: expected a duration like "10m", got integer 60`,
			`testdata/wrong_types.bad.yaml:6:9: feature view "v2": online: expected true or false, got "yes please"`,
			`testdata/wrong_types.bad.yaml:7:6: feature view "v2": ttl: expected a duration like "10m", got a list`,
			`testdata/wrong_types.bad.yaml:13:8: feature view "v2": feature "s": n: expected an integer, got "five"`,
			`testdata/wrong_types.bad.yaml:17:12: entity "e2": join_keys: expected a list, got "card_id"`,
			`testdata/wrong_types.bad.yaml:23:11: feature view "v3": features: expected a list, got a mapping`,
		}},
	}
	base := readFile(t, "testdata/base/base.yaml")
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			r, err := LoadFiles(map[string][]byte{"testdata/base/base.yaml": base, path: readFile(t, path)})
			if r != nil {
				t.Fatal("got a registry from bad definitions")
			}
			list, ok := err.(ErrorList)
			if !ok {
				t.Fatalf("got %T %v, want an ErrorList", err, err)
			}
			got := strings.Split(list.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors differ.\ngot:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
	files, _ := filepath.Glob("testdata/*.bad.yaml")
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s has no expected errors in the table", f)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestYAMLCharacterPositions: characters YAML refuses anywhere are reported
// at their exact line and column, which the parser gives only as the line
// of the construct around them.
func TestYAMLCharacterPositions(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"kind: Entity\nname: card\njoin_keys:\n\t- {name: id, type: string}\n", "d.yaml:4:1: invalid YAML: a tab in the indentation (YAML indents with spaces)"},
		{"kind: Entity\nname: c\x01rd\n", "d.yaml:2:8: invalid YAML: control character U+0001"},
		{"kind: Entity\nname: caf\xe9\n", "d.yaml:2:10: invalid YAML: byte 0xe9 is not UTF-8"},
		{"kind: Entity\njoin_keys: [{name: id, type: string}\nname: x\n", "invalid YAML at or after this line: "},
		// A byte order mark may start the file, not a later document or
		// a value.
		{"kind: Entity\nname: e2\njoin_keys: [{name: a, type: string}]\n---\n\ufeffkind: Entity\nname: e3\njoin_keys: [{name: a, type: string}]\n", "d.yaml:5:1: invalid YAML: a byte order mark inside the file (only the start of a file may have one)"},
		{"kind: Entity\nname: e\ufeff2\njoin_keys: [{name: a, type: string}]\n", "d.yaml:2:8: invalid YAML: a byte order mark inside the file (only the start of a file may have one)"},
	} {
		_, err := LoadFiles(map[string][]byte{"d.yaml": []byte(c.yaml)})
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Count(err.Error(), "\n") > 0 {
			t.Errorf("%q: got %v, want %q", c.yaml, err, c.want)
		}
	}
}

// TestByteOrderMarkAtStart: a byte order mark at the start of a file is
// not part of its first key.
func TestByteOrderMarkAtStart(t *testing.T) {
	doc := "\ufeffkind: Entity\nname: e2\njoin_keys: [{name: a, type: string}]\n---\nkind: Entity\nname: e3\njoin_keys: [{name: a, type: string}]\n"
	if _, err := LoadFiles(map[string][]byte{"d.yaml": []byte(doc)}); err != nil {
		t.Error(err)
	}
}

// TestAliasExpansionLimit: aliases that would expand a small file to
// millions of nodes are refused at the alias where the limit is passed,
// before the document is decoded, in bounded time and memory.
func TestAliasExpansionLimit(t *testing.T) {
	const n = 110 // each of n features holds n conditions of n values
	var b strings.Builder
	b.WriteString("kind: FeatureView\nname: v\nentity: card\nsource: txns\nfeatures:\n")
	b.WriteString("  - &f\n    name: a\n    aggregation: count\n    window: 1h\n    filter:\n")
	b.WriteString("      - &c {field: country, op: in, value: [" + strings.Repeat("FR, ", n-1) + "FR]}\n")
	b.WriteString(strings.Repeat("      - *c\n", n-1))
	b.WriteString(strings.Repeat("  - *f\n", n-1))
	if b.Len() > 4096 {
		t.Fatalf("the file has %d bytes; keep it small", b.Len())
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := LoadFiles(map[string][]byte{"bomb.yaml": []byte(b.String())})
	runtime.ReadMemStats(&after)
	want := "bomb.yaml:197:5: invalid YAML: aliases expand to more than 1000000 nodes (write the definitions out)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
		t.Errorf("loading allocated %d MB", alloc>>20)
	}
}

// loadWithBase loads doc, as d.yaml, next to the valid base definitions.
func loadWithBase(t *testing.T, doc string) (*Registry, error) {
	t.Helper()
	base := readFile(t, "testdata/base/base.yaml")
	return LoadFiles(map[string][]byte{"testdata/base/base.yaml": base, "d.yaml": []byte(doc)})
}

func errorList(t *testing.T, err error) ErrorList {
	t.Helper()
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("got %T %v, want an ErrorList", err, err)
	}
	return list
}

// TestNonMappingFeatureHasPosition: a feature list element that is not a
// mapping (a scalar, or an empty "-") is reported at its position, and the
// empty feature it leaves is not reported again, without a position.
func TestNonMappingFeatureHasPosition(t *testing.T) {
	for _, elem := range []string{"foo", "42", ""} {
		t.Run(fmt.Sprintf("%q", elem), func(t *testing.T) {
			doc := "kind: FeatureView\nname: v2\nentity: card\nsource: txns\nfeatures:\n  - " + elem + "\n  - {name: ok, aggregation: count, window: 1h}\n"
			_, err := loadWithBase(t, doc)
			if err == nil {
				t.Fatal("accepted")
			}
			list := errorList(t, err)
			for _, e := range list {
				if e.Pos.File == "" || e.Pos.Line == 0 {
					t.Errorf("error without a position: %q", e.Error())
				}
			}
			if len(list) != 1 || list[0].Pos.Line != 6 || !strings.Contains(list[0].Msg, "expected a mapping") {
				t.Errorf("got %v, want one error at d.yaml:6: expected a mapping", err)
			}
		})
	}
}

// TestUnknownAnchorLine: the parser reports an alias of no anchor without
// a line; the error is at the alias.
func TestUnknownAnchorLine(t *testing.T) {
	for _, doc := range []string{
		"kind: Entity\nname: e2\ndescription: x\njoin_keys:\n  - name: a\n    type: string\n  - name: b\n    type: *nope\n",
		// Text like an alias in an earlier document is not the alias.
		"kind: Entity\nname: e1\ndescription: see *nope\njoin_keys: [{name: a, type: string}]\n---\n" +
			"kind: Entity\nname: e2\njoin_keys: [{name: a, type: string}]\n---\nkind: Entity\nname: e3\njoin_keys: [{name: *nope, type: string}]\n",
	} {
		_, err := LoadFiles(map[string][]byte{"d.yaml": []byte(doc)})
		list := errorList(t, err)
		want := strings.Count(doc, "\n") // the failing *nope is on the last line
		if len(list) != 1 || list[0].Pos.Line != want || !strings.Contains(list[0].Msg, `unknown anchor "nope"`) {
			t.Errorf("%q: got %v, want one error at d.yaml:%d (where *nope is)", doc, err, want)
		}
	}
}

// TestTabInBlockScalarDoesNotHideSyntaxError: a tab after leading spaces
// is valid in a block scalar, and must not be reported in place of a
// syntax error later in the file.
func TestTabInBlockScalarDoesNotHideSyntaxError(t *testing.T) {
	valid := "kind: Entity\nname: e2\ndescription: |\n  first line\n  \tindented with a tab: valid in a block scalar\njoin_keys:\n  - name: a\n    type: string\n"
	if _, err := LoadFiles(map[string][]byte{"d.yaml": []byte(valid)}); err != nil {
		t.Fatalf("the first document alone must be valid: %v", err)
	}
	doc := valid + "---\nkind: Entity\nname: e3\njoin_keys: [ {name: a, type: string}\n"
	_, err := LoadFiles(map[string][]byte{"d.yaml": []byte(doc)})
	list := errorList(t, err)
	if len(list) != 1 || list[0].Pos.Line < 10 || strings.Contains(list[0].Msg, "tab") {
		t.Errorf("got %v, want the syntax error of the second document (line 12 or so), not the valid tab at 5:3", err)
	}
}

// TestExplicitBoolTag: an explicit !!bool tag takes any value past the
// parser; one that is not a boolean is an error, not false.
func TestExplicitBoolTag(t *testing.T) {
	doc := "kind: FeatureView\nname: v2\nentity: card\nsource: txns\nonline: !!bool yes\nfeatures: [{name: n, aggregation: count, window: 1h}]\n"
	r, err := loadWithBase(t, doc)
	if err == nil {
		t.Fatalf("accepted, online: %v", r.View("v2").IsOnline())
	}
	if want := `d.yaml:5:9: feature view "v2": online: expected true or false, got "yes"`; err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// TestMapKeyErrorsPointAtKey: errors about a map key (a join key name in a
// source's keys, a field path in its fields, an on-demand variable name)
// point at the key, not at its value.
func TestMapKeyErrorsPointAtKey(t *testing.T) {
	doc := `kind: Source
name: s2
kafka: {topic: t2}
timestamp: {field: ts}
keys:
  card-id:       card.id
fields:
  bad..path:      double
allowed_lateness: 0s
---
kind: OnDemandFeatureView
name: od
inputs:
  not-a-var:     card_stats:n_1h
features:
  - name: f
    type: int64
    expression: "1"
`
	_, err := loadWithBase(t, doc)
	n := 0
	for _, e := range errorList(t, err) {
		if e.Pos.File == "d.yaml" {
			n++
			if e.Pos.Col != 3 {
				t.Errorf("error about a key at column %d, want 3 (where the key is): %s", e.Pos.Col, e.Error())
			}
		}
	}
	if n != 3 {
		t.Errorf("got %v, want three errors in d.yaml", err)
	}
}

// TestBrokerAddress: brokers are host:port, with a host and a port from 1
// to 65535, and fail at load rather than when ingest dials them.
func TestBrokerAddress(t *testing.T) {
	for _, c := range []struct {
		broker string
		valid  bool
	}{
		{"localhost:9092", true},
		{"[::1]:9092", true},
		{"kafka-1.example.com:65535", true},
		{"localhost:abc", false},
		{"localhost:99999", false},
		{"localhost:65536", false},
		{"localhost:0", false},
		{"localhost:-1", false},
		{"localhost:+1", false},
		{":9092", false},
		{"[]:9092", false},
		{"localhost", false},
		{"localhost:", false},
	} {
		doc := "kind: Source\nname: s2\nkafka: {topic: t2, brokers: [\"" + c.broker + "\"]}\ntimestamp: {field: ts}\nkeys: {card_id: c}\nallowed_lateness: 0s\n"
		if _, err := loadWithBase(t, doc); (err == nil) != c.valid {
			t.Errorf("broker %q: got %v, want valid %v", c.broker, err, c.valid)
		}
	}
}

// TestTopicDotNames: Kafka refuses the topic names "." and ".."
// (kafka.common.internals.Topic.validate), which topicRE matches.
func TestTopicDotNames(t *testing.T) {
	for _, topic := range []string{".", ".."} {
		for _, kafka := range []string{"{topic: \"" + topic + "\"}", "{topic: t2, dead_letter_topic: \"" + topic + "\"}"} {
			doc := "kind: Source\nname: s2\nkafka: " + kafka + "\ntimestamp: {field: ts}\nkeys: {card_id: c}\nallowed_lateness: 0s\n"
			if _, err := loadWithBase(t, doc); err == nil {
				t.Errorf("kafka %s accepted; Kafka refuses it", kafka)
			}
		}
	}
	doc := "kind: Source\nname: s2\nkafka: {topic: ...}\ntimestamp: {field: ts}\nkeys: {card_id: c}\nallowed_lateness: 0s\n"
	if _, err := loadWithBase(t, doc); err != nil {
		t.Errorf("topic ... refused: %v", err)
	}
}

// TestSelfReferentialAlias: a node that contains an alias of itself
// (&a [*a]) is refused by the alias limit, with a position, instead of
// sending the decoder into endless recursion.
func TestSelfReferentialAlias(t *testing.T) {
	for _, doc := range []string{
		"kind: Entity\nname: e2\njoin_keys: &a [*a]\n",
		"kind: Entity\nname: e2\ndescription: &a {x: *a}\njoin_keys: [{name: a, type: string}]\n",
	} {
		_, err := LoadFiles(map[string][]byte{"d.yaml": []byte(doc)})
		list := errorList(t, err)
		if len(list) != 1 || list[0].Pos.Line != 3 || !strings.Contains(list[0].Msg, "aliases expand") {
			t.Errorf("%q: got %v", doc, err)
		}
	}
}

// TestReachDoesNotOverflow: allowed_lateness and max_future_skew are
// bounded, so that Source.Reach (their sum), which sizes each view's ring
// of tiles online, cannot overflow to a negative duration.
func TestReachDoesNotOverflow(t *testing.T) {
	source := func(lateness, skew string) string {
		return "kind: Source\nname: s2\nkafka: {topic: t2}\ntimestamp: {field: ts}\nkeys: {card_id: c}\nallowed_lateness: " + lateness + "\nmax_future_skew: " + skew + "\n"
	}
	r, err := loadWithBase(t, source("106751d", "1d"))
	if err == nil {
		t.Fatalf("accepted, and Reach() = %v", r.Source("s2").Reach())
	}
	if _, err := loadWithBase(t, source("1d", "106751d")); err == nil {
		t.Error("max_future_skew 106751d accepted")
	}
	r, err = loadWithBase(t, source("3650d", "3650d"))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Source("s2").Reach(); got != 7300*Day {
		t.Errorf("Reach() = %v, want 7300d", got)
	}
}
