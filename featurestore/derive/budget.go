package derive

import (
	"errors"
	"reflect"
	"regexp/syntax"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/conf"
)

// An expression runs on request values, so a client chooses the size of
// some of its strings and lists: without bounds, a run could make a
// request allocate gigabytes (replace(s, "", s) squares a string's length,
// each let x = y + y doubles it) or spin for seconds (predicates nested
// over split(s, "") take len(s)**3 steps). expr bounds only what ranges,
// list literals and sort make (memoryBudget, in its units). Each run here
// has a meter, charged by calls that Compile puts around the expression's
// nodes:
//
//   - memory, for every string and list that a function or operator makes
//     (string +, split, replace, join, map, filter, concat...): its size;
//   - work, for the same; for every predicate (all, any, count, filter,
//     map...), the length of its list times the number of nodes of its
//     predicate, which bounds what nested predicates do; in predicates, for
//     every string and list that an operator or function goes over (==, in,
//     contains, indexOf, sum...), its size; and for matches, the size of
//     its text times matchWeight of its pattern (a literal: see refusals).
//
// Sizes are in expr's units: one per list element, one per 16 bytes of
// string (a list element is a 16-byte interface or string header). A run
// that goes over memoryBudget or workBudget fails, which callers turn into
// a null and count, online and in exports alike. Outside predicates, each
// node runs at most once (there are at most maxNodes), over request or
// stored values or values the run made, so what it goes over needs no
// charge; the expressions of a lookup's values that make no strings or
// lists and run no predicates charge nothing, and pay nothing.
//
// The charges are calls of Go functions the expression cannot name (their
// names are not identifiers), taking the run's meter from a variable the
// expression cannot name either.
const (
	// workBudget bounds a run's work: at most about 10 ms of CPU, measured
	// on the worst expressions found (a unit is 1 to 10 ns).
	workBudget = 1_000_000

	meterVar     = "$ meter"
	madeFunction = "$ made"
	readFunction = "$ read"
	loopFunction = "$ loop"
)

// meter is what a run has used of its budgets.
type meter struct {
	memory, work int
}

var (
	errMemory = errors.New("memory budget exceeded: the run made too many or too large strings and lists")
	errWork   = errors.New("work budget exceeded: the run went over too many or too large strings and lists")
)

// budgetFunctions declares the functions that charge a run's meter. Their
// nodes carry the type of what they wrap (Compile puts them in after the
// type check), so they need no signature.
func budgetFunctions(c *conf.Config) {
	for name, f := range map[string]func(...any) (any, error){
		madeFunction: made,
		readFunction: read,
		loopFunction: loop,
	} {
		c.Functions[name] = &builtin.Function{Name: name, Func: f}
	}
}

// made charges its second argument, a value the run made, as memory and
// work, and returns it.
func made(p ...any) (any, error) {
	m, n := p[0].(*meter), size(p[1])
	m.memory += n
	m.work += n
	if m.memory > memoryBudget {
		return nil, errMemory
	}
	if m.work > workBudget {
		return nil, errWork
	}
	return p[1], nil
}

// read charges its second argument, a value an operator or function goes
// over, as work, and returns it.
func read(p ...any) (any, error) {
	m := p[0].(*meter)
	m.work += size(p[1])
	if m.work > workBudget {
		return nil, errWork
	}
	return p[1], nil
}

// loop charges its third argument, the list of a predicate, as work: its
// length times the second argument, the size of the predicate.
func loop(p ...any) (any, error) {
	m := p[0].(*meter)
	m.work += size(p[2]) * p[1].(int)
	if m.work > workBudget {
		return nil, errWork
	}
	return p[2], nil
}

// size returns the size of v in expr's units: 0 for a number or a bool.
func size(v any) int {
	switch x := v.(type) {
	case nil, int, float64, bool:
		return 0
	case string:
		return (len(x) + 15) / 16
	case []any:
		return len(x)
	case []string:
		return len(x)
	case []int:
		return len(x)
	case []float64:
		return len(x)
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.String:
		return (rv.Len() + 15) / 16
	case reflect.Slice, reflect.Array, reflect.Map:
		return rv.Len()
	}
	return 0
}

// producers are the functions that make strings or lists.
var producers = map[string]bool{
	"split": true, "replace": true, "join": true, "upper": true, "lower": true, "trim": true,
	"trimPrefix": true, "trimSuffix": true, "string": true, "map": true, "filter": true,
	"concat": true, "sort": true, "reverse": true, "take": true, "uniq": true,
}

// charges is an ast.Visitor that puts the calls charging a run's meter
// around the nodes of a checked expression. ast.Walk visits a node after
// its children, so a node wraps its children's values as it reads them,
// and then itself when it makes a value.
type charges struct {
	used bool // whether a call was put in
	// inLoop holds the nodes of predicates, which run once for each
	// element of a list.
	inLoop map[ast.Node]bool
}

// newCharges returns charges for the expression at root.
func newCharges(root *ast.Node) *charges {
	c := &charges{inLoop: map[ast.Node]bool{}}
	ast.Walk(root, loops(c.inLoop))
	return c
}

// loops is an ast.Visitor that records the nodes of predicates.
type loops map[ast.Node]bool

