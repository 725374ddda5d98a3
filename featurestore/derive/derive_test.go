package derive

import (
	"bufio"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/featurestore/featurestore/featurestore"
)

var testVars = []Var{
	{Name: "amount", Kind: featurestore.KindDouble},
	{Name: "mean_1d", Kind: featurestore.KindDouble},
	{Name: "n_1h", Kind: featurestore.KindInt64},
	{Name: "country", Kind: featurestore.KindString},
	{Name: "approved", Kind: featurestore.KindBool},
	{Name: "last_amounts", Kind: featurestore.KindDoubleList},
}

func TestEval(t *testing.T) {
	vals := []featurestore.Value{
		featurestore.DoubleValue(150),
		featurestore.DoubleValue(60),
		featurestore.Int64Value(7),
		featurestore.StringValue("FR"),
		featurestore.BoolValue(false),
		featurestore.DoubleListValue([]float64{1, 2, 3.5}),
	}
	cases := []struct {
		src  string
		out  featurestore.Kind
		want featurestore.Value
	}{
		{"amount / mean_1d", featurestore.KindDouble, featurestore.DoubleValue(2.5)},
		{"n_1h + 1", featurestore.KindInt64, featurestore.Int64Value(8)},
		{"n_1h * 2", featurestore.KindDouble, featurestore.DoubleValue(14)}, // an int64 expression where double is declared
		{"n_1h / 2", featurestore.KindDouble, featurestore.DoubleValue(3.5)},
		{"amount > 100 && !approved", featurestore.KindBool, featurestore.BoolValue(true)},
		{"country in ['FR', 'DE'] ? 'eu' : 'other'", featurestore.KindString, featurestore.StringValue("eu")},
		{"lower(country) + '-' + string(n_1h)", featurestore.KindString, featurestore.StringValue("fr-7")},
		{"log(amount)", featurestore.KindDouble, featurestore.DoubleValue(5.0106352940962555)},
		// math.Exp gives 1.9365457608120735e-08 on amd64 with FMA.
		{"exp(-17.759774893578765)", featurestore.KindDouble, featurestore.DoubleValue(1.9365457608120732e-08)},
		{"sqrt(mean_1d) + exp(0.0) + log1p(0.0)", featurestore.KindDouble, featurestore.DoubleValue(math.Sqrt(60) + 1)},
		{"sum(last_amounts)", featurestore.KindDouble, featurestore.DoubleValue(6.5)},
		{"len(last_amounts)", featurestore.KindInt64, featurestore.Int64Value(3)},
		{"max(amount, mean_1d)", featurestore.KindDouble, featurestore.DoubleValue(150)},
		{"amount / 0", featurestore.KindDouble, featurestore.DoubleValue(math.Inf(1))},
	}
	var ev Evaluator
	for _, c := range cases {
		e, err := Compile(c.src, testVars, c.out)
		if err != nil {
			t.Errorf("%s: %v", c.src, err)
			continue
		}
		got, err := ev.Eval(e, vals)
		if err != nil {
			t.Errorf("%s: %v", c.src, err)
			continue
		}
		if !got.Equal(c.want) {
			t.Errorf("%s = %v, want %v", c.src, got, c.want)
		}
	}
}

// A null variable the expression uses makes the result null without a
// run; a null variable it does not use changes nothing.
func TestEvalNulls(t *testing.T) {
	e, err := Compile("amount / mean_1d", testVars, featurestore.KindDouble)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Uses(); len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Fatalf("Uses = %v, want [0 1]", got)
	}
	vals := make([]featurestore.Value, len(testVars))
	vals[0] = featurestore.DoubleValue(3)
	var ev Evaluator
	got, err := ev.Eval(e, vals)
	if err != nil || !got.IsNull() {
		t.Fatalf("with mean_1d null: %v, %v; want null", got, err)
	}
	vals[1] = featurestore.DoubleValue(2) // the others stay null, unused
	got, err = ev.Eval(e, vals)
	if err != nil || !got.Equal(featurestore.DoubleValue(1.5)) {
		t.Fatalf("got %v, %v; want 1.5", got, err)
	}
}

