package window_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

// The decoders take bytes from the online store: corrupt input must be an
// error wrapping ErrCorrupt, never a panic, and what they accept must be
// exactly what the encoders write (so a state has one encoding).
//
// Seed corpora are in testdata/fuzz; regenerate them with
//
//	FEATURESTORE_WRITE_FUZZ_CORPUS=1 go test -run TestWriteFuzzCorpus ./featurestore/window

type fuzzTarget struct {
	name  string
	fresh []func() window.State
	seeds func() [][]byte
}

func numericStates(mk func(featurestore.Kind) window.State) []func() window.State {
	return []func() window.State{
		func() window.State { return mk(featurestore.KindInt64) },
		func() window.State { return mk(featurestore.KindDouble) },
	}
}

// seedStates returns encodings of states of each constructor after adding
// assorted values.
func seedStates(fresh []func() window.State) func() [][]byte {
	return func() [][]byte {
		rng := rand.New(rand.NewSource(5))
		vals := [][]featurestore.Value{
			nil,
			{i64(3)},
			{f64(12.5), f64(-0.1), f64(1e300)},
			{i64(math.MaxInt64), i64(math.MaxInt64), i64(-7)},
			{f64(math.NaN()), f64(math.Inf(1))},
			{str("a"), str("b"), str("a")},
			{featurestore.BoolValue(true), featurestore.Value{}},
		}
		var out [][]byte
		for _, mk := range fresh {
			for i, vs := range vals {
				s := mk()
				for j, v := range vs {
					s.Add(v, window.OrderKey{Time: int64(1_700_000_000_000 + rng.Intn(5000)), Partition: int32(j % 2), Offset: int64(i*10 + j)})
				}
				out = append(out, s.AppendBinary(nil))
			}
		}
		return out
	}
}

func fuzzTargets() []fuzzTarget {
	distinct := func() [][]byte {
		var out [][]byte
		for _, n := range []int{0, 1, 5, window.SparseMax(4) + 1, window.SparseMax(6) + 1} {
			for _, p := range []int{4, 6} {
				out = append(out, distinctOf(p, stringValues("s", n)).AppendBinary(nil))
			}
		}
		return out
	}
	targets := []fuzzTarget{
		{name: "Count", fresh: []func() window.State{func() window.State { return window.NewCount() }}},
		{name: "Sum", fresh: numericStates(func(k featurestore.Kind) window.State { return window.NewSum(k) })},
		{name: "Mean", fresh: numericStates(func(k featurestore.Kind) window.State { return window.NewMean(k) })},
		{name: "Stddev", fresh: numericStates(func(k featurestore.Kind) window.State { return window.NewStddev(k) })},
		{name: "MinMax", fresh: append(
			numericStates(func(k featurestore.Kind) window.State { return window.NewMin(k) }),
			numericStates(func(k featurestore.Kind) window.State { return window.NewMax(k) })...)},
		{name: "Last", fresh: []func() window.State{func() window.State { return window.NewLast() }}},
		{name: "LastN", fresh: []func() window.State{
			func() window.State { return window.NewLastN(featurestore.KindString, 2) },
			func() window.State { return window.NewLastN(featurestore.KindInt64, 3) },
			func() window.State { return window.NewLastN(featurestore.KindDouble, 3) },
		}},
		{name: "CountDistinct", fresh: []func() window.State{
			func() window.State { return window.NewCountDistinct(4) },
			func() window.State { return window.NewCountDistinct(6) },
		}, seeds: distinct},
	}
	for i := range targets {
		if targets[i].seeds == nil {
			targets[i].seeds = seedStates(targets[i].fresh)
		}
	}
	return targets
}

func fuzzState(f *testing.F, name string) {
	var target fuzzTarget
	for _, t := range fuzzTargets() {
		if t.name == name {
			target = t
		}
	}
	for _, s := range target.seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, mk := range target.fresh {
			s := mk()
			if err := s.UnmarshalBinary(b); err != nil {
				if !errors.Is(err, window.ErrCorrupt) {
					t.Fatalf("error does not wrap ErrCorrupt: %v", err)
				}
				if v, ok := s.Result(); !v.Equal(resultOf(mk())) || ok != okOf(mk()) {
					t.Fatalf("state not empty after a failed decode")
				}
				continue
			}
			if out := s.AppendBinary(nil); !bytes.Equal(out, b) {
				t.Fatalf("accepted %x, which encodes back as %x", b, out)
			}
			s.Result()
			m := mk()
			m.Merge(s)
			m.Merge(s)
			m.Result()
		}
	})
}

