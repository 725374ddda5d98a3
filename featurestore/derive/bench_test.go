package derive

import (
	"testing"

	"github.com/featurestore/featurestore/featurestore"
)

// BenchmarkEval measures one run of expressions like those of
// examples/on_demand.yaml, and of string and list ones.
func BenchmarkEval(b *testing.B) {
	vals := []featurestore.Value{
		featurestore.DoubleValue(150),
		featurestore.DoubleValue(60),
		featurestore.Int64Value(7),
		featurestore.StringValue("FR"),
		featurestore.BoolValue(false),
		featurestore.DoubleListValue([]float64{1, 2, 3.5, 80, 12, 7, 150, 3, 9, 10}),
	}
	for _, c := range []struct {
		name, src string
		out       featurestore.Kind
	}{
		{"ratio", "amount / mean_1d", featurestore.KindDouble},
		{"burst", "n_1h >= 10 && amount >= 500", featurestore.KindBool},
		{"in", "country in ['FR', 'DE'] ? 'eu' : 'other'", featurestore.KindString},
		{"string", "lower(country) + '-' + string(n_1h)", featurestore.KindString},
		{"count", "count(last_amounts, # > mean_1d)", featurestore.KindInt64},
		{"mean", "sum(last_amounts) / len(last_amounts)", featurestore.KindDouble},
	} {
		e, err := Compile(c.src, testVars, c.out)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var ev Evaluator
			for b.Loop() {
				if _, err := ev.Eval(e, vals); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
