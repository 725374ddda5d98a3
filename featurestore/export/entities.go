package export

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/featurestore/featurestore/featurestore"
)

// entityColumns says where the entity table keeps what the export needs: the
// timestamp column and, for each entity of the plan, the column of each join
// key.
type entityColumns struct {
	path    string
	ts      int    // index of the timestamp column
	tsName  string // its name
	keys    [][]int
	keyName [][]string // column names, per entity and join key
	// fields are the columns of the request fields of on-demand features,
	// by name; nil when none is requested. fieldNames are their names, in
	// order.
	fields     map[string]int
	fieldNames []string
	plan       *plan
}

// DefaultTimestampColumn is the entity table's timestamp column unless
// Options says otherwise.
const DefaultTimestampColumn = "event_timestamp"

// keyColumnTypes returns the type each join key column must have in a CSV
// file, so that its values are not inferred (a string key "007" must not
// become the number 7).
func keyColumnTypes(p *plan, keyColumns map[string]string) map[string]arrow.DataType {
	types := map[string]arrow.DataType{}
	for _, e := range p.entities {
		for j, k := range e.keys {
			name := k
			if c, ok := keyColumns[k]; ok {
				name = c
			}
			if e.kinds[j] == featurestore.KeyInt64 {
				types[name] = arrow.PrimitiveTypes.Int64
			} else {
				types[name] = arrow.BinaryTypes.String
			}
		}
	}
	for name, k := range p.requestFields {
		if _, ok := types[name]; !ok {
			types[name] = arrowType(k)
		}
	}
	return types
}

