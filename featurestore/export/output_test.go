package export

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// dictTable is an entity table whose label columns are dictionary encoded,
// each batch with a dictionary of its own, as pandas writes categoricals
// batch by batch. rows holds each row's values decoded: user_id, the
// timestamp, cat (string or nil), grade (int64 or nil), note.
type dictTable struct {
	batches [][][]any
}

var (
	catType   = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}
	gradeType = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.PrimitiveTypes.Int64}
	dictTS    = &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
)

func dictSchema() *arrow.Schema {
	return arrow.NewSchema([]arrow.Field{
		{Name: "user_id", Type: arrow.BinaryTypes.String},
		{Name: DefaultTimestampColumn, Type: dictTS},
		{Name: "cat", Type: catType, Nullable: true},
		{Name: "grade", Type: gradeType, Nullable: true},
		{Name: "note", Type: arrow.BinaryTypes.String},
	}, nil)
}

// randomDictTable draws batches of rows whose dictionaries hold a random
// subset of values in a random order, with a null among them sometimes,
// and values not used by any row.
func randomDictTable(rng *rand.Rand, nBatches, rowsPerBatch, nCats int, noteLen int) *dictTable {
	dt := &dictTable{}
	for range nBatches {
		var batch [][]any
		for range rowsPerBatch {
			var cat, grade any
			if rng.IntN(6) > 0 {
				cat = fmt.Sprintf("c%d", rng.IntN(nCats))
			}
			if rng.IntN(6) > 0 {
				grade = rng.Int64N(9) - 3
			}
			batch = append(batch, []any{users[rng.IntN(len(users))], t0 + rng.Int64N(20*60_000), cat, grade,
				strings.Repeat("n", noteLen)})
		}
		dt.batches = append(dt.batches, batch)
	}
	return dt
}

// record builds one batch: each dictionary column's dictionary holds the
// batch's values, shuffled, some unused values and, sometimes, a null entry
// that null rows point at.
func (dt *dictTable) record(t testing.TB, rng *rand.Rand, rows [][]any) arrow.RecordBatch {
	t.Helper()
	mem := memory.DefaultAllocator
	schema := dictSchema()
	cols := make([]arrow.Array, 0, schema.NumFields())
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	for _, f := range []int{0, 1, 4} {
		b := array.NewBuilder(mem, schema.Field(f).Type)
		for _, row := range rows {
			appendAny(t, b, row[f])
		}
		cols = append(cols, b.NewArray())
		b.Release()
	}
	for _, c := range []int{2, 3} {
		typ := schema.Field(c).Type.(*arrow.DictionaryType)
		var values []any
		seen := map[any]bool{}
		for _, row := range rows {
			if v := row[c]; v != nil && !seen[v] {
				seen[v] = true
				values = append(values, v)
			}
		}
		for i := range rng.IntN(3) { // unused values
			var v any = fmt.Sprintf("unused%d", i)
			if c == 3 {
				v = int64(100 + i)
			}
			if !seen[v] {
				seen[v] = true
				values = append(values, v)
			}
		}
		rng.Shuffle(len(values), func(i, j int) { values[i], values[j] = values[j], values[i] })
		nullAt := -1
		if rng.IntN(2) == 0 {
			nullAt = rng.IntN(len(values) + 1)
			values = append(values[:nullAt], append([]any{nil}, values[nullAt:]...)...)
		}
		at := map[any]int{}
		db := array.NewBuilder(mem, typ.ValueType)
		for i, v := range values {
			appendAny(t, db, v)
			if v != nil {
				at[v] = i
			}
		}
		dict := db.NewArray()
		db.Release()
		ib := array.NewBuilder(mem, typ.IndexType)
		for _, row := range rows {
			i, null := -1, row[c] == nil
			if null && nullAt >= 0 && rng.IntN(2) == 0 {
				i = nullAt // a null value rather than a null index
			} else if !null {
				i = at[row[c]]
			}
			switch ib := ib.(type) {
			case *array.Int32Builder:
				if i < 0 {
					ib.AppendNull()
				} else {
					ib.Append(int32(i))
				}
			case *array.Int8Builder:
				if i < 0 {
					ib.AppendNull()
				} else {
					ib.Append(int8(i))
				}
			}
		}
		idx := ib.NewArray()
		ib.Release()
		cols = append(cols, array.NewDictionaryArray(typ, idx, dict))
		idx.Release()
		dict.Release()
	}
	cols[2], cols[3], cols[4] = cols[3], cols[4], cols[2] // schema order
	return array.NewRecordBatch(schema, cols, int64(len(rows)))
}

