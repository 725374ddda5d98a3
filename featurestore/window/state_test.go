package window_test

import (
	"bytes"
	"errors"
	"math"
	"math/rand"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

var (
	i64 = featurestore.Int64Value
	f64 = featurestore.DoubleValue
	str = featurestore.StringValue
)

func newStates() map[string]func() window.State {
	return map[string]func() window.State{
		"count":             func() window.State { return window.NewCount() },
		"sum int64":         func() window.State { return window.NewSum(featurestore.KindInt64) },
		"sum double":        func() window.State { return window.NewSum(featurestore.KindDouble) },
		"mean int64":        func() window.State { return window.NewMean(featurestore.KindInt64) },
		"mean double":       func() window.State { return window.NewMean(featurestore.KindDouble) },
		"stddev int64":      func() window.State { return window.NewStddev(featurestore.KindInt64) },
		"stddev double":     func() window.State { return window.NewStddev(featurestore.KindDouble) },
		"min int64":         func() window.State { return window.NewMin(featurestore.KindInt64) },
		"min double":        func() window.State { return window.NewMin(featurestore.KindDouble) },
		"max int64":         func() window.State { return window.NewMax(featurestore.KindInt64) },
		"max double":        func() window.State { return window.NewMax(featurestore.KindDouble) },
		"last":              func() window.State { return window.NewLast() },
		"last_n string":     func() window.State { return window.NewLastN(featurestore.KindString, 3) },
		"last_n double":     func() window.State { return window.NewLastN(featurestore.KindDouble, 3) },
		"count_distinct":    func() window.State { return window.NewCountDistinct(14) },
		"count_distinct p4": func() window.State { return window.NewCountDistinct(4) },
	}
}

// TestEmptyResults: count, sum and count_distinct of nothing are 0 and
// present, last_n an empty list; the others are absent.
func TestEmptyResults(t *testing.T) {
	want := map[string]featurestore.Value{
		"count":             i64(0),
		"sum int64":         i64(0),
		"sum double":        f64(0),
		"count_distinct":    i64(0),
		"count_distinct p4": i64(0),
		"last_n string":     featurestore.StringListValue(nil),
		"last_n double":     featurestore.DoubleListValue(nil),
	}
	for name, fresh := range newStates() {
		s := fresh()
		got, ok := s.Result()
		w, present := want[name]
		if ok != present || (present && !got.Equal(w)) || (!present && !got.IsNull()) {
			t.Errorf("%s of no events: %v, %v; want %v, %v", name, got, ok, w, present)
		}
		// Empty states round-trip and merge into empty states.
		b := s.AppendBinary(nil)
		u := fresh()
		if err := u.UnmarshalBinary(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		u.Merge(s)
		if got2, ok2 := u.Result(); ok2 != ok || !got2.Equal(got) {
			t.Errorf("%s: empty merge changed the result", name)
		}
	}
}

type step struct {
	v featurestore.Value
	k window.OrderKey
}

func at(ms int64, p int32, off int64) window.OrderKey {
	return window.OrderKey{Time: ms, Partition: p, Offset: off}
}

// TestAggregations checks each aggregation on small inputs, in the given
// order and reversed, and split in two merged halves.
func TestAggregations(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	negZero := math.Copysign(0, -1)
	for _, tt := range []struct {
		name    string
		state   string
		in      []step
		want    featurestore.Value
		present bool
	}{
		{"count counts nulls too", "count", []step{{featurestore.Value{}, at(1, 0, 1)}, {i64(3), at(2, 0, 2)}}, i64(2), true},
		{"int sum", "sum int64", []step{{i64(3), at(1, 0, 1)}, {i64(-10), at(2, 0, 2)}}, i64(-7), true},
		{"int sum skips other kinds", "sum int64", []step{{i64(3), at(1, 0, 1)}, {f64(2), at(2, 0, 2)}, {str("x"), at(2, 0, 3)}}, i64(3), true},
		{"int sum saturates up", "sum int64", []step{{i64(math.MaxInt64), at(1, 0, 1)}, {i64(1), at(2, 0, 2)}}, i64(math.MaxInt64), true},
		{"int sum saturates down", "sum int64", []step{{i64(math.MinInt64), at(1, 0, 1)}, {i64(-1), at(2, 0, 2)}}, i64(math.MinInt64), true},
		{"int sum exact past overflow", "sum int64", []step{{i64(math.MaxInt64), at(1, 0, 1)}, {i64(math.MaxInt64), at(2, 0, 2)}, {i64(math.MinInt64), at(3, 0, 3)}, {i64(math.MinInt64 + 2), at(4, 0, 4)}}, i64(0), true},
		{"double sum exact", "sum double", []step{{f64(1e16), at(1, 0, 1)}, {f64(1), at(2, 0, 2)}, {f64(-1e16), at(3, 0, 3)}}, f64(1), true},
		{"double sum no overflow in between", "sum double", []step{{f64(math.MaxFloat64), at(1, 0, 1)}, {f64(math.MaxFloat64), at(2, 0, 2)}, {f64(-math.MaxFloat64), at(3, 0, 3)}}, f64(math.MaxFloat64), true},
		{"double sum overflows to inf", "sum double", []step{{f64(math.MaxFloat64), at(1, 0, 1)}, {f64(math.MaxFloat64), at(2, 0, 2)}}, f64(inf), true},
		{"double sum ties to even", "sum double", []step{{f64(1), at(1, 0, 1)}, {f64(math.Ldexp(1, -53)), at(2, 0, 2)}}, f64(1), true},
		{"double sum above the tie", "sum double", []step{{f64(1), at(1, 0, 1)}, {f64(math.Ldexp(1, -53)), at(2, 0, 2)}, {f64(math.Ldexp(1, -100)), at(3, 0, 3)}}, f64(1 + math.Ldexp(1, -52)), true},
		{"double sum of subnormals", "sum double", []step{{f64(math.SmallestNonzeroFloat64), at(1, 0, 1)}, {f64(math.SmallestNonzeroFloat64), at(2, 0, 2)}}, f64(2 * math.SmallestNonzeroFloat64), true},
		{"double sum -0 is +0", "sum double", []step{{f64(negZero), at(1, 0, 1)}}, f64(0), true},
		{"double sum NaN", "sum double", []step{{f64(1), at(1, 0, 1)}, {f64(nan), at(2, 0, 2)}}, f64(nan), true},
		{"double sum inf", "sum double", []step{{f64(1), at(1, 0, 1)}, {f64(inf), at(2, 0, 2)}}, f64(inf), true},
		{"double sum inf - inf", "sum double", []step{{f64(-inf), at(1, 0, 1)}, {f64(inf), at(2, 0, 2)}}, f64(nan), true},
		{"int mean", "mean int64", []step{{i64(1), at(1, 0, 1)}, {i64(2), at(2, 0, 2)}}, f64(1.5), true},
		{"int mean rounds once", "mean int64", []step{{i64(1), at(1, 0, 1)}, {i64(1), at(2, 0, 2)}, {i64(2), at(3, 0, 3)}}, f64(4.0 / 3), true},
		{"int mean of huge", "mean int64", []step{{i64(math.MaxInt64), at(1, 0, 1)}, {i64(math.MaxInt64), at(2, 0, 2)}}, f64(math.MaxInt64), true},
		{"double mean exact", "mean double", []step{{f64(1e16), at(1, 0, 1)}, {f64(2), at(2, 0, 2)}, {f64(-1e16), at(3, 0, 3)}}, f64(2.0 / 3), true},
		{"double mean of max", "mean double", []step{{f64(math.MaxFloat64), at(1, 0, 1)}, {f64(math.MaxFloat64), at(2, 0, 2)}}, f64(math.MaxFloat64), true},
		{"stddev of one", "stddev double", []step{{f64(0.1), at(1, 0, 1)}}, f64(0), true},
		{"stddev of equal values", "stddev double", []step{{f64(0.1), at(1, 0, 1)}, {f64(0.1), at(2, 0, 2)}, {f64(0.1), at(3, 0, 3)}}, f64(0), true},
		{"stddev", "stddev int64", []step{{i64(2), at(1, 0, 1)}, {i64(4), at(2, 0, 2)}, {i64(4), at(3, 0, 3)}, {i64(4), at(4, 0, 4)}, {i64(5), at(5, 0, 5)}, {i64(5), at(6, 0, 6)}, {i64(7), at(7, 0, 7)}, {i64(9), at(8, 0, 8)}}, f64(2), true},
		{"stddev of huge doubles", "stddev double", []step{{f64(1e200), at(1, 0, 1)}, {f64(-1e200), at(2, 0, 2)}}, f64(1e200), true},
		{"stddev with cancellation", "stddev double", []step{{f64(1e9 + 1), at(1, 0, 1)}, {f64(1e9 - 1), at(2, 0, 2)}}, f64(1), true},
		{"stddev NaN", "stddev double", []step{{f64(1), at(1, 0, 1)}, {f64(inf), at(2, 0, 2)}}, f64(nan), true},
		{"min", "min int64", []step{{i64(5), at(1, 0, 1)}, {i64(-5), at(2, 0, 2)}, {i64(7), at(3, 0, 3)}}, i64(-5), true},
		{"max", "max int64", []step{{i64(5), at(1, 0, 1)}, {i64(-5), at(2, 0, 2)}, {i64(7), at(3, 0, 3)}}, i64(7), true},
		{"min of zeros is -0", "min double", []step{{f64(0), at(1, 0, 1)}, {f64(negZero), at(2, 0, 2)}}, f64(negZero), true},
		{"max of zeros is +0", "max double", []step{{f64(negZero), at(1, 0, 1)}, {f64(0), at(2, 0, 2)}}, f64(0), true},
		{"min with NaN", "min double", []step{{f64(1), at(1, 0, 1)}, {f64(nan), at(2, 0, 2)}}, f64(nan), true},
		{"max with -inf", "max double", []step{{f64(-inf), at(1, 0, 1)}}, f64(-inf), true},
		{"last by time", "last", []step{{str("b"), at(2, 0, 1)}, {str("a"), at(1, 0, 2)}}, str("b"), true},
		{"last tie by partition", "last", []step{{str("p1"), at(1, 1, 1)}, {str("p0"), at(1, 0, 9)}}, str("p1"), true},
		{"last tie by offset", "last", []step{{str("o9"), at(1, 0, 9)}, {str("o8"), at(1, 0, 8)}}, str("o9"), true},
		{"last exact tie by value", "last", []step{{str("a"), at(1, 0, 1)}, {str("b"), at(1, 0, 1)}, {str("ab"), at(1, 0, 1)}}, str("b"), true},
		{"last exact tie value beats null", "last", []step{{str("a"), at(1, 0, 1)}, {featurestore.Value{}, at(1, 0, 1)}}, str("a"), true},
		{"last exact tie of kinds", "last", []step{{i64(7), at(1, 0, 1)}, {str("a"), at(1, 0, 1)}, {f64(7), at(1, 0, 1)}}, f64(7), true},
		{"last keeps null", "last", []step{{str("old"), at(1, 0, 1)}, {featurestore.Value{}, at(2, 0, 2)}}, featurestore.Value{}, true},
		{"last_n newest first", "last_n string", []step{{str("a"), at(1, 0, 1)}, {str("d"), at(4, 0, 4)}, {str("b"), at(2, 0, 2)}, {str("c"), at(3, 0, 3)}}, featurestore.StringListValue([]string{"d", "c", "b"}), true},
		{"last_n skips nulls", "last_n string", []step{{str("a"), at(1, 0, 1)}, {featurestore.Value{}, at(4, 0, 4)}}, featurestore.StringListValue([]string{"a"}), true},
		{"last_n ties", "last_n double", []step{{f64(1), at(1, 0, 1)}, {f64(2), at(1, 1, 0)}, {f64(3), at(1, 0, 2)}}, featurestore.DoubleListValue([]float64{2, 3, 1}), true},
		{"last_n exact ties by value", "last_n string", []step{{str("a"), at(1, 0, 1)}, {str("c"), at(1, 0, 1)}, {str("b"), at(1, 0, 1)}, {str("d"), at(0, 0, 1)}}, featurestore.StringListValue([]string{"c", "b", "a"}), true},
		{"last_n exact ties of equal values", "last_n string", []step{{str("a"), at(1, 0, 1)}, {str("a"), at(1, 0, 1)}, {str("b"), at(2, 0, 2)}, {str("a"), at(1, 0, 1)}}, featurestore.StringListValue([]string{"b", "a", "a"}), true},
		{"last_n exact tie at the end", "last_n double", []step{{f64(5), at(3, 0, 3)}, {f64(4), at(2, 0, 2)}, {f64(1), at(1, 0, 1)}, {f64(2), at(1, 0, 1)}}, featurestore.DoubleListValue([]float64{5, 4, 2}), true},
		{"count_distinct exact when small", "count_distinct", []step{{str("a"), at(1, 0, 1)}, {str("b"), at(2, 0, 2)}, {str("a"), at(3, 0, 3)}, {featurestore.Value{}, at(4, 0, 4)}}, i64(2), true},
		{"count_distinct types differ", "count_distinct", []step{{str("1"), at(1, 0, 1)}, {i64(1), at(2, 0, 2)}}, i64(2), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fresh := newStates()[tt.state]
			orders := map[string][]step{"in order": tt.in, "reversed": reversed(tt.in)}
			for how, in := range orders {
				s := fresh()
				for _, x := range in {
					s.Add(x.v, x.k)
				}
				checkResult(t, how, s, tt.want, tt.present)
				a, b := fresh(), fresh()
				for i, x := range in {
					if i%2 == 0 {
						a.Add(x.v, x.k)
					} else {
						b.Add(x.v, x.k)
					}
				}
				enc := b.AppendBinary(nil)
				c := fresh()
				if err := c.UnmarshalBinary(enc); err != nil {
					t.Fatal(err)
				}
				a.Merge(c)
				checkResult(t, how+", merged halves", a, tt.want, tt.present)
			}
		})
	}
}

func reversed(in []step) []step {
	out := make([]step, len(in))
	for i, x := range in {
		out[len(in)-1-i] = x
	}
	return out
}

func checkResult(t *testing.T, how string, s window.State, want featurestore.Value, present bool) {
	t.Helper()
	got, ok := s.Result()
	if ok != present || !got.Equal(want) {
		t.Errorf("%s: got %v (%v), want %v (%v)", how, got, ok, want, present)
	}
}

func TestMergeMismatchPanics(t *testing.T) {
	for _, tt := range []struct {
		name string
		a, b window.State
	}{
		{"types", window.NewCount(), window.NewLast()},
		{"kinds", window.NewSum(featurestore.KindInt64), window.NewSum(featurestore.KindDouble)},
		{"precision", window.NewCountDistinct(10), window.NewCountDistinct(11)},
		{"n", window.NewLastN(featurestore.KindInt64, 2), window.NewLastN(featurestore.KindInt64, 3)},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("merge of mismatched %s did not panic", tt.name)
				}
			}()
			tt.a.Merge(tt.b)
		}()
	}
}

