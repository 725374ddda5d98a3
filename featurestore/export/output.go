package export

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/featurestore/featurestore/featurestore/offline"
)

// parquetRowGroup is the most rows of one Parquet row group of the output.
const parquetRowGroup = 128 << 10

// BatchWriter receives an export's output instead of a file
// (Options.Output).
type BatchWriter interface {
	// Begin is called once, with the output's schema, before any Write.
	Begin(schema *arrow.Schema) error
	// Write is called with each batch of the output, in row order; the
	// batch is valid during the call only. An error stops the export, and
	// Run returns it.
	Write(rec arrow.RecordBatch) error
}

// output is what the export writes to: a file or a BatchWriter.
type output interface {
	write(rec arrow.RecordBatch) error
	// commit completes the output; abort drops an output not committed.
	commit() error
	abort()
}

func (x *exporter) createOutput(schema *arrow.Schema) (output, error) {
	if w := x.opts.Output; w != nil {
		if err := w.Begin(schema); err != nil {
			return nil, err
		}
		return writerOutput{w}, nil
	}
	return createSink(x.opts.Out, x.opts.OutFormat, schema, x.mem, x.dicts)
}

// writerOutput passes the output to a BatchWriter.
type writerOutput struct{ w BatchWriter }

func (o writerOutput) write(rec arrow.RecordBatch) error { return o.w.Write(rec) }
func (o writerOutput) commit() error                     { return nil }
func (o writerOutput) abort()                            {}

// sink writes the output to a temporary file next to its path, and renames
// it into place once complete, so that a failed or interrupted export never
// leaves a partial file under the output's name.
type sink struct {
	path, tmp string
	fh        *os.File
	bw        *bufio.Writer
	ipcw      ipcWriter
	pqw       *pqarrow.FileWriter
	mem       memory.Allocator
	// dicts makes the dictionaries of an Arrow IPC file's columns one per
	// column; nil when none needs it.
	dicts *dictUnifier
	done  bool
}

// ipcWriter is an Arrow IPC writer: of the file format, or of the stream
// format for a path ending in .arrows.
type ipcWriter interface {
	Write(rec arrow.RecordBatch) error
	Close() error
}

// isStreamPath reports whether an Arrow IPC output at path is written in
// the stream format: its extension is .arrows, which names that format
// (pyarrow.ipc.open_stream, polars.read_ipc_stream); every other name gets
// the file format.
func isStreamPath(path string) bool { return strings.EqualFold(filepath.Ext(path), ".arrows") }

// parquetProperties are the output's Parquet writer's properties.
func parquetProperties(mem memory.Allocator) (*parquet.WriterProperties, pqarrow.ArrowWriterProperties) {
	return parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Snappy),
			parquet.WithMaxRowGroupLength(parquetRowGroup), parquet.WithAllocator(mem)),
		pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema(), pqarrow.WithAllocator(mem))
}

// checkParquet returns an error naming the first column of schema that a
// Parquet file cannot hold (a string_view, a duration, an interval...), as
// the Parquet writer would, but before the export computes anything: the
// writer is only created once every feature is computed. table names the
// file the columns come from.
func checkParquet(table string, schema *arrow.Schema, mem memory.Allocator) error {
	props, arrowProps := parquetProperties(mem)
	for _, f := range schema.Fields() {
		if _, err := pqarrow.ToParquet(arrow.NewSchema([]arrow.Field{f}, nil), props, arrowProps); err != nil {
			return fmt.Errorf("%s: column %q has type %s, which a Parquet output cannot hold (%v): write Arrow output (.arrow) instead", table, f.Name, f.Type, err)
		}
	}
	return nil
}

