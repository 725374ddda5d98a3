package serving

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// FuzzValidate feeds arbitrary feature references and join-key values to
// request validation: it must never panic, and what it accepts must be
// consistent with the plan.
func FuzzValidate(f *testing.F) {
	p := newPlan("p", loadSnapshot(f, 1, testDefs))
	f.Add("card_txn:n_1h,card_more:*", "c1", int64(0), false)
	f.Add("pair_txn:*", "u1", int64(42), true)
	f.Add("card_txn:n_1h,pair_txn:n_1h", "", int64(-1), true)
	f.Add(":,::,card_txn:,:x,card_txn:*:*", "{}:*", int64(1), false)
	f.Add("txn_risk:mod", "c1", int64(0), false) // on-demand, reads no stored view
	f.Fuzz(func(t *testing.T, refs, s string, n int64, useInt bool) {
		sel, err := p.parseRefs(strings.Split(refs, ","))
		if err != nil {
			return
		}
		if len(sel.cols) == 0 || len(sel.names) != len(sel.cols) {
			t.Fatalf("accepted %q with %d columns and %d names", refs, len(sel.cols), len(sel.names))
		}
		for _, c := range sel.cols {
			if c.view == nil {
				// On-demand: its view's results follow the stored views'.
				if k := c.vidx - len(sel.views); k < 0 || k >= len(sel.ods) || c.index >= len(sel.ods[k].od.feats) {
					t.Fatalf("inconsistent on-demand column %+v", c)
				}
				continue
			}
			if c.view.entity != sel.entities[sel.eidx[c.view]] || sel.views[c.vidx] != c.view || c.index >= len(c.view.infos) {
				t.Fatalf("inconsistent column %+v", c)
			}
		}
		if len(sel.entities) != 1 {
			return // positional keys serve one entity; named keys are tested elsewhere
		}
		ent := sel.entities[0]
		var vals []*pb.Value
		for range len(ent.keys) {
			if useInt {
				vals = append(vals, ival(n))
			} else {
				vals = append(vals, sval(s))
			}
		}
		keys, err := entityKeys([]*pb.EntityKey{{JoinKeyValues: vals}}, sel.entities)
		if err != nil {
			return
		}
		parts := keys[0].Parts()
		for i, part := range parts {
			if part.Kind != ent.kinds[i] {
				t.Fatalf("part %d of kind %s, want %s", i, part.Kind, ent.kinds[i])
			}
		}
		if k, _ := featurestore.NewEntityKey(parts...); k != keys[0] {
			t.Fatal("key does not round-trip")
		}
	})
}

// FuzzJSONNull: nullValues keeps valid JSON valid and changes nothing but
// nulls, each into "{}  ", exactly the direct elements of holders (refNulls).
func FuzzJSONNull(f *testing.F) {
	f.Add(`{"join_key_values":[null,{"string_val":null}],"join_keys":{"a":{"join_keys":{"b":null}}}}`)
	f.Add(`{"request_context": {"a": null}, "entities": [{"join_key_values": [null, {"string_val": "null"}], "join_keys": {"k": null}}]}`)
	f.Add(`{"request_context": null, "x": [null, {"join_keys": [null]}], "requestContext": {"a": {"b": null}}}`)
	f.Add(`[null, "null", {"joinKeys": {"null": null}}]`)
	f.Add(`{"join_keys": {"a": nul`)
	f.Fuzz(func(t *testing.T, s string) {
		b := []byte(s)
		nullValues(b)
		if json.Valid([]byte(s)) && !json.Valid(b) {
			t.Fatalf("%s became invalid: %s", s, b)
		}
		for i := 0; i < len(b); i++ {
			if strings.HasPrefix(s[i:], "null") && string(b[i:i+4]) == "{}  " {
				i += 3
				continue
			}
			if b[i] != s[i] {
				t.Fatalf("%s: byte %d changed: %s", s, i, b)
			}
		}
		var in, got any
		if json.Unmarshal([]byte(s), &in) != nil || json.Unmarshal(b, &got) != nil {
			return
		}
		if want := refNulls(in, false); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s became %s, want the nulls of %v", s, b, want)
		}
	})
}

// refNulls is nullValues over decoded JSON: it makes each null that is a
// direct element of a holder (holder tells whether v is one) an empty object.
func refNulls(v any, holder bool) any {
	elem := func(e any, name string) any {
		if holder {
			if e == nil {
				return map[string]any{}
			}
			return refNulls(e, false)
		}
		return refNulls(e, valueHolders[name])
	}
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = elem(e, k)
		}
	case []any:
		for i, e := range x {
			x[i] = elem(e, "")
		}
	}
	return v
}