// An empty list is one value, however it was built: the export makes a
// last_n over no events from an Arrow column (nil), serving from the window
// state (empty), and expr tells nil from empty (xs == nil, xs ?? ys).
func TestEvalEmptyLists(t *testing.T) {
	vars := []Var{
		{Name: "s", Kind: featurestore.KindStringList},
		{Name: "i", Kind: featurestore.KindInt64List},
		{Name: "d", Kind: featurestore.KindDoubleList},
		{Name: "b", Kind: featurestore.KindBoolList},
	}
	built := map[string][]featurestore.Value{
		"nil": {featurestore.StringListValue(nil), featurestore.Int64ListValue(nil),
			featurestore.DoubleListValue(nil), featurestore.BoolListValue(nil)},
		"empty": {featurestore.StringListValue([]string{}), featurestore.Int64ListValue([]int64{}),
			featurestore.DoubleListValue([]float64{}), featurestore.BoolListValue([]bool{})},
	}
	var ev Evaluator
	for _, name := range []string{"s", "i", "d", "b"} {
		for _, c := range []struct {
			src  string
			out  featurestore.Kind
			want featurestore.Value
		}{
			{name + " == nil", featurestore.KindBool, featurestore.BoolValue(false)},
			{"len(" + name + " ?? [1, 2])", featurestore.KindInt64, featurestore.Int64Value(0)},
		} {
			e, err := Compile(c.src, vars, c.out)
			if err != nil {
				t.Fatalf("%s: %v", c.src, err)
			}
			for how, vals := range built {
				got, err := ev.Eval(e, vals)
				if err != nil || !got.Equal(c.want) {
					t.Errorf("%s with lists built %s: %v, %v; want %v", c.src, how, got, err, c.want)
				}
			}
		}
	}
}

func TestEvalErrors(t *testing.T) {
	vals := []featurestore.Value{
		featurestore.DoubleValue(1), featurestore.DoubleValue(1), featurestore.Int64Value(0),
		featurestore.StringValue(""), featurestore.BoolValue(true), featurestore.DoubleListValue(nil),
	}
	var ev Evaluator
	for _, src := range []string{"7 % n_1h", "int(country)"} {
		e, err := Compile(src, testVars, featurestore.KindInt64)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if got, err := ev.Eval(e, vals); err == nil {
			t.Errorf("%s = %v, want an error", src, got)
		}
	}
	// A run may not build lists beyond the memory budget, whatever a
	// request value says.
	e, err := Compile("len(1..n_1h)", testVars, featurestore.KindInt64)
	if err != nil {
		t.Fatal(err)
	}
	vals[2] = featurestore.Int64Value(1 << 40)
	if got, err := ev.Eval(e, vals); err == nil {
		t.Errorf("len(1..2^40) = %v, want an error", got)
	}
	// The wrong kind of value for a variable is an error, not a panic.
	vals[2] = featurestore.StringValue("7")
	if _, err := ev.Eval(e, vals); err == nil || !strings.Contains(err.Error(), `"n_1h"`) {
		t.Errorf("string for n_1h: %v, want an error naming it", err)
	}
}

