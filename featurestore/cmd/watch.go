package cmd

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/featurestore/featurestore/registry"
)

func watchCommand() *command {
	var (
		reg      registryFlags
		logs     logFlags
		interval time.Duration
	)
	return &command{
		name:    "watch",
		daemon:  true,
		usage:   "watch [flags]",
		summary: "Follow the registry and print each version as it is applied.",
		long: `Print the current registry version, then one line for each new version as
soon as it is applied, until stopped. Long-running processes (ingest,
serving) follow the registry the same way: a notification from Redis wakes
them at once, and a poll every --watch-interval catches anything missed.`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			reg.register(fs)
			logs.register(fs)
			positiveDurationVar(fs, &interval, "watch-interval", registry.DefaultWatchInterval, "Longest time between two reads of the registry head.")
			return func(ctx context.Context, env *runEnv, args []string) error {
				if len(args) != 0 {
					return fmt.Errorf("%w: watch takes no arguments", errUsage)
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
				print := func(s *registry.Snapshot) {
					fmt.Fprintf(env.stdout, "version %d %s applied %s by %s: %s\n", s.Version, s.Digest,
						s.AppliedAt.Format(time.RFC3339), s.AppliedBy, summary(s.Registry))
				}
				w := registry.NewWatcher(store, registry.WatcherOptions{Interval: interval, OnChange: print, Logger: log})
				if _, err := w.Load(ctx); err != nil {
					return err
				}
				if w.Current() == nil {
					fmt.Fprintln(env.stdout, "no version yet; waiting")
				}
				return w.Run(ctx)
			}
		},
	}
}
