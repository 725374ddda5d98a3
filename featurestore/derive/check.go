package derive

import (
	"slices"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
)

// refusals is an ast.Visitor that finds, in a checked expression, what
// expr's checker lets through but expressions may not contain: $env, which
// reads variables without naming them (so that neither the null rule nor
// the reading of the inputs an expression uses would see them), calls of
// functions other than Functions (expr parses its predicate builtins,
// find, reduce, groupBy and the like, whatever builtins are enabled), and
// patterns of matches that are not literals. It keeps the first.
type refusals struct{ err *file.Error }

func (r *refusals) Visit(node *ast.Node) {
	if r.err != nil {
		return
	}
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if n.Value == "$env" {
			r.err = errorAt(n.Location(), "$env is not available: name the variable")
		}
	case *ast.BinaryNode:
		if _, ok := n.Right.(*ast.StringNode); n.Operator == "matches" && !ok {
			// A pattern made at run time, from request values, could take
			// its time to compile, and to match (see budget.go).
			r.err = errorAt(n.Right.Location(), "the pattern of matches must be a string literal")
		}
	case *ast.BuiltinNode:
		if !slices.Contains(Functions, n.Name) {
			r.err = withheldError(n.Name, n.Location())
		}
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok {
			r.err = errorAt(n.Location(), "only the functions expressions may call can be called")
		} else if id.Value != powFunction && !slices.Contains(Functions, id.Value) {
			r.err = withheldError(id.Value, n.Location())
		}
	}
}

// withheldError is expr's error for a function it does not know, so that
// the registry's hint for withheld functions applies to these too.
func withheldError(name string, loc file.Location) *file.Error {
	return errorAt(loc, "unknown name "+name)
}

// errorAt returns msg as an error at loc; Compile binds it to the source,
// which gives it expr's line and column.
func errorAt(loc file.Location, msg string) *file.Error {
	return &file.Error{Location: loc, Message: msg}
}
