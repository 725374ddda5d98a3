package export

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/registry"
)

// TestCSVInferredTypes checks the type inferred for a CSV column from its
// values against the rules docs/export.md states: a label column is carried
// unchanged, so a value the inferred type would alter (a zip code's leading
// zero, the digits of an integer beyond int64, "T" read as true) makes the
// column utf8.
func TestCSVInferredTypes(t *testing.T) {
	str, i64, f64, boolean := arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Float64, arrow.FixedWidthTypes.Boolean
	cases := []struct {
		name string
		vals []string
		want arrow.DataType
	}{
		{"ints", []string{"1", "-2", "0", ""}, i64},
		{"int64 bounds", []string{"9223372036854775807", "-9223372036854775808"}, i64},
		{"beyond int64", []string{"1", "12345678901234567891"}, str},
		{"below int64", []string{"-9223372036854775809"}, str},
		{"beyond int64 with floats", []string{"1.5", "12345678901234567891"}, str},
		{"floats", []string{"0.5", "1", "-2e3"}, f64},
		{"zero and fractions", []string{"0", "0.5", "0.0", "0e3"}, f64},
		{"zip codes", []string{"10001", "00501"}, str},
		{"leading zero", []string{"007"}, str},
		{"negative leading zero", []string{"-007"}, str},
		{"leading zero fraction", []string{"1.5", "00.5"}, str},
		{"booleans", []string{"true", "false", ""}, boolean},
		{"T and F", []string{"T", "F"}, str},
		{"t and f", []string{"t", "f"}, str},
		{"upper case", []string{"TRUE", "FALSE"}, str},
		{"title case", []string{"True", "false"}, str},
		{"ones and zeros", []string{"1", "0"}, i64},
		{"times", []string{"2026-11-26T10:00:00Z", "2026-11-26T10:00:00.5+01:00"}, &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
		{"text", []string{"a", "1"}, str},
		{"no values", []string{"", ""}, str},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A second column keeps a row whose value is empty from being a
			// blank line, which CSV readers skip.
			var sb strings.Builder
			sb.WriteString("c,d\n")
			for _, v := range c.vals {
				sb.WriteString(v + ",x\n")
			}
			path := filepath.Join(dir, "t.csv")
			if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			schema, rows, err := inferCSV(path, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if rows != int64(len(c.vals)) {
				t.Errorf("%d rows, want %d", rows, len(c.vals))
			}
			if got := schema.Field(0).Type; !arrow.TypeEqual(got, c.want) {
				t.Errorf("values %q: type %s, want %s", c.vals, got, c.want)
			}
		})
	}
}

