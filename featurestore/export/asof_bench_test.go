package export

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// The export benchmark of the offline store issue: 10M events over 100k
// entities, an entity table of 1M rows, 6 windowed features and 2 last
// values. The export runs in a child process (this test binary again), so
// that its peak RSS is its own; in the same run DuckDB (Python, from
// testenv.Python) computes the last-value part with ASOF JOIN over the same
// events as Parquet, timed around the query only, its result materialised
// as an Arrow table (testdata/asof.py).
//
// FEATURESTORE_BENCH_EXPORT_SCALE scales the sizes: 0.05 by default (500k
// events, 5k entities, 50k rows: seconds), 1 for the full size.
// The generated data is kept under the user's cache directory
// (featurestore/bench/export-*), since generating it takes longer than
// exporting it; delete the directory to free the space.

const asofDefs = `
kind: Entity
name: user
join_keys: [{name: user_id, type: string}]
---
kind: Source
name: events
kafka: {topic: events}
timestamp: {field: ts, encoding: epoch_ms}
keys: {user_id: user_id}
fields: {amount: double, cat: string}
allowed_lateness: 0s
---
kind: FeatureView
name: activity
entity: user
source: events
tile: 5m
ttl: 7d
features:
  - {name: n_1h, aggregation: count, window: 1h}
  - {name: amount_sum_1h, aggregation: sum, field: amount, window: 1h}
  - {name: n_1d, aggregation: count, window: 1d}
  - {name: amount_mean_1d, aggregation: mean, field: amount, window: 1d}
  - {name: amount_max_1d, aggregation: max, field: amount, window: 1d}
  - {name: amount_sum_7d, aggregation: sum, field: amount, window: 7d}
  - {name: amount, field: amount, type: double}
  - {name: cat, field: cat, type: string}
---
kind: OnDemandFeatureView
name: activity_ratios
inputs: {n_1h: activity:n_1h, n_1d: activity:n_1d, amount: activity:amount, mean_1d: activity:amount_mean_1d, max_1d: activity:amount_max_1d}
features:
  - {name: share_1h, type: double, expression: "n_1d > 0 ? n_1h / n_1d : 0.0"}
  - {name: last_over_mean, type: double, expression: "amount / mean_1d"}
  - {name: last_is_max, type: bool, expression: "amount == max_1d"}
`

const (
	asofProject = "bench"
	asofT0      = 1_793_491_200_000 // 2026-11-01T00:00:00Z
	asofSpan    = 30 * 86_400_000   // the events' 30 days
	asofTTL     = 7 * 86_400_000
	asofParts   = 8 // Kafka partitions, by entity
	// asofVersion names the generator: bump it when the data changes.
	asofVersion = 1
	// asofMemory is the export's memory budget, the command's default.
	asofMemory = DefaultMemory
	asofEnv    = "FEATURESTORE_BENCH_EXPORT_SCALE"
	asofChild  = "FEATURESTORE_EXPORT_BENCH_CHILD"
	// asofProfile, when set, names a file the export child writes its CPU
	// profile to.
	asofProfile = "FEATURESTORE_BENCH_EXPORT_CPUPROFILE"
	// asofDebug, when set, makes the export child log its steps to stderr.
	asofDebug = "FEATURESTORE_BENCH_EXPORT_DEBUG"
)

type asofSize struct{ events, entities, rows int }

// asofSizeFromEnv returns the benchmark's size: the issue's, scaled.
func asofSizeFromEnv(b *testing.B) asofSize {
	scale := 0.05
	if v := os.Getenv(asofEnv); v != "" {
		var err error
		if scale, err = strconv.ParseFloat(v, 64); err != nil || scale <= 0 || scale > 10 {
			b.Fatalf("%s=%q: want a scale in (0, 10], 1 for the full size", asofEnv, v)
		}
	}
	return asofSize{events: int(10e6 * scale), entities: max(int(100e3*scale), 1), rows: max(int(1e6*scale), 1)}
}

