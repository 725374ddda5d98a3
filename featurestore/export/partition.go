package export

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/window"
)

// fanOut reads batches with produce, in one goroutine, and hands them to
// x.workers goroutines that call work with the worker's number. The
// batches may be views of mapped log files (offline.ScanMapped): in these
// goroutines, the only ones that read them, a file truncated under the
// export is an error, not a crash (offline.CatchMappedFault).
func (x *exporter) fanOut(ctx context.Context, produce func(ctx context.Context, emit func(arrow.RecordBatch, int64) error) error, work func(w int, rec arrow.RecordBatch, first int64) error) error {
	type job struct {
		rec   arrow.RecordBatch
		first int64
	}
	g, ctx := newWorkGroup(ctx)
	jobs := make(chan job, x.workers)
	g.Go(func() (err error) {
		defer offline.CatchMappedFault(&err)
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer close(jobs)
		return produce(ctx, func(rec arrow.RecordBatch, first int64) error {
			rec.Retain()
			select {
			case jobs <- job{rec, first}:
				return nil
			case <-ctx.Done():
				rec.Release()
				return ctx.Err()
			}
		})
	})
	for w := range x.workers {
		g.Go(func() error {
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			var err error
			for j := range jobs {
				if err == nil && ctx.Err() == nil {
					err = guardMapped(func() error { return work(w, j.rec, j.first) })
				}
				j.rec.Release()
			}
			return err
		})
	}
	return g.Wait()
}

// guardMapped calls f, turning a fault reading a truncated mapped file
// into an error (offline.CatchMappedFault).
func guardMapped(f func() error) (err error) {
	defer offline.CatchMappedFault(&err)
	return f()
}

