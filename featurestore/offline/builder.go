package offline

import (
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

// fieldBuilder appends one field column; exactly one builder is set.
type fieldBuilder struct {
	kind featurestore.Kind
	src  int // index in window.Event.Fields
	str  *array.StringBuilder
	i64  *array.Int64Builder
	f64  *array.Float64Builder
	bl   *array.BooleanBuilder
}

// fileBuilder collects the rows of one future file: one view, one
// partition, one date. Full record batches are cut every batchRows rows.
type fileBuilder struct {
	s       *Schema
	day     int64
	rb      *array.RecordBuilder
	evt     *array.TimestampBuilder
	ing     *array.TimestampBuilder
	topic   *array.StringBuilder
	part    *array.Int32Builder
	off     *array.Int64Builder
	keyStr  []*array.StringBuilder // per key column; nil for int64 keys
	keyInt  []*array.Int64Builder  // per key column; nil for string keys
	fields  []fieldBuilder
	batches []arrow.RecordBatch
	cur     int // rows in rb

	rows        int64
	first, last int64 // offsets
	minT, maxT  int64 // event times
	bytes       int64 // estimated memory
}

func newFileBuilder(mem memory.Allocator, s *Schema, day int64) *fileBuilder {
	rb := array.NewRecordBuilder(mem, s.arrow)
	b := &fileBuilder{s: s, day: day, rb: rb,
		evt:   rb.Field(0).(*array.TimestampBuilder),
		ing:   rb.Field(1).(*array.TimestampBuilder),
		topic: rb.Field(2).(*array.StringBuilder),
		part:  rb.Field(3).(*array.Int32Builder),
		off:   rb.Field(4).(*array.Int64Builder),
	}
	for i := range s.Keys {
		fb := rb.Field(fixedColumns + i)
		sb, _ := fb.(*array.StringBuilder)
		ib, _ := fb.(*array.Int64Builder)
		b.keyStr = append(b.keyStr, sb)
		b.keyInt = append(b.keyInt, ib)
	}
	for i, f := range s.Fields {
		fb := rb.Field(fixedColumns + len(s.Keys) + i)
		c := fieldBuilder{kind: f.Kind, src: f.Index}
		c.str, _ = fb.(*array.StringBuilder)
		c.i64, _ = fb.(*array.Int64Builder)
		c.f64, _ = fb.(*array.Float64Builder)
		c.bl, _ = fb.(*array.BooleanBuilder)
		b.fields = append(b.fields, c)
	}
	return b
}

// checkRow reports whether an event and its key parts fit the schema, so
// that a row is appended whole or not at all.
func checkRow(s *Schema, parts []featurestore.KeyPart, ev *window.Event) error {
	if len(parts) != len(s.Keys) {
		return fmt.Errorf("entity key has %d parts, feature view %q has %d join keys", len(parts), s.View, len(s.Keys))
	}
	for i, k := range s.Keys {
		if parts[i].Kind != k.Kind {
			return fmt.Errorf("join key %q of feature view %q is %s, got %s", k.Name, s.View, k.Kind, parts[i].Kind)
		}
	}
	for _, f := range s.Fields {
		if v := ev.Field(f.Index); !v.IsNull() && v.Kind() != f.Kind {
			return fmt.Errorf("event at offset %d: field %q of feature view %q is %s, got %s", ev.Offset, f.Name, s.View, f.Kind, v.Kind())
		}
	}
	return nil
}

// append adds one row; checkRow must have passed. It returns the row's
// estimated size.
func (b *fileBuilder) append(ev *window.Event, parts []featurestore.KeyPart, ingest int64, topic string, partition int32, batchRows int) int64 {
	size := int64(8 + 8 + 4 + 4 + 8 + len(topic))
	b.evt.Append(arrow.Timestamp(ev.Time))
	b.ing.Append(arrow.Timestamp(ingest))
	b.topic.Append(topic)
	b.part.Append(partition)
	b.off.Append(ev.Offset)
	for i, p := range parts {
		if sb := b.keyStr[i]; sb != nil {
			sb.Append(p.Str)
			size += 4 + int64(len(p.Str))
		} else {
			b.keyInt[i].Append(p.Int)
			size += 8
		}
	}
	for i := range b.fields {
		c := &b.fields[i]
		v := ev.Field(c.src)
		null := v.IsNull()
		switch c.kind {
		case featurestore.KindString:
			if null {
				c.str.AppendNull()
			} else {
				s := v.Str()
				c.str.Append(s)
				size += int64(len(s))
			}
			size += 4
		case featurestore.KindInt64:
			if null {
				c.i64.AppendNull()
			} else {
				c.i64.Append(v.Int64())
			}
			size += 8
		case featurestore.KindDouble:
			if null {
				c.f64.AppendNull()
			} else {
				c.f64.Append(v.Double())
			}
			size += 8
		case featurestore.KindBool:
			if null {
				c.bl.AppendNull()
			} else {
				c.bl.Append(v.Bool())
			}
			size++
		}
	}
	if b.rows == 0 {
		b.first, b.last, b.minT, b.maxT = ev.Offset, ev.Offset, ev.Time, ev.Time
	} else {
		b.first, b.last = min(b.first, ev.Offset), max(b.last, ev.Offset)
		b.minT, b.maxT = min(b.minT, ev.Time), max(b.maxT, ev.Time)
	}
	b.rows++
	b.bytes += size
	if b.cur++; b.cur >= batchRows {
		b.batches = append(b.batches, b.rb.NewRecordBatch())
		b.cur = 0
	}
	return size
}

// seal cuts the last record batch.
func (b *fileBuilder) seal() {
	if b.cur > 0 {
		b.batches = append(b.batches, b.rb.NewRecordBatch())
		b.cur = 0
	}
}

// path returns the file's path relative to the view's directory.
func (b *fileBuilder) path(topic string, partition int32) string {
	return filePath(b.day, topic, partition, b.first, b.last)
}

// release frees the builder's memory.
func (b *fileBuilder) release() {
	for _, r := range b.batches {
		r.Release()
	}
	b.batches = nil
	b.rb.Release()
}

// writeIPC writes record batches as an Arrow IPC file.
func writeIPC(w io.Writer, mem memory.Allocator, schema *arrow.Schema, batches []arrow.RecordBatch) error {
	fw, err := ipc.NewFileWriter(w, ipc.WithSchema(schema), ipc.WithAllocator(mem))
	if err != nil {
		return err
	}
	for _, r := range batches {
		if err := fw.Write(r); err != nil {
			fw.Close()
			return err
		}
	}
	return fw.Close()
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
