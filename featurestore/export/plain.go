package export

import (
	"fmt"
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore"
)

// This file turns columns of types that tools write but the export's
// readers do not take into types they do, once per batch, so that the
// per-row readers keep their few cases.

// withoutViews returns schema with its view columns as the types
// unviewArray makes of them, and whether there were any. polars writes
// every text column of an Arrow IPC file as string_view (and categoricals
// as dictionaries of string_view); neither the export's key reader nor the
// Parquet writer take it.
func withoutViews(schema *arrow.Schema) (*arrow.Schema, bool) {
	fields := schema.Fields()
	changed := false
	for i, f := range fields {
		if t, ok := unviewType(f.Type); ok {
			fields[i].Type, changed = t, true
		}
	}
	if !changed {
		return schema, false
	}
	md := schema.Metadata()
	return arrow.NewSchema(fields, &md), true
}

// unviewType returns the type of a view type's column without views:
// string_view as large_string, binary_view as large_binary (large, so that
// no batch is too big for its offsets); a dictionary of string_view as one
// of utf8, whose values the output's dictionary unifier can hash (see
// dictUnifier), and are few; a list (large, fixed-size) of any of these as
// the same list of its elements without views (polars writes lists of
// text as lists of string_view).
func unviewType(t arrow.DataType) (arrow.DataType, bool) {
	switch t.ID() {
	case arrow.STRING_VIEW:
		return arrow.BinaryTypes.LargeString, true
	case arrow.BINARY_VIEW:
		return arrow.BinaryTypes.LargeBinary, true
	case arrow.DICTIONARY:
		dt := t.(*arrow.DictionaryType)
		if dt.ValueType.ID() == arrow.STRING_VIEW {
			return &arrow.DictionaryType{IndexType: dt.IndexType, ValueType: arrow.BinaryTypes.String, Ordered: dt.Ordered}, true
		}
	case arrow.LIST, arrow.LARGE_LIST, arrow.FIXED_SIZE_LIST:
		elem := t.(arrow.ListLikeType).ElemField()
		et, ok := unviewType(elem.Type)
		if !ok {
			break
		}
		elem.Type = et
		switch t := t.(type) {
		case *arrow.ListType:
			return arrow.ListOfField(elem), true
		case *arrow.LargeListType:
			return arrow.LargeListOfField(elem), true
		case *arrow.FixedSizeListType:
			return arrow.FixedSizeListOfField(t.Len(), elem), true
		}
	}
	return t, false
}

// unviewArray returns a as an array of type unviewType(a's type), with the
// same values. The caller releases it.
func unviewArray(a arrow.Array, mem memory.Allocator) arrow.Array {
	switch a := a.(type) {
	case *array.StringView:
		return viewValues(a, array.NewLargeStringBuilder(mem), a.Value)
	case *array.BinaryView:
		return viewValues(a, array.NewBinaryBuilder(mem, arrow.BinaryTypes.LargeBinary), a.Value)
	case *array.Dictionary:
		if sv, ok := a.Dictionary().(*array.StringView); ok {
			t, _ := unviewType(a.DataType())
			values := viewValues(sv, array.NewStringBuilder(mem), sv.Value)
			defer values.Release()
			return array.NewDictionaryArray(t, a.Indices(), values)
		}
	case array.ListLike:
		// The same offsets and validity, over the elements without views.
		t, ok := unviewType(a.DataType())
		if !ok {
			break
		}
		values := unviewArray(a.ListValues(), mem)
		defer values.Release()
		d := a.Data()
		data := array.NewData(t, d.Len(), d.Buffers(), []arrow.ArrayData{values.Data()}, d.NullN(), d.Offset())
		defer data.Release()
		return array.MakeFromData(data)
	}
	a.Retain()
	return a
}

// viewValues copies the values of a view array a, got by value, into b.
func viewValues[T string | []byte, B interface {
	array.Builder
	Append(T)
}](a arrow.Array, b B, value func(int) T) arrow.Array {
	defer b.Release()
	b.Reserve(a.Len())
	for i := range a.Len() {
		if a.IsNull(i) {
			b.AppendNull()
		} else {
			b.Append(value(i))
		}
	}
	return b.NewArray()
}

// unviewReader reads the batches of a table with view columns (see
// withoutViews) in schema, their unviewed types.
type unviewReader struct {
	recordReader
	schema *arrow.Schema
	mem    memory.Allocator
	cur    arrow.RecordBatch
}

func (r *unviewReader) Next() bool {
	if r.cur != nil {
		r.cur.Release()
		r.cur = nil
	}
	if !r.recordReader.Next() {
		return false
	}
	rec := r.recordReader.RecordBatch()
	cols := make([]arrow.Array, rec.NumCols())
	for i, c := range rec.Columns() {
		cols[i] = unviewArray(c, r.mem)
	}
	r.cur = array.NewRecordBatch(r.schema, cols, rec.NumRows())
	releaseAll(cols)
	return true
}

func (r *unviewReader) RecordBatch() arrow.RecordBatch { return r.cur }

func (r *unviewReader) release() {
	if r.cur != nil {
		r.cur.Release()
		r.cur = nil
	}
}

