package export

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/schema"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestKeyColumnTypes reads join keys of every type the tools that write
// entity tables use: polars writes text as string_view in Arrow IPC and
// large_string in Parquet, pandas categoricals and polars' Categorical
// are dictionaries (of string_view from polars' IPC), and integers come in
// every width, signed or not. Each table has rows of two keys with events
// and one without; the features must be those computed by hand from the
// events, and the key column must reach the output with its values.
func TestKeyColumnTypes(t *testing.T) {
	r := testRegistry(t)
	l := &memLog{batches: map[string][]arrow.RecordBatch{
		"by_user": {logBatch(t, r, "p", "by_user", []rawEvent{
			{time: t0 + 1000, offset: 1, keys: map[string]any{"user_id": "u"}, fields: map[string]any{"qty": int64(5)}},
			{time: t0 + 2000, offset: 2, keys: map[string]any{"user_id": "v"}, fields: map[string]any{"qty": int64(7)}},
		})},
		"by_shop": {logBatch(t, r, "p", "by_shop", []rawEvent{
			{time: t0, offset: 1, keys: map[string]any{"shop_id": int64(4)}},
			{time: t0 + 10, offset: 2, keys: map[string]any{"shop_id": int64(4)}},
			{time: t0 + 20, offset: 3, keys: map[string]any{"shop_id": int64(100)}},
		})},
	}}
	dir := t.TempDir()
	ts := &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	dict := func(index, value arrow.DataType) arrow.DataType {
		return &arrow.DictionaryType{IndexType: index, ValueType: value}
	}
	u8, u32, i8, i32 := arrow.PrimitiveTypes.Uint8, arrow.PrimitiveTypes.Uint32, arrow.PrimitiveTypes.Int8, arrow.PrimitiveTypes.Int32
	str, large, view := arrow.BinaryTypes.String, arrow.BinaryTypes.LargeString, arrow.BinaryTypes.StringView
	// The rows: u at its event, v at its event, u a millisecond before
	// its event, w (no events) after all.
	userRows := [][]any{{"u", int64(t0 + 1000)}, {"v", int64(t0 + 2000)}, {"u", int64(t0 + 999)}, {"w", int64(t0 + 5000)}}
	userWant := []any{int64(5), int64(7), int64(0), int64(0)} // by_user:qty_life
	// Shop 4 has two events, 100 one, 5 none; all rows at t0+30.
	shopRows := [][]any{{int64(4), int64(t0 + 30)}, {int64(100), int64(t0 + 30)}, {int64(5), int64(t0 + 30)}}
	shopWant := []any{int64(2), int64(1), int64(0)} // by_shop:n_2m
	cases := []struct {
		typ     arrow.DataType
		parquet bool // whether the case is also written as Parquet
	}{
		{str, true}, {large, true}, {view, false},
		{dict(i32, str), true}, {dict(u32, str), true}, {dict(i8, large), true}, {dict(u32, view), false},
		{arrow.PrimitiveTypes.Int64, true}, {i32, true}, {arrow.PrimitiveTypes.Int16, true}, {i8, true},
		{arrow.PrimitiveTypes.Uint64, true}, {u32, true}, {arrow.PrimitiveTypes.Uint16, true}, {u8, true},
	}
	for _, c := range cases {
		key, rows, feature, want := "user_id", userRows, "by_user:qty_life", userWant
		if arrow.IsInteger(c.typ.ID()) {
			key, rows, feature, want = "shop_id", shopRows, "by_shop:n_2m", shopWant
		}
		tt := &testTable{fields: []arrow.Field{{Name: key, Type: c.typ}, {Name: "event_timestamp", Type: ts}}, rows: rows}
		inputs := []string{filepath.Join(dir, strings.NewReplacer("<", "_", ">", "_", ",", "_", "=", "_", " ", "").Replace(c.typ.String())+".arrow")}
		tt.writeArrow(t, inputs[0], 2)
		if c.parquet {
			inputs = append(inputs, strings.TrimSuffix(inputs[0], ".arrow")+".parquet")
			tt.writeParquet(t, inputs[1])
		}
		for _, in := range inputs {
			for _, outExt := range []string{".arrow", ".parquet"} {
				t.Run(filepath.Base(in)+"->"+outExt, func(t *testing.T) {
					out := filepath.Join(dir, "out"+outExt)
					tbl := exportTable(t, Options{Registry: r, Log: l, Features: []string{feature}, Entities: in, Out: out, TempDir: dir})
					defer tbl.Release()
					for i, row := range rows {
						if got := cell(t, tbl, feature, int64(i)); got != want[i] {
							t.Errorf("row %d (%v): %s = %v, want %v", i+1, row[0], feature, got, want[i])
						}
						if got, w := cellText(t, tbl, key, int64(i)), fmt.Sprint(row[0]); got != w {
							t.Errorf("row %d: key column %q holds %q in the output, want %q", i+1, key, got, w)
						}
					}
				})
			}
		}
	}
}

