package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/export"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// TestTableDecoderTypes decodes columns of the other types a file may
// have: dictionary-encoded text, a timestamp in microseconds, a double
// field from an int32 column, large strings, and text events times.
func TestTableDecoderTypes(t *testing.T) {
	_, src, l := loadSource(t, fmt.Sprintf(e2eDefs, "txns"))
	mem := memory.DefaultAllocator
	dictType := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}
	for _, tsType := range []arrow.DataType{&arrow.TimestampType{Unit: arrow.Microsecond}, arrow.BinaryTypes.String} {
		schema := arrow.NewSchema([]arrow.Field{
			{Name: "card", Type: dictType, Nullable: true},
			{Name: "ts", Type: tsType, Nullable: true},
			{Name: "amount", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
			{Name: "merchant", Type: arrow.BinaryTypes.LargeString, Nullable: true},
		}, nil)
		b := array.NewRecordBuilder(mem, schema)
		db := b.Field(0).(*array.BinaryDictionaryBuilder)
		for _, c := range []string{"c1", "c2", "c1"} {
			if err := db.AppendString(c); err != nil {
				t.Fatal(err)
			}
		}
		for i, us := range []int64{1_700_000_000_123_456, -1_500, 0} {
			switch tb := b.Field(1).(type) {
			case *array.TimestampBuilder:
				tb.Append(arrow.Timestamp(us))
			case *array.StringBuilder:
				tb.Append([]string{fmt.Sprint(us / 1000), "-1", "zero"}[i])
			}
		}
		b.Field(2).(*array.Int32Builder).AppendValues([]int32{7, -2, 0}, nil)
		b.Field(3).(*array.LargeStringBuilder).AppendValues([]string{"m1", "m2", "m3"}, nil)
		rec := b.NewRecordBatch()
		b.Release()
		d, err := newTableDecoder("f", schema, src, l)
		if err != nil {
			t.Fatalf("%s: %v", tsType, err)
		}
		d.bind(rec)
		want := []string{`1700000000123 ["c1"] [7 "m1"]`, `-2 ["c2"] [-2 "m2"]`, `0 ["c1"] [0 "m3"]`}
		if tsType.ID() == arrow.STRING {
			// Text in the source's encoding, epoch_ms: rounded as a JSON
			// number would be; "zero" is rejected.
			want = []string{`1700000000123 ["c1"] [7 "m1"]`, `-1 ["c2"] [-2 "m2"]`, `bad_time: column "ts": invalid number zero`}
		}
		for i, w := range want {
			var ev Event
			got := ""
			if de := d.decode(i, &ev); de != nil {
				got = de.Error()
			} else {
				got = fmt.Sprintf("%d %v %v", ev.Time, ev.Keys, ev.Fields)
				if k := ev.Fields[l.FieldIndex("amount")].Kind(); k != featurestore.KindDouble {
					t.Errorf("row %d: amount of kind %s, want double", i, k)
				}
			}
			if got != w {
				t.Errorf("%s row %d: got %s, want %s", tsType, i, got, w)
			}
		}
		rec.Release()
	}
}

// TestTableDecoderInvalidUTF8: a string key or field that is not valid
// UTF-8 rejects its row (invalid_payload, naming the column), as the JSON
// decoder does: stored online, it would fail every lookup of its entity.
func TestTableDecoderInvalidUTF8(t *testing.T) {
	_, src, l := loadSource(t, fmt.Sprintf(e2eDefs, "txns"))
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "card", Type: arrow.BinaryTypes.String}, {Name: "ts", Type: arrow.PrimitiveTypes.Int64},
		{Name: "amount", Type: arrow.PrimitiveTypes.Float64}, {Name: "merchant", Type: arrow.BinaryTypes.String},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).AppendValues([]string{"c1", "c\xff", "c1"}, nil)
	b.Field(1).(*array.Int64Builder).AppendValues([]int64{1, 2, 3}, nil)
	b.Field(2).(*array.Float64Builder).AppendValues([]float64{1, 2, 3}, nil)
	b.Field(3).(*array.StringBuilder).AppendValues([]string{"café", "m", "caf\xe9"}, nil)
	rec := b.NewRecordBatch()
	defer rec.Release()
	d, err := newTableDecoder("f", schema, src, l)
	if err != nil {
		t.Fatal(err)
	}
	d.bind(rec)
	for i, want := range []string{
		"",
		`invalid_payload: join key "card_id", column "card": the string is not valid UTF-8`,
		`invalid_payload: field "merchant", column "merchant": the string is not valid UTF-8`,
	} {
		var ev Event
		got := ""
		if de := d.decode(i, &ev); de != nil {
			got = de.Error()
		}
		if got != want {
			t.Errorf("row %d: %q, want %q", i, got, want)
		}
	}
}