// int of a double truncates it; a double that is NaN, infinite or outside
// int64's range is a run error, not the integer the platform's conversion
// happens to give (on amd64, the most negative int64 for all of them).
func TestEvalInt(t *testing.T) {
	e, err := Compile("int(amount)", testVars, featurestore.KindInt64)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		x    float64
		want int64
		err  bool
	}{
		{x: 2.9, want: 2},
		{x: -2.9, want: -2},
		{x: math.Copysign(0, -1), want: 0},
		{x: -9223372036854775808.0, want: math.MinInt64},
		{x: 9223372036854774784.0, want: 9223372036854774784}, // the largest double below 2**63
		{x: 9223372036854775808.0, err: true},                 // 2**63
		{x: -9223372036854777856.0, err: true},                // the next double below -2**63
		{x: 1e19, err: true},
		{x: -9.3e18, err: true},
		{x: math.NaN(), err: true},
		{x: math.Inf(1), err: true},
		{x: math.Inf(-1), err: true},
	}
	vals := make([]featurestore.Value, len(testVars))
	var ev Evaluator
	for _, c := range cases {
		vals[0] = featurestore.DoubleValue(c.x)
		got, err := ev.Eval(e, vals)
		switch {
		case c.err && err == nil:
			t.Errorf("int(%v) = %v, want an error", c.x, got)
		case !c.err && (err != nil || !got.Equal(featurestore.Int64Value(c.want))):
			t.Errorf("int(%v) = %v, %v; want %d", c.x, got, err, c.want)
		}
	}
	// int of an integer or a string, and its type checks, are expr's.
	for src, want := range map[string]int64{"int(n_1h)": 7, "int('12') + n_1h": 19, "int(amount / 2) * 2": 4} {
		e, err := Compile(src, testVars, featurestore.KindInt64)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		vals := []featurestore.Value{featurestore.DoubleValue(5), {}, featurestore.Int64Value(7)}
		vals = append(vals, make([]featurestore.Value, len(testVars)-len(vals))...)
		if got, err := ev.Eval(e, vals); err != nil || !got.Equal(featurestore.Int64Value(want)) {
			t.Errorf("%s = %v, %v; want %d", src, got, err, want)
		}
	}
	for _, src := range []string{"int(approved)", "int(last_amounts)", "int(amount) + 'a'"} {
		if _, err := Compile(src, testVars, featurestore.KindInt64); err == nil {
			t.Errorf("Compile(%q) succeeded, want an error", src)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		src  string
		out  featurestore.Kind
		want string
	}{
		{"", featurestore.KindDouble, "empty"},
		{"amount / mean_7d", featurestore.KindDouble, "mean_7d"},
		{"country + 1", featurestore.KindString, "mismatched types"},
		{"amount", featurestore.KindInt64, "int64"},
		{"amount > 1", featurestore.KindDouble, "gives bool values"},
		{"now()", featurestore.KindInt64, "now"},
		{"date('2020-01-01')", featurestore.KindInt64, "date"},
		{"repeat('a', 3)", featurestore.KindString, "repeat"},
		{"amount", featurestore.KindDoubleList, "cannot give double_list"},
		{"find(last_amounts, # > 1.0) ?? 0.0", featurestore.KindDouble, "unknown name find (1:1)"},
		{"$env.amount", featurestore.KindDouble, "$env is not available"},
		{"nil", featurestore.KindString, "gives nil"},
		{"country matches country", featurestore.KindBool, "the pattern of matches must be a string literal (1:17)"},
	}
	for _, c := range cases {
		_, err := Compile(c.src, testVars, c.out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Compile(%q, %s) = %v, want an error with %q", c.src, c.out, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("Compile(%q): error on several lines: %q", c.src, err)
		}
	}
}

