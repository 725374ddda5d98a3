package export

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestMalformedArrowInputs exports entity tables in Arrow IPC files and
// streams whose buffers have the right sizes, so that the IPC readers take
// them, but whose contents are malformed: string offsets that go back,
// which arrow-go's own check panics on; strings that are not UTF-8; a
// dictionary index beyond its dictionary; list offsets beyond the values.
// Each is an error naming the file, batch and column, never a panic (over
// Arrow Flight, a panic would be the server's crash).
func TestMalformedArrowInputs(t *testing.T) {
	r := testRegistry(t)
	dir := t.TempDir()
	ts := &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	times := func(n int) arrow.Array {
		b := array.NewTimestampBuilder(memory.DefaultAllocator, ts)
		defer b.Release()
		for range n {
			b.Append(arrow.Timestamp(t0))
		}
		return b.NewArray()
	}
	strs := func(offsets []int32, data string) arrow.Array {
		return array.MakeFromData(array.NewData(arrow.BinaryTypes.String, len(offsets)-1,
			[]*memory.Buffer{nil, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offsets)), memory.NewBufferBytes([]byte(data))}, nil, 0, 0))
	}
	good := strs([]int32{0, 1, 2}, "uv")
	dict := func() arrow.Array {
		idx := array.MakeFromData(array.NewData(arrow.PrimitiveTypes.Int32, 2,
			[]*memory.Buffer{nil, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes([]int32{1, 7}))}, nil, 0, 0))
		return array.NewDictionaryArray(&arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}, idx, good)
	}
	list := func() arrow.Array {
		child := array.MakeFromData(array.NewData(arrow.PrimitiveTypes.Int64, 1,
			[]*memory.Buffer{nil, memory.NewBufferBytes(arrow.Int64Traits.CastToBytes([]int64{5}))}, nil, 0, 0))
		return array.MakeFromData(array.NewData(arrow.ListOf(arrow.PrimitiveTypes.Int64), 2,
			[]*memory.Buffer{nil, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes([]int32{0, 1, 0}))}, []arrow.ArrayData{child.Data()}, 0, 0))
	}
	cases := []struct {
		name   string
		column string
		key    arrow.Array
		label  arrow.Array
	}{
		{"string offsets going back", "user_id", strs([]int32{0, 5, 3}, "abcde"), nil},
		{"string not UTF-8", "user_id", strs([]int32{0, 1, 2}, "u\xff"), nil},
		{"dictionary index beyond the dictionary", "user_id", dict(), nil},
		{"label string offsets going back", "label", good, strs([]int32{0, 2, 1}, "ab")},
		{"label list offsets going back", "label", good, list()},
	}
	for _, c := range cases {
		for _, stream := range []bool{false, true} {
			name := c.name + map[bool]string{false: " (file)", true: " (stream)"}[stream]
			t.Run(name, func(t *testing.T) {
				fields := []arrow.Field{{Name: "user_id", Type: c.key.DataType()}, {Name: "event_timestamp", Type: ts}}
				cols := []arrow.Array{c.key, times(2)}
				if c.label != nil {
					fields = append(fields, arrow.Field{Name: "label", Type: c.label.DataType()})
					cols = append(cols, c.label)
				}
				schema := arrow.NewSchema(fields, nil)
				rec := array.NewRecordBatch(schema, cols, 2)
				path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".arrow")
				if stream {
					testenv.WriteArrowStream(t, path, schema, rec)
				} else {
					testenv.WriteArrowFile(t, path, schema, rec)
				}
				out := filepath.Join(dir, "out.arrow")
				_, err := Run(context.Background(), Options{Registry: r, Log: &memLog{}, TempDir: dir, Entities: path, Out: out, Features: []string{"by_user:n_5m"}})
				want := filepath.Base(path) + `: record batch 1 is malformed: column "` + c.column + `": `
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("error %v, want one containing %q", err, want)
				}
				if _, err := os.Stat(out); err == nil {
					t.Errorf("a failed export left %s", out)
				}
			})
		}
	}
}

// panicLog is a log whose Scan panics.
type panicLog struct{}

func (panicLog) Scan(context.Context, string, int64, func(arrow.RecordBatch) error) error {
	panic("the log scan blew up")
}

// TestPanicIsAnError checks that a panic in an export's goroutines is its
// error, a *PanicError naming the panic and its place with the stack,
// rather than the end of the process (an export over Arrow Flight runs in
// the server).
func TestPanicIsAnError(t *testing.T) {
	dir := t.TempDir()
	entities := filepath.Join(dir, "rows.arrow")
	(&testTable{fields: []arrow.Field{{Name: "user_id", Type: arrow.BinaryTypes.String}, {Name: "event_timestamp", Type: arrow.FixedWidthTypes.Timestamp_ms}},
		rows: [][]any{{"u", int64(t0)}}}).writeArrow(t, entities, 1)
	out := filepath.Join(dir, "out.arrow")
	_, err := Run(context.Background(), Options{Registry: testRegistry(t), Log: panicLog{}, TempDir: dir, Entities: entities, Out: out, Features: []string{"by_user:n_5m"}})
	var pe *PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v, want a *PanicError", err)
	}
	for _, s := range []string{"export failed: panic (a bug; please report it): the log scan blew up at ", "export.panicLog.Scan (malformed_test.go:"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
	if !strings.Contains(string(pe.Stack), "malformed_test.go") {
		t.Errorf("stack lacks the panic's place:\n%s", pe.Stack)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a failed export left %s", out)
	}
}

