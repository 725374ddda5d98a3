package online

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore/window"
)

// Reads are the serving hot path, so they avoid what go-redis's command
// helpers allocate: every HMGET argument is boxed in an interface, which
// costs an allocation per string. Here field names are boxed once per view
// layout, and key names and caller-owned field names are passed as *string,
// which go-redis writes like a string and which boxes without allocating.

// Lookup names the fields to read of one hash.
type Lookup struct {
	Key    Key
	Fields []string
}

// Read returns the values of the fields of each lookup: out[i][j] is field
// lookups[i].Fields[j] of lookups[i].Key, nil when the field or the hash does
// not exist. The values share memory with the reply and must not be modified.
//
// Read makes one pipeline of HMGET, one per lookup: one round trip whatever
// the number of keys and views. On Redis Cluster the pipeline is split by
// node and sent to the nodes in parallel: one round trip per node, at the same
// time. Any error fails the whole Read.
func (s *Store) Read(ctx context.Context, lookups []Lookup) ([][][]byte, error) {
	if len(lookups) == 0 {
		return nil, nil
	}
	total, nargs, nname := 0, 0, 0
	for i, l := range lookups {
		if err := l.Key.validate(); err != nil {
			return nil, fmt.Errorf("read online state: lookup %d: %w", i, err)
		}
		if len(l.Fields) > 0 {
			total += len(l.Fields)
			nargs += 2 + len(l.Fields)
			nname += len(keyPrefix) + 48 + 3 + len(l.Key.Project) + len(l.Key.View)
		}
	}
	if total == 0 {
		return make([][][]byte, len(lookups)), nil
	}
	names := keyNames(lookups, nname)
	args := make([]any, 0, nargs)
	cmds := make([]*redis.SliceCmd, len(lookups))
	batch := make([]redis.Cmder, 0, len(lookups))
	for i, l := range lookups {
		if len(l.Fields) == 0 {
			continue
		}
		n := len(args)
		args = append(args, "hmget", &names[i])
		for j := range l.Fields {
			args = append(args, &l.Fields[j])
		}
		// A SliceCmd, not a StringSliceCmd: Read tells an empty value from
		// an absent one.
		cmds[i] = redis.NewSliceCmd(ctx, args[n:len(args):len(args)]...)
		batch = append(batch, cmds[i])
	}
	pipe := s.c.Pipeline()
	_ = pipe.BatchProcess(ctx, batch...)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read online state of %d keys from redis: %w", len(lookups), err)
	}
	flat := make([][]byte, total)
	out := make([][][]byte, len(lookups))
	for i, cmd := range cmds {
		if cmd == nil {
			continue
		}
		vals := cmd.Val()
		if len(vals) != len(lookups[i].Fields) {
			return nil, fmt.Errorf("read online state: %s: %d values for %d fields", names[i], len(vals), len(lookups[i].Fields))
		}
		row := flat[:len(vals):len(vals)]
		flat = flat[len(vals):]
		for j, v := range vals {
			if str, ok := v.(string); ok {
				row[j] = bytesOf(str)
			}
		}
		out[i] = row
	}
	return out, nil
}

// keyNames returns the names of the lookups' keys, built in one buffer of
// about size bytes.
func keyNames(lookups []Lookup, size int) []string {
	buf := make([]byte, 0, size)
	ends := make([]int, len(lookups))
	for i, l := range lookups {
		buf = l.Key.appendName(buf)
		ends[i] = len(buf)
	}
	names := make([]string, len(lookups))
	start := 0
	for i, end := range ends {
		names[i] = stringOf(buf[start:end])
		start = end
	}
	return names
}

// ReadBuffer holds the buffers of ReadViews for reuse. The zero value is
// ready to use. A ReadBuffer serves one call at a time, and the results of a
// call are valid until the next; keep one per goroutine, or in a sync.Pool.
type ReadBuffer struct {
	store   *Store
	pipe    redis.Pipeliner
	reads   []*layoutReads
	ends    []int
	names   []string
	args    []any
	cmds    []redis.Cmder      // per request: a StringSliceCmd, or a MapStringStringCmd (HGETALL over RESP3)
	modes   []readMode         // per request: how cmds[i] reads
	again   []redis.Cmder      // the reads asked again whole (readSlots of a hash in another ring)
	merged  []int32            // per request of the last ReadViews: tiles merged, -1 without windows
	plan    []window.TileRange // the tiles of a read's plan (window.View.ReadPlan)
	kv      []string           // a reply as field, value, ...
	flat    []window.FeatureValue
	out     [][]window.FeatureValue
	scratch []heldScratch
	corrupt []CorruptRead // of the last ReadViews
}

