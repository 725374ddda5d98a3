package online

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// NoOffset is the fence of a partition none of whose events a hash contains.
const NoOffset int64 = -1

// NoExpiry as Write.TTL keeps the hash until a later write sets a TTL.
const NoExpiry time.Duration = -1

// DefaultMaxAttempts is the default of Options.MaxAttempts.
const DefaultMaxAttempts = 20

// Errors that Apply wraps.
var (
	// ErrConflict means other writers kept changing a hash between Apply's
	// read and its write until Apply gave up. Nothing of the failed updates
	// was written; calling Apply again is safe.
	ErrConflict = errors.New("online state kept changing under concurrent writers")
	// ErrFenceRegression means a write would have moved a fence back: the
	// merge produced an offset below the one it was shown. It is a bug in the
	// merge; nothing of that update was written.
	ErrFenceRegression = errors.New("fence would move back")
)

// Options tune a Store. The zero value gives the defaults.
type Options struct {
	// MaxAttempts bounds how many times Apply reads, merges and writes one
	// key whose version keeps changing under it. Default DefaultMaxAttempts.
	MaxAttempts int
	// Replicas, when positive, makes Apply wait until that many replicas
	// of every Redis server its keys live on have acknowledged its writes
	// (WAIT), at most ReplicaTimeout, and fail with ErrNotReplicated
	// otherwise. A caller that records its progress elsewhere after Apply
	// (ingest's positions, on another Cluster shard) then never records
	// writes that a failover to a replica could lose.
	Replicas int
	// ReplicaTimeout bounds each wait for Replicas. Default
	// DefaultReplicaTimeout.
	ReplicaTimeout time.Duration
}

// Store keeps the online state of feature views in Redis, standalone or
// Cluster, with the layout and write protocol of the package documentation.
// It is safe for concurrent use.
type Store struct {
	c           redis.UniversalClient
	maxAttempts int
	// replicas and replicaTimeout are Options.Replicas and ReplicaTimeout.
	replicas       int
	replicaTimeout time.Duration
	resp2          bool // c speaks RESP2: HGETALL replies are flat arrays

	writes, blind, skips, conflicts, refused atomic.Int64
}

// New returns a store on c. The caller keeps ownership of c. Give c
// ContextTimeoutEnabled: true, so that a context's deadline also bounds a
// command already sent (DESIGN.md section 5).
func New(c redis.UniversalClient, opts Options) *Store {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.ReplicaTimeout <= 0 {
		opts.ReplicaTimeout = DefaultReplicaTimeout
	}
	return &Store{c: c, maxAttempts: opts.MaxAttempts, replicas: opts.Replicas, replicaTimeout: opts.ReplicaTimeout,
		resp2: speaksRESP2(c)}
}

// speaksRESP2 tells whether c talks to Redis in RESP2 (Protocol: 2), whose
// replies are cheaper to read for go-redis than RESP3's maps and pushes.
// Clients it does not know are taken for RESP3, go-redis's default.
func speaksRESP2(c redis.UniversalClient) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().Protocol == 2
	case *redis.ClusterClient:
		return c.Options().Protocol == 2
	}
	return false
}

// Stats are cumulative counts of a Store's writes, for metrics.
type Stats struct {
	Writes    int64 // hashes written
	Blind     int64 // of which written without reading first (Update.Blind)
	Skips     int64 // merges with nothing to write, such as replays
	Conflicts int64 // writes refused because another writer came first
	Refused   int64 // blind writes whose hash did not allow them, read instead
}

// Stats returns the counts so far.
func (s *Store) Stats() Stats {
	return Stats{Writes: s.writes.Load(), Blind: s.blind.Load(), Skips: s.skips.Load(),
		Conflicts: s.conflicts.Load(), Refused: s.refused.Load()}
}

