// Package derive computes on-demand features: expressions over stored
// features and request fields, evaluated when a value is asked for. Serving
// evaluates them at lookup time, export for each row of an entity table,
// with this package's code, so that an on-demand feature is exported as it
// is served.
//
// An expression is written in the expr language (github.com/expr-lang/expr):
// arithmetic, comparisons, and/or/not, the conditional a ? b : c, string
// and list operations, and the functions listed in Functions. Its variables
// are typed (int64, double, string, bool, or a list of these), so that a
// misspelt name or a type mismatch fails when the definition is loaded, not
// at a lookup. Nothing in it can read the clock or the environment: the same
// inputs always give the same value, on every platform, since serving and
// export may run on different CPUs: exp, log, log1p and the power operator
// (** or ^) are computed here (see math.go), not by Go's math package, and
// int of a double that int64 cannot hold fails rather than give what the
// platform's conversion gives.
//
// Nulls: when a variable that the expression uses is null (a stored feature
// with no value, a null request field), the result is null and the
// expression is not run. A run that fails (a string index out of range, an
// integer modulo by zero, int of NaN, the memory or work budget exceeded, a
// string result that is not valid UTF-8) gives an error, which callers turn
// into a null and count.
package derive

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/vm"
	"github.com/expr-lang/expr/vm/runtime"

	"github.com/featurestore/featurestore/featurestore"
)

// Var is a variable an expression may use.
type Var struct {
	Name string
	Kind featurestore.Kind
}

// Functions are the functions an expression may call: expr's builtins that
// depend on nothing but their arguments, and log, log1p, exp and sqrt.
var Functions = []string{
	"abs", "ceil", "floor", "round", "max", "min", "int", "float", "string",
	"len", "trim", "trimPrefix", "trimSuffix", "upper", "lower", "split",
	"replace", "join", "indexOf", "lastIndexOf", "hasPrefix", "hasSuffix",
	"all", "none", "any", "one", "filter", "map", "count", "sum", "mean",
	"median", "first", "last", "take", "reverse", "sort", "uniq", "concat",
	"log", "log1p", "exp", "sqrt",
}

// IsWithheld reports whether name is a function of the expr language that
// expressions may not call (now, date, repeat, toJSON...): one that reads
// the clock, or that a deterministic feature has no use for.
func IsWithheld(name string) bool {
	_, ok := builtin.Index[name]
	return ok && !slices.Contains(Functions, name)
}

// maxNodes bounds the size of an expression.
const maxNodes = 1000

// memoryBudget bounds what one run may allocate, in expr's units (one per
// element of a list it makes, one per 16 bytes of a string), so that a
// request value cannot make a run use unbounded memory: what expr charges
// (ranges, list literals, sort) and what this package charges (the strings
// and lists the other functions and operators make) are each bounded by
// it. See budget.go, which also bounds a run's work.
const memoryBudget = 100_000

// Expr is a compiled expression. It is safe for concurrent use.
type Expr struct {
	prog *vm.Program
	vars []Var
	uses []int // indexes in vars of the variables the expression uses
	out  featurestore.Kind
	// metered is whether the program charges a meter (see budget.go).
	metered bool
}

// Uses returns the indexes in the compiled variables of those the
// expression uses, in increasing order.
func (e *Expr) Uses() []int { return e.uses }

// Kind returns the kind of the expression's values.
func (e *Expr) Kind() featurestore.Kind { return e.out }

// mathFunctions are the functions this package adds to expr's builtins or
// puts in their place, and its power operator, so that they give the same
// bits on every platform.
var mathFunctions = []expr.Option{
	// expr's checker takes integers for a float64 parameter, so the
	// argument is converted as expr converts the operands of its
	// arithmetic.
	expr.Function("log", func(p ...any) (any, error) { return log(runtime.ToFloat64(p[0])), nil }, new(func(float64) float64)),
	expr.Function("log1p", func(p ...any) (any, error) { return log1p(runtime.ToFloat64(p[0])), nil }, new(func(float64) float64)),
	expr.Function("exp", func(p ...any) (any, error) { return exp(runtime.ToFloat64(p[0])), nil }, new(func(float64) float64)),
	// math.Sqrt is the same everywhere: IEEE 754 requires square roots to
	// be correctly rounded (see math.go).
	expr.Function("sqrt", func(p ...any) (any, error) { return math.Sqrt(runtime.ToFloat64(p[0])), nil }, new(func(float64) float64)),
	portableInt,
	expr.Function(powFunction, func(p ...any) (any, error) {
		return pow(runtime.ToFloat64(p[0]), runtime.ToFloat64(p[1])), nil
	}, new(func(any, any) float64)),
	expr.Patch(powOperator{}),
}

