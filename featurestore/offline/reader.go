package offline

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

// Snapshot is the committed state of one view's log at one moment: the
// files a reader may read. Files committed later are not in it; files a
// later compaction replaces may be deleted while it is read, so long reads
// take a fresh snapshot when a file is gone.
type Snapshot struct {
	Project, View string
	// Seq is the manifest entry the snapshot reflects; 0 for an empty log.
	Seq int64
	// Files are the committed files, ordered by date, topic, partition and
	// first offset.
	Files     []FileInfo
	positions map[streamKey]Position
}

// ReadSnapshot reads the manifest of a view's log.
func ReadSnapshot(ctx context.Context, st Storage, project, view string) (*Snapshot, error) {
	if err := checkSegment("project", project); err != nil {
		return nil, err
	}
	if err := checkSegment("feature view", view); err != nil {
		return nil, err
	}
	m := newManifest(st, project, view)
	if err := m.load(ctx); err != nil {
		return nil, err
	}
	return &Snapshot{Project: project, View: view, Seq: m.seq, Files: m.sortedFiles(), positions: m.pos}, nil
}

// Position returns the committed position of a partition.
func (s *Snapshot) Position(topic string, partition int32) (Position, bool) {
	p, ok := s.positions[streamKey{topic, partition}]
	return p, ok
}

// Name returns the storage name of one of the snapshot's files.
func (s *Snapshot) Name(f FileInfo) string { return viewDir(s.Project, s.View) + "/" + f.Path }

// Between returns the files that may hold events with event times in
// [from, to] (Unix ms, inclusive): the others are pruned by their recorded
// time range. Rows outside the range are not filtered from the files.
func (s *Snapshot) Between(from, to int64) []FileInfo {
	var out []FileInfo
	for _, f := range s.Files {
		if f.MaxTime >= from && f.MinTime <= to {
			out = append(out, f)
		}
	}
	return out
}

// Views returns the views of project that have a log in st.
func Views(ctx context.Context, st Storage, project string) ([]string, error) {
	if err := checkSegment("project", project); err != nil {
		return nil, err
	}
	objs, err := st.List(ctx, project)
	if err != nil {
		return nil, err
	}
	var views []string
	for _, o := range objs {
		parts := strings.Split(strings.TrimPrefix(o.Name, project+"/"), "/")
		if len(parts) == 3 && parts[1] == manifestDirName && !o.Temp {
			if _, ok := parseManifestEntry(parts[2]); ok {
				views = append(views, parts[0])
			}
		}
	}
	slices.Sort(views)
	return slices.Compact(views), nil
}

// File is an open log file.
type File struct {
	o Object // nil when mapped
	r *ipc.FileReader
	m *mapping // nil when read through o
}

// Mapper is implemented by storages that can map an object into memory,
// read-only (Dir, on Unix systems).
type Mapper interface {
	// Map maps the object name; after unmap, the bytes must not be used.
	Map(ctx context.Context, name string) (data []byte, unmap func() error, err error)
}

// mapping is a mapped file, unmapped once the File and every batch read
// from it are released.
type mapping struct {
	refs  atomic.Int64
	unmap func() error
}

func (m *mapping) release() {
	if m.refs.Add(-1) == 0 {
		m.unmap()
	}
}

// mappedBatch is a batch whose buffers are in a mapping: each reference
// to the batch holds one to the mapping.
type mappedBatch struct {
	arrow.RecordBatch
	m *mapping
}

func (b *mappedBatch) Retain() {
	b.m.refs.Add(1)
	b.RecordBatch.Retain()
}

func (b *mappedBatch) Release() {
	b.RecordBatch.Release()
	b.m.release()
}

// recoverIPC calls open, an arrow-go file reader's constructor, turning its
// panics on malformed footers into errors.
func recoverIPC(open func() (*ipc.FileReader, error)) (r *ipc.FileReader, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("%w: %v", ErrMalformedIPC, p)
		}
	}()
	return open()
}

// NewIPCFileReader is ipc.NewFileReader, whose reading of a malformed
// footer may panic: that is an error wrapping ErrMalformedIPC here. Check
// the file first (CheckIPCFile): some footers make it allocate what they
// claim instead.
func NewIPCFileReader(r ipc.ReadAtSeeker, mem memory.Allocator) (*ipc.FileReader, error) {
	return recoverIPC(func() (*ipc.FileReader, error) { return ipc.NewFileReader(r, ipc.WithAllocator(mem)) })
}

