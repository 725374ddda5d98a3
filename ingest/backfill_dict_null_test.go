package ingest

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore/export"
	"github.com/featurestore/featurestore/featurestore/testenv"
)

// In the rows of dictNullCols, dictNullValue is a row whose (valid) index
// points to a null dictionary value, dictNullIndex a row whose index is
// null.
const (
	dictNullValue = "\x00value"
	dictNullIndex = "\x00index"
)

// dictNullCols are the columns of the test file, all of text: the join key
// (card), the event time (ts, epoch_ms text), a double field (amount) and
// a string field (merchant). Each has nulls of both kinds, in other rows.
var dictNullCols = []struct {
	name string
	rows []string
}{
	{"card", []string{"c1", dictNullValue, "c2", dictNullIndex, "c1", "c2", "c1", "c2"}},
	{"ts", []string{"1000", "2000", dictNullValue, "4000", "5000", dictNullIndex, "7000", "8000"}},
	{"amount", []string{"1.5", "2", "3", "4", dictNullValue, "6", dictNullIndex, "8"}},
	{"merchant", []string{"m1", "m2", "m3", "m4", "m5", "m6", dictNullValue, dictNullIndex}},
}

// dictNullColumn returns rows as a dictionary<int8, utf8> array whose
// dictionary holds a null (as pyarrow's dictionary_encode with
// null_encoding="encode" makes), or, plain, as a utf8 array with nulls.
func dictNullColumn(t *testing.T, mem memory.Allocator, rows []string, dict bool) arrow.Array {
	t.Helper()
	if !dict {
		b := array.NewStringBuilder(mem)
		defer b.Release()
		for _, r := range rows {
			if r == dictNullValue || r == dictNullIndex {
				b.AppendNull()
			} else {
				b.Append(r)
			}
		}
		return b.NewArray()
	}
	vb := array.NewStringBuilder(mem)
	defer vb.Release()
	ib := array.NewInt8Builder(mem)
	defer ib.Release()
	at := map[string]int8{}
	for _, r := range rows {
		if r == dictNullIndex {
			ib.AppendNull()
			continue
		}
		j, ok := at[r]
		if !ok {
			j = int8(vb.Len())
			at[r] = j
			if r == dictNullValue {
				vb.AppendNull()
			} else {
				vb.Append(r)
			}
		}
		ib.Append(j)
	}
	values, indices := vb.NewArray(), ib.NewArray()
	defer values.Release()
	defer indices.Release()
	if values.NullN() != 1 {
		t.Fatalf("dictionary %v: want one null value", values)
	}
	dt := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}
	return array.NewDictionaryArray(dt, indices, values)
}

// writeDictNullFile writes the rows of dictNullCols to an Arrow IPC file in
// dir, its columns dictionary-encoded or plain.
func writeDictNullFile(t *testing.T, dir string, dict bool) string {
	t.Helper()
	mem := memory.DefaultAllocator
	var fields []arrow.Field
	var cols []arrow.Array
	for _, c := range dictNullCols {
		a := dictNullColumn(t, mem, c.rows, dict)
		defer a.Release()
		fields = append(fields, arrow.Field{Name: c.name, Type: a.DataType(), Nullable: true})
		cols = append(cols, a)
	}
	schema := arrow.NewSchema(fields, nil)
	rec := array.NewRecordBatch(schema, cols, int64(len(dictNullCols[0].rows)))
	defer rec.Release()
	path := filepath.Join(dir, fmt.Sprintf("dict_%v.arrow", dict))
	testenv.WriteArrowFile(t, path, rec.Schema(), rec)
	return path
}

