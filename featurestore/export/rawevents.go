package export

import (
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// rawEvents holds the first columns of a bucket's events spill batch (key,
// time, partition, offset, never null) in plain slices while the batch
// fills: appending to them costs no capacity check and no validity bit per
// value, which the Arrow builders do, and the batch's arrays are then made
// from them without a copy. The field columns, which may be null, keep
// their builders.
type rawEvents struct {
	keyEnds []int32 // offsets of the keys in keys, from 0
	keys    []byte
	times   []int64
	parts   []int32
	offs    []int64
}

func newRawEvents() *rawEvents { return &rawEvents{keyEnds: []int32{0}} }

// reserve makes room for n more events with keyBytes bytes of keys.
func (r *rawEvents) reserve(n, keyBytes int) {
	r.keyEnds = growTo(r.keyEnds, n)
	r.keys = growTo(r.keys, keyBytes)
	r.times = growTo(r.times, n)
	r.parts = growTo(r.parts, n)
	r.offs = growTo(r.offs, n)
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

func (r *rawEvents) add(key []byte, t int64, part int32, off int64) {
	r.keys = append(r.keys, key...)
	r.keyEnds = append(r.keyEnds, int32(len(r.keys)))
	r.times = append(r.times, t)
	r.parts = append(r.parts, part)
	r.offs = append(r.offs, off)
}

func (r *rawEvents) len() int { return len(r.times) }

// arrays returns the key, time, partition and offset arrays of the events
// added, and starts a new batch with room for as many.
func (r *rawEvents) arrays() []arrow.Array {
	n := r.len()
	cols := []arrow.Array{
		array.NewBinaryData(array.NewData(arrow.BinaryTypes.Binary, n,
			[]*memory.Buffer{nil, memory.NewBufferBytes(sliceBytes(r.keyEnds)), memory.NewBufferBytes(r.keys)}, nil, 0, 0)),
		array.NewInt64Data(array.NewData(arrow.PrimitiveTypes.Int64, n, []*memory.Buffer{nil, memory.NewBufferBytes(sliceBytes(r.times))}, nil, 0, 0)),
		array.NewInt32Data(array.NewData(arrow.PrimitiveTypes.Int32, n, []*memory.Buffer{nil, memory.NewBufferBytes(sliceBytes(r.parts))}, nil, 0, 0)),
		array.NewInt64Data(array.NewData(arrow.PrimitiveTypes.Int64, n, []*memory.Buffer{nil, memory.NewBufferBytes(sliceBytes(r.offs))}, nil, 0, 0)),
	}
	// The arrays own the slices now.
	*r = rawEvents{
		keyEnds: append(make([]int32, 0, n+1), 0),
		keys:    make([]byte, 0, len(r.keys)),
		times:   make([]int64, 0, n),
		parts:   make([]int32, 0, n),
		offs:    make([]int64, 0, n),
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