func asofRegistry(t testing.TB) *registry.Registry {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"bench.yaml": []byte(asofDefs)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// asofDataset returns the directory of the data set of size, generating it
// on first use: offline/ (the offline log, through the real writer),
// events.parquet (the same events) and entities.parquet (the entity table).
func asofDataset(b *testing.B, size asofSize) string {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "featurestore", "bench", fmt.Sprintf("export-v%d-%d-%d-%d", asofVersion, size.events, size.entities, size.rows))
	if _, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		return dir
	}
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", dir, os.Getpid())
	defer os.RemoveAll(tmp)
	start := time.Now()
	if err := generateAsof(context.Background(), tmp, size, asofRegistry(b)); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %d events over %d entities and %d entity rows in %s, in %s", size.events, size.entities, size.rows, dir, time.Since(start).Round(time.Millisecond))
	return dir
}

// generateAsof writes the data set: events at uniform random times over 30
// days, each of a uniform random entity, in time order within each of
// asofParts partitions (by entity, as Kafka keys them); amount null one
// time in 20; entity rows at uniform random times after the first day.
func generateAsof(ctx context.Context, dir string, size asofSize, r *registry.Registry) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(2026, 11))
	times := make([]int64, size.events)
	for i := range times {
		times[i] = asofT0 + rng.Int64N(asofSpan)
	}
	slices.Sort(times)
	users := make([]string, size.entities)
	for i := range users {
		users[i] = fmt.Sprintf("u%07d", i)
	}
	cats := make([]string, 20)
	for i := range cats {
		cats[i] = fmt.Sprintf("cat-%02d", i)
	}

	st, err := offline.NewDir(filepath.Join(dir, "offline"))
	if err != nil {
		return err
	}
	w, err := offline.OpenWriter(ctx, st, asofProject, offline.Options{})
	if err != nil {
		return err
	}
	schema, err := offline.NewSchema(asofProject, r, "activity")
	if err != nil {
		return err
	}
	if f, err := window.SourceFields(r.Source("events")); err != nil || len(f) != 2 || f[0].Name != "amount" || f[1].Name != "cat" {
		return fmt.Errorf("source fields %v, %v: want amount, cat", f, err)
	}
	ts := &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	evSchema := arrow.NewSchema([]arrow.Field{
		{Name: "user_id", Type: arrow.BinaryTypes.String},
		{Name: "event_time", Type: ts},
		{Name: "partition", Type: arrow.PrimitiveTypes.Int32},
		{Name: "offset", Type: arrow.PrimitiveTypes.Int64},
		{Name: "amount", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "cat", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	evFile, err := newParquetFile(filepath.Join(dir, "events.parquet"), evSchema)
	if err != nil {
		return err
	}
	bld := array.NewRecordBuilder(memory.DefaultAllocator, evSchema)
	defer bld.Release()

	type pending struct {
		b      offline.Batch
		byUser map[int]int // index in b.Entities
		n      int
	}
	pend := make([]pending, asofParts)
	for p := range pend {
		pend[p] = pending{b: offline.Batch{Topic: "events", Partition: int32(p)}, byUser: map[int]int{}}
	}
	offsets := make([]int64, asofParts)
	appendBatch := func(p int) error {
		pb := &pend[p]
		if pb.n == 0 {
			return nil
		}
		if err := w.Append(ctx, schema, pb.b); err != nil {
			return err
		}
		pb.b.Entities, pb.n = nil, 0
		clear(pb.byUser)
		return nil
	}
	for _, t := range times {
		u := rng.IntN(size.entities)
		p := u % asofParts
		off := offsets[p]
		offsets[p]++
		fields := make([]featurestore.Value, 2)
		amount := float64(rng.IntN(100_000)) / 100
		hasAmount := rng.IntN(20) > 0
		if hasAmount {
			fields[0] = featurestore.DoubleValue(amount)
		}
		cat := cats[rng.IntN(len(cats))]
		fields[1] = featurestore.StringValue(cat)
		pb := &pend[p]
		i, ok := pb.byUser[u]
		if !ok {
			i = len(pb.b.Entities)
			pb.byUser[u] = i
			pb.b.Entities = append(pb.b.Entities, offline.EntityEvents{Key: featurestore.StringKey(users[u])})
		}
		pb.b.Entities[i].Events = append(pb.b.Entities[i].Events, window.Event{Time: t, Partition: int32(p), Offset: off, Fields: fields})
		pb.b.IngestTime, pb.b.End = t, offline.Position{Offset: off, HW: t, HasHW: true}
		if pb.n++; pb.n == 20_000 {
			if err := appendBatch(p); err != nil {
				return err
			}
		}

		bld.Field(0).(*array.StringBuilder).Append(users[u])
		bld.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(t))
		bld.Field(2).(*array.Int32Builder).Append(int32(p))
		bld.Field(3).(*array.Int64Builder).Append(off)
		if hasAmount {
			bld.Field(4).(*array.Float64Builder).Append(amount)
		} else {
			bld.Field(4).AppendNull()
		}
		bld.Field(5).(*array.StringBuilder).Append(cat)
		if bld.Field(0).Len() == 1<<20 {
			if err := evFile.write(bld); err != nil {
				return err
			}
		}
	}
	for p := range pend {
		if err := appendBatch(p); err != nil {
			return err
		}
	}
	if err := w.Close(ctx); err != nil {
		return err
	}
	if err := evFile.close(bld); err != nil {
		return err
	}

	rowSchema := arrow.NewSchema([]arrow.Field{
		{Name: "user_id", Type: arrow.BinaryTypes.String},
		{Name: DefaultTimestampColumn, Type: ts},
		{Name: "label", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	rowFile, err := newParquetFile(filepath.Join(dir, "entities.parquet"), rowSchema)
	if err != nil {
		return err
	}
	rb := array.NewRecordBuilder(memory.DefaultAllocator, rowSchema)
	defer rb.Release()
	for range size.rows {
		rb.Field(0).(*array.StringBuilder).Append(users[rng.IntN(size.entities)])
		rb.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(asofT0 + 86_400_000 + rng.Int64N(asofSpan-86_400_000)))
		rb.Field(2).(*array.Int64Builder).Append(rng.Int64N(2))
		if rb.Field(0).Len() == 128<<10 {
			if err := rowFile.write(rb); err != nil {
				return err
			}
		}
	}
	return rowFile.close(rb)
}

// parquetFile writes record batches to a Parquet file, Snappy-compressed,
// with the Arrow schema stored.
type parquetFile struct {
	fh *os.File
	bw *bufio.Writer
	w  *pqarrow.FileWriter
}

func newParquetFile(path string, schema *arrow.Schema) (*parquetFile, error) {
	fh, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(fh, 1<<20)
	w, err := pqarrow.NewFileWriter(schema, bw, parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Snappy), parquet.WithMaxRowGroupLength(1<<20)),
		pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		fh.Close()
		return nil, err
	}
	return &parquetFile{fh: fh, bw: bw, w: w}, nil
}

// write writes the builder's rows as one row group.
func (f *parquetFile) write(b *array.RecordBuilder) error {
	rec := b.NewRecordBatch()
	defer rec.Release()
	return f.w.Write(rec)
}

func (f *parquetFile) close(b *array.RecordBuilder) error {
	if b.Field(0).Len() > 0 {
		if err := f.write(b); err != nil {
			return err
		}
	}
	err := f.w.Close()
	if err == nil {
		err = f.bw.Flush()
	}
	if cerr := f.fh.Close(); err == nil {
		err = cerr
	}
	return err
}

// asofJob is what the child process exports, and what it reports.
type asofJob struct {
	Dir, Out, TempDir string
	Features          []string
	Memory            int64
}

type asofResult struct {
	Seconds, CPUSeconds float64 // wall and CPU (all threads) time of Run
	Rows, Events, Used  int64
	Spilled             int64
	PeakRSSKB           int64
}

// peakRSSKB returns the peak resident set size of this process, in KiB:
// VmHWM, which counts this program only. Not the rusage of the child seen
// from the parent, whose maxrss keeps the parent's own peak across the
// fork and exec.
func peakRSSKB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err == nil {
					return n
				}
			}
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		return int64(ru.Maxrss)
	}
	return 0
}

