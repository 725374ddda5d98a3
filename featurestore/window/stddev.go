package window

import (
	"math"
	"math/big"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// Stddev is the population standard deviation of an int64 or a double field,
// sqrt(Σx²/n - (Σx/n)²), computed from the exact count n, the exact sum Σx and
// the exact sum of the exact squares Σx², and rounded once to the nearest
// double (ties to even). So it is independent of the order of the events, 0
// for one event or for equal values, and never negative. A NaN or infinite
// value makes it NaN.
type Stddev struct {
	kind featurestore.Kind
	n    uint64
	sum  sumAcc
	sq   sqAcc
}

// NewStddev returns an empty standard deviation of values of kind, KindInt64
// or KindDouble. It panics on another kind.
func NewStddev(kind featurestore.Kind) *Stddev {
	mustNumeric("stddev", kind)
	s := &Stddev{kind: kind}
	s.Reset()
	return s
}

// Aggregation returns registry.AggStddev.
func (s *Stddev) Aggregation() registry.Aggregation { return registry.AggStddev }

// Add adds v if it is of the state's kind.
func (s *Stddev) Add(v featurestore.Value, _ OrderKey) {
	switch {
	case v.Kind() != s.kind:
		return
	case s.kind == featurestore.KindInt64:
		x := v.Int64()
		s.sum.addInt(x)
		s.sq.addSquareInt(x)
	default:
		x := v.Double()
		s.sum.addFloat(x)
		s.sq.addSquareFloat(x)
	}
	s.n++
}

// Merge adds the values of o, a *Stddev of the same kind.
func (s *Stddev) Merge(o State) {
	os, ok := o.(*Stddev)
	if !ok || os.kind != s.kind {
		mismatch(s, o)
	}
	s.n += os.n
	s.sum.merge(&os.sum)
	s.sq.merge(&os.sq)
}

// Result returns the standard deviation as a double; absent for no events.
func (s *Stddev) Result() (featurestore.Value, bool) {
	switch {
	case s.n == 0:
		return featurestore.Value{}, false
	case s.sum.special != 0 || s.sq.special != 0:
		return featurestore.DoubleValue(math.NaN()), true
	case s.n == 1:
		return featurestore.DoubleValue(0), true
	}
	// n²·variance = n·Σx² - (Σx)² = (n·Aq - As²)·2^-2176, with Σx = As·2^-1088
	// and Σx² = Aq·2^-2176; so stddev = sqrt(n·Aq - As²)·2^-1088 / n. With
	// As = zs·2^es and Aq = zq·2^eq, an even c <= min(2es, eq) comes out of
	// the square root as 2^(c/2), leaving small numbers inside it.
	zs, es := oddPart(s.sum.w[:])
	zq, eq := oddPart(s.sq.w[:])
	c := min(2*es, eq) &^ 1
	if zs.Sign() == 0 {
		c = eq &^ 1
	}
	m := zq.Mul(zq, new(big.Int).SetUint64(s.n))
	m.Lsh(m, uint(eq-c))
	zs.Mul(zs, zs)
	m.Sub(m, zs.Lsh(zs, uint(2*es-c)))
	return featurestore.DoubleValue(sqrtQuotient(m, s.n, sumScale-c/2)), true
}

// Reset empties the state.
func (s *Stddev) Reset() {
	s.n = 0
	s.sum.reset()
	s.sq.reset()
}

// AppendBinary appends the encoding of the state.
func (s *Stddev) AppendBinary(b []byte) []byte { return marshalState(s, b) }

// UnmarshalBinary decodes a state written by AppendBinary.
func (s *Stddev) UnmarshalBinary(b []byte) error { return unmarshalState(s, b) }

func (s *Stddev) appendBody(b []byte, _ int64) []byte {
	b = appendUvarint(b, s.n)
	b = appendAcc(b, s.sum.w[:], s.sum.special, sumScale)
	return appendAcc(b, s.sq.w[:], s.sq.special, sqScale)
}

func (s *Stddev) decodeBody(d *decoder, _ int64) {
	s.n = d.uvarint()
	decodeSum(d, &s.sum, s.kind)
	minLow := 2 * (sumScale - 1074)
	if s.kind == featurestore.KindInt64 {
		minLow = sqScale
	}
	decodeAcc(d, s.sq.w[:], &s.sq.span, &s.sq.special, sqScale, minLow, sqMaxBits, s.kind == featurestore.KindDouble)
	switch {
	case d.err != nil:
	case s.sq.special&specialNegInf != 0 || negative(s.sq.w[:]):
		d.fail("negative sum of squares")
	case s.n == 0 && (s.sum.special != 0 || s.sq.special != 0 || !isZero(s.sum.w[:]) || !isZero(s.sq.w[:])):
		d.fail("stddev of no values with sums")
	}
}
