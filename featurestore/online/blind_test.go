package online

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/testenv"
)

// Blind writes (Update.Blind), tested with counters kept in a ring of tile
// slots, the shape of what ingest writes: the value of a slot is its tile
// index (AppendSlot) and a uint64 count of events.

// slotEvent is one event: partition, offset and tile.
type slotEvent struct {
	partition int32
	offset    int64
	tile      int64
}

// slotUpdate returns an update that counts events in the tiles of a ring of
// ring slots, as ingest's merge does: events behind the fence are skipped, a
// slot holding an older tile starts afresh, one holding a newer tile is left
// alone. Merge calls and the last call's count of fresh events are recorded.
func slotUpdate(key Key, topic string, ring int64, events []slotEvent, blind bool, calls *atomic.Int64) Update {
	var parts []int32
	var first []int64
	var fields []string
	for _, e := range events {
		if i := slices.Index(parts, e.partition); i < 0 {
			parts = append(parts, e.partition)
			first = append(first, e.offset)
		} else {
			first[i] = min(first[i], e.offset)
		}
		if f := SlotField(e.tile, ring); !slices.Contains(fields, f) {
			fields = append(fields, f)
		}
	}
	return Update{
		Key: key, Topic: topic, Partitions: parts, Fields: fields, Blind: blind, First: first,
		Merge: func(st State) (Write, error) {
			if calls != nil {
				calls.Add(1)
			}
			if st.Blind && (st.Version != 0 || slices.ContainsFunc(st.Fences, func(f int64) bool { return f != NoOffset }) ||
				slices.ContainsFunc(st.Fields, func(b []byte) bool { return b != nil })) {
				return Write{}, fmt.Errorf("blind state %+v is not empty", st)
			}
			fresh := map[int64]uint64{} // per tile
			moved := map[int32]int64{}
			for _, e := range events {
				if e.offset <= st.Fences[slices.Index(parts, e.partition)] {
					continue
				}
				fresh[e.tile]++
				moved[e.partition] = max(moved[e.partition], e.offset)
			}
			var w Write
			// Ascending, so that of two tiles of one slot the newer is set
			// last and wins.
			for _, k := range slices.Sorted(maps.Keys(fresh)) {
				f := SlotField(k, ring)
				n := fresh[k]
				if v := st.Fields[slices.Index(fields, f)]; v != nil {
					sk, blob, err := DecodeSlot(v)
					if err != nil {
						return Write{}, err
					}
					if sk > k {
						continue
					}
					if sk == k {
						n += binary.LittleEndian.Uint64(blob)
					}
				}
				w.Set = append(w.Set, Field{Name: f, Value: AppendSlot(nil, k, binary.LittleEndian.AppendUint64(nil, n))})
			}
			for _, p := range slices.Sorted(maps.Keys(moved)) {
				w.Fences = append(w.Fences, Fence{Partition: p, Offset: moved[p]})
			}
			w.TTL = testTTL
			return w, nil
		},
	}
}

// slotCounts decodes the slots of a hash: per slot field, tile and count.
func slotCounts(t testing.TB, m map[string]string) map[string][2]int64 {
	t.Helper()
	out := map[string][2]int64{}
	for f, v := range m {
		if f == VersionField || f[:2] == fencePrefix {
			continue
		}
		k, blob, err := DecodeSlot([]byte(v))
		if err != nil || len(blob) != 8 {
			t.Fatalf("slot %s = %q: %v", f, v, err)
		}
		out[f] = [2]int64{k, int64(binary.LittleEndian.Uint64(blob))}
	}
	return out
}

