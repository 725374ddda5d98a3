package export

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/derive"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// This file computes on-demand features, when the output is written: each
// batch's stored feature columns are gathered as for any export (with the
// stored features that on-demand ones read and that were not requested,
// which are not written), then each on-demand column is computed row by
// row from them and from the row's request-field columns of the entity
// table, by package derive, as serving computes it at a lookup.

// outColumn is one feature column of the output, in request order: a stored
// feature's column of plan.columns, or an on-demand feature.
type outColumn struct {
	name   string
	kind   featurestore.Kind
	stored int // index in plan.columns, -1 for an on-demand feature
	od     *odColumn
}

// odColumn is an on-demand feature of the output.
type odColumn struct {
	view, feature string
	expr          *derive.Expr
	// vars are where each variable of the view comes from, in the order of
	// its Vars: a stored column, or a request field of the entity table.
	vars []odSource
	// failed counts the rows whose run failed, and first is the first
	// failure, for the warning at the end; under mu, as ranges of rows
	// are computed at once.
	mu     sync.Mutex
	failed int64
	first  error
}

// odSource is where a variable of an on-demand feature comes from.
type odSource struct {
	name   string
	kind   featurestore.Kind
	column int // index in plan.columns; -1 for a request field
}

// planOnDemand expands the on-demand references among resolved into the
// stored references they read, and returns the stored references to
// compute (those requested, in order, then the others the on-demand ones
// read) and a function that builds the outputs once the plan's columns
// exist, by stored reference.
func planOnDemand(r *registry.Registry, resolved []registry.FeatureRef) (stored []registry.FeatureRef, build func(cols map[registry.FeatureRef]int) ([]outColumn, map[string]featurestore.Kind), err error) {
	isOD := func(ref registry.FeatureRef) bool { return r.OnDemandView(ref.View) != nil && r.View(ref.View) == nil }
	requested := map[registry.FeatureRef]bool{}
	for _, ref := range resolved {
		if !isOD(ref) {
			stored = append(stored, ref)
			requested[ref] = true
		}
	}
	// The first feature to use each request field, and its kind, for
	// fields that views declare with kinds no one column holds.
	type fieldUse struct {
		ref  registry.FeatureRef
		kind featurestore.Kind
	}
	fieldUses := map[string]fieldUse{}
	for _, ref := range resolved {
		if !isOD(ref) {
			continue
		}
		v := r.OnDemandView(ref.View)
		f := v.Feature(ref.Feature)
		if f == nil {
			return nil, nil, fmt.Errorf("unknown feature %q in on-demand feature view %q", ref.Feature, ref.View)
		}
		for _, i := range f.Expr().Uses() {
			x := v.Vars()[i]
			if x.Input == nil {
				use, ok := fieldUses[x.Name]
				if !ok {
					fieldUses[x.Name] = fieldUse{ref, x.Type.Kind()}
				} else if _, ok := fieldKind(use.kind, x.Type.Kind()); !ok {
					return nil, nil, fmt.Errorf("on-demand features %q and %q take request field %q as %s and as %s: no entity table column holds both", use.ref.String(), ref.String(), x.Name, use.kind, x.Type.Kind())
				}
			}
			in := x.Input
			if in != nil && !r.View(in.View).IsOffline() {
				return nil, nil, fmt.Errorf("on-demand feature %q reads %q, whose feature view is not kept offline (offline: false): it cannot be exported", ref.String(), in.String())
			}
			if in != nil && !requested[*in] {
				requested[*in] = true
				stored = append(stored, *in)
			}
		}
	}
	build = func(cols map[registry.FeatureRef]int) ([]outColumn, map[string]featurestore.Kind) {
		var outs []outColumn
		fields := map[string]featurestore.Kind{}
		for _, ref := range resolved {
			if !isOD(ref) {
				outs = append(outs, outColumn{name: ref.String(), stored: cols[ref]})
				continue
			}
			v := r.OnDemandView(ref.View)
			f := v.Feature(ref.Feature)
			c := &odColumn{view: v.Name, feature: f.Name, expr: f.Expr()}
			uses := map[int]bool{}
			for _, i := range f.Expr().Uses() {
				uses[i] = true
			}
			for i, x := range v.Vars() {
				src := odSource{name: x.Name, kind: x.Type.Kind(), column: -1}
				switch {
				case x.Input != nil && uses[i]:
					src.column = cols[*x.Input]
				case x.Input == nil && uses[i]:
					k, ok := fields[x.Name]
					if ok {
						k, _ = fieldKind(k, src.kind) // planOnDemand checked they agree
					} else {
						k = src.kind
					}
					fields[x.Name] = k
				}
				c.vars = append(c.vars, src)
			}
			outs = append(outs, outColumn{name: ref.String(), kind: f.Expr().Kind(), stored: -1, od: c})
		}
		return outs, fields
	}
	return stored, build, nil
}

