package export

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

const onDemandDefs = `
---
kind: OnDemandFeatureView
name: risk
inputs:
  s10: by_user:amount_sum_10m
  m10: by_user:amount_mean_10m
  last_amount: user_last:amount
  cat: by_user:cat
  shop_n: by_shop:n_2m
request_fields: {price: double, tag: string}
features:
  - {name: share, type: double, expression: "price / (s10 + price)"}
  - {name: over_mean, type: double, expression: "price / m10"}
  - {name: same_cat, type: bool, expression: "tag == cat"}
  - {name: jump, type: double, expression: "price - last_amount"}
  - {name: busy, type: int64, expression: "shop_n * 10 + len(tag)"}
---
kind: OnDemandFeatureView
name: risk_online
inputs: {n: not_offline:n}
features:
  - {name: twice, type: int64, expression: "n * 2"}
---
kind: OnDemandFeatureView
name: shop_flag
inputs: {n: by_shop:n_2m}
request_fields: {urgent: bool}
features:
  - {name: flagged, type: int64, expression: "urgent ? n : 0"}
`

// TestExportOnDemand exports on-demand features, whose inputs are not
// requested, and compares each row with the expressions worked out in Go
// from the brute-force reference's values of the inputs at that row and
// the row's request columns (price, some of them null, as double or as
// int64; tag), in memory and with a budget so small that the stored
// columns go through spill and results files.
func TestExportOnDemand(t *testing.T) {
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(testDefs + onDemandDefs)})
	if err != nil {
		t.Fatal(err)
	}
	inputs := []registry.FeatureRef{{View: "by_user", Feature: "amount_sum_10m"}, {View: "by_user", Feature: "amount_mean_10m"},
		{View: "user_last", Feature: "amount"}, {View: "by_user", Feature: "cat"}, {View: "by_shop", Feature: "n_2m"}}
	for k, c := range []struct {
		name         string
		asInt        bool
		events, rows int
		memory       int64
		tagType      arrow.DataType // utf8 unless set
	}{
		{"double price", false, 2000, 1500, 0, nil},
		{"int64 price", true, 2000, 1500, 0, nil},
		// As polars writes text to Arrow IPC; read as large_string.
		{"string_view tag", false, 500, 300, 0, arrow.BinaryTypes.StringView},
		// Too many rows for the index of results in memory: the stored
		// columns come back through the results files and the merge. The
		// on-demand columns are computed in ranges of 97 rows (of batches
		// of 400), concatenated.
		{"tiny budget, many rows", false, 1000, 17000, 1 << 20, nil},
	} {
		if c.memory > 0 {
			defer func(n int) { odChunkRows = n }(odChunkRows)
			odChunkRows = 97
		}
		rng := rand.New(rand.NewPCG(5, uint64(k)))
		s := randomScenario(rng, c.events, c.rows)
		in := s.expected(r, inputs)
		asInt, tagType := c.asInt, c.tagType
		if tagType == nil {
			tagType = arrow.BinaryTypes.String
		}
		t.Run(c.name, func(t *testing.T) {
			ts := &scenario{events: s.events, rows: make([][]any, len(s.rows))}
			priceType := arrow.DataType(arrow.PrimitiveTypes.Float64)
			if asInt {
				priceType = arrow.PrimitiveTypes.Int64
			}
			ts.fields = append([]arrow.Field{{Name: "price", Type: priceType, Nullable: true}, {Name: "tag", Type: tagType, Nullable: true}}, s.fields...)
			prices := make([]any, len(s.rows))
			for i, row := range s.rows {
				var price, tag any
				if rng.IntN(10) > 0 {
					if asInt {
						price = int64(rng.IntN(200))
					} else {
						price = float64(rng.IntN(20000)) / 100
					}
				}
				if rng.IntN(10) > 0 {
					tag = []string{"a", "b", "c", ""}[rng.IntN(4)]
				}
				prices[i] = price
				ts.rows[i] = append([]any{price, tag}, row...)
			}
			refs := []registry.FeatureRef{{View: "risk", Feature: "share"}, {View: "by_user", Feature: "n_5m"},
				{View: "risk", Feature: "over_mean"}, {View: "risk", Feature: "same_cat"}, {View: "risk", Feature: "jump"}, {View: "risk", Feature: "busy"}}
			stored := s.expected(r, refs[1:2])
			want := make([][]any, len(ts.rows))
			for i := range ts.rows {
				var price float64
				hasPrice := prices[i] != nil
				switch p := prices[i].(type) {
				case float64:
					price = p
				case int64:
					price = float64(p)
				}
				tag, hasTag := ts.rows[i][1].(string)
				sum, mean, last, cat, shopN := in[i][0], in[i][1], in[i][2], in[i][3], in[i][4]
				row := []any{nil, stored[i][0], nil, nil, nil, nil}
				if hasPrice {
					// 0/0 where both are 0: a NaN, math.NaN()'s bits
					// whatever the CPU's division gives (derive).
					if share := price / (sum.(float64) + price); share == share {
						row[0] = share
					} else {
						row[0] = math.NaN()
					}
					if mean != nil {
						row[2] = price / mean.(float64)
					}
					if last != nil {
						row[4] = price - last.(float64)
					}
				}
				if hasTag && cat != nil {
					row[3] = tag == cat.(string)
				}
				if hasTag {
					row[5] = shopN.(int64)*10 + int64(len(tag))
				}
				want[i] = row
			}
			dir := t.TempDir()
			path := filepath.Join(dir, "rows.arrow")
			(&testTable{fields: ts.fields, rows: ts.rows}).writeArrow(t, path, 400)
			out := filepath.Join(dir, "out.arrow")
			strs := make([]string, len(refs))
			for i, ref := range refs {
				strs[i] = ref.String()
			}
			opts := Options{Registry: r, Log: s.log(t, rng, r), Features: strs, Entities: path, Out: out, TempDir: dir, Parallelism: 2, Memory: c.memory}
			// What a server authorizes: the views read, then the on-demand ones.
			if views, err := Check(opts, nil); err != nil || !slices.Equal(views, []string{"by_user", "user_last", "by_shop", "risk"}) {
				t.Errorf("Check: %q, %v", views, err)
			}
			st, err := Run(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if c.memory > 0 && st.Spilled == 0 {
				t.Errorf("a budget of %d bytes spilled nothing", c.memory)
			}
			checkOutput(t, out, ts, refs, want)
		})
	}

	// An empty batch (here the only one) still gets its on-demand columns.
	t.Run("empty entity table", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 9))
		s := randomScenario(rng, 50, 0)
		ts := &scenario{fields: append([]arrow.Field{{Name: "price", Type: arrow.PrimitiveTypes.Float64, Nullable: true}}, s.fields...)}
		dir := t.TempDir()
		path := filepath.Join(dir, "rows.arrow")
		(&testTable{fields: ts.fields}).writeArrow(t, path, 400)
		out := filepath.Join(dir, "out.arrow")
		refs := []registry.FeatureRef{{View: "risk", Feature: "share"}, {View: "by_user", Feature: "n_5m"}}
		if _, err := Run(context.Background(), Options{Registry: r, Log: s.log(t, rng, r), Features: []string{"risk:share", "by_user:n_5m"}, Entities: path, Out: out, TempDir: dir, Parallelism: 2}); err != nil {
			t.Fatal(err)
		}
		checkOutput(t, out, ts, refs, nil)
	})

	t.Run("input not kept offline", func(t *testing.T) {
		_, err := Check(Options{Registry: r, Features: []string{"risk_online:twice"}}, nil)
		if want := `on-demand feature "risk_online:twice" reads "not_offline:n", whose feature view is not kept offline`; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error with %q", err, want)
		}
	})

	t.Run("entity table errors", func(t *testing.T) {
		s0 := randomScenario(rand.New(rand.NewPCG(1, 2)), 10, 1)
		dir := t.TempDir()
		for _, c := range []struct {
			fields []arrow.Field
			row    []any
			want   string
		}{
			{nil, nil, `no column "price" for the request field of on-demand features`},
			{[]arrow.Field{{Name: "price", Type: arrow.BinaryTypes.String}}, []any{"1"}, `column "price" (request field, double) has type utf8; want float32, float64 or an integer type`},
			{[]arrow.Field{{Name: "price", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.PrimitiveTypes.Float64}}},
				[]any{1.0}, `column "price" (request field, double) has type dictionary<values=float64, indices=int32, ordered=false>; want float32, float64 or an integer type, not a dictionary (a categorical): cast it to its values' type`},
		} {
			tt := &testTable{fields: append(slices.Clone(c.fields), s0.fields...)}
			tt.rows = [][]any{append(slices.Clone(c.row), s0.rows[0]...)}
			path := filepath.Join(dir, "rows.arrow")
			tt.writeArrow(t, path, 10)
			_, err := Run(context.Background(), Options{Registry: r, Log: &memLog{}, Features: []string{"risk:share"}, Entities: path, Out: filepath.Join(dir, "out.arrow"), TempDir: dir})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error with %q", err, c.want)
			}
		}
	})
}

