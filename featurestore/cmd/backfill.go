package cmd

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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
		kafka       kafkaFlags
		fromKafka   bool
		batchSize   int
		version     int64
		source      string
		format      string
		offlineDir  string
		deadLetters string
		chunkRows   int
	)
	return &command{
		name:    "backfill",
		usage:   "backfill --source NAME [flags] (FILE... | --from-kafka)",
		summary: "Load historical events from files into the online store and the offline log.",
		long: `Load the events of a source from Parquet, CSV or Arrow IPC files into its
online feature views in Redis and, with --offline-dir, into the offline log,
through the same routing, tiles and fenced writes as ingest. A file has one
column per path the source declares (its timestamp field, key fields and
fields, named as in the definition; other columns are ignored), typed as
the source declares them; CSV values are parsed row by row. A FILE may be an
object URL, s3://BUCKET/KEY?params, gs://BUCKET/KEY?params or
azblob://CONTAINER/KEY?params (the parameters of the offline log's bucket
URLs), downloaded to a temporary directory first.

Effectively once: each file is a pseudo-topic backfill.<hash of its
contents> whose offsets are its row numbers, so an interrupted backfill run
again resumes where the offline log stands, and the online fences skip what
Redis applied; running it over a loaded file changes nothing. A changed file
is a new input: its rows are counted again.

No lateness check: every row is accepted whatever its age or order, but
for rows more than the source's max_future_skew ahead of the clock. Events
that no online lookup can read any more (older than a view's longest window
plus lateness, or its TTL, before now) are not written online, but are
logged offline. A missing column, or one of a type that cannot hold the
declared type, fails the file before any row is loaded; a bad row (no event
time, a value that does not parse, a missing join key) is written to
--dead-letters as a JSON line naming the file, row and reason, and counted.
Prints a summary per file; shows a progress bar when stderr is a terminal.
Flags go before the files: an argument after the first file that starts
with - is refused before anything is loaded.

With --from-kafka instead of files, replay the source's topic from its
earliest offset up to its end when the replay starts, through ingest's
applier (lateness checks included), with positions of its own apart from
ingest's: the online fences and the offline log's positions skip what ingest
applied, so only what is missing is added (the history of a new view, or of
a cleared store), and replaying again adds nothing. Do not replay with
--offline-dir while ingest appends to the same log.`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			reg.register(fs)
			reg.redis.registerEviction(fs)
			reg.redis.registerReplicas(fs)
			logs.register(fs)
			fs.Int64Var(&version, "registry-version", 0, "Registry version whose definitions to use; 0 for the current one.")
			fs.StringVar(&source, "source", "", "Source whose events the files hold.")
			fs.StringVar(&format, "format", "auto", "Format of the files: auto (from each extension), parquet, csv or arrow.")
			fs.StringVar(&offlineDir, "offline-dir", "", "Directory of the offline log the events of offline feature views are appended to, or an s3://, gs:// or azblob:// bucket URL; empty to write none.")
			fs.StringVar(&deadLetters, "dead-letters", "", "File the rejected rows are appended to, as JSON lines; empty to count them only.")
			fs.IntVar(&chunkRows, "chunk-rows", 16384, "Rows applied together.")
			kafka.register(fs)
			fs.BoolVar(&fromKafka, "from-kafka", false, "Replay the source's Kafka topic from its earliest offset instead of loading files.")
			fs.IntVar(&batchSize, "batch-size", 1000, "With --from-kafka: most messages of one partition applied together.")
			return func(ctx context.Context, env *runEnv, files []string) error {
				// Parsing stops at the first file: a flag after it would be
				// taken for a file, after the files before it were loaded
				// without the flag.
				for _, f := range files {
					if strings.HasPrefix(f, "-") {
						return fmt.Errorf("%w: %q after the first file: flags go before the files (a file whose name starts with - is ./%s)", errUsage, f, f)
					}
				}
				switch {
				case len(files) == 0 && !fromKafka:
					return fmt.Errorf("%w: give at least one file, or --from-kafka", errUsage)
				case len(files) > 0 && fromKafka:
					return fmt.Errorf("%w: give files or --from-kafka, not both", errUsage)
				case batchSize <= 0:
					return fmt.Errorf("%w: --batch-size must be positive", errUsage)
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
				snap, err := reg.snapshot(ctx, "--registry-version", version)
				if err != nil {
					return err
				}
				src := snap.Registry.Source(source)
				if src == nil {
					var names []string
					for _, s := range snap.Registry.Sources {
						names = append(names, s.Name)
					}
					return fmt.Errorf("%w: registry version %d has no source %q (its sources: %s)", errUsage, snap.Version, source, strings.Join(names, ", "))
				}
				storeOpts, err := reg.redis.storeOptions()
				if err != nil {
					return err
				}
				rc, err := reg.redis.client()
				if err != nil {
					return err
				}
				defer rc.Close()
				if err := reg.redis.checkMode(ctx, rc); err != nil {
					return err
				}
				if err := reg.redis.checkEviction(ctx, rc, log); err != nil {
					return err
				}
				reg.redis.checkReplication(ctx, rc, log)
				cfg := ingest.BackfillConfig{
					Project:   reg.project,
					Registry:  snap.Registry,
					Source:    src,
					Store:     online.New(rc, storeOpts),
					Format:    inFormat,
					ChunkRows: chunkRows,
					Logger:    log,
				}
				if offlineDir != "" {
					st, closeSt, err := offline.Open(ctx, offlineDir)
					if err != nil {
						return fmt.Errorf("offline log: %w", err)
					}
					defer closeSt()
					if cfg.Offline, err = offline.OpenWriter(ctx, st, reg.project, offline.Options{Logger: log, OrphanGrace: time.Hour}); err != nil {
						return fmt.Errorf("offline log in %s: %w", offlineDir, err)
					}
				}
				var letters int64
				var examples []ingest.BackfillLetter
				var dlq *bufio.Writer
				var dlqFile *os.File
				if deadLetters != "" {
					fh, err := os.OpenFile(deadLetters, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
					if err != nil {
						return fmt.Errorf("dead letters: %w", err)
					}
					defer fh.Close()
					dlq, dlqFile = bufio.NewWriter(fh), fh
				}
				unsynced := false // letters written since the last sync
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
					unsynced = true
					return nil
				}
				// Before the offline log commits rows, their letters are on
				// disk: a run resumed after a crash does not read them again.
				cfg.SyncDeadLetters = func() error {
					if !unsynced {
						return nil
					}
					if err := dlq.Flush(); err != nil {
						return err
					}
					if err := dlqFile.Sync(); err != nil {
						return err
					}
					unsynced = false
					return nil
				}
				if isTerminal(env.stderr) {
					bar := export.TerminalProgress(env.stderr)
					cfg.Progress = func(p ingest.BackfillProgress) {
						bar(export.Progress{Phase: "backfill " + p.File, Done: p.Done, Total: p.Total, Unit: "rows", Elapsed: p.Elapsed, Final: p.Final})
					}
				}
				start := time.Now()
				if fromKafka {
					resolve, err := kafka.resolver()
					if err != nil {
						return fmt.Errorf("%w: %v", errUsage, err)
					}
					brokers, err := resolve(src)
					if err != nil {
						return fmt.Errorf("%w: %v", errUsage, err)
					}
					dialer, err := kafka.security.dialer()
					if err != nil {
						return fmt.Errorf("%w: %v", errUsage, err)
					}
					res, err := ingest.Replay(ctx, ingest.ReplayConfig{
						Project: reg.project, Registry: snap.Registry, Source: src, Brokers: brokers, Dialer: dialer,
						Store: cfg.Store, Positions: ingest.NewPositions(rc, reg.project+".backfill"), Offline: cfg.Offline,
						BatchSize: batchSize, DeadLetters: cfg.DeadLetters, SyncDeadLetters: cfg.SyncDeadLetters, Progress: cfg.Progress, Logger: log,
					})
					if dlq != nil {
						if ferr := dlq.Flush(); ferr != nil && err == nil {
							err = fmt.Errorf("dead letters: %w", ferr)
						}
					}
					var read int64
					for _, n := range res.Messages {
						read += n
					}
					fmt.Fprintf(env.stdout, "replayed %d messages of topic %s in %s; rejected: %s\n", read, res.Topic,
						time.Since(start).Round(time.Millisecond), rejectedSummary(ingest.BackfillResult{Rejected: res.Rejected}))
					if err != nil {
						return err
					}
					printLetters(env.stdout, letters, deadLetters, examples)
					return nil
				}
				// Object URLs are downloaded first (blobfile.go); the
				// results and dead letters name them as given.
				given := map[string]string{} // by local path
				var tmp string
				for i, f := range files {
					if !isObjectURL(f) {
						continue
					}
					if tmp == "" {
						if tmp, err = os.MkdirTemp("", "featurestore-backfill-"); err != nil {
							return err
						}
						defer os.RemoveAll(tmp)
						files = slices.Clone(files)
					}
					local := filepath.Join(tmp, fmt.Sprintf("%d-%s", i, objectBase(f)))
					if err := downloadObject(ctx, f, local); err != nil {
						return err
					}
					files[i], given[local] = local, f
				}
				asGiven := func(f string) string {
					if g, ok := given[f]; ok {
						return g
					}
					return f
				}
				if letter := cfg.DeadLetters; len(given) > 0 {
					cfg.DeadLetters = func(l ingest.BackfillLetter) error {
						l.File = asGiven(l.File)
						return letter(l)
					}
					if progress := cfg.Progress; progress != nil {
						cfg.Progress = func(p ingest.BackfillProgress) {
							p.File = asGiven(p.File)
							progress(p)
						}
					}
				}
				results, err := ingest.Backfill(ctx, cfg, files)
				for i := range results {
					results[i].File = asGiven(results[i].File)
				}
				// The rejected rows of what was loaded are kept, also when a
				// later file failed.
				if dlq != nil {
					if ferr := dlq.Flush(); ferr != nil && err == nil {
						err = fmt.Errorf("dead letters: %w", ferr)
					}
				}
				for _, r := range results {
					dups := ""
					if r.DuplicateIDs > 0 {
						dups = fmt.Sprintf("; %d dropped as copies by event id", r.DuplicateIDs)
					}
					fmt.Fprintf(env.stdout, "%s: %d rows read, %d skipped as loaded before; online: %d applied, %d already applied, %d too old to be read; offline: %d logged; rejected: %s%s\n",
						r.File, r.Rows, r.Skipped, r.Applied, r.Duplicates, r.Expired, r.Logged, rejectedSummary(r), dups)
				}
				if err != nil {
					return err
				}
				printLetters(env.stdout, letters, deadLetters, examples)
				fmt.Fprintf(env.stdout, "backfilled %d files in %s\n", len(results), time.Since(start).Round(time.Millisecond))
				return nil
			}
		},
	}
}

// printLetters says how many rows or messages were rejected, and where
// they are, or shows the first.
func printLetters(w io.Writer, letters int64, file string, examples []ingest.BackfillLetter) {
	switch {
	case letters == 0:
	case file != "":
		fmt.Fprintf(w, "%d rejected rows or uses written to %s\n", letters, file)
	default:
		fmt.Fprintf(w, "%d rejected rows or uses (give --dead-letters FILE to keep them), the first:\n", letters)
		for _, l := range examples {
			fmt.Fprintf(w, "  %s offset %d: %s %s %s\n", l.File, l.Offset, l.Reason, l.View, l.Detail)
		}
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
		parts = append(parts, fmt.Sprintf("%d uses by a view of a row without that view's join key", r.MissingKey))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
