package export

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// memLog is a Log over record batches held in memory, built in the offline
// log's schema by logBatch.
type memLog struct {
	batches map[string][]arrow.RecordBatch
}

func (l *memLog) Scan(ctx context.Context, view string, _ int64, fn func(arrow.RecordBatch) error) error {
	for _, b := range l.batches[view] {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(b); err != nil {
			return err
		}
	}
	return nil
}

// sizedLog is a memLog that reports its sizes.
type sizedLog struct{ *memLog }

func (l sizedLog) Size(_ context.Context, view string) (int64, error) {
	var n int64
	for _, b := range l.batches[view] {
		for _, c := range b.Columns() {
			for _, buf := range c.Data().Buffers() {
				if buf != nil {
					n += int64(buf.Len())
				}
			}
		}
	}
	return n, nil
}

// rawEvent is one event as a test writes it: field values are string,
// int64, float64, bool, or nil (null or absent).
type rawEvent struct {
	time      int64
	partition int32
	offset    int64
	keys      map[string]any
	fields    map[string]any
}

// logBatch builds a record batch of the offline log's schema, version 1, of
// view v from events.
func logBatch(t testing.TB, r *registry.Registry, project, view string, evs []rawEvent) arrow.RecordBatch {
	t.Helper()
	v := r.View(view)
	src := r.Source(v.Source)
	ent := r.Entity(v.Entity)
	used := map[string]bool{}
	for _, f := range v.Features {
		if f.Field != "" {
			used[f.Field] = true
		}
		for _, c := range f.Filter {
			used[c.Field] = true
		}
	}
	ts := &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	fields := []arrow.Field{
		{Name: ColEventTime, Type: ts},
		{Name: ColIngestTime, Type: ts},
		{Name: ColTopic, Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: ColPartition, Type: arrow.PrimitiveTypes.Int32, Nullable: true},
		{Name: ColOffset, Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	}
	for _, k := range ent.JoinKeys {
		typ := arrow.DataType(arrow.BinaryTypes.String)
		if k.Type == registry.KeyInt64 {
			typ = arrow.PrimitiveTypes.Int64
		}
		fields = append(fields, arrow.Field{Name: k.Name, Type: typ, Nullable: true})
	}
	names := slices.Sorted(maps.Keys(used))
	for _, n := range names {
		var typ arrow.DataType
		switch src.Fields[n] {
		case registry.TypeString:
			typ = arrow.BinaryTypes.String
		case registry.TypeInt64:
			typ = arrow.PrimitiveTypes.Int64
		case registry.TypeDouble:
			typ = arrow.PrimitiveTypes.Float64
		case registry.TypeBool:
			typ = arrow.FixedWidthTypes.Boolean
		}
		fields = append(fields, arrow.Field{Name: n, Type: typ, Nullable: true})
	}
	md := arrow.NewMetadata([]string{MetaProject, MetaView, MetaSource, MetaLogVersion}, []string{project, view, src.Name, LogVersion})
	schema := arrow.NewSchema(fields, &md)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for _, e := range evs {
		b.Field(0).(*array.TimestampBuilder).Append(arrow.Timestamp(e.time))
		b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(e.time + 5))
		b.Field(2).(*array.StringBuilder).Append("topic")
		b.Field(3).(*array.Int32Builder).Append(e.partition)
		b.Field(4).(*array.Int64Builder).Append(e.offset)
		for j, k := range ent.JoinKeys {
			appendAny(t, b.Field(5+j), e.keys[k.Name])
		}
		for j, n := range names {
			appendAny(t, b.Field(5+len(ent.JoinKeys)+j), e.fields[n])
		}
	}
	return b.NewRecordBatch()
}

// appendAny appends v to b: a string to a text builder (plain, large or
// view), a []byte to a binary view builder, an int64 (or a uint64) to an integer builder, days or
// milliseconds to a date builder, a []any to a list builder (each element
// as appendAny appends it).
func appendAny(t testing.TB, b array.Builder, v any) {
	t.Helper()
	if v == nil {
		b.AppendNull()
		return
	}
	switch b := b.(type) {
	case *array.StringBuilder:
		b.Append(v.(string))
	case *array.LargeStringBuilder:
		b.Append(v.(string))
	case *array.StringViewBuilder:
		b.Append(v.(string))
	case *array.BinaryViewBuilder:
		b.Append(v.([]byte))
	case *array.Int64Builder:
		b.Append(v.(int64))
	case *array.Int32Builder:
		b.Append(int32(v.(int64)))
	case *array.Int16Builder:
		b.Append(int16(v.(int64)))
	case *array.Int8Builder:
		b.Append(int8(v.(int64)))
	case *array.Uint64Builder:
		if u, ok := v.(uint64); ok {
			b.Append(u)
		} else {
			b.Append(uint64(v.(int64)))
		}
	case *array.Uint32Builder:
		b.Append(uint32(v.(int64)))
	case *array.Uint16Builder:
		b.Append(uint16(v.(int64)))
	case *array.Uint8Builder:
		b.Append(uint8(v.(int64)))
	case *array.Date32Builder:
		b.Append(arrow.Date32(v.(int64)))
	case *array.Date64Builder:
		b.Append(arrow.Date64(v.(int64)))
	case *array.Float64Builder:
		b.Append(v.(float64))
	case *array.BooleanBuilder:
		b.Append(v.(bool))
	case *array.TimestampBuilder:
		b.Append(arrow.Timestamp(v.(int64)))
	case array.ListLikeBuilder:
		b.Append(true)
		for _, x := range v.([]any) {
			appendAny(t, b.ValueBuilder(), x)
		}
	default:
		t.Fatalf("append %T to %T", v, b)
	}
}

