package export

import (
	"bufio"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cespare/xxhash/v2"

	"github.com/featurestore/featurestore/featurestore"
)

// Spill files are record batches kept in memory within a bound, and Arrow
// IPC streams in the export's temporary directory beyond it, one per
// (source, worker, bucket). Rows and events are assigned to buckets
// by a hash of their entity key, so that every row and every event of one
// key land in the same bucket, which is then computed alone.
//
// Rows:   key binary, t int64 (ms), row int64 (number in the entity table)
// Events: key binary, time int64 (ms), partition int32, offset int64, then
//         the fields the selected features read, typed by their kind.
// Results (per entity and bucket, sorted by row): row int64, then the
//         entity's feature columns.

var rowsSchema = arrow.NewSchema([]arrow.Field{
	{Name: "key", Type: arrow.BinaryTypes.Binary},
	{Name: "t", Type: arrow.PrimitiveTypes.Int64},
	{Name: "row", Type: arrow.PrimitiveTypes.Int64},
}, nil)

// Columns of the events spill schema before the fields.
const (
	evKey = iota
	evTime
	evPartition
	evOffset
	evFields
)

func eventsSchema(vp *viewPlan) *arrow.Schema {
	fields := []arrow.Field{
		{Name: "key", Type: arrow.BinaryTypes.Binary},
		{Name: "time", Type: arrow.PrimitiveTypes.Int64},
		{Name: "partition", Type: arrow.PrimitiveTypes.Int32},
		{Name: "offset", Type: arrow.PrimitiveTypes.Int64},
	}
	for _, f := range vp.fields {
		fields = append(fields, arrow.Field{Name: f.Name, Type: arrowType(f.Kind), Nullable: true})
	}
	return arrow.NewSchema(fields, nil)
}

// resultsSchema is the schema of a group's results: the row number, and a
// column per feature of entity e; a direct column (direct[i] not nil),
// whose values go straight to their rows, is of type null, which takes no
// memory and no bytes in a results file.
func resultsSchema(e *entityPlan, direct []*directColumn) *arrow.Schema {
	fields := []arrow.Field{{Name: "row", Type: arrow.PrimitiveTypes.Int64}}
	for i, c := range e.columns {
		t := arrowType(c.kind)
		if direct[i] != nil {
			t = arrow.Null // written in place, read from the directColumn
		}
		fields = append(fields, arrow.Field{Name: c.name, Type: t, Nullable: true})
	}
	return arrow.NewSchema(fields, nil)
}

// spillFile is one spilled bucket: the batches kept in memory, then those
// of its IPC stream file, if any.
type spillFile struct {
	path string // "" when every batch is in memory
	recs []arrow.RecordBatch
	rows int64
	// bytes counts the batches' bytes, in memory and in the file; inMemory
	// those in memory, taken from sm.
	bytes, inMemory int64
	sm              *spillMemory
}

// remove releases the file's batches in memory and deletes its file. It is
// called once, when the file has been read for the last time.
func (f spillFile) remove() {
	for _, r := range f.recs {
		r.Release()
	}
	f.sm.give(f.inMemory)
	if f.path != "" {
		os.Remove(f.path)
	}
}

// spillMemory bounds the bytes of spilled batches that the export keeps in
// memory rather than writing them to files (a quarter of the budget: the
// garbage the computation leaves until the collector runs takes about as
// much again): an export whose data fits never writes nor reads a spill
// file, and one that does not writes only what exceeds it.
type spillMemory struct {
	used  atomic.Int64
	limit int64
}

// take reports whether n more bytes fit, and takes them if so.
func (m *spillMemory) take(n int64) bool {
	if m == nil {
		return false
	}
	if m.used.Add(n) > m.limit {
		m.used.Add(-n)
		return false
	}
	return true
}

func (m *spillMemory) give(n int64) {
	if m != nil && n != 0 {
		m.used.Add(-n)
	}
}

// BatchBytes returns the bytes of a batch's buffers (their lengths, as an
// IPC message carries them).
func BatchBytes(rec arrow.RecordBatch) int64 {
	var n int64
	var add func(d arrow.ArrayData)
	add = func(d arrow.ArrayData) {
		for _, b := range d.Buffers() {
			if b != nil {
				n += int64(b.Len())
			}
		}
		for _, c := range d.Children() {
			add(c)
		}
	}
	for _, c := range rec.Columns() {
		add(c.Data())
	}
	return n
}

// hashKey is the hash that places a key in buckets and in the bloom filter.
func hashKey(key []byte) uint64 { return xxhash.Sum64(key) }

// bucketOf returns the bucket of a key hash among n at a partitioning level.
// Each level mixes the hash differently, so that a bucket split again
// spreads its keys over the new buckets.
func bucketOf(h uint64, level, n int) int {
	if level > 0 {
		h ^= uint64(level) * 0x9e3779b97f4a7c15
		h ^= h >> 33
		h *= 0xff51afd7ed558ccd
		h ^= h >> 33
	}
	hi, _ := bits.Mul64(h, uint64(n))
	return int(hi)
}