// Update is what Apply does to one hash: read the fences and fields that
// Merge needs, merge, and write the result if nothing changed in between.
type Update struct {
	Key Key
	// Topic is the view's source topic; fences are kept per topic and
	// partition.
	Topic string
	// Partitions are the partitions whose fences Merge needs to see.
	Partitions []int32
	// Fields are the fields Merge needs to see: tiles, LifetimeField,
	// LastField.
	Fields []string
	// Merge computes the write from the stored state. It must skip events at
	// or below their partition's fence, and return an empty Write when there
	// is nothing left. Apply calls it again with the new state whenever the
	// write conflicts, so it must compute from its arguments alone and keep
	// nothing of a call that was not followed by a successful write.
	Merge func(State) (Write, error)
	// Blind lets Apply write before reading: it first calls Merge with the
	// empty state (State.Blind: version 0, no fences, no fields) and sends
	// that write with conditions that the script checks against the stored
	// hash, atomically:
	//
	//   - the hash holds none of the update's events: the stored fence of
	//     each partition is below the update's lowest offset in it (First);
	//   - every field to set is absent, or is a tile slot (see SlotField)
	//     holding another tile than the write's value for it;
	//   - if the write sets RingField, the hash holds the same value there,
	//     or does not exist.
	//
	// A slot holding an older tile is overwritten, and one holding a newer
	// tile is left as it is (the write's tile can no longer be read), unless
	// the newer one is beyond MaxTile. When a
	// condition fails, nothing is written and the script returns what it read:
	// Apply then merges that state and writes with the version check, as for
	// an update without Blind, in the same number of round trips.
	//
	// So set Blind only where Merge, given any state that meets the
	// conditions, returns the write it returns for the empty state, except
	// for the slots left alone: a merge of the events into fresh tiles,
	// lifetime state and last values. The write's fences must be of
	// partitions in Partitions and its fields in Fields. A blind write saves
	// the read when most writes start new tiles, as when ingest catches up
	// on a backlog.
	Blind bool
	// First[i] is the lowest offset of partition Partitions[i] among the
	// update's events, for a blind write; without it the update reads first.
	First []int64
	// MaxTile, when positive, is the highest tile index that a tile slot
	// can hold for the writer of a blind write: the tile of its clock plus
	// the source's future skew, and a margin (ring.go). A slot holding a
	// tile beyond it holds one of another tile size, or from a clock far
	// ahead, and is overwritten like an older tile instead of kept.
	MaxTile int64
}

// ErrNeedTiles is returned by a Merge that needs every tile of the hash,
// not only the fields of its update: to lay the tiles out again in a ring
// of another size (RingField). Apply then reads the whole hash and calls
// Merge again with its tile slots in State.Tiles.
var ErrNeedTiles = errors.New("the merge needs every tile of the hash")

// State is the stored state of a hash, as an Update asked for it. It is
// valid during the call of Merge only; its byte slices must not be modified.
type State struct {
	// Version is the number of writes to the hash so far; 0 when the hash
	// does not exist.
	Version int64
	// Fences[i] is the stored fence of Update.Partitions[i], or NoOffset.
	Fences []int64
	// Fields[i] is the value of Update.Fields[i], nil when absent.
	Fields [][]byte
	// Blind is true when nothing was read: Apply assumes the empty state
	// for a blind write (Update.Blind).
	Blind bool
	// Tiles are every tile slot of the hash (fields named t:...) and every
	// rollup tile slot (c:..., see RollupSlotField), when the Merge asked
	// for them with ErrNeedTiles; nil otherwise.
	Tiles []Field
}

// Write is what a Merge asks Apply to write.
type Write struct {
	// Set are the fields to set; Delete the fields to delete, before the sets.
	Set    []Field
	Delete []string
	// Fences are the new highest applied offsets, per partition of the
	// update's topic. None may be below the stored one.
	Fences []Fence
	// TTL is the time the hash is kept after this write: the longest window
	// plus the allowed lateness, or the view's TTL, whichever is longer.
	// NoExpiry keeps it forever; zero is an error, so that no hash lives
	// forever by omission.
	TTL time.Duration
}

