package testenv

import (
	"os"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
)

// WriteArrowFile writes recs, of the given schema, as the Arrow IPC file
// path, one record batch each.
func WriteArrowFile(t testing.TB, path string, schema *arrow.Schema, recs ...arrow.RecordBatch) {
	t.Helper()
	writeArrow(t, path, recs, func(fh *os.File) (ipcWriter, error) { return ipc.NewFileWriter(fh, ipc.WithSchema(schema)) })
}

// WriteArrowStream writes recs, of the given schema, as an Arrow IPC
// stream to path, one record batch each.
func WriteArrowStream(t testing.TB, path string, schema *arrow.Schema, recs ...arrow.RecordBatch) {
	t.Helper()
	writeArrow(t, path, recs, func(fh *os.File) (ipcWriter, error) { return ipc.NewWriter(fh, ipc.WithSchema(schema)), nil })
}

type ipcWriter interface {
	Write(arrow.RecordBatch) error
	Close() error
}

func writeArrow(t testing.TB, path string, recs []arrow.RecordBatch, open func(*os.File) (ipcWriter, error)) {
	t.Helper()
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	w, err := open(fh)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
}
