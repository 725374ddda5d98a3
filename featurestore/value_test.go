package featurestore

import (
	"bytes"
	"errors"
	"math"
	"math/rand"
	"testing"
	"unsafe"
)

func TestValueKinds(t *testing.T) {
	for _, tt := range []struct {
		v    Value
		kind Kind
		any  any
		str  string
	}{
		{Value{}, KindNull, nil, "null"},
		{StringValue("FR"), KindString, "FR", `"FR"`},
		{StringValue(""), KindString, "", `""`},
		{Int64Value(-42), KindInt64, int64(-42), "-42"},
		{DoubleValue(2.5), KindDouble, 2.5, "2.5"},
		{BoolValue(true), KindBool, true, "true"},
		{BoolValue(false), KindBool, false, "false"},
		{StringListValue([]string{"a", "b"}), KindStringList, []string{"a", "b"}, `["a" "b"]`},
		{Int64ListValue([]int64{1, 2}), KindInt64List, []int64{1, 2}, "[1 2]"},
		{DoubleListValue([]float64{0.5}), KindDoubleList, []float64{0.5}, "[0.5]"},
		{BoolListValue([]bool{true, false}), KindBoolList, []bool{true, false}, "[true false]"},
		{DoubleListValue(nil), KindDoubleList, []float64(nil), "[]"},
	} {
		if got := tt.v.Kind(); got != tt.kind {
			t.Errorf("%v: kind %s, want %s", tt.v, got, tt.kind)
		}
		if got := tt.v.String(); got != tt.str {
			t.Errorf("String() = %s, want %s", got, tt.str)
		}
		if got := tt.v.Any(); !equalAny(got, tt.any) {
			t.Errorf("%v: Any() = %#v, want %#v", tt.v, got, tt.any)
		}
		if tt.v.IsNull() != (tt.kind == KindNull) {
			t.Errorf("%v: IsNull %v", tt.v, tt.v.IsNull())
		}
	}
	if unsafe.Sizeof(Value{}) != 24 {
		t.Errorf("Value is %d bytes, want 24", unsafe.Sizeof(Value{}))
	}
	if StringListValue([]string{"a", "b", "c"}).Len() != 3 || StringValue("abcd").Len() != 4 || Int64Value(5).Len() != 0 {
		t.Error("Len")
	}
}

func equalAny(a, b any) bool {
	switch a := a.(type) {
	case []string:
		b := b.([]string)
		return len(a) == len(b) && (len(a) == 0 || a[0] == b[0])
	case []int64:
		b := b.([]int64)
		return len(a) == len(b) && (len(a) == 0 || a[0] == b[0])
	case []float64:
		b := b.([]float64)
		return len(a) == len(b) && (len(a) == 0 || a[0] == b[0])
	case []bool:
		b := b.([]bool)
		return len(a) == len(b) && (len(a) == 0 || a[0] == b[0])
	}
	return a == b
}

func TestKindHelpers(t *testing.T) {
	if KindInt64.ListOf() != KindInt64List || KindBool.ListOf() != KindBoolList || KindNull.ListOf() != KindNull || KindStringList.ListOf() != KindNull {
		t.Error("ListOf")
	}
	if KindDoubleList.Elem() != KindDouble || KindString.Elem() != KindNull {
		t.Error("Elem")
	}
	if !KindStringList.IsList() || KindString.IsList() {
		t.Error("IsList")
	}
	if KindStringList.String() != "string_list" || Kind(99).String() != "Kind(99)" {
		t.Error("String")
	}
}