// TestTableDecoderEventIDs: the source's event id column gives each row its
// id, a string as it is and an integer in decimal (as a JSON number's
// text); a null is no id; a file without the column has no ids; a column of
// another type fails the file, naming it.
func TestTableDecoderEventIDs(t *testing.T) {
	_, src, l := loadSource(t, dedupDefs)
	mem := memory.DefaultAllocator
	for _, c := range []struct {
		typ  arrow.DataType
		fill func(array.Builder)
		want []string // "" for no id
	}{
		{arrow.BinaryTypes.String, func(b array.Builder) {
			// An empty string is no id, as in the stream's decoders.
			b.(*array.StringBuilder).AppendValues([]string{"007", "", ""}, []bool{true, true, false})
		}, []string{"007", "", ""}},
		{arrow.BinaryTypes.LargeString, func(b array.Builder) {
			b.(*array.LargeStringBuilder).AppendValues([]string{"a b", "x", ""}, []bool{true, true, false})
		}, []string{"a b", "x", ""}},
		{arrow.PrimitiveTypes.Int64, func(b array.Builder) {
			b.(*array.Int64Builder).AppendValues([]int64{7, -12, 0}, []bool{true, true, false})
		}, []string{"7", "-12", ""}},
		{arrow.PrimitiveTypes.Uint64, func(b array.Builder) {
			b.(*array.Uint64Builder).AppendValues([]uint64{1 << 63, 1, 0}, []bool{true, true, false})
		}, []string{"9223372036854775808", "1", ""}},
		{nil, nil, []string{"", "", ""}},
	} {
		fields := []arrow.Field{
			{Name: "card", Type: arrow.BinaryTypes.String}, {Name: "ts", Type: arrow.PrimitiveTypes.Int64}, {Name: "amount", Type: arrow.PrimitiveTypes.Float64},
		}
		if c.typ != nil {
			fields = append(fields, arrow.Field{Name: "id", Type: c.typ, Nullable: true})
		}
		schema := arrow.NewSchema(fields, nil)
		b := array.NewRecordBuilder(mem, schema)
		b.Field(0).(*array.StringBuilder).AppendValues([]string{"c1", "c1", "c1"}, nil)
		b.Field(1).(*array.Int64Builder).AppendValues([]int64{1, 2, 3}, nil)
		b.Field(2).(*array.Float64Builder).AppendValues([]float64{1, 2, 3}, nil)
		if c.fill != nil {
			c.fill(b.Field(3))
		}
		rec := b.NewRecordBatch()
		b.Release()
		d, err := newTableDecoder("f", schema, src, l)
		if err != nil {
			t.Fatalf("%v: %v", c.typ, err)
		}
		d.bind(rec)
		for i, want := range c.want {
			var ev Event
			if de := d.decode(i, &ev); de != nil {
				t.Fatalf("%v row %d: %v", c.typ, i, de)
			}
			if ev.HasID != (want != "") || ev.ID != want {
				t.Errorf("%v row %d: id %q (%v), want %q", c.typ, i, ev.ID, ev.HasID, want)
			}
		}
		rec.Release()
	}
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "card", Type: arrow.BinaryTypes.String}, {Name: "ts", Type: arrow.PrimitiveTypes.Int64}, {Name: "amount", Type: arrow.PrimitiveTypes.Float64},
		{Name: "id", Type: arrow.PrimitiveTypes.Float64},
	}, nil)
	if _, err := newTableDecoder("f", schema, src, l); err == nil || err.Error() != `f: column "id" (event id of source "txns") has type float64, which cannot hold an event id (a string or an integer)` {
		t.Errorf("a float64 id column: %v", err)
	}
}

