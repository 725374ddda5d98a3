package export

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// dirLog reads a project's offline log from storage, as the export command
// and the Flight service do: files pruned by their time range, sized by the
// manifest.
type dirLog struct {
	st      offline.Storage
	project string
}

func (l *dirLog) Scan(ctx context.Context, view string, until int64, fn func(arrow.RecordBatch) error) error {
	snap, err := offline.ReadSnapshot(ctx, l.st, l.project, view)
	if err != nil {
		return err
	}
	return offline.ScanMapped(ctx, l.st, snap, snap.Between(math.MinInt64, until), func(_ offline.FileInfo, rec arrow.RecordBatch) error { return fn(rec) })
}

func (l *dirLog) Size(ctx context.Context, view string) (int64, error) {
	snap, err := offline.ReadSnapshot(ctx, l.st, l.project, view)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, f := range snap.Files {
		n += f.Bytes
	}
	return n, nil
}

// interopColumn is a column as the Python side must see it. Type is in
// Arrow's notation (timestamp[ms, tz=UTC], string, int32, int64, double,
// bool, list<T>); interop.py maps it to polars' and DuckDB's types.
type interopColumn struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Nullable bool   `json:"nullable"`
}

// interopTable is a table the Python side reads from files and checks:
// its columns, schema metadata and rows (timestamps as Unix ms).
type interopTable struct {
	Files    []string          `json:"files"`
	Columns  []interopColumn   `json:"columns"`
	Metadata map[string]string `json:"metadata"`
	Rows     [][]any           `json:"rows"`
	// SortBy, if set, names the columns the rows are ordered by; the
	// files' rows are sorted so before comparing. Otherwise the order
	// must be the files' own.
	SortBy []string `json:"sort_by,omitempty"`
}

// interopExpectations is what interop.py checks.
type interopExpectations struct {
	Offline  map[string]*interopTable `json:"offline"`  // by view
	Training map[string]*interopTable `json:"training"` // by format: arrow (IPC file), arrows (IPC stream), parquet
}

// arrowTypeOf names a feature's column type in Arrow's notation.
func arrowTypeOf(vt registry.ValueType) string {
	if base, ok := strings.CutSuffix(string(vt), "_list"); ok {
		return "list<" + arrowTypeOf(registry.ValueType(base)) + ">"
	}
	return string(vt) // string, int64, double, bool
}