// x ** y and x ^ y are pow(x, y), bit for bit, at every input of
// testdata/pow.golden (whose results TestPortablePowGolden checks), and
// for constants too, which expr would fold with math.Pow when compiling:
// math.Pow(2, 0.75) is 1.681792830507429 on amd64 with FMA, pow's is
// 1.6817928305074292.
func TestEvalPow(t *testing.T) {
	vars := []Var{{Name: "x", Kind: featurestore.KindDouble}, {Name: "y", Kind: featurestore.KindDouble}}
	var progs []*Expr
	for _, src := range []string{"x ** y", "x ^ y"} {
		e, err := Compile(src, vars, featurestore.KindDouble)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		progs = append(progs, e)
	}
	f, err := os.Open("testdata/pow.golden")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ev Evaluator
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[0] != "pow" {
			continue
		}
		xb, err1 := strconv.ParseUint(fields[1], 16, 64)
		yb, err2 := strconv.ParseUint(fields[2], 16, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("pow.golden: malformed line %q", sc.Text())
		}
		x, y := math.Float64frombits(xb), math.Float64frombits(yb)
		want := pow(x, y)
		for i, e := range progs {
			got, err := ev.Eval(e, []featurestore.Value{featurestore.DoubleValue(x), featurestore.DoubleValue(y)})
			if err != nil || got.Kind() != featurestore.KindDouble || math.Float64bits(got.Double()) != math.Float64bits(want) {
				t.Fatalf("%s with x = %v, y = %v: %v, %v; want %v (%016x)", []string{"x ** y", "x ^ y"}[i], x, y, got, err,
					want, math.Float64bits(want))
			}
		}
		n++
	}
	if n < 2000 {
		t.Fatalf("%d inputs in pow.golden", n)
	}
	for src, want := range map[string]float64{
		"2.0 ** 0.75":              pow(2, 0.75),
		"2 ^ 0.75":                 pow(2, 0.75),
		"0.5 ** (1 / 3)":           pow(0.5, 1.0/3),
		"sqrt(2) ** -1.5":          pow(math.Sqrt2, -1.5),
		"2 ** 0.75 ** 2":           pow(2, pow(0.75, 2)),
		"map([2.0], # ** 0.75)[0]": pow(2, 0.75),
	} {
		e, err := Compile(src, nil, featurestore.KindDouble)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if got, err := ev.Eval(e, nil); err != nil || !got.Equal(featurestore.DoubleValue(want)) {
			t.Errorf("%s = %v, %v; want %v", src, got, err, want)
		}
	}
}

// No expression is left with expr's power operator (vm.OpExponent, which
// is math.Pow), whatever the types of its operands: known, or known only at
// run time.
func TestPowOperatorReplaced(t *testing.T) {
	vars := append(slices.Clone(testVars), Var{Name: "ns", Kind: featurestore.KindInt64List})
	for _, src := range []string{
		"amount ** mean_1d", "amount ^ 0.3", "n_1h ** 2", "2 ** n_1h", "2 ** 3", "2.5 ^ 1.5",
		"(approved ? amount : 1) ** 0.5", "0.5 ** (approved ? amount : n_1h)", "mean(ns) ** 0.5",
		"max(n_1h, amount) ** 0.5", "sum(map(last_amounts, # ** 1.5))", "last_amounts[0] ^ amount",
		"amount ** n_1h ** 0.5", "let y = amount ** 0.5; y ** 0.5", "-amount ** 2 + (1 + n_1h) ** -0.5",
	} {
		e, err := Compile(src, vars, featurestore.KindDouble)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		for _, op := range e.prog.Bytecode {
			if op == vm.OpExponent {
				t.Errorf("%s: compiled with expr's power operator", src)
			}
		}
	}
}