// TestTableFileViews backfills from an Arrow IPC file as polars writes it:
// text as string_view, a categorical as a dictionary of string_view. The
// table file reads them as large_string (export.OpenTableFile), which the
// decoder takes like any text; the values and nulls are those written.
func TestTableFileViews(t *testing.T) {
	_, src, l := loadSource(t, fmt.Sprintf(e2eDefs, "txns"))
	mem := memory.DefaultAllocator
	view := arrow.BinaryTypes.StringView
	catType := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Uint32, ValueType: view}
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "card", Type: view, Nullable: true},
		{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}, Nullable: true},
		{Name: "amount", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "merchant", Type: catType, Nullable: true},
	}, nil)
	cb := array.NewStringViewBuilder(mem)
	cb.AppendValues([]string{"c1", "a card id longer than twelve bytes", ""}, []bool{true, true, false})
	tb := array.NewTimestampBuilder(mem, schema.Field(1).Type.(*arrow.TimestampType))
	tb.AppendValues([]arrow.Timestamp{1_700_000_000_123_456, 2_000, 3_000}, nil)
	ab := array.NewFloat64Builder(mem)
	ab.AppendValues([]float64{1.5, 2, 3}, nil)
	vb := array.NewStringViewBuilder(mem)
	vb.AppendValues([]string{"m1", "m2"}, nil)
	ib := array.NewUint32Builder(mem)
	ib.AppendValues([]uint32{1, 0, 0}, []bool{true, true, false})
	dictValues, indices := vb.NewArray(), ib.NewArray()
	cols := []arrow.Array{cb.NewArray(), tb.NewArray(), ab.NewArray(), array.NewDictionaryArray(catType, indices, dictValues)}
	rec := array.NewRecordBatch(schema, cols, 3)
	path := filepath.Join(t.TempDir(), "polars.arrow")
	testenv.WriteArrowFile(t, path, schema, rec)
	rec.Release()
	for _, a := range append(cols, dictValues, indices) {
		a.Release()
	}
	for _, b := range []array.Builder{cb, tb, ab, vb, ib} {
		b.Release()
	}

	got := decodeTableFile(t, path, src, l)
	want := []string{`1700000000123 ["c1"] [1.5 "m2"]`, `2 ["a card id longer than twelve bytes"] [2 "m1"]`, `3 [null] [3 null]`}
	if !slices.Equal(got, want) {
		t.Errorf("rows:\n got  %q\n want %q", got, want)
	}
}

// TestTableDecoderTypeErrors: a column of a type that cannot hold its
// declared kind fails the file, naming file, column and type, and says
// what to do for the types the tools write by surprise: DuckDB's HUGEINT
// (DOUBLE in Parquet) for an int64, a date for the event time.
func TestTableDecoderTypeErrors(t *testing.T) {
	_, src, l := loadSource(t, `
kind: Entity
name: shop
join_keys: [{name: shop_id, type: int64}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts}
keys: {shop_id: shop}
fields: {qty: int64}
allowed_lateness: 0s
---
kind: FeatureView
name: by_shop
entity: shop
source: txns
tile: 1m
features:
  - {name: qty_sum_1h, aggregation: sum, field: qty, window: 1h}
`)
	ts := arrow.FixedWidthTypes.Timestamp_us
	for _, c := range []struct {
		shop, ts, qty arrow.DataType
		want          string
	}{
		{arrow.PrimitiveTypes.Float64, ts, arrow.PrimitiveTypes.Int64,
			`f.parquet: column "shop" (join key shop_id of source "txns") has type float64, which cannot hold int64 (DuckDB writes HUGEINT columns to Parquet as DOUBLE: cast them to BIGINT)`},
		{arrow.PrimitiveTypes.Int64, ts, arrow.PrimitiveTypes.Float64,
			`f.parquet: column "qty" (field of source "txns") has type float64, which cannot hold int64 (DuckDB writes HUGEINT columns to Parquet as DOUBLE: cast them to BIGINT)`},
		{arrow.PrimitiveTypes.Int64, arrow.FixedWidthTypes.Date32, arrow.PrimitiveTypes.Int64,
			`f.parquet: column "ts" (event time of source "txns") has type date32, which cannot hold event time (rfc3339): a date is a day, not an instant; cast it to a timestamp`},
		{arrow.PrimitiveTypes.Int64, ts, arrow.FixedWidthTypes.Boolean,
			`f.parquet: column "qty" (field of source "txns") has type bool, which cannot hold int64`},
	} {
		schema := arrow.NewSchema([]arrow.Field{{Name: "shop", Type: c.shop}, {Name: "ts", Type: c.ts}, {Name: "qty", Type: c.qty}}, nil)
		if _, err := newTableDecoder("f.parquet", schema, src, l); err == nil || err.Error() != c.want {
			t.Errorf("error:\n got  %v\n want %s", err, c.want)
		}
	}
}