// cellText returns the value at row i of column name as text, whatever the
// column's type (a dictionary's value, not its index).
func cellText(t testing.TB, tbl arrow.Table, name string, i int64) string {
	t.Helper()
	for _, ch := range tbl.Column(tbl.Schema().FieldIndices(name)[0]).Data().Chunks() {
		if i < int64(ch.Len()) {
			return ch.ValueStr(int(i))
		}
		i -= int64(ch.Len())
	}
	t.Fatalf("row %d out of range", i)
	return ""
}

// TestViewColumns reads an entity table as polars writes Arrow IPC: every
// text column string_view, binary binary_view, categoricals dictionaries
// of string_view, lists of text lists (or large lists, or fixed-size
// lists, polars' Array) of string_view. Parquet cannot hold views and the
// export's readers do not take them, so such columns are read, and carried
// to the output, as large_string, large_binary, dictionaries of utf8 and
// lists of large_string, with the same values, nulls included, in both
// output formats.
func TestViewColumns(t *testing.T) {
	r := testRegistry(t)
	l := &memLog{batches: map[string][]arrow.RecordBatch{
		"by_user": {logBatch(t, r, "p", "by_user", []rawEvent{{time: t0, offset: 1, keys: map[string]any{"user_id": "u"}, fields: map[string]any{"qty": int64(3)}}})},
	}}
	dir := t.TempDir()
	view := arrow.BinaryTypes.StringView
	catView := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Uint32, ValueType: view}
	in := filepath.Join(dir, "polars.arrow")
	(&testTable{fields: []arrow.Field{
		{Name: "user_id", Type: view},
		{Name: "event_timestamp", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
		{Name: "note", Type: view, Nullable: true},
		{Name: "raw", Type: arrow.BinaryTypes.BinaryView, Nullable: true},
		{Name: "cat", Type: catView, Nullable: true},
		{Name: "tags", Type: arrow.ListOf(view), Nullable: true},
		{Name: "ltags", Type: arrow.LargeListOf(view), Nullable: true},
		{Name: "pair", Type: arrow.FixedSizeListOf(2, view), Nullable: true},
		{Name: "nested", Type: arrow.ListOf(arrow.LargeListOf(view)), Nullable: true},
	}, rows: [][]any{
		{"u", int64(t0 * 1000), "a note longer than twelve bytes", []byte{0, 1}, "x",
			[]any{"a", "a tag longer than twelve bytes"}, []any{"b", nil}, []any{"p", "q"}, []any{[]any{"n"}, []any{}}},
		{"u", int64(t0*1000 - 1), nil, nil, nil, nil, nil, nil, nil},
		{"v", int64(t0 * 1000), "", []byte{}, "y", []any{}, []any{""}, []any{nil, ""}, []any{nil, []any{"m", nil}}},
	}}).writeArrow(t, in, 2)
	large := arrow.BinaryTypes.LargeString
	wantTypes := map[string]arrow.DataType{
		"user_id": large, "note": large, "raw": arrow.BinaryTypes.LargeBinary,
		"cat":    &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Uint32, ValueType: arrow.BinaryTypes.String},
		"tags":   arrow.ListOf(large),
		"ltags":  arrow.LargeListOf(large),
		"pair":   arrow.FixedSizeListOf(2, large),
		"nested": arrow.ListOf(arrow.LargeListOf(large)),
	}
	want := map[string][]string{
		"user_id":          {"u", "u", "v"},
		"note":             {"a note longer than twelve bytes", "(null)", ""},
		"raw":              {"AAE=", "(null)", ""}, // base64, as ValueStr gives binary
		"cat":              {"x", "(null)", "y"},
		"tags":             {`["a","a tag longer than twelve bytes"]`, "(null)", "[]"},
		"ltags":            {`["b",null]`, "(null)", `[""]`},
		"pair":             {`["p","q"]`, "(null)", `[null,""]`},
		"nested":           {`[["n"],[]]`, "(null)", `[null,["m",null]]`},
		"by_user:qty_life": {"3", "0", "0"},
	}
	for _, out := range []string{"out.arrow", "out.parquet"} {
		t.Run(out, func(t *testing.T) {
			out := filepath.Join(dir, out)
			tbl := exportTable(t, Options{Registry: r, Log: l, Features: []string{"by_user:qty_life"}, Entities: in, Out: out, TempDir: dir})
			defer tbl.Release()
			pq := filepath.Ext(out) == ".parquet"
			for name, typ := range wantTypes {
				f, _ := tbl.Schema().FieldsByName(name)
				got := f[0].Type
				// arrow-go's Parquet reader reads the elements of a large
				// list back named "element".
				sameList := pq && strings.ReplaceAll(got.String(), "element:", "item:") == typ.String()
				if !arrow.TypeEqual(got, typ) && !sameList && !(pq && name == "cat" && got.ID() == arrow.DICTIONARY) {
					t.Errorf("column %s has type %s, want %s", name, got, typ)
				}
			}
			for name, vals := range want {
				for i, w := range vals {
					if got := cellText(t, tbl, name, int64(i)); got != w {
						t.Errorf("row %d: %s = %q, want %q", i+1, name, got, w)
					}
				}
			}
		})
	}
}

