//go:build !amd64.v3

package derive

import (
	"math"
	"math/rand/v2"
	"testing"
)

// On amd64 below v3, math.Log is assembly that computes what the pure-Go
// code computes without multiply-adds, except at subnormal inputs, which
// it gets wrong (golang/go#56600), and math.Log1p is the pure-Go code,
// unfused, so the portable log and log1p must agree with them. (math.Exp
// has no such twin: its assembly uses FMA when the CPU has it.)
func TestPortableLogMatchesMath(t *testing.T) {
	n := 2_000_000
	if testing.Short() {
		n = 100_000
	}
	r := rand.New(rand.NewPCG(3, 4))
	for i := range n {
		var x float64
		switch i % 3 {
		case 0:
			x = math.Float64frombits(r.Uint64()) // any double
		case 1:
			x = r.Float64() * 100
		default:
			x = (r.Float64()*2 - 1) * math.Ldexp(1, -r.IntN(64))
		}
		subnormal := x > 0 && x < 0x1p-1022
		if got, want := log(x), math.Log(x); !subnormal && math.Float64bits(got) != math.Float64bits(want) && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Fatalf("log(%v) = %v, math.Log gives %v", x, got, want)
		}
		if got, want := log1p(x), math.Log1p(x); math.Float64bits(got) != math.Float64bits(want) && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Fatalf("log1p(%v) = %v, math.Log1p gives %v", x, got, want)
		}
	}
}