// TestBackfillDictionaryNullValues: a dictionary-encoded column whose
// dictionary holds a null, pointed to by a valid index, reads that row as
// null, as a null index or a null in a plain column: a key is missing (the
// views that need it reject the row), a field is null, an event time is
// missing_time. The file with the same rows in plain columns is the
// reference, row by row through the table decoder and as a whole through
// Backfill (on a miniredis).
func TestBackfillDictionaryNullValues(t *testing.T) {
	dir := t.TempDir()
	dictPath, plainPath := writeDictNullFile(t, dir, true), writeDictNullFile(t, dir, false)

	// Row by row.
	r, src, l := loadSource(t, fmt.Sprintf(e2eDefs, "txns"))
	decodeAll := func(path string) []string {
		t.Helper()
		tf, err := export.OpenTableFile(path, export.FormatArrow, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if dict := tf.Schema().Field(0).Type.ID() == arrow.DICTIONARY; dict != (path == dictPath) {
			t.Fatalf("%s: column card of type %s", path, tf.Schema().Field(0).Type)
		}
		d, err := newTableDecoder(path, tf.Schema(), src, l)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		if err := tf.Read(context.Background(), func(rec arrow.RecordBatch) error {
			d.bind(rec)
			for i := range int(rec.NumRows()) {
				var ev Event
				if de := d.decode(i, &ev); de != nil {
					out = append(out, de.Error())
				} else {
					out = append(out, fmt.Sprintf("%d %v %v", ev.Time, ev.Keys, ev.Fields))
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	want, got := decodeAll(plainPath), decodeAll(dictPath)
	if len(want) != len(dictNullCols[0].rows) {
		t.Fatalf("plain file: %d rows, want %d", len(want), len(dictNullCols[0].rows))
	}
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			g := "none"
			if i < len(got) {
				g = got[i]
			}
			t.Errorf("row %d: dictionary-encoded %s, plain %s", i, g, want[i])
		}
	}
	if len(got) != len(want) {
		t.Errorf("dictionary-encoded file: %d rows, want %d", len(got), len(want))
	}
	// The reference itself: rows 1 and 3 lack the key, 2 and 5 the time,
	// 4 and 6 the amount, 6 and 7 the merchant.
	for i, w := range map[int]string{
		0: `1000 ["c1"] [1.5 "m1"]`,
		1: `2000 [null] [2 "m2"]`,
		2: `missing_time: column "ts": no event time`,
		3: `4000 [null] [4 "m4"]`,
		4: `5000 ["c1"] [null "m5"]`,
		5: `missing_time: column "ts": no event time`,
		6: `7000 ["c1"] [null null]`,
		7: `8000 ["c2"] [8 null]`,
	} {
		if want[i] != w {
			t.Errorf("plain row %d: %s, want %s", i, want[i], w)
		}
	}

	// Through Backfill: the same counts and the same dead letters.
	now := time.UnixMilli(time.Hour.Milliseconds())
	run := func(path string) (BackfillResult, []BackfillLetter) {
		t.Helper()
		_, store := miniStore(t)
		var letters []BackfillLetter
		res, err := Backfill(context.Background(), BackfillConfig{
			Project: "p", Registry: r, Source: src, Store: store, Format: export.FormatArrow,
			Now: func() time.Time { return now },
			DeadLetters: func(l BackfillLetter) error {
				l.File = ""
				letters = append(letters, l)
				return nil
			},
		}, []string{path})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 {
			t.Fatalf("%d results", len(res))
		}
		res[0].File, res[0].Topic = "", ""
		return res[0], letters
	}
	wantRes, wantLetters := run(plainPath)
	gotRes, gotLetters := run(dictPath)
	if wantRes.MissingKey == 0 || wantRes.Rejected[ReasonMissingTime] != 2 {
		t.Errorf("plain file: %+v, want missing keys and 2 missing times", wantRes)
	}
	if fmt.Sprintf("%+v", gotRes) != fmt.Sprintf("%+v", wantRes) {
		t.Errorf("dictionary-encoded file: %+v\nplain file: %+v", gotRes, wantRes)
	}
	if !slices.Equal(gotLetters, wantLetters) {
		t.Errorf("dictionary-encoded file's letters:\n%v\nplain file's:\n%v", gotLetters, wantLetters)
	}
}