func TestValueEqual(t *testing.T) {
	nan := math.NaN()
	otherNaN := math.Float64frombits(math.Float64bits(nan) ^ 1)
	for _, tt := range []struct {
		a, b Value
		want bool
	}{
		{Value{}, Value{}, true},
		{StringValue("a"), StringValue("a"), true},
		{StringValue("a"), StringValue("b"), false},
		{StringValue("1"), Int64Value(1), false},
		{Int64Value(1), DoubleValue(1), false},
		{DoubleValue(nan), DoubleValue(nan), true},
		{DoubleValue(nan), DoubleValue(otherNaN), false},
		{DoubleValue(0), DoubleValue(math.Copysign(0, -1)), false},
		{BoolValue(true), BoolValue(true), true},
		{BoolValue(true), BoolValue(false), false},
		{StringListValue([]string{"a"}), StringListValue([]string{"a"}), true},
		{StringListValue([]string{"a"}), StringListValue([]string{"a", "b"}), false},
		{StringListValue(nil), StringListValue([]string{}), true},
		{StringListValue(nil), Int64ListValue(nil), false},
		{DoubleListValue([]float64{nan}), DoubleListValue([]float64{nan}), true},
		{DoubleListValue([]float64{0}), DoubleListValue([]float64{math.Copysign(0, -1)}), false},
		{Int64ListValue([]int64{1, 2}), Int64ListValue([]int64{1, 3}), false},
		{BoolListValue([]bool{true}), BoolListValue([]bool{true}), true},
	} {
		if got := tt.a.Equal(tt.b); got != tt.want {
			t.Errorf("%v.Equal(%v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := tt.b.Equal(tt.a); got != tt.want {
			t.Errorf("%v.Equal(%v) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
}

// TestValueCompare checks Compare against a list in ascending order: every
// pair compares as its places, and 0 exactly when Equal.
func TestValueCompare(t *testing.T) {
	nan := math.NaN()
	negNaN := math.Copysign(nan, -1)
	otherNaN := math.Float64frombits(math.Float64bits(nan) + 2)
	ascending := []Value{
		{},
		StringValue(""),
		StringValue("a"),
		StringValue("ab"),
		StringValue("b"),
		StringValue("\xff"),
		Int64Value(math.MinInt64),
		Int64Value(-1),
		Int64Value(0),
		Int64Value(2),
		Int64Value(math.MaxInt64),
		DoubleValue(negNaN),
		DoubleValue(math.Inf(-1)),
		DoubleValue(-math.MaxFloat64),
		DoubleValue(-1),
		DoubleValue(-math.SmallestNonzeroFloat64),
		DoubleValue(math.Copysign(0, -1)),
		DoubleValue(0),
		DoubleValue(math.SmallestNonzeroFloat64),
		DoubleValue(1),
		DoubleValue(math.MaxFloat64),
		DoubleValue(math.Inf(1)),
		DoubleValue(nan),
		DoubleValue(otherNaN),
		BoolValue(false),
		BoolValue(true),
		StringListValue(nil),
		StringListValue([]string{"a"}),
		StringListValue([]string{"a", ""}),
		StringListValue([]string{"b"}),
		Int64ListValue([]int64{-1}),
		Int64ListValue([]int64{1}),
		DoubleListValue([]float64{math.Copysign(0, -1)}),
		DoubleListValue([]float64{0}),
		DoubleListValue([]float64{0, nan}),
		BoolListValue([]bool{false}),
		BoolListValue([]bool{true}),
		BoolListValue([]bool{true, false}),
	}
	if math.Float64bits(nan) >= math.Float64bits(otherNaN) {
		t.Fatalf("otherNaN %x is not above NaN %x", math.Float64bits(otherNaN), math.Float64bits(nan))
	}
	for i, a := range ascending {
		for j, b := range ascending {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := a.Compare(b); got != want {
				t.Errorf("%v.Compare(%v) = %d, want %d", a, b, got, want)
			}
			if eq := a.Equal(b); eq != (i == j) {
				t.Errorf("%v.Equal(%v) = %v", a, b, eq)
			}
		}
	}
}

func TestValueAccessorPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"Str":        func() { Int64Value(1).Str() },
		"Int64":      func() { StringValue("1").Int64() },
		"Double":     func() { Int64Value(1).Double() },
		"Bool":       func() { Value{}.Bool() },
		"StringList": func() { StringValue("a").StringList() },
		"Int64List":  func() { DoubleListValue(nil).Int64List() },
		"DoubleList": func() { Int64ListValue(nil).DoubleList() },
		"BoolList":   func() { BoolValue(true).BoolList() },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s on the wrong kind did not panic", name)
				}
			}()
			f()
		}()
	}
}

// TestValueEncoding pins the binary encoding: stored states depend on it.
func TestValueEncoding(t *testing.T) {
	for _, tt := range []struct {
		v    Value
		want []byte
	}{
		{Value{}, []byte{0}},
		{StringValue("FR"), []byte{1, 2, 'F', 'R'}},
		{StringValue(""), []byte{1, 0}},
		{Int64Value(0), []byte{2, 0}},
		{Int64Value(-1), []byte{2, 1}},
		{Int64Value(64), []byte{2, 0x80, 1}},
		{DoubleValue(1), []byte{3, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f}},
		{BoolValue(true), []byte{4, 1}},
		{BoolValue(false), []byte{4, 0}},
		{StringListValue([]string{"a", ""}), []byte{5, 2, 1, 'a', 0}},
		{Int64ListValue([]int64{1, -1}), []byte{6, 2, 2, 1}},
		{DoubleListValue([]float64{math.Copysign(0, -1)}), []byte{7, 1, 0, 0, 0, 0, 0, 0, 0, 0x80}},
		{BoolListValue([]bool{true, false}), []byte{8, 2, 1, 0}},
		{BoolListValue(nil), []byte{8, 0}},
	} {
		got := tt.v.AppendBinary([]byte{0xaa})
		if !bytes.Equal(got[1:], tt.want) || got[0] != 0xaa {
			t.Errorf("%v encodes as %x, want %x", tt.v, got[1:], tt.want)
		}
		back, n, err := DecodeValue(append(tt.want, 0xbb))
		if err != nil || n != len(tt.want) || !back.Equal(tt.v) {
			t.Errorf("decode %x: %v, %d, %v; want %v", tt.want, back, n, err, tt.v)
		}
	}
}

