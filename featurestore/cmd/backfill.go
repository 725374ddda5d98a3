package cmd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/featurestore/featurestore/featurestore/export"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/ingest"
)

func backfillCommand() *command {
	var (
		reg         registryFlags
		logs        logFlags
		version     int64
		source      string
		format      string
		offlineDir  string
		deadLetters string
		chunkRows   int
	)
	return &command{
		name:    "backfill",
		usage:   "backfill --source NAME [flags] FILE...",
		summary: "Load historical events from files into the online store and the offline log.",
		long: `Load the events of a source from Parquet, CSV or Arrow IPC files into its
online feature views in Redis and, with --offline-dir, into the offline log,
through the same routing, tiles and fenced writes as ingest. A file has one
column per path the source declares (its timestamp field, key fields and
fields, named as in the definition; other columns are ignored), typed as
the source declares them; CSV values are parsed row by row.

Effectively once: each file is a pseudo-topic backfill.<hash of its
contents> whose offsets are its row numbers, so an interrupted backfill run
again resumes where the offline log stands, and the online fences skip what
Redis applied; running it over a loaded file changes nothing. A changed file
is a new input: its rows are counted again.

No lateness check: every row is accepted whatever its age or order. Events
that no online lookup can read any more (older than a view's longest window
plus lateness, or its TTL, before now) are not written online, but are
logged offline. A missing column, or one of a type that cannot hold the
declared type, fails the file before any row is loaded; a bad row (no event
time, a value that does not parse, a missing join key) is written to
--dead-letters as a JSON line naming the file, row and reason, and counted.
Prints a summary per file; shows a progress bar when stderr is a terminal.`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			reg.register(fs)
			logs.register(fs)
			fs.Int64Var(&version, "registry-version", 0, "Registry version whose definitions to use; 0 for the current one.")
			fs.StringVar(&source, "source", "", "Source whose events the files hold.")
			fs.StringVar(&format, "format", "auto", "Format of the files: auto (from each extension), parquet, csv or arrow.")
			fs.StringVar(&offlineDir, "offline-dir", "", "Directory of the offline log the events of offline feature views are appended to; empty to write none.")
			fs.StringVar(&deadLetters, "dead-letters", "", "File the rejected rows are appended to, as JSON lines; empty to count them only.")
			fs.IntVar(&chunkRows, "chunk-rows", 16384, "Rows applied together.")
			return func(ctx context.Context, env *runEnv, files []string) error {
				switch {
				case len(files) == 0:
					return fmt.Errorf("%w: give at least one file", errUsage)
				case source == "":
					return fmt.Errorf("%w: --source is required", errUsage)
				case chunkRows <= 0:
					return fmt.Errorf("%w: --chunk-rows must be positive", errUsage)
				}
				inFormat, err := tableFormat("--format", format)
				if err != nil {
					return err
				}
				log, err := logs.logger(env.stderr)
				if err != nil {
					return fmt.Errorf("%w: %v", errUsage, err)
				}
				store, closeStore, err := reg.open(ctx)
				if err != nil {
					return err
				}
				defer closeStore()
				v := version
				if v == 0 {
					if v, err = store.Head(ctx); err != nil {
						return err
					}
					if v == 0 {
						return errors.New("nothing has been applied to the registry yet")
					}
				}
				snap, err := store.Get(ctx, v)
				if err != nil {
					return err
				}
				src := snap.Registry.Source(source)
				if src == nil {
					return fmt.Errorf("registry version %d has no source %q", v, source)
				}
				rc := reg.redis.client()
				defer rc.Close()
				cfg := ingest.BackfillConfig{
					Project:   reg.project,
					Registry:  snap.Registry,
					Source:    src,
					Store:     online.New(rc, online.Options{}),
					Format:    inFormat,
					ChunkRows: chunkRows,
					Logger:    log,
				}
				if offlineDir != "" {
					st, err := offline.NewDir(offlineDir)
					if err != nil {
						return fmt.Errorf("offline log: %w", err)
					}
					if cfg.Offline, err = offline.OpenWriter(ctx, st, reg.project, offline.Options{Logger: log, OrphanGrace: time.Hour}); err != nil {
						return fmt.Errorf("offline log in %s: %w", offlineDir, err)
					}
				}
				var letters int64
				var examples []ingest.BackfillLetter
				var dlq *bufio.Writer
				if deadLetters != "" {
					fh, err := os.OpenFile(deadLetters, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
					if err != nil {
						return fmt.Errorf("dead letters: %w", err)
					}
					defer fh.Close()
					dlq = bufio.NewWriter(fh)
				}
				enc := json.NewEncoder(dlq)
				cfg.DeadLetters = func(l ingest.BackfillLetter) error {
					letters++
					if dlq == nil {
						if len(examples) < 5 {
							examples = append(examples, l)
						}
						return nil
					}
					if err := enc.Encode(l); err != nil {
						return fmt.Errorf("dead letters: %w", err)
					}
					return nil
				}
				if isTerminal(env.stderr) {
					bar := export.TerminalProgress(env.stderr)
					cfg.Progress = func(p ingest.BackfillProgress) {
						bar(export.Progress{Phase: "backfill " + p.File, Done: p.Done, Total: p.Total, Unit: "rows", Elapsed: p.Elapsed, Final: p.Final})
					}
				}
				start := time.Now()
				results, err := ingest.Backfill(ctx, cfg, files)
				// The rejected rows of what was loaded are kept, also when a
				// later file failed.
				if dlq != nil {
					if ferr := dlq.Flush(); ferr != nil && err == nil {
						err = fmt.Errorf("dead letters: %w", ferr)
					}
				}
				for _, r := range results {
					fmt.Fprintf(env.stdout, "%s: %d rows read, %d skipped as loaded before; online: %d applied, %d already applied, %d too old to be read; offline: %d logged; rejected: %s\n",
						r.File, r.Rows, r.Skipped, r.Applied, r.Duplicates, r.Expired, r.Logged, rejectedSummary(r))
				}
				if err != nil {
					return err
				}
				if letters > 0 {
					if dlq != nil {
						fmt.Fprintf(env.stdout, "%d rejected rows or uses written to %s\n", letters, deadLetters)
					} else {
						fmt.Fprintf(env.stdout, "%d rejected rows or uses (give --dead-letters FILE to keep them), the first:\n", letters)
						for _, l := range examples {
							fmt.Fprintf(env.stdout, "  %s row %d: %s %s %s\n", l.File, l.Row, l.Reason, l.View, l.Detail)
						}
					}
				}
				fmt.Fprintf(env.stdout, "backfilled %d files in %s\n", len(results), time.Since(start).Round(time.Millisecond))
				return nil
			}
		},
	}
}

// rejectedSummary lists a file's rejected rows by reason, and its uses
// without a join key.
func rejectedSummary(r ingest.BackfillResult) string {
	var parts []string
	for reason, n := range r.Rejected {
		parts = append(parts, fmt.Sprintf("%d %s", n, reason))
	}
	sort.Strings(parts)
	if r.MissingKey > 0 {
		parts = append(parts, fmt.Sprintf("%d uses by a view without its join key", r.MissingKey))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
