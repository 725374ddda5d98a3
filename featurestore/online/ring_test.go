package online

import (
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestBlindWriteRing: a blind write that sets RingField goes through on a
// new hash and on one that records the same ring, and is refused (the
// merge sees the stored state) on a hash of another ring or of none
// recorded.
func TestBlindWriteRing(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	ctx := testContext(t)
	view := testenv.UniqueName(t, "v")
	for _, tt := range []struct {
		name    string
		stored  map[string]string // nil: no hash
		applied bool
	}{
		{"new hash", nil, true},
		{"same ring", map[string]string{VersionField: "1", RingField: "4"}, true},
		{"other ring", map[string]string{VersionField: "1", RingField: "6"}, false},
		{"no ring recorded", map[string]string{VersionField: "1"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := New(c, Options{})
			k := Key{View: view, Entity: featurestore.StringKey(tt.name)}
			if tt.stored != nil {
				if err := c.HSet(ctx, k.Name(), tt.stored).Err(); err != nil {
					t.Fatal(err)
				}
			}
			var seen []State
			u := Update{Key: k, Topic: "t", Partitions: []int32{0}, First: []int64{1}, Fields: []string{"t:1", RingField}, Blind: true,
				Merge: func(st State) (Write, error) {
					seen = append(seen, st)
					return Write{Set: []Field{{"t:1", AppendSlot(nil, 9, []byte("n"))}, {RingField, []byte("4")}},
						Fences: []Fence{{0, 1}}, TTL: testTTL}, nil
				}}
			before := s.Stats()
			if err := s.Apply(ctx, []Update{u}); err != nil {
				t.Fatal(err)
			}
			if blind := s.Stats().Blind - before.Blind; (blind == 1) != tt.applied {
				t.Errorf("%d blind writes, want applied=%v", blind, tt.applied)
			}
			if want := 1 + btoi(!tt.applied); len(seen) != want {
				t.Fatalf("%d merges, want %d", len(seen), want)
			}
			if !tt.applied && string(seen[1].Fields[1]) != tt.stored[RingField] {
				t.Errorf("the merge saw ring %q, want %q", seen[1].Fields[1], tt.stored[RingField])
			}
			m := hgetall(t, c, k)
			if m[RingField] != "4" || m["t:1"] == "" {
				t.Errorf("hash %q, want ring 4 and tile slot t:1", m)
			}
		})
	}
}

// TestBlindWriteMaxTile: a blind write keeps a tile slot holding a newer
// tile than its own (and leaves its field out), unless that tile is beyond
// the writer's bound (Update.MaxTile): a tile of another tile size, or from
// a clock far ahead, must not block the write's current tile.
func TestBlindWriteMaxTile(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	ctx := testContext(t)
	view := testenv.UniqueName(t, "v")
	const k = int64(28_000_000)
	for _, tt := range []struct {
		name     string
		stored   int64 // the tile in the slot
		maxTile  int64 // 0: no bound
		wantTile int64 // in the slot after the write
	}{
		{"older tile", k - 4, k + 2, k},
		{"newer tile", k + 4, k + 6, k + 4},
		{"newer tile, no bound", 2*k + 4, 0, 2*k + 4},
		{"tile beyond the bound", 2*k + 4, k + 2, k},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := New(c, Options{})
			key := Key{View: view, Entity: featurestore.StringKey(tt.name)}
			if err := c.HSet(ctx, key.Name(), VersionField, "1", RingField, "4", "t:0", AppendSlot(nil, tt.stored, []byte("o"))).Err(); err != nil {
				t.Fatal(err)
			}
			u := Update{Key: key, Topic: "t", Partitions: []int32{0}, First: []int64{1}, Fields: []string{"t:0", RingField}, Blind: true, MaxTile: tt.maxTile,
				Merge: func(st State) (Write, error) {
					if !st.Blind {
						t.Errorf("merged with the stored state %q: the blind write was refused", st.Fields)
					}
					return Write{Set: []Field{{"t:0", AppendSlot(nil, k, []byte("n"))}, {RingField, []byte("4")}},
						Fences: []Fence{{0, 1}}, TTL: testTTL}, nil
				}}
			if err := s.Apply(ctx, []Update{u}); err != nil {
				t.Fatal(err)
			}
			m := hgetall(t, c, key)
			if got, _, err := DecodeSlot([]byte(m["t:0"])); err != nil || got != tt.wantTile {
				t.Errorf("slot t:0 holds tile %d (%v), want %d", got, err, tt.wantTile)
			}
			if m[FenceField("t", 0)] != "1" {
				t.Errorf("fence %q, want 1", m[FenceField("t", 0)])
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestNeedTiles: a Merge that returns ErrNeedTiles is called again with
// every tile slot of the hash (and the fields it reads, as before), and
// its write, which moves and deletes slots, is made with the version
// check; a Merge that asks again with the tiles given fails the Apply.
func TestNeedTiles(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	ctx := testContext(t)
	s := New(c, Options{})
	k := Key{View: testenv.UniqueName(t, "v"), Entity: featurestore.StringKey("e")}
	if err := c.HSet(ctx, k.Name(), VersionField, "3", RingField, "6", "t:1", "a", "t:4", "b", LastField, "x").Err(); err != nil {
		t.Fatal(err)
	}
	var seen []State
	u := Update{Key: k, Topic: "t", Partitions: []int32{0}, Fields: []string{"t:2", RingField},
		Merge: func(st State) (Write, error) {
			seen = append(seen, st)
			if st.Tiles == nil {
				return Write{}, ErrNeedTiles
			}
			return Write{Set: []Field{{"t:0", []byte("b")}, {"t:2", []byte("c")}, {RingField, []byte("4")}},
				Delete: []string{"t:4"}, Fences: []Fence{{0, 7}}, TTL: testTTL}, nil
		}}
	if err := s.Apply(ctx, []Update{u}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 {
		t.Fatalf("%d merges, want 2", len(seen))
	}
	second := seen[1]
	if second.Version != 3 || string(second.Fields[1]) != "6" || second.Fields[0] != nil || second.Fences[0] != NoOffset {
		t.Errorf("second merge saw %+v", second)
	}
	var tiles []string
	for _, f := range second.Tiles {
		tiles = append(tiles, f.Name+"="+string(f.Value))
	}
	if !slices.Equal(tiles, []string{"t:1=a", "t:4=b"}) {
		t.Errorf("second merge saw tiles %q, want t:1=a t:4=b", tiles)
	}
	want := map[string]string{VersionField: "4", RingField: "4", "t:0": "b", "t:1": "a", "t:2": "c", LastField: "x", FenceField("t", 0): "7"}
	if m := hgetall(t, c, k); !maps.Equal(m, want) {
		t.Errorf("hash %q, want %q", m, want)
	}

	again := Update{Key: k, Topic: "t", Fields: []string{RingField},
		Merge: func(State) (Write, error) { return Write{}, ErrNeedTiles }}
	if err := s.Apply(ctx, []Update{again}); !errors.Is(err, ErrNeedTiles) {
		t.Errorf("a merge asking for the tiles it has: %v, want ErrNeedTiles", err)
	}
}
