package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/registry"
)

// writeCSV writes the scenario's rows as CSV: numbers as text (labels with
// a decimal point, so they stay doubles), null as an empty field, times as
// int64 milliseconds.
func (s *scenario) writeCSV(t *testing.T, path string) {
	t.Helper()
	var b bytes.Buffer
	for i, f := range s.fields {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(f.Name)
	}
	b.WriteByte('\n')
	for _, row := range s.rows {
		for i, v := range row {
			if i > 0 {
				b.WriteByte(',')
			}
			switch v := v.(type) {
			case nil:
			case float64:
				fmt.Fprintf(&b, "%.1f", v)
			case string:
				fmt.Fprintf(&b, "%q", v)
			default:
				fmt.Fprint(&b, v)
			}
		}
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeArrowStream writes the scenario's rows as an Arrow IPC stream, in
// batches of 64 rows.
func writeArrowStream(t *testing.T, tt *testTable, path string) {
	t.Helper()
	rec := tt.record(t)
	defer rec.Release()
	var b bytes.Buffer
	w := ipc.NewWriter(&b, ipc.WithSchema(rec.Schema()))
	for i := int64(0); i < rec.NumRows(); i += 64 {
		part := rec.NewSlice(i, min(i+64, rec.NumRows()))
		err := w.Write(part)
		part.Release()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFormatsRoundTrip exports the same rows read from Parquet, CSV and
// Arrow (file and stream) into Parquet and Arrow, and checks each output
// against the reference.
func TestFormatsRoundTrip(t *testing.T) {
	r := testRegistry(t)
	refs := r.Service("all").Resolved()
	rng := rand.New(rand.NewPCG(3, 3))
	s := randomScenario(rng, 600, 300)
	s.fields[len(s.fields)-1].Type = arrow.PrimitiveTypes.Int64 // times as int64 ms, as CSV gives them
	want := s.expected(r, refs)
	log := s.log(t, rng, r)
	dir := t.TempDir()
	tt := &testTable{fields: s.fields, rows: s.rows}
	inputs := map[string]func(string){
		"rows.parquet": func(p string) { tt.writeParquet(t, p) },
		"rows.csv":     func(p string) { s.writeCSV(t, p) },
		"rows.arrow":   func(p string) { tt.writeArrow(t, p, 128) },
		"rows.arrows":  func(p string) { writeArrowStream(t, tt, p) },
	}
	for in, write := range inputs {
		write(filepath.Join(dir, in))
		for _, out := range []string{"out.parquet", "out.arrow"} {
			t.Run(in+"->"+out, func(t *testing.T) {
				outPath := filepath.Join(dir, strings.TrimSuffix(in, filepath.Ext(in))+"-"+filepath.Ext(in)[1:]+"-"+out)
				_, err := Run(context.Background(), Options{Registry: r, Log: log, Service: "all",
					Entities: filepath.Join(dir, in), Out: outPath, TempDir: dir, Metadata: map[string]string{"featurestore.project": "p"}})
				if err != nil {
					t.Fatal(err)
				}
				checkOutput(t, outPath, s, refs, want)
				tbl := readTable(t, outPath)
				defer tbl.Release()
				if v := outputMetadata(t, outPath, "featurestore.project"); v != "p" {
					t.Errorf("output metadata featurestore.project = %q, want p", v)
				}
				for _, ref := range refs {
					f, _ := tbl.Schema().FieldsByName(ref.String())
					kind, _ := featurestoreKind(r, ref)
					if !arrow.TypeEqual(f[0].Type, arrowType(kind)) {
						t.Errorf("column %s has type %s, want %s", ref, f[0].Type, arrowType(kind))
					}
				}
			})
		}
	}
}

// outputMetadata returns a key of an output file's metadata: the schema's
// of an Arrow file, the file's of a Parquet file.
func outputMetadata(t *testing.T, path, key string) string {
	t.Helper()
	if filepath.Ext(path) != ".parquet" {
		tbl := readTable(t, path)
		defer tbl.Release()
		v, _ := tbl.Schema().Metadata().GetValue(key)
		return v
	}
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	if v := pf.MetaData().KeyValueMetadata().FindValue(key); v != nil {
		return *v
	}
	return ""
}

func featurestoreKind(r *registry.Registry, ref registry.FeatureRef) (featurestore.Kind, bool) {
	f := r.View(ref.View).Feature(ref.Feature)
	switch f.ValueType() {
	case registry.TypeString:
		return featurestore.KindString, true
	case registry.TypeInt64:
		return featurestore.KindInt64, true
	case registry.TypeDouble:
		return featurestore.KindDouble, true
	case registry.TypeBool:
		return featurestore.KindBool, true
	case registry.TypeStringList:
		return featurestore.KindStringList, true
	case registry.TypeInt64List:
		return featurestore.KindInt64List, true
	case registry.TypeDoubleList:
		return featurestore.KindDoubleList, true
	case registry.TypeBoolList:
		return featurestore.KindBoolList, true
	}
	return featurestore.KindNull, false
}

// TestTimestampColumnTypes reads row times as timestamps of each unit,
// int64 milliseconds and CSV text, rounding down to the millisecond: a row
// at the event's millisecond plus 999µs sees it, a row a microsecond
// before does not.
func TestTimestampColumnTypes(t *testing.T) {
	r := testRegistry(t)
	const e = t0 + 1234
	l := &memLog{batches: map[string][]arrow.RecordBatch{
		"by_user": {logBatch(t, r, "p", "by_user", []rawEvent{{time: e, offset: 1, keys: map[string]any{"user_id": "u"}, fields: map[string]any{"qty": int64(5)}}})},
	}}
	dir := t.TempDir()
	cases := []struct {
		name string
		typ  arrow.DataType
		vals []any // seeing the event, then not
	}{
		{"ms", &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}, []any{int64(e), int64(e - 1)}},
		{"us", &arrow.TimestampType{Unit: arrow.Microsecond}, []any{int64(e*1000 + 999), int64(e*1000 - 1)}},
		{"ns", &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "Europe/Paris"}, []any{int64(e*1e6 + 999_999), int64(e*1e6 - 1)}},
		{"s", &arrow.TimestampType{Unit: arrow.Second}, []any{int64(e/1000 + 1), int64(e / 1000)}},
		{"int64", arrow.PrimitiveTypes.Int64, []any{int64(e), int64(e - 1)}},
	}
	check := func(t *testing.T, in string) {
		out := filepath.Join(dir, "out.arrow")
		if _, err := Run(context.Background(), Options{Registry: r, Log: l, Features: []string{"by_user:qty_life"}, Entities: in, Out: out, TempDir: dir}); err != nil {
			t.Fatal(err)
		}
		tbl := readTable(t, out)
		defer tbl.Release()
		if got := cell(t, tbl, "by_user:qty_life", 0); got != int64(5) {
			t.Errorf("row at the event: %v, want 5", got)
		}
		if got := cell(t, tbl, "by_user:qty_life", 1); got != int64(0) {
			t.Errorf("row before the event: %v, want 0", got)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := filepath.Join(dir, c.name+".arrow")
			(&testTable{fields: []arrow.Field{{Name: "user_id", Type: arrow.BinaryTypes.String}, {Name: "event_timestamp", Type: c.typ}},
				rows: [][]any{{"u", c.vals[0]}, {"u", c.vals[1]}}}).writeArrow(t, in, 10)
			check(t, in)
		})
	}
	t.Run("csv", func(t *testing.T) {
		in := filepath.Join(dir, "rows.csv")
		csv := "user_id,event_timestamp\nu,2026-11-26T10:00:01.234999Z\nu,2026-11-26T10:00:01.233999Z\n"
		if err := os.WriteFile(in, []byte(csv), 0o644); err != nil {
			t.Fatal(err)
		}
		check(t, in)
	})
}

// TestKeyColumnsAndLabels maps a join key to a column of another name and
// keeps label columns of every type, in place.
func TestKeyColumnsAndLabels(t *testing.T) {
	r := testRegistry(t)
	l := &memLog{batches: map[string][]arrow.RecordBatch{
		"by_shop": {logBatch(t, r, "p", "by_shop", []rawEvent{
			{time: t0, offset: 1, keys: map[string]any{"shop_id": int64(4)}, fields: map[string]any{"cat": "x"}},
			{time: t0 + 1, offset: 2, keys: map[string]any{"shop_id": int64(4)}, fields: map[string]any{"cat": nil}},
		})},
	}}
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.parquet")
	(&testTable{fields: []arrow.Field{
		{Name: "s", Type: arrow.PrimitiveTypes.Int64},
		{Name: "label", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		{Name: "note", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "event_timestamp", Type: arrow.PrimitiveTypes.Int64},
	}, rows: [][]any{{int64(4), true, "a", int64(t0)}, {int64(4), nil, nil, int64(t0 + 1)}, {int64(5), false, "c", int64(t0)}}}).writeParquet(t, in)
	out := filepath.Join(dir, "out.parquet")
	if _, err := Run(context.Background(), Options{Registry: r, Log: l, Features: []string{"by_shop:cat", "by_shop:n_2m"},
		KeyColumns: map[string]string{"shop_id": "s"}, Entities: in, Out: out, TempDir: dir}); err != nil {
		t.Fatal(err)
	}
	tbl := readTable(t, out)
	defer tbl.Release()
	want := [][]any{
		{int64(4), true, "a", int64(t0), "x", int64(1)},
		{int64(4), nil, nil, int64(t0 + 1), nil, int64(2)}, // the newest event has no cat: null
		{int64(5), false, "c", int64(t0), nil, int64(0)},
	}
	names := []string{"s", "label", "note", "event_timestamp", "by_shop:cat", "by_shop:n_2m"}
	for i, row := range want {
		for j, name := range names {
			if got := cell(t, tbl, name, int64(i)); got != row[j] {
				t.Errorf("row %d %s = %v, want %v", i, name, got, row[j])
			}
		}
	}
}

// TestBadInputs checks the message of each kind of bad input.
func TestBadInputs(t *testing.T) {
	r := testRegistry(t)
	dir := t.TempDir()
	ts := &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	str, i64 := arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int64
	table := func(name string, fields []arrow.Field, rows ...[]any) string {
		p := filepath.Join(dir, name)
		(&testTable{fields: fields, rows: rows}).writeArrow(t, p, 2)
		return p
	}
	good := table("good.arrow", []arrow.Field{{Name: "user_id", Type: str}, {Name: "event_timestamp", Type: ts}}, []any{"u", int64(t0)})
	if err := os.WriteFile(filepath.Join(dir, "empty.csv"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		opts     Options
		want     string
		features []string
	}{
		{name: "missing key column", opts: Options{Entities: table("a.arrow", []arrow.Field{{Name: "uid", Type: str}, {Name: "event_timestamp", Type: ts}})},
			want: `a.arrow: no column "user_id" for join key "user_id" of entity "user" (columns: uid, event_timestamp)`},
		{name: "wrong key type", opts: Options{Entities: table("b.arrow", []arrow.Field{{Name: "user_id", Type: i64}, {Name: "event_timestamp", Type: ts}})},
			want: `b.arrow: column "user_id" (join key "user_id" of entity "user", string) has type int64; want utf8, large_utf8, string_view or a dictionary of them`},
		{name: "wrong int key type", features: []string{"by_shop:n_2m"}, opts: Options{Entities: table("b2.arrow", []arrow.Field{{Name: "shop_id", Type: arrow.PrimitiveTypes.Float64}, {Name: "event_timestamp", Type: ts}})},
			want: `b2.arrow: column "shop_id" (join key "shop_id" of entity "shop", int64) has type float64; want an integer type (DuckDB writes HUGEINT columns to Parquet as DOUBLE: cast them to BIGINT)`},
		{name: "dictionary of int keys", features: []string{"by_shop:n_2m"}, opts: Options{Entities: table("b3.arrow", []arrow.Field{{Name: "shop_id", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: i64}}, {Name: "event_timestamp", Type: ts}})},
			want: `b3.arrow: column "shop_id" (join key "shop_id" of entity "shop", int64) has type dictionary<values=int64, indices=int8, ordered=false>; want an integer type`},
		{name: "uint64 key beyond int64", features: []string{"by_shop:n_2m"}, opts: Options{Entities: table("b4.arrow", []arrow.Field{{Name: "shop_id", Type: arrow.PrimitiveTypes.Uint64}, {Name: "event_timestamp", Type: ts}},
			[]any{uint64(4), int64(t0)}, []any{uint64(math.MaxInt64), int64(t0)}, []any{uint64(math.MaxInt64 + 1), int64(t0)})},
			want: `b4.arrow: row 3: column "shop_id" (join key "shop_id" of entity "shop", int64) holds 9223372036854775808, beyond the int64 range of join keys`},
		{name: "null key", opts: Options{Entities: table("c.arrow", []arrow.Field{{Name: "user_id", Type: str, Nullable: true}, {Name: "event_timestamp", Type: ts}},
			[]any{"u", int64(t0)}, []any{"v", int64(t0)}, []any{nil, int64(t0)})},
			want: `c.arrow: row 3: column "user_id" (join key "user_id" of entity "user") is null`},
		{name: "null dictionary key", opts: Options{Entities: table("c2.arrow", []arrow.Field{{Name: "user_id", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: str}, Nullable: true}, {Name: "event_timestamp", Type: ts}},
			[]any{"u", int64(t0)}, []any{"v", int64(t0)}, []any{"u", int64(t0)}, []any{nil, int64(t0)})},
			want: `c2.arrow: row 4: column "user_id" (join key "user_id" of entity "user") is null`},
		{name: "null string_view key", opts: Options{Entities: table("c3.arrow", []arrow.Field{{Name: "user_id", Type: arrow.BinaryTypes.StringView, Nullable: true}, {Name: "event_timestamp", Type: ts}},
			[]any{"u", int64(t0)}, []any{nil, int64(t0)})},
			want: `c3.arrow: row 2: column "user_id" (join key "user_id" of entity "user") is null`},
		{name: "null timestamp", opts: Options{Entities: table("d.arrow", []arrow.Field{{Name: "user_id", Type: str}, {Name: "event_timestamp", Type: ts, Nullable: true}},
			[]any{"u", int64(t0)}, []any{"v", nil})},
			want: `d.arrow: row 2: timestamp column "event_timestamp" is null`},
		{name: "date timestamp", opts: Options{Entities: table("d2.arrow", []arrow.Field{{Name: "user_id", Type: str}, {Name: "event_timestamp", Type: arrow.FixedWidthTypes.Date32}})},
			want: `d2.arrow: timestamp column "event_timestamp" has type date32, a day and not an instant: cast it to a timestamp of the instant up to which each row may see events (midnight UTC sees none of that day's events, the next midnight all of them)`},
		{name: "date64 timestamp", opts: Options{Entities: table("d3.arrow", []arrow.Field{{Name: "user_id", Type: str}, {Name: "event_timestamp", Type: arrow.FixedWidthTypes.Date64}})},
			want: `d3.arrow: timestamp column "event_timestamp" has type date64, a day and not an instant: cast it to a timestamp of the instant up to which each row may see events (midnight UTC sees none of that day's events, the next midnight all of them)`},
		{name: "timestamp after 9999", opts: Options{Entities: table("d4.arrow", []arrow.Field{{Name: "user_id", Type: str}, {Name: "event_timestamp", Type: &arrow.TimestampType{Unit: arrow.Second}}},
			[]any{"u", int64(253402300799)}, []any{"v", int64(1)}, []any{"v", int64(253402300800)})},
			want: `d4.arrow: row 3: timestamp column "event_timestamp" holds 253402300800 s since the Unix epoch, outside the years 1 to 9999`},
		{name: "timestamp seconds overflowing milliseconds", opts: Options{Entities: table("d5.arrow", []arrow.Field{{Name: "user_id", Type: str}, {Name: "event_timestamp", Type: &arrow.TimestampType{Unit: arrow.Second}}},
			[]any{"u", int64(1 << 62)})},
			want: `d5.arrow: row 1: timestamp column "event_timestamp" holds 4611686018427387904 s since the Unix epoch, outside the years 1 to 9999`},
		{name: "timestamp before year 1", opts: Options{Entities: table("d6.arrow", []arrow.Field{{Name: "user_id", Type: str}, {Name: "event_timestamp", Type: &arrow.TimestampType{Unit: arrow.Microsecond}}},
			[]any{"u", int64(-62135596800000000)}, []any{"u", int64(-62135596800000001)})},
			want: `d6.arrow: row 2: timestamp column "event_timestamp" holds -62135596800000001 us since the Unix epoch, outside the years 1 to 9999`},
		{name: "int64 microseconds", opts: Options{Entities: table("d7.arrow", []arrow.Field{{Name: "user_id", Type: str}, {Name: "event_timestamp", Type: i64}},
			[]any{"u", int64(t0)}, []any{"u", int64(t0 * 1000)})},
			want: `d7.arrow: row 2: timestamp column "event_timestamp" holds 1795687200000000 ms since the Unix epoch, outside the years 1 to 9999 (int64 times are milliseconds: give finer units as a timestamp column)`},
		{name: "missing timestamp", opts: Options{Entities: good, TimestampColumn: "ts"},
			want: `good.arrow: no timestamp column "ts" (columns: user_id, event_timestamp); name it with the timestamp column option`},
		{name: "timestamp type", opts: Options{Entities: table("e.arrow", []arrow.Field{{Name: "user_id", Type: str}, {Name: "event_timestamp", Type: str}})},
			want: `e.arrow: timestamp column "event_timestamp" has type utf8; want a timestamp, or int64 milliseconds since the Unix epoch`},
		{name: "feature column clash", opts: Options{Entities: table("f.arrow", []arrow.Field{{Name: "user_id", Type: str}, {Name: "by_user:n_5m", Type: i64}, {Name: "event_timestamp", Type: ts}})},
			want: `f.arrow: column "by_user:n_5m" has the name of a requested feature; rename it`},
		{name: "unknown feature", features: []string{"by_user:nope"}, opts: Options{Entities: good},
			want: `unknown feature "nope" in feature view "by_user"`},
		{name: "unknown view", features: []string{"nope:x"}, opts: Options{Entities: good},
			want: `unknown feature view "nope" in "nope:x"`},
		{name: "bad reference", features: []string{"by_user"}, opts: Options{Entities: good},
			want: `invalid feature reference "by_user": expected view:feature`},
		{name: "twice", features: []string{"by_user:n_5m", "by_user:*"}, opts: Options{Entities: good},
			want: `feature "by_user:n_5m" requested more than once`},
		{name: "unknown service", opts: Options{Entities: good, Service: "nope"},
			want: `unknown feature service "nope"`},
		{name: "service and features", features: []string{"by_user:n_5m"}, opts: Options{Entities: good, Service: "all"},
			want: `give a feature service or feature references, not both`},
		{name: "nothing requested", features: []string{}, opts: Options{Entities: good},
			want: `no features requested: give a feature service or feature references`},
		{name: "not offline", features: []string{"not_offline:n"}, opts: Options{Entities: good},
			want: `feature view "not_offline" is not kept offline (offline: false): it cannot be exported`},
		{name: "unknown key mapping", opts: Options{Entities: good, KeyColumns: map[string]string{"card": "c"}},
			want: `key column mapping card=c: "card" is a join key of no entity of the requested features`},
		{name: "input extension", opts: Options{Entities: good + ".txt"},
			want: `good.arrow.txt: cannot tell the format from the extension: use .parquet, .csv or .arrow, or name the format`},
		{name: "missing input", opts: Options{Entities: filepath.Join(dir, "none.csv")},
			want: `stat none.csv: no such file or directory`},
		{name: "empty csv", opts: Options{Entities: filepath.Join(dir, "empty.csv")},
			want: `empty.csv: empty file: a CSV entity table needs a header row`},
		{name: "output format", opts: Options{Entities: good, Out: filepath.Join(dir, "out.csv")},
			want: `out.csv: format "csv" is not one of parquet, arrow`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			opts.Registry, opts.Log, opts.TempDir = r, &memLog{}, dir
			if opts.Out == "" {
				opts.Out = filepath.Join(dir, "out.arrow")
			}
			if c.features == nil && opts.Service == "" {
				opts.Features = []string{"by_user:n_5m"}
			} else {
				opts.Features = c.features
			}
			_, err := Run(context.Background(), opts)
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if got := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), ""); got != c.want {
				t.Errorf("error:\n got  %s\n want %s", got, c.want)
			}
			if _, err := os.Stat(opts.Out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed export left %s", opts.Out)
			}
		})
	}
}