// Field is a field of a hash with its value.
type Field struct {
	Name  string
	Value []byte
}

// Fence is the highest offset of a partition whose events a write includes.
type Fence struct {
	Partition int32
	Offset    int64
}

// IsEmpty reports whether the write changes nothing but the TTL.
func (w *Write) IsEmpty() bool { return len(w.Set) == 0 && len(w.Delete) == 0 && len(w.Fences) == 0 }

func (u *Update) validate() error {
	if err := u.Key.validate(); err != nil {
		return err
	}
	if u.Merge == nil {
		return fmt.Errorf("%s: no merge function", u.Key)
	}
	if u.Topic == "" && len(u.Partitions) > 0 {
		return fmt.Errorf("%s: fences of partitions without a topic", u.Key)
	}
	for _, f := range u.Fields {
		if err := checkDataField(f); err != nil {
			return fmt.Errorf("%s: %w", u.Key, err)
		}
	}
	return nil
}

func (w *Write) validate(topic string) error {
	if w.TTL == 0 {
		return errors.New("write has no TTL (use NoExpiry to keep the hash forever)")
	}
	if len(w.Fences) > 0 && topic == "" {
		return errors.New("write sets fences but the update has no topic")
	}
	for _, f := range w.Fences {
		if f.Offset < 0 {
			return fmt.Errorf("fence of partition %d: negative offset %d", f.Partition, f.Offset)
		}
	}
	for _, f := range w.Set {
		if err := checkDataField(f.Name); err != nil {
			return fmt.Errorf("set: %w", err)
		}
	}
	for _, f := range w.Delete {
		if err := checkDataField(f); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
	}
	return nil
}

// op is Apply's working state for one update.
type op struct {
	u     *Update
	name  string
	key   any      // name, boxed once for the script calls
	read  []string // HMGET fields: version, fences, data fields
	state State
	args  []any // of the script call: argsOf, then its ARGV
	cmd   *redis.Cmd
	blind bool // args are those of a blind write
	tiles bool // its Merge needs every tile: read the whole hash
}

// maxBlindArgs bounds the arguments of a blind write; larger updates read
// first. Lua's unpack has a limit of a few thousand values.
const maxBlindArgs = 2000

// Apply writes the updates so that every event reaches its hash exactly once,
// whatever else writes the same hashes at the same time and however often the
// same updates are applied, provided each Merge skips the events behind the
// fences it is shown and sets the fences of the events it applies.
//
// Per round, it reads the state of all pending updates in one pipeline, calls
// each Merge, and writes the non-empty results in a second pipeline, one
// script call per hash that writes only if the hash's version is still the
// one read. Updates whose hash changed in between are read, merged and
// written again in the next round, after a short random pause, up to
// Options.MaxAttempts rounds; then Apply fails with ErrConflict. Blind
// updates (Update.Blind) take the place of their read in the first round
// with their blind write; those the hash refuses come back with the state
// read and go on as the others.
//
// Apply returns on the first error. Updates of earlier rounds, and some of
// the failed round, may be written by then; because their fences are written
// with them, applying the same updates again writes exactly what is missing.
// That is also why a write that go-redis retries after a timeout cannot apply
// twice: the second attempt finds the version it expects gone (or, for a
// blind write, the fence at its events) and conflicts, and the next round's
// Merge finds its events behind the fences.
//
// With Options.Replicas, Apply returns once the replicas have the writes
// too, or ErrNotReplicated; applying the same updates again waits again.
func (s *Store) Apply(ctx context.Context, updates []Update) error {
	if len(updates) == 0 {
		return nil
	}
	ops := make([]op, len(updates))
	if err := s.apply(ctx, updates, ops); err != nil || s.replicas <= 0 {
		return err
	}
	return s.waitReplicas(ctx, ops)
}

