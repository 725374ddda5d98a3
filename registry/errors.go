package registry

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Pos is a position in a definition file. Line and Col count from 1.
type Pos struct {
	File string
	Line int
	Col  int
}

// String renders the position as file:line:col.
func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Error is one problem found in the definitions, at a position.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// ErrorList holds every problem found while loading a directory. Load returns
// it sorted by file, line and column.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

func (l ErrorList) sort() {
	slices.SortStableFunc(l, func(a, b *Error) int {
		if c := cmp.Compare(a.Pos.File, b.Pos.File); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Pos.Line, b.Pos.Line); c != 0 {
			return c
		}
		return cmp.Compare(a.Pos.Col, b.Pos.Col)
	})
}

// errs collects errors during a load.
type errs struct {
	list ErrorList
}

func (e *errs) add(p Pos, format string, args ...any) {
	e.list = append(e.list, &Error{Pos: p, Msg: fmt.Sprintf(format, args...)})
}
