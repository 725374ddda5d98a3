package export

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/csv"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/featurestore/featurestore/featurestore/offline"
)

// Format is the format of a table file.
type Format string

// The table formats. FormatAuto picks one from the file name's extension.
const (
	FormatAuto    Format = ""
	FormatParquet Format = "parquet"
	FormatCSV     Format = "csv"
	FormatArrow   Format = "arrow" // Arrow IPC, file or stream format
)

// formatOf returns f, or the format the extension of path names.
func formatOf(path string, f Format, allowed ...Format) (Format, error) {
	if f == FormatAuto {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".parquet", ".pq":
			f = FormatParquet
		case ".csv":
			f = FormatCSV
		case ".arrow", ".arrows", ".ipc", ".feather":
			f = FormatArrow
		default:
			return "", fmt.Errorf("%s: cannot tell the format from the extension: use .parquet, .csv or .arrow, or name the format", path)
		}
	}
	for _, a := range allowed {
		if a == f {
			return f, nil
		}
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	return "", fmt.Errorf("%s: format %q is not one of %s", path, f, strings.Join(names, ", "))
}

// recordReader reads a table's record batches in order. RecordBatch is valid
// until the next call of Next.
type recordReader interface {
	Next() bool
	RecordBatch() arrow.RecordBatch
	Err() error
}

// table is an input file of record batches that can be read more than once,
// giving the same batches in the same order each time: the export reads the
// entity table once to partition its rows, and once more to write them out
// with their features.
type table struct {
	path   string
	format Format
	schema *arrow.Schema
	rows   int64 // -1 when not known before reading
	size   int64 // bytes of the file
	mem    memory.Allocator
	// csvSchema is the schema a CSV file is read with: column types decided
	// by a first pass over the whole file (see inferCSV).
	csvSchema *arrow.Schema
	// unview is set when the file has view columns, read in the types of
	// schema (see withoutViews).
	unview bool

	// recs are the batches of the first read, kept for the second (the
	// output) unless dropped: they did not all fit, or were released.
	recs     []arrow.RecordBatch
	recBytes int64
	dropped  bool
}

// batchRows is how many rows the readers put in one batch.
const batchRows = 64 << 10

// openTable opens a table file and reads its schema. For a CSV file, fixed
// sets the types of some columns (the join keys), and empty the types of
// columns without values (the timestamp); the others are inferred.
func openTable(path string, format Format, fixed, empty map[string]arrow.DataType, mem memory.Allocator) (*table, error) {
	f, err := formatOf(path, format, FormatParquet, FormatCSV, FormatArrow)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s: is a directory, not a table file", path)
	}
	t := &table{path: path, format: f, rows: -1, size: st.Size(), mem: mem}
	switch f {
	case FormatCSV:
		schema, rows, err := inferCSV(path, fixed, empty)
		if err != nil {
			return nil, err
		}
		t.schema, t.csvSchema, t.rows = schema, schema, rows
	default:
		r, closeFn, err := t.openFile(context.Background())
		if err != nil {
			return nil, err
		}
		defer closeFn()
		t.schema = r.(interface{ Schema() *arrow.Schema }).Schema()
		if pr, ok := r.(*parquetReader); ok {
			t.rows = pr.rows
		}
		t.schema, t.unview = withoutViews(t.schema)
	}
	return t, nil
}

// open starts reading the table from its first row, in t.schema; closeFn
// releases the reader and the file.
func (t *table) open(ctx context.Context) (rr recordReader, closeFn func(), err error) {
	r, closeFile, err := t.openFile(ctx)
	if err != nil || !t.unview {
		return r, closeFile, err
	}
	ur := &unviewReader{recordReader: r, schema: t.schema, mem: t.mem}
	return ur, func() { ur.release(); closeFile() }, nil
}