func (l loops) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.PredicateNode:
		ast.Walk(&n.Node, all(l))
	case *ast.BuiltinNode:
		if n.Map != nil {
			ast.Walk(&n.Map, all(l))
		}
	}
}

// all is an ast.Visitor that records every node.
type all map[ast.Node]bool

func (a all) Visit(node *ast.Node) { a[*node] = true }

func (c *charges) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.BinaryNode:
		switch n.Operator {
		case "??", "&&", "||", "and", "or":
			// They pass values on, or take bools.
		case "matches":
			// Go's regexp matches in time linear in the text and in the
			// pattern's program (refusals keep patterns constant).
			if p, ok := n.Right.(*ast.StringNode); ok {
				c.wrap(&n.Left, loopFunction, integer(matchWeight(p.Value)))
			}
		default:
			c.readAt(n, &n.Left)
			c.readAt(n, &n.Right)
		}
		if n.Operator == "+" && sized(n) {
			c.wrap(node, madeFunction)
		}
	case *ast.ArrayNode:
		for i := range n.Nodes {
			c.readAt(n, &n.Nodes[i])
		}
	case *ast.PairNode:
		c.readAt(n, &n.Value)
	case *ast.BuiltinNode:
		if n.Map != nil {
			// expr's optimizer makes map(filter(xs, p), q) one node.
			ast.Walk(&n.Map, c)
		}
		if isPredicate(n) {
			w := 1 + nodes(n.Map)
			for _, a := range n.Arguments[1:] {
				w += nodes(a)
			}
			c.wrap(&n.Arguments[0], loopFunction, integer(w))
		} else {
			switch n.Name {
			case "len", "first", "last", "take":
				// They do not go over their arguments.
			default:
				for i := range n.Arguments {
					c.readAt(n, &n.Arguments[i])
				}
			}
		}
		if producers[n.Name] && sized(n) && (n.Name != "string" || sized(n.Arguments[0])) {
			c.wrap(node, madeFunction)
		}
	}
}

// readAt charges the value at node as read by parent, when parent is in a
// predicate, and the value is not a literal or a value just made (charged
// already, and read once). Outside predicates, each node runs at most once:
// what it goes over is a request or stored value, bounded by the request's
// size or the store's, or a value the run made, bounded by memoryBudget.
func (c *charges) readAt(parent ast.Node, node *ast.Node) {
	if !c.inLoop[parent] {
		return
	}
	switch n := (*node).(type) {
	case *ast.StringNode, *ast.ConstantNode, *ast.NilNode, *ast.ArrayNode, *ast.MapNode:
		return
	case *ast.CallNode:
		if id, ok := n.Callee.(*ast.IdentifierNode); ok && id.Value == madeFunction {
			return
		}
	}
	if sized(*node) {
		c.wrap(node, readFunction)
	}
}

// wrap replaces the node at node by a call of fn with the run's meter,
// args, and the node, of the node's type.
func (c *charges) wrap(node *ast.Node, fn string, args ...ast.Node) {
	c.used = true
	n := *node
	call := &ast.CallNode{
		Callee:    &ast.IdentifierNode{Value: fn},
		Arguments: append(append([]ast.Node{meterNode()}, args...), n),
	}
	call.SetNature(*n.Nature())
	call.SetLocation(n.Location())
	*node = call
}

// letMeter returns root in a let of the meter, which the calls that
// charge it then read from the run's variables, not from its environment,
// a map.
func letMeter(root ast.Node) ast.Node {
	let := &ast.VariableDeclaratorNode{Name: meterVar, Value: meterNode(), Expr: root}
	let.SetNature(*root.Nature())
	let.SetLocation(root.Location())
	return let
}

func meterNode() ast.Node {
	m := &ast.IdentifierNode{Value: meterVar}
	m.SetType(reflect.TypeOf((*meter)(nil)))
	return m
}

// sized reports whether n's values may be strings or lists.
func sized(n ast.Node) bool {
	if n.Nature().Nil {
		return false
	}
	switch n.Type().Kind() {
	case reflect.String, reflect.Slice, reflect.Array, reflect.Map, reflect.Interface:
		return true
	}
	return false
}

// isPredicate reports whether n is a builtin that runs a predicate over a
// list.
func isPredicate(n *ast.BuiltinNode) bool {
	for _, a := range n.Arguments {
		if _, ok := a.(*ast.PredicateNode); ok {
			return true
		}
	}
	return n.Map != nil
}

// matchWeight returns what matching pattern costs for each unit of text
// (16 bytes): Go's regexp takes some nanoseconds a byte, and at worst time
// proportional to the size of the pattern's program.
func matchWeight(pattern string) int {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return 32 // expr's compiler reports it
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return 32
	}
	return 32 + len(prog.Inst)
}

func integer(v int) ast.Node {
	n := &ast.IntegerNode{Value: v}
	n.SetType(reflect.TypeOf(0))
	return n
}

// nodes returns the number of nodes of the tree at n.
func nodes(n ast.Node) int {
	if n == nil {
		return 0
	}
	var c counter
	ast.Walk(&n, &c)
	return int(c)
}

type counter int

func (c *counter) Visit(*ast.Node) { *c++ }
