package offline

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	flatbuffers "github.com/google/flatbuffers/go"
)

// logFileBytes returns an Arrow IPC file of two batches in the log's
// version, written with the options opts.
func logFileBytes(t testing.TB, opts ...ipc.Option) []byte {
	t.Helper()
	md := arrow.NewMetadata([]string{MetaLogVersion}, []string{LogVersion})
	schema := arrow.NewSchema([]arrow.Field{{Name: "k", Type: arrow.BinaryTypes.String}, {Name: "x", Type: arrow.PrimitiveTypes.Int64}}, &md)
	var buf bytes.Buffer
	w, err := ipc.NewFileWriter(&buf, append([]ipc.Option{ipc.WithSchema(schema)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		b.Field(0).(*array.StringBuilder).AppendValues([]string{"a", "b"}, nil)
		b.Field(1).(*array.Int64Builder).AppendValues([]int64{int64(i), 2}, nil)
		rec := b.NewRecordBatch()
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
		b.Release()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fileFooter returns the footer of an Arrow IPC file as a table whose
// bytes are the file's own: writing them changes the file.
func fileFooter(file []byte) flatbuffers.Table {
	n := int(binary.LittleEndian.Uint32(file[len(file)-10:]))
	footer := file[len(file)-10-n : len(file)-10]
	return flatbuffers.Table{Bytes: footer, Pos: flatbuffers.GetUOffsetT(footer)}
}

// firstBatch returns the first record batch block's offset in the footer f
// of file, and the metadata of its message (the file's own bytes) with the
// offset of the message's body.
func firstBatch(t *testing.T, file []byte, f flatbuffers.Table) (block flatbuffers.UOffsetT, meta []byte, body int64) {
	t.Helper()
	block = f.Vector(flatbuffers.UOffsetT(f.Offset(10)))
	at := int64(binary.LittleEndian.Uint64(f.Bytes[block:]))
	meta, body, err := readIPCMeta(bytes.NewReader(file), at, int64(len(file)))
	if err != nil || meta == nil {
		t.Fatalf("first record batch: %v", err)
	}
	return block, file[body-int64(len(meta)) : body], body
}

// withHugeFields returns file with the length of its footer schema's fields
// vector made 2^31-1: arrow-go would make a slice of that many fields.
func withHugeFields(t *testing.T, file []byte) []byte {
	t.Helper()
	file = bytes.Clone(file)
	f := fileFooter(file)
	s := flatbuffers.Table{Bytes: f.Bytes, Pos: f.Indirect(flatbuffers.UOffsetT(f.Offset(6)) + f.Pos)}
	fields := s.Vector(flatbuffers.UOffsetT(s.Offset(6))) - 4
	binary.LittleEndian.PutUint32(f.Bytes[fields:], math.MaxInt32)
	return file
}

// TestDamagedLogFile opens a log file whose footer claims 2^31-1 fields,
// through a mapping and through storage: an error wrapping ErrMalformedIPC,
// where arrow-go would have tried to allocate about 200 GB (a fatal error
// of the process: ingest, an export, or the server running a Flight
// export). The undamaged file opens both ways.
func TestDamagedLogFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	good := logFileBytes(t)
	for name, data := range map[string][]byte{"good.arrow": good, "bad.arrow": withHugeFields(t, good)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		for how, open := range map[string]func() (*File, error){
			"mapped":  func() (*File, error) { return openMapped(ctx, st, name) },
			"storage": func() (*File, error) { return OpenFile(ctx, st, name) },
		} {
			f, err := open()
			switch {
			case name == "good.arrow" && err != nil:
				t.Errorf("%s %s: %v", how, name, err)
			case name == "good.arrow":
				if f.NumBatches() != 2 {
					t.Errorf("%s %s: %d batches", how, name, f.NumBatches())
				}
				f.Close()
			case !errors.Is(err, ErrMalformedIPC):
				t.Errorf("%s %s: %v, want an error wrapping ErrMalformedIPC", how, name, err)
			}
		}
	}
}

// TestCheckIPCFileBlocks checks that a block of the footer pointing beyond
// the file is refused without reading its messages, and that messages are
// read and checked when asked to.
func TestCheckIPCFileBlocks(t *testing.T) {
	good := logFileBytes(t)
	r := func(b []byte) *bytes.Reader { return bytes.NewReader(b) }
	for _, messages := range []bool{false, true} {
		if err := CheckIPCFile(r(good), int64(len(good)), messages); err != nil {
			t.Fatalf("good file, messages %v: %v", messages, err)
		}
	}
	// The first record batch block's body length, in the footer.
	bad := bytes.Clone(good)
	f := fileFooter(bad)
	block, _, _ := firstBatch(t, bad, f)
	binary.LittleEndian.PutUint64(f.Bytes[block+16:], 1<<40)
	if err := CheckIPCFile(r(bad), int64(len(bad)), false); !errors.Is(err, ErrMalformedIPC) {
		t.Errorf("a block of 1 TiB: %v", err)
	}
	// The first record batch's message, whose body claims more than its
	// block holds.
	bad = bytes.Clone(good)
	_, meta, _ := firstBatch(t, bad, fileFooter(bad))
	m := flatbuffers.Table{Bytes: meta, Pos: flatbuffers.GetUOffsetT(meta)}
	if m.Offset(10) == 0 {
		t.Fatal("the record batch's message has no body length")
	}
	binary.LittleEndian.PutUint64(meta[m.Pos+flatbuffers.UOffsetT(m.Offset(10)):], 1<<40)
	if err := CheckIPCFile(r(bad), int64(len(bad)), false); err != nil {
		t.Errorf("messages not asked for: %v", err)
	}
	if err := CheckIPCFile(r(bad), int64(len(bad)), true); !errors.Is(err, ErrMalformedIPC) {
		t.Errorf("a message body of 1 TiB: %v", err)
	}
}

// FuzzCheckIPC reads arbitrary bytes as an Arrow IPC stream or file the way
// the export does: what CheckIPCFile accepts, arrow-go then reads without a
// fatal error (an allocation of what the bytes claim, an endless
// recursion); its panics, which its readers recover or we do, are fine.
func FuzzCheckIPC(f *testing.F) {
	file := logFileBytes(f)
	f.Add(file)
	var stream bytes.Buffer
	md := arrow.NewMetadata([]string{"k"}, []string{"v"})
	schema := arrow.NewSchema([]arrow.Field{{Name: "s", Type: arrow.BinaryTypes.String},
		{Name: "l", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)}, {Name: "d", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}}}, &md)
	w := ipc.NewWriter(&stream, ipc.WithSchema(schema))
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	b.Field(0).(*array.StringBuilder).AppendValues([]string{"a", "bc"}, nil)
	lb := b.Field(1).(*array.ListBuilder)
	lb.Append(true)
	lb.ValueBuilder().(*array.Int32Builder).AppendValues([]int32{1, 2}, nil)
	lb.AppendNull()
	db := b.Field(2).(*array.BinaryDictionaryBuilder)
	db.AppendString("x")
	db.AppendString("y")
	rec := b.NewRecordBatch()
	if err := w.Write(rec); err != nil {
		f.Fatal(err)
	}
	w.Close()
	f.Add(stream.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		if CheckIPCFile(bytes.NewReader(data), int64(len(data)), true) != nil {
			return
		}
		func() {
			defer func() { recover() }()
			if len(data) >= 6 && string(data[:6]) == "ARROW1" {
				fr, err := NewIPCFileReader(bytes.NewReader(data), memory.DefaultAllocator)
				if err != nil {
					return
				}
				defer fr.Close()
				for i := range fr.NumRecords() {
					if rec, err := fr.RecordBatchAt(i); err == nil {
						rec.Release()
					}
				}
				return
			}
			r, err := ipc.NewReader(bytes.NewReader(data))
			if err != nil {
				return
			}
			defer r.Release()
			for r.Next() {
			}
		}()
	})
}