// openFile starts reading the file from its first row, in the file's
// schema.
func (t *table) openFile(ctx context.Context) (rr recordReader, closeFn func(), err error) {
	switch t.format {
	case FormatParquet:
		return t.openParquet(ctx)
	case FormatCSV:
		fh, err := os.Open(t.path)
		if err != nil {
			return nil, nil, err
		}
		br, err := csvInput(fh)
		if err != nil {
			fh.Close()
			return nil, nil, fmt.Errorf("%s: %w", t.path, err)
		}
		rd := csv.NewReader(br, t.csvSchema, csv.WithHeader(true),
			csv.WithNullReader(true, ""), csv.WithChunk(batchRows), csv.WithAllocator(t.mem))
		return &csvReader{Reader: rd, path: t.path}, func() { rd.Release(); fh.Close() }, nil
	}
	fh, err := os.Open(t.path)
	if err != nil {
		return nil, nil, err
	}
	if err := checkIPC(fh); err != nil {
		fh.Close()
		return nil, nil, fmt.Errorf("%s: %w", t.path, err)
	}
	magic := make([]byte, 6)
	if _, err := io.ReadFull(fh, magic); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		fh.Close()
		return nil, nil, err
	}
	if bytes.Equal(magic, []byte("ARROW1")) {
		fr, err := offline.NewIPCFileReader(fh, t.mem)
		if err != nil {
			fh.Close()
			return nil, nil, fmt.Errorf("%s: read arrow file: %w", t.path, err)
		}
		return &validReader{recordReader: &ipcFileReader{r: fr}, path: t.path}, func() { fr.Close(); fh.Close() }, nil
	}
	if _, err := fh.Seek(0, io.SeekStart); err != nil {
		fh.Close()
		return nil, nil, err
	}
	sr, err := ipc.NewReader(bufio.NewReaderSize(fh, 1<<20), ipc.WithAllocator(t.mem))
	if err != nil {
		fh.Close()
		return nil, nil, fmt.Errorf("%s: read arrow stream: %w", t.path, err)
	}
	return &validReader{recordReader: sr, path: t.path}, func() { sr.Release(); fh.Close() }, nil
}

// checkIPC checks the metadata of an Arrow IPC file or stream
// (offline.CheckIPCFile): the entity table comes from outside.
func checkIPC(fh *os.File) error {
	st, err := fh.Stat()
	if err != nil {
		return err
	}
	return offline.CheckIPCFile(fh, st.Size(), true)
}

// validReader checks each batch of an Arrow IPC file or stream in full
// (offsets, sizes, UTF-8, dictionary indices, nested children) before
// anything reads its values. The IPC readers check the buffers' sizes, not
// what the offsets in them point to: a malformed batch would otherwise
// panic where its values are read, crashing the process, which for an
// export over Arrow Flight is the server with its online lookups.
type validReader struct {
	recordReader
	path  string
	batch int
	err   error
}

func (r *validReader) Schema() *arrow.Schema {
	return r.recordReader.(interface{ Schema() *arrow.Schema }).Schema()
}

func (r *validReader) Next() bool {
	if r.err != nil || !r.recordReader.Next() {
		return false
	}
	r.batch++
	if err := validateBatch(r.RecordBatch()); err != nil {
		r.err = fmt.Errorf("%s: record batch %d is malformed: %w", r.path, r.batch, err)
		return false
	}
	return true
}

func (r *validReader) Err() error {
	if r.err != nil {
		return r.err
	}
	return r.recordReader.Err()
}

// validateBatch checks every column of rec in full. arrow-go's check of a
// string column can itself panic on some malformed offsets (v18.8.0 slices
// a value before it has seen that the offsets decrease further on), so a
// panic is taken for what it is: the batch is malformed.
func validateBatch(rec arrow.RecordBatch) error {
	for i, col := range rec.Columns() {
		if err := validateArray(col); err != nil {
			return fmt.Errorf("column %q: %w", rec.Schema().Field(i).Name, err)
		}
	}
	return nil
}

func validateArray(a arrow.Array) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return array.ValidateFull(a)
}

// openParquet starts reading a Parquet file. Column chunks are read
// through a buffer (parquet.ReaderProperties.BufferedStreamEnabled), not
// whole into a slice of the size the footer claims, which a damaged footer
// could make any size, and arrow-go's panics on malformed files are errors.
func (t *table) openParquet(ctx context.Context) (rr recordReader, closeFn func(), err error) {
	props := parquet.NewReaderProperties(t.mem)
	props.BufferedStreamEnabled = true
	props.BufferSize = parquetBufferBytes
	var pf *file.Reader
	defer func() {
		if p := recover(); p != nil {
			if pf != nil {
				pf.Close()
			}
			rr, closeFn, err = nil, nil, malformedParquet(t.path, p)
		}
	}()
	pf, err = file.OpenParquetFile(t.path, false, file.WithReadProps(props))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: open parquet: %w", t.path, err)
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: batchRows}, t.mem)
	if err != nil {
		pf.Close()
		return nil, nil, fmt.Errorf("%s: read parquet: %w", t.path, err)
	}
	rd, err := fr.GetRecordReader(ctx, nil, nil)
	if err != nil {
		pf.Close()
		return nil, nil, fmt.Errorf("%s: read parquet: %w", t.path, err)
	}
	pr := &parquetReader{RecordReader: rd, rows: pf.NumRows(), path: t.path}
	return pr, func() { rd.Release(); pf.Close() }, nil
}

