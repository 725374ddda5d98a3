package window

import (
	"math"
	"math/big"
	"math/bits"
)

// Exact sums are fixed-point two's complement integers wide enough for any
// sum of doubles (a superaccumulator): the sum's value is A * 2^-scale for the
// integer A held in little-endian 64-bit words. Adding a double is exact (its
// 53-bit mantissa lands on whole bits), so a sum is the exact mathematical sum
// of its inputs whatever their order or grouping, and it is rounded once, to
// nearest with ties to even, when a result is read.
//
//   - sums of values (sumAcc): scale 1088, 35 words. The smallest subnormal
//     2^-1074 is bit 14; the largest double is below bit 2112; 127 bits of
//     headroom above it hold more additions than can ever happen (2^64 of the
//     largest doubles take 64 of them).
//   - sums of squares (sqAcc): scale 2176, 68 words, for the exact squares
//     that stddev needs: x*x of a double is a 106-bit product from 2^-2148 to
//     below 2^2048, bits 28 to 4223, plus headroom.
//
// NaN and infinities cannot be held in A; they are kept as flags, so a sum
// with a NaN, or with both infinities, is NaN, and one with one infinity is
// that infinity, as IEEE 754 addition would give in any order.
const (
	sumScale = 1088
	sumWords = 35
	sqScale  = 2 * sumScale
	sqWords  = 68

	// sumMaxBits and sqMaxBits bound the magnitude of a decoded
	// accumulator, far enough below the sign bit that merging decoded states
	// cannot overflow.
	sumMaxBits = 2112 + 64
	sqMaxBits  = 4224 + 64
)

// Flags of values that the fixed-point integer cannot hold.
const (
	specialNaN uint8 = 1 << iota
	specialPosInf
	specialNegInf
	specialMask = specialNaN | specialPosInf | specialNegInf
)

// sumAcc is an exact sum of doubles and int64s.
// Its span tracks the words in use, so that merges touch only those.
type sumAcc struct {
	span
	special uint8
	w       [sumWords]uint64
}

// sqAcc is an exact sum of squares of doubles and int64s.
type sqAcc struct {
	span
	special uint8
	w       [sqWords]uint64
}

// span bounds the words of an accumulator that can differ from zero and
// from the sign: the words below lo are zero, the words above hi all equal
// the sign extension of word hi. A sum of amounts occupies two or three
// words, so merging two sums costs a few additions, not 35 or 68. The zero
// span (lo = hi = 0) is valid for any value, only slow.
type span struct {
	lo, hi uint8
}

// emptySpan is the span of a zero accumulator of n words.
func emptySpan(n int) span { return span{lo: uint8(n)} }

// ext returns the word that extends the sign of x: all zeros or all ones.
func ext(x uint64) uint64 { return uint64(int64(x) >> 63) }

// shrink lowers hi while the word below already determines the ones above.
func shrink(w []uint64, hi int) uint8 {
	for hi > 0 && w[hi] == ext(w[hi-1]) {
		hi--
	}
	return uint8(hi)
}

// touched updates the span after the words from i to last changed.
func (s *span) touched(w []uint64, i, last int) {
	s.lo = min(s.lo, uint8(i))
	s.hi = shrink(w, min(len(w)-1, max(int(s.hi), last)+1))
}

// measure sets the span of words written in bulk.
func (s *span) measure(w []uint64) {
	s.lo = uint8(len(w))
	for i, x := range w {
		if x != 0 {
			s.lo = uint8(i)
			break
		}
	}
	s.hi = shrink(w, len(w)-1)
}

// merge adds o (with span os) to w (with span s).
func (s *span) merge(w, o []uint64, os span) {
	lo := min(s.lo, os.lo)
	h := min(len(w)-1, int(max(s.hi, os.hi))+1)
	var c uint64
	for i := int(lo); i <= h; i++ {
		w[i], c = bits.Add64(w[i], o[i], c)
	}
	// The sum fits in h+1 words: the words above extend its sign.
	if e := ext(w[h]); h+1 < len(w) && w[h+1] != e {
		for i := h + 1; i < len(w); i++ {
			w[i] = e
		}
	}
	s.lo, s.hi = lo, shrink(w, h)
}

func (a *sumAcc) reset() { *a = sumAcc{span: emptySpan(sumWords)} }

func (q *sqAcc) reset() { *q = sqAcc{span: emptySpan(sqWords)} }

