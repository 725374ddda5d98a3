package window

import (
	"fmt"
	"math"
	"strings"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// Filter is a compiled list of conditions that an event must all meet.
//
// A condition compares an event field, of its declared type, with a constant:
//
//   - strings compare bytewise; int64 with int64; bool fields only by
//     equality (eq, ne, in, not_in);
//   - a double field compares numerically with double and int64 constants,
//     exactly (9007199254740993 is not equal to the double 9007199254740992);
//   - NaN is unordered: it is not eq, gt, ge, lt, le or in anything, and it is
//     ne and not_in everything; -0 equals +0;
//   - a field that is null, absent, or of another kind than declared meets
//     only ne and not_in: "amount ne 0" keeps events without an amount,
//     "amount gt 0" does not.
//
// An empty Filter keeps every event.
type Filter struct {
	conds []condition
}

type condition struct {
	field int
	op    registry.Op
	kind  featurestore.Kind    // the field's declared kind
	lits  []featurestore.Value // one for a comparison, several for in and not_in
}

// CompileFilter compiles conditions over the fields of an event, whose index
// in Event.Fields and kind fields gives.
func CompileFilter(conds []*registry.Condition, fields []Field) (Filter, error) {
	var f Filter
	for i, c := range conds {
		idx := fieldIndex(fields, c.Field)
		if idx < 0 {
			return Filter{}, fmt.Errorf("filter[%d]: unknown field %q", i, c.Field)
		}
		kind := fields[idx].Kind
		raw := c.Value.Value()
		list, isList := raw.([]any)
		setOp := c.Op == registry.OpIn || c.Op == registry.OpNotIn
		switch {
		case setOp && (!isList || len(list) == 0):
			return Filter{}, fmt.Errorf("filter[%d]: %s needs a non-empty list", i, c.Op)
		case !setOp && isList:
			return Filter{}, fmt.Errorf("filter[%d]: %s needs one value, got a list", i, c.Op)
		case !isList:
			list = []any{raw}
		}
		cond := condition{field: idx, op: c.Op, kind: kind}
		switch c.Op {
		case registry.OpEq, registry.OpNe, registry.OpIn, registry.OpNotIn:
		case registry.OpGt, registry.OpGe, registry.OpLt, registry.OpLe:
			if kind == featurestore.KindBool {
				return Filter{}, fmt.Errorf("filter[%d]: %s does not apply to bool field %q", i, c.Op, c.Field)
			}
		default:
			return Filter{}, fmt.Errorf("filter[%d]: unknown operator %q", i, c.Op)
		}
		for _, x := range list {
			lit, ok := literal(x, kind)
			if !ok {
				return Filter{}, fmt.Errorf("filter[%d]: value %v (%T) does not fit field %q of type %s", i, x, x, c.Field, kind)
			}
			cond.lits = append(cond.lits, lit)
		}
		f.conds = append(f.conds, cond)
	}
	return f, nil
}

// literal converts a constant to a Value that fields of kind compare with.
// An int64 constant stays an int64 for a double field, for exact comparison.
func literal(x any, kind featurestore.Kind) (featurestore.Value, bool) {
	switch x := x.(type) {
	case string:
		return featurestore.StringValue(x), kind == featurestore.KindString
	case int64:
		return featurestore.Int64Value(x), kind == featurestore.KindInt64 || kind == featurestore.KindDouble
	case int:
		return featurestore.Int64Value(int64(x)), kind == featurestore.KindInt64 || kind == featurestore.KindDouble
	case float64:
		return featurestore.DoubleValue(x), kind == featurestore.KindDouble && !math.IsNaN(x)
	case bool:
		return featurestore.BoolValue(x), kind == featurestore.KindBool
	}
	return featurestore.Value{}, false
}

// Match reports whether the event meets every condition.
func (f *Filter) Match(ev *Event) bool {
	for i := range f.conds {
		if !f.conds[i].match(ev.Field(f.conds[i].field)) {
			return false
		}
	}
	return true
}

// Empty reports whether the filter has no conditions.
func (f *Filter) Empty() bool { return len(f.conds) == 0 }

// Comparison results; unordered is NaN against anything.
const (
	less      = -1
	equal     = 0
	greater   = 1
	unordered = 2
)

func (c *condition) match(v featurestore.Value) bool {
	negated := c.op == registry.OpNe || c.op == registry.OpNotIn
	if v.Kind() != c.kind {
		return negated
	}
	switch c.op {
	case registry.OpIn, registry.OpNotIn:
		for _, lit := range c.lits {
			if compare(v, lit) == equal {
				return !negated
			}
		}
		return negated
	}
	r := compare(v, c.lits[0])
	switch c.op {
	case registry.OpEq:
		return r == equal
	case registry.OpNe:
		return r != equal
	case registry.OpGt:
		return r == greater
	case registry.OpGe:
		return r == greater || r == equal
	case registry.OpLt:
		return r == less
	case registry.OpLe:
		return r == less || r == equal
	}
	return false
}

// compare compares a field value with a literal of a kind that fits it.
func compare(v, lit featurestore.Value) int {
	switch v.Kind() {
	case featurestore.KindString:
		return strings.Compare(v.Str(), lit.Str())
	case featurestore.KindInt64:
		return cmpInt(v.Int64(), lit.Int64())
	case featurestore.KindBool:
		if v.Bool() == lit.Bool() {
			return equal
		}
		return unordered
	case featurestore.KindDouble:
		x := v.Double()
		if lit.Kind() == featurestore.KindInt64 {
			return cmpFloatInt(x, lit.Int64())
		}
		y := lit.Double()
		switch {
		case x < y:
			return less
		case x > y:
			return greater
		case x == y:
			return equal
		}
	}
	return unordered
}

// cmpFloatInt compares a double with an int64 exactly.
func cmpFloatInt(x float64, i int64) int {
	switch {
	case math.IsNaN(x):
		return unordered
	case x >= 0x1p63:
		return greater
	case x < -0x1p63:
		return less
	}
	t := int64(x) // exact: |x| < 2^63, truncated toward zero
	if t != i {
		return cmpInt(t, i)
	}
	// Equal integer parts: the fraction decides.
	switch frac := x - float64(t); {
	case frac > 0:
		return greater
	case frac < 0:
		return less
	}
	return equal
}