// fieldKind returns the kind whose column an entity table needs for a
// request field that on-demand views declare of kinds a and b: that kind
// when they are the same, int64 for int64 and double (an integer column
// gives each view a value of its own kind, as a lookup converts an int64
// for each view, where a floating point column would give the int64 view
// doubles); ok is false when no column holds both.
func fieldKind(a, b featurestore.Kind) (k featurestore.Kind, ok bool) {
	switch {
	case a == b:
		return a, true
	case a == featurestore.KindInt64 && b == featurestore.KindDouble, a == featurestore.KindDouble && b == featurestore.KindInt64:
		return featurestore.KindInt64, true
	}
	return a, false
}

// requestTypeOK reports whether an entity table column of type t (a
// schema without views, see withoutViews) can hold a request field of kind
// k: text, plain or a dictionary, for string fields; integers for int64
// (and double) fields, floating point for double ones.
func requestTypeOK(t arrow.DataType, k featurestore.Kind) bool {
	switch t.ID() {
	case arrow.STRING, arrow.LARGE_STRING:
		return k == featurestore.KindString
	case arrow.DICTIONARY:
		v := t.(*arrow.DictionaryType).ValueType.ID()
		return k == featurestore.KindString && (v == arrow.STRING || v == arrow.LARGE_STRING)
	case arrow.BOOL:
		return k == featurestore.KindBool
	case arrow.FLOAT32, arrow.FLOAT64:
		return k == featurestore.KindDouble
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return k == featurestore.KindInt64 || k == featurestore.KindDouble
	}
	return false
}

// requestTypes names the types requestTypeOK takes for kind k, for
// messages.
func requestTypes(k featurestore.Kind) string {
	switch k {
	case featurestore.KindString:
		return "utf8, large_utf8, string_view or a dictionary of them"
	case featurestore.KindBool:
		return "bool"
	case featurestore.KindInt64:
		return "an integer type"
	case featurestore.KindDouble:
		return "float32, float64 or an integer type"
	}
	return "none: no column holds " + k.String()
}

// requestAt returns row i of a request-field column as a value of kind k,
// null where the cell is. The column is of a type requestTypeOK takes, but
// those plainField reports, which plainFields converts.
func requestAt(a arrow.Array, k featurestore.Kind, i int) featurestore.Value {
	if a.IsNull(i) {
		return featurestore.Value{}
	}
	switch c := a.(type) {
	case *array.String:
		return featurestore.StringValue(c.Value(i))
	case *array.LargeString:
		return featurestore.StringValue(c.Value(i))
	case *array.Boolean:
		return featurestore.BoolValue(c.Value(i))
	case *array.Float64:
		return featurestore.DoubleValue(c.Value(i))
	case *array.Float32:
		return featurestore.DoubleValue(float64(c.Value(i)))
	case *array.Uint64: // of a double field: any value is a double
		return featurestore.DoubleValue(float64(c.Value(i)))
	}
	n := intAt(a, i) // an integer type, as requestTypeOK checked
	if k == featurestore.KindDouble {
		return featurestore.DoubleValue(float64(n))
	}
	return featurestore.Int64Value(n)
}

// featureAt returns row i of a feature column of kind k, null where the
// feature has no value.
func featureAt(a arrow.Array, k featurestore.Kind, i int) featurestore.Value {
	if !k.IsList() {
		return valueAt(a, k, i)
	}
	if a.IsNull(i) {
		return featurestore.Value{}
	}
	l := a.(*array.List)
	start, end := l.ValueOffsets(i)
	switch vs := l.ListValues().(type) {
	case *array.String:
		out := make([]string, 0, end-start)
		for j := start; j < end; j++ {
			out = append(out, vs.Value(int(j)))
		}
		return featurestore.StringListValue(out)
	case *array.Int64:
		return featurestore.Int64ListValue(append([]int64(nil), vs.Int64Values()[start:end]...))
	case *array.Float64:
		return featurestore.DoubleListValue(append([]float64(nil), vs.Float64Values()[start:end]...))
	case *array.Boolean:
		out := make([]bool, 0, end-start)
		for j := start; j < end; j++ {
			out = append(out, vs.Value(int(j)))
		}
		return featurestore.BoolListValue(out)
	}
	panic(fmt.Sprintf("export: list of %s", l.ListValues().DataType()))
}