// decompose splits a finite double into x = ±m * 2^e with m < 2^53.
func decompose(x float64) (m uint64, e int, neg bool) {
	u := math.Float64bits(x)
	be := int(u>>52) & 0x7ff
	m = u & (1<<52 - 1)
	if be == 0 {
		be = 1 // subnormal: no implicit bit, exponent of the smallest normal
	} else {
		m |= 1 << 52
	}
	return m, be - 1075, u>>63 != 0
}

// classify returns the flag of a NaN or infinite x, or 0 for a finite x.
func classify(x float64) uint8 {
	switch {
	case x != x:
		return specialNaN
	case x > math.MaxFloat64:
		return specialPosInf
	case x < -math.MaxFloat64:
		return specialNegInf
	}
	return 0
}

func (a *sumAcc) addFloat(x float64) {
	if s := classify(x); s != 0 {
		a.special |= s
		return
	}
	m, e, neg := decompose(x)
	if m != 0 {
		pos := e + sumScale
		a.touched(a.w[:], pos>>6, addBits(a.w[:], 0, m, pos, neg))
	}
}

func (a *sumAcc) addInt(x int64) {
	m := uint64(x)
	if x < 0 {
		m = -m
	}
	a.touched(a.w[:], sumScale>>6, addBits(a.w[:], 0, m, sumScale, x < 0))
}

func (a *sumAcc) merge(o *sumAcc) {
	a.span.merge(a.w[:], o.w[:], o.span)
	a.special |= o.special
}

// addSquareFloat adds x*x exactly.
func (q *sqAcc) addSquareFloat(x float64) {
	if s := classify(x); s != 0 {
		if s != specialNaN {
			s = specialPosInf
		}
		q.special |= s
		return
	}
	m, e, _ := decompose(x)
	if m != 0 {
		hi, lo := bits.Mul64(m, m)
		pos := 2*e + sqScale
		q.touched(q.w[:], pos>>6, addBits(q.w[:], hi, lo, pos, false))
	}
}

// addSquareInt adds x*x exactly.
func (q *sqAcc) addSquareInt(x int64) {
	m := uint64(x)
	if x < 0 {
		m = -m
	}
	hi, lo := bits.Mul64(m, m)
	q.touched(q.w[:], sqScale>>6, addBits(q.w[:], hi, lo, sqScale, false))
}

func (q *sqAcc) merge(o *sqAcc) {
	q.span.merge(q.w[:], o.w[:], o.span)
	q.special |= o.special
}

// addBits adds (or subtracts, if neg) the 128-bit number hi:lo shifted left
// by pos bits to the two's complement integer w, and returns the index of
// the last word it changed.
func addBits(w []uint64, hi, lo uint64, pos int, neg bool) int {
	i, s := pos>>6, uint(pos&63)
	// Three words: Go defines x>>64 as 0, which covers s == 0.
	w0 := lo << s
	w1 := hi<<s | lo>>(64-s)
	w2 := hi >> (64 - s)
	var c uint64
	if !neg {
		w[i], c = bits.Add64(w[i], w0, 0)
		w[i+1], c = bits.Add64(w[i+1], w1, c)
		w[i+2], c = bits.Add64(w[i+2], w2, c)
		j := i + 2
		for ; c != 0 && j+1 < len(w); j++ {
			w[j+1], c = bits.Add64(w[j+1], 0, c)
		}
		return j
	}
	w[i], c = bits.Sub64(w[i], w0, 0)
	w[i+1], c = bits.Sub64(w[i+1], w1, c)
	w[i+2], c = bits.Sub64(w[i+2], w2, c)
	j := i + 2
	for ; c != 0 && j+1 < len(w); j++ {
		w[j+1], c = bits.Sub64(w[j+1], 0, c)
	}
	return j
}

func negative(w []uint64) bool { return w[len(w)-1]>>63 != 0 }

func negate(w []uint64) {
	var c uint64 = 1
	for i := range w {
		w[i], c = bits.Add64(^w[i], 0, c)
	}
}

func isZero(w []uint64) bool {
	for _, x := range w {
		if x != 0 {
			return false
		}
	}
	return true
}

// topBit returns the index of the highest set bit of w, or -1.
func topBit(w []uint64) int {
	for i := len(w) - 1; i >= 0; i-- {
		if w[i] != 0 {
			return i*64 + 63 - bits.LeadingZeros64(w[i])
		}
	}
	return -1
}

