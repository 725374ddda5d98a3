package registry

import (
	"bytes"
	"strings"
	"testing"
)

const planBase = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts}
keys: {card_id: card_id}
fields: {amount: double, country: string}
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: card
source: txns
features:
  - {name: sum_1h, aggregation: sum, field: amount, window: 1h}
  - {name: last_country, field: country, type: string}
---
kind: FeatureService
name: svc
features: [v:sum_1h]
`

func mustLoad(t *testing.T, yaml string) *Registry {
	t.Helper()
	r, err := LoadFiles(map[string][]byte{"defs.yaml": []byte(yaml)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDiff(t *testing.T) {
	base := mustLoad(t, planBase)
	tests := []struct {
		name     string
		edit     func(string) string
		want     []string // rendered lines, in order
		breaking int
	}{
		{"same definitions", func(s string) string { return s }, []string{"No changes."}, 0},
		{"description only", func(s string) string {
			return strings.Replace(s, "name: v\n", "name: v\ndescription: card velocity\n", 1)
		}, []string{`  ~ feature view "v"`, `      + description: card velocity`}, 0},
		{"new window is breaking", func(s string) string {
			return strings.Replace(s, "window: 1h}", "window: 2h}", 1)
		}, []string{`  ~ feature view "v"`, `      ~ features.sum_1h.window: 1h -> 2h   [BREAKING]`}, 1},
		{"new aggregation is breaking", func(s string) string {
			return strings.Replace(s, "aggregation: sum, field: amount", "aggregation: max, field: amount", 1)
		}, []string{`  ~ feature view "v"`, `      ~ features.sum_1h.aggregation: sum -> max   [BREAKING]`}, 1},
		{"new tile is breaking", func(s string) string {
			return strings.Replace(s, "source: txns\nfeatures", "source: txns\ntile: 5m\nfeatures", 1)
		}, []string{`  ~ feature view "v"`, `      ~ tile: 1m -> 5m   [BREAKING]`}, 1},
		{"added filter is breaking", func(s string) string {
			return strings.Replace(s, "window: 1h}", "window: 1h, filter: [{field: country, op: eq, value: FR}]}", 1)
		}, []string{`  ~ feature view "v"`, `      + features.sum_1h.filter: [{"field":"country","op":"eq","value":"FR"}]   [BREAKING]`}, 1},
		{"added feature and service is not breaking", func(s string) string {
			return strings.Replace(s, "  - {name: last_country", "  - {name: max_1h, aggregation: max, field: amount, window: 1h}\n  - {name: last_country", 1) +
				"---\nkind: FeatureService\nname: svc2\nfeatures: [v:max_1h]\n"
		}, []string{`  ~ feature view "v"`, `      ~ feature order: sum_1h, last_country -> sum_1h, max_1h, last_country`, `      + features.max_1h: {"aggregation":"max","field":"amount","name":"max_1h","window":"1h"}`, `  + feature service "svc2"`}, 0},
		{"on-demand view added", func(s string) string {
			return s + "---\nkind: OnDemandFeatureView\nname: od\ninputs: {s: v:sum_1h}\nrequest_fields: {x: double}\nfeatures: [{name: r, type: double, expression: x / s}]\n"
		}, []string{`  + on-demand feature view "od"`}, 0},
		{"deleted service", func(s string) string {
			return s[:strings.Index(s, "---\nkind: FeatureService")]
		}, []string{`  - feature service "svc"`}, 0},
		{"new field type is breaking", func(s string) string {
			return strings.Replace(strings.Replace(s, "country: string}", "country: int64}", 1), "field: country, type: string}", "field: country, type: int64}", 1)
		}, []string{`  ~ source "txns"`, `      ~ fields.country: string -> int64   [BREAKING]`, `  ~ feature view "v"`, `      ~ features.last_country.type: string -> int64   [BREAKING]`}, 2},
		{"new join key is breaking", func(s string) string {
			return strings.Replace(s, "join_keys: [{name: card_id, type: string}]", "join_keys: [{name: card_id, type: int64}]", 1)
		}, []string{`  ~ entity "card"`, `      ~ join_keys: [{"name":"card_id","type":"string"}] -> [{"name":"card_id","type":"int64"}]   [BREAKING]`}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Diff(base, mustLoad(t, tt.edit(planBase)))
			var b bytes.Buffer
			p.Render(&b)
			lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
			var got []string
			for _, l := range lines {
				if !strings.HasPrefix(l, "Plan:") && !strings.Contains(l, "breaking change(s)") {
					got = append(got, l)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("plan:\n%s\nwant:\n%s", b.String(), strings.Join(tt.want, "\n"))
			}
			if len(p.Breaking()) != tt.breaking {
				t.Errorf("breaking = %v, want %d", p.Breaking(), tt.breaking)
			}
		})
	}
}

func TestDiffFromNothing(t *testing.T) {
	p := Diff(nil, mustLoad(t, planBase))
	if len(p.Changes) != 4 {
		t.Fatalf("want 4 creations, got %+v", p.Changes)
	}
	for _, c := range p.Changes {
		if c.Action != Create {
			t.Errorf("%s %s: %s, want create", c.Kind, c.Name, c.Action)
		}
	}
}

func BenchmarkDiffExamples(b *testing.B) {
	old, err := LoadDir("../examples")
	if err != nil {
		b.Fatal(err)
	}
	new, err := LoadDir("../examples")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if p := Diff(old, new); !p.Empty() {
			b.Fatal("examples differ from themselves")
		}
	}
}
