package window_test

import (
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// TestCompileExamples compiles every view of the examples, with the types
// the registry derived.
func TestCompileExamples(t *testing.T) {
	r, err := registry.LoadDir("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	for _, rv := range r.Views {
		v, err := window.Compile(rv, r.Source(rv.Source))
		if err != nil {
			t.Fatalf("view %s: %v", rv.Name, err)
		}
		for i, f := range v.Features() {
			if want := rv.Features[i].ValueType(); f.Type != want {
				t.Errorf("%s:%s: type %s, registry says %s", rv.Name, f.Name, f.Type, want)
			}
		}
	}
}

const compileBase = `
kind: Entity
name: e
join_keys: [{name: id, type: string}]
---
kind: Source
name: s
kafka: {topic: t}
timestamp: {field: ts}
keys: {id: id}
fields: {x: int64, d: double, s: string, b: bool}
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: e
source: s
tile: 1m
features:
`

func TestCompileErrors(t *testing.T) {
	r, err := registry.LoadFiles(map[string][]byte{"d.yaml": []byte(compileBase + "  - {name: ok, aggregation: count, window: 1h}\n")})
	if err != nil {
		t.Fatal(err)
	}
	src := r.Source("s")
	for _, tt := range []struct {
		f    registry.Feature
		want string
	}{
		{registry.Feature{Name: "a", Aggregation: registry.AggSum, Field: "nope", Window: registry.Window{Length: registry.Duration(3600e9)}}, `field "nope" is not declared`},
		{registry.Feature{Name: "a", Aggregation: registry.AggSum, Field: "s", Window: registry.Window{Length: registry.Duration(3600e9)}}, "cannot take field"},
		{registry.Feature{Name: "a", Aggregation: registry.AggCountDistinct, Field: "d", Window: registry.Window{Length: registry.Duration(3600e9)}}, "cannot take field"},
		{registry.Feature{Name: "a", Aggregation: registry.AggCount, Window: registry.Window{Length: registry.Duration(90e9)}}, "not a positive multiple"},
		{registry.Feature{Name: "a", Aggregation: registry.AggCount}, "not a positive multiple"},
		{registry.Feature{Name: "a", Aggregation: registry.AggLastN, Field: "x", N: 0, Window: registry.Window{Lifetime: true}}, "needs n"},
		{registry.Feature{Name: "a", Aggregation: registry.AggCountDistinct, Field: "x", Precision: 17, Window: registry.Window{Lifetime: true}}, "precision"},
		{registry.Feature{Name: "a", Field: "x", Window: registry.Window{Lifetime: true}}, "takes no window"},
		{registry.Feature{Name: "a", Field: "x", Type: registry.TypeString}, "does not match"},
		{registry.Feature{Name: "a", Aggregation: registry.AggCount, Field: "x", Window: registry.Window{Lifetime: true}}, "takes no field"},
		{registry.Feature{Name: "a", Aggregation: "median", Field: "x", Window: registry.Window{Lifetime: true}}, "unknown aggregation"},
		{registry.Feature{Name: "a", Aggregation: registry.AggSum, Window: registry.Window{Lifetime: true}}, "needs field"},
	} {
		view := &registry.FeatureView{Name: "v", Source: "s", Tile: registry.Duration(60e9), Features: []*registry.Feature{&tt.f}}
		_, err := window.Compile(view, src)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: error %v, want %q", tt.f, err, tt.want)
		}
	}
	if _, err := window.Compile(&registry.FeatureView{Name: "v"}, nil); err == nil {
		t.Error("no source accepted")
	}
}