// apply is Apply without the wait for replicas, with ops[i] its working
// state for updates[i].
func (s *Store) apply(ctx context.Context, updates []Update, ops []op) error {
	pending := make([]*op, 0, len(updates))
	nread, maxFences, maxFields := 0, 0, 0
	for i := range updates {
		u := &updates[i]
		if err := u.validate(); err != nil {
			return fmt.Errorf("apply online state: update %d: %w", i, err)
		}
		nread += 1 + len(u.Partitions) + len(u.Fields)
		maxFences, maxFields = max(maxFences, len(u.Partitions)), max(maxFields, len(u.Fields))
	}
	// The read lists of all updates in one allocation; the updates of a
	// batch share their topic and partitions, so fence names are made once.
	reads := make([]string, 0, nread)
	var fences fenceNames
	for i := range updates {
		u := &updates[i]
		n := len(reads)
		reads = append(reads, VersionField)
		for _, p := range u.Partitions {
			reads = append(reads, fences.name(u.Topic, p))
		}
		reads = append(reads, u.Fields...)
		name := u.Key.Name()
		ops[i] = op{u: u, name: name, key: name, read: reads[n:len(reads):len(reads)]}
	}
	slab := newArgSlab(len(ops))
	var bx boxes
	// The blind writes, merged with the empty state; the other updates read.
	empty := State{Fences: make([]int64, maxFences), Fields: make([][]byte, maxFields), Blind: true}
	for i := range empty.Fences {
		empty.Fences[i] = NoOffset
	}
	for i := range ops {
		o := &ops[i]
		if !o.u.Blind {
			pending = append(pending, o)
			continue
		}
		st := State{Fences: empty.Fences[:len(o.u.Partitions)], Fields: empty.Fields[:len(o.u.Fields)], Blind: true}
		w, err := o.u.Merge(st)
		if err != nil {
			return fmt.Errorf("apply online state: merge %s: %w", o.name, err)
		}
		if w.IsEmpty() {
			s.skips.Add(1) // no events at all, whatever is stored
			continue
		}
		if err := w.validate(o.u.Topic); err != nil {
			return fmt.Errorf("apply online state: merge %s: %w", o.name, err)
		}
		args, ok := blindArgs(slab.take(6+len(o.read)+3*len(w.Fences)+2*len(w.Set)+len(w.Delete)), o, &w, &bx)
		if !ok {
			pending = append(pending, o)
			continue
		}
		o.args, o.blind = args, true
		pending = append(pending, o)
	}
	pending, err := s.first(ctx, pending, &slab)
	if err != nil {
		return err
	}
	// attempt counts the rounds that conflicted: a round that only reads
	// the tiles a Merge asked for (ErrNeedTiles) is not one.
	attempt := 1
	for len(pending) > 0 {
		slab = newArgSlab(len(pending))
		writes, reread := pending[:0:0], pending[:0:0]
		for _, o := range pending {
			w, err := o.u.Merge(o.state)
			if errors.Is(err, ErrNeedTiles) && !o.tiles {
				o.tiles = true
				reread = append(reread, o)
				continue
			}
			if err != nil {
				return fmt.Errorf("apply online state: merge %s: %w", o.name, err)
			}
			if w.IsEmpty() {
				s.skips.Add(1)
				continue
			}
			if err := w.validate(o.u.Topic); err != nil {
				return fmt.Errorf("apply online state: merge %s: %w", o.name, err)
			}
			args := slab.take(8 + 2*len(w.Fences) + 2*len(w.Set) + len(w.Delete))
			o.args, o.blind = writeArgs(argsOf(args, o.key), o.state.Version, o.u.Topic, &w), false
			writes = append(writes, o)
		}
		conflicts, err := s.write(ctx, writes)
		if err != nil {
			return err
		}
		if len(conflicts) > 0 {
			if attempt >= s.maxAttempts {
				return fmt.Errorf("apply online state: %d of %d keys, first %s, still conflicting after %d attempts: %w",
					len(conflicts), len(updates), conflicts[0].name, attempt, ErrConflict)
			}
			if err := pause(ctx, attempt); err != nil {
				return fmt.Errorf("apply online state: %d keys left to write: %w", len(conflicts), err)
			}
			attempt++
		}
		// Updates whose Merge asked for every tile go on to the next round
		// without a pause: nothing conflicted.
		pending = append(conflicts, reread...)
		if len(pending) == 0 {
			return nil
		}
		if err := s.readStates(ctx, pending); err != nil {
			return err
		}
	}
	return nil
}