// The power operator's semantics other than its bits are expr's: integer
// operands are converted to doubles and the result is always a double (2 **
// 3 is 8.0, and cannot be an int64 feature), ** and ^ are the same operator,
// right-associative and binding tighter than unary minus, operands that are
// not numbers fail the type check, and one whose type is known only at run
// time fails the run if it is not a number.
func TestEvalPowSemantics(t *testing.T) {
	vals := []featurestore.Value{
		featurestore.DoubleValue(2.5), featurestore.DoubleValue(4), featurestore.Int64Value(2),
		featurestore.StringValue("FR"), featurestore.BoolValue(true), featurestore.DoubleListValue([]float64{9}),
	}
	var ev Evaluator
	for src, want := range map[string]float64{
		"n_1h ** 3":                    8,
		"n_1h ^ 10":                    1024,
		"n_1h ** -1":                   0.5,
		"n_1h ** 63":                   9223372036854775808, // 2**63: no int64 overflow
		"0 ** -1":                      math.Inf(1),
		"(-2) ** 3":                    -8,
		"-2 ** 2":                      -4,  // -(2 ** 2)
		"n_1h ** 3 ** 2":               512, // 2 ** 9
		"(-2) ** 0.5":                  math.NaN(),
		"mean_1d ** 0.5":               2,
		"mean_1d ** -0.5":              0.5,
		"9223372036854775807 ** 1":     9223372036854775808,
		"(approved ? n_1h : 1.5) ** 2": 4,
	} {
		e, err := Compile(src, testVars, featurestore.KindDouble)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if got, err := ev.Eval(e, vals); err != nil || !got.Equal(featurestore.DoubleValue(want)) {
			t.Errorf("%s = %v, %v; want %v", src, got, err, want)
		}
	}
	for src, want := range map[string]string{
		"n_1h ** 2":         "gives float64 values, not int64",
		"country ** 2":      "invalid operation: ** (mismatched types string and int)",
		"2 ^ approved":      "invalid operation: ^ (mismatched types int and bool)",
		"last_amounts ** 2": "invalid operation: ** (mismatched types []float64 and int)",
		"nil ** 2":          "invalid operation: ** (mismatched types unknown and int)",
		"n_1h ** 2 + 'a'":   "invalid operation: + (mismatched types float64 and string)",
	} {
		if _, err := Compile(src, testVars, featurestore.KindInt64); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Compile(%q) = %v, want an error with %q", src, err, want)
		}
	}
	e, err := Compile("(approved ? country : 1) ** 2", testVars, featurestore.KindDouble)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ev.Eval(e, vals); err == nil || !strings.Contains(err.Error(), "invalid operation: float(string)") {
		t.Errorf("(approved ? country : 1) ** 2 = %v, %v; want the error invalid operation: float(string)", got, err)
	}
}

// TestEvalNaNBits: a NaN result has the bits of math.NaN() whatever bits
// the operation gave it, which depend on the CPU (0/0, Inf-Inf and sqrt of
// a negative number set the sign bit on amd64 and not on arm64), so that
// serving and an export on another platform give equal values.
func TestEvalNaNBits(t *testing.T) {
	vars := []Var{{Name: "x", Kind: featurestore.KindDouble}, {Name: "y", Kind: featurestore.KindDouble}}
	var ev Evaluator
	for _, src := range []string{"x / y", "x - x", "sqrt(-x)", "x * y"} {
		e, err := Compile(src, vars, featurestore.KindDouble)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range [][2]float64{{0, 0}, {math.Inf(1), 0}, {1, math.Float64frombits(0xfff8000000000001)}} {
			got, err := ev.Eval(e, []featurestore.Value{featurestore.DoubleValue(in[0]), featurestore.DoubleValue(in[1])})
			if err != nil {
				t.Fatalf("%s with %v: %v", src, in, err)
			}
			if got.IsNull() {
				continue
			}
			if d := got.Double(); d != d && math.Float64bits(d) != math.Float64bits(math.NaN()) {
				t.Errorf("%s with %v = NaN of bits %#x, want %#x", src, in, math.Float64bits(d), math.Float64bits(math.NaN()))
			}
		}
	}
}

// expr slices strings by bytes, so a run can cut a character in two: a
// string result that is not valid UTF-8 is a failed run (which serving and
// export turn into a null), not a value that no Protobuf client can decode.
func TestEvalInvalidUTF8(t *testing.T) {
	vals := []featurestore.Value{
		featurestore.DoubleValue(1), featurestore.DoubleValue(1), featurestore.Int64Value(1),
		featurestore.StringValue("üx"), featurestore.BoolValue(true), featurestore.DoubleListValue(nil),
	}
	var ev Evaluator
	for _, c := range []struct {
		src  string
		want string // "" for an error
	}{
		{"country[0:1]", ""},
		{"country[1:]", ""},
		{"country[0:1] + 'a'", ""},
		{"country[0:2]", "ü"},
		{"country[0:1] + country[1:2]", "ü"},
		{"upper(country)", "ÜX"},
		{"country[2:]", "x"},
	} {
		e, err := Compile(c.src, testVars, featurestore.KindString)
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		got, err := ev.Eval(e, vals)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("%s = %q, want an error", c.src, got.Any())
		case c.want == "" && !strings.Contains(err.Error(), "not valid UTF-8"):
			t.Errorf("%s: %v, want an error about UTF-8", c.src, err)
		case c.want != "" && err != nil:
			t.Errorf("%s: %v", c.src, err)
		case c.want != "" && !got.Equal(featurestore.StringValue(c.want)):
			t.Errorf("%s = %q, want %q", c.src, got.Any(), c.want)
		}
	}
}