// requestTypeDefs is an on-demand view with a request field of each kind
// whose column types vary by tool: an int64, a string and a double one.
const requestTypeDefs = `
---
kind: OnDemandFeatureView
name: basket
inputs: {n: by_shop:n_2m}
request_fields: {qty_in: int64, cat_in: string, w_in: double}
features:
  - {name: qty_out, type: int64, expression: "qty_in + n"}
  - {name: cat_out, type: string, expression: "cat_in"}
  - {name: w_out, type: double, expression: "w_in"}
`

// TestRequestFieldTypes reads request fields in the column types tools
// write besides the plain ones: pandas and polars categoricals
// (dictionaries of utf8, large_utf8 or, from polars' Arrow IPC,
// string_view) and string_view for a string field, uint64 (pandas,
// DuckDB's UBIGINT) for an int64 or a double one. Each on-demand feature
// must have the field's value at each row, null where the cell is, and
// the column must reach the output with its values, from Arrow and Parquet
// inputs to both outputs. A uint64 beyond int64 in an int64 field fails
// the export before the log is read, naming the row and the column; in a
// double field it is a double.
func TestRequestFieldTypes(t *testing.T) {
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(testDefs + onDemandDefs + requestTypeDefs)})
	if err != nil {
		t.Fatal(err)
	}
	l := &memLog{batches: map[string][]arrow.RecordBatch{
		"by_shop": {logBatch(t, r, "p", "by_shop", []rawEvent{{time: t0, offset: 1, keys: map[string]any{"shop_id": int64(4)}}})},
	}}
	features := []string{"basket:qty_out", "basket:cat_out", "basket:w_out"}
	dict := func(index, value arrow.DataType) arrow.DataType {
		return &arrow.DictionaryType{IndexType: index, ValueType: value}
	}
	i8, i32, u32 := arrow.PrimitiveTypes.Int8, arrow.PrimitiveTypes.Int32, arrow.PrimitiveTypes.Uint32
	str, large, view, u64 := arrow.BinaryTypes.String, arrow.BinaryTypes.LargeString, arrow.BinaryTypes.StringView, arrow.PrimitiveTypes.Uint64
	// Each case gives one field's column a type and values; the other
	// fields are plain and the same at every row. Shop 4 has one event
	// before every row, so n is 1.
	catIn := []any{"x", nil, "y", "x", ""}
	catWant := []any{"x", nil, "y", "x", ""}
	cases := []struct {
		field   string
		typ     arrow.DataType
		parquet bool // whether the case is also written as Parquet
		in      []any
		want    []any // the feature's values
	}{
		{"cat_in", dict(i8, str), true, catIn, catWant},
		{"cat_in", dict(i32, large), true, catIn, catWant},
		{"cat_in", dict(u32, view), false, catIn, catWant},
		{"cat_in", view, false, catIn, catWant},
		{"qty_in", u64, true, []any{uint64(7), nil, uint64(math.MaxInt64 - 1), uint64(0), uint64(1 << 40)},
			[]any{int64(8), nil, int64(math.MaxInt64), int64(1), int64(1<<40 + 1)}},
		{"w_in", u64, true, []any{uint64(3), nil, uint64(math.MaxUint64), uint64(0), uint64(math.MaxInt64 + 1)},
			[]any{3.0, nil, float64(math.MaxUint64), 0.0, float64(math.MaxInt64 + 1)}},
	}
	feature := map[string]string{"qty_in": "basket:qty_out", "cat_in": "basket:cat_out", "w_in": "basket:w_out"}
	plain := map[string]any{"qty_in": int64(2), "cat_in": "c", "w_in": 1.5}
	plainWant := map[string]any{"qty_in": int64(3), "cat_in": "c", "w_in": 1.5}
	dir := t.TempDir()
	for k, c := range cases {
		fields := []arrow.Field{{Name: "shop_id", Type: arrow.PrimitiveTypes.Int64}, {Name: "event_timestamp", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}}}
		types := map[string]arrow.DataType{"qty_in": arrow.PrimitiveTypes.Int64, "cat_in": str, "w_in": arrow.PrimitiveTypes.Float64, c.field: c.typ}
		for _, name := range []string{"qty_in", "cat_in", "w_in"} {
			fields = append(fields, arrow.Field{Name: name, Type: types[name], Nullable: true})
		}
		var rows [][]any
		for _, v := range c.in {
			row := []any{int64(4), int64(t0 + 10)}
			for _, name := range []string{"qty_in", "cat_in", "w_in"} {
				if name == c.field {
					row = append(row, v)
				} else {
					row = append(row, plain[name])
				}
			}
			rows = append(rows, row)
		}
		tt := &testTable{fields: fields, rows: rows}
		inputs := []string{filepath.Join(dir, fmt.Sprintf("rows%d.arrow", k))}
		tt.writeArrow(t, inputs[0], 2)
		if c.parquet {
			inputs = append(inputs, strings.TrimSuffix(inputs[0], ".arrow")+".parquet")
			tt.writeParquet(t, inputs[1])
		}
		for _, in := range inputs {
			for _, outExt := range []string{".arrow", ".parquet"} {
				t.Run(c.field+" "+c.typ.String()+" "+filepath.Ext(in)+"->"+outExt, func(t *testing.T) {
					out := filepath.Join(dir, "out"+outExt)
					tbl := exportTable(t, Options{Registry: r, Log: l, Features: features, Entities: in, Out: out, TempDir: dir})
					defer tbl.Release()
					for i, v := range c.in {
						for name, f := range feature {
							want := plainWant[name]
							if name == c.field {
								want = c.want[i]
							}
							if got := cell(t, tbl, f, int64(i)); got != want {
								t.Errorf("row %d (%s = %v): %s = %#v, want %#v", i+1, c.field, v, f, got, want)
							}
						}
						w := "(null)"
						if v != nil {
							w = fmt.Sprint(v)
						}
						if got := cellText(t, tbl, c.field, int64(i)); got != w {
							t.Errorf("row %d: column %q holds %q in the output, want %q", i+1, c.field, got, w)
						}
					}
				})
			}
		}
	}

	// pyarrow's dictionary_encode(null_encoding="encode") puts the null in
	// the dictionary: a row whose index points to it is null.
	t.Run("null among a dictionary's values", func(t *testing.T) {
		mem := memory.DefaultAllocator
		vb := array.NewStringBuilder(mem)
		defer vb.Release()
		vb.AppendValues([]string{"x", ""}, []bool{true, false})
		ib := array.NewInt8Builder(mem)
		defer ib.Release()
		ib.AppendValues([]int8{0, 1, 0}, nil)
		values, indices := vb.NewArray(), ib.NewArray()
		defer values.Release()
		defer indices.Release()
		dt := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}
		cats := array.NewDictionaryArray(dt, indices, values)
		defer cats.Release()
		tt := &testTable{fields: []arrow.Field{{Name: "shop_id", Type: arrow.PrimitiveTypes.Int64}, {Name: "event_timestamp", Type: arrow.PrimitiveTypes.Int64}},
			rows: [][]any{{int64(4), int64(t0 + 10)}, {int64(4), int64(t0 + 10)}, {int64(4), int64(t0 + 10)}}}
		rec := tt.record(t)
		defer rec.Release()
		schema := arrow.NewSchema(append(rec.Schema().Fields(), arrow.Field{Name: "cat_in", Type: dt, Nullable: true}), nil)
		full := array.NewRecordBatch(schema, append(rec.Columns(), cats), 3)
		defer full.Release()
		in := filepath.Join(dir, "null_value.arrow")
		testenv.WriteArrowFile(t, in, schema, full)
		for _, out := range []string{"out.arrow", "out.parquet"} {
			tbl := exportTable(t, Options{Registry: r, Log: l, Features: []string{"basket:cat_out"}, Entities: in, Out: filepath.Join(dir, out), TempDir: dir})
			for i, want := range []any{"x", nil, "x"} {
				if got := cell(t, tbl, "basket:cat_out", int64(i)); got != want {
					t.Errorf("%s: row %d: basket:cat_out = %#v, want %#v", out, i+1, got, want)
				}
			}
			tbl.Release()
		}
	})

	t.Run("uint64 beyond int64", func(t *testing.T) {
		fields := []arrow.Field{{Name: "shop_id", Type: arrow.PrimitiveTypes.Int64}, {Name: "event_timestamp", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
			{Name: "qty_in", Type: u64, Nullable: true}}
		rows := [][]any{{int64(4), int64(t0), uint64(7)}, {int64(4), int64(t0), nil}, {int64(4), int64(t0), uint64(math.MaxInt64 + 1)}}
		for _, ext := range []string{".arrow", ".parquet"} {
			in := filepath.Join(dir, "beyond"+ext)
			tt := &testTable{fields: fields, rows: rows}
			if ext == ".arrow" {
				tt.writeArrow(t, in, 2) // row 3 is the first of the second batch
			} else {
				tt.writeParquet(t, in)
			}
			var scanned bool
			_, err := Run(context.Background(), Options{Registry: r, Log: scanLog(func() { scanned = true }), Features: []string{"basket:qty_out"},
				Entities: in, Out: filepath.Join(dir, "out.arrow"), TempDir: dir})
			want := in + `: row 3: column "qty_in" (request field, int64) holds 9223372036854775808, beyond the int64 range`
			if err == nil || err.Error() != want {
				t.Errorf("%s:\n got  %v\n want %s", ext, err, want)
			}
			if scanned {
				t.Errorf("%s: the log was read before the error", ext)
			}
		}
	})

	t.Run("refused types", func(t *testing.T) {
		for _, c := range []struct {
			field string
			typ   arrow.DataType
			v     any
			want  string
		}{
			{"cat_in", dict(i32, arrow.PrimitiveTypes.Int64), int64(1),
				`column "cat_in" (request field, string) has type dictionary<values=int64, indices=int32, ordered=false>; want utf8, large_utf8, string_view or a dictionary of them`},
			{"qty_in", arrow.BinaryTypes.String, "1", `column "qty_in" (request field, int64) has type utf8; want an integer type`},
			{"qty_in", dict(i32, arrow.PrimitiveTypes.Int64), int64(1),
				`column "qty_in" (request field, int64) has type dictionary<values=int64, indices=int32, ordered=false>; want an integer type, not a dictionary (a categorical): cast it to its values' type`},
			{"w_in", arrow.FixedWidthTypes.Boolean, true, `column "w_in" (request field, double) has type bool; want float32, float64 or an integer type`},
		} {
			in := filepath.Join(dir, "refused.arrow")
			(&testTable{fields: []arrow.Field{{Name: "shop_id", Type: arrow.PrimitiveTypes.Int64}, {Name: "event_timestamp", Type: arrow.PrimitiveTypes.Int64},
				{Name: c.field, Type: c.typ, Nullable: true}}, rows: [][]any{{int64(4), int64(t0), c.v}}}).writeArrow(t, in, 10)
			_, err := Run(context.Background(), Options{Registry: r, Log: &memLog{}, Features: []string{feature[c.field]}, Entities: in, Out: filepath.Join(dir, "out.arrow"), TempDir: dir})
			if want := in + ": " + c.want; err == nil || err.Error() != want {
				t.Errorf("%s %s:\n got  %v\n want %s", c.field, c.typ, err, want)
			}
		}
	})
}

