package cmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/featurestore/featurestore/featurestore/export"
	"github.com/featurestore/featurestore/featurestore/offline"
)

func exportCommand() *command {
	var (
		reg            registryFlags
		off            offlineFlags
		logs           logFlags
		version        int64
		entities       string
		entitiesFormat string
		tsColumn       string
		keyColumns     = map[string]string{}
		service        string
		features       string
		out            string
		format         string
		memory         string
		parallelism    int
		tempDir        string
		allowEmpty     bool
	)
	return &command{
		name:    "export",
		usage:   "export --entities FILE --out FILE (--service NAME | --features REFS) [flags]",
		summary: "Export a point-in-time correct training set.",
		long: `Write a training set: each row of the entity table (--entities: Parquet, CSV
or Arrow IPC, with the entities' join key columns, a timestamp column and any
label columns) with the value each requested feature had at the row's
timestamp, exactly as the online lookup would have served it then: windows
merged from the same tiles by the same code, last values by event time with
the view's TTL, and never an event after the row's timestamp. The events come
from the offline log in --offline-dir. Features are a feature service
(--service) or references view:feature, view:* (--features).

The output (--out: Parquet or Arrow IPC) has the entity table's columns, in
its row order, followed by one column per feature named view:feature, null
where the online lookup would give no value (not found, expired or null).
Memory stays near --memory whatever the input sizes: rows and events are
partitioned by entity key into spill files under --temp-dir, computed
--parallelism partitions at a time, and merged back in row order. Shows a
progress bar when stderr is a terminal.

A requested feature view with nothing committed in the offline log (a wrong
--offline-dir or --project, most often, or a log ingest has not committed
yet: it commits once a minute and when it stops) is an error, since its
features would be those of no events: null, counts 0. --allow-empty exports
them so, with a warning.`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			reg.register(fs)
			off.register(fs)
			logs.register(fs)
			fs.Int64Var(&version, "registry-version", 0, "Registry version whose definitions to use; 0 for the current one.")
			fs.StringVar(&entities, "entities", "", "Entity table file: Parquet (.parquet), CSV (.csv, with a header row) or Arrow IPC (.arrow, .arrows, .feather); or an s3://, gs:// or azblob:// object URL (SCHEME://BUCKET/KEY).")
			fs.StringVar(&entitiesFormat, "entities-format", "auto", "Format of the entity table: auto (from the extension), parquet, csv or arrow.")
			fs.StringVar(&tsColumn, "timestamp-column", export.DefaultTimestampColumn, "Entity table column with each row's time: a timestamp, or int64 milliseconds since the Unix epoch.")
			fs.Func("key-column", "Entity table column of a join key whose name differs, as join_key=column; repeat or separate with commas.", func(s string) error {
				for _, kv := range strings.Split(s, ",") {
					k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
					if !ok || k == "" || v == "" {
						return fmt.Errorf("%q: want join_key=column", kv)
					}
					keyColumns[k] = v
				}
				return nil
			})
			fs.StringVar(&service, "service", "", "Feature service whose features to export.")
			fs.StringVar(&features, "features", "", "Comma-separated feature references view:feature, or view:* for every feature of a view.")
			fs.StringVar(&out, "out", "", "Output file: Parquet (.parquet), Arrow IPC file (.arrow, .feather) or Arrow IPC stream (.arrows), written under a temporary name and renamed when complete; or an s3://, gs:// or azblob:// object URL (SCHEME://BUCKET/KEY), uploaded when complete.")
			fs.StringVar(&format, "format", "auto", "Format of the output: auto (from the extension), parquet or arrow.")
			fs.StringVar(&memory, "memory", "1GiB", "About how much memory the export may hold at once, like 512MiB or 4GiB.")
			fs.IntVar(&parallelism, "parallelism", 0, "Partitions computed at once; 0 for GOMAXPROCS (the CPUs the process may use).")
			fs.StringVar(&tempDir, "temp-dir", "", "Directory for spill files; empty for the system's temporary directory.")
			fs.BoolVar(&allowEmpty, "allow-empty", false, "Export feature views that have nothing committed in the offline log, as features of no events (null, counts 0), instead of failing.")
			return func(ctx context.Context, env *runEnv, args []string) error {
				switch {
				case len(args) != 0:
					return fmt.Errorf("%w: unexpected arguments %q", errUsage, args)
				case entities == "":
					return fmt.Errorf("%w: --entities is required", errUsage)
				case out == "":
					return fmt.Errorf("%w: --out is required", errUsage)
				case (service == "") == (features == ""):
					return fmt.Errorf("%w: give --service or --features", errUsage)
				case parallelism < 0:
					return fmt.Errorf("%w: --parallelism must not be negative", errUsage)
				}
				mem, err := parseMemory("--memory", memory)
				if err != nil {
					return err
				}
				inFormat, err := tableFormat("--entities-format", entitiesFormat)
				if err != nil {
					return err
				}
				outFormat, err := outputFormat(out, format)
				if err != nil {
					return err
				}
				log, err := logs.logger(env.stderr)
				if err != nil {
					return fmt.Errorf("%w: %v", errUsage, err)
				}
				st, closeSt, err := off.storage(ctx)
				if err != nil {
					return err
				}
				defer closeSt()
				snap, err := reg.snapshot(ctx, "--registry-version", version)
				if err != nil {
					return err
				}
				var refs []string
				for _, r := range strings.Split(features, ",") {
					if r = strings.TrimSpace(r); r != "" {
						refs = append(refs, r)
					}
				}
				// The Go runtime's soft limit keeps the heap near the budget
				// instead of letting it double between collections.
				if os.Getenv("GOMEMLIMIT") == "" {
					defer debug.SetMemoryLimit(debug.SetMemoryLimit(mem + mem/2))
				}
				opts := export.Options{
					Registry:        snap.Registry,
					Log:             &offlineLog{st: st, project: reg.project},
					Service:         service,
					Features:        refs,
					Entities:        entities,
					EntitiesFormat:  inFormat,
					KeyColumns:      keyColumns,
					TimestampColumn: tsColumn,
					Out:             out,
					OutFormat:       outFormat,
					Metadata: map[string]string{
						"featurestore.project":          reg.project,
						"featurestore.registry_version": strconv.FormatInt(snap.Version, 10),
					},
					Memory:      mem,
					Parallelism: parallelism,
					TempDir:     tempDir,
					Logger:      log,
				}
				if isTerminal(env.stderr) {
					opts.Progress = export.TerminalProgress(env.stderr)
				}
				// Object URLs go through local files (blobfile.go).
				if isObjectURL(entities) || isObjectURL(out) {
					dir, err := os.MkdirTemp(tempDir, "featurestore-export-")
					if err != nil {
						return err
					}
					defer os.RemoveAll(dir)
					if isObjectURL(entities) {
						opts.Entities = filepath.Join(dir, "entities-"+objectBase(entities))
						if err := downloadObject(ctx, entities, opts.Entities); err != nil {
							return err
						}
					}
					if isObjectURL(out) {
						opts.Out = filepath.Join(dir, "out-"+objectBase(out))
					}
				}
				empty, err := export.Uncommitted(ctx, opts)
				if err != nil {
					return err
				}
				if len(empty) > 0 {
					what := fmt.Sprintf("feature views %s have nothing committed in the offline log %s (project %q)", strings.Join(empty, ", "), off.dir, reg.project)
					if !allowEmpty {
						return fmt.Errorf("%s: check --offline-dir and --project; ingest commits its log once a minute and when it stops; --allow-empty exports them as features of no events (null, counts 0)", what)
					}
					fmt.Fprintf(env.stderr, "warning: %s: their features are those of no events (null, counts 0)\n", what)
				}
				stats, err := export.Run(ctx, opts)
				if err != nil {
					return err
				}
				if isObjectURL(out) {
					if err := uploadObject(ctx, opts.Out, out); err != nil {
						return err
					}
				}
				fmt.Fprintf(env.stdout, "wrote %d rows to %s in %s (%d events read, %d used)\n",
					stats.Rows, out, stats.Duration.Round(1e6), stats.Events, stats.EventsUsed)
				return nil
			}
		},
	}
}

