package featurestore

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unsafe"
)

// Kind is the type of a Value. Its numbers are the tags of the binary
// encoding and must never change.
type Kind uint8

// The kinds of values. Lists are produced by last_n only.
const (
	KindNull       Kind = 0
	KindString     Kind = 1
	KindInt64      Kind = 2
	KindDouble     Kind = 3
	KindBool       Kind = 4
	KindStringList Kind = 5
	KindInt64List  Kind = 6
	KindDoubleList Kind = 7
	KindBoolList   Kind = 8
)

var kindNames = [...]string{"null", "string", "int64", "double", "bool", "string_list", "int64_list", "double_list", "bool_list"}

// String returns the kind's name as definitions write value types, such as
// "int64" or "string_list".
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// IsList reports whether the kind is a list kind.
func (k Kind) IsList() bool { return k >= KindStringList && k <= KindBoolList }

// ListOf returns the list kind whose elements are of the scalar kind k, or
// KindNull when k is not a non-null scalar kind.
func (k Kind) ListOf() Kind {
	if k >= KindString && k <= KindBool {
		return k + KindStringList - KindString
	}
	return KindNull
}

// Elem returns the element kind of the list kind k, or KindNull when k is not
// a list kind.
func (k Kind) Elem() Kind {
	if k.IsList() {
		return k - KindStringList + KindString
	}
	return KindNull
}

// Value is one typed value: null, a string, an int64, a double, a bool, or a
// list of one of these. The zero Value is null.
//
// A Value is 24 bytes and is built without allocating: a string or list Value
// refers to the memory of the string or slice it was made from, so lists
// handed to a constructor, and lists returned by an accessor, must not be
// modified. Values are compared with Equal, not with ==.
type Value struct {
	_   [0]func() // not comparable: == would compare pointers, not contents
	num uint64    // int64 or float64 bits, bool, or the length of a string or list
	any any       // nil for null, a Kind for other scalars, else a typed pointer
}

// Pointer types that tell the kinds apart in Value.any; with num as the
// length they rebuild the string or slice without allocating.
type (
	stringPtr     *byte
	stringListPtr *string
	int64ListPtr  *int64
	doubleListPtr *float64
	boolListPtr   *bool
)

// StringValue returns a string Value.
func StringValue(s string) Value {
	return Value{num: uint64(len(s)), any: stringPtr(unsafe.StringData(s))}
}

// Int64Value returns an int64 Value.
func Int64Value(v int64) Value { return Value{num: uint64(v), any: KindInt64} }

// DoubleValue returns a double Value. NaN and infinities are kept as they
// are, bit for bit.
func DoubleValue(v float64) Value { return Value{num: math.Float64bits(v), any: KindDouble} }

// BoolValue returns a bool Value.
func BoolValue(v bool) Value {
	var n uint64
	if v {
		n = 1
	}
	return Value{num: n, any: KindBool}
}