// twoKindsDefs are on-demand views that declare request field amt as a
// double and as an int64, and one that declares it as a string.
const twoKindsDefs = `
---
kind: OnDemandFeatureView
name: amt_double
inputs: {n: by_shop:n_2m}
request_fields: {amt: double}
features:
  - {name: half, type: double, expression: "amt / 2"}
---
kind: OnDemandFeatureView
name: amt_int
inputs: {n: by_shop:n_2m}
request_fields: {amt: int64}
features:
  - {name: plus, type: int64, expression: "amt + n"}
---
kind: OnDemandFeatureView
name: amt_string
inputs: {n: by_shop:n_2m}
request_fields: {amt: string}
features:
  - {name: length, type: int64, expression: "len(amt)"}
`

// TestRequestFieldOfTwoKinds: views that declare one request field as a
// double and as an int64 each get the column's value in their own kind,
// whichever is requested first, from an integer column (as a lookup
// converts an int64 for each view); a float64 column is refused for the
// int64 view, and kinds no column holds (string and double) fail the plan
// naming both features. Before, the last view's kind was the column's
// alone, and the other view got nulls.
func TestRequestFieldOfTwoKinds(t *testing.T) {
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(testDefs + twoKindsDefs)})
	if err != nil {
		t.Fatal(err)
	}
	l := &memLog{batches: map[string][]arrow.RecordBatch{
		"by_shop": {logBatch(t, r, "p", "by_shop", []rawEvent{{time: t0, offset: 1, keys: map[string]any{"shop_id": int64(4)}}})},
	}}
	dir := t.TempDir()
	write := func(name string, typ arrow.DataType, vals ...any) string {
		fields := []arrow.Field{{Name: "shop_id", Type: arrow.PrimitiveTypes.Int64},
			{Name: "event_timestamp", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}}, {Name: "amt", Type: typ, Nullable: true}}
		var rows [][]any
		for _, v := range vals {
			rows = append(rows, []any{int64(4), int64(t0 + 10), v})
		}
		path := filepath.Join(dir, name)
		(&testTable{fields: fields, rows: rows}).writeArrow(t, path, 2)
		return path
	}
	ints := write("ints.arrow", arrow.PrimitiveTypes.Int64, int64(7), nil, int64(-3))
	for _, features := range [][]string{{"amt_double:half", "amt_int:plus"}, {"amt_int:plus", "amt_double:half"}} {
		tbl := exportTable(t, Options{Registry: r, Log: l, Features: features, Entities: ints, Out: filepath.Join(dir, "out.arrow"), TempDir: dir})
		for i, want := range [][2]any{{3.5, int64(8)}, {nil, nil}, {-1.5, int64(-2)}} {
			if got := [2]any{cell(t, tbl, "amt_double:half", int64(i)), cell(t, tbl, "amt_int:plus", int64(i))}; got != want {
				t.Errorf("%v: row %d: half, plus = %v, want %v", features, i+1, got, want)
			}
		}
		tbl.Release()
	}
	doubles := write("doubles.arrow", arrow.PrimitiveTypes.Float64, 7.5)
	for _, features := range [][]string{{"amt_double:half", "amt_int:plus"}, {"amt_int:plus", "amt_double:half"}} {
		_, err = Run(context.Background(), Options{Registry: r, Log: l, Features: features, Entities: doubles, Out: filepath.Join(dir, "out.arrow"), TempDir: dir})
		if err == nil || !strings.Contains(err.Error(), `column "amt" (request field, int64) has type float64; want an integer type`) {
			t.Errorf("%v: a double column for an int64 and a double view: error %v, want one naming the column", features, err)
		}
	}
	_, err = Run(context.Background(), Options{Registry: r, Log: l, Features: []string{"amt_double:half", "amt_string:length"}, Entities: ints, Out: filepath.Join(dir, "out.arrow"), TempDir: dir})
	want := `on-demand features "amt_double:half" and "amt_string:length" take request field "amt" as double and as string: no entity table column holds both`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a string and a double view: error %v, want %q", err, want)
	}
}