// writeStream writes the table as an Arrow IPC stream, which replaces a
// column's dictionary when the next batch has another.
func (dt *dictTable) writeStream(t testing.TB, rng *rand.Rand, path string) {
	t.Helper()
	var b bytes.Buffer
	w := ipc.NewWriter(&b, ipc.WithSchema(dictSchema()))
	for _, rows := range dt.batches {
		rec := dt.record(t, rng, rows)
		err := w.Write(rec)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// decoded returns the value at row i of a column read back, decoding a
// dictionary by hand, so that the check does not depend on the encoding.
func decoded(t testing.TB, tbl arrow.Table, name string, i int64) any {
	t.Helper()
	is := tbl.Schema().FieldIndices(name)
	if len(is) != 1 {
		t.Fatalf("output has no column %q", name)
	}
	for _, ch := range tbl.Column(is[0]).Data().Chunks() {
		if i >= int64(ch.Len()) {
			i -= int64(ch.Len())
			continue
		}
		if d, ok := ch.(*array.Dictionary); ok {
			if d.IsNull(int(i)) {
				return nil
			}
			return goValue(d.Dictionary(), d.GetValueIndex(int(i)))
		}
		return goValue(ch, int(i))
	}
	t.Fatalf("row %d out of range", i)
	return nil
}

// TestDictionaryLabelsCarried exports an entity table whose dictionary
// encoded labels change their dictionary from batch to batch, to Arrow and
// Parquet, with the table's batches kept in memory and read again, and
// checks every value read back against the rows written.
func TestDictionaryLabelsCarried(t *testing.T) {
	r := testRegistry(t)
	l := &memLog{batches: map[string][]arrow.RecordBatch{
		"by_user": {logBatch(t, r, "p", "by_user", []rawEvent{
			{time: t0, offset: 1, keys: map[string]any{"user_id": "u0"}, fields: map[string]any{"cat": "a"}},
		})},
	}}
	cases := []struct {
		name    string
		memory  int64
		noteLen int
	}{
		{name: "kept", memory: 0, noteLen: 1},
		// Batches of 1000 rows of 300 bytes do not fit in a quarter of
		// the least budget: the table is read again to write the output.
		{name: "read again", memory: MinMemory, noteLen: 300},
	}
	for _, tc := range cases {
		for seed := range uint64(4) {
			rng := rand.New(rand.NewPCG(seed, 17))
			dt := randomDictTable(rng, 2+rng.IntN(4), 1000, 60, tc.noteLen)
			dir := t.TempDir()
			in := filepath.Join(dir, "rows.arrows")
			dt.writeStream(t, rng, in)
			for _, out := range []string{"out.arrow", "out.arrows", "out.parquet"} {
				t.Run(fmt.Sprintf("%s/%d/%s", tc.name, seed, out), func(t *testing.T) {
					outPath := filepath.Join(dir, out)
					if _, err := Run(context.Background(), Options{Registry: r, Log: l, Features: []string{"by_user:n_5m"},
						Entities: in, Out: outPath, TempDir: dir, Memory: tc.memory}); err != nil {
						t.Fatal(err)
					}
					tbl := readTable(t, outPath)
					defer tbl.Release()
					// Parquet keeps the values; its reader gives dictionaries
					// back for strings only.
					for _, name := range []string{"cat", "grade"} {
						if out == "out.parquet" {
							continue
						}
						f, _ := tbl.Schema().FieldsByName(name)
						if !arrow.TypeEqual(f[0].Type, dictSchema().Field(dictSchema().FieldIndices(name)[0]).Type) {
							t.Errorf("column %s has type %s, want the input's", name, f[0].Type)
						}
					}
					row := int64(0)
					for _, batch := range dt.batches {
						for _, want := range batch {
							for j, name := range []string{"user_id", DefaultTimestampColumn, "cat", "grade", "note"} {
								if got := decoded(t, tbl, name, row); got != want[j] {
									t.Fatalf("row %d %s = %v, want %v", row, name, got, want[j])
								}
							}
							row++
						}
					}
					if tbl.NumRows() != row {
						t.Fatalf("output has %d rows, want %d", tbl.NumRows(), row)
					}
				})
			}
		}
	}
}

// TestDictionaryIndexOverflow checks that dictionaries whose values
// together need more indices than the column's index type holds fail the
// Arrow output before the log is read, naming the column.
func TestDictionaryIndexOverflow(t *testing.T) {
	r := testRegistry(t)
	rng := rand.New(rand.NewPCG(5, 5))
	dt := &dictTable{}
	for b := range 3 {
		var rows [][]any
		for i := range 100 {
			rows = append(rows, []any{"u0", int64(t0), "c", int64(b*100 + i), "n"}) // 300 grades for int8 indices
		}
		dt.batches = append(dt.batches, rows)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.arrows")
	dt.writeStream(t, rng, in)
	var scanned bool
	_, err := Run(context.Background(), Options{Registry: r, Log: scanLog(func() { scanned = true }), Features: []string{"by_user:n_5m"},
		Entities: in, Out: filepath.Join(dir, "out.arrow"), TempDir: dir})
	if err == nil || !strings.Contains(err.Error(), `column "grade"`) || !strings.Contains(err.Error(), "int8") {
		t.Fatalf("export with 300 grades in int8 indices: error %v, want one naming column grade and its int8 indices", err)
	}
	if scanned {
		t.Errorf("the log was read before the error %v", err)
	}
	// Parquet decodes dictionaries, whatever their index type.
	if _, err := Run(context.Background(), Options{Registry: r, Log: scanLog(func() {}), Features: []string{"by_user:n_5m"},
		Entities: in, Out: filepath.Join(dir, "out.parquet"), TempDir: dir}); err != nil {
		t.Fatal(err)
	}
}

// scanLog is a Log without events that calls fn when scanned.
type scanLog func()

func (l scanLog) Scan(context.Context, string, int64, func(arrow.RecordBatch) error) error {
	l()
	return nil
}

// TestParquetUnsupportedTypes checks that a label column Parquet cannot
// hold fails a Parquet export at once, before the log is read, with an
// error naming the column and its type; Arrow output takes it unchanged.
func TestParquetUnsupportedTypes(t *testing.T) {
	r := testRegistry(t)
	cases := []struct {
		name string
		typ  arrow.DataType
		want string
	}{
		{name: "dur", typ: arrow.FixedWidthTypes.Duration_ms, want: `column "dur" has type duration[ms]`},
		{name: "mdn", typ: arrow.FixedWidthTypes.MonthDayNanoInterval, want: `column "mdn" has type month_day_nano_interval`},
		{name: "dt", typ: arrow.FixedWidthTypes.DayTimeInterval, want: `column "dt" has type day_time_interval`},
		{name: "nested", typ: arrow.ListOf(arrow.FixedWidthTypes.Duration_s), want: `column "nested" has type list<item: duration[s], nullable>`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			in := filepath.Join(dir, "rows.arrow")
			schema := arrow.NewSchema([]arrow.Field{
				{Name: "user_id", Type: arrow.BinaryTypes.String},
				{Name: DefaultTimestampColumn, Type: dictTS},
				{Name: tc.name, Type: tc.typ, Nullable: true},
			}, nil)
			b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
			b.Field(0).(*array.StringBuilder).Append("u0")
			b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(t0))
			b.Field(2).AppendEmptyValue()
			rec := b.NewRecordBatch()
			b.Release()
			var buf bytes.Buffer
			w, err := ipc.NewFileWriter(&buf, ipc.WithSchema(schema))
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(rec); err != nil {
				t.Fatal(err)
			}
			rec.Release()
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(in, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			var scanned bool
			out := filepath.Join(dir, "out.parquet")
			_, err = Run(context.Background(), Options{Registry: r, Log: scanLog(func() { scanned = true }), Features: []string{"by_user:n_5m"},
				Entities: in, Out: out, TempDir: dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Arrow") {
				t.Fatalf("parquet export: error %v, want one with %q suggesting Arrow output", err, tc.want)
			}
			if scanned {
				t.Errorf("the log was read before the error %v", err)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("output file left behind: %v", err)
			}
			// The same through an explicit format, and Arrow takes it.
			if _, err := Run(context.Background(), Options{Registry: r, Log: scanLog(func() {}), Features: []string{"by_user:n_5m"},
				Entities: in, Out: filepath.Join(dir, "out.bin"), OutFormat: FormatParquet, TempDir: dir}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parquet export by format: error %v, want one with %q", err, tc.want)
			}
			if _, err := Run(context.Background(), Options{Registry: r, Log: scanLog(func() {}), Features: []string{"by_user:n_5m"},
				Entities: in, Out: filepath.Join(dir, "out.arrow"), TempDir: dir}); err != nil {
				t.Errorf("arrow export: %v", err)
			}
		})
	}
}