// offlineLog reads the events of a project's feature views from the offline
// log, for the export.
type offlineLog struct {
	st      offline.Storage
	project string
}

// Committed implements export.LogCommits.
func (l *offlineLog) Committed(ctx context.Context, view string) (bool, error) {
	snap, err := offline.ReadSnapshot(ctx, l.st, l.project, view)
	if err != nil {
		return false, err
	}
	return snap.Seq > 0, nil
}

// Scan reads the files of a snapshot of the view's log that may hold events
// up to until. A file deleted under the scan (a compaction replaced it)
// makes the export scan the view again, from a new snapshot.
func (l *offlineLog) Scan(ctx context.Context, view string, until int64, fn func(arrow.RecordBatch) error) error {
	snap, err := offline.ReadSnapshot(ctx, l.st, l.project, view)
	if err != nil {
		return fmt.Errorf("offline log of feature view %q: %w", view, err)
	}
	err = offline.ScanMapped(ctx, l.st, snap, snap.Between(math.MinInt64, until), func(_ offline.FileInfo, rec arrow.RecordBatch) error {
		return fn(rec)
	})
	if errors.Is(err, offline.ErrNotExist) {
		return fmt.Errorf("offline log of feature view %q: %w (%w)", view, export.ErrLogChanged, err)
	}
	return err
}