// compute returns the column of c for rows [lo, hi) of a batch: stored
// are the batch's stored feature columns (by plan.columns), and table the
// entity table's columns (see plainFields), whose request-field columns are
// at fields. It may run for several ranges of one batch at once.
func (c *odColumn) compute(mem memory.Allocator, ev *derive.Evaluator, stored []arrow.Array, kinds []featurestore.Kind, table []arrow.Array, fields map[string]int, lo, hi int) arrow.Array {
	b := array.NewBuilder(mem, arrowType(c.expr.Kind()))
	defer b.Release()
	b.Reserve(hi - lo)
	// The columns of the variables the expression uses, found once.
	type source struct {
		v     int
		col   arrow.Array
		kind  featurestore.Kind
		field bool // a request field, not a stored feature
	}
	var srcs []source
	for _, v := range c.expr.Uses() {
		switch src := c.vars[v]; {
		case src.column >= 0:
			srcs = append(srcs, source{v: v, col: stored[src.column], kind: kinds[src.column]})
		default:
			t, ok := fields[src.name]
			if !ok {
				panic(fmt.Sprintf("export: no column for request field %q", src.name)) // findEntityColumns found them all
			}
			srcs = append(srcs, source{v: v, col: table[t], kind: src.kind, field: true})
		}
	}
	vals := make([]featurestore.Value, len(c.vars))
	for i := lo; i < hi; i++ {
		for _, s := range srcs {
			if s.field {
				vals[s.v] = requestAt(s.col, s.kind, i)
			} else {
				vals[s.v] = featureAt(s.col, s.kind, i)
			}
		}
		val, err := ev.Eval(c.expr, vals)
		if err != nil {
			c.fail(err)
		}
		if err != nil || val.IsNull() {
			b.AppendNull()
			continue
		}
		appendFeature(b, val.Kind(), &window.FeatureValue{Status: window.StatusPresent, Value: val})
	}
	return b.NewArray()
}

// fail counts a row whose run failed, keeping the first error.
func (c *odColumn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == 0 {
		c.first = err
	}
	c.failed++
}

// warnFailed logs, for each on-demand feature whose expression failed on
// some rows, how many and the first failure.
func warnFailed(log *slog.Logger, outs []outColumn) {
	for _, o := range outs {
		if o.od != nil && o.od.failed > 0 {
			log.Warn("on-demand feature null where its expression failed", "feature", o.name, "rows", o.od.failed, "first_error", o.od.first.Error())
		}
	}
}

// odChunkRows is the most rows of one on-demand column a worker computes
// at a time (a variable for tests).
var odChunkRows = 16384

// onDemandColumns turns a batch's columns, the entity table's then the
// stored features' (plan.columns), into the output's: the entity table's,
// then the outputs in request order, with the on-demand ones computed in
// parallel from table, the entity table's columns with their request
// fields made plain (plainFields). It releases the stored columns that are
// not written.
func (x *exporter) onDemandColumns(cols []arrow.Array, table []arrow.Array, n int) []arrow.Array {
	nt := len(table)
	stored := cols[nt:]
	kinds := make([]featurestore.Kind, len(x.plan.columns))
	for i, c := range x.plan.columns {
		kinds[i] = c.kind
	}
	outs := make([]arrow.Array, len(x.plan.outputs))
	// Tasks of up to odChunkRows rows of one on-demand column, so that
	// every worker computes even when there is only one.
	type task struct{ out, lo, hi int }
	var tasks []task
	for i, o := range x.plan.outputs {
		if o.od == nil {
			stored[o.stored].Retain()
			outs[i] = stored[o.stored]
			continue
		}
		// A batch of no rows still needs its (empty) column.
		for lo := 0; lo < n || lo == 0; lo += odChunkRows {
			tasks = append(tasks, task{i, lo, min(lo+odChunkRows, n)})
		}
	}
	parts := make([]arrow.Array, len(tasks))
	_ = forEach(context.Background(), len(tasks), x.workers, func(_ context.Context, k int) error {
		tk := tasks[k]
		var ev derive.Evaluator
		parts[k] = x.plan.outputs[tk.out].od.compute(x.mem, &ev, stored, kinds, table, x.cols.fields, tk.lo, tk.hi)
		return nil
	})
	for k := 0; k < len(tasks); {
		i, j := tasks[k].out, k
		for j < len(tasks) && tasks[j].out == i {
			j++
		}
		if j-k == 1 {
			outs[i] = parts[k]
		} else {
			var err error
			if outs[i], err = array.Concatenate(parts[k:j], x.mem); err != nil {
				panic(fmt.Sprintf("export: concatenate on-demand column: %v", err)) // same types, so never
			}
			for _, a := range parts[k:j] {
				a.Release()
			}
		}
		k = j
	}
	for _, a := range stored {
		a.Release()
	}
	return append(cols[:nt:nt], outs...)
}
