package ingest

import (
	"errors"
	"strings"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

const testDefs = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Entity
name: account
join_keys: [{name: bank, type: string}, {name: account_no, type: int64}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: meta.ts, encoding: %s}
keys: {card_id: card.id, bank: bank, account_no: account_no, unused: x}
fields: {amount: double, qty: int64, country: string, approved: bool}
event_id_field: id
allowed_lateness: 0s
---
kind: FeatureView
name: by_card
entity: card
source: txns
features: [{name: n, aggregation: count, window: 1h}]
---
kind: FeatureView
name: by_account
entity: account
source: txns
features: [{name: n, aggregation: count, window: 1h}]
`

func loadTestSource(t testing.TB, enc string) (*registry.Registry, *registry.Source, Layout) {
	t.Helper()
	return loadSource(t, sprintf(testDefs, enc))
}

// loadSource loads definitions and returns the registry, its source txns
// and the source's layout.
func loadSource(t testing.TB, defs string) (*registry.Registry, *registry.Source, Layout) {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(defs)})
	if err != nil {
		t.Fatal(err)
	}
	src := r.Source("txns")
	l, err := NewLayout(r, src)
	if err != nil {
		t.Fatal(err)
	}
	return r, src, l
}

func TestLayout(t *testing.T) {
	_, _, l := loadTestSource(t, "rfc3339")
	var keys []string
	for _, k := range l.Keys {
		keys = append(keys, k.Name+":"+k.Kind.String())
	}
	if got := sprintf("%v", keys); got != "[account_no:int64 bank:string card_id:string]" {
		t.Errorf("keys %s (unused keys must be left out, types from the entities)", got)
	}
	if l.FieldIndex("amount") != 0 || l.FieldIndex("qty") != 3 || l.KeyIndex("card_id") != 2 {
		t.Errorf("layout not sorted: %+v", l)
	}
}

func TestDecodeJSON(t *testing.T) {
	s, d, n, b := featurestore.StringValue, featurestore.DoubleValue, featurestore.Int64Value, featurestore.BoolValue
	null := featurestore.Value{}
	tests := []struct {
		name    string
		enc     string
		payload string
		time    int64
		keys    []featurestore.Value // account_no, bank, card_id
		fields  []featurestore.Value // amount, approved, country, qty
		id      string
		reason  Reason
	}{
		{"full event", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00.123Z"},"card":{"id":"c-1"},"bank":"b","account_no":42,"amount":12.5,"qty":3,"country":"FR","approved":true,"id":"t-1"}`,
			1795687200123, []featurestore.Value{n(42), s("b"), s("c-1")}, []featurestore.Value{d(12.5), b(true), s("FR"), n(3)}, "t-1", ""},
		{"missing and null fields are null", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00+01:00"},"card":{"id":"c-1"},"amount":null}`,
			1795683600000, []featurestore.Value{null, null, s("c-1")}, []featurestore.Value{null, null, null, null}, "", ""},
		{"an integer is a double", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"amount":7,"id":99}`,
			1795687200000, []featurestore.Value{null, null, null}, []featurestore.Value{d(7), null, null, null}, "99", ""},
		{"epoch seconds with a fraction", "epoch_s", `{"meta":{"ts":1795687200.1239}}`, 1795687200123, nil, nil, "", ""},
		{"epoch ms", "epoch_ms", `{"meta":{"ts":1795687200123}}`, 1795687200123, nil, nil, "", ""},
		{"epoch us rounds down", "epoch_us", `{"meta":{"ts":-1500}}`, -2, nil, nil, "", ""},
		{"not JSON", "rfc3339", `{"meta":`, 0, nil, nil, "", ReasonInvalidPayload},
		{"not an object", "rfc3339", `[1,2]`, 0, nil, nil, "", ReasonInvalidPayload},
		{"no time", "rfc3339", `{"meta":{}}`, 0, nil, nil, "", ReasonMissingTime},
		{"null time", "rfc3339", `{"meta":{"ts":null}}`, 0, nil, nil, "", ReasonMissingTime},
		{"bad time", "rfc3339", `{"meta":{"ts":"yesterday"}}`, 0, nil, nil, "", ReasonBadTime},
		{"time of the wrong kind", "epoch_ms", `{"meta":{"ts":"1795687200123"}}`, 0, nil, nil, "", ReasonBadTime},
		{"time out of range", "epoch_s", `{"meta":{"ts":1e300}}`, 0, nil, nil, "", ReasonBadTime},
		{"string for a double", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"amount":"12.5"}`, 0, nil, nil, "", ReasonWrongType},
		{"fraction for an int64", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"qty":1.5}`, 0, nil, nil, "", ReasonWrongType},
		{"number for a string key", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"card":{"id":17}}`, 0, nil, nil, "", ReasonWrongType},
		{"string for an int64 key", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"account_no":"17"}`, 0, nil, nil, "", ReasonWrongType},
		{"object for a bool", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"approved":{}}`, 0, nil, nil, "", ReasonWrongType},
		{"longest key", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"bank":"` + strings.Repeat("b", featurestore.MaxKeyValueBytes) + `"}`,
			1795687200000, []featurestore.Value{null, s(strings.Repeat("b", featurestore.MaxKeyValueBytes)), null}, []featurestore.Value{null, null, null, null}, "", ""},
		{"NaN for a double", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"amount":NaN}`, 0, nil, nil, "", ReasonWrongType},
		{"nan for a double", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"amount":nan}`, 0, nil, nil, "", ReasonWrongType},
		{"infinity for a double", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"amount":1e400}`, 0, nil, nil, "", ReasonWrongType},
		{"NaN time", "epoch_s", `{"meta":{"ts":NaN}}`, 0, nil, nil, "", ReasonBadTime},
		{"leading zero in a double", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"amount":05}`, 0, nil, nil, "", ReasonInvalidPayload},
		{"leading zero in an int64", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"qty":-007}`, 0, nil, nil, "", ReasonInvalidPayload},
		{"leading zero in an int64 key", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"account_no":017}`, 0, nil, nil, "", ReasonInvalidPayload},
		{"leading zero in an epoch time", "epoch_ms", `{"meta":{"ts":01795687200123}}`, 0, nil, nil, "", ReasonInvalidPayload},
		{"leading dot in a double", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"amount":.5}`, 0, nil, nil, "", ReasonInvalidPayload},
		{"trailing dot in a double", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"amount":5.}`, 0, nil, nil, "", ReasonInvalidPayload},
		{"zero is a number", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"amount":0.0e-0,"qty":0}`,
			1795687200000, []featurestore.Value{null, null, null}, []featurestore.Value{d(0), null, null, n(0)}, "", ""},
		{"string field not UTF-8", "rfc3339", "{\"meta\":{\"ts\":\"2026-11-26T10:00:00Z\"},\"country\":\"caf\xe9\"}", 0, nil, nil, "", ReasonInvalidPayload},
		{"string key not UTF-8", "rfc3339", "{\"meta\":{\"ts\":\"2026-11-26T10:00:00Z\"},\"bank\":\"\xff\"}", 0, nil, nil, "", ReasonInvalidPayload},
		{"escaped non-ASCII is UTF-8", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"country":"caf\u00e9 \ud83d\ude00"}`,
			1795687200000, []featurestore.Value{null, null, null}, []featurestore.Value{null, null, s("café 😀"), null}, "", ""},
		{"an empty id is no id", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"id":""}`,
			1795687200000, []featurestore.Value{null, null, null}, []featurestore.Value{null, null, null, null}, "", ""},
		{"key too long", "rfc3339", `{"meta":{"ts":"2026-11-26T10:00:00Z"},"bank":"` + strings.Repeat("b", featurestore.MaxKeyValueBytes+1) + `"}`, 0, nil, nil, "", ReasonKeyTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, src, l := loadTestSource(t, tt.enc)
			dec, err := NewDecoder(src, l, "")
			if err != nil {
				t.Fatal(err)
			}
			var ev Event
			err = dec.Decode([]byte(tt.payload), &ev)
			if tt.reason != "" {
				var de *DecodeError
				if !errors.As(err, &de) || de.Reason != tt.reason {
					t.Fatalf("got %v, want reason %s", err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Time != tt.time {
				t.Errorf("time %d, want %d", ev.Time, tt.time)
			}
			checkValues(t, "keys", ev.Keys, tt.keys)
			checkValues(t, "fields", ev.Fields, tt.fields)
			if ev.ID != tt.id || ev.HasID != (tt.id != "") {
				t.Errorf("id %q (%v), want %q", ev.ID, ev.HasID, tt.id)
			}
		})
	}
}

