package window

import (
	"fmt"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// Sum is the exact sum of an int64 or a double field.
//
// A double sum is the exact sum of the values, rounded once to the nearest
// double (ties to even) by Result: independent of the order of the events,
// and as accurate as a double can be. A sum with a NaN, or with both
// infinities, is NaN; with one infinity, that infinity; a sum that is exactly
// zero is +0.
//
// An int64 sum is exact however large it grows (to 2^127 and beyond), and
// Result saturates it to the int64 range: a sum above math.MaxInt64 is
// reported as math.MaxInt64, one below math.MinInt64 as math.MinInt64.
type Sum struct {
	kind featurestore.Kind
	acc  sumAcc
}

// NewSum returns an empty sum of values of kind, KindInt64 or KindDouble. It
// panics on another kind.
func NewSum(kind featurestore.Kind) *Sum {
	mustNumeric("sum", kind)
	s := &Sum{kind: kind}
	s.acc.reset()
	return s
}

func mustNumeric(what string, kind featurestore.Kind) {
	if !isNumeric(kind) {
		panic(fmt.Sprintf("window: %s of kind %s", what, kind))
	}
}

// Aggregation returns registry.AggSum.
func (s *Sum) Aggregation() registry.Aggregation { return registry.AggSum }

// Add adds v if it is of the sum's kind.
func (s *Sum) Add(v featurestore.Value, _ OrderKey) { addNumber(&s.acc, s.kind, v) }

func addNumber(a *sumAcc, kind featurestore.Kind, v featurestore.Value) bool {
	switch {
	case v.Kind() != kind:
		return false
	case kind == featurestore.KindInt64:
		a.addInt(v.Int64())
	default:
		a.addFloat(v.Double())
	}
	return true
}

// Merge adds the sum of o, a *Sum of the same kind.
func (s *Sum) Merge(o State) {
	os, ok := o.(*Sum)
	if !ok || os.kind != s.kind {
		mismatch(s, o)
	}
	s.acc.merge(&os.acc)
}

// Result returns the sum, of the sum's kind; 0 for no events, present.
func (s *Sum) Result() (featurestore.Value, bool) {
	if s.kind == featurestore.KindInt64 {
		return featurestore.Int64Value(s.acc.int64()), true
	}
	return featurestore.DoubleValue(s.acc.float64()), true
}

// Reset empties the sum.
func (s *Sum) Reset() { s.acc.reset() }

// AppendBinary appends the encoding of the sum.
func (s *Sum) AppendBinary(b []byte) []byte { return marshalState(s, b) }

// UnmarshalBinary decodes a sum written by AppendBinary.
func (s *Sum) UnmarshalBinary(b []byte) error { return unmarshalState(s, b) }

func (s *Sum) appendBody(b []byte, _ int64) []byte {
	return appendAcc(b, s.acc.w[:], s.acc.special, sumScale)
}

func (s *Sum) decodeBody(d *decoder, _ int64) { decodeSum(d, &s.acc, s.kind) }

func decodeSum(d *decoder, a *sumAcc, kind featurestore.Kind) {
	if kind == featurestore.KindInt64 {
		decodeAcc(d, a.w[:], &a.span, &a.special, sumScale, sumScale, sumMaxBits, false)
	} else {
		decodeAcc(d, a.w[:], &a.span, &a.special, sumScale, sumScale-1074, sumMaxBits, true)
	}
}

// Mean is the arithmetic mean of an int64 or a double field: the exact sum
// divided by the count, rounded once to the nearest double (ties to even).
// Non-finite values make it NaN or an infinity as for Sum.
type Mean struct {
	kind featurestore.Kind
	n    uint64
	acc  sumAcc
}

// NewMean returns an empty mean of values of kind, KindInt64 or KindDouble.
// It panics on another kind.
func NewMean(kind featurestore.Kind) *Mean {
	mustNumeric("mean", kind)
	m := &Mean{kind: kind}
	m.acc.reset()
	return m
}

// Aggregation returns registry.AggMean.
func (m *Mean) Aggregation() registry.Aggregation { return registry.AggMean }

// Add adds v if it is of the mean's kind.
func (m *Mean) Add(v featurestore.Value, _ OrderKey) {
	if addNumber(&m.acc, m.kind, v) {
		m.n++
	}
}

// Merge adds the values of o, a *Mean of the same kind.
func (m *Mean) Merge(o State) {
	om, ok := o.(*Mean)
	if !ok || om.kind != m.kind {
		mismatch(m, o)
	}
	m.n += om.n
	m.acc.merge(&om.acc)
}

// Result returns the mean as a double; absent for no events.
func (m *Mean) Result() (featurestore.Value, bool) {
	switch {
	case m.n == 0:
		return featurestore.Value{}, false
	case m.acc.special != 0:
		return featurestore.DoubleValue(specialResult(m.acc.special)), true
	case m.n == 1:
		return featurestore.DoubleValue(m.acc.float64()), true
	}
	if f, ok := quotientSmall(m.acc.w[:], m.n, sumScale); ok {
		return featurestore.DoubleValue(f), true
	}
	z, e := oddPart(m.acc.w[:])
	return featurestore.DoubleValue(quotient(z, m.n, sumScale-e)), true
}

// Reset empties the mean.
func (m *Mean) Reset() {
	m.n = 0
	m.acc.reset()
}

// AppendBinary appends the encoding of the mean.
func (m *Mean) AppendBinary(b []byte) []byte { return marshalState(m, b) }

// UnmarshalBinary decodes a mean written by AppendBinary.
func (m *Mean) UnmarshalBinary(b []byte) error { return unmarshalState(m, b) }

func (m *Mean) appendBody(b []byte, _ int64) []byte {
	b = appendUvarint(b, m.n)
	return appendAcc(b, m.acc.w[:], m.acc.special, sumScale)
}

func (m *Mean) decodeBody(d *decoder, _ int64) {
	m.n = d.uvarint()
	decodeSum(d, &m.acc, m.kind)
	if d.err == nil && m.n == 0 && (m.acc.special != 0 || !isZero(m.acc.w[:])) {
		d.fail("mean of no values with a sum")
	}
}
