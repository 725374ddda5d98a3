package window_test

import (
	"math"
	"math/big"
	"math/rand"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

// drawDouble draws doubles over the whole range, with clusters that make
// sums cancel and round at ties.
func drawDouble(rng *rand.Rand) float64 {
	switch rng.Intn(8) {
	case 0:
		return math.Float64frombits(rng.Uint64()&^(0x7ff<<52) | uint64(rng.Intn(0x7ff))<<52) // any finite
	case 1:
		return math.Ldexp(float64(rng.Int63n(1<<53)), rng.Intn(60)-1074) // subnormal and tiny
	case 2:
		return math.Ldexp(float64(rng.Int63n(1<<53)|1<<52), 971-rng.Intn(4)) // near the top
	case 3:
		return float64(rng.Intn(7)-3) * math.Ldexp(1, rng.Intn(120)-60)
	case 4:
		return 1 + math.Ldexp(float64(rng.Intn(4)), -53)
	}
	return (rng.Float64() - 0.5) * math.Ldexp(1, rng.Intn(80)-40)
}

func ratOf(xs []float64) *big.Rat {
	r := new(big.Rat)
	for _, x := range xs {
		r.Add(r, new(big.Rat).SetFloat64(x))
	}
	return r
}

// TestExactSumRandom: the sum and the mean are the exact result rounded once
// to nearest, ties to even, in any order.
func TestExactSumRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	n := 3000
	if testing.Short() {
		n = 500
	}
	for i := range n {
		xs := make([]float64, 1+rng.Intn(12))
		for j := range xs {
			xs[j] = drawDouble(rng)
		}
		sum, mean, sd := window.NewSum(featurestore.KindDouble), window.NewMean(featurestore.KindDouble), window.NewStddev(featurestore.KindDouble)
		for j := range xs {
			x := xs[(j+i)%len(xs)] // rotated order
			for _, s := range []window.State{sum, mean, sd} {
				s.Add(featurestore.DoubleValue(x), window.OrderKey{Offset: int64(j)})
			}
		}
		exact := ratOf(xs)
		want, _ := exact.Float64()
		if got, _ := sum.Result(); math.Float64bits(got.Double()) != math.Float64bits(want+0) {
			t.Fatalf("sum of %v = %v, want %v", xs, got.Double(), want)
		}
		wantMean, _ := new(big.Rat).Quo(exact, new(big.Rat).SetInt64(int64(len(xs)))).Float64()
		if got, _ := mean.Result(); math.Float64bits(got.Double()) != math.Float64bits(wantMean+0) {
			t.Fatalf("mean of %v = %v, want %v", xs, got.Double(), wantMean)
		}
		if got, _ := sd.Result(); math.Float64bits(got.Double()) != math.Float64bits(refStddev(xs)) {
			t.Fatalf("stddev of %v = %v, want %v", xs, got.Double(), refStddev(xs))
		}
	}
}

func refStddev(xs []float64) float64 {
	evs := make([]*rawEvent, len(xs))
	for i, x := range xs {
		evs[i] = &rawEvent{f: map[string]any{"x": x}}
	}
	return stddev(evs, "x")
}

// TestExactIntRandom: int64 sums, means and standard deviations are exact
// however the values overflow int64 on the way.
func TestExactIntRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for range 1000 {
		xs := make([]int64, 1+rng.Intn(10))
		evs := make([]*rawEvent, len(xs))
		for j := range xs {
			xs[j] = genInt(rng)
			if rng.Intn(2) == 0 {
				xs[j] = int64(rng.Uint64())
			}
			evs[j] = &rawEvent{f: map[string]any{"x": xs[j]}}
		}
		sum, mean, sd := window.NewSum(featurestore.KindInt64), window.NewMean(featurestore.KindInt64), window.NewStddev(featurestore.KindInt64)
		for j, x := range xs {
			for _, s := range []window.State{sum, mean, sd} {
				s.Add(featurestore.Int64Value(x), window.OrderKey{Offset: int64(j)})
			}
		}
		exact := intSum(evs, "x")
		if got, _ := sum.Result(); got.Int64() != saturate(exact) {
			t.Fatalf("sum of %v = %d, want %d (saturated %s)", xs, got.Int64(), saturate(exact), exact)
		}
		wantMean, _ := new(big.Rat).SetFrac(exact, big.NewInt(int64(len(xs)))).Float64()
		if got, _ := mean.Result(); got.Double() != wantMean {
			t.Fatalf("mean of %v = %v, want %v", xs, got.Double(), wantMean)
		}
		if got, _ := sd.Result(); got.Double() != stddev(evs, "x") {
			t.Fatalf("stddev of %v = %v, want %v", xs, got.Double(), stddev(evs, "x"))
		}
	}
}