// spillRows partitions the entity table's rows: for each entity, by the
// hash of the row's key for that entity.
func (x *exporter) spillRows(ctx context.Context) error {
	x.progress.begin(phaseRows, "reading entity rows", "rows", max(x.table.rows, 0))
	ents := x.plan.entities
	rowsEst := x.table.rows
	if rowsEst < 0 {
		rowsEst = x.table.size / 16
	}
	for range ents {
		x.blooms = append(x.blooms, newBloom(rowsEst, x.opts.Memory/8/int64(len(ents))))
	}
	type worker struct {
		parts      []*partitioner
		keys       keyReader
		cols       []arrow.Array
		plain      []arrow.Array // the columns of cols made by plainKey
		times      []int64
		buf        []byte
		minT, maxT int64
		has        bool
	}
	ws := make([]*worker, x.workers)
	for i := range ws {
		w := &worker{minT: math.MaxInt64, maxT: math.MinInt64}
		for range ents {
			w.parts = append(w.parts, newPartitioner(x.spillMem, x.dir, rowsSchema, 0, x.parts, x.flush, x.mem))
		}
		ws[i] = w
	}
	var total atomic.Int64
	err := x.fanOut(ctx, func(ctx context.Context, emit func(arrow.RecordBatch, int64) error) error {
		rd, closeFn, err := x.table.open(ctx)
		if err != nil {
			return err
		}
		defer closeFn()
		var first int64
		err = readAll(ctx, rd, func(rec arrow.RecordBatch) error {
			x.table.keep(rec, x.spillMem)
			if err := emit(rec, first); err != nil {
				return err
			}
			first += rec.NumRows()
			return nil
		})
		total.Store(first)
		return err
	}, func(wi int, rec arrow.RecordBatch, first int64) error {
		w := ws[wi]
		n := int(rec.NumRows())
		times, lo, hi, err := x.cols.timesOf(rec, first, w.times)
		if err != nil {
			return err
		}
		w.times = times
		if err := x.cols.checkFields(rec, first); err != nil {
			return err
		}
		if n > 0 {
			w.minT, w.maxT, w.has = min(w.minT, lo), max(w.maxT, hi), true
		}
		defer func() {
			for _, a := range w.plain {
				a.Release()
			}
			w.plain = w.plain[:0]
		}()
		for ei, e := range ents {
			w.cols = w.cols[:0]
			for j, c := range x.cols.keys[ei] {
				col := rec.Column(c)
				if plainKeyType(col.DataType()) {
					if col, err = x.cols.plainKey(col, first+1, ei, j, x.mem); err != nil {
						return err
					}
					w.plain = append(w.plain, col)
				}
				w.cols = append(w.cols, col)
			}
			w.keys.reset(w.cols, e.kinds)
			part := w.parts[ei]
			for i := range n {
				key, null := w.keys.key(w.buf[:0], i)
				w.buf = key
				if null >= 0 {
					return fmt.Errorf("%s: row %d: column %q (join key %q of entity %q) is null", x.cols.path, first+int64(i)+1, x.cols.keyName[ei][null], e.keys[null], e.name)
				}
				h := hashKey(key)
				x.blooms[ei].add(h)
				bw := part.bucket(h)
				bw.b.Field(0).(*array.BinaryBuilder).Append(key)
				bw.b.Field(1).(*array.Int64Builder).Append(times[i])
				bw.b.Field(2).(*array.Int64Builder).Append(first + int64(i))
				if err := bw.added(1, len(key)+20); err != nil {
					return err
				}
			}
		}
		x.progress.add(phaseRows, int64(n))
		return nil
	})
	x.rowFiles = make([][][]spillFile, len(ents))
	for ei := range ents {
		x.rowFiles[ei] = make([][]spillFile, x.parts)
		for _, w := range ws {
			files, cerr := w.parts[ei].close()
			if err == nil {
				err = cerr
			}
			x.collect(x.rowFiles[ei], files)
		}
	}
	if err != nil {
		return err
	}
	for _, b := range x.blooms {
		b.shrink()
	}
	x.stats.Rows = total.Load()
	x.minT, x.maxT = math.MaxInt64, math.MinInt64
	for _, w := range ws {
		if w.has {
			x.minT, x.maxT, x.hasRows = min(x.minT, w.minT), max(x.maxT, w.maxT), true
		}
	}
	if x.hasRows && x.maxT < secondsLike && x.table.schema.Field(x.cols.ts).Type.ID() == arrow.INT64 {
		x.log.Warn("the entity table's int64 times, read as Unix milliseconds, are all before 1973: if they are Unix seconds, multiply them by 1000",
			"column", x.cols.tsName, "latest", time.UnixMilli(x.maxT).UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// secondsLike bounds the int64 row times that look like Unix seconds read
// as milliseconds: 10^11 ms is 1973-03-03, and 10^11 s is in the year 5138.
const secondsLike = 100_000_000_000

// collect adds the non-empty files of a partitioning to per-bucket lists.
func (x *exporter) collect(dst [][]spillFile, files []spillFile) {
	for b, f := range files {
		if f.rows > 0 {
			dst[b] = append(dst[b], f)
			x.stats.Spilled += f.bytes - f.inMemory
		}
	}
}

// spillEvents partitions the events of one view by the hash of their key,
// keeping only those a row can see: of a key the entity table has, no later
// than the last row's timestamp, and not older than the earliest row can
// read (eventsFrom).
func (x *exporter) spillEvents(ctx context.Context, vi int, vp *viewPlan) error {
	x.evFiles = append(x.evFiles, make([][]spillFile, x.parts))
	if !x.hasRows {
		return nil
	}
	for attempt := 1; ; attempt++ {
		x.progress.begin(phaseEvents, "reading events of "+vp.name, "events", 0)
		files, events, used, err := x.scanEvents(ctx, vp)
		if err != nil {
			for _, fs := range files {
				for _, f := range fs {
					f.remove()
				}
			}
		}
		if errors.Is(err, ErrLogChanged) && attempt < scanAttempts {
			x.log.Info("the offline log changed during the scan; scanning it again", "view", vp.name, "err", err)
			continue
		}
		if err != nil {
			return err
		}
		x.stats.Events += events
		x.stats.EventsUsed += used
		for _, fs := range files {
			x.collect(x.evFiles[vi], fs)
		}
		return nil
	}
}

// scanEvents scans a view's log once into spill files, returned per worker
// by bucket (a zero spillFile for a bucket without events); on error, the
// files written so far.
func (x *exporter) scanEvents(ctx context.Context, vp *viewPlan) (files [][]spillFile, events, used int64, err error) {
	until, from := x.maxT, eventsFrom(vp.win, x.minT)
	blm := x.blooms[vp.entity.index]
	schema := eventsSchema(vp)
	kinds := make([]featurestore.Kind, 0, len(vp.fields)) // not nil: raw
	for _, f := range vp.fields {
		kinds = append(kinds, f.Kind)
	}
	type worker struct {
		part  *partitioner
		keys  keyReader
		lc    logColumns
		batch eventBatch
	}
	ws := make([]*worker, x.workers)
	for i := range ws {
		ws[i] = &worker{part: newPartitioner(x.spillMem, x.dir, schema, 0, x.parts, x.flush, x.mem)}
		ws[i].part.rawKinds = kinds
	}
	var nEvents, nUsed atomic.Int64
	err = x.fanOut(ctx, func(ctx context.Context, emit func(arrow.RecordBatch, int64) error) error {
		return x.opts.Log.Scan(ctx, vp.name, until, func(rec arrow.RecordBatch) error { return emit(rec, 0) })
	}, func(wi int, rec arrow.RecordBatch, _ int64) error {
		w := ws[wi]
		lc := &w.lc
		if err := lc.resolve(vp, rec); err != nil {
			return err
		}
		w.keys.reset(lc.keys, vp.entity.kinds)
		n := int(rec.NumRows())
		kept, err := w.batch.spill(w.part, &w.keys, lc, vp, blm, from, until, n)
		if err != nil {
			return err
		}
		nEvents.Add(int64(n))
		nUsed.Add(int64(kept))
		x.progress.add(phaseEvents, int64(n))
		return nil
	})
	for _, w := range ws {
		fs, cerr := w.part.close()
		if err == nil {
			err = cerr
		}
		files = append(files, fs)
	}
	return files, nEvents.Load(), nUsed.Load(), err
}

// eventBatch spills one log batch's events in two passes: the first finds
// each event's bucket (or drops it) and what the bucket needs, the second
// appends the events to the bucket's rawEvents and field builders reserved
// for them, without the checks and growth of appending one value at a time.
type eventBatch struct {
	keys    []byte  // the batch's keys, end to end
	ends    []int32 // ends[i] is the end of event i's key in keys
	dest    []*bucketWriter
	touched []*bucketWriter
}

// spill adds the events of a log batch of n rows with times in [from,
// until] and keys in the Bloom filter to their buckets, and returns how
// many it kept.
func (eb *eventBatch) spill(part *partitioner, keys *keyReader, lc *logColumns, vp *viewPlan, blm *bloom, from, until int64, n int) (int, error) {
	eb.keys, eb.ends, eb.dest, eb.touched = eb.keys[:0], eb.ends[:0], eb.dest[:0], eb.touched[:0]
	kept := 0
	for i := range n {
		var bw *bucketWriter
		if t := lc.timeAt(i); t <= until && t >= from {
			start := len(eb.keys)
			key, null := keys.key(eb.keys, i)
			eb.keys = key
			// An event without a key: ingest rejects those, and the online
			// store has none either.
			if null < 0 {
				if h := hashKey(key[start:]); blm.has(h) {
					bw = part.bucket(h)
				}
			}
			if bw == nil {
				eb.keys = eb.keys[:start]
			} else {
				if bw.pending == 0 {
					eb.touched = append(eb.touched, bw)
					if len(bw.pendingData) != len(vp.fields) {
						bw.pendingData = make([]int, len(vp.fields))
					}
				}
				bw.pending++
				bw.pendingKeys += len(eb.keys) - start
				// About the bytes the event takes in the spill batch.
				size := len(eb.keys) - start + 24
				for j, f := range vp.fields {
					switch a := lc.fields[j]; {
					case a == nil || a.IsNull(i) || f.Kind == featurestore.KindBool:
						size++
					case f.Kind == featurestore.KindString:
						n := len(a.(*array.String).Value(i))
						size += n + 4
						bw.pendingData[j] += n
					default:
						size += 8
					}
				}
				bw.pendingBytes += size
				kept++
			}
		}
		eb.dest = append(eb.dest, bw)
		eb.ends = append(eb.ends, int32(len(eb.keys)))
	}
	for _, bw := range eb.touched {
		bw.raw.reserve(bw.pending, bw.pendingKeys, bw.pendingData)
		clear(bw.pendingData)
	}
	// A column at a time, so that the stores go to one buffer per bucket
	// at once rather than to all their columns.
	start := int32(0)
	for i, bw := range eb.dest {
		end := eb.ends[i]
		if bw != nil {
			bw.raw.addKey(eb.keys[start:end])
		}
		start = end
	}
	for i, bw := range eb.dest {
		if bw != nil {
			bw.raw.times = append(bw.raw.times, lc.timeAt(i))
		}
	}
	for i, bw := range eb.dest {
		if bw != nil {
			bw.raw.parts = append(bw.raw.parts, lc.partitionAt(i))
		}
	}
	for i, bw := range eb.dest {
		if bw != nil {
			bw.raw.offs = append(bw.raw.offs, lc.offsetAt(i))
		}
	}
	for j, col := range lc.fields {
		for i, bw := range eb.dest {
			if bw != nil {
				bw.raw.fields[j].add(col, i)
			}
		}
	}
	for _, bw := range eb.touched {
		rows, size := bw.pending, bw.pendingBytes
		bw.pending, bw.pendingKeys, bw.pendingBytes = 0, 0, 0
		if err := bw.added(rows, size); err != nil {
			return kept, err
		}
	}
	return kept, nil
}

// eventsFrom returns the oldest event time a row at minT or later can
// read in view v: the first tile the windows at minT cover, and, for last
// values, minT minus the TTL (an older event is expired at every row, and
// so is the value of any event it could be the newest before: the export
// gives null for both). Lifetime aggregates and last values without a TTL
// read every event.
func eventsFrom(v *window.View, minT int64) int64 {
	if v.HasPart(window.PartLifetime) || v.HasPart(window.PartLastValue) && v.TTL() <= 0 {
		return math.MinInt64
	}
	from := int64(math.MaxInt64)
	if v.HasPart(window.PartWindow) {
		from = v.TilesNeeded(minT).First * v.Tile()
	}
	if v.HasPart(window.PartLastValue) {
		from = min(from, minT-v.TTL())
	}
	return from
}

// logColumns are the columns of one log batch the export reads.
type logColumns struct {
	view   string
	time   []int64 // event time values, in unit
	unit   arrow.TimeUnit
	part   *array.Int32
	off    *array.Int64
	keys   []arrow.Array
	fields []arrow.Array // per viewPlan field; nil when the batch lacks it
}

// resolve finds the columns of a log batch by name and checks their types.
func (lc *logColumns) resolve(vp *viewPlan, rec arrow.RecordBatch) error {
	schema := rec.Schema()
	md := schema.Metadata()
	if v, ok := md.GetValue(MetaView); ok && v != vp.name {
		return fmt.Errorf("offline log of feature view %q: a batch belongs to feature view %q", vp.name, v)
	}
	if v, ok := md.GetValue(MetaLogVersion); ok && v != LogVersion {
		return fmt.Errorf("offline log of feature view %q: log version %q; this export reads version %s", vp.name, v, LogVersion)
	}
	col := func(name string) (arrow.Array, error) {
		is := schema.FieldIndices(name)
		if len(is) == 0 {
			return nil, fmt.Errorf("offline log of feature view %q: a batch has no column %q", vp.name, name)
		}
		return rec.Column(is[0]), nil
	}
	bad := func(name string, a arrow.Array, want string) error {
		return fmt.Errorf("offline log of feature view %q: column %q has type %s; want %s", vp.name, name, a.DataType(), want)
	}
	lc.view = vp.name
	tc, err := col(ColEventTime)
	if err != nil {
		return err
	}
	if tc.NullN() > 0 {
		return fmt.Errorf("offline log of feature view %q: column %q has nulls", vp.name, ColEventTime)
	}
	switch a := tc.(type) {
	case *array.Timestamp:
		lc.unit = a.DataType().(*arrow.TimestampType).Unit
		vals := a.TimestampValues()
		lc.time = arrowTimestamps(vals)
	case *array.Int64:
		lc.unit, lc.time = arrow.Millisecond, a.Int64Values()
	default:
		return bad(ColEventTime, tc, "timestamp[ms]")
	}
	pc, err := col(ColPartition)
	if err != nil {
		return err
	}
	if lc.part, _ = pc.(*array.Int32); lc.part == nil {
		return bad(ColPartition, pc, "int32")
	}
	oc, err := col(ColOffset)
	if err != nil {
		return err
	}
	if lc.off, _ = oc.(*array.Int64); lc.off == nil {
		return bad(ColOffset, oc, "int64")
	}
	lc.keys = lc.keys[:0]
	for j, k := range vp.entity.keys {
		kc, err := col(k)
		if err != nil {
			return err
		}
		if !keyTypeOK(kc.DataType(), vp.entity.kinds[j]) {
			want := "utf8"
			if vp.entity.kinds[j] == featurestore.KeyInt64 {
				want = "int64"
			}
			return bad(k, kc, want)
		}
		lc.keys = append(lc.keys, kc)
	}
	lc.fields = lc.fields[:0]
	for _, f := range vp.fields {
		var a arrow.Array
		if is := schema.FieldIndices(f.Name); len(is) > 0 && arrow.TypeEqual(schema.Field(is[0]).Type, arrowType(f.Kind)) {
			a = rec.Column(is[0])
		}
		lc.fields = append(lc.fields, a)
	}
	return nil
}

func (lc *logColumns) timeAt(i int) int64 {
	if lc.unit == arrow.Millisecond {
		return lc.time[i]
	}
	return toMillis(lc.time[i], lc.unit)
}

// partitionAt and offsetAt give the event's Kafka position; an event
// without one (null) orders as partition 0, offset 0.
func (lc *logColumns) partitionAt(i int) int32 {
	if lc.part.IsNull(i) {
		return 0
	}
	return lc.part.Value(i)
}

func (lc *logColumns) offsetAt(i int) int64 {
	if lc.off.IsNull(i) {
		return 0
	}
	return lc.off.Value(i)
}

// arrowTimestamps views timestamps as their int64 values, without copying.
func arrowTimestamps(ts []arrow.Timestamp) []int64 {
	return unsafe.Slice((*int64)(unsafe.Pointer(unsafe.SliceData(ts))), len(ts))
}
