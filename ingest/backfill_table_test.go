package ingest

import (
	"fmt"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// TestTableDecoderTypes decodes columns of the other types a file may
// have: dictionary-encoded text, a timestamp in microseconds, a double
// field from an int32 column, large strings, and text events times.
func TestTableDecoderTypes(t *testing.T) {
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": fmt.Appendf(nil, e2eDefs, "txns")})
	if err != nil {
		t.Fatal(err)
	}
	src := r.Source("txns")
	l, err := NewLayout(r, src)
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.DefaultAllocator
	dictType := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}
	for _, tsType := range []arrow.DataType{&arrow.TimestampType{Unit: arrow.Microsecond}, arrow.BinaryTypes.String} {
		schema := arrow.NewSchema([]arrow.Field{
			{Name: "card", Type: dictType, Nullable: true},
			{Name: "ts", Type: tsType, Nullable: true},
			{Name: "amount", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
			{Name: "merchant", Type: arrow.BinaryTypes.LargeString, Nullable: true},
		}, nil)
		b := array.NewRecordBuilder(mem, schema)
		db := b.Field(0).(*array.BinaryDictionaryBuilder)
		for _, c := range []string{"c1", "c2", "c1"} {
			if err := db.AppendString(c); err != nil {
				t.Fatal(err)
			}
		}
		for i, us := range []int64{1_700_000_000_123_456, -1_500, 0} {
			switch tb := b.Field(1).(type) {
			case *array.TimestampBuilder:
				tb.Append(arrow.Timestamp(us))
			case *array.StringBuilder:
				tb.Append([]string{fmt.Sprint(us / 1000), "-1", "zero"}[i])
			}
		}
		b.Field(2).(*array.Int32Builder).AppendValues([]int32{7, -2, 0}, nil)
		b.Field(3).(*array.LargeStringBuilder).AppendValues([]string{"m1", "m2", "m3"}, nil)
		rec := b.NewRecordBatch()
		b.Release()
		d, err := newTableDecoder("f", schema, src, l)
		if err != nil {
			t.Fatalf("%s: %v", tsType, err)
		}
		d.bind(rec)
		want := []string{`1700000000123 ["c1"] [7 "m1"]`, `-2 ["c2"] [-2 "m2"]`, `0 ["c1"] [0 "m3"]`}
		if tsType.ID() == arrow.STRING {
			// Text in the source's encoding, epoch_ms: rounded as a JSON
			// number would be; "zero" is rejected.
			want = []string{`1700000000123 ["c1"] [7 "m1"]`, `-1 ["c2"] [-2 "m2"]`, `bad_time: column "ts": invalid number zero`}
		}
		for i, w := range want {
			var ev Event
			got := ""
			if de := d.decode(i, &ev); de != nil {
				got = de.Error()
			} else {
				got = fmt.Sprintf("%d %v %v", ev.Time, ev.Keys, ev.Fields)
				if k := ev.Fields[l.FieldIndex("amount")].Kind(); k != featurestore.KindDouble {
					t.Errorf("row %d: amount of kind %s, want double", i, k)
				}
			}
			if got != w {
				t.Errorf("%s row %d: got %s, want %s", tsType, i, got, w)
			}
		}
		rec.Release()
	}
}