func TestUnmarshalWrongState(t *testing.T) {
	c := window.NewCount()
	c.Add(featurestore.Value{}, at(1, 0, 1))
	b := c.AppendBinary(nil)
	if err := window.NewLast().UnmarshalBinary(b); err == nil {
		t.Error("a count decoded as last")
	}
	if err := window.NewCount().UnmarshalBinary(append([]byte{9}, b[1:]...)); err == nil {
		t.Error("unknown version accepted")
	}
	if err := window.NewCount().UnmarshalBinary(append(b, 0)); err == nil {
		t.Error("trailing bytes accepted")
	}
	var ok window.State = window.NewCount()
	if err := ok.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if v, _ := ok.Result(); v.Int64() != 1 {
		t.Errorf("decoded count %v", v)
	}
}

// edgeDouble draws doubles at the edges of the encodings: subnormals,
// the largest, negative zero, any bit pattern, small decimals.
func edgeDouble(rng *rand.Rand) float64 {
	switch rng.Intn(12) {
	case 0:
		return math.Float64frombits(rng.Uint64() & (1<<52 - 1)) // subnormal
	case 1:
		return -math.Float64frombits(rng.Uint64() & (1<<52 - 1))
	case 2:
		return math.MaxFloat64 * (rng.Float64()*2 - 1)
	case 3:
		return math.Copysign(0, -1)
	case 4:
		return 0
	case 5:
		f := math.Float64frombits(rng.Uint64())
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 1
		}
		return f
	case 6:
		return float64(rng.Intn(1000)) / 100
	case 7:
		return -float64(rng.Intn(1000)) / 100
	}
	return (rng.Float64()*2 - 1) * math.Pow(2, float64(rng.Intn(200)-100))
}