func createSink(path string, format Format, schema *arrow.Schema, mem memory.Allocator, dicts *dictUnifier) (*sink, error) {
	f, err := formatOf(path, format, FormatParquet, FormatArrow)
	if err != nil {
		return nil, err
	}
	// The mode a created file gets (0666 less the umask), not a temporary
	// file's 0600 nor a fixed 0644: a umask of 077 keeps a training set
	// private.
	fh, err := offline.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("create output: %w", err)
	}
	s := &sink{path: path, tmp: fh.Name(), fh: fh, bw: bufio.NewWriterSize(fh, 1<<20), mem: mem}
	switch f {
	case FormatParquet:
		props, arrowProps := parquetProperties(mem)
		s.pqw, err = pqarrow.NewFileWriter(schema, s.bw, props, arrowProps)
	default:
		// The stream takes the file's one dictionary per column too, so
		// that either is read the same way.
		s.dicts = dicts
		if isStreamPath(path) {
			s.ipcw = ipc.NewWriter(s.bw, ipc.WithSchema(schema), ipc.WithAllocator(mem))
		} else {
			s.ipcw, err = ipc.NewFileWriter(s.bw, ipc.WithSchema(schema), ipc.WithAllocator(mem))
		}
	}
	if err != nil {
		fh.Close()
		os.Remove(s.tmp)
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return s, nil
}

func (s *sink) write(rec arrow.RecordBatch) error {
	var err error
	if s.pqw != nil {
		// The Parquet writer takes a dictionary per batch, but no null
		// among a dictionary's values.
		if rec, err = dropDictionaryNulls(rec, s.mem); err == nil {
			err = s.pqw.WriteBuffered(rec)
			rec.Release()
		}
	} else {
		if rec, err = s.dicts.transpose(rec); err == nil {
			err = s.ipcw.Write(rec)
			rec.Release()
		}
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", s.path, err)
	}
	return nil
}

// commit completes the file and renames it to the output's path.
func (s *sink) commit() error {
	var err error
	if s.pqw != nil {
		err = s.pqw.Close()
	} else {
		err = s.ipcw.Close()
	}
	if err == nil {
		err = s.bw.Flush()
	}
	if err == nil {
		err = s.fh.Sync()
	}
	if cerr := s.fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(s.tmp, s.path)
	}
	if err != nil {
		os.Remove(s.tmp)
		return fmt.Errorf("write %s: %w", s.path, err)
	}
	s.done = true
	return nil
}

// abort removes the temporary file unless the output was committed.
func (s *sink) abort() {
	if s.done {
		return
	}
	s.done = true
	s.fh.Close()
	os.Remove(s.tmp)
}

// dictUnifier gives each dictionary encoded column of the entity table one
// dictionary for the whole of an Arrow IPC file: the file format allows a
// single dictionary per column (and arrow-go writes no deltas to a file),
// while each batch of the input may carry its own (an Arrow stream, pandas
// categoricals written batch by batch, Parquet row groups). The table is
// read once more before the computation, so that a column whose values do
// not fit its index type fails the export early, and its dictionaries'
// values gathered (add); each batch written is then encoded with their
// union (transpose). A null among a dictionary's values becomes a null
// index. Columns whose values the unifier cannot hash (bool, large_utf8,
// nested types) are written as read, and fail when their dictionary
// changes.
type dictUnifier struct {
	mem  memory.Allocator
	cols map[int]*unifiedDict // by column index
}

type unifiedDict struct {
	name string
	typ  *arrow.DictionaryType
	u    array.DictionaryUnifier
	dict arrow.Array // the union of the values, once gathered
	// last is the input dictionary last seen and m where its values go in
	// dict: batches often share one.
	last arrow.ArrayData
	m    []int32
}