// cpuSeconds returns the CPU time this process used so far, all threads.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

const asofResultPrefix = "asof-export-result: "

// TestExportBenchHelperProcess is the export of BenchmarkExportVsDuckDB, in
// a process of its own; it does nothing unless the benchmark started it.
func TestExportBenchHelperProcess(t *testing.T) {
	arg := os.Getenv(asofChild)
	if arg == "" {
		return
	}
	var job asofJob
	if err := json.Unmarshal([]byte(arg), &job); err != nil {
		t.Fatal(err)
	}
	// As featurestore export does: keep the heap near the budget.
	debug.SetMemoryLimit(job.Memory + job.Memory/2)
	st, err := offline.NewDir(filepath.Join(job.Dir, "offline"))
	if err != nil {
		t.Fatal(err)
	}
	if path := os.Getenv(asofProfile); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv(asofDebug) != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	start, cpu := time.Now(), cpuSeconds()
	stats, err := Run(context.Background(), Options{Registry: asofRegistry(t), Log: &dirLog{st: st, project: asofProject},
		Features: job.Features, Entities: filepath.Join(job.Dir, "entities.parquet"), Out: job.Out,
		Memory: job.Memory, TempDir: job.TempDir, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	res, _ := json.Marshal(asofResult{Seconds: time.Since(start).Seconds(), CPUSeconds: cpuSeconds() - cpu, Rows: stats.Rows, Events: stats.Events, Used: stats.EventsUsed,
		Spilled: stats.Spilled, PeakRSSKB: peakRSSKB()})
	fmt.Printf("%s%s\n", asofResultPrefix, res)
}

// duckResult is what testdata/asof.py reports.
type duckResult struct {
	Seconds      []float64 `json:"seconds"`
	CPUSeconds   []float64 `json:"cpu_seconds"`
	Rows         int64     `json:"rows"`
	AmountValues int64     `json:"amount_values"`
	AmountSum    float64   `json:"amount_sum"`
	CatValues    int64     `json:"cat_values"`
	MaxRSSKB     int64     `json:"maxrss_kb"`
}

// BenchmarkExportVsDuckDB runs the export of the benchmark and
// DuckDB's ASOF JOIN over the same data, and reports the export's rows/s
// and events/s, its peak RSS, both durations and their ratio
// (duckdb/export: above 1, the export is faster), and the same for the CPU
// time of all threads, which a machine busy with other work distorts less.
// ns/op is the export child's wall time, process start included. The first
// run checks that both agree on the last values: as many non-null values,
// the same sum.
//
// features=all is the export: 6 windows and 2 last values.
// features=last-values exports the 2 last values alone, the work DuckDB's
// query does.
//
//	go test -run '^$' -bench ExportVsDuckDB -benchtime 1x -count 5 ./featurestore/export
//	FEATURESTORE_BENCH_EXPORT_SCALE=1 go test -run '^$' -bench ExportVsDuckDB -benchtime 1x -count 5 -timeout 60m ./featurestore/export
func BenchmarkExportVsDuckDB(b *testing.B) {
	py := testenv.Python(b)
	size := asofSizeFromEnv(b)
	dir := asofDataset(b, size)
	for _, sel := range []struct {
		name     string
		features []string
	}{
		{"all", []string{"activity:*"}},
		{"last-values", []string{"activity:amount", "activity:cat"}},
		// The same with 3 on-demand features computed from 5 of them: what
		// the expressions cost at each row.
		{"all+on-demand", []string{"activity:*", "activity_ratios:*"}},
	} {
		name := fmt.Sprintf("events=%d/entities=%d/rows=%d/features=%s", size.events, size.entities, size.rows, sel.name)
		b.Run(name, func(b *testing.B) { benchAsof(b, py, dir, size, sel.features) })
	}
}

// benchAsof runs one selection of features; see BenchmarkExportVsDuckDB.
func benchAsof(b *testing.B, py, dir string, size asofSize, features []string) {
	tmp := b.TempDir()
	out := filepath.Join(tmp, "train.arrow")
	job, _ := json.Marshal(asofJob{Dir: dir, Out: out, TempDir: tmp, Features: features, Memory: asofMemory})
	var exportS, exportCPU, duckS, duckCPU, rssKB, duckRSSKB float64
	var res asofResult
	b.ResetTimer()
	for i := range b.N {
		cmd := exec.Command(os.Args[0], "-test.run=^TestExportBenchHelperProcess$", "-test.count=1", "-test.timeout=0")
		cmd.Env = append(os.Environ(), asofChild+"="+string(job))
		cmd.Stderr = os.Stderr
		stdout, err := cmd.Output()
		if err != nil {
			b.Fatalf("export child: %v\n%s", err, stdout)
		}
		line, ok := findLine(string(stdout), asofResultPrefix)
		if !ok {
			b.Fatalf("export child reported nothing:\n%s", stdout)
		}
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			b.Fatal(err)
		}
		exportS += res.Seconds
		exportCPU += res.CPUSeconds
		rssKB += float64(res.PeakRSSKB)

		b.StopTimer()
		duck := runAsof(b, py, dir)
		duckS += duck.Seconds[0]
		duckCPU += duck.CPUSeconds[0]
		duckRSSKB += float64(duck.MaxRSSKB)
		if i == 0 {
			checkAsof(b, out, size, duck)
		}
		os.Remove(out)
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(res.Rows)*n/exportS, "rows/s")
	b.ReportMetric(float64(res.Events)*n/exportS, "events/s")
	b.ReportMetric(exportS/n, "export-s")
	b.ReportMetric(rssKB/n/1024, "peak-RSS-MiB")
	b.ReportMetric(duckS/n, "duckdb-s")
	b.ReportMetric(duckRSSKB/n/1024, "duckdb-peak-RSS-MiB")
	b.ReportMetric(duckS/exportS, "duckdb/export")
	b.ReportMetric(exportCPU/n, "export-cpu-s")
	b.ReportMetric(duckCPU/n, "duckdb-cpu-s")
	b.ReportMetric(duckCPU/exportCPU, "duckdb-cpu/export-cpu")
}

func findLine(s, prefix string) (string, bool) {
	for _, l := range strings.Split(s, "\n") {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			return rest, true
		}
	}
	return "", false
}