// Size returns the bytes of the view's committed files.
func (l *offlineLog) Size(ctx context.Context, view string) (int64, error) {
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

// outputFormat parses --format, the format of the output file out, and
// with auto checks that out's extension names one: CSV is an input format
// only, and an export that only found out at the end would have read the
// registry and the offline log for nothing.
func outputFormat(out, format string) (export.Format, error) {
	switch format {
	case "auto", "":
		name := out
		if isObjectURL(out) {
			name = objectBase(out) // the URL's query is no extension
		}
		switch strings.ToLower(filepath.Ext(name)) {
		case ".parquet", ".pq", ".arrow", ".arrows", ".ipc", ".feather":
			return export.FormatAuto, nil
		case ".csv":
			return "", fmt.Errorf("%w: --out %q: CSV is an input format only; write Parquet (.parquet) or Arrow IPC (.arrow, .arrows, .feather)", errUsage, out)
		}
		return "", fmt.Errorf("%w: --out %q: cannot tell the output format from the extension: use .parquet, .arrow, .arrows or .feather, or give --format parquet or arrow", errUsage, out)
	case "parquet", "arrow":
		return export.Format(format), nil
	case "csv":
		return "", fmt.Errorf("%w: --format csv: CSV is an input format only; the output is parquet or arrow", errUsage)
	}
	return "", fmt.Errorf("%w: --format %q: use auto, parquet or arrow", errUsage, format)
}

// tableFormat parses a format flag of an input table.
func tableFormat(flagName, s string) (export.Format, error) {
	switch s {
	case "auto", "":
		return export.FormatAuto, nil
	case "parquet", "csv", "arrow":
		return export.Format(s), nil
	}
	return "", fmt.Errorf("%w: %s %q: use auto, parquet, csv or arrow", errUsage, flagName, s)
}

// parseMemory parses the memory budget of an export given by flagName; an
// error (a usage error) names the flag.
func parseMemory(flagName, s string) (int64, error) {
	n, err := parseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", errUsage, flagName, err)
	}
	if n < export.MinMemory {
		return 0, fmt.Errorf("%w: %s %s: an export needs at least 1MiB", errUsage, flagName, s)
	}
	return n, nil
}

// parseBytes parses a size: a number of bytes, optionally with a unit (KB,
// MB, GB, TB in powers of 1000; KiB, MiB, GiB, TiB in powers of 1024).
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	x, err := strconv.ParseFloat(num, 64)
	if err != nil || x <= 0 {
		return 0, fmt.Errorf("%q is not a positive size like 512MiB", s)
	}
	mult := map[string]float64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("%q: unknown unit %q (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)", s, unit)
	}
	if x*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if x*mult < 1 {
		return 0, fmt.Errorf("%q is less than one byte", s)
	}
	return int64(x * mult), nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
