package registry

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadExamples(t *testing.T) {
	r, err := LoadDir("../examples")
	if err != nil {
		t.Fatalf("examples do not load:\n%v", err)
	}
	v := r.View("card_txn")
	if v == nil || r.Entity(v.Entity) == nil || r.Source(v.Source) == nil {
		t.Fatal("card_txn and its entity and source must exist")
	}
	for _, tt := range []struct {
		feature string
		typ     ValueType
	}{
		{"txn_count_10m", TypeInt64},
		{"amount_sum_1h", TypeDouble},
		{"distinct_merchants_1h", TypeInt64},
		{"amount_stddev_1d", TypeDouble},
		{"last_amounts", TypeDoubleList},
		{"last_country", TypeString},
	} {
		f := v.Feature(tt.feature)
		if f == nil {
			t.Fatalf("feature %s missing", tt.feature)
		}
		if f.ValueType() != tt.typ {
			t.Errorf("%s: value type %s, want %s", tt.feature, f.ValueType(), tt.typ)
		}
	}
	if got := v.Feature("distinct_merchants_1h").Precision; got != DefaultPrecision {
		t.Errorf("count_distinct precision defaults to %d, got %d", DefaultPrecision, got)
	}
	svc := r.Service("fraud_monitoring")
	if got, want := len(svc.Resolved()), len(v.Features)+len(r.View("merchant_txn").Features); got != want {
		t.Errorf("view:* resolved to %d features, want %d", got, want)
	}
}

func TestCanonicalJSONRoundTrip(t *testing.T) {
	r, err := LoadDir("../examples")
	if err != nil {
		t.Fatal(err)
	}
	back, err := FromJSON(r.CanonicalJSON())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.CanonicalJSON(), r.CanonicalJSON()) {
		t.Fatalf("round trip changed the registry:\n%s\n%s", r.CanonicalJSON(), back.CanonicalJSON())
	}
	if back.View("card_txn").Feature("last_amounts").ValueType() != TypeDoubleList {
		t.Error("derived types must be rebuilt from JSON")
	}
	if od := back.OnDemandView("txn_risk"); od == nil || od.Feature("burst").Expr() == nil || len(od.Vars()) != 6 {
		t.Error("on-demand expressions must be compiled again from JSON")
	}
}