// listOf returns s, or an empty list that is not nil if s is nil, so that
// a list Value's elements are never nil: expressions (featurestore/derive)
// tell a nil slice from an empty one (xs == nil, xs ?? ys), and the same
// list must give the same result however it was built. It allocates nothing.
func listOf[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// StringListValue returns a string list Value that refers to s.
// A nil s is the empty list (see listOf).
func StringListValue(s []string) Value {
	s = listOf(s)
	return Value{num: uint64(len(s)), any: stringListPtr(unsafe.SliceData(s))}
}

// Int64ListValue returns an int64 list Value that refers to s.
// A nil s is the empty list (see listOf).
func Int64ListValue(s []int64) Value {
	s = listOf(s)
	return Value{num: uint64(len(s)), any: int64ListPtr(unsafe.SliceData(s))}
}

// DoubleListValue returns a double list Value that refers to s.
// A nil s is the empty list (see listOf).
func DoubleListValue(s []float64) Value {
	s = listOf(s)
	return Value{num: uint64(len(s)), any: doubleListPtr(unsafe.SliceData(s))}
}

// BoolListValue returns a bool list Value that refers to s.
// A nil s is the empty list (see listOf).
func BoolListValue(s []bool) Value {
	s = listOf(s)
	return Value{num: uint64(len(s)), any: boolListPtr(unsafe.SliceData(s))}
}

// Kind returns the kind of the value.
func (v Value) Kind() Kind {
	switch x := v.any.(type) {
	case nil:
		return KindNull
	case Kind:
		return x
	case stringPtr:
		return KindString
	case stringListPtr:
		return KindStringList
	case int64ListPtr:
		return KindInt64List
	case doubleListPtr:
		return KindDoubleList
	case boolListPtr:
		return KindBoolList
	}
	return KindNull
}

// IsNull reports whether the value is null.
func (v Value) IsNull() bool { return v.any == nil }

func (v Value) mustBe(k Kind) {
	if got := v.Kind(); got != k {
		panic("featurestore: Value of kind " + got.String() + " used as " + k.String())
	}
}

// Str returns the value of a string Value. It panics on other kinds.
func (v Value) Str() string {
	p, ok := v.any.(stringPtr)
	if !ok {
		v.mustBe(KindString)
	}
	return unsafe.String(p, int(v.num))
}

// Int64 returns the value of an int64 Value. It panics on other kinds.
func (v Value) Int64() int64 {
	// A type assertion compares the type word inline; comparing v.any
	// with any(KindInt64) calls the runtime.
	if k, ok := v.any.(Kind); !ok || k != KindInt64 {
		v.mustBe(KindInt64)
	}
	return int64(v.num)
}

// Double returns the value of a double Value. It panics on other kinds.
func (v Value) Double() float64 {
	if k, ok := v.any.(Kind); !ok || k != KindDouble {
		v.mustBe(KindDouble)
	}
	return math.Float64frombits(v.num)
}

// Bool returns the value of a bool Value. It panics on other kinds.
func (v Value) Bool() bool {
	if k, ok := v.any.(Kind); !ok || k != KindBool {
		v.mustBe(KindBool)
	}
	return v.num != 0
}

// Len returns the number of elements of a list Value, the length in bytes of
// a string Value, and 0 for other kinds.
func (v Value) Len() int {
	switch v.any.(type) {
	case stringPtr, stringListPtr, int64ListPtr, doubleListPtr, boolListPtr:
		return int(v.num)
	}
	return 0
}

// StringList returns the elements of a string list Value, which must not be
// modified. It panics on other kinds.
func (v Value) StringList() []string {
	p, ok := v.any.(stringListPtr)
	if !ok {
		v.mustBe(KindStringList)
	}
	return unsafe.Slice((*string)(p), int(v.num))
}

// Int64List returns the elements of an int64 list Value, which must not be
// modified. It panics on other kinds.
func (v Value) Int64List() []int64 {
	p, ok := v.any.(int64ListPtr)
	if !ok {
		v.mustBe(KindInt64List)
	}
	return unsafe.Slice((*int64)(p), int(v.num))
}

// DoubleList returns the elements of a double list Value, which must not be
// modified. It panics on other kinds.
func (v Value) DoubleList() []float64 {
	p, ok := v.any.(doubleListPtr)
	if !ok {
		v.mustBe(KindDoubleList)
	}
	return unsafe.Slice((*float64)(p), int(v.num))
}

// BoolList returns the elements of a bool list Value, which must not be
// modified. It panics on other kinds.
func (v Value) BoolList() []bool {
	p, ok := v.any.(boolListPtr)
	if !ok {
		v.mustBe(KindBoolList)
	}
	return unsafe.Slice((*bool)(p), int(v.num))
}

// Any returns the value as a Go value: nil, string, int64, float64, bool,
// []string, []int64, []float64 or []bool. Lists are shared, not copied.
func (v Value) Any() any {
	switch v.Kind() {
	case KindString:
		return v.Str()
	case KindInt64:
		return v.Int64()
	case KindDouble:
		return v.Double()
	case KindBool:
		return v.Bool()
	case KindStringList:
		return v.StringList()
	case KindInt64List:
		return v.Int64List()
	case KindDoubleList:
		return v.DoubleList()
	case KindBoolList:
		return v.BoolList()
	}
	return nil
}

// Equal reports whether v and w are identical: of the same kind, with equal
// strings, integers and booleans, and doubles with the same bits. So NaN
// equals a NaN with the same bits, and 0 and -0 differ: Equal tells whether two
// computations produced the same result, not whether two numbers are equal.
func (v Value) Equal(w Value) bool {
	k := v.Kind()
	if k != w.Kind() {
		return false
	}
	switch k {
	case KindNull:
		return true
	case KindString:
		return v.Str() == w.Str()
	case KindInt64, KindDouble, KindBool:
		return v.num == w.num
	case KindStringList:
		return slices.Equal(v.StringList(), w.StringList())
	case KindInt64List:
		return slices.Equal(v.Int64List(), w.Int64List())
	case KindDoubleList:
		// Bit for bit: NaN equals itself and -0 differs from 0.
		return slices.EqualFunc(v.DoubleList(), w.DoubleList(), func(a, b float64) bool {
			return math.Float64bits(a) == math.Float64bits(b)
		})
	case KindBoolList:
		return slices.Equal(v.BoolList(), w.BoolList())
	}
	return false
}

// Compare orders values totally: -1, 0 or +1 as v is before, the same as
// (Equal), or after w. Kinds order by their numbers (null first, then
// string, int64, double, bool, and the lists); within a kind, strings
// compare bytewise, int64s numerically, false before true, lists
// element by element (a prefix first), and doubles by IEEE 754's total
// order: -NaN < -Inf < ... < -0 < +0 < ... < +Inf < +NaN, NaNs by their
// payload bits. It is the order that breaks ties between events of equal
// order keys (see package window), so it must never change.
func (v Value) Compare(w Value) int {
	k := v.Kind()
	if wk := w.Kind(); k != wk {
		return cmp.Compare(k, wk)
	}
	switch k {
	case KindString:
		return cmp.Compare(v.Str(), w.Str())
	case KindInt64:
		return cmp.Compare(v.Int64(), w.Int64())
	case KindDouble:
		return cmp.Compare(totalOrder(v.Double()), totalOrder(w.Double()))
	case KindBool:
		return cmp.Compare(v.num, w.num)
	case KindStringList:
		return slices.Compare(v.StringList(), w.StringList())
	case KindInt64List:
		return slices.Compare(v.Int64List(), w.Int64List())
	case KindDoubleList:
		return slices.CompareFunc(v.DoubleList(), w.DoubleList(), func(a, b float64) int {
			return cmp.Compare(totalOrder(a), totalOrder(b))
		})
	case KindBoolList:
		return slices.CompareFunc(v.BoolList(), w.BoolList(), func(a, b bool) int {
			switch {
			case a == b:
				return 0
			case b:
				return -1
			}
			return 1
		})
	}
	return 0 // null
}

// totalOrder maps a double's bits to an int64 that orders as IEEE 754's
// totalOrder predicate: negative numbers have every bit but the sign flipped.
func totalOrder(f float64) int64 {
	b := int64(math.Float64bits(f))
	return b ^ int64(uint64(b>>63)>>1)
}

// String renders the value for people: null, a quoted string, a number,
// true or false, or a list of these in brackets.
func (v Value) String() string {
	return string(v.appendText(nil))
}

func (v Value) appendText(b []byte) []byte {
	switch v.Kind() {
	case KindNull:
		return append(b, "null"...)
	case KindString:
		return strconv.AppendQuote(b, v.Str())
	case KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10)
	case KindDouble:
		return strconv.AppendFloat(b, v.Double(), 'g', -1, 64)
	case KindBool:
		return strconv.AppendBool(b, v.Bool())
	}
	b = append(b, '[')
	for i := range v.Len() {
		if i > 0 {
			b = append(b, ' ')
		}
		b = v.index(i).appendText(b)
	}
	return append(b, ']')
}