func checkValues(t *testing.T, what string, got, want []featurestore.Value) {
	t.Helper()
	if want == nil {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %v, want %v", what, got, want)
	}
	for i := range want {
		if !got[i].Equal(want[i]) {
			t.Errorf("%s[%d] = %v, want %v", what, i, got[i], want[i])
		}
	}
}

// Decoding reuses the event: values of one message never leak into the next.
func TestDecodeReusesEvent(t *testing.T) {
	_, src, l := loadTestSource(t, "epoch_ms")
	dec, _ := NewDecoder(src, l, "")
	var ev Event
	if err := dec.Decode([]byte(`{"meta":{"ts":1},"amount":1.5,"id":"a"}`), &ev); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode([]byte(`{"meta":{"ts":2}}`), &ev); err != nil {
		t.Fatal(err)
	}
	if !ev.Fields[0].IsNull() || ev.HasID || ev.Time != 2 {
		t.Fatalf("stale values: %+v", ev)
	}
}

// TestDecodeTombstone: a message without a value (a tombstone of a
// compacted or CDC topic) is rejected as such, not with the parser's
// "cannot parse empty string".
func TestDecodeTombstone(t *testing.T) {
	_, src, l := loadTestSource(t, "epoch_ms")
	dec, _ := NewDecoder(src, l, "")
	var ev Event
	for _, v := range [][]byte{nil, {}} {
		var de *DecodeError
		if err := dec.Decode(v, &ev); !errors.As(err, &de) || de.Reason != ReasonInvalidPayload || !strings.Contains(de.Detail, "tombstone") {
			t.Errorf("Decode(%q) = %v, want invalid_payload naming a tombstone", v, err)
		}
	}
}

