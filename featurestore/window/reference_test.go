package window_test

import (
	"cmp"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strings"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// This file is the brute-force reference: every feature computed directly
// from the raw events and the registry's definitions, with exact arithmetic
// (math/big), sorting and sets, sharing no code with the package.

type refResult struct {
	value     featurestore.Value
	status    window.Status
	eventTime int64
	hasTime   bool
	covered   window.Interval
	approx    bool // a dense count_distinct: the value is an estimate
}

// reference computes feature f of view rv at time t from the events of one
// key.
func reference(rv *registry.FeatureView, f *registry.Feature, evs []*rawEvent, t int64) refResult {
	g := rv.Tile.Std().Milliseconds()
	ttl := rv.TTL.Std().Milliseconds()
	var res refResult
	var from int64 = math.MinInt64
	switch {
	case f.IsLastValue():
		if ttl > 0 {
			res.covered = window.Interval{Start: t - ttl, End: t + 1}
		} else {
			res.covered = window.Interval{Start: math.MinInt64, End: t + 1}
		}
	case f.Window.Lifetime:
		res.covered = window.Interval{Start: math.MinInt64, End: t + 1}
	default:
		n := f.Window.Length.Std().Milliseconds() / g
		mod := ((t % g) + g) % g // Euclidean remainder
		from = t - mod - (n-1)*g
		res.covered = window.Interval{Start: from, End: t + 1}
	}
	var sel []*rawEvent
	for _, e := range evs {
		if e.time > t || e.time < from || !refPass(f.Filter, e.f) {
			continue
		}
		if !f.IsLastValue() && f.Aggregation != registry.AggCount {
			if x, ok := e.f[f.Field]; !ok || x == nil {
				continue
			}
		}
		sel = append(sel, e)
	}
	for _, e := range sel {
		if !res.hasTime || e.time > res.eventTime {
			res.eventTime, res.hasTime = e.time, true
		}
	}
	newestFirst := func() []*rawEvent {
		s := slices.Clone(sel)
		// Newest first by order key; between events of two topics with
		// the same key, the greater value of the feature's field first.
		slices.SortFunc(s, func(a, b *rawEvent) int {
			if c := b.orderKey().Compare(a.orderKey()); c != 0 {
				return c
			}
			return fieldValue(b, f.Field).Compare(fieldValue(a, f.Field))
		})
		return s
	}
	present := func(v featurestore.Value) refResult {
		res.value, res.status = v, window.StatusPresent
		return res
	}
	res.status = window.StatusNotFound
	isInt := f.ValueType() == registry.TypeInt64 || (f.Field != "" && intField(sel, f.Field))

	switch f.Aggregation {
	case registry.AggNone:
		if len(sel) == 0 {
			return res
		}
		e := newestFirst()[0]
		switch x := e.f[f.Field]; {
		case ttl > 0 && t-e.time > ttl:
			res.status = window.StatusExpired
		case x == nil:
			res.status = window.StatusNull
		default:
			return present(goValue(x))
		}
		return res
	case registry.AggCount:
		return present(featurestore.Int64Value(int64(len(sel))))
	case registry.AggSum:
		if f.ValueType() == registry.TypeInt64 {
			return present(featurestore.Int64Value(saturate(intSum(sel, f.Field))))
		}
		return present(featurestore.DoubleValue(doubleSum(sel, f.Field, 1)))
	case registry.AggMean:
		if len(sel) == 0 {
			return res
		}
		if isInt {
			r := new(big.Rat).SetFrac(intSum(sel, f.Field), big.NewInt(int64(len(sel))))
			x, _ := r.Float64()
			return present(featurestore.DoubleValue(x))
		}
		return present(featurestore.DoubleValue(doubleSum(sel, f.Field, int64(len(sel)))))
	case registry.AggStddev:
		if len(sel) == 0 {
			return res
		}
		return present(featurestore.DoubleValue(stddev(sel, f.Field)))
	case registry.AggMin, registry.AggMax:
		if len(sel) == 0 {
			return res
		}
		return present(extreme(sel, f.Field, f.Aggregation == registry.AggMax))
	case registry.AggLast:
		if len(sel) == 0 {
			return res
		}
		return present(goValue(newestFirst()[0].f[f.Field]))
	case registry.AggLastN:
		s := newestFirst()
		s = s[:min(len(s), f.N)]
		return present(list(f.ValueType(), s, f.Field))
	case registry.AggCountDistinct:
		set := map[string]bool{}
		for _, e := range sel {
			set[fmt.Sprintf("%T:%v", e.f[f.Field], e.f[f.Field])] = true
		}
		res.approx = len(set) > window.SparseMax(f.Precision)
		return present(featurestore.Int64Value(int64(len(set))))
	}
	panic("unknown aggregation " + f.Aggregation)
}

func intField(evs []*rawEvent, field string) bool {
	for _, e := range evs {
		_, ok := e.f[field].(int64)
		return ok
	}
	return false
}

func intSum(evs []*rawEvent, field string) *big.Int {
	s := new(big.Int)
	for _, e := range evs {
		s.Add(s, big.NewInt(e.f[field].(int64)))
	}
	return s
}

func saturate(x *big.Int) int64 {
	switch {
	case x.IsInt64():
		return x.Int64()
	case x.Sign() > 0:
		return math.MaxInt64
	}
	return math.MinInt64
}

// specials returns the IEEE result of summing the NaNs and infinities among
// xs, and whether there were any.
func specials(xs []float64) (float64, bool) {
	var nan, pos, neg bool
	for _, x := range xs {
		switch {
		case math.IsNaN(x):
			nan = true
		case math.IsInf(x, 1):
			pos = true
		case math.IsInf(x, -1):
			neg = true
		}
	}
	switch {
	case nan || (pos && neg):
		return math.NaN(), true
	case pos:
		return math.Inf(1), true
	case neg:
		return math.Inf(-1), true
	}
	return 0, false
}

func doubles(evs []*rawEvent, field string) []float64 {
	xs := make([]float64, len(evs))
	for i, e := range evs {
		xs[i] = e.f[field].(float64)
	}
	return xs
}

// doubleSum returns the exact sum divided by n, rounded once.
func doubleSum(evs []*rawEvent, field string, n int64) float64 {
	xs := doubles(evs, field)
	if s, ok := specials(xs); ok {
		return s
	}
	r := new(big.Rat)
	for _, x := range xs {
		r.Add(r, new(big.Rat).SetFloat64(x))
	}
	r.Quo(r, new(big.Rat).SetInt64(n))
	f, _ := r.Float64()
	return f + 0 // +0 for a zero sum
}

// stddev computes sqrt(Σ(x-μ)²/n) in exact rationals, then the square root
// with 3000 bits, rounded to a double.
func stddev(evs []*rawEvent, field string) float64 {
	var xs []*big.Rat
	if intField(evs, field) {
		for _, e := range evs {
			xs = append(xs, new(big.Rat).SetInt64(e.f[field].(int64)))
		}
	} else {
		fs := doubles(evs, field)
		if _, ok := specials(fs); ok {
			return math.NaN()
		}
		for _, x := range fs {
			xs = append(xs, new(big.Rat).SetFloat64(x))
		}
	}
	n := new(big.Rat).SetInt64(int64(len(xs)))
	mu := new(big.Rat)
	for _, x := range xs {
		mu.Add(mu, x)
	}
	mu.Quo(mu, n)
	v := new(big.Rat)
	for _, x := range xs {
		d := new(big.Rat).Sub(x, mu)
		v.Add(v, d.Mul(d, d))
	}
	v.Quo(v, n)
	if v.Sign() == 0 {
		return 0
	}
	bf := new(big.Float).SetPrec(3000).SetRat(v)
	bf.Sqrt(bf)
	f, _ := bf.Float64()
	return f
}

func extreme(evs []*rawEvent, field string, isMax bool) featurestore.Value {
	if intField(evs, field) {
		best := evs[0].f[field].(int64)
		for _, e := range evs {
			x := e.f[field].(int64)
			if (isMax && x > best) || (!isMax && x < best) {
				best = x
			}
		}
		return featurestore.Int64Value(best)
	}
	xs := doubles(evs, field)
	for _, x := range xs {
		if math.IsNaN(x) {
			return featurestore.DoubleValue(math.NaN())
		}
	}
	// Order with -0 below +0: compare (value, sign bit reversed).
	slices.SortFunc(xs, func(a, b float64) int {
		if c := cmp.Compare(a, b); c != 0 {
			return c
		}
		return cmp.Compare(-int(math.Float64bits(a)>>63), -int(math.Float64bits(b)>>63))
	})
	if isMax {
		return featurestore.DoubleValue(xs[len(xs)-1])
	}
	return featurestore.DoubleValue(xs[0])
}

// fieldValue is the value of an event's field, null when it has none.
func fieldValue(e *rawEvent, field string) featurestore.Value {
	if x, ok := e.f[field]; ok && x != nil {
		return goValue(x)
	}
	return featurestore.Value{}
}

func list(t registry.ValueType, evs []*rawEvent, field string) featurestore.Value {
	switch t {
	case registry.TypeStringList:
		out := []string{}
		for _, e := range evs {
			out = append(out, e.f[field].(string))
		}
		return featurestore.StringListValue(out)
	case registry.TypeInt64List:
		out := []int64{}
		for _, e := range evs {
			out = append(out, e.f[field].(int64))
		}
		return featurestore.Int64ListValue(out)
	case registry.TypeDoubleList:
		out := []float64{}
		for _, e := range evs {
			out = append(out, e.f[field].(float64))
		}
		return featurestore.DoubleListValue(out)
	}
	out := []bool{}
	for _, e := range evs {
		out = append(out, e.f[field].(bool))
	}
	return featurestore.BoolListValue(out)
}

// refPass evaluates a filter on raw fields: an absent or null field meets
// only ne and not_in; NaN is unordered; int constants compare with doubles
// exactly (through big.Float).
func refPass(conds []*registry.Condition, f map[string]any) bool {
	for _, c := range conds {
		x := f[c.Field]
		lits, isList := c.Value.Value().([]any)
		if !isList {
			lits = []any{c.Value.Value()}
		}
		neg := c.Op == registry.OpNe || c.Op == registry.OpNotIn
		if x == nil {
			if !neg {
				return false
			}
			continue
		}
		var ok bool
		switch c.Op {
		case registry.OpIn, registry.OpNotIn:
			found := false
			for _, l := range lits {
				r, ordered := refCompare(x, l)
				found = found || (ordered && r == 0)
			}
			ok = found != neg
		default:
			r, ordered := refCompare(x, lits[0])
			switch c.Op {
			case registry.OpEq:
				ok = ordered && r == 0
			case registry.OpNe:
				ok = !ordered || r != 0
			case registry.OpGt:
				ok = ordered && r > 0
			case registry.OpGe:
				ok = ordered && r >= 0
			case registry.OpLt:
				ok = ordered && r < 0
			case registry.OpLe:
				ok = ordered && r <= 0
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func refCompare(x, lit any) (int, bool) {
	switch x := x.(type) {
	case string:
		return strings.Compare(x, lit.(string)), true
	case bool:
		if x == lit.(bool) {
			return 0, true
		}
		return 1, true
	case int64:
		return cmp.Compare(x, lit.(int64)), true
	case float64:
		if math.IsNaN(x) {
			return 0, false
		}
		var l *big.Float
		switch lit := lit.(type) {
		case int64:
			l = new(big.Float).SetInt64(lit)
		case float64:
			l = big.NewFloat(lit)
		}
		return big.NewFloat(x).Cmp(l), true
	}
	panic("unexpected field value")
}