// withHugeBuffer returns an LZ4-compressed log file whose first record
// batch's last buffer claims to decompress to 1 TiB (in the body: the
// metadata and the footer are intact); arrow-go would allocate that much.
func withHugeBuffer(t *testing.T) []byte {
	t.Helper()
	file := logFileBytes(t, ipc.WithLZ4())
	_, meta, body := firstBatch(t, file, fileFooter(file))
	m := flatbuffers.Table{Bytes: meta, Pos: flatbuffers.GetUOffsetT(meta)}
	h := flatbuffers.Table{Bytes: meta, Pos: m.Indirect(flatbuffers.UOffsetT(m.Offset(8)) + m.Pos)}
	buffers, nb := h.Vector(flatbuffers.UOffsetT(h.Offset(8))), h.VectorLen(flatbuffers.UOffsetT(h.Offset(8)))
	last := meta[int(buffers)+16*(nb-1):]
	off, length := binary.LittleEndian.Uint64(last), binary.LittleEndian.Uint64(last[8:])
	if length < 8 {
		t.Fatalf("last buffer of %d bytes", length)
	}
	binary.LittleEndian.PutUint64(file[body+int64(off):], 1<<40)
	return file
}

// TestDamagedLogBatch reads a log file whose first record batch claims a
// buffer of 1 TiB: through a mapping, every message is checked when the
// file is opened; through storage, when the batch is read. Either way an
// error wrapping ErrMalformedIPC, not a fatal "out of memory", and the
// other batch reads.
func TestDamagedLogBatch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	bad := withHugeBuffer(t)
	if err := CheckIPCFile(bytes.NewReader(bad), int64(len(bad)), true); !errors.Is(err, ErrMalformedIPC) {
		t.Fatalf("CheckIPCFile: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.arrow"), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := openMapped(ctx, st, "bad.arrow"); !errors.Is(err, ErrMalformedIPC) {
		t.Errorf("mapped: %v, want an error wrapping ErrMalformedIPC", err)
	}
	f, err := OpenFile(ctx, st, "bad.arrow")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if rec, err := f.Batch(0); !errors.Is(err, ErrMalformedIPC) {
		t.Errorf("storage: batch 0: %v, want an error wrapping ErrMalformedIPC", err)
		if err == nil {
			rec.Release()
		}
	}
	rec, err := f.Batch(1)
	if err != nil {
		t.Fatalf("storage: batch 1: %v", err)
	}
	if rec.NumRows() != 2 || rec.Column(1).(*array.Int64).Value(0) != 1 {
		t.Errorf("storage: batch 1: %v", rec)
	}
	rec.Release()
}