// powFunction is the name of the function that computes x ** y and x ^ y:
// a name that is not an identifier, so that expressions cannot call it and
// no variable can have it.
const powFunction = "**"

// powOperator is an ast.Visitor that makes every x ** y and x ^ y of an
// expression a call of powFunction, so that it is computed by pow rather
// than by expr, whose power operator, at run time and when it folds
// constants at compile time, is math.Pow (see math.go). The call takes the
// operands and gives a double, as expr's operator does: integers are
// converted to doubles (so 2 ** 3 is the double 8, as with expr), and an
// operand whose type is only known at run time that is not a number fails
// the run with expr's message. Operands of other types are left to expr's
// type check, which rejects them at compile time.
type powOperator struct{}

func (powOperator) Visit(node *ast.Node) {
	n, ok := (*node).(*ast.BinaryNode)
	if !ok || n.Operator != "**" && n.Operator != "^" || !maybeNumber(n.Left) || !maybeNumber(n.Right) {
		return
	}
	ast.Patch(node, &ast.CallNode{
		Callee:    &ast.IdentifierNode{Value: powFunction},
		Arguments: []ast.Node{n.Left, n.Right},
	})
}

// maybeNumber reports whether n's values are numbers, or of a type known
// only at run time.
func maybeNumber(n ast.Node) bool {
	if n.Nature().Nil {
		return false
	}
	switch n.Type().Kind() {
	case reflect.Interface, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// portableInt replaces expr's int, whose conversion of a double is Go's,
// which the Go spec leaves to the platform when the double is NaN, infinite
// or out of range (amd64 gives the most negative int64 for all of these,
// +Inf included; arm64 saturates and makes NaN 0). Here they fail the run.
// Arguments are checked at compile time as expr's int checks them.
func portableInt(c *conf.Config) {
	c.Functions["int"] = &builtin.Function{
		Name:     "int",
		Func:     toInt,
		Validate: builtin.Builtins[builtin.Index["int"]].Validate,
	}
}

// toInt is expr's int, with doubles that are not in int's range (NaN and
// the infinities included) an error.
func toInt(p ...any) (any, error) {
	switch x := p[0].(type) {
	case float64:
		return floatToInt(x)
	case float32:
		return floatToInt(float64(x))
	}
	return builtin.Int(p[0]), nil
}

func floatToInt(x float64) (any, error) {
	// -float64(math.MinInt) is 2**63 (or 2**31), exactly; NaN fails both
	// comparisons.
	if !(x >= float64(math.MinInt) && x < -float64(math.MinInt)) {
		return nil, fmt.Errorf("int(%v): out of the range of integers", x)
	}
	return int(x), nil
}

// Compile compiles src over vars, for values of kind out (string, int64,
// double or bool). An int64 expression may be given where out is double.
func Compile(src string, vars []Var, out featurestore.Kind) (*Expr, error) {
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty expression")
	}
	env := make(map[string]any, len(vars))
	for _, v := range vars {
		sample, err := zero(v.Kind)
		if err != nil {
			return nil, fmt.Errorf("variable %q: %w", v.Name, err)
		}
		env[v.Name] = sample
	}
	opts := []expr.Option{expr.Env(env), expr.MaxNodes(maxNodes), expr.DisableAllBuiltins()}
	for _, f := range Functions {
		if !isMath(f) {
			opts = append(opts, expr.EnableBuiltin(f))
		}
	}
	opts = append(opts, mathFunctions...)
	opts = append(opts, budgetFunctions)
	switch out {
	case featurestore.KindInt64, featurestore.KindDouble, featurestore.KindBool, featurestore.KindString:
	default:
		return nil, fmt.Errorf("an expression cannot give %s values: use string, int64, double or bool", out)
	}
	// expr.Compile's steps, with this package's between checking and
	// compiling: refusing what the checker lets through, and charging the
	// run's budget (see budget.go).
	config := conf.CreateNew()
	for _, op := range opts {
		op(config)
	}
	for name := range config.Disabled {
		delete(config.Builtins, name)
	}
	config.Check()
	tree, err := checker.ParseCheck(src, config)
	if err != nil {
		return nil, errors.New(oneLine(err.Error()))
	}
	var r refusals
	ast.Walk(&tree.Node, &r)
	if r.err != nil {
		return nil, errors.New(oneLine(r.err.Bind(tree.Source).Error()))
	}
	if tree.Node.Nature().Nil {
		return nil, fmt.Errorf("expression gives nil, not %s values", out)
	}
	if t := tree.Node.Type(); t != nil && t.Kind() != reflect.Interface && !fits(t.Kind(), out) {
		return nil, fmt.Errorf("expression gives %s values, not %s", t, out)
	}
	if config.Optimize {
		if err := optimizer.Optimize(&tree.Node, config); err != nil {
			var ferr *file.Error
			if errors.As(err, &ferr) {
				err = ferr.Bind(tree.Source)
			}
			return nil, errors.New(oneLine(err.Error()))
		}
	}
	e := &Expr{vars: slices.Clone(vars), out: out}
	used := map[string]bool{}
	ast.Walk(&tree.Node, identifiers(used))
	for i, v := range vars {
		if used[v.Name] {
			e.uses = append(e.uses, i)
		}
	}
	ch := newCharges(&tree.Node)
	ast.Walk(&tree.Node, ch)
	if e.metered = ch.used; e.metered {
		tree.Node = letMeter(tree.Node)
	}
	if e.prog, err = compiler.Compile(tree, config); err != nil {
		return nil, errors.New(oneLine(err.Error()))
	}
	return e, nil
}

func isMath(name string) bool {
	switch name {
	case "log", "log1p", "exp", "sqrt":
		return true
	}
	return false
}

// identifiers is an ast.Visitor that records identifier names.
type identifiers map[string]bool

func (m identifiers) Visit(node *ast.Node) {
	if n, ok := (*node).(*ast.IdentifierNode); ok {
		m[n.Value] = true
	}
}

// oneLine keeps the first line of expr's error and its position: expr adds
// the source and a caret on lines of their own.
func oneLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// zero returns a value of the Go type that variables of kind k have.
func zero(k featurestore.Kind) (any, error) {
	switch k {
	case featurestore.KindString:
		return "", nil
	case featurestore.KindInt64:
		return int64(0), nil
	case featurestore.KindDouble:
		return float64(0), nil
	case featurestore.KindBool:
		return false, nil
	case featurestore.KindStringList:
		return []string(nil), nil
	case featurestore.KindInt64List:
		return []int(nil), nil
	case featurestore.KindDoubleList:
		return []float64(nil), nil
	case featurestore.KindBoolList:
		// Checked as []bool, so that sort(bs) and sum(bs) are refused, but
		// run as []any (see forExpr): expr checks list operations by the
		// type of the list and the operands of its opcodes by their kinds,
		// and those of a []bool and an []any of bools are alike.
		return []bool(nil), nil
	}
	return nil, fmt.Errorf("no variables of kind %s", k)
}

// Go's int is int64: expr's runtime is written for []int, not []int64.
const _ uint = math.MaxInt - math.MaxInt64

// forExpr returns a value as Value.Any gives it in the Go type that expr's
// runtime handles: int64 and bool lists are []int and []any, since where a
// list's type is only known at run time, its sort takes []int64 and []bool
// for lists of unknown elements (and makes them empty), and its == compares
// a []bool with nothing (never equal). An int64 list is the same memory
// seen as []int (nothing in a run writes to a list); a bool list is copied.
func forExpr(v any) any {
	switch x := v.(type) {
	case []int64:
		if x == nil {
			return []int(nil)
		}
		return unsafe.Slice((*int)(unsafe.Pointer(unsafe.SliceData(x))), len(x))
	case []bool:
		if x == nil {
			return []any(nil)
		}
		l := make([]any, len(x))
		for i, b := range x {
			l[i] = b
		}
		return l
	}
	return v
}

// Evaluator runs expressions. It reuses its memory from run to run, so it
// must not be used by two goroutines at once; keep one per goroutine.
type Evaluator struct {
	vm    vm.VM
	env   map[string]any
	boxed []any
	meter meter
}

// Eval computes e with the variables' values in vals (indexed as the
// variables e was compiled with). It returns a null value when a variable
// that e uses is null, and an error when the run fails.
func (ev *Evaluator) Eval(e *Expr, vals []featurestore.Value) (featurestore.Value, error) {
	ev.boxed = slices.Grow(ev.boxed[:0], len(vals))[:len(vals)]
	clear(ev.boxed)
	for _, i := range e.uses {
		ev.boxed[i] = vals[i].Any()
	}
	return ev.EvalBoxed(e, ev.boxed)
}

// EvalBoxed is Eval with the values as Value.Any gives them (nil for
// null), so that a caller evaluating several expressions over the same
// values converts each once: a number or a string put in an interface is
// an allocation.
func (ev *Evaluator) EvalBoxed(e *Expr, vals []any) (featurestore.Value, error) {
	if ev.env == nil {
		ev.env = make(map[string]any, len(e.vars))
	}
	clear(ev.env)
	for _, i := range e.uses {
		v := vals[i]
		if v == nil {
			return featurestore.Value{}, nil
		}
		if !isKind(v, e.vars[i].Kind) {
			return featurestore.Value{}, fmt.Errorf("variable %q is %T, not %s", e.vars[i].Name, v, e.vars[i].Kind)
		}
		ev.env[e.vars[i].Name] = forExpr(v)
	}
	if e.metered {
		ev.meter = meter{}
		ev.env[meterVar] = &ev.meter
	}
	ev.vm.MemoryBudget = memoryBudget
	res, err := ev.vm.Run(e.prog, ev.env)
	if err != nil {
		return featurestore.Value{}, errors.New(oneLine(err.Error()))
	}
	return result(res, e.out)
}

// isKind reports whether v, as Value.Any gives values, is of kind k.
func isKind(v any, k featurestore.Kind) bool {
	switch v.(type) {
	case string:
		return k == featurestore.KindString
	case int64:
		return k == featurestore.KindInt64
	case float64:
		return k == featurestore.KindDouble
	case bool:
		return k == featurestore.KindBool
	case []string:
		return k == featurestore.KindStringList
	case []int64:
		return k == featurestore.KindInt64List
	case []float64:
		return k == featurestore.KindDoubleList
	case []bool:
		return k == featurestore.KindBoolList
	}
	return false
}

// fits reports whether values of Go kind k make values of kind out:
// integers make int64 and double values.
func fits(k reflect.Kind, out featurestore.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Int16, reflect.Int8,
		reflect.Uint, reflect.Uint64, reflect.Uint32, reflect.Uint16, reflect.Uint8:
		return out == featurestore.KindInt64 || out == featurestore.KindDouble
	case reflect.Float64, reflect.Float32:
		return out == featurestore.KindDouble
	case reflect.Bool:
		return out == featurestore.KindBool
	case reflect.String:
		return out == featurestore.KindString
	}
	return false
}