// findEntityColumns checks the entity table's schema against the plan: every
// join key of every entity and the timestamp column must be there with a
// usable type, and no input column may have the name of a feature column.
// keyColumns maps join keys to the columns that hold them when the names
// differ.
func findEntityColumns(path string, schema *arrow.Schema, p *plan, keyColumns map[string]string, tsColumn string) (*entityColumns, error) {
	ec := &entityColumns{path: path, plan: p}
	schema, _ = withoutViews(schema) // as the table reads them
	have := func() string {
		names := make([]string, schema.NumFields())
		for i, f := range schema.Fields() {
			names[i] = f.Name
		}
		return strings.Join(names, ", ")
	}
	for k, c := range keyColumns {
		used := false
		for _, e := range p.entities {
			used = used || slices.Contains(e.keys, k)
		}
		if !used {
			return nil, fmt.Errorf("key column mapping %s=%s: %q is a join key of no entity of the requested features", k, c, k)
		}
	}
	for _, e := range p.entities {
		idx := make([]int, len(e.keys))
		names := make([]string, len(e.keys))
		for j, k := range e.keys {
			name := k
			if c, ok := keyColumns[k]; ok {
				name = c
			}
			is := schema.FieldIndices(name)
			if len(is) == 0 {
				return nil, fmt.Errorf("%s: no column %q for join key %q of entity %q (columns: %s)", path, name, k, e.name, have())
			}
			if len(is) > 1 {
				return nil, fmt.Errorf("%s: column %q appears %d times", path, name, len(is))
			}
			t := schema.Field(is[0]).Type
			if !keyTypeOK(t, e.kinds[j]) {
				want := "utf8, large_utf8, string_view or a dictionary of them"
				if e.kinds[j] == featurestore.KeyInt64 {
					want = "an integer type"
					if t.ID() == arrow.FLOAT32 || t.ID() == arrow.FLOAT64 {
						want += " (DuckDB writes HUGEINT columns to Parquet as DOUBLE: cast them to BIGINT)"
					}
				}
				return nil, fmt.Errorf("%s: column %q (join key %q of entity %q, %s) has type %s; want %s", path, name, k, e.name, e.kinds[j], t, want)
			}
			idx[j], names[j] = is[0], name
		}
		ec.keys = append(ec.keys, idx)
		ec.keyName = append(ec.keyName, names)
	}
	is := schema.FieldIndices(tsColumn)
	switch {
	case len(is) == 0:
		return nil, fmt.Errorf("%s: no timestamp column %q (columns: %s); name it with the timestamp column option", path, tsColumn, have())
	case len(is) > 1:
		return nil, fmt.Errorf("%s: column %q appears %d times", path, tsColumn, len(is))
	}
	switch t := schema.Field(is[0]).Type; t.ID() {
	case arrow.TIMESTAMP, arrow.INT64:
	case arrow.DATE32, arrow.DATE64:
		// Which instant of the day? Midnight UTC would hide the day's
		// events from a label of the day's end, and the day's end would
		// leak them into one of its start: the user knows, not the export.
		return nil, fmt.Errorf("%s: timestamp column %q has type %s, a day and not an instant: cast it to a timestamp of the instant up to which each row may see events (midnight UTC sees none of that day's events, the next midnight all of them)", path, tsColumn, t)
	default:
		return nil, fmt.Errorf("%s: timestamp column %q has type %s; want a timestamp, or int64 milliseconds since the Unix epoch", path, tsColumn, t)
	}
	ec.ts, ec.tsName = is[0], tsColumn
	for _, c := range p.outputs {
		if len(schema.FieldIndices(c.name)) > 0 {
			return nil, fmt.Errorf("%s: column %q has the name of a requested feature; rename it", path, c.name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(p.requestFields)) {
		k := p.requestFields[name]
		is := schema.FieldIndices(name)
		switch {
		case len(is) == 0:
			return nil, fmt.Errorf("%s: no column %q for the request field of on-demand features (columns: %s)", path, name, have())
		case len(is) > 1:
			return nil, fmt.Errorf("%s: column %q appears %d times", path, name, len(is))
		}
		if t := schema.Field(is[0]).Type; !requestTypeOK(t, k) {
			want := requestTypes(k)
			if t.ID() == arrow.DICTIONARY && k != featurestore.KindString {
				want += ", not a dictionary (a categorical): cast it to its values' type"
			}
			return nil, fmt.Errorf("%s: column %q (request field, %s) has type %s; want %s", path, name, k, t, want)
		}
		if ec.fields == nil {
			ec.fields = map[string]int{}
		}
		ec.fields[name] = is[0]
		ec.fieldNames = append(ec.fieldNames, name)
	}
	return ec, nil
}

// keyTypeOK reports whether a join key column of kind k may have type t (a
// schema without views, see withoutViews): text, plain or a dictionary,
// for a string key; an integer type for an int64 one.
func keyTypeOK(t arrow.DataType, k featurestore.KeyKind) bool {
	if k == featurestore.KeyString {
		if dt, ok := t.(*arrow.DictionaryType); ok {
			t = dt.ValueType
		}
		return t.ID() == arrow.STRING || t.ID() == arrow.LARGE_STRING
	}
	switch t.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return true
	}
	return false
}

// timesOf returns the timestamps of a batch's rows in Unix milliseconds,
// rounded down, and the least and greatest of them; first is the number of
// the batch's first row in the table (from 0), for messages. A null time,
// or one outside the years 1 to 9999, is an error naming its row.
func (ec *entityColumns) timesOf(rec arrow.RecordBatch, first int64, dst []int64) (times []int64, lo, hi int64, err error) {
	col := rec.Column(ec.ts)
	n := int(rec.NumRows())
	dst = slices.Grow(dst[:0], n)[:n]
	if col.NullN() > 0 {
		for i := range n {
			if col.IsNull(i) {
				return nil, 0, 0, fmt.Errorf("%s: row %d: timestamp column %q is null", ec.path, first+int64(i)+1, ec.tsName)
			}
		}
	}
	switch a := col.(type) {
	case *array.Int64:
		copy(dst, a.Int64Values())
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		for i, v := range a.TimestampValues() {
			dst[i] = toMillis(int64(v), unit)
		}
	default:
		return nil, 0, 0, fmt.Errorf("%s: timestamp column %q has type %s", ec.path, ec.tsName, col.DataType())
	}
	lo, hi = math.MaxInt64, math.MinInt64
	for _, t := range dst {
		lo, hi = min(lo, t), max(hi, t)
	}
	if n > 0 && (lo < featurestore.MinTimeMs || hi > featurestore.MaxTimeMs) {
		return nil, 0, 0, ec.timeOutOfRange(col, first, dst)
	}
	return dst, lo, hi, nil
}

// timeOutOfRange returns the error for the first time of ms (col's times
// in milliseconds) outside the years 1 to 9999.
func (ec *entityColumns) timeOutOfRange(col arrow.Array, first int64, ms []int64) error {
	for i, t := range ms {
		if t >= featurestore.MinTimeMs && t <= featurestore.MaxTimeMs {
			continue
		}
		msg := fmt.Sprintf("%s: row %d: timestamp column %q holds", ec.path, first+int64(i)+1, ec.tsName)
		if a, ok := col.(*array.Timestamp); ok {
			return fmt.Errorf("%s %d %s since the Unix epoch, outside the years 1 to 9999", msg, a.Value(i), a.DataType().(*arrow.TimestampType).Unit)
		}
		return fmt.Errorf("%s %d ms since the Unix epoch, outside the years 1 to 9999 (int64 times are milliseconds: give finer units as a timestamp column)", msg, t)
	}
	return nil
}

// toMillis converts a time in unit to milliseconds, rounding down: a row at
// 12:00:00.000900 sees the events of 12:00:00.000 and none later.
func toMillis(v int64, unit arrow.TimeUnit) int64 {
	switch unit {
	case arrow.Second:
		// Beyond the years 1 to 9999, not to wrap into them.
		if v > featurestore.MaxTimeMs/1000 {
			return math.MaxInt64
		} else if v < featurestore.MinTimeMs/1000 {
			return math.MinInt64
		}
		return v * 1000
	case arrow.Microsecond:
		return floorDiv(v, 1000)
	case arrow.Nanosecond:
		return floorDiv(v, 1000_000)
	}
	return v
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// keyReader builds the spill keys of a batch's rows from their join key
// columns (see appendKey).
type keyReader struct {
	cols  []arrow.Array
	kinds []featurestore.KeyKind
}

func (k *keyReader) reset(cols []arrow.Array, kinds []featurestore.KeyKind) {
	k.cols, k.kinds = cols, kinds
}

// key appends row i's key to dst; null is the index of a null key column,
// or -1.
func (k *keyReader) key(dst []byte, i int) (key []byte, null int) {
	for j, c := range k.cols {
		if c.IsNull(i) {
			return dst, j
		}
		if k.kinds[j] == featurestore.KeyString {
			var s string
			switch a := c.(type) {
			case *array.String:
				s = a.Value(i)
			case *array.LargeString:
				s = a.Value(i)
			}
			dst = appendStringPart(dst, s)
			continue
		}
		dst = appendInt64Part(dst, intAt(c, i))
	}
	return dst, -1
}

// intAt returns value i of an integer column of a type keyTypeOK takes for
// int64 keys, or requestTypeOK for int64 request fields, but uint64
// (plainArray makes int64 of it; 0 for other types).
func intAt(a arrow.Array, i int) int64 {
	switch a := a.(type) {
	case *array.Int64:
		return a.Value(i)
	case *array.Int32:
		return int64(a.Value(i))
	case *array.Int16:
		return int64(a.Value(i))
	case *array.Int8:
		return int64(a.Value(i))
	case *array.Uint32:
		return int64(a.Value(i))
	case *array.Uint16:
		return int64(a.Value(i))
	case *array.Uint8:
		return int64(a.Value(i))
	}
	return 0
}

// A spill key is the binary form of featurestore.EntityKey (so
// EntityKey.UnmarshalBinary reads it, for messages), built without
// allocating: per join key, 0x01 uvarint(len) bytes for a string, 0x02
// varint for an int64.
func appendStringPart(dst []byte, s string) []byte {
	dst = append(dst, byte(featurestore.KeyString))
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendInt64Part(dst []byte, v int64) []byte {
	return binary.AppendVarint(append(dst, byte(featurestore.KeyInt64)), v)
}

// keyString renders a spill key for people.
func keyString(b []byte) string {
	var k featurestore.EntityKey
	if err := k.UnmarshalBinary(b); err != nil {
		return fmt.Sprintf("%x", b)
	}
	return k.String()
}
