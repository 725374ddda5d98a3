package ingest

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// This file decodes the rows of a table file (Parquet, CSV, Arrow IPC) into
// Events, as the JSON and Protobuf decoders decode messages: one column per
// declared path (the event time field, the key fields and the fields, named
// as the source names them), the same Layout, the same strict types and the
// same rejection reasons. A column whose type can never hold the declared
// kind makes the whole file an error; a value that does not fit (a CSV text
// that is not a number, a null event time) rejects its row.

// tableDecoder decodes the rows of record batches of one schema.
type tableDecoder struct {
	layout  Layout
	timeEnc registry.TimeEncoding
	time    tableColumn
	keys    []tableColumn // per Layout.Keys
	fields  []tableColumn // per Layout.Fields
	// id is the event id column (the source's event_id_field), nil when
	// the source has none or the file lacks it: its rows then have no id,
	// as messages without the field.
	id *tableColumn
}

// tableColumn is the column of one declared path.
type tableColumn struct {
	name string
	idx  int
	kind featurestore.Kind // the declared kind; KindNull for the event time
	arr  arrow.Array       // of the current batch
	// dict is arr when it is dictionary-encoded and its dictionary holds
	// a null (pyarrow's dictionary_encode(null_encoding="encode")), nil
	// otherwise: a row whose valid index points to a null value is null.
	dict     *array.Dictionary
	dictVals arrow.Array // dict's dictionary
}

// setArr makes the column read a, the column of the current batch. Whether
// a's dictionary holds a null is checked here, once per batch, so that
// isNull costs nothing more for the other columns.
func (c *tableColumn) setArr(a arrow.Array) {
	c.arr, c.dict, c.dictVals = a, nil, nil
	if d, ok := a.(*array.Dictionary); ok && d.Dictionary().NullN() > 0 {
		c.dict, c.dictVals = d, d.Dictionary()
	}
}

// isNull reports whether row i is null: its value (or dictionary index) is
// null, or, dictionary-encoded, the dictionary value its index points to
// is.
func (c *tableColumn) isNull(i int) bool {
	if c.arr.IsNull(i) {
		return true
	}
	return c.dict != nil && c.dictVals.IsNull(c.dict.GetValueIndex(i))
}

// newTableDecoder checks that schema has a usable column for every declared
// path of the source, and returns a decoder of its rows. Errors name the
// file and the column.
func newTableDecoder(file string, schema *arrow.Schema, src *registry.Source, l Layout) (*tableDecoder, error) {
	d := &tableDecoder{layout: l, timeEnc: src.Timestamp.Encoding}
	if d.timeEnc == "" {
		d.timeEnc = registry.TimeRFC3339
	}
	find := func(name, what string, kind featurestore.Kind) (tableColumn, error) {
		idx := schema.FieldIndices(name)
		switch len(idx) {
		case 0:
			return tableColumn{}, fmt.Errorf("%s: no column %q (%s of source %q)", file, name, what, src.Name)
		case 1:
		default:
			return tableColumn{}, fmt.Errorf("%s: column %q appears %d times", file, name, len(idx))
		}
		c := tableColumn{name: name, idx: idx[0], kind: kind}
		t := schema.Field(idx[0]).Type
		if !columnTypeOK(t, kind, d.timeEnc) {
			want := kind.String()
			if kind == featurestore.KindNull {
				want = "event time (" + string(d.timeEnc) + ")"
			}
			switch {
			case kind == featurestore.KindInt64 && t.ID() == arrow.FLOAT64:
				want += " (DuckDB writes HUGEINT columns to Parquet as DOUBLE: cast them to BIGINT)"
			case kind == featurestore.KindNull && (t.ID() == arrow.DATE32 || t.ID() == arrow.DATE64):
				want += ": a date is a day, not an instant; cast it to a timestamp"
			}
			return tableColumn{}, fmt.Errorf("%s: column %q (%s of source %q) has type %s, which cannot hold %s", file, name, what, src.Name, t, want)
		}
		return c, nil
	}
	var err error
	if d.time, err = find(src.Timestamp.Field, "event time", featurestore.KindNull); err != nil {
		return nil, err
	}
	for _, k := range l.Keys {
		c, err := find(k.Path, "join key "+k.Name, k.Kind)
		if err != nil {
			return nil, err
		}
		d.keys = append(d.keys, c)
	}
	for _, f := range l.Fields {
		c, err := find(f.Path, "field", f.Kind)
		if err != nil {
			return nil, err
		}
		d.fields = append(d.fields, c)
	}
	if name := src.EventIDField; name != "" {
		// A string or an integer, as in messages; text columns (CSV)
		// are taken as they are.
		switch idx := schema.FieldIndices(name); {
		case len(idx) > 1:
			return nil, fmt.Errorf("%s: column %q appears %d times", file, name, len(idx))
		case len(idx) == 1:
			t := schema.Field(idx[0]).Type
			if !columnTypeOK(t, featurestore.KindString, d.timeEnc) && !isIntType(t.ID()) {
				return nil, fmt.Errorf("%s: column %q (event id of source %q) has type %s, which cannot hold an event id (a string or an integer)", file, name, src.Name, t)
			}
			d.id = &tableColumn{name: name, idx: idx[0], kind: featurestore.KindString}
		}
	}
	return d, nil
}