// TestSumEncodingSize: sums of everyday amounts take a few bytes.
func TestSumEncodingSize(t *testing.T) {
	for _, tt := range []struct {
		name string
		kind featurestore.Kind
		vals []featurestore.Value
		max  int
	}{
		{"empty", featurestore.KindDouble, nil, 3},
		{"12.5", featurestore.KindDouble, []featurestore.Value{f64(12.5)}, 6},
		{"three amounts", featurestore.KindDouble, []featurestore.Value{f64(12.34), f64(99.99), f64(1500)}, 14},
		{"int", featurestore.KindInt64, []featurestore.Value{i64(3), i64(40)}, 6},
		{"negative int", featurestore.KindInt64, []featurestore.Value{i64(-300)}, 7},
	} {
		s := window.NewSum(tt.kind)
		for _, v := range tt.vals {
			s.Add(v, window.OrderKey{})
		}
		if n := len(s.AppendBinary(nil)); n > tt.max {
			t.Errorf("sum %s takes %d bytes, want at most %d", tt.name, n, tt.max)
		}
	}
}

// TestSumMeanExact compares Sum and Mean of random doubles and int64s
// with exact rational arithmetic rounded once (big.Rat.Float64: nearest,
// ties to even).
func TestSumMeanExact(t *testing.T) {
	rng := rand.New(rand.NewSource(99))
	for iter := 0; iter < 3000; iter++ {
		n := 1 + rng.Intn(30)
		dbl := iter%2 == 0
		kind := featurestore.KindInt64
		if dbl {
			kind = featurestore.KindDouble
		}
		s, m := window.NewSum(kind), window.NewMean(kind)
		sum := new(big.Rat)
		for e := 0; e < n; e++ {
			var v featurestore.Value
			if dbl {
				x := edgeDouble(rng)
				if iter%6 == 0 {
					x = math.Ldexp(float64(rng.Int63n(1<<53)), -1074+rng.Intn(60)) // around the subnormals
					if rng.Intn(2) == 0 {
						x = -x
					}
				}
				v = featurestore.DoubleValue(x)
				sum.Add(sum, new(big.Rat).SetFloat64(x))
			} else {
				x := edgeInt(rng)
				v = featurestore.Int64Value(x)
				sum.Add(sum, new(big.Rat).SetInt64(x))
			}
			s.Add(v, window.OrderKey{Offset: int64(e)})
			m.Add(v, window.OrderKey{Offset: int64(e)})
		}
		sv, _ := s.Result()
		if dbl {
			want, _ := sum.Float64()
			if want == 0 {
				want = 0 // +0
			}
			if math.Float64bits(sv.Double()) != math.Float64bits(want) {
				t.Fatalf("iter %d: sum %v (%x), want %v (%x)", iter, sv.Double(), math.Float64bits(sv.Double()), want, math.Float64bits(want))
			}
		} else {
			want := sum.Num()
			switch {
			case want.IsInt64():
				if sv.Int64() != want.Int64() {
					t.Fatalf("iter %d: int sum %d, want %v", iter, sv.Int64(), want)
				}
			case want.Sign() > 0 && sv.Int64() != math.MaxInt64, want.Sign() < 0 && sv.Int64() != math.MinInt64:
				t.Fatalf("iter %d: int sum %d, want saturated %v", iter, sv.Int64(), want)
			}
		}
		mean := new(big.Rat).Quo(sum, new(big.Rat).SetInt64(int64(n)))
		want, _ := mean.Float64()
		if want == 0 {
			want = 0
		}
		mv, _ := m.Result()
		if math.Float64bits(mv.Double()) != math.Float64bits(want) {
			t.Fatalf("iter %d (double %v): mean %v (%x), want %v (%x)", iter, dbl, mv.Double(), math.Float64bits(mv.Double()), want, math.Float64bits(want))
		}
	}
}