// CorruptRead is a read of ReadBuffer.ReadViews whose hash does not decode.
type CorruptRead struct {
	// Request is the index of the read in the requests.
	Request int
	// Key is the name of the hash in Redis.
	Key string
	// Err says why the hash does not decode; it wraps ErrCorruptState.
	Err error
}

// heldScratch is a view's scratch taken from its layout's pool for the
// duration of one ReadViews.
type heldScratch struct {
	lr *layoutReads
	sc *viewScratch
}

// ReadViews is ReadViews with the buffers of b, the results valid until b's
// next use, except that a hash that does not decode fails only its own read
// (below).
//
// It reads the hash of a view with windows whole, with HGETALL, and keeps
// the tiles of the view's longest window at t, the lifetime and the
// last-value fields: Redis parses no field names and replies only with the
// fields that exist, which costs it about a third of an HMGET of every slot
// of the window (2h over 5m tiles: 26 fields), and the reply is shorter. A
// hash holds a ring of tile slots sized to the longest window and the
// allowed lateness (ring.go), so reading it whole reads a bounded number of
// tiles the window does not need. When the window read is a small part of
// the ring (a layout from ViewLayout.Select of short windows only, or a
// lateness much longer than the window), the hash of an entity with events
// in every tile holds a ring of tiles the read does not need: such reads
// ask for the ring's size and the slots of the window's tiles only, with
// HMGET. A view with rollup tiles (window.View.Rollup) is read by its
// plan (window.View.ReadPlan): the rollup tiles its windows cover whole and
// the tiles at their ends, by slot when the plan is a small part of the
// ring. A hash laid out in a ring of another size (the view's longest
// window, its source's lateness or its rollup changed, and no write has
// laid it out again yet) is then read again whole, in a second round trip,
// and its tiles alone are merged. The hash of
// a view without windows is read with an HMGET of its one or two fields,
// cheaper than HGETALL for Redis and for the reply. An empty value reads as
// absent: the store never writes one.
//
// A hash that does not decode, or a key that holds no hash (WRONGTYPE),
// fails only its own read, not the others: every
// feature of that result has window.StatusError, no value and no event time
// (windowed features keep the interval they cover), and Corrupt tells which
// reads they are and why. Any other error (Redis unreachable, a reply of the
// wrong shape) fails the whole call.
func (b *ReadBuffer) ReadViews(ctx context.Context, s *Store, reqs []ViewRead, t int64) ([][]window.FeatureValue, error) {
	clear(b.corrupt)
	b.corrupt, b.again, b.merged = b.corrupt[:0], b.again[:0], b.merged[:0]
	if len(reqs) == 0 {
		return nil, nil
	}
	defer b.release()
	b.reads = grow(b.reads, len(reqs))
	nfeat := 0
	for i, r := range reqs {
		if r.Entity.IsZero() {
			return nil, fmt.Errorf("read view %q: request %d has no entity key", r.Layout.Name, i)
		}
		if r.Layout.Name == "" {
			return nil, fmt.Errorf("read views: request %d: layout has no view name", i)
		}
		lr := r.Layout.readsOf()
		b.reads[i] = lr
		nfeat += lr.features
	}

	// Key names, in one allocation: they must outlive b (go-redis may keep
	// them in errors), so they are not pooled.
	b.ends = grow(b.ends, len(reqs))
	buf := make([]byte, 0, b.nameBytes(reqs))
	for i, r := range reqs {
		buf = Key{Project: r.Layout.Project, View: r.Layout.Name, Entity: r.Entity}.appendName(buf)
		b.ends[i] = len(buf)
	}
	b.names = grow(b.names, len(reqs))
	start := 0
	for i, end := range b.ends {
		b.names[i] = stringOf(buf[start:end])
		start = end
	}

	// Every command's arguments live in one slice, which must not move
	// once commands refer to it.
	nargs := 0
	for _, lr := range b.reads[:len(reqs)] {
		nargs += 2 + len(lr.tail)
		if lr.mode == readSlots {
			nargs += lr.plan
		}
	}
	if cap(b.args) < nargs {
		b.args = make([]any, 0, nargs)
	}
	args := b.args[:0]
	b.cmds = b.cmds[:0]
	b.modes = b.modes[:0]
	for i, r := range reqs {
		lr := b.reads[i]
		n := len(args)
		var cmd redis.Cmder
		switch {
		case lr.mode == readTail:
			args = append(args, "hmget", &b.names[i])
			args = append(args, lr.tail...)
			cmd = redis.NewStringSliceCmd(ctx, args[n:len(args):len(args)]...)
		case lr.mode == readSlots:
			args = append(args, "hmget", &b.names[i])
			args = append(args, lr.tail...)
			tiles, rollups := r.Layout.View.ReadPlan(b.plan[:0], t)
			b.plan = tiles
			ring := int64(len(lr.slots.boxed))
			for _, x := range tiles {
				for k := x.First; k <= x.Last; k++ {
					args = append(args, lr.slots.boxed[slotOf(k, ring)])
				}
			}
			for K := rollups.First; K <= rollups.Last; K++ {
				args = append(args, lr.rollupSlots.boxed[slotOf(K, lr.rollupRing)])
			}
			cmd = redis.NewStringSliceCmd(ctx, args[n:len(args):len(args)]...)
		default:
			cmd = b.hgetall(ctx, s, &args, i)
		}
		b.cmds = append(b.cmds, cmd)
		b.modes = append(b.modes, lr.mode)
	}
	b.args = args
	// A pipeline holds nothing once executed, so one per buffer serves all
	// its reads of a store.
	if b.store != s {
		b.store, b.pipe = s, s.c.Pipeline()
	}
	_ = b.pipe.BatchProcess(ctx, b.cmds...)
	if _, err := b.pipe.Exec(ctx); err != nil && !wrongTypeOnly(b.cmds) {
		return nil, fmt.Errorf("read online state of %d keys from redis: %w", len(reqs), err)
	}
	if err := b.readAgain(ctx, s); err != nil {
		return nil, err
	}

	b.flat = grow(b.flat, nfeat)
	b.out = grow(b.out, len(reqs))
	b.merged = grow(b.merged, len(reqs))
	off := 0
	for i, r := range reqs {
		lr := b.reads[i]
		dst := b.flat[off : off+lr.features : off+lr.features]
		off += lr.features
		b.out[i] = dst
		if err := b.cmds[i].Err(); err != nil {
			// WRONGTYPE (wrongTypeOnly): the key holds no hash.
			b.corruptRead(i, b.scratchOf(lr), t, dst, err)
			b.merged[i] = -1
			continue
		}
		var kv []string
		switch cmd := b.cmds[i].(type) {
		case *redis.MapStringStringCmd:
			b.kv = b.kv[:0]
			for f, v := range cmd.Val() {
				b.kv = append(b.kv, f, v)
			}
			kv = b.kv
		case *redis.StringSliceCmd:
			vals := cmd.Val()
			switch b.modes[i] {
			case readAll:
				if len(vals)%2 != 0 {
					return nil, fmt.Errorf("read %s: HGETALL replied with %d elements, not pairs", b.names[i], len(vals))
				}
				kv = vals
			default: // HMGET (readTail, readSlots): the values of the fields named in its arguments
				names := cmd.Args()[2:]
				if len(vals) != len(names) {
					return nil, fmt.Errorf("read %s: %d values for %d fields", b.names[i], len(vals), len(names))
				}
				b.kv = b.kv[:0]
				for j, v := range vals {
					b.kv = append(b.kv, names[j].(string), v)
				}
				kv = b.kv
			}
		}
		sc := b.scratchOf(lr)
		b.merged[i] = -1
		if err := sc.read(r.Layout.View, lr, kv, t, dst); err != nil {
			b.corruptRead(i, sc, t, dst, err)
		} else if lr.tiles > 0 {
			b.merged[i] = int32(len(sc.used) + len(sc.rused))
		}
	}
	return b.out, nil
}

