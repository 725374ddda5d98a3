package online

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/testenv"
)

const testTTL = 10 * time.Minute

// newClient connects to the test Redis the way serving and ingest should:
// deadlines bound commands in flight.
func newClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// event is one test event: delta added to the counter of tile, from offset
// of partition.
type event struct {
	partition int32
	offset    int64
	tile      int64
	delta     uint64
}

// counterUpdate returns an update that adds the deltas of events to uint64
// counters in their tiles, skipping events behind the fences: the shape of
// what ingest does with real aggregation states. Each call of Merge is
// counted in calls.
func counterUpdate(key Key, topic string, events []event, calls *atomic.Int64) Update {
	var parts []int32
	var fields []string
	for _, e := range events {
		if !slices.Contains(parts, e.partition) {
			parts = append(parts, e.partition)
		}
		if f := TileField(e.tile); !slices.Contains(fields, f) {
			fields = append(fields, f)
		}
	}
	return Update{
		Key: key, Topic: topic, Partitions: parts, Fields: fields,
		Merge: func(st State) (Write, error) {
			if calls != nil {
				calls.Add(1)
			}
			fences := map[int32]int64{}
			for i, p := range parts {
				fences[p] = st.Fences[i]
			}
			sums := map[string]uint64{}
			for i, f := range fields {
				if v := st.Fields[i]; v != nil {
					if len(v) != 8 {
						return Write{}, fmt.Errorf("counter %s: %d bytes", f, len(v))
					}
					sums[f] = binary.LittleEndian.Uint64(v)
				}
			}
			var w Write
			changed := map[string]bool{}
			moved := map[int32]int64{}
			for _, e := range events {
				if e.offset <= fences[e.partition] {
					continue // replay
				}
				f := TileField(e.tile)
				sums[f] += e.delta
				changed[f] = true
				moved[e.partition] = max(moved[e.partition], e.offset)
			}
			for _, f := range slices.Sorted(maps.Keys(changed)) {
				w.Set = append(w.Set, Field{Name: f, Value: binary.LittleEndian.AppendUint64(nil, sums[f])})
			}
			for _, p := range slices.Sorted(maps.Keys(moved)) {
				w.Fences = append(w.Fences, Fence{Partition: p, Offset: moved[p]})
			}
			w.TTL = testTTL
			return w, nil
		},
	}
}

func counter(t testing.TB, b []byte) uint64 {
	t.Helper()
	if len(b) != 8 {
		t.Fatalf("counter blob %q: want 8 bytes", b)
	}
	return binary.LittleEndian.Uint64(b)
}

func hgetall(t testing.TB, c redis.UniversalClient, k Key) map[string]string {
	t.Helper()
	m, err := c.HGetAll(context.Background(), k.Name()).Result()
	if err != nil {
		t.Fatalf("HGETALL %s: %v", k, err)
	}
	return m
}