// first runs the first round: one pipeline of the blind writes and the reads
// of the other updates. It returns the updates to merge with the state read:
// those read, and the blind writes that the hash refused.
func (s *Store) first(ctx context.Context, ops []*op, slab *argSlab) ([]*op, error) {
	var blind []*op
	for _, o := range ops {
		if o.blind {
			blind = append(blind, o)
		}
	}
	if len(blind) == 0 {
		if err := s.readStates(ctx, ops); err != nil {
			return nil, err
		}
		return ops, nil
	}
	calls := s.blindCalls(blind, slab)
	pipe := s.c.Pipeline()
	for i := range calls {
		c := &calls[i]
		c.cmd = blindCall.cmd(ctx, c.args, false)
		_ = pipe.Process(ctx, c.cmd)
	}
	reads := make([]*redis.SliceCmd, len(ops))
	for i, o := range ops {
		if !o.blind {
			reads[i] = pipe.HMGet(ctx, o.name, o.read...)
		}
	}
	// Errors are per command: NOSCRIPT is expected, anything else fails.
	_, _ = pipe.Exec(ctx)
	var noScript []*scriptCall
	for i := range calls {
		c := &calls[i]
		if err := c.cmd.Err(); isNoScript(err) {
			noScript = append(noScript, c)
		} else if err != nil {
			return nil, fmt.Errorf("apply online state: write or read %d keys in redis: %w", len(ops), err)
		}
	}
	for _, r := range reads {
		if r != nil && r.Err() != nil {
			return nil, fmt.Errorf("apply online state: write or read %d keys in redis: %w", len(ops), r.Err())
		}
	}
	if len(noScript) > 0 {
		pipe := s.c.Pipeline()
		for _, c := range noScript {
			c.cmd = blindCall.cmd(ctx, c.args, true)
			_ = pipe.Process(ctx, c.cmd)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("apply online state: write %d keys to redis: %w", len(blind), err)
		}
	}
	st := newStateSlabs(ops)
	merge := ops[:0:0]
	for i := range calls {
		c := &calls[i]
		vals, ok := c.cmd.Val().([]any)
		if !ok || len(vals) != len(c.ops) {
			return nil, fmt.Errorf("apply online state: write %d keys, first %s: unexpected reply %v", len(c.ops), c.ops[0].name, c.cmd.Val())
		}
		for j, o := range c.ops {
			switch v := vals[j].(type) {
			case int64:
				s.writes.Add(1)
				s.blind.Add(1)
			case []any:
				s.refused.Add(1)
				if err := st.parse(o, v); err != nil {
					return nil, err
				}
				merge = append(merge, o)
			default:
				return nil, fmt.Errorf("apply online state: write %s: unexpected reply %v", o.name, v)
			}
		}
	}
	for i, o := range ops {
		if reads[i] != nil {
			if err := st.parse(o, reads[i].Val()); err != nil {
				return nil, err
			}
			merge = append(merge, o)
		}
	}
	return merge, nil
}

// maxCallKeys bounds the hashes of one blindScript call.
const maxCallKeys = 16

// scriptCall is one call of blindScript, for several hashes.
type scriptCall struct {
	ops  []*op
	args []any
	cmd  *redis.Cmd
}