// TestDefinitionChanges: a tile written under one definition of the view is
// read under another. States that compute the same thing are kept, whatever
// the features reading them are called and whatever their windows; changed
// and new states start empty; states no feature reads any more are ignored.
func TestDefinitionChanges(t *testing.T) {
	before, _ := compileYAML(t, compileBase+`
  - {name: n, aggregation: count, window: 1h}
  - {name: total, aggregation: sum, field: x, window: 1h}
  - {name: gone, aggregation: max, field: x, window: 1h}
  - name: big
    aggregation: count
    window: 1h
    filter: [{field: x, op: gt, value: 3}]
`, "v")
	after, _ := compileYAML(t, compileBase+`
  - {name: added, aggregation: count, window: 2h}
  - {name: total, aggregation: sum, field: x, window: 2h}
  - {name: mean, aggregation: mean, field: x, window: 1h}
  - name: renamed
    aggregation: count
    window: 1h
    filter: [{field: x, op: gt, value: 3}]
  - name: refiltered
    aggregation: count
    window: 1h
    filter: [{field: x, op: gt, value: 10}]
  - {name: n, aggregation: count, window: 1h}
`, "v")
	old := before.NewTileState(0)
	for i := range 3 {
		if err := old.Add(&window.Event{Time: int64(i), Offset: int64(i), Fields: []featurestore.Value{{}, {}, {}, i64(5)}}); err != nil {
			t.Fatal(err)
		}
	}
	ts := after.NewTileState(0)
	if err := ts.UnmarshalBinary(old.AppendBinary(nil)); err != nil {
		t.Fatal(err)
	}
	got, err := after.NewReader().Read(10, []*window.TileState{ts}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []featurestore.Value{i64(3), i64(15), {}, i64(3), i64(0), i64(3)} {
		if !got[i].Value.Equal(want) {
			t.Errorf("%s after the change: %v, want %v", after.Features()[i].Name, got[i].Value, want)
		}
	}
	if err := ts.Merge(old); err == nil {
		t.Error("merged states of different definitions")
	}
	if _, err := before.NewReader().Read(10, []*window.TileState{ts}, nil, nil); err == nil {
		t.Error("read a tile of another definition")
	}
	// The same definition compiled twice is compatible.
	again, _ := compileYAML(t, compileBase+`
  - {name: n, aggregation: count, window: 1h}
  - {name: total, aggregation: sum, field: x, window: 1h}
  - {name: gone, aggregation: max, field: x, window: 1h}
  - name: big
    aggregation: count
    window: 1h
    filter: [{field: x, op: gt, value: 3}]
`, "v")
	if err := again.NewTileState(0).Merge(old); err != nil {
		t.Errorf("same definition: %v", err)
	}
}

// TestOtherDefinitionsKept: a tile written under other definitions of the
// view (a rolling registry change), decoded, added to and encoded again
// under these, keeps the states of the features these do not know, as
// they were: read under the other definitions, they hold their events.
func TestOtherDefinitionsKept(t *testing.T) {
	other, _ := compileYAML(t, compileBase+`
  - {name: n, aggregation: count, window: 1h}
  - {name: total, aggregation: sum, field: x, window: 1h}
  - {name: top, aggregation: max, field: x, window: 1h}
`, "v")
	these, _ := compileYAML(t, compileBase+`
  - {name: n, aggregation: count, window: 1h}
`, "v")
	ev := func(i int64, x int64) *window.Event {
		return &window.Event{Time: i, Offset: i, Fields: []featurestore.Value{{}, {}, {}, i64(x)}}
	}
	written := other.NewTileState(0)
	for i := range int64(3) {
		if err := written.Add(ev(i, 5+i)); err != nil {
			t.Fatal(err)
		}
	}
	ts := these.NewTileState(0)
	if err := ts.UnmarshalBinary(written.AppendBinary(nil)); err != nil {
		t.Fatal(err)
	}
	if err := ts.Add(ev(3, 100)); err != nil {
		t.Fatal(err)
	}
	// Another copy of the tile, with other events: of the states these
	// cannot merge, the tile keeps its own.
	copied := other.NewTileState(0)
	if err := copied.Add(ev(4, 1)); err != nil {
		t.Fatal(err)
	}
	dup := these.NewTileState(0)
	if err := dup.UnmarshalBinary(copied.AppendBinary(nil)); err != nil {
		t.Fatal(err)
	}
	if err := ts.Merge(dup); err != nil {
		t.Fatal(err)
	}
	back := other.NewTileState(0)
	if err := back.UnmarshalBinary(ts.AppendBinary(nil)); err != nil {
		t.Fatal(err)
	}
	got, err := other.NewReader().Read(10, []*window.TileState{back}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// n counts every event; total and top only those written under the
	// definitions that have them.
	for i, want := range []featurestore.Value{i64(5), i64(18), i64(7)} {
		if !got[i].Value.Equal(want) {
			t.Errorf("%s: %v, want %v", other.Features()[i].Name, got[i].Value, want)
		}
	}
}

func TestTileStateErrors(t *testing.T) {
	v, _ := compileYAML(t, compileBase+"  - {name: n, aggregation: count, window: 1h}\n", "v")
	ts := v.NewTileState(1)
	err := ts.Add(&window.Event{Time: 59_999})
	if !errors.Is(err, window.ErrWrongTile) {
		t.Errorf("event of tile 0 added to tile 1: %v", err)
	}
	if err := ts.Add(&window.Event{Time: 60_000}); err != nil {
		t.Error(err)
	}
	if err := ts.Merge(v.NewTileState(2)); !errors.Is(err, window.ErrWrongTile) {
		t.Errorf("merged tile 2 into tile 1: %v", err)
	}
	if err := v.NewLifetimeState().UnmarshalBinary(ts.AppendBinary(nil)); !errors.Is(err, window.ErrCorrupt) {
		t.Errorf("tile decoded as lifetime state: %v", err)
	}
	ts.Reset(7)
	if !ts.IsEmpty() || ts.Index() != 7 || ts.Start() != 7*60_000 {
		t.Errorf("reset tile: empty %v index %d", ts.IsEmpty(), ts.Index())
	}
}

func TestViewAccessors(t *testing.T) {
	v, _ := compileYAML(t, compileBase+`
  - {name: n, aggregation: count, window: 1h}
  - {name: life, aggregation: sum, field: d, window: lifetime}
  - {name: last_s, field: s, type: string}
`, "v")
	if v.Name() != "v" || v.Tile() != 60_000 || v.TTL() != 0 {
		t.Errorf("name %q tile %d ttl %d", v.Name(), v.Tile(), v.TTL())
	}
	var names []string
	for _, f := range v.Fields() {
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "b,d,s,x" || v.FieldIndex("s") != 2 || v.FieldIndex("nope") != -1 {
		t.Errorf("fields %v", names)
	}
	if v.FeatureIndex("life") != 1 || v.FeatureIndex("nope") != -1 {
		t.Error("FeatureIndex")
	}
	f := v.Features()[1]
	if f.Part != window.PartLifetime || f.Kind != featurestore.KindDouble || f.Type != registry.TypeDouble || f.Aggregation != registry.AggSum {
		t.Errorf("feature info %+v", f)
	}
	if !v.HasPart(window.PartWindow) || !v.HasPart(window.PartLastValue) || !v.HasPart(window.PartLifetime) {
		t.Error("HasPart")
	}
	last := v.NewLastValues()
	if _, ok := last.Newest(); ok {
		t.Error("empty last values have a newest time")
	}
	last.Add(&window.Event{Time: 5, Fields: []featurestore.Value{{}, {}, str("a")}})
	last.Add(&window.Event{Time: 3, Fields: []featurestore.Value{{}, {}, str("b")}})
	if tm, ok := last.Newest(); !ok || tm != 5 {
		t.Errorf("newest %d %v", tm, ok)
	}
}

// TestFieldsAggregated: the fields an aggregation reads, as its value or
// in its filter, are marked; fields only last values read are not.
func TestFieldsAggregated(t *testing.T) {
	for _, c := range []struct{ features, want string }{
		{`
  - {name: n, aggregation: count, window: 1h, filter: [{field: x, op: gt, value: 3}]}
  - {name: life, aggregation: sum, field: d, window: lifetime}
  - {name: last_s, field: s, type: string}
`, "b=false d=true s=false x=true"},
		{`
  - {name: m, aggregation: max, field: d, window: 1h}
  - {name: last_d, field: d, type: double}
  - {name: last_b, field: b, type: bool}
`, "b=false d=true s=false x=false"},
		{`
  - {name: last_s, field: s, type: string}
`, "b=false d=false s=false x=false"},
	} {
		v, _ := compileYAML(t, compileBase+c.features, "v")
		agg := v.FieldsAggregated()
		var got []string
		for i, f := range v.Fields() {
			got = append(got, fmt.Sprintf("%s=%v", f.Name, agg[i]))
		}
		if g := strings.Join(got, " "); g != c.want {
			t.Errorf("%s: got %s, want %s", c.features, g, c.want)
		}
	}
}

// TestConcurrentReads: a View and the states it reads are shared by
// goroutines, each with its own Reader (run with -race).
func TestConcurrentReads(t *testing.T) {
	v, _ := loadView(t, "prop.yaml", "prop")
	rng := rand.New(rand.NewSource(11))
	s := genStream(rng, v, 1, 200, 0, 4000, false)
	at := int64(40_000)
	st := randomStates(t, rng, v, s.accepted, at)
	want, err := v.NewReader().Read(at, st.tiles, st.life, st.last)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan []window.FeatureValue)
	for range 4 {
		go func() {
			got, _ := v.NewReader().Read(at, st.tiles, st.life, st.last)
			done <- got
		}()
	}
	for range 4 {
		got := <-done
		for i := range want {
			if !got[i].Value.Equal(want[i].Value) || got[i].Status != want[i].Status {
				t.Fatalf("%s: concurrent read %v, want %v", v.Features()[i].Name, got[i].Value, want[i].Value)
			}
		}
	}
}