var stringVars = []Var{
	{Name: "d", Kind: featurestore.KindDouble},
	{Name: "n", Kind: featurestore.KindInt64},
	{Name: "s", Kind: featurestore.KindString},
	{Name: "ss", Kind: featurestore.KindStringList},
}

func stringVals(s string) []featurestore.Value {
	return []featurestore.Value{
		featurestore.DoubleValue(1.5),
		featurestore.Int64Value(7),
		featurestore.StringValue(s),
		featurestore.StringListValue([]string{"b", "a", "b"}),
	}
}

// Functions lists what expressions may call, and IsWithheld says every
// other expr builtin is withheld ("an unknown variable or function ... is
// an error" at load time), expr's predicate builtins find, findIndex,
// findLast, findLastIndex, reduce, groupBy and sortBy too, which
// DisableAllBuiltins does not remove (the parser handles them as predicate
// calls, not through the builtin table).
func TestWithheldBuiltinsRefused(t *testing.T) {
	for _, src := range []string{
		"find([1, 2], # > 1)",
		"findIndex([1, 2], # > 1)",
		"findLast([1, 2], # > 0)",
		"findLastIndex([1, 2], # > 0)",
		"reduce(1..3, #acc + #, 0)",
		"len(groupBy(ss, #))",
		"len(sortBy(ss, #))",
	} {
		name := src[:strings.IndexByte(src, '(')]
		if name == "len" {
			name = src[4 : strings.IndexByte(src[4:], '(')+4]
		}
		if !IsWithheld(name) {
			t.Fatalf("IsWithheld(%q) = false", name)
		}
		if _, err := Compile(src, stringVars, featurestore.KindInt64); err == nil {
			t.Errorf("Compile(%q) succeeded; %s is withheld (IsWithheld=true, not in Functions), want an error", src, name)
		}
	}
}

// $env reads a variable without an identifier node, so Compile would not
// count it among Uses: the variable would never be put in the run's
// environment (and serving would not read its stored view). The value
// would be wrong, not null: `$env.n ?? -1` gave -1 although n is 7, and
// with n null the expression ran anyway (the documented rule: a null
// variable the expression uses makes the result null without a run).
func TestEnvBypassesUses(t *testing.T) {
	var ev Evaluator
	e, err := Compile("$env.n ?? -1", stringVars, featurestore.KindInt64)
	if err != nil {
		return // refusing $env at load time is a fine fix
	}
	got, err := ev.Eval(e, stringVals("x"))
	if err != nil || !got.Equal(featurestore.Int64Value(7)) {
		t.Errorf("$env.n ?? -1 with n = 7: %v, %v (Uses = %v); want 7", got.Any(), err, e.Uses())
	}
	vals := stringVals("x")
	vals[1] = featurestore.Value{}
	got, err = ev.Eval(e, vals)
	if err != nil || !got.IsNull() {
		t.Errorf("$env.n ?? -1 with n null: %v, %v; want null (the expression must not run)", got.Any(), err)
	}
}