// TestBlindWrite walks a blind update through the cases of blindScript,
// each starting from a hash written by a plain update.
func TestBlindWrite(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	ctx := testContext(t)
	const ring = 4
	view := testenv.UniqueName(t, "v")
	for _, tt := range []struct {
		name   string
		before []slotEvent // written first, not blind
		blind  []slotEvent
		want   map[string][2]int64 // slot: tile, count
		fence  string              // of partition 0 afterwards
		// Whether the blind write was applied without a read, and the
		// count of fresh events the last merge saw.
		applied bool
		merges  int64
	}{
		{"new hash", nil, []slotEvent{{0, 5, 9}, {0, 6, 9}, {0, 7, 10}},
			map[string][2]int64{"t:1": {9, 2}, "t:2": {10, 1}}, "7", true, 1},
		{"other slots", []slotEvent{{0, 1, 8}}, []slotEvent{{0, 5, 9}},
			map[string][2]int64{"t:0": {8, 1}, "t:1": {9, 1}}, "5", true, 1},
		{"older tile in the slot", []slotEvent{{0, 1, 5}}, []slotEvent{{0, 5, 9}},
			map[string][2]int64{"t:1": {9, 1}}, "5", true, 1},
		{"newer tile in the slot", []slotEvent{{0, 1, 13}}, []slotEvent{{0, 5, 9}, {0, 6, 10}},
			map[string][2]int64{"t:1": {13, 1}, "t:2": {10, 1}}, "6", true, 1},
		{"same tile: merged", []slotEvent{{0, 1, 9}}, []slotEvent{{0, 5, 9}},
			map[string][2]int64{"t:1": {9, 2}}, "5", false, 2},
		{"replay: skipped", []slotEvent{{0, 5, 9}, {0, 6, 10}}, []slotEvent{{0, 5, 9}, {0, 6, 10}},
			map[string][2]int64{"t:1": {9, 1}, "t:2": {10, 1}}, "6", false, 2},
		{"partly applied", []slotEvent{{0, 5, 9}}, []slotEvent{{0, 5, 9}, {0, 6, 9}, {0, 7, 11}},
			map[string][2]int64{"t:1": {9, 2}, "t:3": {11, 1}}, "7", false, 2},
		{"fence at the first event", []slotEvent{{0, 5, 7}}, []slotEvent{{0, 5, 9}, {0, 6, 10}},
			map[string][2]int64{"t:3": {7, 1}, "t:2": {10, 1}}, "6", false, 2},
		{"other partition's fence", []slotEvent{{1, 50, 7}}, []slotEvent{{0, 5, 9}},
			map[string][2]int64{"t:3": {7, 1}, "t:1": {9, 1}}, "5", true, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := New(c, Options{})
			k := Key{View: view, Entity: featurestore.StringKey(tt.name)}
			if tt.before != nil {
				if err := s.Apply(ctx, []Update{slotUpdate(k, "t", ring, tt.before, false, nil)}); err != nil {
					t.Fatal(err)
				}
			}
			before := s.Stats()
			var calls atomic.Int64
			if err := s.Apply(ctx, []Update{slotUpdate(k, "t", ring, tt.blind, true, &calls)}); err != nil {
				t.Fatal(err)
			}
			m := hgetall(t, c, k)
			if got := slotCounts(t, m); !maps.Equal(got, tt.want) {
				t.Errorf("slots %v, want %v", got, tt.want)
			}
			if m[FenceField("t", 0)] != tt.fence {
				t.Errorf("fence %q, want %q", m[FenceField("t", 0)], tt.fence)
			}
			st := s.Stats()
			if blind := st.Blind - before.Blind; (blind == 1) != tt.applied {
				t.Errorf("%d blind writes, want applied=%v (stats %+v)", blind, tt.applied, st)
			}
			if calls.Load() != tt.merges {
				t.Errorf("%d merges, want %d", calls.Load(), tt.merges)
			}
			if !tt.applied && st.Refused-before.Refused != 1 {
				t.Errorf("stats %+v: the blind write was not refused", st)
			}
		})
	}
}