// TestUnviewSlicedLists: a slice of a list of string_view (a batch cut
// from a larger one) keeps its own rows when its elements lose their views.
func TestUnviewSlicedLists(t *testing.T) {
	view := arrow.BinaryTypes.StringView
	rows := [][]any{{[]any{"a"}, []any{"a", "b"}}, {nil, nil}, {[]any{"c", nil}, []any{nil, "d"}}, {[]any{}, []any{"e", "f"}}}
	rec := (&testTable{fields: []arrow.Field{{Name: "l", Type: arrow.LargeListOf(view), Nullable: true}, {Name: "f", Type: arrow.FixedSizeListOf(2, view), Nullable: true}}, rows: rows}).record(t)
	defer rec.Release()
	for c := range 2 {
		col := array.NewSlice(rec.Column(c), 1, 4)
		got := unviewArray(col, memory.DefaultAllocator)
		if got.Len() != col.Len() || got.NullN() != 1 {
			t.Errorf("column %d: %d rows, %d null, want %d and 1", c, got.Len(), got.NullN(), col.Len())
		}
		for i := range col.Len() {
			if g, w := got.ValueStr(i), col.ValueStr(i); g != w {
				t.Errorf("column %d row %d: %s, want %s", c, i, g, w)
			}
		}
		if want, _ := unviewType(col.DataType()); !arrow.TypeEqual(got.DataType(), want) {
			t.Errorf("column %d: type %s, want %s", c, got.DataType(), want)
		}
		col.Release()
		got.Release()
	}
}

