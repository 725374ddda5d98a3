package cmd

import (
	"context"
	"errors"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// TestExportCommand writes events to a real offline log, exports the
// example fraud service for rows of a CSV file, and checks values worked
// out by hand: nothing before the first event, windows, last values, a card
// without events. The log is in a directory, then in an S3 bucket (the
// test S3 server) and in GCS and Azure buckets (the emulators), given to
// --offline-dir as an s3://, gs:// or azblob:// URL; with a bucket, the
// entity table and the training set are objects of it too.
func TestExportCommand(t *testing.T) {
	for _, where := range []string{"dir", "s3", "gs", "azblob"} {
		t.Run(where, func(t *testing.T) { testExportCommand(t, where) })
	}
}

func testExportCommand(t *testing.T, where string) {
	ctx := context.Background()
	dir := t.TempDir()
	env := map[string]string{"FEATURESTORE_REGISTRY": "file:" + filepath.Join(dir, "registry")}
	if code, out, errOut := runCLI(t, env, "apply", "../../examples"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	r, err := registry.LoadDir("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	logDir := offlineLocation(t, where, dir)
	st, closeSt, err := offline.Open(ctx, logDir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSt()
	w, err := offline.OpenWriter(ctx, st, "default", offline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const t0 = 1_795_687_200_000 // 2026-11-26T10:00:00Z
	type txn struct {
		at       int64
		card     string
		merchant string
		amount   float64
		country  string
	}
	txns := []txn{
		{t0, "c1", "m1", 10, "FR"},
		{t0 + 60_000, "c1", "m1", 20.5, "DE"},
		{t0 + 90_000, "c3", "m1", 1, "IT"},
	}
	for view, key := range map[string]func(txn) string{"card_txn": func(x txn) string { return x.card }, "merchant_txn": func(x txn) string { return x.merchant }} {
		s, err := offline.NewSchema("default", r, view)
		if err != nil {
			t.Fatal(err)
		}
		win, err := window.Compile(r.View(view), r.Source("card_transactions"))
		if err != nil {
			t.Fatal(err)
		}
		for off, x := range txns {
			fields := make([]featurestore.Value, len(win.Fields()))
			fields[win.FieldIndex("amount")] = featurestore.DoubleValue(x.amount)
			fields[win.FieldIndex("country")] = featurestore.StringValue(x.country)
			fields[win.FieldIndex("card_id")] = featurestore.StringValue(x.card)
			fields[win.FieldIndex("merchant_id")] = featurestore.StringValue(x.merchant)
			fields[win.FieldIndex("approved")] = featurestore.BoolValue(true)
			b := offline.Batch{Topic: "card_transactions", Partition: 0, IngestTime: x.at, End: offline.Position{Offset: int64(off)},
				Entities: []offline.EntityEvents{{Key: featurestore.StringKey(key(x)), Events: []window.Event{{Time: x.at, Offset: int64(off), Fields: fields}}}}}
			if err := w.Append(ctx, s, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "rows.csv")
	csv := "card_id,merchant_id,event_timestamp,label\n" +
		"c1,m1,2026-11-26T09:59:59.999Z,0.0\n" +
		"c1,m1,2026-11-26T10:00:30Z,1.0\n" +
		"c1,m1,2026-11-26T10:01:00Z,\n" +
		"c2,m1,2026-11-26T10:02:00Z,0.5\n"
	if err := os.WriteFile(in, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "train.parquet")
	entities, dest := in, out
	if where != "dir" {
		// The entity table and the training set as objects of the bucket.
		entities, dest = objectURL(t, logDir, "rows.csv"), objectURL(t, logDir, "train.parquet")
		if err := uploadObject(ctx, in, entities); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, errOut := runCLI(t, env, "export", "--offline-dir", logDir, "--entities", entities, "--service", "fraud_detection_v1", "--out", dest, "--memory", "64MiB")
	if code != 0 || !strings.Contains(stdout, "wrote 4 rows to "+dest) {
		t.Fatalf("export: exit %d\n%s%s", code, stdout, errOut)
	}
	if where != "dir" {
		if err := downloadObject(ctx, dest, out); err != nil {
			t.Fatal(err)
		}
		missing := objectURL(t, logDir, "nope.csv")
		if code, _, errOut := runCLI(t, env, "export", "--offline-dir", logDir, "--entities", missing, "--service", "fraud_detection_v1", "--out", dest); code != 1 || !strings.Contains(errOut, missing+": no such object") {
			t.Errorf("a missing entity table object: exit %d: %s", code, errOut)
		}
	}
	pf, err := file.OpenParquetFile(out, false)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	get := func(col string, row int) any {
		idx := tbl.Schema().FieldIndices(col)
		if len(idx) != 1 {
			t.Fatalf("no column %q in %s", col, tbl.Schema())
		}
		a := tbl.Column(idx[0]).Data().Chunk(0)
		if a.IsNull(row) {
			return nil
		}
		switch a := a.(type) {
		case *array.Int64:
			return a.Value(row)
		case *array.Float64:
			return a.Value(row)
		case *array.String:
			return a.Value(row)
		}
		return a.ValueStr(row)
	}
	want := map[string][]any{
		"card_id":                     {"c1", "c1", "c1", "c2"},
		"label":                       {0.0, 1.0, nil, 0.5},
		"card_txn:txn_count_10m":      {int64(0), int64(1), int64(2), int64(0)},
		"card_txn:amount_sum_1h":      {0.0, 10.0, 30.5, 0.0},
		"card_txn:last_country":       {nil, "FR", "DE", nil},
		"card_txn:declined_count_1h":  {int64(0), int64(0), int64(0), int64(0)},
		"merchant_txn:txn_count_1h":   {int64(0), int64(1), int64(2), int64(3)},
		"merchant_txn:amount_mean_1d": {nil, 10.0, 15.25, 31.5 / 3},
	}
	for col, vals := range want {
		for i, v := range vals {
			if got := get(col, i); got != v {
				t.Errorf("row %d %s = %v, want %v", i, col, got, v)
			}
		}
	}
	if v := pf.MetaData().KeyValueMetadata().FindValue("featurestore.registry_version"); v == nil || *v != "1" {
		t.Errorf("featurestore.registry_version metadata %v, want 1", v)
	}

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--offline-dir", logDir, "--service", "fraud_detection_v1", "--out", out}, 2, "--entities is required"},
		{[]string{"--offline-dir", logDir, "--entities", in, "--out", out}, 2, "give --service or --features"},
		{[]string{"--offline-dir", logDir, "--entities", in, "--features", "card_txn:nope", "--out", out}, 1, `unknown feature "nope" in feature view "card_txn"`},
		{[]string{"--offline-dir", logDir, "--entities", in, "--service", "fraud_detection_v1", "--out", out, "--memory", "lots"}, 2, `--memory: "lots" is not a positive size like 512MiB`},
		{[]string{"--entities", in, "--service", "fraud_detection_v1", "--out", out}, 2, "--offline-dir is required"},
	} {
		code, _, errOut := runCLI(t, env, append([]string{"export"}, c.args...)...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("export %v: exit %d, want %d with %q:\n%s", c.args, code, c.code, c.want, errOut)
		}
	}

	// A mistyped directory is an error, and is not created: read as an
	// empty log, it gave a training set of nulls and exit 0.
	if where == "dir" {
		typo := filepath.Join(dir, "ofline")
		code, _, errOut := runCLI(t, env, "export", "--offline-dir", typo, "--entities", in, "--service", "fraud_detection_v1", "--out", out)
		if code != 1 || !strings.Contains(errOut, "no such directory") {
			t.Errorf("export from a missing directory: exit %d:\n%s", code, errOut)
		}
		if _, err := os.Stat(typo); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("export created the missing directory %s: %v", typo, err)
		}
	}
	// A log with nothing committed for a requested view (a wrong
	// --offline-dir or --project) is an error that writes nothing, unless
	// --allow-empty: then the features are those of no events, with a
	// warning. Before, a scheduled export wrote counts of 0 and exited 0.
	if where == "dir" {
		empty := filepath.Join(dir, "empty")
		if err := os.Mkdir(empty, 0o755); err != nil {
			t.Fatal(err)
		}
		fresh := filepath.Join(dir, "never-written.parquet")
		args := []string{"export", "--offline-dir", empty, "--entities", in, "--features", "card_txn:txn_count_10m,merchant_txn:txn_count_1h", "--out", fresh}
		what := `feature views card_txn, merchant_txn have nothing committed in the offline log ` + empty + ` (project "default")`
		code, _, errOut := runCLI(t, env, args...)
		if code != 1 || !strings.Contains(errOut, what) || !strings.Contains(errOut, "--allow-empty") {
			t.Errorf("export from an empty log: exit %d, want 1 with %q and --allow-empty:\n%s", code, what, errOut)
		}
		if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a failed export wrote %s: %v", fresh, err)
		}
		withVar := maps.Clone(env)
		withVar["FEATURESTORE_ALLOW_EMPTY"] = "true"
		if code, _, _ := runCLI(t, withVar, args...); code != 1 {
			t.Errorf("FEATURESTORE_ALLOW_EMPTY allowed an empty log (exit %d); only the flag may", code)
		}
		code, _, errOut = runCLI(t, env, append(args, "--allow-empty")...)
		if code != 0 || !strings.Contains(errOut, "warning: "+what+": their features are those of no events (null, counts 0)") {
			t.Errorf("export --allow-empty from an empty log: exit %d, want 0 with the warning:\n%s", code, errOut)
		}
		for i, v := range readParquetCells(t, fresh)["card_txn:txn_count_10m"] {
			if v != int64(0) {
				t.Errorf("row %d: card_txn:txn_count_10m = %v from an empty log, want 0", i, v)
			}
		}
	}
	if code, _, errOut := runCLI(t, env, "export", "--offline-dir", logDir, "--entities", in, "--service", "fraud_detection_v1", "--out", out); code != 0 || strings.Contains(errOut, "warning") {
		t.Errorf("export: exit %d, stderr:\n%s", code, errOut)
	}
}

func TestParseBytes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{{"1024", 1024}, {"1KiB", 1024}, {"1.5GiB", 3 << 29}, {"2 MB", 2e6}, {"512MiB", 512 << 20}} {
		if got, err := parseBytes(c.in); err != nil || got != c.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "0", "-1GiB", "1XB", "GiB"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) accepted", in)
		}
	}
}

// objectURL returns the object URL of name under the prefix of the bucket
// URL bucket (the form of testenv.S3URL, GCSURL and AzureURL).
func objectURL(t *testing.T, bucket, name string) string {
	t.Helper()
	u, err := url.Parse(bucket)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	key := q.Get("prefix") + name
	q.Del("prefix")
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/" + key, RawQuery: q.Encode()}).String()
}

// TestExportRegistryVersionFlagName: a negative --registry-version is
// reported under its own name, not as "--version", a flag export does not
// have.
func TestExportRegistryVersionFlagName(t *testing.T) {
	env := fileRegistryEnv(t)
	code, _, errOut := runCLI(t, env, "export", "--registry-version", "-1", "--offline-dir", t.TempDir(),
		"--entities", "rows.csv", "--features", "card_txn:*", "--out", t.TempDir()+"/x.parquet")
	if code != 2 || !strings.Contains(errOut, "--registry-version") {
		t.Fatalf("export --registry-version -1: exit %d, want 2 naming --registry-version; got:\n%s", code, errOut)
	}
}

// TestParseBytesBelowOneByte: parseBytes promises a positive size, so a
// value below one byte is an error rather than 0 (export --memory 0.5 once
// ran with the default budget and a Go memory limit of 0).
func TestParseBytesBelowOneByte(t *testing.T) {
	for _, s := range []string{"0.5", "0.9B", "0.0001KB"} {
		n, err := parseBytes(s)
		if err == nil && n <= 0 {
			t.Errorf("parseBytes(%q) = %d, nil; want an error (not a positive size)", s, n)
		}
	}
}

// TestExportFormatCSV: CSV is an input format only: --format's error does
// not suggest it, and --format csv is a usage error at the flag check, not
// a failure after reading the registry and the offline log.
func TestExportFormatCSV(t *testing.T) {
	env := fileRegistryEnv(t)
	_, _, errOut := runCLI(t, env, "export", "--format", "xml", "--offline-dir", t.TempDir(),
		"--entities", "rows.csv", "--features", "card_txn:*", "--out", t.TempDir()+"/x.out")
	if strings.Contains(errOut, "csv") {
		t.Errorf("export --format xml suggests csv, which is no output format:\n%s", errOut)
	}
	code, _, errOut := runCLI(t, env, "export", "--format", "csv", "--allow-empty", "--offline-dir", t.TempDir(),
		"--entities", "rows.csv", "--features", "card_txn:*", "--out", t.TempDir()+"/x.csv")
	if code != 2 {
		t.Errorf("export --format csv: exit %d, want 2 (usage)\n%s", code, errOut)
	}
}
