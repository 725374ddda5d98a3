package cmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

// command is one subcommand of the binary.
type command struct {
	name    string
	usage   string // the synopsis after "featurestore"
	summary string // one line for the command list
	long    string // what --help prints above the flags
	// daemon marks a command that runs until it is stopped: a SIGTERM or
	// Ctrl-C is its normal end, also while it is still starting, and exits 0.
	daemon bool
	// setup registers the command's flags and returns its body.
	setup func(fs *flag.FlagSet) func(ctx context.Context, env *runEnv, args []string) error
}

// runEnv is what a command body gets besides its flags.
type runEnv struct {
	stdout, stderr io.Writer
	getenv         lookupEnv
}

// errUsage marks an error in how the command was called (exit code 2).
var errUsage = errors.New("usage error")

// errSilent marks a failure already reported to the user (exit code 1).
var errSilent = errors.New("failed")

func commands() []*command {
	return []*command{
		validateCommand(),
		planCommand(),
		applyCommand(),
		versionsCommand(),
		showCommand(),
		ingestCommand(),
		serveCommand(),
		tokenCommand(),
		watchCommand(),
		devCommand(),
		compactCommand(),
		exportCommand(),
		backfillCommand(),
		schemaCommand(),
		versionCommand(),
	}
}

// Main runs the binary with args (without the program name) and returns the
// exit code: 0 success, 1 failure, 2 wrong usage.
func Main(args []string, stdout, stderr io.Writer) int {
	return run(args, stdout, stderr, os.LookupEnv)
}

func run(args []string, stdout, stderr io.Writer, getenv lookupEnv) int {
	ctx, stop := signalContext()
	defer stop()
	return runContext(ctx, args, stdout, stderr, getenv)
}

// signalContext returns a context that ends at the first SIGTERM or Ctrl-C,
// which starts a graceful stop. It then stops catching them, so that the
// default handling is back: a second one kills the process when that stop
// is stuck.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

// runContext runs the command in args until it finishes or ctx ends.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer, getenv lookupEnv) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			args = []string{args[1], "--help"}
		} else {
			topUsage(stdout)
			return 0
		}
	}
	var c *command
	for _, cc := range commands() {
		if cc.name == args[0] {
			c = cc
		}
	}
	if c == nil {
		fmt.Fprintf(stderr, "featurestore: unknown command %q\n\n", args[0])
		topUsage(stderr)
		return 2
	}
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	body := c.setup(fs)
	if err := parseFlags(fs, args[1:], getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, c, fs)
			return 0
		}
		fmt.Fprintf(stderr, "featurestore %s: %v\nRun 'featurestore %s --help' for usage.\n", c.name, err, c.name)
		return 2
	}
	err := body(ctx, &runEnv{stdout: stdout, stderr: stderr, getenv: getenv}, fs.Args())
	switch {
	case err == nil:
		return 0
	case c.daemon && ctx.Err() != nil && errors.Is(err, context.Canceled):
		return 0 // stopped while starting: nothing was left half-done
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "featurestore %s: %v\nRun 'featurestore %s --help' for usage.\n", c.name, err, c.name)
		return 2
	case errors.Is(err, errSilent):
		return 1
	}
	var code exitError
	if errors.As(err, &code) {
		return int(code)
	}
	fmt.Fprintf(stderr, "featurestore %s: %v\n", c.name, err)
	return 1
}

func topUsage(w io.Writer) {
	fmt.Fprint(w, `featurestore: a real-time feature store. Features are defined in YAML,
computed from Kafka into Redis, and looked up over gRPC.

Usage: featurestore <command> [flags] [args]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run 'featurestore <command> --help' for a command's flags. Every flag can also
be set by an environment variable: --redis-addr is FEATURESTORE_REDIS_ADDR.
`)
}

// oneArg checks that exactly one positional argument, named what, was given.
func oneArg(args []string, what string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("%w: expected one argument, %s; got %d", errUsage, what, len(args))
	}
	return args[0], nil
}

func versionCommand() *command {
	return &command{
		name:    "version",
		usage:   "version",
		summary: "Print the build version.",
		long:    "Print the module version and VCS revision the binary was built from.",
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			return func(_ context.Context, env *runEnv, args []string) error {
				if len(args) != 0 {
					return fmt.Errorf("%w: version takes no arguments", errUsage)
				}
				v := "devel"
				if bi, ok := debug.ReadBuildInfo(); ok {
					v = bi.Main.Version
					for _, s := range bi.Settings {
						if s.Key == "vcs.revision" {
							v += " " + s.Value
						}
					}
				}
				fmt.Fprintln(env.stdout, "featurestore", strings.TrimSpace(v))
				return nil
			}
		},
	}
}
