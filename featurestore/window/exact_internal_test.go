package window

import (
	"bytes"
	"math"
	"math/big"
	"math/rand"
	"slices"
	"testing"
)

// checkSpan fails unless the span describes the words: zeros below lo, and
// the sign extension of word hi above it.
func checkSpan(t *testing.T, w []uint64, s span) {
	t.Helper()
	for i := 0; i < int(s.lo) && i < len(w); i++ {
		if w[i] != 0 {
			t.Fatalf("word %d below lo %d is %#x", i, s.lo, w[i])
		}
	}
	for i := int(s.hi) + 1; i < len(w); i++ {
		if w[i] != ext(w[s.hi]) {
			t.Fatalf("word %d above hi %d is %#x, not the sign extension", i, s.hi, w[i])
		}
	}
}

// TestSpans adds, subtracts and merges values that cross zero and change
// sign, and checks after each step that the spans hold and the value is the
// exact sum.
func TestSpans(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	draw := func() float64 {
		switch rng.Intn(5) {
		case 0:
			return math.Ldexp(float64(rng.Int63n(1<<53)), rng.Intn(2045)-1074)
		case 1:
			return -math.Ldexp(float64(rng.Int63n(1<<53)), rng.Intn(2045)-1074)
		}
		return float64(rng.Intn(21) - 10)
	}
	for range 300 {
		var accs []*sumAcc
		var sqs []*sqAcc
		var exact, exactSq []*big.Rat
		for range 1 + rng.Intn(4) {
			a, q := new(sumAcc), new(sqAcc)
			a.reset()
			q.reset()
			r, rq := new(big.Rat), new(big.Rat)
			for range rng.Intn(8) {
				x := draw()
				a.addFloat(x)
				q.addSquareFloat(x)
				bx := new(big.Rat).SetFloat64(x)
				r.Add(r, bx)
				rq.Add(rq, bx.Mul(bx, bx))
				checkSpan(t, a.w[:], a.span)
				checkSpan(t, q.w[:], q.span)
			}
			accs, sqs, exact, exactSq = append(accs, a), append(sqs, q), append(exact, r), append(exactSq, rq)
		}
		for i := 1; i < len(accs); i++ {
			accs[0].merge(accs[i])
			sqs[0].merge(sqs[i])
			exact[0].Add(exact[0], exact[i])
			exactSq[0].Add(exactSq[0], exactSq[i])
			checkSpan(t, accs[0].w[:], accs[0].span)
			checkSpan(t, sqs[0].w[:], sqs[0].span)
		}
		got := new(big.Rat).SetFrac(bigInt(accs[0].w[:]), new(big.Int).Lsh(big.NewInt(1), sumScale))
		if got.Cmp(exact[0]) != 0 {
			t.Fatalf("sum %s, want %s", got.FloatString(20), exact[0].FloatString(20))
		}
		gotSq := new(big.Rat).SetFrac(bigInt(sqs[0].w[:]), new(big.Int).Lsh(big.NewInt(1), sqScale))
		if gotSq.Cmp(exactSq[0]) != 0 {
			t.Fatal("sum of squares differs")
		}
		// A round trip through the encoding keeps the value and gives the
		// tightest valid span (as measure finds it), for every sum and sum
		// of squares, positive and negative, and the total.
		for _, a := range accs {
			var back sumAcc
			back.w[3], back.w[30] = 7, ^uint64(0) // decoding replaces what was there
			roundTrip(t, a.w[:], back.w[:], &back.span, a.special, sumScale, sumScale-1074, sumMaxBits)
		}
		for _, q := range sqs {
			var back sqAcc
			roundTrip(t, q.w[:], back.w[:], &back.span, q.special, sqScale, sqScale-2148, sqMaxBits)
		}
	}
}

// roundTrip encodes the accumulator w, decodes it into back (with span sp)
// and checks the value and the span.
func roundTrip(t *testing.T, w, back []uint64, sp *span, special uint8, scale, minLow, maxBits int) {
	t.Helper()
	b := appendAcc(nil, w, special, scale)
	if want := appendAccBytewise(nil, w, special, scale); !bytes.Equal(b, want) {
		t.Fatalf("encoding %x, want %x", b, want)
	}
	d := &decoder{b: b}
	var gotSpecial uint8
	decodeAcc(d, back, sp, &gotSpecial, scale, minLow, maxBits, true)
	if err := d.end(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back, w) || gotSpecial != special {
		t.Fatalf("round trip changed the sum: %x, want %x", back, w)
	}
	checkSpan(t, back, *sp)
	var tight span
	tight.measure(back)
	if *sp != tight && !isZero(back) {
		t.Fatalf("decoded span %+v, the tightest is %+v", *sp, tight)
	}
}

// TestQuotientSmall checks the mean's fast path against the math/big one
// on sums it takes (amounts, integers, values near the subnormal range,
// negative sums, counts up to 2^64-1) and that it declines sums too wide
// for it.
func TestQuotientSmall(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	draw := func() float64 {
		switch rng.Intn(6) {
		case 0:
			return float64(rng.Intn(2000000)-1000000) / 100 // amounts in cents
		case 1:
			return float64(rng.Int63n(1<<40) - 1<<39)
		case 2:
			return math.Ldexp(float64(rng.Int63n(1<<20)), -1074+rng.Intn(40)) // subnormal and just above
		case 3:
			return -rng.Float64() * 1000
		case 4:
			return math.Ldexp(float64(rng.Int63n(1<<53)), rng.Intn(2045)-1074) // wide: mostly declined
		}
		return rng.NormFloat64()
	}
	fast, slow := 0, 0
	for range 20000 {
		var a sumAcc
		a.reset()
		kind := rng.Intn(6)
		for range 1 + rng.Intn(6) {
			x := draw()
			if kind != 4 && rng.Intn(3) > 0 {
				x = float64(rng.Intn(1000)) // mostly small sums
			}
			a.addFloat(x)
		}
		if a.special != 0 {
			continue
		}
		n := uint64(1 + rng.Int63n(1000))
		switch rng.Intn(4) {
		case 0:
			n = math.MaxUint64 - uint64(rng.Intn(3))
		case 1:
			n = uint64(rng.Int63())
		}
		z, e := oddPart(a.w[:])
		want := quotient(z, n, sumScale-e)
		got, ok := quotientSmall(a.w[:], n, sumScale)
		if !ok {
			slow++
			if z.BitLen() <= 63 {
				t.Fatalf("declined a sum whose odd part has %d bits", z.BitLen())
			}
			continue
		}
		fast++
		if math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("sum %s / %d: fast path %v (%#x), math/big %v (%#x)", z.String(), n, got, math.Float64bits(got), want, math.Float64bits(want))
		}
	}
	if fast < 5000 || slow < 500 {
		t.Errorf("fast path took %d sums, declined %d: the draws do not exercise both", fast, slow)
	}
}

// appendAccBytewise is the encoding of an exact accumulator written plainly,
// a bit field per byte: appendAcc must give the same bytes, which stores
// keep.
func appendAccBytewise(b []byte, w []uint64, special uint8, scale int) []byte {
	flags := special
	if isZero(w) {
		return append(b, flags)
	}
	m := slices.Clone(w)
	if negative(m) {
		negate(m)
		flags |= accNegative
	}
	low, top := lowBit(m), topBit(m)
	n := (top - low + 8) / 8
	b = append(b, flags|accNonZero)
	b = appendVarint(b, int64(low-scale))
	b = appendUvarint(b, uint64(n))
	for j := n - 1; j >= 0; j-- {
		b = append(b, byte(field(m, low+8*j, 8)))
	}
	return b
}