// gatherDictionaries reads the entity table's dictionaries for an Arrow
// IPC file output (x.dicts; nil when there is nothing to unify).
func (x *exporter) gatherDictionaries(ctx context.Context) error {
	if x.opts.Output != nil {
		return nil // a stream replaces dictionaries
	}
	if f, _ := formatOf(x.opts.Out, x.opts.OutFormat, FormatParquet, FormatArrow); f != FormatArrow {
		return nil
	}
	d := &dictUnifier{mem: x.mem, cols: map[int]*unifiedDict{}}
	x.dicts = d
	for i, f := range x.table.schema.Fields() {
		dt, ok := f.Type.(*arrow.DictionaryType)
		if !ok {
			continue
		}
		u, err := array.NewDictionaryUnifier(x.mem, dt.ValueType)
		if err != nil {
			continue
		}
		d.cols[i] = &unifiedDict{name: f.Name, typ: dt, u: u}
	}
	if len(d.cols) == 0 {
		return nil
	}
	if err := x.readTableKept(ctx, d.add); err != nil {
		return err
	}
	for _, c := range d.cols {
		dict, err := c.u.GetResultWithIndexType(c.typ.IndexType)
		if err != nil {
			return fmt.Errorf("%s: column %q (%s): its batches' dictionaries hold more values together than %s indices can number, and an Arrow IPC file holds one dictionary per column: write Parquet output instead, or use a wider index type",
				x.opts.Entities, c.name, c.typ, c.typ.IndexType)
		}
		// GetResult empties the unifier, which transpose needs whole.
		if err := c.u.Unify(dict); err != nil {
			dict.Release()
			return err
		}
		c.dict = dict
		c.setLast(nil, nil)
	}
	return nil
}

// add adds the values of rec's dictionaries.
func (d *dictUnifier) add(rec arrow.RecordBatch) error {
	for i, c := range d.cols {
		dict := rec.Column(i).(*array.Dictionary).Dictionary()
		if dict.Data() == c.last {
			continue
		}
		vals, _, err := withoutNulls(dict, d.mem)
		if err != nil {
			return err
		}
		err = c.u.Unify(vals)
		vals.Release()
		if err != nil {
			return fmt.Errorf("column %q: %w", c.name, err)
		}
		c.setLast(dict.Data(), nil)
	}
	return nil
}

// transpose returns rec with its dictionary columns encoded with their
// union of values. The caller releases the batch returned.
func (d *dictUnifier) transpose(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	if d == nil || len(d.cols) == 0 {
		rec.Retain()
		return rec, nil
	}
	cols := rec.Columns()
	out := make([]arrow.Array, len(cols))
	copy(out, cols)
	var made []arrow.Array
	defer func() {
		for _, a := range made {
			a.Release()
		}
	}()
	for i, c := range d.cols {
		in := cols[i].(*array.Dictionary)
		dict := in.Dictionary()
		if dict.Data() != c.last {
			vals, m, err := withoutNulls(dict, d.mem)
			if err != nil {
				return nil, err
			}
			buf, err := c.u.UnifyAndTranspose(vals)
			n := vals.Len()
			vals.Release()
			if err != nil {
				return nil, fmt.Errorf("column %q: %w", c.name, err)
			}
			to := arrow.Int32Traits.CastFromBytes(buf.Bytes())[:n]
			for j, k := range m {
				if k < 0 {
					continue
				}
				if m[j] = to[k]; int(m[j]) >= c.dict.Len() {
					buf.Release()
					return nil, fmt.Errorf("column %q holds values the first read did not: did the file change during the export?", c.name)
				}
			}
			buf.Release()
			c.setLast(dict.Data(), m)
		}
		idx, err := remapIndices(in, c.m, d.mem)
		if err != nil {
			return nil, err
		}
		out[i] = array.NewDictionaryArray(c.typ, idx, c.dict)
		idx.Release()
		made = append(made, out[i])
	}
	return array.NewRecordBatch(rec.Schema(), out, rec.NumRows()), nil
}

func (c *unifiedDict) setLast(last arrow.ArrayData, m []int32) {
	if c.last != nil {
		c.last.Release()
	}
	if last != nil {
		last.Retain()
	}
	c.last, c.m = last, m
}