// parquetBufferBytes is the buffer through which a Parquet column chunk is
// read: its pages are read from it as they are decoded.
const parquetBufferBytes = 1 << 20

// malformedParquet is the error of a panic p of arrow-go's Parquet reader.
func malformedParquet(path string, p any) error {
	return fmt.Errorf("%s: read parquet: malformed file: %v", path, p)
}

type parquetReader struct {
	pqarrow.RecordReader
	rows int64
	path string
	err  error // a panic of Next
}

// Next is the reader's Next, whose panics on malformed pages are errors
// (Err).
func (r *parquetReader) Next() (ok bool) {
	if r.err != nil {
		return false
	}
	defer func() {
		if p := recover(); p != nil {
			r.err, ok = malformedParquet(r.path, p), false
		}
	}()
	return r.RecordReader.Next()
}

// Err names the file, and says what to do about INT96 times (Spark's
// legacy timestamps) that arrow-go cannot read: it reads them as
// nanoseconds, which reach only the years 1677 to 2262.
func (r *parquetReader) Err() error {
	if r.err != nil {
		return r.err
	}
	err := r.RecordReader.Err()
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	if strings.Contains(err.Error(), "INT96") {
		return fmt.Errorf("%s: read parquet: %w; an INT96 column (Spark's default for timestamps) holds only the years 1677 to 2262 here: write the column as a Parquet TIMESTAMP (in Spark, spark.sql.parquet.outputTimestampType=TIMESTAMP_MICROS)", r.path, err)
	}
	return fmt.Errorf("%s: read parquet: %w", r.path, err)
}

// csvReader names the file in parse errors.
type csvReader struct {
	*csv.Reader
	path string
}

func (r *csvReader) Err() error {
	if err := r.Reader.Err(); err != nil {
		return fmt.Errorf("%s: %w", r.path, err)
	}
	return nil
}

// ipcFileReader reads the batches of an Arrow IPC file in order.
type ipcFileReader struct {
	r   *ipc.FileReader
	i   int
	cur arrow.RecordBatch
	err error
}

func (r *ipcFileReader) Schema() *arrow.Schema { return r.r.Schema() }

func (r *ipcFileReader) Next() bool {
	if r.cur != nil {
		r.cur.Release()
		r.cur = nil
	}
	if r.err != nil || r.i >= r.r.NumRecords() {
		return false
	}
	rec, err := r.r.RecordBatchAt(r.i)
	if err != nil {
		r.err = err
		return false
	}
	r.cur = rec
	r.i++
	return true
}

func (r *ipcFileReader) RecordBatch() arrow.RecordBatch { return r.cur }

func (r *ipcFileReader) Err() error { return r.err }

// readAll calls fn with each batch of a reader, then returns the reader's
// error.
func readAll(ctx context.Context, r recordReader, fn func(arrow.RecordBatch) error) error {
	for r.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(r.RecordBatch()); err != nil {
			return err
		}
	}
	if err := r.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// keep keeps a batch of the first read of the table for the second, while
// the table's batches fit in the spill memory; once one does not, none
// are kept and the table is read again.
func (t *table) keep(rec arrow.RecordBatch, sm *spillMemory) {
	if t.dropped {
		return
	}
	size := BatchBytes(rec)
	if !sm.take(size) {
		t.dropKept(sm)
		return
	}
	rec.Retain()
	t.recs = append(t.recs, rec)
	t.recBytes += size
}

// dropKept releases the batches kept.
func (t *table) dropKept(sm *spillMemory) {
	for _, r := range t.recs {
		r.Release()
	}
	sm.give(t.recBytes)
	t.recs, t.recBytes, t.dropped = nil, 0, true
}

// ensure the readers satisfy the interface.
var (
	_ recordReader = (*parquetReader)(nil)
	_ recordReader = (*csvReader)(nil)
	_ recordReader = (*ipcFileReader)(nil)
	_ recordReader = (*unviewReader)(nil)
	_ recordReader = (*ipc.Reader)(nil)
	_ recordReader = (array.RecordReader)(nil)
)