// table is an entity table as a test writes it.
type testTable struct {
	fields []arrow.Field
	rows   [][]any
}

func (tt *testTable) record(t testing.TB) arrow.RecordBatch {
	t.Helper()
	mem := memory.DefaultAllocator
	cols := make([]arrow.Array, len(tt.fields))
	for i, f := range tt.fields {
		dt, ok := f.Type.(*arrow.DictionaryType)
		if !ok {
			b := array.NewBuilder(mem, f.Type)
			for _, row := range tt.rows {
				appendAny(t, b, row[i])
			}
			cols[i] = b.NewArray()
			b.Release()
			continue
		}
		// By hand: arrow-go has no dictionary builder for every value
		// type (string_view).
		vb, ib := array.NewBuilder(mem, dt.ValueType), array.NewBuilder(mem, dt.IndexType)
		at := map[any]int64{}
		for _, row := range tt.rows {
			if row[i] == nil {
				ib.AppendNull()
				continue
			}
			j, ok := at[row[i]]
			if !ok {
				j = int64(vb.Len())
				at[row[i]] = j
				appendAny(t, vb, row[i])
			}
			appendAny(t, ib, j)
		}
		values, indices := vb.NewArray(), ib.NewArray()
		cols[i] = array.NewDictionaryArray(dt, indices, values)
		values.Release()
		indices.Release()
		vb.Release()
		ib.Release()
	}
	rec := array.NewRecordBatch(arrow.NewSchema(tt.fields, nil), cols, int64(len(tt.rows)))
	for _, c := range cols {
		c.Release()
	}
	return rec
}

// writeArrow writes the table as an Arrow IPC file, in batches of at most
// batch rows.
func (tt *testTable) writeArrow(t testing.TB, path string, batch int) {
	t.Helper()
	rec := tt.record(t)
	defer rec.Release()
	var slices []arrow.RecordBatch // one empty batch for an empty table
	for start := int64(0); start < rec.NumRows() || start == 0; start += int64(batch) {
		s := rec.NewSlice(start, min(start+int64(batch), rec.NumRows()))
		defer s.Release()
		slices = append(slices, s)
		if rec.NumRows() == 0 {
			break
		}
	}
	testenv.WriteArrowFile(t, path, rec.Schema(), slices...)
}

// writeParquet writes the table as a Parquet file, with the Arrow schema
// and the writer properties opts (parquet.WithMaxRowGroupLength for row
// groups of fewer rows).
func (tt *testTable) writeParquet(t testing.TB, path string, opts ...parquet.WriterProperty) {
	t.Helper()
	rec := tt.record(t)
	defer rec.Release()
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	w, err := pqarrow.NewFileWriter(rec.Schema(), fh, parquet.NewWriterProperties(opts...), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// readTable reads a whole Arrow IPC or Parquet file into one record.
func readTable(t testing.TB, path string) arrow.Table {
	t.Helper()
	if filepath.Ext(path) == ".parquet" {
		pf, err := file.OpenParquetFile(path, false)
		if err != nil {
			t.Fatal(err)
		}
		defer pf.Close()
		fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 1 << 20}, memory.DefaultAllocator)
		if err != nil {
			t.Fatal(err)
		}
		tbl, err := fr.ReadTable(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return tbl
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Ext(path) == ".arrows" {
		// The stream format: no file magic, read in order.
		if bytes.HasPrefix(data, []byte("ARROW1")) {
			t.Fatalf("%s is in the IPC file format, want the stream format", path)
		}
		r, err := ipc.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Release()
		var recs []arrow.RecordBatch
		for r.Next() {
			rec := r.RecordBatch()
			rec.Retain()
			recs = append(recs, rec)
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		return array.NewTableFromRecords(r.Schema(), recs)
	}
	r, err := ipc.NewFileReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var recs []arrow.RecordBatch
	for i := range r.NumRecords() {
		rec, err := r.RecordBatchAt(i)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	return array.NewTableFromRecords(r.Schema(), recs)
}

// cell returns the value at row i of column name as a Go value: nil for
// null, string, int64, float64, bool, or a slice for lists.
func cell(t testing.TB, tbl arrow.Table, name string, i int64) any {
	t.Helper()
	is := tbl.Schema().FieldIndices(name)
	if len(is) != 1 {
		t.Fatalf("output has no column %q", name)
	}
	col := tbl.Column(is[0])
	for _, ch := range col.Data().Chunks() {
		if i >= int64(ch.Len()) {
			i -= int64(ch.Len())
			continue
		}
		return goValue(ch, int(i))
	}
	t.Fatalf("row %d out of range", i)
	return nil
}

func goValue(a arrow.Array, i int) any {
	if a.IsNull(i) {
		return nil
	}
	switch a := a.(type) {
	case *array.String:
		return a.Value(i)
	case *array.LargeString:
		return a.Value(i)
	case *array.Int64:
		return a.Value(i)
	case *array.Float64:
		return a.Value(i)
	case *array.Boolean:
		return a.Value(i)
	case *array.Timestamp:
		return int64(a.Value(i))
	case *array.List:
		start, end := a.ValueOffsets(i)
		out := []any{}
		for j := start; j < end; j++ {
			out = append(out, goValue(a.ListValues(), int(j)))
		}
		return out
	}
	return fmt.Sprintf("<%s>", a.DataType())
}