// TestCSVLabelsUnchanged exports a CSV entity table whose label columns hold
// values that a numeric or boolean reading would alter, and checks that the
// output holds them as written.
func TestCSVLabelsUnchanged(t *testing.T) {
	r := testRegistry(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.csv")
	csv := "user_id,event_timestamp,zip,order_id,flag,answer,n\n" +
		"u,2026-11-26T10:00:00Z,00501,12345678901234567891,T,true,7\n" +
		"v,2026-11-26T10:00:01Z,10001,1,F,false,0\n"
	if err := os.WriteFile(in, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.arrow")
	if _, err := Run(context.Background(), Options{Registry: r, Log: &memLog{}, Features: []string{"by_user:n_5m"}, Entities: in, Out: out, TempDir: dir}); err != nil {
		t.Fatal(err)
	}
	tbl := readTable(t, out)
	defer tbl.Release()
	want := map[string][]any{
		"zip":      {"00501", "10001"},
		"order_id": {"12345678901234567891", "1"},
		"flag":     {"T", "F"},
		"answer":   {true, false},
		"n":        {int64(7), int64(0)},
	}
	for name, vals := range want {
		for i, w := range vals {
			if got := cell(t, tbl, name, int64(i)); got != w {
				t.Errorf("column %s row %d: %#v, want %#v", name, i+1, got, w)
			}
		}
	}
}

// TestCSVByteOrderMark reads CSV files that start with a UTF-8 byte order
// mark, as Excel writes them: the first column's name is the header's text
// without the mark, in the schema and in the batches read.
func TestCSVByteOrderMark(t *testing.T) {
	r := testRegistry(t)
	dir := t.TempDir()
	for _, c := range []struct{ name, csv string }{
		{"key first", "\ufeffuser_id,event_timestamp,region\nu,2026-11-26T10:00:00Z,eu\n"},
		{"label first", "\ufeffregion,user_id,event_timestamp\neu,u,2026-11-26T10:00:00Z\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := filepath.Join(dir, "rows.csv")
			if err := os.WriteFile(in, []byte(c.csv), 0o644); err != nil {
				t.Fatal(err)
			}
			first := strings.SplitN(strings.TrimPrefix(c.csv, "\ufeff"), ",", 2)[0]
			tf, err := OpenTableFile(in, FormatAuto, nil, memory.DefaultAllocator)
			if err != nil {
				t.Fatal(err)
			}
			if got := tf.Schema().Field(0).Name; got != first {
				t.Errorf("schema: first column %q, want %q", got, first)
			}
			if err := tf.Read(context.Background(), func(rec arrow.RecordBatch) error {
				if got := rec.Schema().Field(0).Name; got != first {
					t.Errorf("batch: first column %q, want %q", got, first)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out.arrow")
			if _, err := Run(context.Background(), Options{Registry: r, Log: &memLog{}, Features: []string{"by_user:n_5m"}, Entities: in, Out: out, TempDir: dir}); err != nil {
				t.Fatal(err)
			}
			tbl := readTable(t, out)
			defer tbl.Release()
			if got := tbl.Schema().Field(0).Name; got != first {
				t.Errorf("output: first column %q, want %q", got, first)
			}
			if got := cell(t, tbl, "region", 0); got != "eu" {
				t.Errorf("region: %#v, want \"eu\"", got)
			}
		})
	}
}

// TestCSVBadValues checks that a CSV value that does not parse as its
// column's type is an error naming the file, the row (counted from 1, the
// header not counted) and the column.
func TestCSVBadValues(t *testing.T) {
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(testDefs + onDemandDefs)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cases := []struct {
		name, feature, csv, want string
	}{
		{"not an integer", "by_shop:n_2m", "shop_id,event_timestamp\n4,2026-11-26T10:00:00Z\nx12,2026-11-26T10:00:00Z\n",
			`rows.csv: row 2: column "shop_id": "x12" is not an int64`},
		{"beyond int64", "by_shop:n_2m", "event_timestamp,shop_id\n2026-11-26T10:00:00Z,12345678901234567891\n",
			`rows.csv: row 1: column "shop_id": "12345678901234567891" is not an int64`},
		{"quoted newline", "by_shop:n_2m", "note,shop_id,event_timestamp\n\"a\nb\",4,2026-11-26T10:00:00Z\nc,4.5,2026-11-26T10:00:00Z\n",
			`rows.csv: row 2: column "shop_id": "4.5" is not an int64`},
		// Request fields of on-demand features have their field's type.
		{"not a double", "risk:share", "user_id,shop_id,price,event_timestamp\nu1,4,2.5,2026-11-26T10:00:00Z\nu1,4,abc,2026-11-26T10:00:00Z\n",
			`rows.csv: row 2: column "price": "abc" is not a double`},
		{"not a bool", "shop_flag:flagged", "shop_id,urgent,event_timestamp\n4,true,2026-11-26T10:00:00Z\n4,1,2026-11-26T10:00:00Z\n",
			`rows.csv: row 2: column "urgent": "1" is not a bool (true or false)`},
		{"not a time", "by_shop:n_2m", "shop_id,event_timestamp\n4,2026-11-26T10:00:00Z\n4,11/27/2026 23:55\n",
			`rows.csv: row 2: column "event_timestamp": "11/27/2026 23:55" is not a time (like 2026-11-26T10:00:00Z or 2026-11-26 10:00:00.123), nor are all the column's values int64 Unix milliseconds`},
		{"times with and without an offset", "by_shop:n_2m", "shop_id,event_timestamp\n4,2026-11-26T10:00:00Z\n4,2026-11-26 10:00:00\n",
			`rows.csv: column "event_timestamp" mixes times with a zone offset and times without one: give every time an offset (2026-11-26T10:00:00Z) or none (2026-11-26 10:00:00, read as UTC)`},
		// A day is not an instant, as in a date32 column; a day in a label
		// column is read as a timestamp, as before.
		{"a day", "by_shop:n_2m", "shop_id,signup,event_timestamp\n4,2026-11-01,2026-11-26 10:00:00\n4,2026-11-02,2026-11-27\n",
			`rows.csv: row 2: column "event_timestamp": "2026-11-27" is a day and not an instant: give each row the instant up to which it may see events, such as 2026-11-26T23:59:59.999Z for a label known at the day's end (a day alone would read as midnight UTC, which sees none of that day's events)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := filepath.Join(dir, "rows.csv")
			if err := os.WriteFile(in, []byte(c.csv), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out.arrow")
			_, err := Run(context.Background(), Options{Registry: r, Log: &memLog{}, Features: []string{c.feature}, Entities: in, Out: out, TempDir: dir})
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if got := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), ""); got != c.want {
				t.Errorf("error:\n got  %s\n want %s", got, c.want)
			}
		})
	}
}