// TestBadLogs checks the messages for log batches the export cannot read.
func TestBadLogs(t *testing.T) {
	r := testRegistry(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.arrow")
	(&testTable{fields: []arrow.Field{{Name: "user_id", Type: arrow.BinaryTypes.String}, {Name: "event_timestamp", Type: arrow.PrimitiveTypes.Int64}},
		rows: [][]any{{"u", int64(t0)}}}).writeArrow(t, in, 10)
	good := logBatch(t, r, "p", "by_user", []rawEvent{{time: t0, offset: 1, keys: map[string]any{"user_id": "u"}}})
	withMeta := func(k, v string) arrow.RecordBatch {
		md := good.Schema().Metadata()
		keys, vals := append([]string(nil), md.Keys()...), append([]string(nil), md.Values()...)
		vals[md.FindKey(k)] = v
		m := arrow.NewMetadata(keys, vals)
		return array.NewRecordBatch(arrow.NewSchema(good.Schema().Fields(), &m), good.Columns(), good.NumRows())
	}
	retyped := func(col string, typ arrow.DataType) arrow.RecordBatch {
		i := good.Schema().FieldIndices(col)[0]
		cols := append([]arrow.Array(nil), good.Columns()...)
		cols[i] = array.MakeArrayOfNull(memory.DefaultAllocator, typ, int(good.NumRows()))
		fields := append([]arrow.Field(nil), good.Schema().Fields()...)
		fields[i] = arrow.Field{Name: col, Type: typ, Nullable: true}
		md := good.Schema().Metadata()
		return array.NewRecordBatch(arrow.NewSchema(fields, &md), cols, good.NumRows())
	}
	renamed := func(col, name string) arrow.RecordBatch {
		fields := append([]arrow.Field(nil), good.Schema().Fields()...)
		fields[good.Schema().FieldIndices(col)[0]].Name = name
		md := good.Schema().Metadata()
		return array.NewRecordBatch(arrow.NewSchema(fields, &md), good.Columns(), good.NumRows())
	}
	cases := []struct {
		name  string
		batch arrow.RecordBatch
		want  string
	}{
		{"other view", withMeta(MetaView, "by_shop"), `offline log of feature view "by_user": a batch belongs to feature view "by_shop"`},
		{"version", withMeta(MetaLogVersion, "2"), `offline log of feature view "by_user": log version "2"; this export reads version 1`},
		{"partition type", retyped(ColPartition, arrow.BinaryTypes.String), `offline log of feature view "by_user": column "partition" has type utf8; want int32`},
		{"key type", retyped("user_id", arrow.PrimitiveTypes.Float64), `offline log of feature view "by_user": column "user_id" has type float64; want utf8`},
		{"no event time", renamed(ColEventTime, "when"), `offline log of feature view "by_user": a batch has no column "event_time"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := &memLog{batches: map[string][]arrow.RecordBatch{"by_user": {c.batch}}}
			_, err := Run(context.Background(), Options{Registry: r, Log: l, Features: []string{"by_user:n_5m"}, Entities: in, Out: filepath.Join(dir, "out.arrow"), TempDir: dir})
			if err == nil || err.Error() != c.want {
				t.Errorf("error %v, want %s", err, c.want)
			}
		})
	}
}

// changingLog fails its first scans of each view half-way with
// ErrLogChanged, as a log does when a compaction replaces files under it.
type changingLog struct {
	*memLog
	fails map[string]int
}

func (l *changingLog) Scan(ctx context.Context, view string, until int64, fn func(arrow.RecordBatch) error) error {
	if l.fails[view] > 0 {
		l.fails[view]--
		n := 0
		err := l.memLog.Scan(ctx, view, until, func(rec arrow.RecordBatch) error {
			if n++; n > len(l.batches[view])/2 {
				return fmt.Errorf("file gone: %w", ErrLogChanged)
			}
			return fn(rec)
		})
		if err != nil {
			return err
		}
	}
	return l.memLog.Scan(ctx, view, until, fn)
}

// TestLogChangedDuringScan checks that a scan that fails with
// ErrLogChanged is redone from scratch: no event counted twice.
func TestLogChangedDuringScan(t *testing.T) {
	r := testRegistry(t)
	refs := r.Service("all").Resolved()
	rng := rand.New(rand.NewPCG(5, 5))
	s := randomScenario(rng, 800, 200)
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.arrow")
	(&testTable{fields: s.fields, rows: s.rows}).writeArrow(t, in, 100)
	out := filepath.Join(dir, "out.arrow")
	l := &changingLog{memLog: s.log(t, rng, r), fails: map[string]int{"by_user": 2, "by_shop": 1}}
	if _, err := Run(context.Background(), Options{Registry: r, Log: l, Service: "all", Entities: in, Out: out, TempDir: dir}); err != nil {
		t.Fatal(err)
	}
	checkOutput(t, out, s, refs, s.expected(r, refs))
	l = &changingLog{memLog: l.memLog, fails: map[string]int{"by_user": scanAttempts}}
	_, err := Run(context.Background(), Options{Registry: r, Log: l, Service: "all", Entities: in, Out: out, TempDir: dir})
	if !errors.Is(err, ErrLogChanged) {
		t.Fatalf("a log that keeps changing: %v, want ErrLogChanged", err)
	}
}

// TestEmptyEntityTable exports no rows: the output has the columns and no
// rows.
func TestEmptyEntityTable(t *testing.T) {
	r := testRegistry(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.csv")
	if err := os.WriteFile(in, []byte("user_id,event_timestamp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.parquet")
	if _, err := Run(context.Background(), Options{Registry: r, Log: &memLog{}, Features: []string{"by_user:*"}, Entities: in, Out: out, TempDir: dir}); err != nil {
		t.Fatal(err)
	}
	tbl := readTable(t, out)
	defer tbl.Release()
	if tbl.NumRows() != 0 || tbl.NumCols() != int64(2+len(r.View("by_user").Features)) {
		t.Fatalf("output: %d rows, %d columns", tbl.NumRows(), tbl.NumCols())
	}
}

// TestSpillKeyIsEntityKey checks that spill keys are the binary form of
// featurestore.EntityKey.
func TestSpillKeyIsEntityKey(t *testing.T) {
	for _, parts := range [][]featurestore.KeyPart{
		{featurestore.StringPart("")},
		{featurestore.StringPart("a{:*}")},
		{featurestore.Int64Part(-1)},
		{featurestore.StringPart("bank"), featurestore.Int64Part(1 << 40)},
		{featurestore.StringPart(strings.Repeat("x", 300)), featurestore.Int64Part(0)},
	} {
		var got []byte
		for _, p := range parts {
			if p.Kind == featurestore.KeyString {
				got = appendStringPart(got, p.Str)
			} else {
				got = appendInt64Part(got, p.Int)
			}
		}
		k, err := featurestore.NewEntityKey(parts...)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := k.MarshalBinary()
		if !bytes.Equal(got, want) {
			t.Errorf("%v: spill key %x, entity key %x", parts, got, want)
		}
		if keyString(got) != k.String() {
			t.Errorf("keyString %s, want %s", keyString(got), k.String())
		}
	}
}

// TestCanceled checks that a canceled export stops with the context's error
// and leaves neither output nor spill files.
func TestCanceled(t *testing.T) {
	r := testRegistry(t)
	rng := rand.New(rand.NewPCG(4, 4))
	s := randomScenario(rng, 500, 200)
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.arrow")
	(&testTable{fields: s.fields, rows: s.rows}).writeArrow(t, in, 10)
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	out := filepath.Join(dir, "out.arrow")
	tmp := t.TempDir()
	_, err := Run(ctx, Options{Registry: r, Log: s.log(t, rng, r), Service: "all", Entities: in, Out: out, TempDir: tmp,
		Progress: func(Progress) {
			if calls++; calls == 3 { // in the events phase
				cancel()
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a canceled export left %s", out)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("a canceled export left %d files in its temporary directory", len(left))
	}
}

// TestTruncatedMappedLogIsAnError: a batch that is a view of a mapped log
// file truncated under the export (offline.ScanMapped's batches are) makes
// the worker reading it fault; the export's goroutines turn that into an
// error wrapping offline.ErrMappedFault instead of crashing the process.
func TestTruncatedMappedLogIsAnError(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("mappings are checked on Linux")
	}
	ctx := context.Background()
	dir := t.TempDir()
	st, err := offline.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	const name = "p/v/date=2026-11-27/t-0-0-9.arrow"
	if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), make([]byte, 1<<16), 0o644); err != nil {
		t.Fatal(err)
	}
	mp, ok := any(st).(offline.Mapper)
	if !ok {
		t.Skip("no memory mappings here")
	}
	data, unmap, err := mp.Map(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	n := len(data) / 8
	col := array.NewInt64Data(array.NewData(arrow.PrimitiveTypes.Int64, n, []*memory.Buffer{nil, memory.NewBufferBytes(data)}, nil, 0, 0))
	rec := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil), []arrow.Array{col}, int64(n))
	col.Release()
	defer rec.Release()
	if err := os.Truncate(filepath.Join(dir, name), 0); err != nil {
		t.Fatal(err)
	}
	x := &exporter{workers: 2}
	err = x.fanOut(ctx, func(ctx context.Context, emit func(arrow.RecordBatch, int64) error) error {
		return emit(rec, 0)
	}, func(_ int, rec arrow.RecordBatch, _ int64) error {
		var sum int64
		for _, v := range rec.Column(0).(*array.Int64).Int64Values() {
			sum += v
		}
		t.Logf("read a truncated mapped file without a fault (sum %d)", sum)
		return nil
	})
	if !errors.Is(err, offline.ErrMappedFault) || !strings.Contains(err.Error(), name) {
		t.Fatalf("reading a truncated mapped log: %v, want offline.ErrMappedFault naming %s", err, name)
	}
}

// TestSecondsLikeTimes: int64 row times are Unix milliseconds; a table of
// Unix seconds reads as 1970 and gets the features of no events. The
// export says so; times of this century, or of a timestamp type, do not.
func TestSecondsLikeTimes(t *testing.T) {
	r := testRegistry(t)
	dir := t.TempDir()
	for _, c := range []struct {
		name, csv string
		warns     bool
	}{
		{"seconds", "user_id,event_timestamp\nu1,1795823882\nu2,1795823000\n", true},
		{"milliseconds", "user_id,event_timestamp\nu1,1795823882000\n", false},
		{"timestamps", "user_id,event_timestamp\nu1,1970-01-21T18:50:23Z\n", false},
	} {
		in := filepath.Join(dir, c.name+".csv")
		if err := os.WriteFile(in, []byte(c.csv), 0o644); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		_, err := Run(context.Background(), Options{Registry: r, Log: &memLog{}, Features: []string{"by_user:*"}, Entities: in,
			Out: filepath.Join(dir, c.name+".arrow"), TempDir: dir, Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Fatal(err)
		}
		want := `level=WARN msg="the entity table's int64 times, read as Unix milliseconds, are all before 1973: if they are Unix seconds, multiply them by 1000" column=event_timestamp latest=1970-01-21T18:50:23.882Z`
		if got := strings.Contains(buf.String(), want); got != c.warns {
			t.Errorf("%s: logged %q; want the warning: %v", c.name, buf.String(), c.warns)
		}
	}
}