// TestPlainUint64: plainArray reads a uint64 column as int64 from the same
// buffers, a slice of one too; a value beyond int64 is reported by its
// index in the slice, unless its slot is null (whatever it holds).
func TestPlainUint64(t *testing.T) {
	b := array.NewUint64Builder(memory.DefaultAllocator)
	defer b.Release()
	b.AppendValues([]uint64{math.MaxUint64, 1, math.MaxUint64, 5, math.MaxInt64 + 1}, []bool{true, true, false, true, true})
	a := b.NewUint64Array()
	defer a.Release()
	s := array.NewSlice(a, 1, 4)
	defer s.Release()
	got, beyond := plainArray(s, memory.DefaultAllocator)
	if beyond != -1 {
		t.Fatalf("beyond int64 at %d, want -1", beyond)
	}
	defer got.Release()
	if got.String() != "[1 (null) 5]" || got.DataType().ID() != arrow.INT64 {
		t.Errorf("got %s %s, want int64 [1 (null) 5]", got.DataType(), got)
	}
	s2 := array.NewSlice(a, 2, 5)
	defer s2.Release()
	if _, beyond := plainArray(s2, memory.DefaultAllocator); beyond != 2 {
		t.Errorf("beyond int64 at %d, want 2", beyond)
	}
}