// blindCalls groups blind writes into calls of up to maxCallKeys hashes:
// in order on a standalone Redis, and by hash slot otherwise, so that the
// keys of a call are on one node of a Redis Cluster (and, on a Ring, on one
// shard: it shards by the same hash tag).
func (s *Store) blindCalls(ops []*op, slab *argSlab) []scriptCall {
	var groups [][]*op
	if _, standalone := s.c.(*redis.Client); standalone {
		for i := 0; i < len(ops); i += maxCallKeys {
			groups = append(groups, ops[i:min(i+maxCallKeys, len(ops))])
		}
	} else {
		bySlot := map[int][]*op{}
		var slots []int
		for _, o := range ops {
			sl := Slot(o.name)
			if len(bySlot[sl]) == 0 {
				slots = append(slots, sl)
			}
			bySlot[sl] = append(bySlot[sl], o)
		}
		for _, sl := range slots {
			g := bySlot[sl]
			for i := 0; i < len(g); i += maxCallKeys {
				groups = append(groups, g[i:min(i+maxCallKeys, len(g))])
			}
		}
	}
	calls := make([]scriptCall, len(groups))
	for i, g := range groups {
		n := 3 + len(g)
		for _, o := range g {
			n += len(o.args)
		}
		args := append(slab.take(n), nil, nil, len(g))
		for _, o := range g {
			args = append(args, o.key)
		}
		for _, o := range g {
			args = append(args, o.args...)
		}
		calls[i] = scriptCall{ops: g, args: args}
	}
	return calls
}

func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}