// openMapped opens the log file name through a mapping of it.
func openMapped(ctx context.Context, mp Mapper, name string) (*File, error) {
	data, unmap, err := mp.Map(ctx, name)
	if err != nil {
		return nil, err
	}
	// A damaged file must be an error, not a crash of an export or of
	// the server running it: its metadata is checked whole, which a
	// mapping makes cheap.
	if err := CheckIPCFile(bytes.NewReader(data), int64(len(data)), true); err != nil {
		unmap()
		return nil, fmt.Errorf("open log file %s: %w", name, err)
	}
	r, err := recoverIPC(func() (*ipc.FileReader, error) {
		return ipc.NewMappedFileReader(data, ipc.WithAllocator(memory.DefaultAllocator))
	})
	if err != nil {
		unmap()
		return nil, fmt.Errorf("open log file %s: %w", name, err)
	}
	if v, _ := r.Schema().Metadata().GetValue(MetaLogVersion); v != LogVersion {
		r.Close()
		unmap()
		return nil, fmt.Errorf("open log file %s: log version %q, want %q", name, v, LogVersion)
	}
	m := &mapping{unmap: unmap}
	m.refs.Store(1) // the File's
	return &File{r: r, m: m}, nil
}

// OpenFile opens the log file name and checks that it is one.
func OpenFile(ctx context.Context, st Storage, name string) (*File, error) {
	o, err := st.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	// The footer and the sizes of the blocks it lists are checked here
	// (what arrow-go sizes its reads by), each message when its batch is
	// read (blockReader).
	blocks, err := checkIPCFooter(o, o.Size(), false)
	if err != nil {
		o.Close()
		return nil, fmt.Errorf("open log file %s: %w", name, err)
	}
	br := &blockReader{o: o, blocks: make(map[int64]ipcBlock, len(blocks))}
	for _, b := range blocks {
		br.blocks[b.off] = b
	}
	r, err := NewIPCFileReader(io.NewSectionReader(br, 0, o.Size()), memory.DefaultAllocator)
	if err != nil {
		o.Close()
		return nil, fmt.Errorf("open log file %s: %w", name, err)
	}
	if v, _ := r.Schema().Metadata().GetValue(MetaLogVersion); v != LogVersion {
		r.Close()
		o.Close()
		return nil, fmt.Errorf("open log file %s: log version %q, want %q", name, v, LogVersion)
	}
	return &File{o: o, r: r}, nil
}

// blockReader is what arrow-go reads a log file from storage through. A
// read at the start of a block of the footer reads the whole block, the
// message's metadata and its body, in one request, and checks the message
// (as CheckIPCMessage) before arrow-go reads it, then serves arrow-go's reads
// of the metadata and of the body from it: a damaged message is an error
// wrapping ErrMalformedIPC, not an allocation of what it claims, and a
// batch costs object storage one request instead of two. Other reads (the
// footer) go to the object.
type blockReader struct {
	o      io.ReaderAt
	blocks map[int64]ipcBlock // by offset

	mu  sync.Mutex
	at  int64 // offset of buf
	buf []byte
}

func (br *blockReader) ReadAt(p []byte, off int64) (int, error) {
	br.mu.Lock()
	defer br.mu.Unlock()
	if b, ok := br.blocks[off]; ok && (br.buf == nil || br.at != off) {
		if err := br.load(b); err != nil {
			return 0, err
		}
	}
	if br.buf != nil && off >= br.at && off+int64(len(p)) <= br.at+int64(len(br.buf)) {
		return copy(p, br.buf[off-br.at:]), nil
	}
	return br.o.ReadAt(p, off)
}

// load reads block b and checks its message.
func (br *blockReader) load(b ipcBlock) error {
	// arrow-go copies what it reads: the buffer of the block before is
	// free again.
	buf := br.buf[:0]
	br.buf = nil
	n := b.metaLen + b.bodyLen // within the file: checkIPCFooter
	if int64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if k, err := br.o.ReadAt(buf, b.off); int64(k) < n {
		return fmt.Errorf("read the block at %d: %w", b.off, err)
	}
	if err := checkBlock(bytes.NewReader(buf), ipcBlock{off: 0, metaLen: b.metaLen, bodyLen: b.bodyLen}); err != nil {
		return fmt.Errorf("the block at %d: %w", b.off, err)
	}
	br.at, br.buf = b.off, buf
	return nil
}