// index returns element i of a list Value.
func (v Value) index(i int) Value {
	switch v.Kind() {
	case KindStringList:
		return StringValue(v.StringList()[i])
	case KindInt64List:
		return Int64Value(v.Int64List()[i])
	case KindDoubleList:
		return DoubleValue(v.DoubleList()[i])
	case KindBoolList:
		return BoolValue(v.BoolList()[i])
	}
	return Value{}
}

// AppendBinary appends the value's binary encoding to b and returns the
// extended buffer. The encoding is a kind byte (the Kind number) followed by:
//
//	null            nothing
//	string          uvarint(len) bytes
//	int64           varint (zig-zag, as encoding/binary)
//	double          8 bytes, the IEEE 754 bits little-endian
//	bool            one byte, 0 or 1
//	list            uvarint(count), then each element as above without kind byte
//
// Every value has exactly one encoding, so equal values (by Equal) have equal
// encodings, and the encoding is stable across versions and platforms.
func (v Value) AppendBinary(b []byte) []byte {
	k := v.Kind()
	b = append(b, byte(k))
	switch k {
	case KindNull:
	case KindString:
		s := v.Str()
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	case KindInt64:
		b = binary.AppendVarint(b, int64(v.num))
	case KindDouble:
		b = binary.LittleEndian.AppendUint64(b, v.num)
	case KindBool:
		b = append(b, byte(v.num))
	case KindStringList:
		l := v.StringList()
		b = binary.AppendUvarint(b, uint64(len(l)))
		for _, s := range l {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	case KindInt64List:
		l := v.Int64List()
		b = binary.AppendUvarint(b, uint64(len(l)))
		for _, x := range l {
			b = binary.AppendVarint(b, x)
		}
	case KindDoubleList:
		l := v.DoubleList()
		b = binary.AppendUvarint(b, uint64(len(l)))
		for _, x := range l {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
		}
	case KindBoolList:
		l := v.BoolList()
		b = binary.AppendUvarint(b, uint64(len(l)))
		for _, x := range l {
			if x {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		}
	}
	return b
}

// ErrCorruptValue is returned, wrapped, by DecodeValue for input that is not
// a value's encoding.
var ErrCorruptValue = errors.New("corrupt value encoding")

// DecodeValue decodes the value encoded at the start of b by AppendBinary,
// and returns it with the number of bytes it took. Strings are copied, so the
// value does not refer to b. Input that is not exactly an encoding (an
// unknown kind, a truncated value, a non-minimal varint, a bool byte other
// than 0 or 1) is an error wrapping ErrCorruptValue.
func DecodeValue(b []byte) (Value, int, error) {
	d := valueDecoder{b: b}
	v := d.readValue()
	if d.err != nil {
		return Value{}, 0, d.err
	}
	return v, d.off, nil
}

// valueDecoder reads an encoding front to back; the first error sticks.
type valueDecoder struct {
	b   []byte
	off int
	err error
}

func (d *valueDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at byte %d", ErrCorruptValue, what, d.off)
	}
}

func (d *valueDecoder) readByte() byte {
	if d.err != nil || d.off >= len(d.b) {
		d.fail("truncated")
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *valueDecoder) readUvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b[d.off:])
	// A final zero byte after others means the same number fits in fewer
	// bytes: reject it, so that every value has one encoding.
	if n <= 0 || (n > 1 && d.b[d.off+n-1] == 0) {
		d.fail("bad varint")
		return 0
	}
	d.off += n
	return x
}