// pause waits a random time that grows with the attempt (full jitter), so
// that writers contending for a hash stop colliding.
func pause(ctx context.Context, attempt int) error {
	const base, ceiling = 200 * time.Microsecond, 50 * time.Millisecond
	d := min(base<<min(attempt, 16), ceiling)
	t := time.NewTimer(rand.N(d) + 1)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// writeArgs appends the ARGV of writeScript.
func writeArgs(args []any, version int64, topic string, w *Write) []any {
	ttl := int64(0)
	if w.TTL > 0 {
		ttl = max(w.TTL.Milliseconds(), 1)
	}
	args = append(args, version, ttl, len(w.Fences), len(w.Set))
	for _, f := range w.Fences {
		args = append(args, FenceField(topic, f.Partition), f.Offset)
	}
	for _, f := range w.Set {
		args = append(args, f.Name, f.Value)
	}
	for _, f := range w.Delete {
		args = append(args, f)
	}
	return args
}

// blindArgs appends the arguments of blindScript for op o, its count first,
// or returns false when
// the write cannot go blind: a fence or field it sets is not among those the
// update reads (the script names them by their index in o.read), a fence's
// First is after its Offset, or the write is too large.
func blindArgs(args []any, o *op, w *Write, bx *boxes) ([]any, bool) {
	n := 5 + len(o.read) + 3*len(w.Fences) + 2*len(w.Set) + len(w.Delete)
	if n > maxBlindArgs {
		return args, false
	}
	ttl := int64(0)
	if w.TTL > 0 {
		ttl = max(w.TTL.Milliseconds(), 1)
	}
	start := len(args)
	var bound any = ""
	if o.u.MaxTile > 0 {
		bound = bx.int(o.u.MaxTile)
	}
	args = append(args, nil, bx.int(ttl), bound, len(o.read), len(w.Fences), len(w.Set))
	for j, f := range o.read {
		if j <= len(o.u.Partitions) {
			args = append(args, bx.name(f)) // the version and fences: shared
		} else {
			args = append(args, f)
		}
	}
	// o.read is the version, the fences in Update.Partitions order, then
	// Update.Fields; the script counts from 1.
	for _, f := range w.Fences {
		i := slices.Index(o.u.Partitions, f.Partition)
		if i < 0 || len(o.u.First) != len(o.u.Partitions) || o.u.First[i] < 0 || o.u.First[i] > f.Offset {
			return args, false
		}
		args = append(args, 2+i, o.u.First[i], f.Offset)
	}
	for _, f := range w.Set {
		i := slices.Index(o.u.Fields, f.Name)
		if i < 0 {
			return args, false
		}
		args = append(args, 2+len(o.u.Partitions)+i, f.Value)
	}
	for _, f := range w.Delete {
		args = append(args, f)
	}
	args[start] = len(args) - start - 1
	return args, true
}

// boxes keeps the arguments that many script calls of one Apply share, the
// TTL and the names of the version and fence fields, boxed once: boxing a
// value for a call is an allocation.
type boxes struct {
	ints [2]struct {
		v   int64
		box any
	}
	names [4]struct {
		s   string
		box any
	}
	ni int
}

func (b *boxes) int(v int64) any {
	for i := range b.ints {
		if e := &b.ints[i]; e.box != nil && e.v == v {
			return e.box
		}
	}
	b.ints[1] = b.ints[0]
	b.ints[0].v, b.ints[0].box = v, v
	return b.ints[0].box
}

func (b *boxes) name(s string) any {
	for i := range b.names {
		if e := &b.names[i]; e.box != nil && e.s == s {
			return e.box
		}
	}
	e := &b.names[b.ni%len(b.names)]
	b.ni++
	e.s, e.box = s, s
	return e.box
}

// argSlab hands out the argument lists of a round's script calls from a few
// large allocations rather than one each.
type argSlab struct {
	buf  []any
	next int // size of the next allocation
}

// newArgSlab returns a slab for the script calls of ops updates.
func newArgSlab(ops int) argSlab {
	return argSlab{next: min(32*ops, 1<<14)}
}

// take returns an empty slice with room for n arguments.
func (a *argSlab) take(n int) []any {
	if cap(a.buf)-len(a.buf) < n {
		a.buf = make([]any, 0, max(n, a.next))
	}
	at := len(a.buf)
	a.buf = a.buf[:at+n]
	return a.buf[at : at : at+n]
}

// fenceNames makes the names of fence fields, remembering the last few:
// the updates of a batch share their topic and partitions.
type fenceNames struct {
	last [4]struct {
		topic string
		p     int32
		name  string
	}
	n int
}

func (f *fenceNames) name(topic string, p int32) string {
	for i := range min(f.n, len(f.last)) {
		if l := &f.last[i]; l.p == p && l.topic == topic {
			return l.name
		}
	}
	l := &f.last[f.n%len(f.last)]
	f.n++
	l.topic, l.p, l.name = topic, p, FenceField(topic, p)
	return l.name
}

// stateSlabs holds the fences and fields of the states of one round, in
// one allocation each.
type stateSlabs struct {
	fences []int64
	fields [][]byte
}

func newStateSlabs(ops []*op) stateSlabs {
	nf, nv := 0, 0
	for _, o := range ops {
		nf += len(o.u.Partitions)
		nv += len(o.u.Fields)
	}
	return stateSlabs{fences: make([]int64, nf), fields: make([][]byte, nv)}
}

// parse sets o.state from vals, the values of o.read.
func (sl *stateSlabs) parse(o *op, vals []any) error {
	if len(vals) != len(o.read) {
		return fmt.Errorf("apply online state: read %s: %d values for %d fields", o.name, len(vals), len(o.read))
	}
	np, nd := len(o.u.Partitions), len(o.u.Fields)
	st := State{Fences: sl.fences[:np:np], Fields: sl.fields[:nd:nd]}
	sl.fences, sl.fields = sl.fences[np:], sl.fields[nd:]
	var err error
	if st.Version, err = parseCounter(vals[0], 0); err != nil {
		return fmt.Errorf("apply online state: read %s: field %s: %w", o.name, VersionField, err)
	}
	for j := range np {
		if st.Fences[j], err = parseCounter(vals[1+j], NoOffset); err != nil {
			return fmt.Errorf("apply online state: read %s: field %s: %w", o.name, o.read[1+j], err)
		}
	}
	for j := range nd {
		if str, ok := vals[1+np+j].(string); ok {
			st.Fields[j] = bytesOf(str)
		}
	}
	o.state = st
	return nil
}

// readStates reads the state of every op in one pipeline: HMGET of the
// fields it reads, or HGETALL when its Merge needs every tile.
func (s *Store) readStates(ctx context.Context, ops []*op) error {
	pipe := s.c.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ops))
	all := make([]*redis.MapStringStringCmd, len(ops))
	for i, o := range ops {
		if o.tiles {
			all[i] = pipe.HGetAll(ctx, o.name)
		} else {
			cmds[i] = pipe.HMGet(ctx, o.name, o.read...)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("apply online state: read %d keys from redis: %w", len(ops), err)
	}
	st := newStateSlabs(ops)
	for i, o := range ops {
		var vals []any
		var tiles []Field
		if !o.tiles {
			vals = cmds[i].Val()
		} else {
			// The fields read, as HMGET would have returned them, and the
			// tile slots.
			m := all[i].Val()
			vals = make([]any, len(o.read))
			for j, f := range o.read {
				if v, ok := m[f]; ok {
					vals[j] = v
				}
			}
			tiles = []Field{} // not nil: read
			for f, v := range m {
				if strings.HasPrefix(f, tilePrefix) || strings.HasPrefix(f, rollupPrefix) {
					tiles = append(tiles, Field{Name: f, Value: bytesOf(v)})
				}
			}
			slices.SortFunc(tiles, func(a, b Field) int { return strings.Compare(a.Name, b.Name) })
		}
		if err := st.parse(o, vals); err != nil {
			return err
		}
		o.state.Tiles = tiles
	}
	return nil
}