// lowBit returns the index of the lowest set bit of w, or -1.
func lowBit(w []uint64) int {
	for i, x := range w {
		if x != 0 {
			return i*64 + bits.TrailingZeros64(x)
		}
	}
	return -1
}

// field returns the n <= 64 bits of w from bit pos up.
func field(w []uint64, pos, n int) uint64 {
	i, s := pos>>6, uint(pos&63)
	x := w[i] >> s
	if s != 0 && i+1 < len(w) {
		x |= w[i+1] << (64 - s)
	}
	if n < 64 {
		x &= 1<<uint(n) - 1
	}
	return x
}

// anyBelow reports whether any bit of w below bit pos is set.
func anyBelow(w []uint64, pos int) bool {
	i := pos >> 6
	for j := 0; j < i; j++ {
		if w[j] != 0 {
			return true
		}
	}
	return w[i]&(1<<uint(pos&63)-1) != 0
}

// specialResult is the IEEE 754 sum of the flagged values.
func specialResult(s uint8) float64 {
	switch {
	case s&specialNaN != 0, s&(specialPosInf|specialNegInf) == specialPosInf|specialNegInf:
		return math.NaN()
	case s&specialPosInf != 0:
		return math.Inf(1)
	}
	return math.Inf(-1)
}

// float64 returns the sum rounded to the nearest double, ties to even; a
// sum beyond the largest double is an infinity. An empty sum, and a sum
// whose values cancel out, is +0.
func (a *sumAcc) float64() float64 {
	if a.special != 0 {
		return specialResult(a.special)
	}
	m := a.w
	neg := negative(m[:])
	if neg {
		negate(m[:])
	}
	p := topBit(m[:])
	if p < 0 {
		return 0
	}
	// The mantissa's last bit l: 53 bits below the top, but not below the
	// subnormal unit 2^-1074.
	l := max(p-52, sumScale-1074)
	q := field(m[:], l, p-l+1)
	if l > 0 && field(m[:], l-1, 1) == 1 && (q&1 == 1 || (l > 1 && anyBelow(m[:], l-1))) {
		q++
	}
	f := math.Ldexp(float64(q), l-sumScale)
	if neg {
		f = -f
	}
	return f
}

// int64 returns an integer sum, saturated to the int64 range: a sum above
// math.MaxInt64 is math.MaxInt64, one below math.MinInt64 is math.MinInt64.
// The sum must hold integers only.
func (a *sumAcc) int64() int64 {
	const unit = sumScale / 64 // the word holding bit 2^0
	neg := negative(a.w[:])
	ext := uint64(0)
	if neg {
		ext = ^ext
	}
	fits := (a.w[unit]>>63 != 0) == neg
	for _, x := range a.w[unit+1:] {
		fits = fits && x == ext
	}
	switch {
	case fits:
		return int64(a.w[unit])
	case neg:
		return math.MinInt64
	}
	return math.MaxInt64
}

// oddPart returns A = z * 2^e with z odd (or zero, with e = 0), for the
// integer A that the words hold: the trailing zeros of a sum are stripped,
// so that the big-number arithmetic of mean and stddev works on the few
// significant bits, not on thousands of bits of scale.
func oddPart(w []uint64) (*big.Int, int) {
	z := bigInt(w)
	if z.Sign() == 0 {
		return z, 0
	}
	e := int(z.TrailingZeroBits())
	return z.Rsh(z, uint(e)), e
}

// bigInt returns A, the integer that the words hold in two's complement.
func bigInt(w []uint64) *big.Int {
	m := make([]uint64, len(w))
	copy(m, w)
	neg := negative(m)
	if neg {
		negate(m)
	}
	b := make([]byte, 0, len(m)*8)
	for i := len(m) - 1; i >= 0; i-- {
		x := m[i]
		b = append(b, byte(x>>56), byte(x>>48), byte(x>>40), byte(x>>32), byte(x>>24), byte(x>>16), byte(x>>8), byte(x))
	}
	z := new(big.Int).SetBytes(b)
	if neg {
		z.Neg(z)
	}
	return z
}