func TestApplyRead(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	s := New(c, Options{})
	ctx := testContext(t)
	views := []string{testenv.UniqueName(t, "txn"), testenv.UniqueName(t, "profile")}
	topic := "card_transactions"
	k1 := Key{View: views[0], Entity: featurestore.StringKey("card_1")}
	k2 := Key{View: views[1], Entity: featurestore.StringKey("card_1")}
	k3 := Key{View: views[0], Entity: featurestore.Int64Key(42)}

	last := Update{
		Key: k2, Fields: []string{LastField, LifetimeField},
		Merge: func(st State) (Write, error) {
			if st.Version != 0 || st.Fields[0] != nil || st.Fields[1] != nil {
				return Write{}, fmt.Errorf("fresh key has state %+v", st)
			}
			return Write{Set: []Field{{LastField, []byte("\x00last")}, {LifetimeField, []byte{}}}, TTL: testTTL}, nil
		},
	}
	err := s.Apply(ctx, []Update{
		counterUpdate(k1, topic, []event{{0, 10, 100, 1}, {0, 11, 100, 2}, {1, 5, 101, 4}}, nil),
		last,
		counterUpdate(k3, topic, []event{{2, 7, 100, 9}}, nil),
	})
	if err != nil {
		t.Fatal(err)
	}

	absent := Key{View: views[0], Entity: featurestore.StringKey("never_written")}
	got, err := s.Read(ctx, []Lookup{
		{Key: k1, Fields: []string{TileField(99), TileField(100), TileField(101)}},
		{Key: k2, Fields: []string{LastField, LifetimeField, TileField(100)}},
		{Key: k3, Fields: []string{TileField(100)}},
		{Key: absent, Fields: []string{TileField(100), LastField}},
		{Key: k1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("%d results for 5 lookups", len(got))
	}
	if got[0][0] != nil || counter(t, got[0][1]) != 3 || counter(t, got[0][2]) != 4 {
		t.Errorf("k1 tiles = %q", got[0])
	}
	if string(got[1][0]) != "\x00last" || got[1][1] == nil || len(got[1][1]) != 0 || got[1][2] != nil {
		t.Errorf("k2 fields = %#v; want the last values, an empty (not nil) lifetime blob, no tile", got[1])
	}
	if counter(t, got[2][0]) != 9 {
		t.Errorf("k3 tile = %q", got[2][0])
	}
	if len(got[3]) != 2 || got[3][0] != nil || got[3][1] != nil {
		t.Errorf("absent key = %q, want two nils", got[3])
	}
	if got[4] != nil {
		t.Errorf("lookup without fields = %q", got[4])
	}

	want := map[string]string{
		"v": "1", "f:" + topic + ":0": "11", "f:" + topic + ":1": "5",
		"t:100": string(binary.LittleEndian.AppendUint64(nil, 3)),
		"t:101": string(binary.LittleEndian.AppendUint64(nil, 4)),
	}
	if m := hgetall(t, c, k1); !maps.Equal(m, want) {
		t.Errorf("hash %s = %q, want %q", k1, m, want)
	}
	if st := s.Stats(); st.Writes != 3 || st.Conflicts != 0 || st.Skips != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestApplyReplayIsNoop(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	s := New(c, Options{})
	ctx := testContext(t)
	k := Key{View: testenv.UniqueName(t, "v"), Entity: featurestore.StringKey("card_1")}
	events := []event{{0, 1, 7, 1}, {0, 2, 7, 1}, {3, 9, 8, 5}}

	var calls atomic.Int64
	if err := s.Apply(ctx, []Update{counterUpdate(k, "t", events, &calls)}); err != nil {
		t.Fatal(err)
	}
	before := hgetall(t, c, k)
	// The same batch again, as after a crash before the offset commit; then
	// a batch that overlaps it.
	if err := s.Apply(ctx, []Update{counterUpdate(k, "t", events, &calls)}); err != nil {
		t.Fatal(err)
	}
	if after := hgetall(t, c, k); !maps.Equal(before, after) {
		t.Fatalf("replay changed the hash:\n before %q\n after  %q", before, after)
	}
	if st := s.Stats(); st.Writes != 1 || st.Skips != 1 {
		t.Errorf("stats %+v, want 1 write and 1 skip", st)
	}
	overlap := append(slices.Clone(events), event{0, 3, 7, 10}, event{3, 10, 8, 100})
	if err := s.Apply(ctx, []Update{counterUpdate(k, "t", overlap, &calls)}); err != nil {
		t.Fatal(err)
	}
	m := hgetall(t, c, k)
	if counter(t, []byte(m["t:7"])) != 12 || counter(t, []byte(m["t:8"])) != 105 || m["f:t:0"] != "3" || m["f:t:3"] != "10" || m["v"] != "2" {
		t.Errorf("after overlapping batch: %q", m)
	}
}

// TestApplyConcurrent runs writers with their own clients on the same keys,
// each from its own partition, as ingest processes after a rebalance would.
// Every increment must land exactly once.
func TestApplyConcurrent(t *testing.T) {
	addr := testenv.RedisAddr(t)
	ctx := testContext(t)
	view := testenv.UniqueName(t, "v")
	keys := []Key{
		{View: view, Entity: featurestore.StringKey("hot")},
		{View: view, Entity: featurestore.StringKey("warm")},
		{View: view, Entity: featurestore.Int64Key(7)},
	}
	const writers, rounds = 4, 200
	stores := make([]*Store, writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		stores[w] = New(newClient(t, addr), Options{})
		wg.Go(func() {
			for i := range rounds {
				ups := make([]Update, len(keys))
				for j, k := range keys {
					ups[j] = counterUpdate(k, "t", []event{{int32(w), int64(i), 1, 1}}, nil)
				}
				if err := stores[w].Apply(ctx, ups); err != nil {
					errs <- fmt.Errorf("writer %d round %d: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c := newClient(t, addr)
	var conflicts int64
	for _, s := range stores {
		conflicts += s.Stats().Conflicts
	}
	t.Logf("%d conflicts resolved", conflicts)
	for _, k := range keys {
		m := hgetall(t, c, k)
		if got := counter(t, []byte(m["t:1"])); got != writers*rounds {
			t.Errorf("%s: counter %d, want %d", k, got, writers*rounds)
		}
		// Each successful write carried exactly one event.
		if m["v"] != fmt.Sprint(writers*rounds) {
			t.Errorf("%s: version %s, want %d", k, m["v"], writers*rounds)
		}
		for w := range writers {
			if f := m[FenceField("t", int32(w))]; f != fmt.Sprint(rounds-1) {
				t.Errorf("%s: fence of partition %d = %q", k, w, f)
			}
		}
	}
}

// TestScriptRetry calls the script the way go-redis resends it after a lost
// reply: the same arguments twice. The second call must conflict and leave
// the hash as the first left it.
func TestScriptRetry(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	ctx := testContext(t)
	k := Key{View: testenv.UniqueName(t, "v"), Entity: featurestore.StringKey("card_1")}
	w := Write{
		Set:    []Field{{TileField(5), []byte("one")}},
		Fences: []Fence{{Partition: 2, Offset: 17}},
		TTL:    testTTL,
	}
	args := writeArgs(nil, 0, "t", &w)
	res, err := writeScript.Run(ctx, c, []string{k.Name()}, args...).Int64()
	if err != nil {
		t.Fatal(err)
	}
	if res != 1 {
		t.Fatalf("first call: %d, want 1 (written, version 1)", res)
	}
	before := hgetall(t, c, k)
	res, err = writeScript.Run(ctx, c, []string{k.Name()}, args...).Int64()
	if err != nil {
		t.Fatal(err)
	}
	if res != -1 {
		t.Fatalf("resent call: %d, want -1 (conflict: the hash is at version 1)", res)
	}
	if after := hgetall(t, c, k); !maps.Equal(before, after) {
		t.Fatalf("resent call changed the hash: %q -> %q", before, after)
	}
	want := map[string]string{"v": "1", "t:5": "one", "f:t:2": "17"}
	if !maps.Equal(before, want) {
		t.Errorf("hash = %q, want %q", before, want)
	}
}

// resendHook delivers every script pipeline twice and hands back the second
// replies, as go-redis does when the first replies are lost to a timeout.
type resendHook struct{ resent atomic.Int64 }

func (h *resendHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *resendHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *resendHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && strings.HasPrefix(cmds[0].Name(), "eval") {
			if err := next(ctx, cmds); err != nil {
				return err
			}
			h.resent.Add(1)
		}
		return next(ctx, cmds)
	}
}

func TestApplyResentWrites(t *testing.T) {
	addr := testenv.RedisAddr(t)
	c := newClient(t, addr)
	hook := &resendHook{}
	c.AddHook(hook)
	s := New(c, Options{})
	ctx := testContext(t)
	view := testenv.UniqueName(t, "v")
	k1 := Key{View: view, Entity: featurestore.StringKey("a")}
	k2 := Key{View: view, Entity: featurestore.StringKey("b")}
	var calls atomic.Int64
	err := s.Apply(ctx, []Update{
		counterUpdate(k1, "t", []event{{0, 1, 3, 5}, {1, 4, 3, 6}}, &calls),
		counterUpdate(k2, "t", []event{{0, 2, 3, 7}}, &calls),
	})
	if err != nil {
		t.Fatal(err)
	}
	if hook.resent.Load() == 0 {
		t.Fatal("the hook resent nothing")
	}
	// Round 1 wrote and saw conflicts from the resend; round 2 found the
	// events behind the fences.
	if n := calls.Load(); n != 4 {
		t.Errorf("merge called %d times, want 4", n)
	}
	plain := New(newClient(t, addr), Options{})
	got, err := plain.Read(ctx, []Lookup{{Key: k1, Fields: []string{TileField(3), VersionField}}, {Key: k2, Fields: []string{TileField(3)}}})
	if err != nil {
		t.Fatal(err)
	}
	if counter(t, got[0][0]) != 11 || string(got[0][1]) != "1" || counter(t, got[1][0]) != 7 {
		t.Errorf("after resent writes: k1 %d (version %s), k2 %d; want 11 (version 1), 7",
			counter(t, got[0][0]), got[0][1], counter(t, got[1][0]))
	}
	// The store saw only the replies to the resend: conflicts.
	if st := s.Stats(); st.Writes != 0 || st.Conflicts != 2 || st.Skips != 2 {
		t.Errorf("stats %+v, want 0 writes seen, 2 conflicts, 2 skips", st)
	}
}

func TestApplyExpiryAndDelete(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	s := New(c, Options{})
	ctx := testContext(t)
	k := Key{View: testenv.UniqueName(t, "v"), Entity: featurestore.StringKey("card_1")}
	write := func(w Write) error {
		return s.Apply(ctx, []Update{{Key: k, Merge: func(State) (Write, error) { return w, nil }}})
	}

	if err := write(Write{Set: []Field{{TileField(1), []byte("a")}, {TileField(2), []byte("b")}, {LastField, []byte("x")}}, TTL: 90 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, k.Name()).Val(); ttl <= 80*time.Second || ttl > 90*time.Second {
		t.Errorf("PTTL = %v, want just under 90s", ttl)
	}
	if err := write(Write{Delete: []string{TileField(1), TileField(3)}, Set: []Field{{TileField(4), []byte("d")}}, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"v": "2", "t:2": "b", "t:4": "d", "x": "x"}
	if m := hgetall(t, c, k); !maps.Equal(m, want) {
		t.Errorf("after delete: %q, want %q", m, want)
	}
	if ttl := c.PTTL(ctx, k.Name()).Val(); ttl <= 59*time.Minute {
		t.Errorf("PTTL = %v, want the new TTL of an hour", ttl)
	}
	if err := write(Write{Set: []Field{{LastField, []byte("y")}}, TTL: NoExpiry}); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, k.Name()).Val(); ttl != -1 {
		t.Errorf("PTTL after NoExpiry = %v, want -1 (no expiry)", ttl)
	}
	c.Expire(ctx, k.Name(), time.Minute) // do not leave it behind

	err := write(Write{Set: []Field{{LastField, []byte("z")}}})
	if err == nil || !strings.Contains(err.Error(), "write has no TTL") {
		t.Errorf("write without TTL: %v", err)
	}
	if v := c.HGet(ctx, k.Name(), "x").Val(); v != "y" {
		t.Errorf("failed write changed x to %q", v)
	}
}

func TestApplyFenceRegression(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	s := New(c, Options{})
	ctx := testContext(t)
	k := Key{View: testenv.UniqueName(t, "v"), Entity: featurestore.StringKey("card_1")}
	if err := s.Apply(ctx, []Update{counterUpdate(k, "t", []event{{0, 100, 1, 1}}, nil)}); err != nil {
		t.Fatal(err)
	}
	before := hgetall(t, c, k)
	// A buggy merge that ignores the fence it is shown. 99 < 100, and also
	// 99 sorts after 100 as a string: the script must compare numbers.
	buggy := Update{Key: k, Topic: "t", Merge: func(State) (Write, error) {
		return Write{Set: []Field{{TileField(1), []byte("bad")}}, Fences: []Fence{{0, 99}}, TTL: testTTL}, nil
	}}
	err := s.Apply(ctx, []Update{buggy})
	if !errors.Is(err, ErrFenceRegression) {
		t.Fatalf("error %v, want ErrFenceRegression", err)
	}
	if !strings.Contains(err.Error(), "field f:t:0: stored offset 100") {
		t.Errorf("error %q does not name the fence", err)
	}
	if after := hgetall(t, c, k); !maps.Equal(before, after) {
		t.Errorf("refused write changed the hash: %q -> %q", before, after)
	}
	// Equal fences are allowed; larger ones move.
	fence := func(off int64) error {
		return s.Apply(ctx, []Update{{Key: k, Topic: "t", Merge: func(State) (Write, error) {
			return Write{Fences: []Fence{{0, off}}, TTL: testTTL}, nil
		}}})
	}
	for _, off := range []int64{100, 1000, 1500} {
		if err := fence(off); err != nil {
			t.Errorf("fence %d: %v", off, err)
		}
	}
	// Same number of digits, smaller.
	if err := fence(1499); !errors.Is(err, ErrFenceRegression) {
		t.Errorf("fence 1499 over 1500: %v, want ErrFenceRegression", err)
	}
	if f := c.HGet(ctx, k.Name(), "f:t:0").Val(); f != "1500" {
		t.Errorf("fence = %s, want 1500", f)
	}
}

// TestApplyLargeWrite crosses the script's chunking of long HSET and HDEL
// calls.
func TestApplyLargeWrite(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	s := New(c, Options{})
	ctx := testContext(t)
	k := Key{View: testenv.UniqueName(t, "v"), Entity: featurestore.StringKey("big")}
	const n = 5000
	var first, second Write
	for i := range n {
		first.Set = append(first.Set, Field{TileField(int64(i)), []byte{byte(i)}})
		second.Delete = append(second.Delete, TileField(int64(i)))
		second.Set = append(second.Set, Field{TileField(int64(n + i)), []byte{byte(i)}})
	}
	for p := range 300 {
		first.Fences = append(first.Fences, Fence{int32(p), int64(p)})
	}
	first.TTL, second.TTL = testTTL, testTTL
	for _, w := range []Write{first, second} {
		if err := s.Apply(ctx, []Update{{Key: k, Topic: "t", Merge: func(State) (Write, error) { return w, nil }}}); err != nil {
			t.Fatal(err)
		}
	}
	m := hgetall(t, c, k)
	if len(m) != 1+300+n || m["v"] != "2" || m["f:t:299"] != "299" || m[TileField(2*n-1)] != string([]byte{byte((n - 1) % 256)}) {
		t.Errorf("%d fields, v=%s", len(m), m["v"])
	}
	if _, ok := m[TileField(0)]; ok {
		t.Error("deleted tile still there")
	}
}

func TestApplyGivesUp(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	s := New(c, Options{MaxAttempts: 3})
	ctx := testContext(t)
	k := Key{View: testenv.UniqueName(t, "v"), Entity: featurestore.StringKey("contended")}
	calls := 0
	// Another writer changes the hash between every read and write.
	u := Update{Key: k, Merge: func(State) (Write, error) {
		calls++
		c.HIncrBy(ctx, k.Name(), VersionField, 1)
		c.Expire(ctx, k.Name(), time.Minute)
		return Write{Set: []Field{{LastField, []byte("mine")}}, TTL: testTTL}, nil
	}}
	err := s.Apply(ctx, []Update{u})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("error %v, want ErrConflict", err)
	}
	want := fmt.Sprintf("apply online state: 1 of 1 keys, first %s, still conflicting after 3 attempts", k)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to contain %q", err, want)
	}
	if calls != 3 {
		t.Errorf("%d merges, want 3", calls)
	}
	if c.HExists(ctx, k.Name(), LastField).Val() {
		t.Error("a conflicting write was applied")
	}
}

func TestApplyErrors(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	s := New(c, Options{})
	ctx := testContext(t)
	view := testenv.UniqueName(t, "v")
	k := Key{View: view, Entity: featurestore.StringKey("e")}
	noop := func(State) (Write, error) { return Write{}, nil }
	set := func(w Write) func(State) (Write, error) {
		return func(State) (Write, error) { return w, nil }
	}
	tests := []struct {
		name string
		u    Update
		err  string
	}{
		{"no view", Update{Key: Key{Entity: k.Entity}, Merge: noop}, "apply online state: update 0: key has no view name"},
		{"no entity", Update{Key: Key{View: view}, Merge: noop}, `apply online state: update 0: key of view "` + view + `" has no entity key`},
		{"no merge", Update{Key: k}, "apply online state: update 0: " + k.Name() + ": no merge function"},
		{"no topic", Update{Key: k, Partitions: []int32{1}, Merge: noop}, "fences of partitions without a topic"},
		{"read version", Update{Key: k, Fields: []string{"v"}, Merge: noop}, "field v is the store's version counter"},
		{"read fence", Update{Key: k, Fields: []string{"f:t:1"}, Merge: noop}, `field "f:t:1" is a fence; set fences through Write.Fences`},
		{"set version", Update{Key: k, Merge: set(Write{Set: []Field{{"v", nil}}, TTL: time.Hour})}, "merge " + k.Name() + ": set: field v is the store's version counter"},
		{"delete fence", Update{Key: k, Merge: set(Write{Delete: []string{"f:t:1"}, TTL: time.Hour})}, `delete: field "f:t:1" is a fence`},
		{"fence without topic", Update{Key: k, Merge: set(Write{Fences: []Fence{{1, 1}}, TTL: time.Hour})}, "write sets fences but the update has no topic"},
		{"negative offset", Update{Key: k, Topic: "t", Merge: set(Write{Fences: []Fence{{1, -1}}, TTL: time.Hour})}, "fence of partition 1: negative offset -1"},
		{"merge fails", Update{Key: k, Merge: func(State) (Write, error) { return Write{}, errors.New("corrupt tile") }}, "merge " + k.Name() + ": corrupt tile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Apply(ctx, []Update{tt.u})
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("error %v, want it to contain %q", err, tt.err)
			}
		})
	}
	if n := c.Exists(ctx, k.Name()).Val(); n != 0 {
		t.Error("a failed update wrote the hash")
	}
	if _, err := s.Read(ctx, []Lookup{{Key: Key{View: view}, Fields: []string{"x"}}}); err == nil ||
		err.Error() != `read online state: lookup 0: key of view "`+view+`" has no entity key` {
		t.Errorf("Read of a zero entity: %v", err)
	}
}

// TestApplyAfterScriptFlush checks the EVAL fallback: a Redis restart,
// failover or SCRIPT FLUSH empties the script cache.
func TestApplyAfterScriptFlush(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	s := New(c, Options{})
	ctx := testContext(t)
	k := Key{View: testenv.UniqueName(t, "v"), Entity: featurestore.StringKey("e")}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, []Update{counterUpdate(k, "t", []event{{0, 1, 1, 2}}, nil)}); err != nil {
		t.Fatal(err)
	}
	if ok := c.ScriptExists(ctx, writeScript.Hash()).Val(); len(ok) != 1 || !ok[0] {
		t.Error("EVAL did not cache the script")
	}
	if v := c.HGet(ctx, k.Name(), TileField(1)).Val(); counter(t, []byte(v)) != 2 {
		t.Errorf("counter %q", v)
	}
}

// TestSpecialCharacterKeys writes and reads entities whose values hold
// braces, colons and stars, or would collide under a naive encoding. Each
// must land in its own hash.
func TestSpecialCharacterKeys(t *testing.T) {
	c := newClient(t, testenv.RedisAddr(t))
	s := New(c, Options{})
	ctx := testContext(t)
	view := testenv.UniqueName(t, "v")
	entities := trickyEntities(t)
	var ups []Update
	var lookups []Lookup
	for i, e := range entities {
		k := Key{View: view, Entity: e}
		ups = append(ups, Update{Key: k, Merge: func(State) (Write, error) {
			return Write{Set: []Field{{LastField, []byte(fmt.Sprint(i))}}, TTL: testTTL}, nil
		}})
		lookups = append(lookups, Lookup{Key: k, Fields: []string{LastField, VersionField}})
	}
	if err := s.Apply(ctx, ups); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(ctx, lookups)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range entities {
		if string(got[i][0]) != fmt.Sprint(i) || string(got[i][1]) != "1" {
			t.Errorf("entity %v: value %q at version %q, want %d at version 1", e, got[i][0], got[i][1], i)
		}
	}
	n, err := c.Keys(ctx, "fs:{*}:"+view).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != len(entities) {
		t.Errorf("%d hashes for %d entities", len(n), len(entities))
	}
}

// TestOutage checks that a Redis that is gone or does not answer fails
// Read and Apply by the context's deadline, with an error that says what
// failed.
func TestOutage(t *testing.T) {
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	// A server that accepts connections and never answers.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	accepting := make(chan struct{})
	t.Cleanup(func() {
		hole.Close()
		<-accepting
		conns.Wait()
	})
	go func() {
		defer close(accepting)
		for {
			conn, err := hole.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				defer conn.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := conn.Read(buf); err != nil {
						return
					}
				}
			})
		}
	}()

	k := Key{View: "v", Entity: featurestore.StringKey("e")}
	for _, tt := range []struct{ name, addr string }{{"closed port", closed}, {"no answer", hole.Addr().String()}} {
		t.Run(tt.name, func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: tt.addr, ContextTimeoutEnabled: true})
			defer c.Close()
			s := New(c, Options{})
			const deadline = 300 * time.Millisecond
			for _, op := range []struct {
				name, msg string
				run       func(ctx context.Context) error
			}{
				{"read", "read online state of 1 keys from redis", func(ctx context.Context) error {
					_, err := s.Read(ctx, []Lookup{{Key: k, Fields: []string{LastField}}})
					return err
				}},
				{"apply", "apply online state: read 1 keys from redis", func(ctx context.Context) error {
					return s.Apply(ctx, []Update{counterUpdate(k, "t", []event{{0, 1, 1, 1}}, nil)})
				}},
			} {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				start := time.Now()
				err := op.run(ctx)
				took := time.Since(start)
				cancel()
				if err == nil || !strings.Contains(err.Error(), op.msg) {
					t.Errorf("%s: error %v, want it to contain %q", op.name, err, op.msg)
				}
				if took > deadline+200*time.Millisecond {
					t.Errorf("%s: took %v with a %v deadline", op.name, took, deadline)
				}
				t.Logf("%s: %v after %v", op.name, err, took.Round(time.Millisecond))
			}
		})
	}
}
