package cmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/featurestore/featurestore/featurestore/offline"
)

// offlineFlags say where the offline log is.
type offlineFlags struct {
	dir string
}

func (o *offlineFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.dir, "offline-dir", "", "Directory of the offline log (Arrow IPC files and their manifests), or an s3://, gs:// or azblob:// bucket URL.")
}

// storage opens the storage of an existing offline log (export, serve,
// compact read one; a mistyped directory is an error, not an empty log);
// close releases it.
func (o *offlineFlags) storage(ctx context.Context) (st offline.Storage, close func() error, err error) {
	if o.dir == "" {
		return nil, nil, fmt.Errorf("%w: --offline-dir is required", errUsage)
	}
	return offline.OpenExisting(ctx, o.dir)
}

// minOrphanGrace is the least --orphan-grace of compact: ingest's own
// grace at start, longer than a writer takes from writing its files to
// committing them.
const minOrphanGrace = 10 * time.Minute

func compactCommand() *command {
	var (
		off     offlineFlags
		logs    logFlags
		project string
		views   string
		target  int64
		grace   time.Duration
		dryRun  bool
	)
	return &command{
		name:    "compact",
		usage:   "compact [flags]",
		summary: "Merge small files of the offline log.",
		long: `Merge runs of small committed files of the offline log into larger ones: for
each feature view, date and Kafka partition, consecutive files up to
--target-bytes together. Each merged file is written, committed in the view's
manifest in place of the files it replaces, and only then are those deleted,
so a crash at any point loses and duplicates nothing, and readers never see a
partial file. Safe to run while ingest writes the same log. First removes
temporary and unreferenced files older than --orphan-grace. Prints what was
merged per view. Needs no registry and no services.`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			off.register(fs)
			logs.register(fs)
			fs.StringVar(&project, "project", "default", "Project whose offline log to compact.")
			fs.StringVar(&views, "view", "", "Comma-separated feature views to compact; empty for every view with a log.")
			fs.Int64Var(&target, "target-bytes", 256<<20, "Size merged files grow to at most; files this large are left alone.")
			fs.DurationVar(&grace, "orphan-grace", time.Hour, "Age below which unreferenced files are kept, as they may belong to a write in progress; at least 10m.")
			fs.BoolVar(&dryRun, "dry-run", false, "Print what would be merged, and change nothing.")
			return func(ctx context.Context, env *runEnv, args []string) error {
				if len(args) != 0 {
					return fmt.Errorf("%w: unexpected arguments %q", errUsage, args)
				}
				if target <= 0 {
					return fmt.Errorf("%w: --target-bytes must be positive", errUsage)
				}
				if grace < minOrphanGrace {
					return fmt.Errorf("%w: --orphan-grace %s is below %s: a younger unreferenced file may be one that ingest or backfill wrote and is about to commit, and deleting it would leave a committed file missing", errUsage, grace, minOrphanGrace)
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
				if !dryRun {
					n, err := offline.RemoveOrphans(ctx, st, project, grace, time.Now(), log)
					if err != nil {
						return err
					}
					if n > 0 {
						log.Info("removed files left by interrupted writes", "files", n)
					}
				}
				names, err := offline.Views(ctx, st, project)
				if err != nil {
					return err
				}
				if views != "" {
					names = nil
					for _, v := range strings.Split(views, ",") {
						names = append(names, strings.TrimSpace(v))
					}
				}
				if len(names) == 0 {
					fmt.Fprintf(env.stdout, "no offline log of project %q in %s\n", project, off.dir)
					return nil
				}
				var errs []error
				for _, v := range names {
					s, err := offline.Compact(ctx, st, project, v, offline.CompactOptions{TargetBytes: target, DryRun: dryRun, Logger: log})
					if err != nil {
						errs = append(errs, fmt.Errorf("feature view %q: %w", v, err))
						continue
					}
					verb := "merged"
					if dryRun {
						verb = "would merge"
					}
					if s.Merges == 0 {
						fmt.Fprintf(env.stdout, "%s: nothing to merge\n", v)
						continue
					}
					fmt.Fprintf(env.stdout, "%s: %s %d files (%d bytes) into %d, %d rows\n", v, verb, s.FilesIn, s.BytesIn, s.Merges, s.Rows)
				}
				return errors.Join(errs...)
			}
		},
	}
}
