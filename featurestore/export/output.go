package export

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
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
	return createSink(x.opts.Out, x.opts.OutFormat, schema, x.mem)
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
	ipcw      *ipc.FileWriter
	pqw       *pqarrow.FileWriter
	done      bool
}

func createSink(path string, format Format, schema *arrow.Schema, mem memory.Allocator) (*sink, error) {
	f, err := formatOf(path, format, FormatParquet, FormatArrow)
	if err != nil {
		return nil, err
	}
	fh, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create output: %w", err)
	}
	s := &sink{path: path, tmp: fh.Name(), fh: fh, bw: bufio.NewWriterSize(fh, 1<<20)}
	if err := fh.Chmod(0o644); err != nil { // CreateTemp's 0600 suits no output file
		s.abort()
		return nil, fmt.Errorf("create output: %w", err)
	}
	switch f {
	case FormatParquet:
		props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Snappy),
			parquet.WithMaxRowGroupLength(parquetRowGroup), parquet.WithAllocator(mem))
		s.pqw, err = pqarrow.NewFileWriter(schema, s.bw, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema(), pqarrow.WithAllocator(mem)))
	default:
		s.ipcw, err = ipc.NewFileWriter(s.bw, ipc.WithSchema(schema), ipc.WithAllocator(mem))
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
		err = s.pqw.WriteBuffered(rec)
	} else {
		err = s.ipcw.Write(rec)
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
