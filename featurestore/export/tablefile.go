package export

import (
	"context"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// TableFile is a Parquet, CSV or Arrow IPC file read as Arrow record
// batches, with the readers the export uses for entity tables: other
// commands that take table files (featurestore backfill) read them the same
// way.
type TableFile struct{ t *table }

// OpenTableFile opens a table file and reads its schema. format may be
// FormatAuto (from the extension). For CSV, the columns of fixed are read
// with those types and the others are inferred from all their values; an
// empty CSV field is null.
func OpenTableFile(path string, format Format, fixed map[string]arrow.DataType, mem memory.Allocator) (*TableFile, error) {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	t, err := openTable(path, format, fixed, nil, mem)
	if err != nil {
		return nil, err
	}
	return &TableFile{t: t}, nil
}

// Schema returns the file's schema.
func (f *TableFile) Schema() *arrow.Schema { return f.t.schema }

// Format returns the file's format.
func (f *TableFile) Format() Format { return f.t.format }

// Rows returns the number of rows, or -1 when it is not known before
// reading (Arrow IPC).
func (f *TableFile) Rows() int64 { return f.t.rows }

// Size returns the file's size in bytes.
func (f *TableFile) Size() int64 { return f.t.size }

// Read calls fn with each record batch of the file, in order; a batch is
// valid only during its call. Each call of Read reads the file from its
// first row, giving the same batches.
func (f *TableFile) Read(ctx context.Context, fn func(arrow.RecordBatch) error) error {
	r, closeFn, err := f.t.open(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	return readAll(ctx, r, fn)
}