var spillSeq atomic.Int64

// partitioner writes rows of one schema into n bucket files, buffering each
// bucket's rows in builders (or rawEvents) up to flushBytes.
type partitioner struct {
	// rawKinds, for the events schema: the kinds of its fields. The
	// buckets fill its columns as rawEvents (eventBatch) instead of
	// through their builders.
	rawKinds   []featurestore.Kind
	sm         *spillMemory // nil: every batch goes to the file
	dir        string
	schema     *arrow.Schema
	level      int
	flushBytes int
	mem        memory.Allocator
	buckets    []*bucketWriter
}

type bucketWriter struct {
	p      *partitioner
	b      *array.RecordBuilder
	fields []array.Builder // b's
	raw    *rawEvents      // the first columns, for a raw partitioner
	// pending, pendingKeys and pendingBytes count the rows, key bytes and
	// bytes of a batch about to be appended (see eventBatch).
	pending, pendingKeys, pendingBytes int
	pendingData                        []int // per view field: string bytes
	buffered                           int   // bytes in the builders, about
	fh                                 *os.File
	bw                                 *bufio.Writer
	w                                  *ipc.Writer
	out                                spillFile
}

func newPartitioner(sm *spillMemory, dir string, schema *arrow.Schema, level, n, flushBytes int, mem memory.Allocator) *partitioner {
	p := &partitioner{sm: sm, dir: dir, schema: schema, level: level, flushBytes: flushBytes, mem: mem, buckets: make([]*bucketWriter, n)}
	for i := range p.buckets {
		p.buckets[i] = &bucketWriter{p: p, out: spillFile{sm: sm}}
	}
	return p
}

// bucket returns the writer of the bucket of a key hash.
func (p *partitioner) bucket(h uint64) *bucketWriter {
	bw := p.buckets[bucketOf(h, p.level, len(p.buckets))]
	switch {
	case bw.b != nil || bw.raw != nil:
	case p.rawKinds != nil:
		bw.raw = newRawEvents(p.rawKinds)
	default:
		bw.b = array.NewRecordBuilder(p.mem, p.schema)
		bw.fields = bw.b.Fields()
	}
	return bw
}

// added records that rows rows of about size bytes were appended, and
// flushes the bucket when its buffer is full.
func (bw *bucketWriter) added(rows, size int) error {
	bw.buffered += size
	bw.out.rows += int64(rows)
	if bw.buffered >= bw.p.flushBytes {
		return bw.flush()
	}
	return nil
}

func (bw *bucketWriter) flush() error {
	if bw.b == nil && bw.raw == nil || bw.buffered == 0 {
		return nil
	}
	var rec arrow.RecordBatch
	if bw.raw != nil {
		n := bw.raw.len()
		cols := bw.raw.arrays()
		rec = array.NewRecordBatch(bw.p.schema, cols, int64(n))
		releaseAll(cols)
	} else {
		rec = bw.b.NewRecordBatch()
	}
	bw.buffered = 0
	reserveLike(bw, rec)
	size := BatchBytes(rec)
	bw.out.bytes += size
	// Once a bucket writes to its file, its later batches follow there, so
	// that its batches read back in the order they were added.
	if bw.w == nil && bw.p.sm.take(size) {
		bw.out.recs = append(bw.out.recs, rec)
		bw.out.inMemory += size
		return nil
	}
	defer rec.Release()
	if bw.w == nil {
		name := fmt.Sprintf("s%06d.arrows", spillSeq.Add(1))
		bw.out.path = filepath.Join(bw.p.dir, name)
		fh, err := os.Create(bw.out.path)
		if err != nil {
			return fmt.Errorf("spill: %w", err)
		}
		bw.fh = fh
		bw.bw = bufio.NewWriterSize(fh, 64<<10)
		bw.w = ipc.NewWriter(bw.bw, ipc.WithSchema(bw.p.schema), ipc.WithAllocator(bw.p.mem))
	}
	if err := bw.w.Write(rec); err != nil {
		return fmt.Errorf("spill %s: %w", bw.out.path, err)
	}
	return nil
}

// reserveLike reserves in the builders the room of a batch they built:
// the next batch of a bucket is about as large, and builders that start
// empty grow by doubling, copying and clearing their buffers each time.
func reserveLike(bw *bucketWriter, rec arrow.RecordBatch) {
	if bw.raw != nil {
		return // rawEvents.arrays reserved its own
	}
	for c, col := range rec.Columns() {
		b := bw.fields[c]
		b.Reserve(col.Len())
		switch a := col.(type) {
		case *array.Binary:
			b.(*array.BinaryBuilder).ReserveData(len(a.ValueBytes()))
		case *array.String:
			b.(*array.StringBuilder).ReserveData(len(a.ValueBytes()))
		}
	}
}