// edgeInt draws int64s at the edges: the extremes, any bit pattern, small.
func edgeInt(rng *rand.Rand) int64 {
	switch rng.Intn(6) {
	case 0:
		return math.MaxInt64
	case 1:
		return math.MinInt64
	case 2:
		return int64(rng.Uint64())
	}
	return rng.Int63n(2000) - 1000
}

// stateMaker makes empty states of one aggregation and draws its values.
type stateMaker struct {
	name string
	mk   func() window.State
	val  func(rng *rand.Rand) featurestore.Value
}

func stateMakers() []stateMaker {
	d := func(rng *rand.Rand) featurestore.Value { return featurestore.DoubleValue(edgeDouble(rng)) }
	i := func(rng *rand.Rand) featurestore.Value { return featurestore.Int64Value(edgeInt(rng)) }
	s := func(rng *rand.Rand) featurestore.Value {
		return featurestore.StringValue(string(rune('a'+rng.Intn(26))) + string(rune('a'+rng.Intn(26))) + string(rune('a'+rng.Intn(5))))
	}
	return []stateMaker{
		{"sum_double", func() window.State { return window.NewSum(featurestore.KindDouble) }, d},
		{"sum_int", func() window.State { return window.NewSum(featurestore.KindInt64) }, i},
		{"mean_double", func() window.State { return window.NewMean(featurestore.KindDouble) }, d},
		{"mean_int", func() window.State { return window.NewMean(featurestore.KindInt64) }, i},
		{"stddev_double", func() window.State { return window.NewStddev(featurestore.KindDouble) }, d},
		{"stddev_int", func() window.State { return window.NewStddev(featurestore.KindInt64) }, i},
		{"min_double", func() window.State { return window.NewMin(featurestore.KindDouble) }, d},
		{"max_int", func() window.State { return window.NewMax(featurestore.KindInt64) }, i},
		{"distinct_p4", func() window.State { return window.NewCountDistinct(4) }, s},
		{"distinct_p5", func() window.State { return window.NewCountDistinct(5) }, s},
		{"distinct_p10", func() window.State { return window.NewCountDistinct(10) }, s},
		{"lastn_str", func() window.State { return window.NewLastN(featurestore.KindString, 3) }, s},
		{"last", func() window.State { return window.NewLast() }, s},
	}
}

