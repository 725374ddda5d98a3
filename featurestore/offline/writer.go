package offline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

// Options configure a Writer. Zero fields take the defaults.
type Options struct {
	// FlushRows and FlushBytes flush a (view, partition) stream once it
	// buffers that many rows or (estimated) bytes. Defaults 1,000,000 rows
	// and 128 MiB.
	FlushRows  int64
	FlushBytes int64
	// FlushAge flushes a stream whose oldest buffered row, or uncommitted
	// position, is that old. Default 1m.
	FlushAge time.Duration
	// MaxPendingBytes bounds the memory of all buffered rows together: past
	// it, Append flushes the largest streams first, and fails without
	// appending while it cannot get below. Default 512 MiB.
	MaxPendingBytes int64
	// BatchRows is the number of rows per Arrow record batch in a file.
	// Default 65,536.
	BatchRows int
	// OrphanGrace spares unreferenced and temporary files younger than it
	// from the clean-up at start, so that a writer starting while another
	// writes to the same storage does not delete the other's file between
	// its write and its commit. Zero removes them all: right for one writer.
	// A flush treats an uncommitted file under a name it writes by the same
	// rule: older than the grace, it replaces it; younger, it waits for it.
	// A file of the same events, whatever its age, is never deleted: it is
	// replaced atomically, or committed as it is (see createFile).
	OrphanGrace time.Duration
	// Metrics records the writer's metrics (NewMetrics registers them
	// once per process); nil records none.
	Metrics *Metrics
	// Logger receives the log lines; nil discards them.
	Logger *slog.Logger
	// Now is the clock, time.Now when nil.
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.FlushRows <= 0 {
		o.FlushRows = 1_000_000
	}
	if o.FlushBytes <= 0 {
		o.FlushBytes = 128 << 20
	}
	if o.FlushAge <= 0 {
		o.FlushAge = time.Minute
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = 512 << 20
	}
	if o.BatchRows <= 0 {
		o.BatchRows = 64 << 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Batch is what ingest accepted for one feature view from one batch of a
// partition's messages.
type Batch struct {
	Topic     string
	Partition int32
	// IngestTime is when the events were accepted, Unix ms.
	IngestTime int64
	// End is where the partition stands after the batch: its last offset,
	// whether or not that message carried an event for the view, and the
	// high-water event time after it, as ingest saves them online.
	End Position
	// Entities holds the accepted events by entity.
	Entities []EntityEvents
}

// EntityEvents are accepted events of one entity. Event.Fields are indexed
// as window.SourceFields orders the source's fields; the order of the
// events does not matter.
type EntityEvents struct {
	Key    featurestore.EntityKey
	Events []window.Event
}

// streamID names the stream of one view's events from one partition.
type streamID struct {
	view string
	streamKey
}

// stream buffers the rows of one view from one partition until a flush
// writes them, one file per event date, and commits them with the
// partition's position in one manifest entry.
type stream struct {
	mu     sync.Mutex
	id     streamID
	schema *Schema
	files  map[int64]*fileBuilder // by UTC day
	rows   int64
	bytes  atomic.Int64 // read without mu to pick streams to flush
	since  time.Time    // when the buffer or position became dirty; zero when clean

	// known is the position this writer last saw committed; a commit is
	// only made on top of it. fence drops replayed events: the highest
	// offset appended or committed. end is the position to commit.
	known, end       Position
	hasKnown, hasEnd bool
	fence            int64
	// lost is set when another writer committed the partition: appends are
	// dropped until Resume reads the new position, since the events between
	// it and what this writer reads next would be missing.
	lost bool
	// failed is set when a flush failed: its commit may have landed, so no
	// row is added to the buffer until a flush settles it (the rows it
	// holds then match exactly what that commit would hold).
	failed bool
}

// ErrStreamLost is what Append returns for a partition whose log another
// writer committed after this one last did (a rebalance, or a writer that
// kept running after it lost the partition): this writer dropped the rows
// it held, and drops what is appended, until Resume gives it the position
// to go on from. The caller re-reads the partition from there, so that
// the rows are not missing until its next rebalance.
var ErrStreamLost = errors.New("another writer committed the partition's log")

func (s *stream) dirty() bool {
	return s.rows > 0 || s.hasEnd && (!s.hasKnown || s.end.Offset > s.known.Offset)
}

// Writer appends accepted events to the offline log of one project and
// commits them in files. It is safe for concurrent use; each partition's
// appends come from one goroutine at a time, as ingest's partition workers
// make them.
type Writer struct {
	st      Storage
	project string
	opts    Options
	mem     memory.Allocator
	log     *slog.Logger
	metrics *Metrics

	mu        sync.Mutex
	streams   map[streamID]*stream
	manifests map[string]*manifest

	pendingRows, pendingBytes atomic.Int64
}

// OpenWriter returns a writer of project's log in st. It first removes what
// crashed writers left: temporary files and files no manifest references
// (see Options.OrphanGrace).
func OpenWriter(ctx context.Context, st Storage, project string, opts Options) (*Writer, error) {
	if err := checkSegment("project", project); err != nil {
		return nil, err
	}
	opts.defaults()
	w := &Writer{st: st, project: project, opts: opts, mem: memory.NewGoAllocator(), log: opts.Logger, metrics: opts.Metrics,
		streams: map[streamID]*stream{}, manifests: map[string]*manifest{}}
	n, err := RemoveOrphans(ctx, st, project, opts.OrphanGrace, opts.Now(), opts.Logger)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		w.log.Info("removed files left by an interrupted write", "project", project, "files", n)
	}
	return w, nil
}

// manifest returns the loaded manifest of a view.
func (w *Writer) manifest(ctx context.Context, view string) (*manifest, error) {
	w.mu.Lock()
	m := w.manifests[view]
	if m == nil {
		m = newManifest(w.st, w.project, view)
		m.seq = -1 // not loaded
		w.manifests[view] = m
	}
	w.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seq < 0 {
		if err := m.load(ctx); err != nil {
			m.seq = -1
			return nil, err
		}
	}
	return m, nil
}

// stream returns the stream of a view and partition, reading its committed
// position when it is new.
func (w *Writer) stream(ctx context.Context, s *Schema, topic string, partition int32) (*stream, error) {
	if s.Project != w.project {
		return nil, fmt.Errorf("offline log of project %q: schema of project %q", w.project, s.Project)
	}
	if err := checkTopic(topic); err != nil {
		return nil, err
	}
	if partition < 0 {
		return nil, fmt.Errorf("offline log: partition %d", partition)
	}
	id := streamID{s.View, streamKey{topic, partition}}
	w.mu.Lock()
	st := w.streams[id]
	w.mu.Unlock()
	if st != nil {
		return st, nil
	}
	m, err := w.manifest(ctx, s.View)
	if err != nil {
		return nil, err
	}
	// Another writer may have had the partition since the manifest was read.
	m.mu.Lock()
	err = m.refresh(ctx)
	known, ok := m.position(topic, partition)
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	st = &stream{id: id, schema: s, files: map[int64]*fileBuilder{}, known: known, hasKnown: ok, end: known, hasEnd: ok, fence: -1}
	if ok {
		st.fence = known.Offset
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if prev := w.streams[id]; prev != nil {
		return prev, nil
	}
	w.streams[id] = st
	return st, nil
}

// Append buffers the events of b for the view of schema s. Events at or
// below the partition's committed or already appended offset are replays
// and are dropped, so a batch retried after a failure is logged once.
// Append writes and commits files when a threshold is reached; an error
// leaves the log as it was or with the rows buffered, never in part.
//
// Ingest calls it once per offline view after applying a batch online and
// before saving the partition's position, and calls Resume when it is
// assigned a partition.
func (w *Writer) Append(ctx context.Context, s *Schema, b Batch) error {
	if b.End.Offset < 0 {
		return fmt.Errorf("offline log of %s: batch of %s/%d ends at offset %d", s.View, b.Topic, b.Partition, b.End.Offset)
	}
	// Check every row first, so that a bad event fails the batch before
	// anything is appended.
	keys := make([][]featurestore.KeyPart, len(b.Entities))
	for i := range b.Entities {
		g := &b.Entities[i]
		if g.Key.IsZero() {
			return fmt.Errorf("offline log of %s: batch of %s/%d: event without entity key", s.View, b.Topic, b.Partition)
		}
		keys[i] = g.Key.Parts()
		for j := range g.Events {
			if g.Events[j].Offset < 0 || g.Events[j].Offset > b.End.Offset {
				return fmt.Errorf("offline log of %s: batch of %s/%d: event offset %d outside the batch ending at %d", s.View, b.Topic, b.Partition, g.Events[j].Offset, b.End.Offset)
			}
			if err := checkRow(s, keys[i], &g.Events[j]); err != nil {
				return fmt.Errorf("offline log of %s: %s/%d: %w", s.View, b.Topic, b.Partition, err)
			}
		}
	}
	if w.pendingBytes.Load() >= w.opts.MaxPendingBytes {
		if err := w.relieve(ctx); err != nil {
			return fmt.Errorf("offline log: buffers full (%d bytes) and cannot be flushed: %w", w.pendingBytes.Load(), err)
		}
	}
	st, err := w.stream(ctx, s, b.Topic, b.Partition)
	if err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.failed && !st.lost {
		if err := w.flushLocked(ctx, s.View, []*stream{st}, FlushExplicit); err != nil {
			return err
		}
	}
	if st.lost {
		var n int64
		for _, g := range b.Entities {
			n += int64(len(g.Events))
		}
		w.metrics.drop(s.View, DropLost, n)
		return fmt.Errorf("offline log of %s, %s/%d: %w", s.View, b.Topic, b.Partition, ErrStreamLost)
	}
	if st.schema.fingerprint != s.fingerprint {
		if st.rows > 0 {
			if err := w.flushLocked(ctx, s.View, []*stream{st}, FlushExplicit); err != nil {
				return err
			}
		}
		st.schema = s
	}
	fence := st.fence
	var added, size, dropped int64
	for i, g := range b.Entities {
		for j := range g.Events {
			ev := &g.Events[j]
			if ev.Offset <= fence {
				dropped++
				continue
			}
			day := dayOf(ev.Time)
			fb := st.files[day]
			if fb == nil {
				fb = newFileBuilder(w.mem, s, day)
				st.files[day] = fb
			}
			size += fb.append(ev, keys[i], b.IngestTime, b.Topic, b.Partition, w.opts.BatchRows)
			added++
		}
	}
	if b.End.Offset > st.fence {
		st.fence = b.End.Offset
		st.end, st.hasEnd = b.End, true
	}
	st.rows += added
	st.bytes.Add(size)
	if st.since.IsZero() && st.dirty() {
		st.since = w.opts.Now()
	}
	w.addPending(added, size)
	w.metrics.drop(s.View, DropReplay, dropped)
	if st.rows >= w.opts.FlushRows || st.bytes.Load() >= w.opts.FlushBytes {
		return w.flushLocked(ctx, s.View, []*stream{st}, FlushSize)
	}
	return nil
}

func (w *Writer) addPending(rows, bytes int64) {
	r := w.pendingRows.Add(rows)
	b := w.pendingBytes.Add(bytes)
	w.metrics.setPending(r, b)
}

// relieve flushes the largest streams until the buffers are below
// MaxPendingBytes. It holds one stream lock at a time.
func (w *Writer) relieve(ctx context.Context) error {
	for w.pendingBytes.Load() >= w.opts.MaxPendingBytes {
		w.mu.Lock()
		var big *stream
		for _, st := range w.streams {
			if big == nil || st.bytes.Load() > big.bytes.Load() {
				big = st
			}
		}
		w.mu.Unlock()
		if big == nil || big.bytes.Load() == 0 {
			return nil
		}
		big.mu.Lock()
		err := w.flushLocked(ctx, big.id.view, []*stream{big}, FlushPressure)
		big.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// Resume readies the stream of a view and partition for a consumer that
// was just assigned the partition, and returns the committed position
// (ok false when the view has none for it). Rows buffered while this
// writer still owned the partition are committed first; if another writer
// committed the partition meanwhile, they are dropped, since ingest resumes
// from the returned position and reads them again.
//
// Ingest resumes the partition at the smallest position of the source's
// offline views and its online position, with the high-water event time
// saved with it, so that the replay accepts exactly the same events.
func (w *Writer) Resume(ctx context.Context, s *Schema, topic string, partition int32) (Position, bool, error) {
	st, err := w.stream(ctx, s, topic, partition)
	if err != nil {
		return Position{}, false, err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.lost && st.dirty() {
		if err := w.flushLocked(ctx, s.View, []*stream{st}, FlushExplicit); err != nil {
			return Position{}, false, err
		}
	}
	m, err := w.manifest(ctx, s.View)
	if err != nil {
		return Position{}, false, err
	}
	m.mu.Lock()
	err = m.refresh(ctx)
	cur, ok := m.position(topic, partition)
	m.mu.Unlock()
	if err != nil {
		return Position{}, false, err
	}
	w.discard(st, DropLost)
	st.schema = s
	st.known, st.hasKnown, st.end, st.hasEnd = cur, ok, cur, ok
	st.fence, st.lost = -1, false
	if ok {
		st.fence = cur.Offset
	}
	return cur, ok, nil
}

// Position returns the committed position of a view's partition, as the
// manifest has it now.
func (w *Writer) Position(ctx context.Context, view, topic string, partition int32) (Position, bool, error) {
	m, err := w.manifest(ctx, view)
	if err != nil {
		return Position{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.refresh(ctx); err != nil {
		return Position{}, false, err
	}
	p, ok := m.position(topic, partition)
	return p, ok, nil
}

// holds reports whether every file buffered in st is committed under its
// name. m.mu must be held.
func (m *manifest) holds(st *stream) bool {
	for _, fb := range st.files {
		if _, ok := m.files[fb.path(st.id.topic, st.id.partition)]; !ok {
			return false
		}
	}
	return true
}

// discard drops a stream's buffered rows.
func (w *Writer) discard(st *stream, reason string) {
	if st.rows > 0 {
		w.metrics.drop(st.id.view, reason, st.rows)
	}
	w.release(st)
}

// release frees a stream's buffers after they were committed or dropped.
func (w *Writer) release(st *stream) {
	for _, fb := range st.files {
		fb.release()
	}
	clear(st.files)
	w.addPending(-st.rows, -st.bytes.Load())
	st.rows = 0
	st.bytes.Store(0)
	st.since = time.Time{}
}

// flushLocked writes the buffered files of streams of one view and commits
// them, with the streams' positions, in one manifest entry. The caller
// holds the streams' locks. On failure the rows stay buffered.
func (w *Writer) flushLocked(ctx context.Context, view string, ss []*stream, reason string) (err error) {
	start := time.Now()
	defer func() {
		w.metrics.flushed(reason, time.Since(start).Seconds(), err)
		// A failure is logged when it starts, and its end; the retries
		// between (every second while a disk is full, say) at debug level.
		failing := true
		for _, st := range ss {
			failing = failing && st.failed
			st.failed = err != nil
		}
		switch {
		case err != nil && !failing:
			w.log.Warn("offline flush failed; rows stay buffered, retrying", "view", view, "reason", reason, "err", err)
		case err != nil:
			w.log.Debug("offline flush failed again; rows stay buffered", "view", view, "reason", reason, "err", err)
		case failing:
			w.log.Info("offline flush succeeded after failures", "view", view, "reason", reason)
		}
	}()
	m, err := w.manifest(ctx, view)
	if err != nil {
		return err
	}
	// Check first whether another writer took a partition, so that a loser
	// does not write its files for nothing. The check alone does not keep
	// it from the winner's files, which may be committed while it writes:
	// createFile does.
	lost := make([]bool, len(ss))
	curs := make([]Position, len(ss))
	hasCur := make([]bool, len(ss))
	m.mu.Lock()
	err = m.refresh(ctx)
	own := make([]bool, len(ss))
	for i, st := range ss {
		curs[i], hasCur[i] = m.position(st.id.topic, st.id.partition)
		lost[i] = hasCur[i] != st.hasKnown || hasCur[i] && curs[i].Offset != st.known.Offset
		// A commit that reported an error may have landed all the same:
		// then the manifest holds exactly this buffer.
		own[i] = lost[i] && hasCur[i] && st.hasEnd && curs[i].Offset == st.end.Offset && m.holds(st)
	}
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("offline log of %s: %w", view, err)
	}
	for i, st := range ss {
		if own[i] {
			w.release(st)
			st.known, st.hasKnown, lost[i] = st.end, true, false
		}
	}
	infos := make([][]FileInfo, len(ss))
	for i, st := range ss {
		if lost[i] || own[i] {
			continue
		}
		for _, day := range slices.Sorted(maps.Keys(st.files)) {
			fb := st.files[day]
			fb.seal()
			p := fb.path(st.id.topic, st.id.partition)
			n, err := w.createFile(ctx, m, st, p, fb)
			if errors.Is(err, errPartitionTaken) {
				m.mu.Lock()
				curs[i], hasCur[i] = m.position(st.id.topic, st.id.partition)
				m.mu.Unlock()
				lost[i] = true
				break
			}
			if err != nil {
				return fmt.Errorf("offline log of %s: %w", view, err)
			}
			infos[i] = append(infos[i], FileInfo{Path: p, Topic: st.id.topic, Partition: st.id.partition,
				First: fb.first, Last: fb.last, Rows: fb.rows, Bytes: n, MinTime: fb.minT, MaxTime: fb.maxT, Schema: fb.s.fingerprint})
		}
	}
	failpoint("flush:written")
	m.mu.Lock()
	before := m.conflicts
	_, err = m.commit(ctx, func() (*entry, error) {
		e := &entry{}
		for i, st := range ss {
			if lost[i] || own[i] {
				continue
			}
			cur, ok := m.position(st.id.topic, st.id.partition)
			if ok != st.hasKnown || ok && cur.Offset != st.known.Offset {
				lost[i], curs[i], hasCur[i] = true, cur, ok
				continue
			}
			if !st.dirty() {
				continue
			}
			e.Add = append(e.Add, infos[i]...)
			if st.hasEnd {
				e.Positions = append(e.Positions, positionEntry(st.id.streamKey, st.end))
			}
		}
		if len(e.Add) == 0 && len(e.Positions) == 0 {
			return nil, errNothingToCommit
		}
		return e, nil
	})
	w.metrics.conflict(m.conflicts - before)
	m.mu.Unlock()
	if err != nil && !errors.Is(err, errNothingToCommit) {
		return fmt.Errorf("offline log of %s: commit: %w", view, err)
	}
	for i, st := range ss {
		if own[i] {
			continue
		}
		if lost[i] {
			w.log.Warn("another writer committed the partition; dropping buffered rows until it is resumed",
				"view", view, "topic", st.id.topic, "partition", st.id.partition, "rows", st.rows)
			w.discard(st, DropLost)
			st.known, st.hasKnown, st.lost = curs[i], hasCur[i], true
			continue
		}
		var bytes int64
		for _, f := range infos[i] {
			bytes += f.Bytes
		}
		w.metrics.written(view, len(infos[i]), bytes, st.rows)
		w.release(st)
		if st.hasEnd {
			st.known, st.hasKnown = st.end, true
		}
	}
	return nil
}

// Flush commits everything buffered.
func (w *Writer) Flush(ctx context.Context) error {
	return w.flushWhere(ctx, FlushExplicit, func(*stream) bool { return true }, false)
}

// flushWhere flushes the streams that due selects, one manifest entry per
// view. With try it skips streams that are busy instead of waiting.
func (w *Writer) flushWhere(ctx context.Context, reason string, due func(*stream) bool, try bool) error {
	w.mu.Lock()
	all := slices.Collect(maps.Values(w.streams))
	w.mu.Unlock()
	// A consistent lock order: Flush against Flush never deadlocks, and
	// appenders never wait for a second stream while holding one.
	slices.SortFunc(all, func(a, b *stream) int {
		return cmp.Or(cmp.Compare(a.id.view, b.id.view), cmp.Compare(a.id.topic, b.id.topic), cmp.Compare(a.id.partition, b.id.partition))
	})
	var errs []error
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].id.view == all[i].id.view {
			j++
		}
		var locked []*stream
		for _, st := range all[i:j] {
			if try {
				if !st.mu.TryLock() {
					continue
				}
			} else {
				st.mu.Lock()
			}
			if !st.lost && st.dirty() && due(st) {
				locked = append(locked, st)
			} else {
				st.mu.Unlock()
			}
		}
		if len(locked) > 0 {
			errs = append(errs, w.flushLocked(ctx, all[i].id.view, locked, reason))
			for _, st := range locked {
				st.mu.Unlock()
			}
		}
		i = j
	}
	return errors.Join(errs...)
}

// Run flushes streams whose oldest row is FlushAge old, until ctx ends.
// Failures are logged and retried on the next round.
func (w *Writer) Run(ctx context.Context) error {
	every := min(max(w.opts.FlushAge/8, 10*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			now := w.opts.Now()
			_ = w.flushWhere(ctx, FlushAge, func(st *stream) bool { return now.Sub(st.since) >= w.opts.FlushAge }, true)
		}
	}
}

// Close commits everything buffered. The writer must not be used after.
func (w *Writer) Close(ctx context.Context) error { return w.Flush(ctx) }

// SetViews names the feature views the writer is given the events of: their
// metrics' series start at 0, and those of views named by the previous call
// but not by this one are deleted. Ingest calls it with each registry
// version it runs.
func (w *Writer) SetViews(views []string) { w.metrics.setViews(views) }

// PendingRows returns the number of rows appended and not yet committed.
func (w *Writer) PendingRows() int64 { return w.pendingRows.Load() }