// The canonical form must not depend on how the definitions are spread over
// files or ordered in them, nor on defaults being written out.
func TestCanonicalFormIgnoresLayout(t *testing.T) {
	a := map[string][]byte{"a.yaml": []byte(`
kind: Entity
name: e
join_keys: [{name: k, type: string}]
---
kind: Source
name: s
kafka: {topic: t}
timestamp: {field: ts}
keys: {k: k}
fields: {x: int64, y: string}
allowed_lateness: 0s
`), "b.yaml": []byte(`
kind: FeatureView
name: v
entity: e
source: s
features:
  - {name: c, aggregation: count, window: 1h}
`)}
	b := map[string][]byte{"all.yaml": []byte(`
kind: FeatureView
name: v
source: s
entity: e
tile: 1m
online: true
offline: true
features:
  - {window: 60m, aggregation: count, name: c}
---
kind: Source
name: s
format: json
timestamp: {field: ts, encoding: rfc3339}
kafka: {topic: t, connection: default}
keys: {k: k}
fields: {y: string, x: int64}
allowed_lateness: 0s
---
kind: Entity
name: e
join_keys: [{name: k, type: string}]
`)}
	ra, err := LoadFiles(a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := LoadFiles(b)
	if err != nil {
		t.Fatal(err)
	}
	if ra.Digest() != rb.Digest() {
		t.Errorf("digests differ:\n%s\n%s", ra.CanonicalJSON(), rb.CanonicalJSON())
	}
}

// TestNullFieldIsNotGiven checks that a field written with no value counts
// as not given, as the YAML reference says: defaults apply, and a field
// that only some features take is not reported.
func TestNullFieldIsNotGiven(t *testing.T) {
	const base = `
kind: Entity
name: e
join_keys: [{name: k, type: string}]
---
kind: Source
name: s
kafka: {topic: t}
timestamp: {field: ts}
keys: {k: k}
fields: {x: int64, y: string}
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: e
source: s
features:
  - name: c
    aggregation: count
    window: 1h
  - name: last_y
    field: y
    type: string
`
	tests := []struct{ name, old, new string }{
		{"description", "name: v\n", "name: v\ndescription:\n"},
		{"tile", "source: s\n", "source: s\ntile:\n"},
		{"max_future_skew", "fields: {x: int64, y: string}\n", "fields: {x: int64, y: string}\nmax_future_skew:\n"},
		{"dedup_max_ids", "fields: {x: int64, y: string}\n", "fields: {x: int64, y: string}\ndedup_max_ids:\n"},
		{"window of a last-value feature", "    type: string\n", "    type: string\n    window:\n"},
		{"precision of a last-value feature", "    type: string\n", "    type: string\n    precision:\n"},
		{"n of a count", "    window: 1h\n", "    window: 1h\n    n:\n"},
	}
	want, err := LoadFiles(map[string][]byte{"defs.yaml": []byte(base)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(base, tt.old) {
				t.Fatalf("%q is not in the definitions", tt.old)
			}
			got, err := LoadFiles(map[string][]byte{"defs.yaml": []byte(strings.Replace(base, tt.old, tt.new, 1))})
			if err != nil {
				t.Fatal(err)
			}
			if got.Digest() != want.Digest() {
				t.Errorf("definitions differ from those without the field:\n%s\n%s", got.CanonicalJSON(), want.CanonicalJSON())
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"1m", time.Minute, false},
		{"90s", 90 * time.Second, false},
		{"1h30m", 90 * time.Minute, false},
		{"30d", 30 * Day, false},
		{"250ms", 250 * time.Millisecond, false},
		{"0", 0, false},
		{"60", 0, true},
		{"", 0, true},
		{"-1m", 0, true},
		{"1y", 0, true},
		{"1.5h", 0, true},
		{"99999999999999999999d", 0, true},
		{"106752d", 0, true},
	} {
		got, err := ParseDuration(tt.in)
		if (err != nil) != tt.err || (!tt.err && got.Std() != tt.want) {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil {
			back, err := ParseDuration(got.String())
			if err != nil || back != got {
				t.Errorf("%q renders as %q, which parses to %v, %v", tt.in, got, back, err)
			}
		}
	}
}

// TestLoadDirExtensions: the extensions .yaml and .yml are matched in any
// case, as on file systems that do not tell case apart; others are skipped.
func TestLoadDirExtensions(t *testing.T) {
	dir := t.TempDir()
	for name, doc := range map[string]string{
		"a.YAML":   "kind: Entity\nname: a\njoin_keys: [{name: a_id, type: string}]\n",
		"b.Yml":    "kind: Entity\nname: b\njoin_keys: [{name: b_id, type: string}]\n",
		"c.yaml":   "kind: Entity\nname: c\njoin_keys: [{name: c_id, type: string}]\n",
		"d.yaml~":  "not: loaded\n",
		"e.json":   "{}",
		".f.yaml":  "not: loaded\n",
		"g.yamlx":  "not: loaded\n",
		"h.YAML.o": "not: loaded\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Entities) != 3 {
		t.Errorf("loaded %d entities, want 3 (a.YAML, b.Yml, c.yaml)", len(r.Entities))
	}
}

func TestLoadDirErrors(t *testing.T) {
	if _, err := LoadDir(t.TempDir()); err == nil {
		t.Error("an empty directory must be an error")
	}
	if _, err := LoadDir("no/such/dir"); err == nil {
		t.Error("a missing directory must be an error")
	}
}

func BenchmarkLoadExamples(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := LoadDir("../examples"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFromJSONNull: a null element of a list of objects in a snapshot is
// an error, not a nil pointer that the checks dereference.
func TestFromJSONNull(t *testing.T) {
	for _, j := range []string{
		`{"entities":[null]}`,
		`{"sources":[null]}`,
		`{"feature_views":[null]}`,
		`{"feature_views":[{"name":"v","entity":"e","source":"s","features":[null]}]}`,
		`{"feature_views":[{"name":"v","entity":"e","source":"s","features":[{"name":"f","aggregation":"count","window":"1h","filter":[null]}]}]}`,
		`{"feature_services":[null]}`,
		`{"on_demand_feature_views":[null]}`,
		`{"on_demand_feature_views":[{"name":"o","inputs":{"a":"v:f"},"features":[null]}]}`,
	} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("FromJSON(%s) panics: %v", j, p)
				}
			}()
			if _, err := FromJSON([]byte(j)); err == nil || !strings.Contains(err.Error(), "is null") {
				t.Errorf("FromJSON(%s): got %v, want an error about the null", j, err)
			}
		}()
	}
}
