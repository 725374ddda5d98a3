package export

import (
	"math"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore"
)

// rawEvents holds a bucket's events spill batch in plain slices while it
// fills: the key, time, partition and offset columns (never null), and the
// field columns with their validity bitmaps. Appending to them costs no
// capacity check (the batch reserves first) and no builder call per value,
// which the Arrow builders do, and the batch's arrays are then made from
// them without a copy.
type rawEvents struct {
	keyEnds []int32 // offsets of the keys in keys, from 0
	keys    []byte
	times   []int64
	parts   []int32
	offs    []int64
	fields  []rawField // per view field
}

// rawField is a field column: values by kind, and validity.
type rawField struct {
	kind  featurestore.Kind
	n     int
	valid []byte // validity bitmap, LSB first
	nulls int
	words []int64 // int64 values, and doubles' bits
	bits  []byte  // bool values, a bitmap
	ends  []int32 // string values: offsets in data, from 0
	data  []byte
}

func newRawEvents(kinds []featurestore.Kind) *rawEvents {
	r := &rawEvents{keyEnds: []int32{0}}
	for _, k := range kinds {
		r.fields = append(r.fields, rawField{kind: k, ends: []int32{0}})
	}
	return r
}

// reserve makes room for n more events with keyBytes bytes of keys and,
// per string field, data[j] bytes of values.
func (r *rawEvents) reserve(n, keyBytes int, data []int) {
	r.keyEnds = growTo(r.keyEnds, n)
	r.keys = growTo(r.keys, keyBytes)
	r.times = growTo(r.times, n)
	r.parts = growTo(r.parts, n)
	r.offs = growTo(r.offs, n)
	for j := range r.fields {
		f := &r.fields[j]
		f.valid = growTo(f.valid, n/8+2)
		switch f.kind {
		case featurestore.KindString:
			f.ends = growTo(f.ends, n)
			f.data = growTo(f.data, data[j])
		case featurestore.KindBool:
			f.bits = growTo(f.bits, n/8+2)
		default:
			f.words = growTo(f.words, n)
		}
	}
}

// growTo returns s with room for n more elements, doubling its capacity.
func growTo[T any](s []T, n int) []T {
	if len(s)+n <= cap(s) {
		return s
	}
	c := max(2*cap(s), len(s)+n)
	t := make([]T, len(s), c)
	copy(t, s)
	return t
}

// addKey appends an event's key; the other columns are appended to
// directly.
func (r *rawEvents) addKey(key []byte) {
	r.keys = append(r.keys, key...)
	r.keyEnds = append(r.keyEnds, int32(len(r.keys)))
}

// add appends value i of a (nil: null).
func (f *rawField) add(a arrow.Array, i int) {
	n := f.n
	f.n++
	if n&7 == 0 {
		f.valid = append(f.valid, 0)
		if f.kind == featurestore.KindBool {
			f.bits = append(f.bits, 0)
		}
	}
	ok := a != nil && a.IsValid(i)
	if ok {
		f.valid[n>>3] |= 1 << (n & 7)
	} else {
		f.nulls++
	}
	switch f.kind {
	case featurestore.KindString:
		if ok {
			f.data = append(f.data, a.(*array.String).Value(i)...)
		}
		f.ends = append(f.ends, int32(len(f.data)))
	case featurestore.KindInt64:
		var x int64
		if ok {
			x = a.(*array.Int64).Value(i)
		}
		f.words = append(f.words, x)
	case featurestore.KindDouble:
		var x int64
		if ok {
			x = int64(math.Float64bits(a.(*array.Float64).Value(i)))
		}
		f.words = append(f.words, x)
	case featurestore.KindBool:
		if ok && a.(*array.Boolean).Value(i) {
			f.bits[n>>3] |= 1 << (n & 7)
		}
	}
}

// array returns the column's values as an Arrow array, which owns them.
func (f *rawField) array() arrow.Array {
	var valid *memory.Buffer
	if f.nulls > 0 {
		valid = memory.NewBufferBytes(f.valid)
	}
	switch f.kind {
	case featurestore.KindString:
		return array.NewStringData(array.NewData(arrow.BinaryTypes.String, f.n,
			[]*memory.Buffer{valid, memory.NewBufferBytes(sliceBytes(f.ends)), memory.NewBufferBytes(f.data)}, nil, f.nulls, 0))
	case featurestore.KindInt64:
		return array.NewInt64Data(array.NewData(arrow.PrimitiveTypes.Int64, f.n, []*memory.Buffer{valid, memory.NewBufferBytes(sliceBytes(f.words))}, nil, f.nulls, 0))
	case featurestore.KindDouble:
		return array.NewFloat64Data(array.NewData(arrow.PrimitiveTypes.Float64, f.n, []*memory.Buffer{valid, memory.NewBufferBytes(sliceBytes(f.words))}, nil, f.nulls, 0))
	default:
		return array.NewBooleanData(array.NewData(arrow.FixedWidthTypes.Boolean, f.n, []*memory.Buffer{valid, memory.NewBufferBytes(f.bits)}, nil, f.nulls, 0))
	}
}

func (r *rawEvents) len() int { return len(r.times) }

// arrays returns the columns of the events added, and starts a new batch
// with room for as many and an eighth more: a bucket's batches hold about
// as many events, give or take the bucket's share of the log batch after
// which it is flushed, and a batch that outgrows its room is copied into
// twice as much, which it then keeps.
func (r *rawEvents) arrays() []arrow.Array {
	n := r.len()
	room := func(n int) int { return n + n/8 }
	cols := []arrow.Array{
		array.NewBinaryData(array.NewData(arrow.BinaryTypes.Binary, n,
			[]*memory.Buffer{nil, memory.NewBufferBytes(sliceBytes(r.keyEnds)), memory.NewBufferBytes(r.keys)}, nil, 0, 0)),
		array.NewInt64Data(array.NewData(arrow.PrimitiveTypes.Int64, n, []*memory.Buffer{nil, memory.NewBufferBytes(sliceBytes(r.times))}, nil, 0, 0)),
		array.NewInt32Data(array.NewData(arrow.PrimitiveTypes.Int32, n, []*memory.Buffer{nil, memory.NewBufferBytes(sliceBytes(r.parts))}, nil, 0, 0)),
		array.NewInt64Data(array.NewData(arrow.PrimitiveTypes.Int64, n, []*memory.Buffer{nil, memory.NewBufferBytes(sliceBytes(r.offs))}, nil, 0, 0)),
	}
	fields := make([]rawField, len(r.fields))
	for j := range r.fields {
		f := &r.fields[j]
		cols = append(cols, f.array())
		// The arrays own the slices now; the next batch starts with room
		// for as many values.
		g := rawField{kind: f.kind, valid: make([]byte, 0, room(len(f.valid)))}
		switch f.kind {
		case featurestore.KindString:
			g.ends, g.data = append(make([]int32, 0, room(n)+1), 0), make([]byte, 0, room(len(f.data)))
		case featurestore.KindBool:
			g.bits = make([]byte, 0, room(len(f.bits)))
		default:
			g.words = make([]int64, 0, room(n))
		}
		fields[j] = g
	}
	*r = rawEvents{
		keyEnds: append(make([]int32, 0, room(n)+1), 0),
		keys:    make([]byte, 0, room(len(r.keys))),
		times:   make([]int64, 0, room(n)),
		parts:   make([]int32, 0, room(n)),
		offs:    make([]int64, 0, room(n)),
		fields:  fields,
	}
	return cols
}

// sliceBytes views a slice of fixed-width values as its bytes.
func sliceBytes[T int32 | int64](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(s[0])))
}