// close flushes and closes every bucket, and returns the file of each
// bucket (a zero spillFile for a bucket without rows).
func (p *partitioner) close() ([]spillFile, error) {
	out := make([]spillFile, len(p.buckets))
	var first error
	for i, bw := range p.buckets {
		if err := bw.flush(); err != nil && first == nil {
			first = err
		}
		if bw.b != nil {
			bw.b.Release()
		}
		bw.b, bw.fields, bw.raw = nil, nil, nil
		if bw.w == nil {
			out[i] = bw.out
			continue
		}
		if err := bw.w.Close(); err != nil && first == nil {
			first = fmt.Errorf("spill %s: %w", bw.out.path, err)
		}
		if err := bw.bw.Flush(); err != nil && first == nil {
			first = fmt.Errorf("spill %s: %w", bw.out.path, err)
		}
		if err := bw.fh.Close(); err != nil && first == nil {
			first = fmt.Errorf("spill %s: %w", bw.out.path, err)
		}
		out[i] = bw.out
	}
	return out, first
}

// readSpill calls fn with each batch of a spill file. A batch is valid
// during the call; fn retains it to keep it longer.
func readSpill(f spillFile, mem memory.Allocator, fn func(arrow.RecordBatch) error) error {
	r, err := openSpill(f, mem, 256<<10)
	if err != nil {
		return err
	}
	defer r.close()
	for r.next() {
		if err := fn(r.rec); err != nil {
			return err
		}
	}
	return r.err
}

// spillReader reads the batches of a spill file: those in memory, then
// those of its file.
type spillReader struct {
	f   spillFile
	k   int // next batch in memory
	fh  *os.File
	r   *ipc.Reader
	rec arrow.RecordBatch // the current batch, valid until next
	err error
}

func openSpill(f spillFile, mem memory.Allocator, bufSize int) (*spillReader, error) {
	s := &spillReader{f: f}
	if f.path == "" {
		return s, nil
	}
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, err
	}
	r, err := ipc.NewReader(bufio.NewReaderSize(fh, bufSize), ipc.WithAllocator(mem))
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("read spill %s: %w", f.path, err)
	}
	s.fh, s.r = fh, r
	return s, nil
}

// next moves to the next batch, and reports whether there is one; at the
// end, err says whether reading failed.
func (s *spillReader) next() bool {
	if s.k < len(s.f.recs) {
		s.rec = s.f.recs[s.k]
		s.k++
		return true
	}
	if s.r == nil {
		return false
	}
	if s.r.Next() {
		s.rec = s.r.RecordBatch()
		return true
	}
	if err := s.r.Err(); err != nil {
		s.err = fmt.Errorf("read spill %s: %w", s.f.path, err)
	}
	return false
}

func (s *spillReader) close() {
	if s.r != nil {
		s.r.Release()
		s.fh.Close()
	}
}

// copyRow appends row i of rec to the builders of a record builder with the
// same schema. Spill schemas hold binary, utf8, int64, int32, float64 and
// boolean columns only.
func copyRow(b *array.RecordBuilder, rec arrow.RecordBatch, i int) int {
	size := 0
	for c, col := range rec.Columns() {
		fb := b.Field(c)
		if col.IsNull(i) {
			fb.AppendNull()
			continue
		}
		switch a := col.(type) {
		case *array.Binary:
			v := a.Value(i)
			fb.(*array.BinaryBuilder).Append(v)
			size += len(v) + 4
		case *array.String:
			v := a.Value(i)
			fb.(*array.StringBuilder).Append(v)
			size += len(v) + 4
		case *array.Int64:
			fb.(*array.Int64Builder).Append(a.Value(i))
			size += 8
		case *array.Int32:
			fb.(*array.Int32Builder).Append(a.Value(i))
			size += 4
		case *array.Float64:
			fb.(*array.Float64Builder).Append(a.Value(i))
			size += 8
		case *array.Boolean:
			fb.(*array.BooleanBuilder).Append(a.Value(i))
			size++
		default:
			panic(fmt.Sprintf("export: spill column of type %s", col.DataType()))
		}
	}
	return size
}

// arrowType returns the Arrow type of a value kind.
func arrowType(k featurestore.Kind) arrow.DataType {
	switch k {
	case featurestore.KindString:
		return arrow.BinaryTypes.String
	case featurestore.KindInt64:
		return arrow.PrimitiveTypes.Int64
	case featurestore.KindDouble:
		return arrow.PrimitiveTypes.Float64
	case featurestore.KindBool:
		return arrow.FixedWidthTypes.Boolean
	}
	if k.IsList() {
		return arrow.ListOf(arrowType(k.Elem()))
	}
	return arrow.Null
}