// hgetall appends to args the arguments of an HGETALL of read i's hash
// and returns the command: a StringSliceCmd under RESP2, which replies with
// a flat array, a MapStringStringCmd under RESP3, which replies with a map.
func (b *ReadBuffer) hgetall(ctx context.Context, s *Store, args *[]any, i int) redis.Cmder {
	n := len(*args)
	*args = append(*args, "hgetall", &b.names[i])
	a := (*args)[n:len(*args):len(*args)]
	if s.resp2 {
		return redis.NewStringSliceCmd(ctx, a...)
	}
	return redis.NewMapStringStringCmd(ctx, a...)
}

// readAgain reads whole, with HGETALL, in one more round trip, the hashes
// that reads of slots (readSlots) found laid out in a ring of another size,
// or in none, and replaces their commands. It costs nothing when there are
// none.
func (b *ReadBuffer) readAgain(ctx context.Context, s *Store) error {
	b.again = b.again[:0]
	var args []any
	for i, mode := range b.modes {
		if mode != readSlots || b.cmds[i].Err() != nil {
			continue
		}
		lr := b.reads[i]
		vals := b.cmds[i].(*redis.StringSliceCmd).Val()
		if len(vals) == 0 || vals[0] == lr.ring {
			continue // a reply of the wrong shape fails in ReadViews
		}
		if vals[0] == "" && !slices.ContainsFunc(vals, func(v string) bool { return v != "" }) {
			continue // no hash, or none of the fields asked for
		}
		if args == nil {
			args = make([]any, 0, 2*len(b.modes))
		}
		b.cmds[i] = b.hgetall(ctx, s, &args, i)
		b.modes[i] = readAll
		b.again = append(b.again, b.cmds[i])
	}
	if len(b.again) == 0 {
		return nil
	}
	_ = b.pipe.BatchProcess(ctx, b.again...)
	if _, err := b.pipe.Exec(ctx); err != nil && !wrongTypeOnly(b.again) {
		return fmt.Errorf("read online state of %d keys from redis again, whole: %w", len(b.again), err)
	}
	return nil
}