// roundScaled returns (z + d) * 2^e rounded to the nearest double, ties to
// even, where z >= 0 and 0 < d < 1 if inexact, else d = 0. z must have at
// least 55 bits, or be exact, so that the rounding is decided by z.
func roundScaled(z *big.Int, e int, inexact bool) float64 {
	if z.Sign() == 0 {
		return 0
	}
	p := z.BitLen() - 1 + e
	l := max(p-52, -1074)
	sh := l - e
	if sh <= 0 {
		// z fits in the mantissa as it is; only an exact z gets here.
		return math.Ldexp(float64(z.Uint64()), e)
	}
	q := new(big.Int).Rsh(z, uint(sh)).Uint64()
	half := z.Bit(sh-1) == 1
	sticky := inexact || z.TrailingZeroBits() < uint(sh-1)
	if half && (sticky || q&1 == 1) {
		q++
	}
	return math.Ldexp(float64(q), l)
}

// quotientSmall is quotient(oddPart(w)) without math/big, for the common
// case of a sum whose odd part has at most 63 bits (a sum of amounts with
// a few decimals, of counts, of doubles of close magnitudes); ok is false
// otherwise. It computes the same quotient and rounds it the same way, in
// 128-bit arithmetic: it decides every mean a lookup or an export reads.
func quotientSmall(w []uint64, n uint64, scale int) (f float64, ok bool) {
	var mag [sqWords]uint64
	neg := negative(w)
	if neg {
		if len(w) > len(mag) {
			return 0, false
		}
		copy(mag[:], w)
		negate(mag[:len(w)])
		w = mag[:len(w)]
	}
	lo := lowBit(w)
	if lo < 0 {
		return 0, true
	}
	hi := topBit(w)
	if hi-lo >= 63 {
		return 0, false
	}
	z := field(w, lo, hi-lo+1) // the odd part: a = z * 2^lo
	// As quotient: z * 2^s / n with s such that the quotient has at least
	// 55 bits; z * 2^s has at most 56 + bits(n) <= 120 bits, and its high
	// word is below n, as Div64 needs.
	s := max(0, 56+bits.Len64(n)-bits.Len64(z))
	var h, l uint64
	switch {
	case s == 0:
		l = z
	case s < 64:
		h, l = z>>(64-s), z<<s
	default:
		h = z << (s - 64)
	}
	q, r := bits.Div64(h, l, n)
	f = roundScaled64(q, lo-scale-s, r != 0)
	if neg {
		f = -f
	}
	return f, true
}

// roundScaled64 is roundScaled for a z of at most 64 bits.
func roundScaled64(z uint64, e int, inexact bool) float64 {
	if z == 0 {
		return 0
	}
	p := bits.Len64(z) - 1 + e
	l := max(p-52, -1074)
	sh := l - e
	if sh <= 0 {
		return math.Ldexp(float64(z), e)
	}
	var q uint64
	half := false
	if sh < 64 {
		q = z >> uint(sh)
	}
	if sh-1 < 64 {
		half = z>>uint(sh-1)&1 == 1
	}
	sticky := inexact || bits.TrailingZeros64(z) < sh-1
	if half && (sticky || q&1 == 1) {
		q++
	}
	return math.Ldexp(float64(q), l)
}

// quotient returns a / (n * 2^scale) rounded to the nearest double, ties to
// even, for n > 0.
func quotient(a *big.Int, n uint64, scale int) float64 {
	neg := a.Sign() < 0
	mag := new(big.Int).Abs(a)
	d := new(big.Int).SetUint64(n)
	s := max(0, 56+d.BitLen()-mag.BitLen())
	mag.Lsh(mag, uint(s))
	z, r := mag.QuoRem(mag, d, new(big.Int))
	f := roundScaled(z, -scale-s, r.Sign() != 0)
	if neg {
		f = -f
	}
	return f
}

// sqrtQuotient returns sqrt(m) / (n * 2^scale) rounded to the nearest double,
// ties to even, for m >= 0 and n > 0: z = floor(sqrt(m)*2^s/n) is exactly
// isqrt(floor(m*4^s/n^2)), and it is exact iff z^2*n^2 = m*4^s.
func sqrtQuotient(m *big.Int, n uint64, scale int) float64 {
	if m.Sign() <= 0 {
		return 0
	}
	n2 := new(big.Int).SetUint64(n)
	n2.Mul(n2, n2)
	s := max(0, 57+n2.BitLen()/2-m.BitLen()/2)
	for {
		x := new(big.Int).Lsh(m, uint(2*s))
		y := new(big.Int).Quo(x, n2)
		z := y.Sqrt(y)
		if z.BitLen() < 55 {
			s += 55 - z.BitLen()
			continue
		}
		back := new(big.Int).Mul(z, z)
		back.Mul(back, n2)
		return roundScaled(z, -scale-s, back.Cmp(x) != 0)
	}
}