// writeInt96Parquet writes a Parquet file as Spark does by default: a utf8
// user_id column and the event_timestamp column as INT96 (nanoseconds of
// the day, then the Julian day), without the Arrow schema pyarrow stores.
// days are days since the Unix epoch.
func writeInt96Parquet(t *testing.T, path string, users []string, days []int64, nanos []int64) {
	t.Helper()
	root := schema.MustGroup(schema.NewGroupNode("spark_schema", parquet.Repetitions.Required, schema.FieldList{
		schema.MustPrimitive(schema.NewPrimitiveNodeLogical("user_id", parquet.Repetitions.Required, schema.StringLogicalType{}, parquet.Types.ByteArray, -1, -1)),
		schema.NewInt96Node("event_timestamp", parquet.Repetitions.Required, -1),
	}, -1))
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	w := file.NewParquetWriter(fh, root)
	rg, err := w.AppendRowGroupChecked()
	if err != nil {
		t.Fatal(err)
	}
	cw, err := rg.NextColumn()
	if err != nil {
		t.Fatal(err)
	}
	var us []parquet.ByteArray
	for _, u := range users {
		us = append(us, parquet.ByteArray(u))
	}
	if _, err := cw.(*file.ByteArrayColumnChunkWriter).WriteBatch(us, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	if cw, err = rg.NextColumn(); err != nil {
		t.Fatal(err)
	}
	const julianUnixEpoch = 2_440_588
	ts := make([]parquet.Int96, len(days))
	for i := range days {
		binary.LittleEndian.PutUint64(ts[i][:8], uint64(nanos[i]))
		binary.LittleEndian.PutUint32(ts[i][8:], uint32(days[i]+julianUnixEpoch))
	}
	if _, err := cw.(*file.Int96ColumnChunkWriter).WriteBatch(ts, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestInt96Timestamps reads row times from a Spark-style INT96 column: a
// time within the nanosecond range of Arrow (the years 1677 to 2262) as
// any timestamp, rounded down to the millisecond; one outside it fails,
// naming the file and what to write instead.
func TestInt96Timestamps(t *testing.T) {
	r := testRegistry(t)
	const e = t0 + 1234
	l := &memLog{batches: map[string][]arrow.RecordBatch{
		"by_user": {logBatch(t, r, "p", "by_user", []rawEvent{{time: e, offset: 1, keys: map[string]any{"user_id": "u"}, fields: map[string]any{"qty": int64(5)}}})},
	}}
	dir := t.TempDir()
	day := int64(e / 86_400_000)
	nanos := (int64(e) - day*86_400_000) * 1_000_000
	in := filepath.Join(dir, "spark.parquet")
	// At the event plus 999,999ns: sees it; a nanosecond before: does not.
	writeInt96Parquet(t, in, []string{"u", "u"}, []int64{day, day}, []int64{nanos + 999_999, nanos - 1})
	out := filepath.Join(dir, "out.arrow")
	tbl := exportTable(t, Options{Registry: r, Log: l, Features: []string{"by_user:qty_life"}, Entities: in, Out: out, TempDir: dir})
	defer tbl.Release()
	for i, want := range []any{int64(5), int64(0)} {
		if got := cell(t, tbl, "by_user:qty_life", int64(i)); got != want {
			t.Errorf("row %d: qty_life %v, want %v", i+1, got, want)
		}
	}

	// 2300-01-01 is beyond the nanoseconds of an int64.
	far := filepath.Join(dir, "far.parquet")
	writeInt96Parquet(t, far, []string{"u", "u"}, []int64{day, 120_530}, []int64{0, 0})
	_, err := Run(context.Background(), Options{Registry: r, Log: l, Features: []string{"by_user:qty_life"}, Entities: far, Out: out, TempDir: dir})
	want := far + `: read parquet: parquet INT96 timestamp at index 1: invalid: INT96 timestamp is outside the Arrow nanosecond range; an INT96 column (Spark's default for timestamps) holds only the years 1677 to 2262 here: write the column as a Parquet TIMESTAMP (in Spark, spark.sql.parquet.outputTimestampType=TIMESTAMP_MICROS)`
	if err == nil || err.Error() != want {
		t.Errorf("an INT96 time in 2300:\n got  %v\n want %s", err, want)
	}
}

// TestParquetRowGroups reads an entity table of several row groups (as
// DuckDB and Spark write large files), and one of no rows: the features
// are those of each row, a bad row is counted across row groups, and an
// empty table gives an empty output.
func TestParquetRowGroups(t *testing.T) {
	r := testRegistry(t)
	l := &memLog{batches: map[string][]arrow.RecordBatch{
		"by_user": {logBatch(t, r, "p", "by_user", []rawEvent{
			{time: t0, offset: 1, keys: map[string]any{"user_id": "u"}, fields: map[string]any{"qty": int64(1)}},
			{time: t0 + 10, offset: 2, keys: map[string]any{"user_id": "u"}, fields: map[string]any{"qty": int64(2)}},
			{time: t0 + 20, offset: 3, keys: map[string]any{"user_id": "v"}, fields: map[string]any{"qty": int64(4)}},
		})},
	}}
	dir := t.TempDir()
	fields := []arrow.Field{{Name: "user_id", Type: arrow.BinaryTypes.String, Nullable: true}, {Name: "event_timestamp", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}}}
	write := func(name string, rows [][]any) string {
		path := filepath.Join(dir, name)
		(&testTable{fields: fields, rows: rows}).writeParquet(t, path, parquet.WithMaxRowGroupLength(2))
		return path
	}
	rows := [][]any{
		{"u", int64(t0*1000 - 1)}, {"u", int64(t0 * 1000)}, // row group 1: sees nothing, then 1
		{"u", int64((t0 + 10) * 1000)}, {"v", int64((t0 + 19) * 1000)}, // 2: 1+2, nothing
		{"v", int64((t0 + 20) * 1000)}, // 3: 4
	}
	want := []any{int64(0), int64(1), int64(3), int64(0), int64(4)}
	in := write("groups.parquet", rows)
	pf, err := file.OpenParquetFile(in, false)
	if err != nil {
		t.Fatal(err)
	}
	if n := pf.NumRowGroups(); n != 3 {
		t.Fatalf("%d row groups, want 3", n)
	}
	pf.Close()
	out := filepath.Join(dir, "out.parquet")
	tbl := exportTable(t, Options{Registry: r, Log: l, Features: []string{"by_user:qty_life"}, Entities: in, Out: out, TempDir: dir})
	if tbl.NumRows() != int64(len(want)) {
		t.Fatalf("%d rows out, want %d", tbl.NumRows(), len(want))
	}
	for i, w := range want {
		if got := cell(t, tbl, "by_user:qty_life", int64(i)); got != w {
			t.Errorf("row %d: qty_life %v, want %v", i+1, got, w)
		}
	}
	tbl.Release()

	rows[4][0] = nil
	bad := write("null.parquet", rows)
	_, err = Run(context.Background(), Options{Registry: r, Log: l, Features: []string{"by_user:qty_life"}, Entities: bad, Out: out, TempDir: dir})
	if want := bad + `: row 5: column "user_id" (join key "user_id" of entity "user") is null`; err == nil || err.Error() != want {
		t.Errorf("a null key in the third row group: %v, want %s", err, want)
	}

	empty := write("empty.parquet", nil)
	tbl = exportTable(t, Options{Registry: r, Log: l, Features: []string{"by_user:qty_life"}, Entities: empty, Out: out, TempDir: dir})
	defer tbl.Release()
	if tbl.NumRows() != 0 || tbl.NumCols() != 3 {
		t.Errorf("from an empty table: %d rows, %d columns, want 0 and 3", tbl.NumRows(), tbl.NumCols())
	}
}

// TestDictionaryNullValueKey: a dictionary whose dictionary holds a null
// (pyarrow's dictionary_encode(null_encoding="encode")) makes a row whose
// index points to it a null key, an error, not a key "".
func TestDictionaryNullValueKey(t *testing.T) {
	r := testRegistry(t)
	mem := memory.DefaultAllocator
	vb := array.NewStringBuilder(mem)
	defer vb.Release()
	vb.AppendValues([]string{"u", ""}, []bool{true, false})
	ib := array.NewInt8Builder(mem)
	defer ib.Release()
	ib.AppendValues([]int8{0, 0, 1}, nil)
	values, indices := vb.NewArray(), ib.NewArray()
	defer values.Release()
	defer indices.Release()
	dt := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}
	keys := array.NewDictionaryArray(dt, indices, values)
	defer keys.Release()
	tb := array.NewTimestampBuilder(mem, &arrow.TimestampType{Unit: arrow.Millisecond})
	defer tb.Release()
	tb.AppendValues([]arrow.Timestamp{t0, t0, t0}, nil)
	times := tb.NewArray()
	defer times.Release()
	schema := arrow.NewSchema([]arrow.Field{{Name: "user_id", Type: dt, Nullable: true}, {Name: "event_timestamp", Type: times.DataType()}}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{keys, times}, 3)
	defer rec.Release()
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.arrow")
	testenv.WriteArrowFile(t, in, schema, rec)
	_, err := Run(context.Background(), Options{Registry: r, Log: &memLog{}, Features: []string{"by_user:n_5m"}, Entities: in, Out: filepath.Join(dir, "out.arrow"), TempDir: dir})
	if want := in + `: row 3: column "user_id" (join key "user_id" of entity "user") is null`; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}

// TestViewDictionaryChanges: a categorical label as polars writes it to an
// Arrow IPC stream, a dictionary of string_view that changes from batch to
// batch, reaches an Arrow file output (one dictionary per column) with its
// values.
func TestViewDictionaryChanges(t *testing.T) {
	r := testRegistry(t)
	dir := t.TempDir()
	fields := []arrow.Field{
		{Name: "user_id", Type: arrow.BinaryTypes.String},
		{Name: "event_timestamp", Type: &arrow.TimestampType{Unit: arrow.Millisecond}},
		{Name: "cat", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Uint32, ValueType: arrow.BinaryTypes.StringView}, Nullable: true},
	}
	a := (&testTable{fields: fields, rows: [][]any{{"u", int64(t0), "x"}, {"u", int64(t0), "y"}}}).record(t)
	defer a.Release()
	b := (&testTable{fields: fields, rows: [][]any{{"v", int64(t0), "z"}, {"v", int64(t0), nil}, {"v", int64(t0), "x"}}}).record(t)
	defer b.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(a.Schema()))
	for _, rec := range []arrow.RecordBatch{a, b} {
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "polars.arrows")
	if err := os.WriteFile(in, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.arrow")
	tbl := exportTable(t, Options{Registry: r, Log: &memLog{}, Features: []string{"by_user:n_5m"}, Entities: in, Out: out, TempDir: dir})
	defer tbl.Release()
	for i, want := range []string{"x", "y", "z", "(null)", "x"} {
		if got := cellText(t, tbl, "cat", int64(i)); got != want {
			t.Errorf("row %d: cat = %q, want %q", i+1, got, want)
		}
	}
}

// exportTable runs an export and returns its output, read whole.
func exportTable(t *testing.T, opts Options) arrow.Table {
	t.Helper()
	if _, err := Run(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	return readTable(t, opts.Out)
}