// TestCorruptTableFiles flips each byte of a small Arrow IPC file, of a
// stream and of a Parquet file, in turn, and reads each result as an entity
// table: every one is read or refused with an error, none panics
// (arrow-go's readers panic on some malformed metadata and Parquet schemas).
func TestCorruptTableFiles(t *testing.T) {
	dir := t.TempDir()
	tt := &testTable{fields: []arrow.Field{{Name: "user_id", Type: arrow.BinaryTypes.String}, {Name: "event_timestamp", Type: arrow.FixedWidthTypes.Timestamp_ms},
		{Name: "label", Type: arrow.PrimitiveTypes.Float64, Nullable: true}},
		rows: [][]any{{"u", int64(t0), 1.5}, {"v", int64(t0), nil}, {"w", int64(t0 + 1), 2.5}}}
	file := filepath.Join(dir, "table.arrow")
	tt.writeArrow(t, file, 2)
	stream := filepath.Join(dir, "table.arrows")
	writeArrowStream(t, tt, stream)
	pq := filepath.Join(dir, "table.parquet")
	tt.writeParquet(t, pq)
	for _, path := range []string{stream, file, pq} {
		good, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		bad := filepath.Join(dir, "bad"+filepath.Ext(path))
		refused := 0
		for i := range good {
			for _, x := range []byte{0xff, 0x80, 0x01} {
				b := bytes.Clone(good)
				b[i] ^= x
				if err := os.WriteFile(bad, b, 0o644); err != nil {
					t.Fatal(err)
				}
				err := func() (err error) {
					defer func() {
						if r := recover(); r != nil {
							t.Errorf("%s with byte %d ^ %#x: panic: %v", filepath.Base(path), i, x, r)
						}
					}()
					tf, err := OpenTableFile(bad, "", nil, memory.DefaultAllocator)
					if err != nil {
						return err
					}
					return tf.Read(context.Background(), func(arrow.RecordBatch) error { return nil })
				}()
				if err != nil {
					refused++
				}
			}
		}
		t.Logf("%s: %d bytes, %d of %d variants refused", filepath.Base(path), len(good), refused, 3*len(good))
	}
}

// TestParquetHugeColumnChunk reads a Parquet entity table whose column
// chunks claim 40 GB each in the footer: arrow-go read a column chunk whole
// into a slice of the size claimed (a fatal "out of memory" of the export,
// or of a backfill). It is an error naming the file.
func TestParquetHugeColumnChunk(t *testing.T) {
	dir := t.TempDir()
	tt := &testTable{fields: []arrow.Field{{Name: "user_id", Type: arrow.BinaryTypes.String}, {Name: "event_timestamp", Type: arrow.FixedWidthTypes.Timestamp_ms}},
		rows: [][]any{{"u", int64(t0)}, {"v", int64(t0 + 1)}}}
	path := filepath.Join(dir, "table.parquet")
	tt.writeParquet(t, path)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int64
	for c := range pf.MetaData().Schema.NumColumns() {
		cc, err := pf.MetaData().RowGroup(0).ColumnChunk(c)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, cc.TotalCompressedSize())
	}
	pf.Close()
	// The footer is Thrift's compact encoding: an i64 is a zigzag varint,
	// and structs are not length-prefixed, so a longer varint fits.
	n := int(binary.LittleEndian.Uint32(good[len(good)-8:]))
	footer := good[len(good)-8-n : len(good)-8]
	huge := binary.AppendUvarint(nil, uint64(40<<30)<<1)
	replaced := 0
	for _, size := range slices.Compact(slices.Sorted(slices.Values(sizes))) {
		// Each i64 field following the field before it (header 0x16: field
		// delta 1, type i64) with the size: total_compressed_size, and
		// total_uncompressed_size, equal to it in a file without
		// compression.
		old := append([]byte{0x16}, binary.AppendUvarint(nil, uint64(size)<<1)...)
		for i := 0; i+len(old) <= len(footer); i++ {
			if bytes.Equal(footer[i:i+len(old)], old) {
				footer = slices.Concat(footer[:i+1], huge, footer[i+len(old):])
				replaced++
			}
		}
	}
	if replaced == 0 {
		t.Fatal("no column chunk size found in the footer")
	}
	bad := slices.Concat(good[:len(good)-8-n], footer, binary.LittleEndian.AppendUint32(nil, uint32(len(footer))), []byte("PAR1"))
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	tf, err := OpenTableFile(path, "", nil, memory.DefaultAllocator)
	var keys []string
	if err == nil {
		err = tf.Read(context.Background(), func(rec arrow.RecordBatch) error {
			for i := range int(rec.NumRows()) {
				keys = append(keys, rec.Column(0).(*array.String).Value(i))
			}
			return nil
		})
	}
	switch {
	case err != nil && !strings.Contains(err.Error(), path):
		t.Errorf("column chunks of 40 GB: %v, want an error naming the file", err)
	case err == nil && !slices.Equal(keys, []string{"u", "v"}):
		// The pages are intact: read through a buffer, they are read.
		t.Errorf("column chunks of 40 GB: read keys %q", keys)
	}
	t.Logf("%d sizes replaced: %v", replaced, err)
}