// TestBlindWriteNotSlot checks that a blind write never overwrites a field
// that is not a tile slot, nor a slot whose value does not decode.
func TestBlindWriteNotSlot(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	s := New(c, Options{})
	ctx := testContext(t)
	k := Key{View: testenv.UniqueName(t, "v"), Entity: featurestore.StringKey("e")}
	for _, f := range []string{LastField, "t:3"} {
		// Stored: a value that is no slot value (no varint ends in it).
		if err := c.HSet(ctx, k.Name(), f, "\xff\xff\xff\xff\xff\xff\xff\xff\xff").Err(); err != nil {
			t.Fatal(err)
		}
		var seen [][]byte
		u := Update{Key: k, Topic: "t", Partitions: []int32{0}, First: []int64{1}, Fields: []string{f}, Blind: true,
			Merge: func(st State) (Write, error) {
				seen = append(seen, st.Fields[0])
				return Write{Set: []Field{{f, AppendSlot(nil, 3, []byte("new"))}}, Fences: []Fence{{0, 1}}, TTL: testTTL}, nil
			}}
		if err := s.Apply(ctx, []Update{u}); err != nil {
			t.Fatal(err)
		}
		if len(seen) != 2 || seen[0] != nil || string(seen[1]) != "\xff\xff\xff\xff\xff\xff\xff\xff\xff" {
			t.Errorf("%s: merges saw %q, want the empty state, then the stored value", f, seen)
		}
		if err := c.Del(ctx, k.Name()).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBlindResentWrites resends every blind write, as go-redis does after a
// lost reply: the resend must be refused and the events found behind the
// fence.
func TestBlindResentWrites(t *testing.T) {
	addr := testenv.RedisAddr(t)
	c := newClient(t, addr)
	hook := &resendHook{}
	c.AddHook(hook)
	s := New(c, Options{})
	ctx := testContext(t)
	k := Key{View: testenv.UniqueName(t, "v"), Entity: featurestore.StringKey("a")}
	if err := s.Apply(ctx, []Update{slotUpdate(k, "t", 8, []slotEvent{{0, 1, 3}, {1, 4, 3}, {0, 2, 4}}, true, nil)}); err != nil {
		t.Fatal(err)
	}
	if hook.resent.Load() == 0 {
		t.Fatal("the hook resent nothing")
	}
	want := map[string][2]int64{"t:3": {3, 2}, "t:4": {4, 1}}
	if got := slotCounts(t, hgetall(t, newClient(t, addr), k)); !maps.Equal(got, want) {
		t.Errorf("slots %v, want %v", got, want)
	}
	if st := s.Stats(); st.Refused != 1 || st.Skips != 1 {
		t.Errorf("stats %+v, want the resend refused, then skipped", st)
	}
}

// TestBlindConcurrent runs one writer per partition on the same keys,
// mixing blind and plain updates, replaying batches, on a small ring so that
// slots are reused. The result must equal the brute-force reference: each
// slot holds the newest tile that had events, with all of that tile's
// events, each once.
func TestBlindConcurrent(t *testing.T) {
	addr := testenv.RedisAddr(t)
	ctx := testContext(t)
	view := testenv.UniqueName(t, "v")
	const (
		ring     = 5
		writers  = 3
		batches  = 60
		keyCount = 4
	)
	keys := make([]Key, keyCount)
	for i := range keys {
		keys[i] = Key{View: view, Entity: featurestore.Int64Key(int64(i))}
	}
	// The events, per writer (partition), in offset order.
	rng := rand.New(rand.NewPCG(3, 4))
	type keyed struct {
		key int
		ev  slotEvent
	}
	var all []keyed
	perWriter := make([][][]keyed, writers) // batches
	for w := range writers {
		off := int64(0)
		for range batches {
			var b []keyed
			for range 1 + rng.IntN(6) {
				off += 1 + rng.Int64N(3)
				e := keyed{rng.IntN(keyCount), slotEvent{int32(w), off, rng.Int64N(4 * ring)}}
				b = append(b, e)
				all = append(all, e)
			}
			perWriter[w] = append(perWriter[w], b)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	stores := make([]*Store, writers)
	for w := range writers {
		stores[w] = New(newClient(t, addr), Options{})
		wrng := rand.New(rand.NewPCG(uint64(w), 5))
		wg.Go(func() {
			apply := func(b []keyed) error {
				byKey := map[int][]slotEvent{}
				for _, e := range b {
					byKey[e.key] = append(byKey[e.key], e.ev)
				}
				var ups []Update
				for _, ki := range slices.Sorted(maps.Keys(byKey)) {
					ups = append(ups, slotUpdate(keys[ki], "t", ring, byKey[ki], wrng.IntN(4) != 0, nil))
				}
				return stores[w].Apply(ctx, ups)
			}
			for i, b := range perWriter[w] {
				if err := apply(b); err != nil {
					errs <- err
					return
				}
				if i > 0 && wrng.IntN(5) == 0 { // a replay of the last two batches
					if err := apply(append(slices.Clone(perWriter[w][i-1]), b...)); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var st Stats
	for _, s := range stores {
		x := s.Stats()
		st.Writes += x.Writes
		st.Blind += x.Blind
		st.Refused += x.Refused
		st.Conflicts += x.Conflicts
		st.Skips += x.Skips
	}
	t.Logf("stats over all writers: %+v", st)
	if st.Blind == 0 || st.Refused == 0 {
		t.Errorf("the test did not exercise both outcomes of blind writes: %+v", st)
	}

	c := newClient(t, addr)
	for ki, k := range keys {
		want := map[string][2]int64{}
		fences := map[string]string{}
		for _, e := range all {
			if e.key != ki {
				continue
			}
			f := SlotField(e.ev.tile, ring)
			switch cur, ok := want[f]; {
			case !ok || cur[0] < e.ev.tile:
				want[f] = [2]int64{e.ev.tile, 1}
			case cur[0] == e.ev.tile:
				want[f] = [2]int64{cur[0], cur[1] + 1}
			}
			fences[FenceField("t", e.ev.partition)] = fmt.Sprint(e.ev.offset)
		}
		m := hgetall(t, c, k)
		if got := slotCounts(t, m); !maps.Equal(got, want) {
			t.Errorf("%s: slots %v, want %v", k, got, want)
		}
		for f, off := range fences {
			if m[f] != off {
				t.Errorf("%s: fence %s = %q, want %s", k, f, m[f], off)
			}
		}
	}
}

// TestBlindAfterScriptFlush checks the EVAL fallback of blind writes.
func TestBlindAfterScriptFlush(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	s := New(c, Options{})
	ctx := testContext(t)
	k := Key{View: testenv.UniqueName(t, "v"), Entity: featurestore.StringKey("e")}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, []Update{slotUpdate(k, "t", 8, []slotEvent{{0, 1, 1}}, true, nil)}); err != nil {
		t.Fatal(err)
	}
	if ok := c.ScriptExists(ctx, blindScript.Hash()).Val(); len(ok) != 1 || !ok[0] {
		t.Error("EVAL did not cache the script")
	}
	if got := slotCounts(t, hgetall(t, c, k)); !maps.Equal(got, map[string][2]int64{"t:1": {1, 1}}) {
		t.Errorf("slots %v", got)
	}
	if st := s.Stats(); st.Blind != 1 {
		t.Errorf("stats %+v, want one blind write", st)
	}
}

// TestBlindMiniredis runs blind writes on the in-process Redis of the dev
// mode, whose Lua is another implementation.
func TestBlindMiniredis(t *testing.T) {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { c.Close() })
	s := New(c, Options{})
	ctx := context.Background()
	k := Key{View: "card_txn", Entity: featurestore.StringKey("card:{1}")}
	steps := [][]slotEvent{
		{{0, 5, 9}, {0, 6, 10}}, // new hash: blind
		{{0, 7, 9}},             // same tile: merged
		{{0, 7, 9}},             // replay: skipped
		{{0, 8, 13}},            // older tile in the slot: blind
		{{1, 2, 300}},           // tile index of two varint bytes: blind
		{{1, 3, -5}},            // negative tile index: blind
	}
	for _, evs := range steps {
		if err := s.Apply(ctx, []Update{slotUpdate(k, "t", 4, evs, true, nil)}); err != nil {
			t.Fatal(err)
		}
	}
	got := slotCounts(t, hgetall(t, c, k))
	want := map[string][2]int64{"t:1": {13, 1}, "t:2": {10, 1}, "t:0": {300, 1}, "t:3": {-5, 1}}
	if !maps.Equal(got, want) {
		t.Errorf("slots %v, want %v", got, want)
	}
	if st := s.Stats(); st.Blind != 4 || st.Refused != 2 || st.Skips != 1 {
		t.Errorf("stats %+v, want 4 blind writes, 2 refused, 1 skip", st)
	}
}

// TestBlindManyKeys applies blind updates of many hashes in one Apply, so
// that script calls carry several hashes, some of which refuse their write
// (their slot holds the same tile already) while the others write: on a
// standalone Redis, and on a Redis Cluster, where a call's hashes share a
// slot (the views of one entity do). Every hash must end as the reference
// says, whatever call it went in.
func TestBlindManyKeys(t *testing.T) {
	for _, tt := range []struct {
		name   string
		client func(t *testing.T) redis.UniversalClient
	}{
		{"standalone", func(t *testing.T) redis.UniversalClient { return newClient(t, testenv.RedisAddr(t)) }},
		{"cluster", func(t *testing.T) redis.UniversalClient {
			c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: testenv.RedisCluster(t, 3), ContextTimeoutEnabled: true})
			t.Cleanup(func() { c.Close() })
			return c
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.client(t)
			s := New(c, Options{})
			ctx := testContext(t)
			const ring, entities = 8, 60
			views := []string{testenv.UniqueName(t, "a"), testenv.UniqueName(t, "b"), testenv.UniqueName(t, "c")}
			var keys []Key
			for e := range entities {
				for _, v := range views {
					keys = append(keys, Key{View: v, Entity: featurestore.StringKey(fmt.Sprintf("card_%d", e))})
				}
			}
			// First every third hash gets tile 5, so that a write of tile 5
			// to it is refused and merged.
			var ups []Update
			for i, k := range keys {
				if i%3 == 0 {
					ups = append(ups, slotUpdate(k, "t", ring, []slotEvent{{0, 1, 5}}, false, nil))
				}
			}
			if err := s.Apply(ctx, ups); err != nil {
				t.Fatal(err)
			}
			before := s.Stats()
			ups = ups[:0]
			for _, k := range keys {
				ups = append(ups, slotUpdate(k, "t", ring, []slotEvent{{0, 2, 5}, {0, 3, 6}}, true, nil))
			}
			if err := s.Apply(ctx, ups); err != nil {
				t.Fatal(err)
			}
			st := s.Stats()
			if blind, refused := st.Blind-before.Blind, st.Refused-before.Refused; blind != int64(len(keys)*2/3) || refused != int64(len(keys)/3) {
				t.Errorf("%d blind writes and %d refused, want %d and %d", blind, refused, len(keys)*2/3, len(keys)/3)
			}
			for i, k := range keys {
				want := map[string][2]int64{"t:5": {5, 1}, "t:6": {6, 1}}
				if i%3 == 0 {
					want["t:5"] = [2]int64{5, 2}
				}
				if got := slotCounts(t, hgetall(t, c, k)); !maps.Equal(got, want) {
					t.Errorf("%s: slots %v, want %v", k, got, want)
				}
			}
		})
	}
}