// runAsof runs DuckDB's ASOF JOIN once, in a Python process.
func runAsof(b *testing.B, py, dir string) duckResult {
	cmd := exec.Command(py, filepath.Join("testdata", "asof.py"), "--events", filepath.Join(dir, "events.parquet"),
		"--entities", filepath.Join(dir, "entities.parquet"), "--ttl-ms", strconv.Itoa(asofTTL), "--runs", "1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("asof.py: %v\n%s", err, out)
	}
	var res duckResult
	if err := json.Unmarshal(out, &res); err != nil || len(res.Seconds) != 1 || len(res.CPUSeconds) != 1 {
		b.Fatalf("asof.py: %v\n%s", err, out)
	}
	return res
}

// checkAsof compares the export's last values with DuckDB's: the number of
// rows, of non-null values of each, and the sum of the amounts.
func checkAsof(b *testing.B, out string, size asofSize, duck duckResult) {
	tbl := readTable(b, out)
	defer tbl.Release()
	var amounts, cats int64
	var sum float64
	for _, c := range []string{"activity:amount", "activity:cat"} {
		idx := tbl.Schema().FieldIndices(c)
		if len(idx) != 1 {
			b.Fatalf("no column %q", c)
		}
		for _, ch := range tbl.Column(idx[0]).Data().Chunks() {
			valid := int64(ch.Len() - ch.NullN())
			if c == "activity:cat" {
				cats += valid
				continue
			}
			amounts += valid
			for i, v := range ch.(*array.Float64).Float64Values() {
				if ch.IsValid(i) {
					sum += v
				}
			}
		}
	}
	if tbl.NumRows() != int64(size.rows) || duck.Rows != int64(size.rows) || amounts != duck.AmountValues || cats != duck.CatValues ||
		math.Abs(sum-duck.AmountSum) > 1e-9*math.Abs(sum) {
		b.Fatalf("export: %d rows, %d amounts summing to %f, %d cats; DuckDB: %d rows, %d amounts summing to %f, %d cats",
			tbl.NumRows(), amounts, sum, cats, duck.Rows, duck.AmountValues, duck.AmountSum, duck.CatValues)
	}
}
