package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/featurestore/featurestore/registry"
)

// loadDefs loads a definitions directory to apply it, printing every error
// to w.
func loadDefs(dir string, w io.Writer) (*registry.Registry, error) {
	return checkDefs(dir, w, "; nothing was applied")
}

// checkDefs loads a definitions directory, printing every error to w, then
// their count followed by note.
func checkDefs(dir string, w io.Writer, note string) (*registry.Registry, error) {
	r, err := registry.LoadDir(dir)
	var list registry.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(w, e.Error())
		}
		fmt.Fprintf(w, "%d error(s) in %s%s.\n", len(list), dir, note)
		return nil, errSilent
	}
	return r, err
}

// defsAndStore loads the definitions directory named by args, to apply
// them or not, and opens the registry store.
func defsAndStore(ctx context.Context, args []string, env *runEnv, reg *registryFlags, applying bool) (string, *registry.Registry, registry.Store, func(), error) {
	dir, err := oneArg(args, "the definitions directory")
	if err != nil {
		return "", nil, nil, nil, err
	}
	load := loadDefs
	if !applying {
		load = func(dir string, w io.Writer) (*registry.Registry, error) { return checkDefs(dir, w, "") }
	}
	r, err := load(dir, env.stderr)
	if err != nil {
		return "", nil, nil, nil, err
	}
	store, closeStore, err := reg.open(ctx)
	if err != nil {
		return "", nil, nil, nil, err
	}
	return dir, r, store, closeStore, nil
}

func summary(r *registry.Registry) string {
	features := 0
	for _, v := range r.Views {
		features += len(v.Features)
	}
	out := fmt.Sprintf("%s, %s, %s (%s), ",
		plural(len(r.Entities), "entity", "entities"), plural(len(r.Sources), "source", "sources"),
		plural(len(r.Views), "feature view", "feature views"), plural(features, "feature", "features"))
	if n := len(r.OnDemandViews); n > 0 {
		od := 0
		for _, v := range r.OnDemandViews {
			od += len(v.Features)
		}
		out += fmt.Sprintf("%s (%s), ", plural(n, "on-demand feature view", "on-demand feature views"), plural(od, "feature", "features"))
	}
	return out + plural(len(r.Services), "feature service", "feature services")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func validateCommand() *command {
	return &command{
		name:    "validate",
		usage:   "validate DIR",
		summary: "Check feature definitions without applying them.",
		long: `Load every *.yaml and *.yml file in DIR (the extension in any case) and check the definitions:
unknown fields, wrong types, dangling references, duplicate names, windows that are not
multiples of the tile, aggregations over fields they cannot take. Every error
is printed as file:line:col: message. Exits 1 if there is any error, 0 if
none. Needs no registry and no services.`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			return func(_ context.Context, env *runEnv, args []string) error {
				dir, err := oneArg(args, "the definitions directory")
				if err != nil {
					return err
				}
				r, err := checkDefs(dir, env.stderr, "")
				if err != nil {
					return err
				}
				fmt.Fprintf(env.stdout, "%s: valid: %s (digest %s)\n", dir, summary(r), r.Digest())
				return nil
			}
		},
	}
}

func planCommand() *command {
	var reg registryFlags
	var exitCode bool
	return &command{
		name:    "plan",
		usage:   "plan [flags] DIR",
		summary: "Show what apply would change in the registry.",
		long: `Compare the definitions in DIR with the registry version in use and print
what would be created, changed and deleted. A change that alters what an
existing feature means is marked [BREAKING]: apply refuses it without
--allow-breaking. Breaking are: a new window, aggregation, field, filter,
type, n (of last_n) or precision (of count_distinct) of a feature (declaring
or dropping an aggregation's own output type is not); a new tile, entity or
source of a view; a larger ttl of a view with
last values, or none any more (an entity whose key expired under the old
ttl has no last value online, while exports find one, until its next
event); new join keys of an entity; in
a source, a new format, time field or encoding, field type, Protobuf message,
or field an existing key is read from (adding or removing a key mapping is
not); a change of a Protobuf field the source reads (number, kind,
cardinality or message type; the plan lists the message's changed fields,
and the others are not breaking); a new Kafka topic, because the online
store keeps its offset fences per topic while the tiles stay, so events
already counted, from a mirror say, would count again; and in an on-demand
view, a new expression or type of a feature, an input that reads another
feature or is removed, a request field of another type or removed, and a
new input of an entity no other input has (every lookup of the view's
features must then give its join keys). Adding or removing a whole feature,
adding a request field (lookups give only those the requested features use)
or an input of an entity the view has is not breaking. Nothing is written.`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			reg.register(fs)
			fs.BoolVar(&exitCode, "detailed-exitcode", false, "Exit 3 when the plan has changes (0 when none), for scripts.")
			return func(ctx context.Context, env *runEnv, args []string) error {
				dir, r, store, closeStore, err := defsAndStore(ctx, args, env, &reg, false)
				if err != nil {
					return err
				}
				defer closeStore()
				cur, err := registry.Current(ctx, store)
				if err != nil {
					return err
				}
				var old *registry.Registry
				if cur != nil {
					old = cur.Registry
					fmt.Fprintf(env.stdout, "Plan for %s against registry version %d (%s, applied %s by %s):\n",
						dir, cur.Version, cur.Digest, cur.AppliedAt.Format("2006-01-02 15:04:05Z07:00"), cur.AppliedBy)
				} else {
					fmt.Fprintf(env.stdout, "Plan for %s against an empty registry:\n", dir)
				}
				p := registry.Diff(old, r)
				p.Render(env.stdout)
				if exitCode && !p.Empty() {
					return exitError(3)
				}
				return nil
			}
		},
	}
}