// Schema returns the file's schema.
func (f *File) Schema() *arrow.Schema { return f.r.Schema() }

// NumBatches returns the number of record batches in the file.
func (f *File) NumBatches() int { return f.r.NumRecords() }

// Batch reads record batch i. The caller releases it.
func (f *File) Batch(i int) (arrow.RecordBatch, error) {
	rec, err := f.r.RecordBatchAt(i)
	if err != nil || f.m == nil {
		return rec, err
	}
	f.m.refs.Add(1)
	return &mappedBatch{RecordBatch: rec, m: f.m}, nil
}

// Close closes the file. A mapped file stays mapped until the batches read
// from it are released too.
func (f *File) Close() error {
	err := f.r.Close()
	if f.m != nil {
		f.m.release()
		return err
	}
	if cerr := f.o.Close(); err == nil {
		err = cerr
	}
	return err
}

// Scan calls fn with each record batch of files, which belong to snap, in
// order. A batch is released when fn returns; fn retains what it keeps.
func Scan(ctx context.Context, st Storage, snap *Snapshot, files []FileInfo, fn func(FileInfo, arrow.RecordBatch) error) error {
	return scanFiles(ctx, st, snap, files, false, fn)
}

// ScanMapped is Scan through mappings of the files, where the storage maps
// them (a Mapper): a batch's buffers are then the file's pages, neither
// copied nor allocated, so that a scan reads only the pages of the columns
// it uses. A batch fn retains stays valid, its columns with it, until it
// is released; fn must retain the batch, not only some of its columns, to
// use them after it returns. With other storages it is Scan.
func ScanMapped(ctx context.Context, st Storage, snap *Snapshot, files []FileInfo, fn func(FileInfo, arrow.RecordBatch) error) error {
	_, mapped := st.(Mapper)
	return scanFiles(ctx, st, snap, files, mapped, fn)
}

func scanFiles(ctx context.Context, st Storage, snap *Snapshot, files []FileInfo, mapped bool, fn func(FileInfo, arrow.RecordBatch) error) error {
	for _, fi := range files {
		if err := scanFile(ctx, st, snap.Name(fi), mapped, func(rec arrow.RecordBatch) error { return fn(fi, rec) }); err != nil {
			return err
		}
	}
	return nil
}

