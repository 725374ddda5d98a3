package export

import (
	"cmp"
	"fmt"
	"math"
	"math/big"
	"slices"

	"github.com/featurestore/featurestore/registry"
)

// This file is the brute-force reference the export is checked against:
// each feature computed directly from the raw events of a key and the
// registry's definition, with exact arithmetic (math/big), sorting and sets,
// sharing no code with the window engine. It gives the value the output
// must hold: nil where the online lookup gives no value.

// refFeature computes feature f of view v at time t from the events of one
// key (in any order).
func refFeature(v *registry.FeatureView, f *registry.Feature, evs []rawEvent, t int64) any {
	g := v.Tile.Std().Milliseconds()
	if g == 0 {
		g = 60_000
	}
	ttl := v.TTL.Std().Milliseconds()
	from := int64(math.MinInt64)
	if !f.IsLastValue() && !f.Window.Lifetime {
		n := f.Window.Length.Std().Milliseconds() / g
		k := t / g
		if t%g < 0 {
			k--
		}
		from = (k - n + 1) * g
	}
	var sel []rawEvent
	for _, e := range evs {
		if e.time > t || e.time < from || !refFilter(f.Filter, e.fields) {
			continue
		}
		if !f.IsLastValue() && f.Aggregation != registry.AggCount && e.fields[f.Field] == nil {
			continue
		}
		sel = append(sel, e)
	}
	// Newest first, by (event time, partition, offset).
	if !slices.IsSortedFunc(sel, newestFirst) {
		slices.SortFunc(sel, newestFirst)
	}
	vals := func() []any {
		out := make([]any, len(sel))
		for i, e := range sel {
			out[i] = e.fields[f.Field]
		}
		return out
	}
	switch f.Aggregation {
	case registry.AggNone:
		if len(sel) == 0 || (ttl > 0 && t-sel[0].time > ttl) {
			return nil
		}
		return sel[0].fields[f.Field]
	case registry.AggCount:
		return int64(len(sel))
	case registry.AggSum:
		if len(sel) == 0 {
			if isIntField(v, f) {
				return int64(0)
			}
			return 0.0
		}
		r := ratSum(vals())
		if isIntField(v, f) {
			return r.Num().Int64()
		}
		x, _ := r.Float64()
		return x
	case registry.AggMean:
		if len(sel) == 0 {
			return nil
		}
		r := ratSum(vals())
		r.Quo(r, new(big.Rat).SetInt64(int64(len(sel))))
		x, _ := r.Float64()
		return x
	case registry.AggStddev:
		if len(sel) == 0 {
			return nil
		}
		// Σ(x-μ)²/n = (nΣx² - (Σx)²)/n², in integers scaled by 2^-1074.
		n := big.NewInt(int64(len(sel)))
		s1, s2 := new(big.Int), new(big.Int)
		for _, x := range vals() {
			xi := scaled(x)
			s1.Add(s1, xi)
			s2.Add(s2, xi.Mul(xi, xi))
		}
		num := new(big.Int).Sub(new(big.Int).Mul(n, s2), new(big.Int).Mul(s1, s1))
		if num.Sign() == 0 {
			return 0.0
		}
		den := new(big.Int).Mul(n, n)
		den.Mul(den, new(big.Int).Mul(unit, unit))
		bf := new(big.Float).SetPrec(3000).SetInt(num)
		bf.Quo(bf, new(big.Float).SetPrec(3000).SetInt(den))
		x, _ := bf.Sqrt(bf).Float64()
		return x
	case registry.AggMin, registry.AggMax:
		if len(sel) == 0 {
			return nil
		}
		best := vals()[0]
		for _, x := range vals() {
			c := rat(x).Cmp(rat(best))
			if (f.Aggregation == registry.AggMin && c < 0) || (f.Aggregation == registry.AggMax && c > 0) {
				best = x
			}
		}
		return best
	case registry.AggLast:
		if len(sel) == 0 {
			return nil
		}
		return sel[0].fields[f.Field]
	case registry.AggLastN:
		return append([]any{}, vals()[:min(len(sel), f.N)]...)
	case registry.AggCountDistinct:
		set := map[string]bool{}
		for _, x := range vals() {
			set[fmt.Sprintf("%T:%v", x, x)] = true
		}
		return int64(len(set))
	}
	panic("unknown aggregation " + f.Aggregation)
}

func isIntField(_ *registry.FeatureView, f *registry.Feature) bool {
	return f.ValueType() == registry.TypeInt64
}

func rat(x any) *big.Rat {
	switch x := x.(type) {
	case int64:
		return new(big.Rat).SetInt64(x)
	case float64:
		return new(big.Rat).SetFloat64(x)
	}
	panic(fmt.Sprintf("not a number: %T", x))
}

// newestFirst orders events by descending order key.
func newestFirst(a, b rawEvent) int {
	if c := cmp.Compare(b.time, a.time); c != 0 {
		return c
	}
	if c := cmp.Compare(b.partition, a.partition); c != 0 {
		return c
	}
	return cmp.Compare(b.offset, a.offset)
}

// unit is 2^1074: every finite double times unit is an integer.
var unit = new(big.Int).Lsh(big.NewInt(1), 1074)

// scaled returns x times unit, exactly, for an int64 or a finite float64.
func scaled(x any) *big.Int {
	switch x := x.(type) {
	case int64:
		return new(big.Int).Mul(big.NewInt(x), unit)
	case float64:
		f := new(big.Float).SetFloat64(x)
		f.SetMantExp(f, 1074)
		i, _ := f.Int(nil)
		return i
	}
	panic(fmt.Sprintf("not a number: %T", x))
}

// ratSum returns the exact sum of int64 or float64 values, summed as
// integers in units of 2^-1074, which needs no common divisors.
func ratSum(xs []any) *big.Rat {
	sum := new(big.Int)
	for _, x := range xs {
		sum.Add(sum, scaled(x))
	}
	return new(big.Rat).SetFrac(sum, unit)
}

// refFilter supports what the test definitions use: eq and ne on strings
// and bools, ge and lt on numbers. An absent field meets only ne.
func refFilter(conds []*registry.Condition, fields map[string]any) bool {
	for _, c := range conds {
		x := fields[c.Field]
		lit := c.Value.Value()
		switch c.Op {
		case registry.OpEq:
			if x == nil || x != lit {
				return false
			}
		case registry.OpNe:
			if x != nil && x == lit {
				return false
			}
		case registry.OpGe, registry.OpLt:
			if x == nil {
				return false
			}
			r := rat(x).Cmp(rat(lit))
			if (c.Op == registry.OpGe && r < 0) || (c.Op == registry.OpLt && r >= 0) {
				return false
			}
		default:
			panic("reference: filter op " + c.Op)
		}
	}
	return true
}
