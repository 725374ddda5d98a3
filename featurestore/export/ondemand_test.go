package export

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

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
			{[]arrow.Field{{Name: "price", Type: arrow.BinaryTypes.String}}, []any{"1"}, `column "price" (request field, double) has type utf8; want float32, float64, a signed integer type, or uint8 to uint32`},
			{[]arrow.Field{{Name: "price", Type: arrow.PrimitiveTypes.Uint64}}, []any{int64(1)}, `column "price" (request field, double) has type uint64; want float32, float64, a signed integer type, or uint8 to uint32`},
			{[]arrow.Field{{Name: "price", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.PrimitiveTypes.Float64}}},
				[]any{1.0}, `column "price" (request field, double) has type dictionary<values=float64, indices=int32, ordered=false>; want float32, float64, a signed integer type, or uint8 to uint32, not a dictionary (a categorical): cast it to its values' type`},
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