// roundTrip returns a copy of s through its encoding, which must encode
// back to the same bytes.
func roundTrip(t *testing.T, mk func() window.State, s window.State) window.State {
	t.Helper()
	b := s.AppendBinary(nil)
	c := mk()
	if err := c.UnmarshalBinary(b); err != nil {
		t.Fatalf("decode of an encoding: %v", err)
	}
	if b2 := c.AppendBinary(nil); !bytes.Equal(b, b2) {
		t.Fatalf("encode→decode→encode differs:\n%x\n%x", b, b2)
	}
	return c
}

// TestStateMergeLossless: for random event sets split into three
// parts, every merge order and grouping, with encode/decode round trips in
// between, gives the same bytes as adding every event to one state.
func TestStateMergeLossless(t *testing.T) {
	rng := rand.New(rand.NewSource(42))
	for _, m := range stateMakers() {
		for iter := 0; iter < 300; iter++ {
			n := rng.Intn(40)
			if rng.Intn(5) == 0 {
				n = rng.Intn(400)
			}
			parts := [3]window.State{m.mk(), m.mk(), m.mk()}
			all := m.mk()
			for e := 0; e < n; e++ {
				v := m.val(rng)
				k := window.OrderKey{Time: 1_700_000_000_000 + int64(rng.Intn(1000)), Partition: int32(rng.Intn(3)), Offset: int64(e)}
				parts[rng.Intn(3)].Add(v, k)
				all.Add(v, k)
			}
			want := all.AppendBinary(nil)
			orders := [][3]int{{0, 1, 2}, {2, 1, 0}, {1, 0, 2}, {2, 0, 1}}
			for _, o := range orders {
				// ((a + b) + c)
				acc := roundTrip(t, m.mk, parts[o[0]])
				acc.Merge(roundTrip(t, m.mk, parts[o[1]]))
				acc = roundTrip(t, m.mk, acc)
				acc.Merge(roundTrip(t, m.mk, parts[o[2]]))
				if got := acc.AppendBinary(nil); !bytes.Equal(got, want) {
					t.Fatalf("%s iter %d order %v: merged %x, want %x", m.name, iter, o, got, want)
				}
				// (a + (b + c)), merging into an empty state first
				bc := m.mk()
				bc.Merge(parts[o[1]])
				bc.Merge(parts[o[2]])
				a := m.mk()
				a.Merge(parts[o[0]])
				a.Merge(bc)
				if got := a.AppendBinary(nil); !bytes.Equal(got, want) {
					t.Fatalf("%s iter %d order %v: a+(b+c) %x, want %x", m.name, iter, o, got, want)
				}
				if rv, _ := a.Result(); !rv.Equal(resultOf(all)) && !(rv.Kind() == featurestore.KindDouble && math.IsNaN(rv.Double())) {
					t.Fatalf("%s: result %v, want %v", m.name, rv, resultOf(all))
				}
			}
		}
	}
}