func (d *dictUnifier) release() {
	if d == nil {
		return
	}
	for _, c := range d.cols {
		c.setLast(nil, nil)
		c.u.Release()
		if c.dict != nil {
			c.dict.Release()
		}
	}
	d.cols = nil
}

// dropDictionaryNulls returns rec with the nulls among its dictionaries'
// values made null indices, for the Parquet writer, which refuses them.
// The caller releases the batch returned.
func dropDictionaryNulls(rec arrow.RecordBatch, mem memory.Allocator) (arrow.RecordBatch, error) {
	var out []arrow.Array
	defer func() {
		for i, a := range out {
			if a != rec.Column(i) {
				a.Release()
			}
		}
	}()
	for i, col := range rec.Columns() {
		in, ok := col.(*array.Dictionary)
		if !ok || in.Dictionary().NullN() == 0 {
			continue
		}
		if out == nil {
			out = append([]arrow.Array(nil), rec.Columns()...)
		}
		vals, m, err := withoutNulls(in.Dictionary(), mem)
		if err != nil {
			return nil, err
		}
		idx, err := remapIndices(in, m, mem)
		if err != nil {
			vals.Release()
			return nil, err
		}
		out[i] = array.NewDictionaryArray(in.DataType(), idx, vals)
		idx.Release()
		vals.Release()
	}
	if out == nil {
		rec.Retain()
		return rec, nil
	}
	return array.NewRecordBatch(rec.Schema(), out, rec.NumRows()), nil
}

// withoutNulls returns the values of dict but its nulls, and where each of
// dict's values went among them: -1 for a null.
func withoutNulls(dict arrow.Array, mem memory.Allocator) (arrow.Array, []int32, error) {
	m := make([]int32, dict.Len())
	if dict.NullN() == 0 {
		for i := range m {
			m[i] = int32(i)
		}
		dict.Retain()
		return dict, m, nil
	}
	var parts []arrow.Array
	defer func() {
		for _, p := range parts {
			p.Release()
		}
	}()
	start, k := 0, int32(0)
	for i := range m {
		if dict.IsNull(i) {
			m[i] = -1
			if i > start {
				parts = append(parts, array.NewSlice(dict, int64(start), int64(i)))
			}
			start = i + 1
			continue
		}
		m[i] = k
		k++
	}
	if start < dict.Len() || len(parts) == 0 {
		parts = append(parts, array.NewSlice(dict, int64(start), int64(dict.Len())))
	}
	vals, err := array.Concatenate(parts, mem)
	return vals, m, err
}

// remapIndices returns the indices of in with index i made m[i], or null
// where m[i] is -1.
func remapIndices(in *array.Dictionary, m []int32, mem memory.Allocator) (arrow.Array, error) {
	b := array.NewBuilder(mem, in.Indices().DataType())
	defer b.Release()
	var app func(int32)
	switch b := b.(type) {
	case *array.Int8Builder:
		app = func(j int32) { b.Append(int8(j)) }
	case *array.Uint8Builder:
		app = func(j int32) { b.Append(uint8(j)) }
	case *array.Int16Builder:
		app = func(j int32) { b.Append(int16(j)) }
	case *array.Uint16Builder:
		app = func(j int32) { b.Append(uint16(j)) }
	case *array.Int32Builder:
		app = func(j int32) { b.Append(j) }
	case *array.Uint32Builder:
		app = func(j int32) { b.Append(uint32(j)) }
	case *array.Int64Builder:
		app = func(j int32) { b.Append(int64(j)) }
	case *array.Uint64Builder:
		app = func(j int32) { b.Append(uint64(j)) }
	default:
		return nil, fmt.Errorf("dictionary index type %s", in.Indices().DataType())
	}
	b.Reserve(in.Len())
	for i := range in.Len() {
		if in.IsNull(i) {
			b.AppendNull()
			continue
		}
		if j := m[in.GetValueIndex(i)]; j >= 0 {
			app(j)
		} else {
			b.AppendNull()
		}
	}
	return b.NewArray(), nil
}
