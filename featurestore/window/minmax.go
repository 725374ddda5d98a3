package window

import (
	"math"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// Min is the smallest value of an int64 or a double field, and Max the
// largest. Doubles are ordered with -0 below +0, so the result does not
// depend on which of two zeros came first; a NaN among the values makes the
// result NaN.
type Min struct{ extreme }

// Max is the largest value of an int64 or a double field; see Min.
type Max struct{ extreme }

// NewMin returns an empty minimum of values of kind, KindInt64 or
// KindDouble. It panics on another kind.
func NewMin(kind featurestore.Kind) *Min {
	mustNumeric("min", kind)
	return &Min{extreme{kind: kind}}
}

// NewMax returns an empty maximum of values of kind, KindInt64 or
// KindDouble. It panics on another kind.
func NewMax(kind featurestore.Kind) *Max {
	mustNumeric("max", kind)
	return &Max{extreme{kind: kind, max: true}}
}

// Aggregation returns registry.AggMin.
func (m *Min) Aggregation() registry.Aggregation { return registry.AggMin }

// Aggregation returns registry.AggMax.
func (m *Max) Aggregation() registry.Aggregation { return registry.AggMax }

// Merge takes the minimum of o, a *Min of the same kind, into account.
func (m *Min) Merge(o State) {
	om, ok := o.(*Min)
	if !ok || om.kind != m.kind {
		mismatch(m, o)
	}
	m.merge(&om.extreme)
}

// Merge takes the maximum of o, a *Max of the same kind, into account.
func (m *Max) Merge(o State) {
	om, ok := o.(*Max)
	if !ok || om.kind != m.kind {
		mismatch(m, o)
	}
	m.merge(&om.extreme)
}

// AppendBinary appends the encoding of the state.
func (m *Min) AppendBinary(b []byte) []byte { return marshalState(m, b) }

// UnmarshalBinary decodes a state written by AppendBinary.
func (m *Min) UnmarshalBinary(b []byte) error { return unmarshalState(m, b) }

// AppendBinary appends the encoding of the state.
func (m *Max) AppendBinary(b []byte) []byte { return marshalState(m, b) }

// UnmarshalBinary decodes a state written by AppendBinary.
func (m *Max) UnmarshalBinary(b []byte) error { return unmarshalState(m, b) }

// extreme is the state of Min and Max.
type extreme struct {
	kind featurestore.Kind
	max  bool
	has  bool   // a value other than NaN was added
	nan  bool   // a NaN was added
	bits uint64 // the extreme value: int64, or float64 bits
}

// Add takes v into account if it is of the state's kind.
func (x *extreme) Add(v featurestore.Value, _ OrderKey) {
	switch {
	case v.Kind() != x.kind:
	case x.kind == featurestore.KindInt64:
		x.offer(uint64(v.Int64()))
	case math.IsNaN(v.Double()):
		x.nan = true
	default:
		x.offer(math.Float64bits(v.Double()))
	}
}

func (x *extreme) offer(bits uint64) {
	if !x.has || x.better(bits, x.bits) {
		x.has, x.bits = true, bits
	}
}

// better reports whether a beats b: is smaller for Min, greater for Max.
func (x *extreme) better(a, b uint64) bool {
	if x.max {
		a, b = b, a
	}
	if x.kind == featurestore.KindInt64 {
		return int64(a) < int64(b)
	}
	fa, fb := math.Float64frombits(a), math.Float64frombits(b)
	return fa < fb || (fa == fb && a>>63 == 1 && b>>63 == 0) // -0 < +0
}

func (x *extreme) merge(o *extreme) {
	x.nan = x.nan || o.nan
	if o.has {
		x.offer(o.bits)
	}
}

// Result returns the extreme value, of the state's kind; absent for no
// events.
func (x *extreme) Result() (featurestore.Value, bool) {
	switch {
	case x.nan:
		return featurestore.DoubleValue(math.NaN()), true
	case !x.has:
		return featurestore.Value{}, false
	case x.kind == featurestore.KindInt64:
		return featurestore.Int64Value(int64(x.bits)), true
	}
	return featurestore.DoubleValue(math.Float64frombits(x.bits)), true
}

// Reset empties the state.
func (x *extreme) Reset() { x.has, x.nan, x.bits = false, false, 0 }

// The body is a flags byte (bit 0: a value, bit 1: a NaN) and the value: a
// varint for int64, 8 bytes for a double.
func (x *extreme) appendBody(b []byte, _ int64) []byte {
	var flags byte
	if x.has {
		flags |= 1
	}
	if x.nan {
		flags |= 2
	}
	b = append(b, flags)
	switch {
	case !x.has:
	case x.kind == featurestore.KindInt64:
		b = appendVarint(b, int64(x.bits))
	default:
		b = append(b, byte(x.bits), byte(x.bits>>8), byte(x.bits>>16), byte(x.bits>>24),
			byte(x.bits>>32), byte(x.bits>>40), byte(x.bits>>48), byte(x.bits>>56))
	}
	return b
}

func (x *extreme) decodeBody(d *decoder, _ int64) {
	x.Reset()
	flags := d.byte()
	if flags > 3 || (flags&2 != 0 && x.kind == featurestore.KindInt64) {
		d.fail("bad flags %#x", flags)
		return
	}
	x.has, x.nan = flags&1 != 0, flags&2 != 0
	switch {
	case !x.has:
	case x.kind == featurestore.KindInt64:
		x.bits = uint64(d.varint())
	default:
		x.bits = d.uint64()
		if math.IsNaN(math.Float64frombits(x.bits)) {
			d.fail("NaN held as a value")
		}
	}
}