// TestPythonBackfillFiles decodes event files written by polars (Arrow IPC
// with string_view text and a categorical, Parquet), DuckDB (Parquet) and
// pyarrow (Spark's INT96 timestamps), as testdata/events.py writes them,
// through the table file and the decoder backfill uses: every row must be
// the event written, nulls included.
func TestPythonBackfillFiles(t *testing.T) {
	py := testenv.Python(t)
	_, src, l := loadSource(t, fmt.Sprintf(e2eDefs, "txns"))
	type event struct {
		Card     any   `json:"card"`
		TS       int64 `json:"ts"`
		Amount   any   `json:"amount"`
		Merchant any   `json:"merchant"`
	}
	var events []event
	var want []string
	for i := range 300 {
		e := event{Card: fmt.Sprintf("c%d", i%7), TS: 1_795_687_200_000 + int64(i)*1_237 - 150_000, Amount: float64(i) / 4, Merchant: fmt.Sprintf("m%d", i%5)}
		if i%11 == 0 {
			e.Card = nil
		}
		if i%13 == 0 {
			e.Amount = nil
		}
		if i%17 == 0 {
			e.Merchant = nil
		}
		events = append(events, e)
		str := func(v any) string {
			if v == nil {
				return "null"
			}
			if s, ok := v.(string); ok {
				return fmt.Sprintf("%q", s)
			}
			return fmt.Sprint(v)
		}
		want = append(want, fmt.Sprintf("%d [%s] [%s %s]", e.TS, str(e.Card), str(e.Amount), str(e.Merchant)))
	}
	dir := t.TempDir()
	b, err := json.Marshal(events)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "events.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	files := filepath.Join(dir, "files")
	if err := os.Mkdir(files, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, filepath.Join("testdata", "events.py"), filepath.Join(dir, "events.json"), files).CombinedOutput()
	if err != nil {
		t.Fatalf("events.py: %v\n%s", err, out)
	}
	t.Logf("events.py: %s", strings.TrimSpace(string(out)))
	for _, name := range []string{"polars.arrow", "polars_cat.arrow", "polars.parquet", "duckdb.parquet", "int96.parquet"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(files, name)
			got := decodeTableFile(t, path, src, l)
			if len(got) != len(want) {
				t.Fatalf("%d rows, want %d", len(got), len(want))
			}
			bad := 0
			for i := range want {
				if got[i] != want[i] {
					if bad++; bad <= 5 {
						t.Errorf("row %d: %s, want %s", i+1, got[i], want[i])
					}
				}
			}
		})
	}
}

// decodeTableFile decodes every row of a table file as backfill does, each
// as "time keys fields" or the rejection's message.
func decodeTableFile(t *testing.T, path string, src *registry.Source, l Layout) []string {
	t.Helper()
	tf, err := export.OpenTableFile(path, export.FormatAuto, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newTableDecoder(path, tf.Schema(), src, l)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	err = tf.Read(context.Background(), func(rec arrow.RecordBatch) error {
		d.bind(rec)
		for i := range int(rec.NumRows()) {
			var ev Event
			if de := d.decode(i, &ev); de != nil {
				got = append(got, de.Error())
			} else {
				got = append(got, fmt.Sprintf("%d %v %v", ev.Time, ev.Keys, ev.Fields))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
