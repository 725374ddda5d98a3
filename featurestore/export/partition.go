package export

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

// fanOut reads batches with produce, in one goroutine, and hands them to
// x.workers goroutines that call work with the worker's number.
func (x *exporter) fanOut(ctx context.Context, produce func(ctx context.Context, emit func(arrow.RecordBatch, int64) error) error, work func(w int, rec arrow.RecordBatch, first int64) error) error {
	type job struct {
		rec   arrow.RecordBatch
		first int64
	}
	g, ctx := newWorkGroup(ctx)
	jobs := make(chan job, x.workers)
	g.Go(func() error {
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
			var err error
			for j := range jobs {
				if err == nil && ctx.Err() == nil {
					err = work(w, j.rec, j.first)
				}
				j.rec.Release()
			}
			return err
		})
	}
	return g.Wait()
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
		times, err := x.cols.timesOf(rec, first, w.times)
		if err != nil {
			return err
		}
		w.times = times
		for _, t := range times {
			w.minT, w.maxT, w.has = min(w.minT, t), max(w.maxT, t), true
		}
		for ei, e := range ents {
			w.cols = w.cols[:0]
			for _, c := range x.cols.keys[ei] {
				w.cols = append(w.cols, rec.Column(c))
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
				if err := bw.added(len(key) + 20); err != nil {
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
	return nil
}

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
// than the last row's timestamp and, for a view with windows only, not
// before the first tile the earliest row reads.
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
	until, from := x.maxT, int64(math.MinInt64)
	if v := vp.win; !v.HasPart(window.PartLifetime) && !v.HasPart(window.PartLastValue) && v.HasPart(window.PartWindow) {
		from = v.TilesNeeded(x.minT).First * v.Tile()
	}
	blm := x.blooms[vp.entity.index]
	schema := eventsSchema(vp)
	type worker struct {
		part *partitioner
		keys keyReader
		buf  []byte
		lc   logColumns
	}
	ws := make([]*worker, x.workers)
	for i := range ws {
		ws[i] = &worker{part: newPartitioner(x.spillMem, x.dir, schema, 0, x.parts, x.flush, x.mem)}
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
		kept := 0
		for i := range n {
			t := lc.timeAt(i)
			if t > until || t < from {
				continue
			}
			key, null := w.keys.key(w.buf[:0], i)
			w.buf = key
			if null >= 0 {
				continue // ingest rejects events without a key; the online store has none either
			}
			h := hashKey(key)
			if !blm.has(h) {
				continue
			}
			bw := w.part.bucket(h)
			b := bw.b
			b.Field(evKey).(*array.BinaryBuilder).Append(key)
			b.Field(evTime).(*array.Int64Builder).Append(t)
			b.Field(evPartition).(*array.Int32Builder).Append(lc.partitionAt(i))
			b.Field(evOffset).(*array.Int64Builder).Append(lc.offsetAt(i))
			size := len(key) + 24
			for j, f := range vp.fields {
				size += appendField(b.Field(evFields+j), f.Kind, lc.fields[j], i)
			}
			if err := bw.added(size); err != nil {
				return err
			}
			kept++
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

// appendField appends value i of a log field column (nil when the batch
// lacks the field) to a spill builder, and returns about how many bytes it
// took.
func appendField(b array.Builder, k featurestore.Kind, a arrow.Array, i int) int {
	if a == nil || a.IsNull(i) {
		b.AppendNull()
		return 1
	}
	switch k {
	case featurestore.KindString:
		v := a.(*array.String).Value(i)
		b.(*array.StringBuilder).Append(v)
		return len(v) + 4
	case featurestore.KindInt64:
		b.(*array.Int64Builder).Append(a.(*array.Int64).Value(i))
	case featurestore.KindDouble:
		b.(*array.Float64Builder).Append(a.(*array.Float64).Value(i))
	case featurestore.KindBool:
		b.(*array.BooleanBuilder).Append(a.(*array.Boolean).Value(i))
		return 1
	}
	return 8
}

// arrowTimestamps views timestamps as their int64 values, without copying.
func arrowTimestamps(ts []arrow.Timestamp) []int64 {
	return unsafe.Slice((*int64)(unsafe.Pointer(unsafe.SliceData(ts))), len(ts))
}