// panicky is a decoder with a bug: it indexes out of range on an empty
// payload.
type panicky struct{ Decoder }

func (p panicky) Decode(payload []byte, ev *Event) error {
	_ = payload[len(payload)-1]
	return p.Decoder.Decode(payload, ev)
}

// TestDecodePanic checks that a decoder's panic rejects the payload as
// invalid_payload, naming the panic and where it happened, instead of
// crashing ingest at that message at every restart; and that the decoders
// NewDecoder returns are so guarded.
func TestDecodePanic(t *testing.T) {
	_, src, l := loadTestSource(t, "rfc3339")
	dec, err := NewDecoder(src, l, "")
	if err != nil {
		t.Fatal(err)
	}
	g, ok := dec.(guardedDecoder)
	if !ok {
		t.Fatalf("NewDecoder returned a %T, not a guardedDecoder", dec)
	}
	g.inner = panicky{g.inner}
	var ev Event
	if err := g.Decode([]byte(`{"meta":{"ts":"2026-11-26T10:00:00Z"},"card":{"id":"c"},"amount":1}`), &ev); err != nil {
		t.Fatalf("a payload the bug spares: %v", err)
	}
	err = g.Decode(nil, &ev)
	var de *DecodeError
	if !errors.As(err, &de) || de.Reason != ReasonInvalidPayload {
		t.Fatalf("payload the decoder panics on: %v, want an invalid_payload DecodeError", err)
	}
	for _, s := range []string{"the decoder panicked", "index out of range", "ingest.panicky.Decode (decode_test.go:"} {
		if !strings.Contains(de.Detail, s) {
			t.Errorf("detail %q lacks %q", de.Detail, s)
		}
	}
}

func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{"meta":{"ts":"2026-11-26T10:00:00Z"},"card":{"id":"c"},"amount":1}`, `{}`, `[`, `{"meta":{"ts":1e400}}`} {
		f.Add([]byte(s))
	}
	_, src, l := loadTestSource(f, "rfc3339")
	dec, _ := NewDecoder(src, l, "")
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev Event
		err := dec.Decode(b, &ev)
		var de *DecodeError
		if err != nil && !errors.As(err, &de) {
			t.Fatalf("error %v is not a DecodeError", err)
		}
	})
}

func BenchmarkDecodeJSON(b *testing.B) {
	_, src, l := loadTestSource(b, "rfc3339")
	dec, _ := NewDecoder(src, l, "")
	benchDecode(b, dec, []byte(`{"meta":{"ts":"2026-11-26T10:00:00.123Z"},"card":{"id":"c-12345"},"bank":"b","account_no":42,"amount":12.5,"qty":3,"country":"FR","approved":true,"id":"t-1","merchant":"m-9","channel":"online"}`))
}

// benchDecode decodes payload with dec, b.N times.
func benchDecode(b *testing.B, dec Decoder, payload []byte) {
	var ev Event
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if err := dec.Decode(payload, &ev); err != nil {
			b.Fatal(err)
		}
	}
}