// result converts what the program returned to a value of kind out.
func result(res any, out featurestore.Kind) (featurestore.Value, error) {
	if res == nil {
		return featurestore.Value{}, nil
	}
	rv := reflect.ValueOf(res)
	if !fits(rv.Kind(), out) {
		return featurestore.Value{}, fmt.Errorf("expression gave %T, not %s", res, out)
	}
	switch out {
	case featurestore.KindInt64:
		if rv.CanInt() {
			return featurestore.Int64Value(rv.Int()), nil
		}
		if u := rv.Uint(); u <= math.MaxInt64 {
			return featurestore.Int64Value(int64(u)), nil
		}
	case featurestore.KindDouble:
		switch {
		case rv.CanFloat():
			f := rv.Float()
			if f != f {
				// NaN's bits depend on the CPU that made it (0/0, Inf-Inf
				// and sqrt of a negative number give the sign bit on amd64
				// and not on arm64): one NaN for all, so that serving and
				// an export on another platform give the same value.
				f = math.NaN()
			}
			return featurestore.DoubleValue(f), nil
		case rv.CanInt():
			return featurestore.DoubleValue(float64(rv.Int())), nil
		default:
			return featurestore.DoubleValue(float64(rv.Uint())), nil
		}
	case featurestore.KindBool:
		return featurestore.BoolValue(rv.Bool()), nil
	case featurestore.KindString:
		// expr indexes and slices strings by bytes, so a run can cut a
		// character in two. Such a string cannot be served (Protobuf
		// strings are UTF-8, and clients refuse a response holding one):
		// the run fails, online and in an export alike.
		s := rv.String()
		if !utf8.ValidString(s) {
			return featurestore.Value{}, fmt.Errorf("expression gave a string that is not valid UTF-8 (at byte %d of %d)", invalidUTF8At(s), len(s))
		}
		return featurestore.StringValue(s), nil
	}
	return featurestore.Value{}, fmt.Errorf("expression gave %T, not %s", res, out)
}

// invalidUTF8At returns the index of the first byte of s that does not
// begin a valid UTF-8 encoding, len(s) if none.
func invalidUTF8At(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return i
			}
		}
	}
	return len(s)
}
