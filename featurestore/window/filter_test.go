package window_test

import (
	"math"
	"strings"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

var filterFields = []window.Field{
	{Name: "b", Kind: featurestore.KindBool},
	{Name: "d", Kind: featurestore.KindDouble},
	{Name: "i", Kind: featurestore.KindInt64},
	{Name: "s", Kind: featurestore.KindString},
}

func condition(t *testing.T, field, op, value string) *registry.Condition {
	t.Helper()
	var l registry.Literal
	if err := l.UnmarshalJSON([]byte(value)); err != nil {
		t.Fatal(err)
	}
	return &registry.Condition{Field: field, Op: registry.Op(op), Value: l}
}

// eventWith returns an event whose field (by name) has value v; the others
// are null.
func eventWith(name string, v featurestore.Value) *window.Event {
	ev := &window.Event{Fields: make([]featurestore.Value, len(filterFields))}
	for i, f := range filterFields {
		if f.Name == name {
			ev.Fields[i] = v
		}
	}
	return ev
}

func TestFilter(t *testing.T) {
	null := featurestore.Value{}
	nan := featurestore.DoubleValue(math.NaN())
	negZero := featurestore.DoubleValue(math.Copysign(0, -1))
	for _, tt := range []struct {
		field, op, lit string
		v              featurestore.Value
		want           bool
	}{
		// strings, bytewise
		{"s", "eq", `"FR"`, str("FR"), true},
		{"s", "eq", `"FR"`, str("fr"), false},
		{"s", "ne", `"FR"`, str("DE"), true},
		{"s", "gt", `"m5"`, str("m6"), true},
		{"s", "gt", `"m5"`, str("m5"), false},
		{"s", "ge", `"m5"`, str("m5"), true},
		{"s", "lt", `"b"`, str("B"), true},
		{"s", "le", `"b"`, str("ba"), false},
		{"s", "in", `["FR","DE"]`, str("DE"), true},
		{"s", "in", `["FR","DE"]`, str("US"), false},
		{"s", "not_in", `["FR","DE"]`, str("US"), true},
		{"s", "not_in", `["FR","DE"]`, str("FR"), false},
		{"s", "eq", `""`, str(""), true},
		// int64
		{"i", "eq", `3`, i64(3), true},
		{"i", "gt", `3`, i64(4), true},
		{"i", "gt", `3`, i64(3), false},
		{"i", "ge", `-3`, i64(-3), true},
		{"i", "lt", `-9223372036854775808`, i64(math.MinInt64), false},
		{"i", "le", `9223372036854775807`, i64(math.MaxInt64), true},
		{"i", "in", `[1,2]`, i64(2), true},
		{"i", "not_in", `[1,2]`, i64(3), true},
		// double against double and int constants, exactly
		{"d", "eq", `2.5`, f64(2.5), true},
		{"d", "lt", `2.5`, f64(2.4999999), true},
		{"d", "ge", `10`, f64(10), true},
		{"d", "ge", `10`, f64(9.999999999999998), false},
		{"d", "gt", `9007199254740992`, f64(9007199254740992), false},
		{"d", "lt", `9007199254740993`, f64(9007199254740992), true}, // not equal after rounding the int
		{"d", "eq", `9007199254740993`, f64(9007199254740992), false},
		{"d", "gt", `9223372036854775807`, f64(9223372036854775807), true}, // the double is 2^63
		{"d", "lt", `-9223372036854775808`, f64(-9223372036854775808), false},
		{"d", "gt", `-1`, f64(-0.5), true},
		{"d", "lt", `0`, f64(-0.5), true},
		{"d", "gt", `0`, f64(0.5), true},
		{"d", "eq", `0`, negZero, true},
		{"d", "eq", `0.0`, negZero, true},
		{"d", "in", `[1, 2.5]`, f64(2.5), true},
		{"d", "in", `[1, 2.5]`, f64(1), true},
		{"d", "gt", `0`, f64(math.Inf(1)), true},
		{"d", "lt", `0`, f64(math.Inf(-1)), true},
		// NaN is unordered: only ne and not_in hold
		{"d", "eq", `1`, nan, false},
		{"d", "ne", `1`, nan, true},
		{"d", "gt", `1`, nan, false},
		{"d", "le", `1`, nan, false},
		{"d", "in", `[1]`, nan, false},
		{"d", "not_in", `[1]`, nan, true},
		// bool
		{"b", "eq", `false`, featurestore.BoolValue(false), true},
		{"b", "eq", `false`, featurestore.BoolValue(true), false},
		{"b", "ne", `false`, featurestore.BoolValue(true), true},
		{"b", "in", `[true]`, featurestore.BoolValue(true), true},
		{"b", "not_in", `[true]`, featurestore.BoolValue(true), false},
		// null, absent or mistyped fields meet only ne and not_in
		{"s", "eq", `"x"`, null, false},
		{"s", "ne", `"x"`, null, true},
		{"i", "gt", `0`, null, false},
		{"i", "le", `0`, null, false},
		{"i", "in", `[0]`, null, false},
		{"i", "not_in", `[0]`, null, true},
		{"b", "eq", `true`, null, false},
		{"b", "ne", `true`, null, true},
		{"i", "eq", `3`, f64(3), false}, // mistyped: treated as null
		{"i", "ne", `3`, f64(3), true},
	} {
		f, err := window.CompileFilter([]*registry.Condition{condition(t, tt.field, tt.op, tt.lit)}, filterFields)
		if err != nil {
			t.Fatalf("%s %s %s: %v", tt.field, tt.op, tt.lit, err)
		}
		if got := f.Match(eventWith(tt.field, tt.v)); got != tt.want {
			t.Errorf("%s=%v %s %s: %v, want %v", tt.field, tt.v, tt.op, tt.lit, got, tt.want)
		}
	}
	// A field missing from the event (a short Fields slice) is absent.
	f, _ := window.CompileFilter([]*registry.Condition{condition(t, "s", "ne", `"x"`)}, filterFields)
	if !f.Match(&window.Event{}) {
		t.Error("an absent field must meet ne")
	}
}

func TestFilterAllConditions(t *testing.T) {
	f, err := window.CompileFilter([]*registry.Condition{
		condition(t, "d", "ge", `10`),
		condition(t, "s", "eq", `"online"`),
	}, filterFields)
	if err != nil {
		t.Fatal(err)
	}
	ev := &window.Event{Fields: []featurestore.Value{{}, f64(12), {}, str("online")}}
	if !f.Match(ev) {
		t.Error("both conditions hold")
	}
	ev.Fields[3] = str("pos")
	if f.Match(ev) {
		t.Error("one condition fails")
	}
	if empty, _ := window.CompileFilter(nil, filterFields); !empty.Match(&window.Event{}) || !empty.Empty() {
		t.Error("an empty filter keeps every event")
	}
}

func TestFilterErrors(t *testing.T) {
	for _, tt := range []struct {
		c    *registry.Condition
		want string
	}{
		{condition(t, "nope", "eq", `1`), `unknown field "nope"`},
		{condition(t, "b", "gt", `true`), "does not apply to bool"},
		{condition(t, "i", "eq", `1.5`), "does not fit"},
		{condition(t, "s", "eq", `1`), "does not fit"},
		{condition(t, "i", "in", `1`), "needs a non-empty list"},
		{condition(t, "i", "eq", `[1]`), "needs one value"},
		{condition(t, "i", "like", `1`), "unknown operator"},
	} {
		_, err := window.CompileFilter([]*registry.Condition{tt.c}, filterFields)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: error %v, want %q", tt.c, err, tt.want)
		}
	}
}