// TestPythonInterop writes a random scenario's events through the offline
// writer and exports a training set from them, as an Arrow IPC file, an
// Arrow IPC stream and Parquet; then testdata/interop.py reads the
// committed offline files (the manifest's list) and the training sets with pyarrow, polars and DuckDB,
// and checks column names, types, time zones, nullability, metadata and
// every value against what this test expects: the events it wrote, and
// the brute-force reference's features (reference_test.go).
func TestPythonInterop(t *testing.T) {
	py := testenv.Python(t)
	ctx := context.Background()
	r := testRegistry(t)
	rng := rand.New(rand.NewPCG(11, 12))
	s := randomScenario(rng, 1500, 800)
	dir := t.TempDir()
	st, err := offline.NewDir(filepath.Join(dir, "offline"))
	if err != nil {
		t.Fatal(err)
	}
	const project = "interop"
	w, err := offline.OpenWriter(ctx, st, project, offline.Options{FlushRows: 150})
	if err != nil {
		t.Fatal(err)
	}
	exp := interopExpectations{Offline: map[string]*interopTable{}, Training: map[string]*interopTable{}}
	tsType := "timestamp[ms, tz=UTC]"
	for _, view := range slices.Sorted(func(yield func(string) bool) {
		for v := range s.events {
			if !yield(v) {
				return
			}
		}
	}) {
		v := r.View(view)
		ent, src := r.Entity(v.Entity), r.Source(v.Source)
		schema, err := offline.NewSchema(project, r, view)
		if err != nil {
			t.Fatal(err)
		}
		srcFields, err := window.SourceFields(src)
		if err != nil {
			t.Fatal(err)
		}
		tbl := &interopTable{
			Columns: []interopColumn{{"event_time", tsType, false}, {"ingest_time", tsType, false},
				{"topic", "string", false}, {"partition", "int32", false}, {"offset", "int64", false}},
			Metadata: map[string]string{MetaProject: project, MetaView: view, MetaSource: src.Name, MetaLogVersion: LogVersion},
			SortBy:   []string{"partition", "offset"},
		}
		for _, k := range ent.JoinKeys {
			tbl.Columns = append(tbl.Columns, interopColumn{k.Name, string(k.Type), false})
		}
		used := map[string]bool{}
		for _, f := range v.Features {
			if f.Field != "" {
				used[f.Field] = true
			}
			for _, c := range f.Filter {
				used[c.Field] = true
			}
		}
		var fieldNames []string
		for _, f := range srcFields {
			if used[f.Name] {
				fieldNames = append(fieldNames, f.Name)
				tbl.Columns = append(tbl.Columns, interopColumn{f.Name, string(src.Fields[f.Name]), true})
			}
		}
		// Append each partition's events in offset order, in batches of
		// up to 100 events, each accepted 7ms after its newest event.
		evs := slices.Clone(s.events[view])
		slices.SortFunc(evs, func(a, b rawEvent) int {
			return cmp.Or(cmp.Compare(a.partition, b.partition), cmp.Compare(a.offset, b.offset))
		})
		for len(evs) > 0 {
			n := 1
			for n < len(evs) && n < 100 && evs[n].partition == evs[0].partition {
				n++
			}
			batch := evs[:n]
			evs = evs[n:]
			b := offline.Batch{Topic: "txns", Partition: batch[0].partition, End: offline.Position{Offset: batch[n-1].offset}}
			for _, e := range batch {
				b.IngestTime = max(b.IngestTime, e.time+7)
			}
			for _, e := range batch {
				var parts []featurestore.KeyPart
				row := []any{e.time, b.IngestTime, "txns", e.partition, e.offset}
				for _, k := range ent.JoinKeys {
					switch x := e.keys[k.Name].(type) {
					case string:
						parts = append(parts, featurestore.StringPart(x))
					case int64:
						parts = append(parts, featurestore.Int64Part(x))
					}
					row = append(row, e.keys[k.Name])
				}
				key, err := featurestore.NewEntityKey(parts...)
				if err != nil {
					t.Fatal(err)
				}
				vals := make([]featurestore.Value, len(srcFields))
				for i, f := range srcFields {
					switch x := e.fields[f.Name].(type) {
					case string:
						vals[i] = featurestore.StringValue(x)
					case int64:
						vals[i] = featurestore.Int64Value(x)
					case float64:
						vals[i] = featurestore.DoubleValue(x)
					case bool:
						vals[i] = featurestore.BoolValue(x)
					}
				}
				for _, n := range fieldNames {
					row = append(row, e.fields[n])
				}
				tbl.Rows = append(tbl.Rows, row)
				b.Entities = append(b.Entities, offline.EntityEvents{Key: key,
					Events: []window.Event{{Time: e.time, Partition: e.partition, Offset: e.offset, Fields: vals}}})
			}
			if err := w.Append(ctx, schema, b); err != nil {
				t.Fatal(err)
			}
		}
		exp.Offline[view] = tbl
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for view, tbl := range exp.Offline {
		snap, err := offline.ReadSnapshot(ctx, st, project, view)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range snap.Files {
			tbl.Files = append(tbl.Files, filepath.Join(dir, "offline", filepath.FromSlash(snap.Name(f))))
		}
		if len(tbl.Files) < 2 {
			t.Fatalf("view %s: %d files; the test wants several", view, len(tbl.Files))
		}
	}

	// The training set, from the log just written.
	in := filepath.Join(dir, "rows.parquet")
	(&testTable{fields: s.fields, rows: s.rows}).writeParquet(t, in)
	refs := r.Service("all").Resolved()
	want := s.expected(r, refs)
	md := map[string]string{"featurestore.project": project, "featurestore.registry_version": "7"}
	var cols []interopColumn
	for _, f := range s.fields {
		typ := map[arrow.Type]string{arrow.STRING: "string", arrow.INT64: "int64", arrow.FLOAT64: "double", arrow.TIMESTAMP: tsType}[f.Type.ID()]
		cols = append(cols, interopColumn{f.Name, typ, f.Nullable})
	}
	for _, ref := range refs {
		cols = append(cols, interopColumn{ref.String(), arrowTypeOf(r.View(ref.View).Feature(ref.Feature).ValueType()), true})
	}
	rows := make([][]any, len(s.rows))
	for i, row := range s.rows {
		rows[i] = append(slices.Clone(row), want[i]...)
	}
	for _, format := range []string{"arrow", "arrows", "parquet"} {
		out := filepath.Join(dir, "train."+format)
		if _, err := Run(ctx, Options{Registry: r, Log: &dirLog{st: st, project: project}, Service: "all",
			Entities: in, Out: out, Metadata: md, Memory: 4 << 20, TempDir: dir}); err != nil {
			t.Fatal(err)
		}
		exp.Training[format] = &interopTable{Files: []string{out}, Columns: cols, Metadata: md, Rows: rows}
	}

	expFile := filepath.Join(dir, "expected.json")
	b, err := json.Marshal(exp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(expFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, filepath.Join("testdata", "interop.py"), expFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("interop.py: %v\n%s", err, out)
	}
	t.Logf("interop.py: %s", strings.TrimSpace(string(out)))
	if !strings.Contains(string(out), fmt.Sprintf("training sets: 3 files, %d rows each", len(s.rows))) {
		t.Errorf("interop.py did not report the training sets it checked:\n%s", out)
	}
}

// interopDefs is an on-demand view over request fields that the tools
// write in types of their own (categoricals, unsigned integers).
const interopDefs = `
---
kind: OnDemandFeatureView
name: by_channel
inputs: {n: by_user:n_5m}
request_fields: {channel: string, items: int64}
features:
  - {name: channel_n, type: int64, expression: "len(channel) * 100 + n"}
  - {name: items_n, type: int64, expression: "items + n"}
`

// TestPythonEntityTables exports training sets from entity tables written
// by polars, DuckDB and pyarrow (as pandas writes them), in the tools' own
// types (testdata/entities.py checks that the files have them): each must
// give every row the features of the brute-force reference, and the
// on-demand features those of its request fields (channel, a categorical
// in some files; items, a uint64 in some), and carry its keys, labels
// (tags, lists of text: of string_view from polars' Arrow IPC files) and
// request fields to the Parquet output; the files whose meaning is not clear must
// fail with the message that says what to do.
func TestPythonEntityTables(t *testing.T) {
	py := testenv.Python(t)
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(testDefs + interopDefs)})
	if err != nil {
		t.Fatal(err)
	}
	refs := r.Service("all").Resolved()
	rng := rand.New(rand.NewPCG(21, 22))
	s := randomScenario(rng, 800, 300)
	want := s.expected(r, refs)
	log := s.log(t, rng, r)
	// The request fields and a label of lists of text, before the
	// timestamp (the last column), and the on-demand features computed
	// from the request fields and by_user:n_5m.
	nAt := slices.Index(refs, registry.FeatureRef{View: "by_user", Feature: "n_5m"})
	s.fields = slices.Insert(s.fields, len(s.fields)-1,
		arrow.Field{Name: "channel", Type: arrow.BinaryTypes.String, Nullable: true}, arrow.Field{Name: "items", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		arrow.Field{Name: "tags", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true})
	for i, row := range s.rows {
		channel := []any{"web", "app", "store", "", nil}[rng.IntN(5)]
		var items any
		if rng.IntN(8) > 0 {
			items = rng.Int64N(1000)
		}
		tags := [][]any{nil, {}, {"a"}, {"a tag longer than twelve bytes", nil, ""}}[rng.IntN(4)]
		var tagsCell any
		if tags != nil {
			tagsCell = tags
		}
		s.rows[i] = slices.Insert(row, len(row)-1, channel, items, tagsCell)
		n := want[i][nAt].(int64)
		var channelN, itemsN any
		if c, ok := channel.(string); ok {
			channelN = int64(len(c))*100 + n
		}
		if items != nil {
			itemsN = items.(int64) + n
		}
		want[i] = append(want[i], channelN, itemsN)
	}
	refs = append(refs, registry.FeatureRef{View: "by_channel", Feature: "channel_n"}, registry.FeatureRef{View: "by_channel", Feature: "items_n"})
	features := make([]string, len(refs))
	for i, ref := range refs {
		features[i] = ref.String()
	}
	dir := t.TempDir()
	tables := filepath.Join(dir, "tables")
	if err := os.Mkdir(tables, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := map[string]any{"rows": s.rows}
	var cols []map[string]string
	for _, f := range s.fields {
		cols = append(cols, map[string]string{"name": f.Name, "type": f.Type.String()})
	}
	spec["columns"] = cols
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	specFile := filepath.Join(dir, "rows.json")
	if err := os.WriteFile(specFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, filepath.Join("testdata", "entities.py"), specFile, tables).CombinedOutput()
	if err != nil {
		t.Fatalf("entities.py: %v\n%s", err, out)
	}
	t.Logf("entities.py: %s", strings.TrimSpace(string(out)))

	export := func(in string) (string, error) {
		out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(in), filepath.Ext(in))+"-"+filepath.Ext(in)[1:]+".parquet")
		_, err := Run(context.Background(), Options{Registry: r, Log: log, Features: features, Entities: in, Out: out, TempDir: dir})
		return out, err
	}
	for _, name := range []string{"polars.arrow", "polars.arrows", "polars.parquet", "polars_cat.arrow", "polars_cat.parquet",
		"polars_ns.parquet", "duckdb.parquet", "duckdb_naive.parquet", "pandas_cat.parquet", "int96.parquet"} {
		t.Run(name, func(t *testing.T) {
			out, err := export(filepath.Join(tables, name))
			if err != nil {
				t.Fatal(err)
			}
			tbl := readTable(t, out)
			defer tbl.Release()
			if tbl.NumRows() != int64(len(s.rows)) {
				t.Fatalf("%d rows out, want %d", tbl.NumRows(), len(s.rows))
			}
			bad := 0
			for i, row := range s.rows {
				for c, f := range s.fields[:len(s.fields)-1] { // the timestamp's unit is the file's
					w := "(null)"
					switch v := row[c].(type) {
					case []any: // as ValueStr gives a list
						b, err := json.Marshal(v)
						if err != nil {
							t.Fatal(err)
						}
						w = string(b)
					case nil:
					default:
						w = fmt.Sprint(v)
					}
					if got := cellText(t, tbl, f.Name, int64(i)); got != w {
						t.Fatalf("row %d: column %q is %s, want %s", i+1, f.Name, got, w)
					}
				}
				for j, ref := range refs {
					if got := cell(t, tbl, ref.String(), int64(i)); !sameValue(got, want[i][j]) {
						if bad++; bad <= 10 {
							t.Errorf("row %d %v: %s = %#v, want %#v", i+1, row, ref, got, want[i][j])
						}
					}
				}
			}
		})
	}
	for name, want := range map[string]string{
		"duckdb_hugeint.parquet": `column "shop_id" (join key "shop_id" of entity "shop", int64) has type float64; want an integer type (DuckDB writes HUGEINT columns to Parquet as DOUBLE: cast them to BIGINT)`,
		"polars_date.parquet":    `timestamp column "event_timestamp" has type date32, a day and not an instant`,
	} {
		if _, err := export(filepath.Join(tables, name)); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v, want one naming the file and saying %s", name, err, want)
		}
	}
	empty, err := export(filepath.Join(tables, "duckdb_empty.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	tbl := readTable(t, empty)
	defer tbl.Release()
	if tbl.NumRows() != 0 || tbl.NumCols() != int64(len(s.fields)+len(refs)) {
		t.Errorf("from DuckDB's empty table: %d rows, %d columns", tbl.NumRows(), tbl.NumCols())
	}
}