// TestStateTruncation: every strict prefix of a valid encoding and
// every single-byte change is an error wrapping ErrCorrupt or decodes to
// something that encodes back identically; never a panic.
func TestStateTruncation(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for _, m := range stateMakers() {
		for iter := 0; iter < 40; iter++ {
			s := m.mk()
			for e := 0; e < rng.Intn(60); e++ {
				s.Add(m.val(rng), window.OrderKey{Time: int64(rng.Intn(1 << 40)), Partition: int32(rng.Intn(4)), Offset: int64(e)})
			}
			b := s.AppendBinary(nil)
			for cut := 0; cut < len(b); cut++ {
				c := m.mk()
				err := c.UnmarshalBinary(b[:cut])
				if err == nil {
					t.Fatalf("%s: prefix of %d of %d bytes accepted", m.name, cut, len(b))
				}
				if !errors.Is(err, window.ErrCorrupt) {
					t.Fatalf("%s: %v does not wrap ErrCorrupt", m.name, err)
				}
			}
			for i := 0; i < len(b); i++ {
				x := bytes.Clone(b)
				x[i] ^= byte(1 << rng.Intn(8))
				c := m.mk()
				if err := c.UnmarshalBinary(x); err != nil {
					if !errors.Is(err, window.ErrCorrupt) {
						t.Fatalf("%s: %v does not wrap ErrCorrupt", m.name, err)
					}
					continue
				}
				if y := c.AppendBinary(nil); !bytes.Equal(x, y) {
					t.Fatalf("%s: accepted %x, encodes back as %x", m.name, x, y)
				}
				c.Result()
			}
		}
	}
}