func randomValue(rng *rand.Rand) Value {
	str := func() string {
		b := make([]byte, rng.Intn(20))
		rng.Read(b)
		return string(b)
	}
	n := rng.Intn(5)
	switch Kind(rng.Intn(9)) {
	case KindString:
		return StringValue(str())
	case KindInt64:
		return Int64Value(int64(rng.Uint64()))
	case KindDouble:
		return DoubleValue(math.Float64frombits(rng.Uint64()))
	case KindBool:
		return BoolValue(rng.Intn(2) == 0)
	case KindStringList:
		l := make([]string, n)
		for i := range l {
			l[i] = str()
		}
		return StringListValue(l)
	case KindInt64List:
		l := make([]int64, n)
		for i := range l {
			l[i] = int64(rng.Uint64()) >> rng.Intn(64)
		}
		return Int64ListValue(l)
	case KindDoubleList:
		l := make([]float64, n)
		for i := range l {
			l[i] = math.Float64frombits(rng.Uint64())
		}
		return DoubleListValue(l)
	case KindBoolList:
		l := make([]bool, n)
		for i := range l {
			l[i] = rng.Intn(2) == 0
		}
		return BoolListValue(l)
	}
	return Value{}
}

func TestValueRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var buf []byte
	var vals []Value
	for range 2000 {
		v := randomValue(rng)
		vals = append(vals, v)
		buf = v.AppendBinary(buf)
	}
	for i, want := range vals {
		v, n, err := DecodeValue(buf)
		if err != nil || !v.Equal(want) {
			t.Fatalf("value %d: decoded %v, %v; want %v", i, v, err, want)
		}
		buf = buf[n:]
	}
	if len(buf) != 0 {
		t.Fatalf("%d bytes left", len(buf))
	}
}

func TestDecodeValueErrors(t *testing.T) {
	for _, b := range [][]byte{
		{},
		{9},                   // unknown kind
		{1, 5, 'a'},           // truncated string
		{2},                   // truncated int
		{2, 0x80, 0x00},       // non-minimal varint
		{3, 0, 0, 0},          // truncated double
		{4, 2},                // bool other than 0 or 1
		{5, 0xff, 0xff, 0x7f}, // list longer than the input
		{6, 2, 1},             // truncated list
		{8, 1, 7},             // bad bool in a list
		{2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // varint overflow
	} {
		if v, n, err := DecodeValue(b); !errors.Is(err, ErrCorruptValue) {
			t.Errorf("DecodeValue(%x) = %v, %d, %v; want ErrCorruptValue", b, v, n, err)
		}
	}
}

func TestDecodedStringsAreCopies(t *testing.T) {
	b := StringValue("hello").AppendBinary(nil)
	v, _, err := DecodeValue(b)
	if err != nil {
		t.Fatal(err)
	}
	b[2] = 'j'
	if v.Str() != "hello" {
		t.Errorf("decoded string changed with its input: %q", v.Str())
	}
}

func TestValueAllocations(t *testing.T) {
	s := "merchant-42"
	l := []float64{1, 2, 3}
	buf := make([]byte, 0, 256)
	var sink Value
	allocs := testing.AllocsPerRun(100, func() {
		sink = StringValue(s)
		_ = sink.Str()
		sink = Int64Value(7)
		sink = DoubleValue(2.5)
		sink = BoolValue(true)
		sink = DoubleListValue(l)
		_ = sink.DoubleList()
		buf = sink.AppendBinary(buf[:0])
		buf = StringValue(s).AppendBinary(buf)
		_ = sink.Kind()
	})
	if allocs != 0 {
		t.Errorf("%v allocations building and encoding values, want 0", allocs)
	}
}

func FuzzDecodeValue(f *testing.F) {
	rng := rand.New(rand.NewSource(2))
	for range 20 {
		f.Add(randomValue(rng).AppendBinary(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, n, err := DecodeValue(b)
		if err != nil {
			if !errors.Is(err, ErrCorruptValue) {
				t.Fatalf("error does not wrap ErrCorruptValue: %v", err)
			}
			return
		}
		if out := v.AppendBinary(nil); !bytes.Equal(out, b[:n]) {
			t.Fatalf("accepted %x, which encodes back as %x", b[:n], out)
		}
		_ = v.String()
	})
}

func BenchmarkValueAppendBinary(b *testing.B) {
	vals := []Value{StringValue("merchant-42"), Int64Value(123456), DoubleValue(12.5), BoolValue(true)}
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		buf = vals[i%len(vals)].AppendBinary(buf[:0])
	}
}

func BenchmarkDecodeValue(b *testing.B) {
	enc := DoubleValue(12.5).AppendBinary(nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeValue(enc); err != nil {
			b.Fatal(err)
		}
	}
}