// plainKeyType reports whether a join key column of type t is read through
// plainKey: a dictionary of text, or uint64.
func plainKeyType(t arrow.DataType) bool {
	return t.ID() == arrow.DICTIONARY || t.ID() == arrow.UINT64
}

// plainKey returns a join key column of a type plainKeyType reports as a
// column keyReader reads (see plainArray). A uint64 beyond int64 is an
// error naming its row (counted from first, the row of a's first, from 1).
// The caller releases the result.
func (ec *entityColumns) plainKey(a arrow.Array, first int64, ei, j int, mem memory.Allocator) (arrow.Array, error) {
	out, beyond := plainArray(a, mem)
	if beyond >= 0 {
		e := ec.plan.entities[ei]
		return nil, fmt.Errorf("%s: row %d: column %q (join key %q of entity %q, int64) holds %d, beyond the int64 range of join keys",
			ec.path, first+int64(beyond), ec.keyName[ei][j], e.keys[j], e.name, a.(*array.Uint64).Value(beyond))
	}
	return out, nil
}

// plainField reports whether a request-field column of type t, of a field
// of kind k, is read through plainFields: a dictionary of text, or uint64
// for an int64 field (requestAt reads a uint64 double field as it is).
func plainField(t arrow.DataType, k featurestore.Kind) bool {
	return t.ID() == arrow.DICTIONARY || t.ID() == arrow.UINT64 && k == featurestore.KindInt64
}

// checkFields returns the error plainFields would for a batch of the
// entity table (first is the number of its first row, from 0): a uint64
// column of an int64 request field holding a value beyond int64. It runs
// when the table is first read, so that the export fails before reading
// the log, not when writing the output.
func (ec *entityColumns) checkFields(rec arrow.RecordBatch, first int64) error {
	for _, name := range ec.fieldNames {
		a, ok := rec.Column(ec.fields[name]).(*array.Uint64)
		if !ok || ec.plan.requestFields[name] != featurestore.KindInt64 {
			continue
		}
		if i := beyondInt64(a); i >= 0 {
			return ec.fieldBeyond(name, a, first, i)
		}
	}
	return nil
}

func (ec *entityColumns) fieldBeyond(name string, a *array.Uint64, first int64, i int) error {
	return fmt.Errorf("%s: row %d: column %q (request field, int64) holds %d, beyond the int64 range", ec.path, first+int64(i)+1, name, a.Value(i))
}

// plainFields returns the columns of a batch of the entity table with its
// request-field columns of the types plainField reports as columns
// requestAt reads (see plainArray); first is the number of the batch's
// first row, from 0, for messages. The caller releases the columns.
func (ec *entityColumns) plainFields(rec arrow.RecordBatch, first int64, mem memory.Allocator) ([]arrow.Array, error) {
	cols := make([]arrow.Array, rec.NumCols())
	for i, c := range rec.Columns() {
		c.Retain()
		cols[i] = c
	}
	for _, name := range ec.fieldNames {
		i := ec.fields[name]
		if !plainField(cols[i].DataType(), ec.plan.requestFields[name]) {
			continue
		}
		out, beyond := plainArray(cols[i], mem)
		if beyond >= 0 {
			err := ec.fieldBeyond(name, cols[i].(*array.Uint64), first, beyond)
			releaseAll(cols)
			return nil, err
		}
		cols[i].Release()
		cols[i] = out
	}
	return cols, nil
}

// releaseAll releases every array of cols.
func releaseAll(cols []arrow.Array) {
	for _, c := range cols {
		c.Release()
	}
}

// plainArray returns a, a dictionary of text or uint64, as large_string or
// int64 (the same buffers), with the same values (a null among a
// dictionary's values is a null); other arrays as they are. A uint64 beyond int64 is not converted:
// plainArray returns its index instead, else -1. The caller releases the
// result.
func plainArray(a arrow.Array, mem memory.Allocator) (arrow.Array, int) {
	switch a := a.(type) {
	case *array.Uint64:
		if i := beyondInt64(a); i >= 0 {
			return nil, i
		}
		// Every value is within int64, where the two types share their
		// bits: the same buffers, read as int64.
		d := a.Data()
		data := array.NewData(arrow.PrimitiveTypes.Int64, d.Len(), d.Buffers(), nil, d.NullN(), d.Offset())
		defer data.Release()
		return array.MakeFromData(data), -1
	case *array.Dictionary:
		b := array.NewLargeStringBuilder(mem)
		defer b.Release()
		b.Reserve(a.Len())
		values := a.Dictionary()
		for i := range a.Len() {
			if a.IsNull(i) || values.IsNull(a.GetValueIndex(i)) {
				b.AppendNull()
				continue
			}
			switch d := values.(type) {
			case *array.String:
				b.Append(d.Value(a.GetValueIndex(i)))
			case *array.LargeString:
				b.Append(d.Value(a.GetValueIndex(i)))
			}
		}
		return b.NewArray(), -1
	}
	a.Retain()
	return a, -1
}

// beyondInt64 returns the index of a's first value beyond int64, or -1.
func beyondInt64(a *array.Uint64) int {
	for i, v := range a.Uint64Values() {
		if v > math.MaxInt64 && a.IsValid(i) {
			return i
		}
	}
	return -1
}
