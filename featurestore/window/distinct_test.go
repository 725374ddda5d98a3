package window_test

import (
	"bytes"
	"fmt"
	"math"
	"math/rand"
	"strconv"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

func distinctOf(p int, vals []featurestore.Value) *window.CountDistinct {
	c := window.NewCountDistinct(p)
	for _, v := range vals {
		c.Add(v, window.OrderKey{})
	}
	return c
}

func estimate(c *window.CountDistinct) int64 {
	v, _ := c.Result()
	return v.Int64()
}

func stringValues(prefix string, n int) []featurestore.Value {
	out := make([]featurestore.Value, n)
	for i := range out {
		out[i] = featurestore.StringValue(prefix + strconv.Itoa(i))
	}
	return out
}

// TestCountDistinctExactWhileSparse: up to SparseMax(p) distinct values the
// count is exact, duplicates included; one more turns the sketch dense.
func TestCountDistinctExactWhileSparse(t *testing.T) {
	for _, p := range []int{4, 8, 14} {
		limit := window.SparseMax(p)
		vals := stringValues("m", limit)
		vals = append(vals, vals[:limit/2]...) // duplicates
		c := distinctOf(p, vals)
		if got := estimate(c); got != int64(limit) || c.IsDense() {
			t.Errorf("p=%d: %d distinct values: estimate %d (dense %v), want exact", p, limit, got, c.IsDense())
		}
		c.Add(featurestore.StringValue("one more"), window.OrderKey{})
		if !c.IsDense() {
			t.Errorf("p=%d: %d distinct values still sparse", p, limit+1)
		}
	}
	if got := estimate(distinctOf(14, []featurestore.Value{i64(1), str("1"), featurestore.BoolValue(true), i64(1)})); got != 3 {
		t.Errorf("typed values: %d distinct, want 3", got)
	}
}

// TestCountDistinctMergeInvariance: the same set of values, added in any
// order, split over any states (overlapping) and merged in any tree, with
// round trips on the way, gives identical bytes and the identical estimate,
// sparse, dense, and across the change of form.
func TestCountDistinctMergeInvariance(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for _, p := range []int{4, 10, 14} {
		for _, n := range []int{0, 1, 7, window.SparseMax(p), window.SparseMax(p) + 1, 3000} {
			vals := stringValues(fmt.Sprintf("p%dn%d-", p, n), n)
			want := distinctOf(p, vals)
			wantBytes := want.AppendBinary(nil)
			for trial := range 5 {
				// Split into overlapping parts.
				parts := make([]*window.CountDistinct, 1+rng.Intn(6))
				for i := range parts {
					parts[i] = window.NewCountDistinct(p)
				}
				for _, v := range vals {
					for range 1 + rng.Intn(2) {
						parts[rng.Intn(len(parts))].Add(v, window.OrderKey{})
					}
				}
				for len(parts) > 1 {
					i, j := rng.Intn(len(parts)), rng.Intn(len(parts))
					if i == j {
						continue
					}
					parts[i].Merge(parts[j])
					if rng.Intn(2) == 0 {
						b := parts[i].AppendBinary(nil)
						parts[i] = window.NewCountDistinct(p)
						if err := parts[i].UnmarshalBinary(b); err != nil {
							t.Fatal(err)
						}
					}
					parts = append(parts[:j], parts[j+1:]...)
				}
				if got := parts[0].AppendBinary(nil); !bytes.Equal(got, wantBytes) {
					t.Fatalf("p=%d n=%d trial %d: merged sketch differs from the one built directly", p, n, trial)
				}
				if estimate(parts[0]) != estimate(want) {
					t.Fatalf("p=%d n=%d: estimates differ", p, n)
				}
			}
		}
	}
}

// TestCountDistinctAccuracy: estimates within 4 standard errors
// (1.04/sqrt(2^p)) of the true count, over the whole range.
func TestCountDistinctAccuracy(t *testing.T) {
	ns := []int{100, 1000, 5000, 20000, 100000, 400000}
	if testing.Short() {
		ns = []int{1000, 20000}
	}
	for _, p := range []int{4, 8, 10, 12, 14, 16} {
		se := 1.04 / math.Sqrt(float64(int(1)<<p))
		c := window.NewCountDistinct(p)
		added := 0
		for _, n := range ns {
			for ; added < n; added++ {
				c.Add(featurestore.Int64Value(int64(added)*7919+int64(p)), window.OrderKey{})
			}
			got := float64(estimate(c))
			if rel := math.Abs(got-float64(n)) / float64(n); rel > 4*se {
				t.Errorf("p=%d n=%d: estimate %.0f, relative error %.4f > 4 standard errors (%.4f)", p, n, got, rel, 4*se)
			}
		}
	}
}

// TestCountDistinctSize reports and bounds the encoded size of a sketch for
// 1, 10 and 1000 distinct values.
func TestCountDistinctSize(t *testing.T) {
	for _, tt := range []struct {
		p, n, max int
	}{
		{14, 1, 14},
		{14, 10, 100},
		{14, 1000, 9000},
		{14, window.SparseMax(14) + 1, 3<<14/4 + 3},
		{4, 1000, 3<<4/4 + 3},
		{16, 1000, 9000},
	} {
		c := distinctOf(tt.p, stringValues("size-", tt.n))
		size := len(c.AppendBinary(nil))
		t.Logf("p=%d, %d distinct values: %d bytes (dense %v)", tt.p, tt.n, size, c.IsDense())
		if size > tt.max {
			t.Errorf("p=%d, %d distinct values take %d bytes, want at most %d", tt.p, tt.n, size, tt.max)
		}
	}
}

// TestHashValueLongStrings: long strings hash as their encoding, like
// short ones.
func TestHashValueLongStrings(t *testing.T) {
	long := featurestore.StringValue(string(bytes.Repeat([]byte("x"), 300)))
	c := window.NewCountDistinct(14)
	c.Add(long, window.OrderKey{})
	c.Add(featurestore.StringValue(string(bytes.Repeat([]byte("x"), 300))), window.OrderKey{})
	c.Add(featurestore.StringValue(string(bytes.Repeat([]byte("x"), 299))), window.OrderKey{})
	if got := estimate(c); got != 2 {
		t.Errorf("%d distinct long strings, want 2", got)
	}
	if window.HashValue(long) == window.HashValue(featurestore.StringValue("x")) {
		t.Error("hash collision")
	}
}

// TestTileSizes reports and bounds the bytes a tile takes: a view with one
// count_distinct feature (p = 14) for 1, 10 and 1000 distinct values, and
// the 18-feature view of the benchmarks for 1 and 20 events.
func TestTileSizes(t *testing.T) {
	v, _ := compileYAML(t, compileBase+"  - {name: d, aggregation: count_distinct, field: s, window: 1h}\n", "v")
	for _, tt := range []struct{ n, max int }{{1, 24}, {10, 100}, {1000, 9000}} {
		ts := v.NewTileState(0)
		for i := range tt.n {
			ev := &window.Event{Time: int64(i % 60_000), Offset: int64(i), Fields: []featurestore.Value{{}, {}, str("merchant-" + strconv.Itoa(i))}}
			if err := ts.Add(ev); err != nil {
				t.Fatal(err)
			}
		}
		size := len(ts.AppendBinary(nil))
		t.Logf("count_distinct tile, %d distinct values: %d bytes", tt.n, size)
		if size > tt.max {
			t.Errorf("%d distinct values: %d bytes, want at most %d", tt.n, size, tt.max)
		}
	}
	bv, _ := loadView(t, "bench.yaml", "bench")
	for _, n := range []int{1, 20} {
		size := len(tilesOf(t, bv, benchEvents(bv, n, 1))[0].AppendBinary(nil))
		t.Logf("18-feature tile, %d events: %d bytes", n, size)
		if size > 60+n*60 {
			t.Errorf("18-feature tile of %d events: %d bytes", n, size)
		}
	}
}
