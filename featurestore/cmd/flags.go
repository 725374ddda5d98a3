package cmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// envName is the environment variable that sets a flag: --redis-addr is
// FEATURESTORE_REDIS_ADDR.
func envName(flagName string) string {
	return "FEATURESTORE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// commandLineOnly are the flags no environment variable sets: --version of
// show, as deployments often set variables named *_VERSION for other
// things, and --allow-breaking of apply and --allow-empty of export, which
// must be asked for each time rather than left on in a job's environment.
var commandLineOnly = map[string]bool{"version": true, "allow-breaking": true, "allow-empty": true}

// envOf returns the environment variable that sets a flag, or "" for one
// given on the command line only.
func envOf(flagName string) string {
	if commandLineOnly[flagName] {
		return ""
	}
	return envName(flagName)
}

// lookupEnv returns an environment variable's value and whether it is set,
// like os.LookupEnv.
type lookupEnv func(string) (string, bool)

// envMap is a lookupEnv over a map, for tests.
func envMap(m map[string]string) lookupEnv {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// parseFlags parses args, then fills every flag not given on the command line
// from its environment variable, when set: set to the empty string, it sets
// the flag to empty (FEATURESTORE_METRICS_ADDR= turns the metrics endpoint
// off). Flags win over the environment.
func parseFlags(fs *flag.FlagSet, args []string, getenv lookupEnv) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		name := envOf(f.Name)
		if name == "" {
			return
		}
		if v, ok := getenv(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment variable %s=%q: %w", envName(f.Name), v, e)
			}
		}
	})
	return err
}

// logFlags are the logging settings every command has.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "Log level: debug, info, warn or error.")
	fs.StringVar(&l.format, "log-format", "text", "Log format: text or json.")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var log *slog.Logger
	switch l.format {
	case "text":
		log = slog.New(slog.NewTextHandler(w, opts))
	case "json":
		log = slog.New(slog.NewJSONHandler(w, opts))
	default:
		return nil, fmt.Errorf("--log-format %q: use text or json", l.format)
	}
	// go-redis logs a few things of its own (a pool that cannot dial, say),
	// by default as plain lines on stderr: through the process's logger
	// they keep its format. The setting is the process's (one command per
	// process).
	redis.SetLogger(redisLogger{log})
	reloadLog.Store(log)
	return log, nil
}

// redisLogger passes go-redis's own messages to a logger, at warn level.
type redisLogger struct{ log *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.log.WarnContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}

// usage prints a command's help: what it does, its flags and their
// environment variables.
func usage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: featurestore %s\n\n%s\n", c.usage, strings.TrimSpace(c.long))
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	if len(flags) == 0 {
		return
	}
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	fmt.Fprintf(w, "\nFlags (each also read from the environment variable shown, unless on the command line only):\n")
	for _, f := range flags {
		def := ""
		if f.DefValue != "" && f.DefValue != "false" {
			def = fmt.Sprintf(" (default %q)", f.DefValue)
		}
		env := envOf(f.Name)
		if env == "" {
			env = "command line only"
		}
		fmt.Fprintf(w, "  --%s  [%s]%s\n      %s\n", f.Name, env, def, f.Usage)
	}
}

// listenFlagError adds to err, when it says that a listener's address is
// taken, the flag that moves that listener: the address alone does not tell
// which of a command's several listeners it is.
func listenFlagError(flagName, addr string, err error) error {
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	hint := ""
	if flagName == "--metrics-addr" && addr == "127.0.0.1:9464" {
		// Both default to it, so running them side by side collides.
		hint = "; 'featurestore ingest' and 'featurestore dev' both default to " + addr
	}
	return fmt.Errorf("%w (another process listens on %s: stop it, or set %s to another address%s)", err, addr, flagName, hint)
}

// listenFlag is a listener's flag and the address it gives, empty for a
// listener that is off.
type listenFlag struct{ flag, addr string }

// checkListenAddrs refuses, as a usage error, two listeners of the process
// on one address: the second bind would fail as if another process held
// the address. Port 0 (any free port) never conflicts, and a wildcard host
// (":PORT", 0.0.0.0, [::]) conflicts with every host on its port.
func checkListenAddrs(listeners ...listenFlag) error {
	for i, a := range listeners {
		for _, b := range listeners[i+1:] {
			if sameListenAddr(a.addr, b.addr) {
				return fmt.Errorf("%w: %s %s and %s %s: both listen on the same address; give each its own", errUsage, a.flag, a.addr, b.flag, b.addr)
			}
		}
	}
	return nil
}

// sameListenAddr reports whether listening on a and on b would collide.
func sameListenAddr(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil {
		return a == b // the listener reports the bad address itself
	}
	if pa != pb || pa == "0" {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wildcard(ha) || wildcard(hb)
}

// positiveDuration is a duration flag that refuses zero and negative
// values as it is set: a usage error (exit 2) before the command starts,
// rather than a dial that times out at once or a value replaced unsaid.
type positiveDuration struct {
	p    *time.Duration
	name string
}

// positiveDurationVar defines a positiveDuration flag with a default.
func positiveDurationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(&positiveDuration{p, name}, name, usage)
}

func (d *positiveDuration) String() string {
	if d == nil || d.p == nil { // the flag package's zero value, for its help
		return ""
	}
	return d.p.String()
}

func (d *positiveDuration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v <= 0 {
		return fmt.Errorf("--%s %s: want a positive duration", d.name, v)
	}
	*d.p = v
	return nil
}