func resultOf(s window.State) featurestore.Value { v, _ := s.Result(); return v }
func okOf(s window.State) bool                   { _, ok := s.Result(); return ok }

func FuzzUnmarshalCount(f *testing.F)         { fuzzState(f, "Count") }
func FuzzUnmarshalSum(f *testing.F)           { fuzzState(f, "Sum") }
func FuzzUnmarshalMean(f *testing.F)          { fuzzState(f, "Mean") }
func FuzzUnmarshalStddev(f *testing.F)        { fuzzState(f, "Stddev") }
func FuzzUnmarshalMinMax(f *testing.F)        { fuzzState(f, "MinMax") }
func FuzzUnmarshalLast(f *testing.F)          { fuzzState(f, "Last") }
func FuzzUnmarshalLastN(f *testing.F)         { fuzzState(f, "LastN") }
func FuzzUnmarshalCountDistinct(f *testing.F) { fuzzState(f, "CountDistinct") }

// tileSeeds returns encodings of tiles, lifetime states and last values of
// the prop view, from a random stream.
func tileSeeds(t testing.TB, v *window.View) [][]byte {
	rng := rand.New(rand.NewSource(9))
	s := genStream(rng, v, 1, 60, 1_700_000_000_000, 4000, true)
	var out [][]byte
	tiles := map[int64]*window.TileState{}
	life, last := v.NewLifetimeState(), v.NewLastValues()
	for _, e := range s.accepted {
		k := v.TileOf(e.time)
		if tiles[k] == nil {
			tiles[k] = v.NewTileState(k)
		}
		if err := tiles[k].Add(&e.ev); err != nil {
			t.Fatal(err)
		}
		life.Add(&e.ev)
		last.Add(&e.ev)
	}
	for _, k := range []int64{1_700_000_000, 1_700_000_003, 1_700_000_011} {
		if ts := tiles[k]; ts != nil {
			out = append(out, ts.AppendBinary(nil))
		}
	}
	return append(out, life.AppendBinary(nil), last.AppendBinary(nil), v.NewTileState(0).AppendBinary(nil))
}

// FuzzUnmarshalTile decodes bytes as a tile, a lifetime state and last
// values of a view with every aggregation, and reads from what it accepts.
func FuzzUnmarshalTile(f *testing.F) {
	v, _ := loadView(f, "prop.yaml", "prop")
	for _, s := range tileSeeds(f, v) {
		f.Add(s)
	}
	r := v.NewReader()
	const k = 1_700_000_003
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, life, last := v.NewTileState(k), v.NewLifetimeState(), v.NewLastValues()
		for _, st := range []interface {
			UnmarshalBinary([]byte) error
			AppendBinary([]byte) []byte
		}{ts, life, last} {
			if err := st.UnmarshalBinary(b); err != nil {
				if !errors.Is(err, window.ErrCorrupt) {
					t.Fatalf("error does not wrap ErrCorrupt: %v", err)
				}
				continue
			}
			// Decoding skips unknown features and accepts any order, so the
			// encoding may change once, and then no more.
			once := st.AppendBinary(nil)
			if err := st.UnmarshalBinary(once); err != nil {
				t.Fatalf("decode of an encoding: %v", err)
			}
			if twice := st.AppendBinary(nil); !bytes.Equal(once, twice) {
				t.Fatalf("encoding not stable: %x then %x", once, twice)
			}
		}
		if _, err := r.Read(k*1000+999, []*window.TileState{ts}, life, last); err != nil {
			t.Fatal(err)
		}
		m := v.NewTileState(k)
		if err := m.Merge(ts); err != nil {
			t.Fatal(err)
		}
	})
}

// TestWriteFuzzCorpus writes the seed corpora to testdata/fuzz when
// FEATURESTORE_WRITE_FUZZ_CORPUS is set.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("FEATURESTORE_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set FEATURESTORE_WRITE_FUZZ_CORPUS=1 to regenerate testdata/fuzz")
	}
	for _, target := range fuzzTargets() {
		writeCorpus(t, "FuzzUnmarshal"+target.name, target.seeds())
	}
	v, _ := loadView(t, "prop.yaml", "prop")
	writeCorpus(t, "FuzzUnmarshalTile", tileSeeds(t, v))
}

func writeCorpus(t *testing.T, fuzzer string, seeds [][]byte) {
	dir := filepath.Join("testdata", "fuzz", fuzzer)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range seeds {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