// exitError asks for a specific exit code without a message.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func applyCommand() *command {
	var reg registryFlags
	var allowBreaking bool
	var message string
	return &command{
		name:    "apply",
		usage:   "apply [flags] DIR",
		summary: "Commit the definitions in DIR as a new registry version.",
		long: `Validate DIR, plan against the registry version in use, print the plan, and
commit the definitions as the next version in one atomic step. Nothing is
applied if any definition has an error, or if the plan has breaking changes
and --allow-breaking is not given. If another apply commits first, this one
fails without writing: run plan again. Applying definitions equal to the
current version changes nothing. Running processes pick the new version up
within seconds. A registry store that lost everything (Redis restarted
without persistence, a flush) gives the plan nothing to compare against, so
it marks nothing breaking: apply the definitions last in use first, then the
change. (A Redis store that lost only its head key takes its highest version
as the head.)`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			reg.register(fs)
			fs.BoolVar(&allowBreaking, "allow-breaking", false, "Apply even if the plan changes what existing features mean.")
			fs.StringVar(&message, "message", "", "A note recorded with the version (what changed and why).")
			return func(ctx context.Context, env *runEnv, args []string) error {
				_, r, store, closeStore, err := defsAndStore(ctx, args, env, &reg, true)
				if err != nil {
					return err
				}
				defer closeStore()
				res, err := registry.Apply(ctx, store, r, registry.ApplyOptions{AllowBreaking: allowBreaking, Message: message})
				if res.Plan != nil {
					res.Plan.Render(env.stdout)
				}
				switch {
				case errors.Is(err, registry.ErrBreaking):
					return fmt.Errorf("%w; nothing was applied", err)
				case errors.Is(err, registry.ErrConflict):
					return fmt.Errorf("%w; nothing was applied: run plan again", err)
				case err != nil:
					return err
				case res.Plan.Empty():
					fmt.Fprintf(env.stdout, "Registry version %d is current; nothing to apply.\n", res.From)
				default:
					fmt.Fprintf(env.stdout, "Applied registry version %d (%s): %s.\n", res.To.Version, res.To.Digest, summary(r))
				}
				return nil
			}
		},
	}
}

func versionsCommand() *command {
	var reg registryFlags
	var asJSON bool
	return &command{
		name:    "versions",
		usage:   "versions [flags]",
		summary: "List the registry's versions, newest first.",
		long:    `List every committed registry version: number, time, who applied it, digest and message.`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			reg.register(fs)
			fs.BoolVar(&asJSON, "json", false, "Print JSON instead of a table.")
			return func(ctx context.Context, env *runEnv, args []string) error {
				if len(args) != 0 {
					return fmt.Errorf("%w: versions takes no arguments", errUsage)
				}
				store, closeStore, err := reg.open(ctx)
				if err != nil {
					return err
				}
				defer closeStore()
				vs, err := store.Versions(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					e := json.NewEncoder(env.stdout)
					e.SetIndent("", "  ")
					if vs == nil {
						vs = []registry.VersionInfo{}
					}
					return e.Encode(vs)
				}
				if len(vs) == 0 {
					fmt.Fprintln(env.stdout, "No versions: nothing has been applied yet.")
					return nil
				}
				tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tAPPLIED AT\tBY\tDIGEST\tMESSAGE")
				for _, v := range vs {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", v.Version, v.AppliedAt.Format("2006-01-02 15:04:05Z07:00"), v.AppliedBy, v.Digest[:min(len(v.Digest), 19)], v.Message)
				}
				return tw.Flush()
			}
		},
	}
}

func showCommand() *command {
	var reg registryFlags
	var version int64
	return &command{
		name:    "show",
		usage:   "show [flags]",
		summary: "Print a registry version's definitions as JSON.",
		long:    `Print the canonical JSON of the current registry version, or of --version N.`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			reg.register(fs)
			fs.Int64Var(&version, "version", 0, "Version to print; 0 for the current one.")
			return func(ctx context.Context, env *runEnv, args []string) error {
				if len(args) != 0 {
					return fmt.Errorf("%w: show takes no arguments", errUsage)
				}
				snap, err := reg.snapshot(ctx, "--version", version)
				if err != nil {
					return err
				}
				out := struct {
					registry.VersionInfo
					Definitions json.RawMessage `json:"definitions"`
				}{snap.VersionInfo, snap.Registry.CanonicalJSON()}
				e := json.NewEncoder(env.stdout)
				e.SetIndent("", "  ")
				return e.Encode(out)
			}
		},
	}
}

func schemaCommand() *command {
	return &command{
		name:    "schema",
		usage:   "schema",
		summary: "Print the JSON Schema of the YAML definitions.",
		long: `Print the JSON Schema of one definition document, for editors: with the YAML
language server, start a file with
  # yaml-language-server: $schema=path/to/featurestore.schema.json`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			return func(_ context.Context, env *runEnv, args []string) error {
				if len(args) != 0 {
					return fmt.Errorf("%w: schema takes no arguments", errUsage)
				}
				_, err := env.stdout.Write(registry.JSONSchema())
				return err
			}
		},
	}
}