// parseCounter parses a version or offset as HMGET returns it, or gives
// absent for a missing field.
func parseCounter(v any, absent int64) (int64, error) {
	if v == nil {
		return absent, nil
	}
	str, _ := v.(string)
	n, err := strconv.ParseInt(str, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("not a counter: %q", str)
	}
	return n, nil
}

// write runs writeScript for every op in one pipeline and returns the ops
// whose version had changed.
func (s *Store) write(ctx context.Context, ops []*op) ([]*op, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	noScript, err := s.runScripts(ctx, ops, false)
	if err != nil {
		return nil, err
	}
	if len(noScript) > 0 {
		// The node's script cache is empty (first write since it started, a
		// failover, SCRIPT FLUSH): NOSCRIPT means nothing ran, so send the
		// source with the same arguments; Redis caches it for EVALSHA.
		if _, err := s.runScripts(ctx, noScript, true); err != nil {
			return nil, err
		}
	}
	var conflicts []*op
	for _, o := range ops {
		v, err := o.cmd.Int64()
		switch {
		case err != nil:
			return nil, fmt.Errorf("apply online state: write %s: unexpected reply: %w", o.name, err)
		case v > 0:
			s.writes.Add(1)
		default:
			s.conflicts.Add(1)
			conflicts = append(conflicts, o)
		}
	}
	return conflicts, nil
}

// runScripts sends one script call per op in a pipeline (EVAL if eval, else
// EVALSHA) and returns the ops that failed with NOSCRIPT.
func (s *Store) runScripts(ctx context.Context, ops []*op, eval bool) ([]*op, error) {
	pipe := s.c.Pipeline()
	for _, o := range ops {
		o.cmd = writeCall.cmd(ctx, o.args, eval)
		_ = pipe.Process(ctx, o.cmd)
	}
	// Errors are per command: NOSCRIPT is expected, anything else fails.
	_, _ = pipe.Exec(ctx)
	var noScript []*op
	for _, o := range ops {
		err := o.cmd.Err()
		switch {
		case err == nil:
		case !eval && isNoScript(err):
			noScript = append(noScript, o)
		case redis.HasErrorPrefix(err, fenceBackPrefix):
			field, stored, _ := strings.Cut(strings.TrimPrefix(err.Error(), fenceBackPrefix+" "), " ")
			return nil, fmt.Errorf("apply online state: write %s: field %s: stored offset %s is above the write's: %w",
				o.name, field, stored, ErrFenceRegression)
		default:
			return nil, fmt.Errorf("apply online state: write %d keys to redis: %w", len(ops), err)
		}
	}
	return noScript, nil
}
