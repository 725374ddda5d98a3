package offline

import (
	"strings"
	"testing"

	"github.com/featurestore/featurestore/registry"
)

// TestSchema pins the log schema that readers of the files rely on.
func TestSchema(t *testing.T) {
	cases := []struct {
		view, want string
	}{
		{"account_stats", "event_time: timestamp[ms, tz=UTC], ingest_time: timestamp[ms, tz=UTC], topic: utf8, partition: int32, offset: int64, " +
			"region: utf8, account_id: int64, amount: float64 nullable, approved: bool nullable, currency: utf8 nullable, items: int64 nullable"},
		{"device_counts", "event_time: timestamp[ms, tz=UTC], ingest_time: timestamp[ms, tz=UTC], topic: utf8, partition: int32, offset: int64, device_id: int64"},
	}
	for _, c := range cases {
		s := testSchema(t, c.view)
		var cols []string
		for _, f := range s.Arrow().Fields() {
			col := f.Name + ": " + f.Type.String()
			if f.Nullable {
				col += " nullable"
			}
			cols = append(cols, col)
		}
		if got := strings.Join(cols, ", "); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.view, got, c.want)
		}
		md := s.Arrow().Metadata()
		for k, v := range map[string]string{MetaProject: testProject, MetaView: c.view, MetaSource: "payments", MetaLogVersion: "1"} {
			if got, _ := md.GetValue(k); got != v {
				t.Errorf("%s: metadata %s = %q, want %q", c.view, k, got, v)
			}
		}
	}
}

func TestSchemaErrors(t *testing.T) {
	r := testRegistry(t)
	for _, c := range []struct{ project, view, want string }{
		{testProject, "online_only", `offline log: feature view "online_only" is not offline`},
		{testProject, "nope", `offline log: no feature view "nope"`},
		{"a/b", "account_stats", `project "a/b" cannot name a directory: character '/'`},
	} {
		if _, err := NewSchema(c.project, r, c.view); err == nil || err.Error() != c.want {
			t.Errorf("%s/%s: %v, want %s", c.project, c.view, err, c.want)
		}
	}
	clash, err := registry.LoadFiles(map[string][]byte{"d.yaml": []byte(`
kind: Entity
name: e
join_keys: [{name: offset, type: string}]
---
kind: Source
name: s
kafka: {topic: t}
timestamp: {field: ts}
keys: {offset: k}
fields: {x: int64}
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: e
source: s
features: [{name: f, field: x, type: int64}]
`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewSchema("p", clash, "v"); err == nil || err.Error() != `offline log: feature view "v": join key "offset" has the name of a fixed column` {
		t.Errorf("clash: %v", err)
	}
}