func scanFile(ctx context.Context, st Storage, name string, mapped bool, fn func(arrow.RecordBatch) error) error {
	var f *File
	var err error
	if mapped {
		f, err = openMapped(ctx, st.(Mapper), name)
	} else {
		f, err = OpenFile(ctx, st, name)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	for i := range f.NumBatches() {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := f.Batch(i)
		if err != nil {
			return fmt.Errorf("read %s batch %d: %w", path.Base(name), i, err)
		}
		err = fn(rec)
		rec.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// EventDecoder turns rows of log record batches into window.Events of a
// source, matching columns to the source's fields by name: a field the log
// does not have reads as null. Call Bind with each batch before reading its
// rows. Strings refer to the batch's memory.
type EventDecoder struct {
	fields []window.Field
	keys   []string

	evt, ing []arrow.Timestamp
	part     []int32
	off      []int64
	cols     []fieldColumn // per source field
	keyCols  []arrow.Array // per join key
}

type fieldColumn struct {
	kind featurestore.Kind
	str  *array.String
	i64  *array.Int64
	f64  *array.Float64
	bl   *array.Boolean
}

// NewEventDecoder returns a decoder into events whose Fields follow fields
// (window.SourceFields of the source), and into keys made of the join key
// columns named joinKeys, in order.
func NewEventDecoder(fields []window.Field, joinKeys []string) *EventDecoder {
	return &EventDecoder{fields: fields, keys: joinKeys}
}

// Bind prepares to read the rows of rec. It fails when a column has the
// wrong type or a fixed or key column is missing.
func (d *EventDecoder) Bind(rec arrow.RecordBatch) error {
	sc := rec.Schema()
	col := func(name string, t arrow.DataType) (arrow.Array, error) {
		idx := sc.FieldIndices(name)
		if len(idx) != 1 {
			return nil, fmt.Errorf("log batch: %d columns named %q", len(idx), name)
		}
		a := rec.Column(idx[0])
		if !arrow.TypeEqual(a.DataType(), t) {
			return nil, fmt.Errorf("log batch: column %q is %s, want %s", name, a.DataType(), t)
		}
		if a.NullN() > 0 {
			return nil, fmt.Errorf("log batch: column %q has nulls", name)
		}
		return a, nil
	}
	ts := arrow.FixedWidthTypes.Timestamp_ms
	a, err := col(ColEventTime, ts)
	if err != nil {
		return err
	}
	d.evt = a.(*array.Timestamp).TimestampValues()
	if a, err = col(ColIngestTime, ts); err != nil {
		return err
	}
	d.ing = a.(*array.Timestamp).TimestampValues()
	if a, err = col(ColPartition, arrow.PrimitiveTypes.Int32); err != nil {
		return err
	}
	d.part = a.(*array.Int32).Int32Values()
	if a, err = col(ColOffset, arrow.PrimitiveTypes.Int64); err != nil {
		return err
	}
	d.off = a.(*array.Int64).Int64Values()
	d.keyCols = d.keyCols[:0]
	for _, k := range d.keys {
		idx := sc.FieldIndices(k)
		if len(idx) != 1 {
			return fmt.Errorf("log batch: %d columns named %q", len(idx), k)
		}
		a := rec.Column(idx[0])
		switch a.(type) {
		case *array.String, *array.Int64:
		default:
			return fmt.Errorf("log batch: join key column %q is %s", k, a.DataType())
		}
		if a.NullN() > 0 {
			return fmt.Errorf("log batch: join key column %q has nulls", k)
		}
		d.keyCols = append(d.keyCols, a)
	}
	d.cols = d.cols[:0]
	for _, f := range d.fields {
		c := fieldColumn{kind: f.Kind}
		if idx := sc.FieldIndices(f.Name); len(idx) == 1 {
			t, _ := arrowType(f.Kind)
			a := rec.Column(idx[0])
			if !arrow.TypeEqual(a.DataType(), t) {
				return fmt.Errorf("log batch: column %q is %s, the source declares %s", f.Name, a.DataType(), f.Kind)
			}
			c.str, _ = a.(*array.String)
			c.i64, _ = a.(*array.Int64)
			c.f64, _ = a.(*array.Float64)
			c.bl, _ = a.(*array.Boolean)
		} else if len(idx) > 1 {
			return fmt.Errorf("log batch: %d columns named %q", len(idx), f.Name)
		}
		d.cols = append(d.cols, c)
	}
	return nil
}

// Event fills ev from row i of the bound batch, reusing ev.Fields.
func (d *EventDecoder) Event(i int, ev *window.Event) {
	ev.Time, ev.Partition, ev.Offset = int64(d.evt[i]), d.part[i], d.off[i]
	if cap(ev.Fields) < len(d.cols) {
		ev.Fields = make([]featurestore.Value, len(d.cols))
	}
	ev.Fields = ev.Fields[:len(d.cols)]
	for j := range d.cols {
		c := &d.cols[j]
		var v featurestore.Value
		switch {
		case c.str != nil && c.str.IsValid(i):
			v = featurestore.StringValue(c.str.Value(i))
		case c.i64 != nil && c.i64.IsValid(i):
			v = featurestore.Int64Value(c.i64.Value(i))
		case c.f64 != nil && c.f64.IsValid(i):
			v = featurestore.DoubleValue(c.f64.Value(i))
		case c.bl != nil && c.bl.IsValid(i):
			v = featurestore.BoolValue(c.bl.Value(i))
		}
		ev.Fields[j] = v
	}
}

// IngestTime returns the ingest time of row i, Unix ms.
func (d *EventDecoder) IngestTime(i int) int64 { return int64(d.ing[i]) }

// Key returns the entity key of row i.
func (d *EventDecoder) Key(i int) (featurestore.EntityKey, error) {
	if len(d.keyCols) == 1 {
		switch a := d.keyCols[0].(type) {
		case *array.String:
			return featurestore.StringKey(a.Value(i)), nil
		case *array.Int64:
			return featurestore.Int64Key(a.Value(i)), nil
		}
	}
	parts := make([]featurestore.KeyPart, len(d.keyCols))
	for j, a := range d.keyCols {
		switch a := a.(type) {
		case *array.String:
			parts[j] = featurestore.StringPart(a.Value(i))
		case *array.Int64:
			parts[j] = featurestore.Int64Part(a.Value(i))
		}
	}
	return featurestore.NewEntityKey(parts...)
}