func (d *valueDecoder) readVarint() int64 {
	u := d.readUvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (d *valueDecoder) readUint64() uint64 {
	if d.err != nil || len(d.b)-d.off < 8 {
		d.fail("truncated")
		return 0
	}
	x := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return x
}

func (d *valueDecoder) readString() string {
	n := d.readUvarint()
	if d.err != nil || n > uint64(len(d.b)-d.off) {
		d.fail("truncated string")
		return ""
	}
	s := string(d.b[d.off : d.off+int(n)])
	d.off += int(n)
	return s
}

func (d *valueDecoder) readBool() bool {
	switch d.readByte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.off--
	d.fail("bad bool")
	return false
}

// count reads a list length, bounded by the bytes left (every element takes
// at least one), so that corrupt input cannot make it allocate much.
func (d *valueDecoder) readCount() int {
	n := d.readUvarint()
	if d.err != nil || n > uint64(len(d.b)-d.off) {
		d.fail("bad list length")
		return 0
	}
	return int(n)
}

func (d *valueDecoder) readValue() Value {
	k := Kind(d.readByte())
	if d.err != nil {
		return Value{}
	}
	switch k {
	case KindNull:
		return Value{}
	case KindString:
		return StringValue(d.readString())
	case KindInt64:
		return Int64Value(d.readVarint())
	case KindDouble:
		return DoubleValue(math.Float64frombits(d.readUint64()))
	case KindBool:
		return BoolValue(d.readBool())
	case KindStringList:
		l := make([]string, d.readCount())
		for i := range l {
			l[i] = d.readString()
		}
		return StringListValue(l)
	case KindInt64List:
		l := make([]int64, d.readCount())
		for i := range l {
			l[i] = d.readVarint()
		}
		return Int64ListValue(l)
	case KindDoubleList:
		l := make([]float64, d.readCount())
		for i := range l {
			l[i] = math.Float64frombits(d.readUint64())
		}
		return DoubleListValue(l)
	case KindBoolList:
		l := make([]bool, d.readCount())
		for i := range l {
			l[i] = d.readBool()
		}
		return BoolListValue(l)
	}
	d.off--
	d.fail("unknown kind " + strconv.Itoa(int(k)))
	return Value{}
}