// allocDuring returns the bytes allocated while f runs.
func allocDuring(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// The memory budget bounds what a run makes, not only what expr charges
// (ranges, array and map literals, sort): strings built by +, replace,
// join, and the lists split, map and filter make count too. Each case
// below stays small for the test (a few MB) but would grow without limit
// with the request value or the expression (a 1 MB request string through
// replace(s, "", s) is ~10^12 bytes: the process would die of OOM, which no
// recover catches, instead of giving one null value).
func TestMemoryBudgetUnbounded(t *testing.T) {
	var ev Evaluator
	for _, c := range []struct {
		src  string
		s    string
		out  featurestore.Kind
		note string
	}{
		// 1000-char request value: a list of 10^6 elements, 10x the budget.
		{"len(map(split(s, ''), split(s, '')))", strings.Repeat("a", 1000), featurestore.KindInt64, "list elements = len(s)^2"},
		// 200,000-char request value: one list of 2*budget elements.
		{"len(split(s, ''))", strings.Repeat("a", 200_000), featurestore.KindInt64, "list elements = len(s)"},
		// 3000-char request value: a 9 MB string.
		{"len(replace(s, '', s))", strings.Repeat("a", 3000), featurestore.KindInt64, "bytes = len(s)^2"},
		// doubling with let: 2^22 * len(s) bytes from a 2-byte value,
		// 2^k for k lets (at most 1000 nodes: k can be ~200).
		{doublings(22), "ab", featurestore.KindInt64, "bytes = 2^k * len(s)"},
	} {
		e, err := Compile(c.src, stringVars, c.out)
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		var got featurestore.Value
		var runErr error
		n := allocDuring(func() { got, runErr = ev.Eval(e, stringVals(c.s)) })
		if runErr == nil {
			t.Errorf("%.60s (%s), len(s) = %d: = %v, allocated %d MB in one run; want the run to fail (memory budget %d)",
				c.src, c.note, len(c.s), got.Any(), n>>20, memoryBudget)
		}
	}
}

func doublings(k int) string {
	var b strings.Builder
	prev := "s"
	for i := range k {
		name := "v" + string(rune('a'+i/26)) + string(rune('a'+i%26))
		b.WriteString("let " + name + " = " + prev + " + " + prev + "; ")
		prev = name
	}
	b.WriteString("len(" + prev + ")")
	return b.String()
}

// A run's work is bounded: nested predicates over lists that split makes
// from a request value cost len(s)^3 steps. The test times a 150-char
// value and fails if a run takes over 100 ms (about 0.8 s unbounded; 300
// chars took 6.3 s, and it grows as len(s)^3).
func TestRunTimeUnbounded(t *testing.T) {
	e, err := Compile("count(split(s, ''), any(split(s, ''), any(split(s, ''), # == 'b')))", stringVars, featurestore.KindInt64)
	if err != nil {
		t.Fatal(err)
	}
	var ev Evaluator
	start := time.Now()
	got, err := ev.Eval(e, stringVals(strings.Repeat("a", 150)))
	if d := time.Since(start); err == nil && d > 100*time.Millisecond {
		t.Errorf("run with a 150-char request value took %v (= %v); want it bounded (failed run)", d, got.Any())
	}
}

// Validation: "a value of another type than the feature's type is an
// error" at load time. The literal nil (of no type) would compile for
// every declared type and be always null, with no failure counted.
func TestNilExpressionRefused(t *testing.T) {
	for _, k := range []featurestore.Kind{featurestore.KindInt64, featurestore.KindDouble, featurestore.KindString, featurestore.KindBool} {
		if _, err := Compile("nil", stringVars, k); err == nil {
			t.Errorf("Compile(%q, %s) succeeded; want an error (the expression can never give a %s)", "nil", k, k)
		}
	}
}

// log, log1p, exp and sqrt are declared func(float64) float64, so expr's
// checker accepts an integer argument (log(count_1h) compiles, and so does
// registry validation): the functions convert it, as ** (powFunction)
// does, rather than fail every run ("interface conversion: interface {} is
// int64, not float64").
func TestMathOfInteger(t *testing.T) {
	vars := []Var{{Name: "n", Kind: featurestore.KindInt64}, {Name: "ns", Kind: featurestore.KindInt64List}}
	vals := []featurestore.Value{featurestore.Int64Value(4), featurestore.Int64ListValue([]int64{4, 5})}
	var ev Evaluator
	for src, want := range map[string]float64{
		"log(n)":        log(4),
		"log1p(n)":      log1p(4),
		"exp(n)":        exp(4),
		"sqrt(n)":       2,
		"sqrt(len(ns))": 1.4142135623730951,
		"sqrt(ns[0])":   2,
		"log(sum(ns))":  log(9),
		"sqrt(n % 3)":   1,
	} {
		e, err := Compile(src, vars, featurestore.KindDouble)
		if err != nil {
			continue // refusing at load time is a fine fix too
		}
		got, err := ev.Eval(e, vals)
		if err != nil || !got.Equal(featurestore.DoubleValue(want)) {
			t.Errorf("%s with n = 4: %v, %v; want %v (it compiled, so it must run)", src, got.Any(), err, want)
		}
	}
}

// Int64 lists (last_n of an int64 field) reach expr as []int, bool lists
// as []any: expr's sort handles only []any, []int, []float64 and []string,
// and given an []int64 or []bool whose type is only known at run time (a
// conditional, ??), it returned an empty list, a wrong value, not a failed
// run. sort of an int64 list compiles.
func TestSortInt64ListAtRunTime(t *testing.T) {
	vars := []Var{
		{Name: "ns", Kind: featurestore.KindInt64List},
		{Name: "xs", Kind: featurestore.KindDoubleList},
		{Name: "bs", Kind: featurestore.KindBoolList},
		{Name: "b", Kind: featurestore.KindBool},
	}
	vals := []featurestore.Value{
		featurestore.Int64ListValue([]int64{3, 1, 2}),
		featurestore.DoubleListValue([]float64{9}),
		featurestore.BoolListValue([]bool{true, false}),
		featurestore.BoolValue(true),
	}
	var ev Evaluator
	for src, want := range map[string]string{
		"string(sort(b ? ns : xs))":      "[1 2 3]",
		"string(sort(ns ?? xs))":         "[1 2 3]",
		"string(sort(b ? bs : xs))":      "[false true]",
		"string(len(sort(b ? ns : xs)))": "3",
	} {
		e, err := Compile(src, vars, featurestore.KindString)
		if err != nil {
			continue // refused at load time: fine
		}
		got, err := ev.Eval(e, vals)
		if err == nil && !got.Equal(featurestore.StringValue(want)) {
			t.Errorf("%s with ns = [3 1 2], bs = [true false]: %q; want %q or a failed run", src, got.Any(), want)
		}
	}
	e, err := Compile("string(sort(ns))", vars, featurestore.KindString)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ev.Eval(e, vals); err != nil || !got.Equal(featurestore.StringValue("[1 2 3]")) {
		t.Errorf("string(sort(ns)) with ns = [3 1 2]: %v, %v; want [1 2 3]", got.Any(), err)
	}
}

// A bool list (last_n of a bool field) compared with a list literal is
// equal when its elements are: expr's == compares []any element by
// element, but a []bool falls to a type-strict comparison (a wrong false,
// while the same comparison on int64, double and string lists is true).
func TestBoolListEquality(t *testing.T) {
	vars := []Var{
		{Name: "bs", Kind: featurestore.KindBoolList},
		{Name: "ns", Kind: featurestore.KindInt64List},
	}
	vals := []featurestore.Value{
		featurestore.BoolListValue([]bool{true, false}),
		featurestore.Int64ListValue([]int64{3, 1}),
	}
	var ev Evaluator
	for _, src := range []string{"ns == [3, 1]", "bs == [true, false]", "[true, false] == bs", "bs != [true, false]"} {
		e, err := Compile(src, vars, featurestore.KindBool)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		want := !strings.Contains(src, "!=")
		got, err := ev.Eval(e, vals)
		if err != nil || !got.Equal(featurestore.BoolValue(want)) {
			t.Errorf("%s with bs = [true false], ns = [3 1]: %v, %v; want %v", src, got.Any(), err, want)
		}
	}
}