// columnTypeOK reports whether a column of type t can hold values of kind
// (KindNull: the event time in encoding enc). Text columns are parsed row
// by row, so they fit every kind: CSV files are read as text.
func columnTypeOK(t arrow.DataType, kind featurestore.Kind, enc registry.TimeEncoding) bool {
	id := t.ID()
	if dt, ok := t.(*arrow.DictionaryType); ok {
		id = dt.ValueType.ID() // dictionary-encoded text (pandas categoricals)
		if id != arrow.STRING && id != arrow.LARGE_STRING {
			return false
		}
	}
	if id == arrow.STRING || id == arrow.LARGE_STRING {
		return true
	}
	switch kind {
	case featurestore.KindNull:
		switch {
		case id == arrow.TIMESTAMP:
			return true
		case isIntType(id) || id == arrow.FLOAT32 || id == arrow.FLOAT64:
			return enc != registry.TimeRFC3339 // a bare number has no unit then
		}
	case featurestore.KindInt64:
		return isIntType(id)
	case featurestore.KindDouble:
		return isIntType(id) || id == arrow.FLOAT32 || id == arrow.FLOAT64
	case featurestore.KindBool:
		return id == arrow.BOOL
	}
	return false
}

func isIntType(id arrow.Type) bool {
	switch id {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return true
	}
	return false
}

// bind makes the decoder read rec's columns.
func (d *tableDecoder) bind(rec arrow.RecordBatch) {
	d.time.setArr(rec.Column(d.time.idx))
	for i := range d.keys {
		d.keys[i].setArr(rec.Column(d.keys[i].idx))
	}
	for i := range d.fields {
		d.fields[i].setArr(rec.Column(d.fields[i].idx))
	}
	if d.id != nil {
		d.id.setArr(rec.Column(d.id.idx))
	}
}

// decode decodes row i of the bound batch into ev. Strings are copied, so
// ev outlives the batch.
func (d *tableDecoder) decode(i int, ev *Event) *DecodeError {
	ev.reset(&d.layout)
	if d.time.isNull(i) {
		return reject(ReasonMissingTime, "column %q: no event time", d.time.name)
	}
	ms, err := d.timeAt(i)
	if err != nil {
		return reject(ReasonBadTime, "column %q: %v", d.time.name, err)
	}
	ev.Time = ms
	for j := range d.keys {
		c := &d.keys[j]
		if c.isNull(i) {
			continue // a view that needs this key rejects the event
		}
		v, err := c.valueAt(i)
		if err != nil {
			return reject(ReasonWrongType, "join key %q, column %q: %v", d.layout.Keys[j].Name, c.name, err)
		}
		if !validUTF8(v) {
			return reject(ReasonInvalidPayload, "join key %q, column %q: the string is not valid UTF-8", d.layout.Keys[j].Name, c.name)
		}
		if de := checkKey(&d.layout, j, v); de != nil {
			return de
		}
		ev.Keys[j] = v
	}
	for j := range d.fields {
		c := &d.fields[j]
		if c.isNull(i) {
			continue
		}
		v, err := c.valueAt(i)
		if err != nil {
			return reject(ReasonWrongType, "field %q, column %q: %v", d.layout.Fields[j].Path, c.name, err)
		}
		if !validUTF8(v) {
			return reject(ReasonInvalidPayload, "field %q, column %q: the string is not valid UTF-8", d.layout.Fields[j].Path, c.name)
		}
		ev.Fields[j] = v
	}
	if d.id != nil && !d.id.isNull(i) {
		ev.ID = d.id.idAt(i)
		ev.HasID = ev.ID != "" // as the stream's decoders: an empty id is none
	}
	return nil
}

// idAt returns the event id of row i of an id column: a string as it is,
// an integer in decimal (as a JSON number's text).
func (c *tableColumn) idAt(i int) string {
	switch a := c.arr.(type) {
	case *array.String:
		return strings.Clone(a.Value(i))
	case *array.LargeString:
		return strings.Clone(a.Value(i))
	case *array.Dictionary:
		return strings.Clone(dictText(a, i))
	case *array.Uint64:
		return strconv.FormatUint(a.Value(i), 10)
	}
	v, _ := intAt(c.arr, i)
	return strconv.FormatInt(v, 10)
}

