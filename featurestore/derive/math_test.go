package derive

import (
	"bufio"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The portable functions give, bit for bit, what Go's pure-Go math.exp,
// math.log and math.log1p give where nothing is fused into multiply-adds,
// on every platform and whatever GOAMD64 or GOARM64 the binary is built
// for. testdata/math.golden says how its results were made.
func TestPortableMathGolden(t *testing.T) {
	funcs := map[string]func(float64) float64{"exp": exp, "log": log, "log1p": log1p}
	f, err := os.Open("testdata/math.golden")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := map[string]int{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || funcs[fields[0]] == nil {
			t.Fatalf("math.golden:%d: malformed line %q", line, sc.Text())
		}
		in, err1 := strconv.ParseUint(fields[1], 16, 64)
		want, err2 := strconv.ParseUint(fields[2], 16, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("math.golden:%d: malformed line %q", line, sc.Text())
		}
		x := math.Float64frombits(in)
		if got := math.Float64bits(funcs[fields[0]](x)); got != want {
			t.Errorf("math.golden:%d: %s(%v) = %v (%016x), want %v (%016x)", line, fields[0], x,
				math.Float64frombits(got), got, math.Float64frombits(want), want)
		}
		n[fields[0]]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for name := range funcs {
		if n[name] < 250 {
			t.Errorf("math.golden has %d inputs of %s, want at least 250", n[name], name)
		}
	}
}

// The special cases of the functions, as math documents them.
func TestPortableMathSpecialCases(t *testing.T) {
	negZero := math.Copysign(0, -1)
	inf := math.Inf(1)
	nan := math.NaN()
	cases := []struct {
		name string
		f    func(float64) float64
		x    float64
		want float64
	}{
		{"exp", exp, 0, 1},
		{"exp", exp, negZero, 1},
		{"exp", exp, inf, inf},
		{"exp", exp, -inf, 0},
		{"exp", exp, nan, nan},
		{"exp", exp, 710, inf},
		{"exp", exp, -746, 0},
		{"exp", exp, -17.759774893578765, 1.9365457608120732e-08},
		{"exp", exp, -740, 4.1995579896506e-322}, // subnormal
		{"log", log, 1, 0},
		{"log", log, 0, -inf},
		{"log", log, negZero, -inf},
		{"log", log, -1, nan},
		{"log", log, -inf, nan},
		{"log", log, inf, inf},
		{"log", log, nan, nan},
		{"log", log, 5e-324, -744.4400719213812},
		{"log1p", log1p, 0, 0},
		{"log1p", log1p, negZero, negZero},
		{"log1p", log1p, -1, -inf},
		{"log1p", log1p, -2, nan},
		{"log1p", log1p, -inf, nan},
		{"log1p", log1p, inf, inf},
		{"log1p", log1p, nan, nan},
		{"log1p", log1p, 5e-324, 5e-324},
	}
	for _, c := range cases {
		got := c.f(c.x)
		if math.Float64bits(got) != math.Float64bits(c.want) && !(math.IsNaN(got) && math.IsNaN(c.want)) {
			t.Errorf("%s(%v) = %v, want %v", c.name, c.x, got, c.want)
		}
	}
}

// pow gives, bit for bit, what Go's pure-Go math.Pow gives with its exp and
// log where nothing is fused into multiply-adds, on every platform and
// whatever GOAMD64 or GOARM64 the binary is built for, except for the bits
// of NaN: pow's NaNs are all math.NaN(), where math.Pow's NaN for a negative
// base to the power ±0.5 is the CPU's (math.Sqrt's). testdata/pow.golden
// says how its results were made; testdata/genpow/gen.sh makes it.
func TestPortablePowGolden(t *testing.T) {
	f, err := os.Open("testdata/pow.golden")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, nans := 0, 0
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[0] != "pow" {
			t.Fatalf("pow.golden:%d: malformed line %q", line, sc.Text())
		}
		var bits [3]uint64
		for i := range bits {
			if bits[i], err = strconv.ParseUint(fields[i+1], 16, 64); err != nil {
				t.Fatalf("pow.golden:%d: malformed line %q", line, sc.Text())
			}
		}
		x, y, want := math.Float64frombits(bits[0]), math.Float64frombits(bits[1]), bits[2]
		got := math.Float64bits(pow(x, y))
		if math.IsNaN(math.Float64frombits(want)) {
			want = math.Float64bits(math.NaN())
			nans++
		}
		if got != want {
			t.Errorf("pow.golden:%d: pow(%v, %v) = %v (%016x), want %v (%016x)", line, x, y,
				math.Float64frombits(got), got, math.Float64frombits(want), want)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 2000 || nans < 100 {
		t.Errorf("pow.golden has %d inputs, %d of them with NaN results; want at least 2000 and 100", n, nans)
	}
}

// The special cases of pow, as math.Pow documents them, and pow's one
// difference, the bits of the NaN of a negative base to the power ±0.5.
func TestPortablePowSpecialCases(t *testing.T) {
	negZero := math.Copysign(0, -1)
	inf := math.Inf(1)
	nan := math.NaN()
	cases := []struct{ x, y, want float64 }{
		{nan, 0, 1}, {inf, negZero, 1}, // pow(x, ±0) = 1 for any x
		{1, nan, 1}, {1, -inf, 1}, // pow(1, y) = 1 for any y
		{-inf, 1, -inf}, {negZero, 1, negZero}, // pow(x, 1) = x for any x
		{nan, 2, nan}, {2, nan, nan},
		{0, -3, inf}, {negZero, -3, -inf}, // odd integer < 0
		{negZero, -inf, inf}, {negZero, inf, 0},
		{negZero, -2, inf}, {negZero, -0.5, inf}, {0, -1e300, inf}, // finite y < 0, not an odd integer
		{negZero, 3, negZero}, {0, 3, 0}, // odd integer > 0
		{negZero, 2, 0}, {negZero, 0.5, 0}, {negZero, 1 << 53, 0}, // finite y > 0, not an odd integer
		{negZero, 1<<53 - 1, negZero},
		{-1, inf, 1}, {-1, -inf, 1},
		{-2, inf, inf}, {2, -inf, 0}, {0.5, inf, 0}, {-0.5, -inf, inf},
		{inf, 0.1, inf}, {inf, -0.1, 0},
		{-inf, 3, -inf}, {-inf, 2, inf}, {-inf, -3, negZero}, {-inf, -2, 0}, // pow(-0, -y)
		{-2, 0.3, nan}, {-inf, 0.3, inf},
		{-1, 1 << 63, 1}, {-2, 1 << 63, inf}, {0.5, 1 << 63, 0}, {2, -(1 << 63), 0}, // |y| ≥ 2**63
		{-2, 3, -8}, {-2, -3, -0.125}, {2, 1023, math.Ldexp(1, 1023)}, {2, 1024, inf}, {2, -1074, 5e-324}, {2, -1075, 0},
		{4, 0.5, 2}, {4, -0.5, 0.5}, {negZero, -0.5, inf},
		{9, 2, 81}, {10, -2, 0.01},
	}
	for _, c := range cases {
		got := pow(c.x, c.y)
		if math.Float64bits(got) != math.Float64bits(c.want) && !(math.IsNaN(got) && math.IsNaN(c.want)) {
			t.Errorf("pow(%v, %v) = %v, want %v", c.x, c.y, got, c.want)
		}
	}
	for _, x := range []float64{-2, -5e-324, -math.MaxFloat64} {
		for _, y := range []float64{0.5, -0.5, 0.3, nan} {
			if got := pow(x, y); math.Float64bits(got) != math.Float64bits(nan) {
				t.Errorf("pow(%v, %v) = %v (%016x), want math.NaN() (%016x)", x, y, got, math.Float64bits(got), math.Float64bits(nan))
			}
		}
	}
}