// slotOf returns the slot of tile k in a ring of r slots.
func slotOf(k, r int64) int64 {
	s := k % r
	if s < 0 {
		s += r
	}
	return s
}

// corruptRead records that read i of the last ReadViews failed on what
// its key holds (err), and puts its features, read with sc, in dst.
func (b *ReadBuffer) corruptRead(i int, sc *viewScratch, t int64, dst []window.FeatureValue, err error) {
	// The key name is cloned: it shares its buffer with every key of the
	// call, which a retained CorruptRead would keep alive.
	b.corrupt = append(b.corrupt, CorruptRead{Request: i, Key: strings.Clone(b.names[i]), Err: fmt.Errorf("%w: %w", ErrCorruptState, err)})
	sc.readError(t, dst)
}

// wrongTypeOnly reports whether every command of cmds that failed did so
// with Redis's WRONGTYPE reply (IsWrongType), which fails only its own
// read, as a hash that does not decode does. Any other error fails the
// whole call.
func wrongTypeOnly(cmds []redis.Cmder) bool {
	found := false
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			if !IsWrongType(err) {
				return false
			}
			found = true
		}
	}
	return found
}

// IsWrongType reports whether err is Redis's WRONGTYPE reply: a key of the
// online store that holds no hash, written by something else. Like a hash
// that does not decode, trying again changes nothing until it is repaired.
func IsWrongType(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "WRONGTYPE ")
}

// Corrupt returns the reads of the last ReadViews whose hash does not
// decode, in request order; empty when all decoded. It is valid until b's
// next use.
func (b *ReadBuffer) Corrupt() []CorruptRead {
	return b.corrupt
}

// TilesMerged returns, for each read of the last ReadViews in request
// order, the tiles and rollup tiles it decoded and merged: those with
// events that its plan (the longest window its layout asks for, or with
// rollups window.View.ReadPlan) holds; -1 for a view without windows and for a read
// that failed on what its key holds. It is valid until b's next use.
func (b *ReadBuffer) TilesMerged() []int32 { return b.merged }

// ReadAgain returns how many hashes the last ReadViews read again whole,
// in a second round trip, because they were laid out in a ring of another
// size than the layout's: a view's longest window or its source's lateness
// changed, and no write has laid the entity's tiles out again since.
func (b *ReadBuffer) ReadAgain() int { return len(b.again) }

// ErrCorruptState marks a read error caused by what a hash holds (a field
// that does not decode), not by reaching Redis: trying again gives the same
// error until the state is written again or deleted.
var ErrCorruptState = errors.New("corrupt online state")

// nameBytes estimates the length of the key names of reqs, so that they
// are built in one allocation: the encoded entity key is 4/3 of its binary
// form, which typical keys keep under 32 bytes.
func (b *ReadBuffer) nameBytes(reqs []ViewRead) int {
	n := 0
	for _, r := range reqs {
		n += len(keyPrefix) + 32*4/3 + len("}:") + len(r.Layout.Project) + 1 + len(r.Layout.Name)
	}
	return n
}

// scratchOf returns the scratch of lr held for this call, taking one from
// the layout's pool on first use.
func (b *ReadBuffer) scratchOf(lr *layoutReads) *viewScratch {
	for _, h := range b.scratch {
		if h.lr == lr {
			return h.sc
		}
	}
	sc := lr.scratch.Get().(*viewScratch)
	b.scratch = append(b.scratch, heldScratch{lr, sc})
	return sc
}

// release gives the scratch back and drops the references to this call's
// keys and replies, so that a pooled buffer keeps no request alive.
func (b *ReadBuffer) release() {
	for i, h := range b.scratch {
		h.lr.scratch.Put(h.sc)
		b.scratch[i] = heldScratch{}
	}
	b.scratch = b.scratch[:0]
	clear(b.args)
	clear(b.names)
	clear(b.cmds)
	clear(b.again) // keeps its length, for ReadAgain
	clear(b.kv)
	clear(b.reads)
}

// grow returns s resized to n elements, reusing its array when large enough.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
