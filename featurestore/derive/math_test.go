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