// timeAt returns the event time of row i in Unix ms.
func (d *tableDecoder) timeAt(i int) (int64, error) {
	switch a := d.time.arr.(type) {
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		v := int64(a.Value(i))
		var ms int64
		switch unit {
		case arrow.Second:
			if v > maxTimeMs/1000 || v < minTimeMs/1000 {
				return 0, errorf("%d s is out of range", v)
			}
			ms = v * 1000
		case arrow.Millisecond:
			ms = v
		case arrow.Microsecond:
			ms = floorDiv(v, 1000)
		default:
			ms = floorDiv(v, 1_000_000)
		}
		if ms < minTimeMs || ms > maxTimeMs {
			return 0, errorf("%d ms is out of range", ms)
		}
		return ms, nil
	case *array.String:
		return textTime(a.Value(i), d.timeEnc)
	case *array.LargeString:
		return textTime(a.Value(i), d.timeEnc)
	case *array.Dictionary:
		return textTime(dictText(a, i), d.timeEnc)
	case *array.Float32:
		return epochMillis(strconv.FormatFloat(float64(a.Value(i)), 'g', -1, 32), d.timeEnc)
	case *array.Float64:
		return epochMillis(strconv.FormatFloat(a.Value(i), 'g', -1, 64), d.timeEnc)
	}
	v, ok := intAt(d.time.arr, i)
	if !ok {
		return 0, errorf("%d is out of range", d.time.arr.(*array.Uint64).Value(i))
	}
	return epochMillisInt(v, d.timeEnc)
}

func textTime(s string, enc registry.TimeEncoding) (int64, error) {
	s = strings.TrimSpace(s)
	if enc == registry.TimeRFC3339 {
		return parseRFC3339(s)
	}
	return epochMillis(s, enc)
}

// intAt returns the integer of row i of an integer column; ok is false for
// a uint64 beyond int64.
func intAt(arr arrow.Array, i int) (int64, bool) {
	switch a := arr.(type) {
	case *array.Int8:
		return int64(a.Value(i)), true
	case *array.Int16:
		return int64(a.Value(i)), true
	case *array.Int32:
		return int64(a.Value(i)), true
	case *array.Int64:
		return a.Value(i), true
	case *array.Uint8:
		return int64(a.Value(i)), true
	case *array.Uint16:
		return int64(a.Value(i)), true
	case *array.Uint32:
		return int64(a.Value(i)), true
	case *array.Uint64:
		v := a.Value(i)
		return int64(v), v <= math.MaxInt64
	}
	return 0, false
}

// valueAt returns the value of row i, of the column's kind.
func (c *tableColumn) valueAt(i int) (featurestore.Value, error) {
	var s string
	switch a := c.arr.(type) {
	case *array.String:
		s = a.Value(i)
	case *array.LargeString:
		s = a.Value(i)
	case *array.Dictionary:
		s = dictText(a, i)
	case *array.Boolean:
		return featurestore.BoolValue(a.Value(i)), nil
	case *array.Float32:
		return doubleValue(float64(a.Value(i)))
	case *array.Float64:
		return doubleValue(a.Value(i))
	default:
		v, ok := intAt(c.arr, i)
		if !ok {
			return featurestore.Value{}, errorf("%d is out of range for int64", c.arr.(*array.Uint64).Value(i))
		}
		if c.kind == featurestore.KindDouble {
			return featurestore.DoubleValue(float64(v)), nil
		}
		return featurestore.Int64Value(v), nil
	}
	// Text: the value as it is for a string, parsed for the other kinds.
	switch c.kind {
	case featurestore.KindString:
		return featurestore.StringValue(strings.Clone(s)), nil
	case featurestore.KindInt64:
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return featurestore.Value{}, errorf("expected int64, got %q", s)
		}
		return featurestore.Int64Value(v), nil
	case featurestore.KindDouble:
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return featurestore.Value{}, errorf("expected double, got %q", s)
		}
		return doubleValue(v)
	case featurestore.KindBool:
		switch strings.TrimSpace(s) {
		case "true":
			return featurestore.BoolValue(true), nil
		case "false":
			return featurestore.BoolValue(false), nil
		}
		return featurestore.Value{}, errorf("expected bool (true or false), got %q", s)
	}
	return featurestore.Value{}, errorf("unsupported kind %s", c.kind)
}

// dictText returns the text of row i of a dictionary-encoded text column,
// whose row is not null (tableColumn.isNull: neither its index nor the
// dictionary value it points to).
func dictText(a *array.Dictionary, i int) string {
	j := a.GetValueIndex(i)
	switch d := a.Dictionary().(type) {
	case *array.String:
		return d.Value(j)
	case *array.LargeString:
		return d.Value(j)
	}
	return "" // excluded by columnTypeOK
}

// doubleValue rejects what JSON cannot carry either: infinities and NaN.
func doubleValue(f float64) (featurestore.Value, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return featurestore.Value{}, errorf("expected a finite double, got %v", f)
	}
	return featurestore.DoubleValue(f), nil
}
