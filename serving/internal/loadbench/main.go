// Command loadbench is the serving load benchmark of `make bench`
// (docs/benchmarks.md): real Redis holding many entities, the real
// `featurestore serve` binary as a separate process, and this process as
// the load generator.
//
// It applies the benchmark's definitions with `featurestore apply`, writes
// the entities through the ingest applier unless a recent population with
// the same definitions is still there, starts `featurestore serve`, and then,
// row by row (entities per request x concurrency), runs closed-loop load:
// concurrency goroutines, each sending a GetOnlineFeatures of 10 features
// from 2 views for random entities as soon as its last one is answered. In
// the same run it measures the ceiling: a plain go-redis client sending the
// same pipelined HMGETs as the server, without gRPC and without decoding.
// Each row is measured several times; the output has one benchmark line
// per run (compare runs with benchstat) and a table of medians.
//
// Usage, from the module root, with Redis at $FEATURESTORE_TEST_REDIS_ADDR:
//
//	go build -o bin/featurestore . && go run ./serving/internal/loadbench -binary bin/featurestore
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// row is one line of the benchmark: entities per request at a concurrency.
type row struct {
	entities, conc int
	// target and feast are what the row is measured against.
	target           string
	feastRPS         float64
	feastP99         time.Duration
	minRPS           float64
	maxP99           time.Duration
	targetLookupsSec float64
}

var allRows = []row{
	{entities: 1, conc: 4, target: "p99 < 1ms", maxP99: time.Millisecond, feastRPS: 5500, feastP99: 2500 * time.Microsecond},
	{entities: 1, conc: 16, target: ">= 25k lookups/s", targetLookupsSec: 25000, feastRPS: 8600, feastP99: 5400 * time.Microsecond},
	{entities: 100, conc: 4, target: ">= 2k req/s, p99 < 5ms", minRPS: 2000, maxP99: 5 * time.Millisecond, feastRPS: 574, feastP99: 16 * time.Millisecond},
}

type config struct {
	redisAddr  string
	binary     string
	project    string
	entities   int
	duration   time.Duration
	warmup     time.Duration
	runs       int
	rows       string
	maxOther   float64
	retries    int
	conns      int
	serverEnv  string
	workDir    string
	serverAddr string
	serverPID  int
	window     int
	cpuProfile string
	service    string
	layout     string
	health     bool
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	var cfg config
	fs := flag.NewFlagSet("loadbench", flag.ExitOnError)
	fs.StringVar(&cfg.redisAddr, "redis-addr", "", "Use the Redis at this address instead of a redis-server of the benchmark's own.")
	fs.StringVar(&cfg.binary, "binary", "bin/featurestore", "The featurestore binary to serve with (go build -o bin/featurestore .).")
	fs.StringVar(&cfg.project, "project", "loadbench", "Project holding the benchmark's definitions and data.")
	entities, _ := strconv.Atoi(envOr("FEATURESTORE_BENCH_LOAD_ENTITIES", "1000000"))
	fs.IntVar(&cfg.entities, "entities", entities, "Entities in Redis (default $FEATURESTORE_BENCH_LOAD_ENTITIES or 1000000).")
	duration, _ := time.ParseDuration(envOr("FEATURESTORE_BENCH_LOAD_DURATION", "10s"))
	fs.DurationVar(&cfg.duration, "duration", duration, "Length of one measured run (default $FEATURESTORE_BENCH_LOAD_DURATION or 10s).")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "Unmeasured load before each row.")
	runs, _ := strconv.Atoi(envOr("FEATURESTORE_BENCH_LOAD_RUNS", "5"))
	fs.IntVar(&cfg.runs, "runs", runs, "Measured runs per row (default $FEATURESTORE_BENCH_LOAD_RUNS or 5).")
	fs.StringVar(&cfg.rows, "rows", "1x4,1x16,100x4", "Rows to run: entities-per-request x concurrency, comma-separated.")
	fs.Float64Var(&cfg.maxOther, "max-other-cores", 0.25, "A run during which other processes used more CPU than this (cores, on average) is disturbed and run again.")
	fs.IntVar(&cfg.retries, "retries", 1, "Times a disturbed run is run again before it is kept, marked.")
	fs.IntVar(&cfg.conns, "conns", 1, "gRPC connections the load goroutines share.")
	fs.StringVar(&cfg.serverEnv, "server-env", "", "Extra environment of the server, space-separated NAME=VALUE (such as GOMAXPROCS=2).")
	fs.StringVar(&cfg.workDir, "dir", "", "Directory for definitions and the server's log (default: a temporary one).")
	fs.StringVar(&cfg.serverAddr, "server-addr", "", "Load a server already listening at this address (such as one under a profiler) instead of starting the binary.")
	fs.IntVar(&cfg.serverPID, "server-pid", 0, "With -server-addr: the server's process, for its CPU time.")
	fs.StringVar(&cfg.service, "service", "", "Ask for the features by this feature service (loadbench_lookup has the same 10) instead of by a list of references.")
	fs.StringVar(&cfg.layout, "layout", "client", "Response layout the lookups ask for: client (as the Go client asks: columns for several entities, rows for one), columns, or rows (one message per value).")
	fs.BoolVar(&cfg.health, "health", true, "Also measure gRPC health checks at the same concurrency: what gRPC alone costs.")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "Write a CPU profile of the load generator to this file.")
	fs.IntVar(&cfg.window, "grpc-window", 0, "The client's HTTP/2 window size in bytes; 0 for gRPC's default, which adapts it with BDP pings.")
	_ = fs.Parse(os.Args[1:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadbench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := benchmark(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadbench: "+format+"\n", args...)
}

// responseLayout is the layout -layout names for lookups of n entities.
func (c config) responseLayout(n int) (pb.ResponseLayout, error) {
	switch c.layout {
	case "client":
		if n > 1 {
			return pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS, nil
		}
		return pb.ResponseLayout_RESPONSE_LAYOUT_ROWS, nil
	case "columns":
		return pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS, nil
	case "rows":
		return pb.ResponseLayout_RESPONSE_LAYOUT_ROWS, nil
	}
	return 0, fmt.Errorf("-layout %q: want client, columns or rows", c.layout)
}

func parseRows(spec string) ([]row, error) {
	var out []row
	for s := range strings.SplitSeq(spec, ",") {
		e, c, ok := strings.Cut(strings.TrimSpace(s), "x")
		ne, err1 := strconv.Atoi(e)
		nc, err2 := strconv.Atoi(c)
		if !ok || err1 != nil || err2 != nil || ne < 1 || nc < 1 {
			return nil, fmt.Errorf("row %q: want ENTITIESxCONCURRENCY, like 1x4", s)
		}
		r := row{entities: ne, conc: nc}
		for _, known := range allRows {
			if known.entities == ne && known.conc == nc {
				r = known
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func benchmark(ctx context.Context, cfg config, w io.Writer) error {
	rows, err := parseRows(cfg.rows)
	if err != nil {
		return err
	}
	if _, err := cfg.responseLayout(1); err != nil {
		return err
	}
	if cfg.workDir == "" {
		dir, err := os.MkdirTemp("", "loadbench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.workDir = dir
	}
	redisPID := 0
	if cfg.redisAddr == "" {
		dir, err := cacheDir()
		if err != nil {
			return err
		}
		rs, err := startRedis(ctx, dir)
		if err != nil {
			return err
		}
		defer rs.stop()
		cfg.redisAddr, redisPID = rs.addr, rs.pid()
	}
	rc := redis.NewClient(&redis.Options{Addr: cfg.redisAddr, ContextTimeoutEnabled: true, PoolSize: 64, Protocol: 2})
	defer rc.Close()
	if err := rc.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", cfg.redisAddr, err)
	}
	reg, err := applyDefs(ctx, cfg.binary, cfg.redisAddr, cfg.project, cfg.workDir)
	if err != nil {
		return err
	}
	populatedAt, err := ensureData(ctx, rc, reg, cfg.project, cfg.entities, redisPID != 0, logf)
	if err != nil {
		return err
	}
	views := []string{"card_windows", "card_last"}
	ids := make([]string, cfg.entities)
	for i := range ids {
		ids[i] = entityID(i)
	}

	addr, pid := cfg.serverAddr, cfg.serverPID
	if addr == "" {
		srv, err := startServer(ctx, cfg.binary, cfg.redisAddr, cfg.project, cfg.workDir, strings.Fields(cfg.serverEnv))
		if err != nil {
			return err
		}
		defer func() {
			if err := srv.stop(); err != nil {
				logf("stopping the server: %v", err)
			}
		}()
		addr, pid = srv.grpcAddr, srv.pid()
	}
	var conns []*grpc.ClientConn
	for range cfg.conns {
		conn, err := dialServer(addr, cfg.window)
		if err != nil {
			return err
		}
		defer conn.Close()
		conns = append(conns, conn)
	}
	if redisPID == 0 {
		redisPID = redisProcess(ctx, rc)
	}
	meter := &cpuMeter{serverPID: pid, redisPID: redisPID}

	info := rc.Info(ctx, "server", "memory").Val()
	fmt.Fprintf(w, "# serving load benchmark: %d entities, data written %s ago; lookups of %d features (responses by %s): %s\n",
		cfg.entities, time.Since(populatedAt).Round(time.Second), len(features), cfg.layout, joinFeatures())
	fmt.Fprintf(w, "# redis %s at %s (%s), pid %d; server pid %d; %d CPUs; load generator GOMAXPROCS=%d, %s\n",
		infoField(info, "redis_version"), cfg.redisAddr, infoField(info, "used_memory_human"), meter.redisPID, pid,
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Fprintf(w, "# each row: %s warm-up, then %d runs, each %s of raw go-redis, of lookups through the server and of gRPC health checks; load average %s\n",
		cfg.warmup, cfg.runs, cfg.duration, loadAvg())
	fmt.Fprintf(w, "goos: %s\ngoarch: %s\npkg: github.com/featurestore/featurestore/serving/internal/loadbench\n", runtime.GOOS, runtime.GOARCH)

	var summaries []summary
	for _, r := range rows {
		sum, err := benchRow(ctx, cfg, w, r, conns, rc, views, ids, meter)
		if err != nil {
			return err
		}
		summaries = append(summaries, sum)
	}
	fmt.Fprintf(w, "# load average at the end: %s\n", loadAvg())
	writeTable(w, summaries)
	return nil
}

// redisProcess returns the process id Redis reports; it is a process of
// this machine when Redis runs on loopback.
func redisProcess(ctx context.Context, rc *redis.Client) int {
	pid, _ := strconv.Atoi(infoField(rc.Info(ctx, "server").Val(), "process_id"))
	return pid
}

func infoField(info, name string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return "?"
}

// summary is the medians of a row's runs.
type summary struct {
	row                   row
	rps, p50, p99, p999   float64 // req/s; latencies in µs
	rawRPS, rawP99        float64
	ratio                 float64
	disturbed             int
	healthRPS             float64 // gRPC health checks: gRPC alone
	serverCPU, redisCPU   float64 // µs per request
	generatorCPU, otherCo float64 // µs per request; cores
}

func benchRow(ctx context.Context, cfg config, w io.Writer, r row, conns []*grpc.ClientConn, rc *redis.Client, views []string, ids []string, meter *cpuMeter) (summary, error) {
	grpcClients := make([]client, r.conc)
	rawClients := make([]client, r.conc)
	healthClients := make([]client, r.conc)
	for i := range r.conc {
		conn := conns[i%len(conns)]
		layout, _ := cfg.responseLayout(r.entities) // checked by benchmark
		grpcClients[i] = newGRPCClient(pb.NewOnlineServiceClient(conn), ids, r.entities, cfg.service, layout)
		rawClients[i] = &rawClient{rc: rc, project: cfg.project, ids: ids, views: views}
		healthClients[i] = healthClient{healthpb.NewHealthClient(conn)}
	}
	name := fmt.Sprintf("BenchmarkLoad/entities=%d/c=%d", r.entities, r.conc)
	logf("%s: warming up", name)
	run(ctx, rawClients, r.entities, len(ids), cfg.warmup, 1)
	run(ctx, grpcClients, r.entities, len(ids), cfg.warmup, 2)

	var grpcRuns, rawRuns, healthRuns []*stats
	disturbed := 0
	for i := range cfg.runs {
		var raw, srv, floor *stats
		for attempt := 0; ; attempt++ {
			raw = measure(ctx, meter, rawClients, r.entities, len(ids), cfg.duration, uint64(10+i))
			srv = measure(ctx, meter, grpcClients, r.entities, len(ids), cfg.duration, uint64(100+i))
			busy := max(raw.otherCores(), srv.otherCores())
			if cfg.health {
				floor = measure(ctx, meter, healthClients, r.entities, len(ids), cfg.duration, 0)
				busy = max(busy, floor.otherCores())
			}
			if ctx.Err() != nil {
				return summary{}, ctx.Err()
			}
			if busy <= cfg.maxOther {
				break
			}
			if attempt >= cfg.retries {
				disturbed++
				logf("%s run %d: other processes used %.2f cores; kept after %d retries", name, i+1, busy, attempt)
				break
			}
			logf("%s run %d: other processes used %.2f cores; running it again", name, i+1, busy)
		}
		for _, s := range []*stats{raw, srv} {
			if s.errs > 0 {
				return summary{}, fmt.Errorf("%s: %d of %d requests failed, first: %v", name, s.errs, s.requests, s.firstErr)
			}
			if s.hits < s.lookups*99/100 {
				return summary{}, fmt.Errorf("%s: only %d of %d entities looked up had data: is the population complete?", name, s.hits, s.lookups)
			}
		}
		writeLine(w, name+"/raw", r, raw)
		writeLine(w, name+"/grpc", r, srv)
		fmt.Fprintf(w, "%s/ratio-2 \t1\t%.3f grpc/raw\n", name, srv.reqPerSec()/raw.reqPerSec())
		if floor != nil {
			writeLine(w, name+"/health", r, floor)
			healthRuns = append(healthRuns, floor)
		}
		rawRuns, grpcRuns = append(rawRuns, raw), append(grpcRuns, srv)
	}
	sum := summarize(r, rawRuns, grpcRuns, disturbed)
	if len(healthRuns) > 0 {
		var xs []float64
		for _, s := range healthRuns {
			xs = append(xs, s.reqPerSec())
		}
		sum.healthRPS = median(xs)
	}
	return sum, nil
}

func measure(ctx context.Context, m *cpuMeter, clients []client, entities, n int, d time.Duration, seed uint64) *stats {
	before, ok1 := m.sample()
	s := run(ctx, clients, entities, n, d, seed)
	after, ok2 := m.sample()
	if ok1 && ok2 {
		s.cpu = m.delta(before, after, s.elapsed)
	}
	return s
}

func (s *stats) otherCores() float64 {
	if !s.cpu.known {
		return 0
	}
	return s.cpu.other / s.elapsed.Seconds()
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// writeLine writes a run as a Go benchmark line, for benchstat.
func writeLine(w io.Writer, name string, r row, s *stats) {
	perReq := func(coreSec float64) float64 { return coreSec * 1e6 / float64(s.requests) }
	fmt.Fprintf(w, "%s-2 \t%d\t%.0f ns/op\t%.0f req/s\t%.0f lookups/s\t%.1f p50-µs\t%.1f p99-µs\t%.1f p999-µs",
		name, s.requests, float64(s.elapsed.Nanoseconds())/float64(s.requests), s.reqPerSec(), s.reqPerSec()*float64(r.entities),
		us(s.quantile(0.5)), us(s.quantile(0.99)), us(s.quantile(0.999)))
	if s.cpu.known {
		fmt.Fprintf(w, "\t%.1f server-cpu-µs/req\t%.1f redis-cpu-µs/req\t%.1f generator-cpu-µs/req\t%.2f other-cores",
			perReq(s.cpu.server), perReq(s.cpu.redis), perReq(s.cpu.local), s.otherCores())
	}
	fmt.Fprintln(w)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func summarize(r row, raw, srv []*stats, disturbed int) summary {
	col := func(runs []*stats, f func(*stats) float64) float64 {
		var xs []float64
		for _, s := range runs {
			xs = append(xs, f(s))
		}
		return median(xs)
	}
	perReq := func(f func(cpuDelta) float64) func(*stats) float64 {
		return func(s *stats) float64 { return f(s.cpu) * 1e6 / float64(s.requests) }
	}
	var ratios []float64
	for i := range srv {
		ratios = append(ratios, srv[i].reqPerSec()/raw[i].reqPerSec())
	}
	return summary{
		row:          r,
		rps:          col(srv, (*stats).reqPerSec),
		p50:          col(srv, func(s *stats) float64 { return us(s.quantile(0.5)) }),
		p99:          col(srv, func(s *stats) float64 { return us(s.quantile(0.99)) }),
		p999:         col(srv, func(s *stats) float64 { return us(s.quantile(0.999)) }),
		rawRPS:       col(raw, (*stats).reqPerSec),
		rawP99:       col(raw, func(s *stats) float64 { return us(s.quantile(0.99)) }),
		ratio:        median(ratios),
		disturbed:    disturbed,
		serverCPU:    col(srv, perReq(func(c cpuDelta) float64 { return c.server })),
		redisCPU:     col(srv, perReq(func(c cpuDelta) float64 { return c.redis })),
		generatorCPU: col(srv, perReq(func(c cpuDelta) float64 { return c.local })),
		otherCo:      col(srv, (*stats).otherCores),
	}
}

// writeTable writes the medians as a Markdown table, with the targets and
// Feast's figures.
func writeTable(w io.Writer, sums []summary) {
	fmt.Fprintln(w, "#")
	fmt.Fprintln(w, "# medians of the runs (gRPC through `featurestore serve`; raw: go-redis alone, same Redis reads):")
	fmt.Fprintln(w, "#")
	fmt.Fprintln(w, "# | entities x conc | req/s | lookups/s | p50 | p99 | p999 | raw req/s | raw p99 | server/raw | health checks/s | x Feast | target | met | server, redis, generator CPU µs/req | other cores |")
	fmt.Fprintln(w, "# |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, s := range sums {
		met := "-"
		if s.row.target != "" {
			ok := true
			if s.row.maxP99 > 0 && s.p99 >= us(s.row.maxP99) {
				ok = false
			}
			if s.row.minRPS > 0 && s.rps < s.row.minRPS {
				ok = false
			}
			if s.row.targetLookupsSec > 0 && s.rps*float64(s.row.entities) < s.row.targetLookupsSec {
				ok = false
			}
			// And 3x Feast's throughput at a lower p99.
			if s.row.feastRPS > 0 && (s.rps < 3*s.row.feastRPS || s.p99 >= us(s.row.feastP99)) {
				ok = false
			}
			met = map[bool]string{true: "yes", false: "no"}[ok]
		}
		feast := "-"
		if s.row.feastRPS > 0 {
			feast = fmt.Sprintf("%.1fx (Feast %.0f/s, p99 %s)", s.rps/s.row.feastRPS, s.row.feastRPS, s.row.feastP99)
		}
		note := ""
		if s.disturbed > 0 {
			note = fmt.Sprintf(" (%d disturbed)", s.disturbed)
		}
		health := "-"
		if s.healthRPS > 0 {
			health = fmt.Sprintf("%.0f", s.healthRPS)
		}
		fmt.Fprintf(w, "# | %d x %d | %.0f | %.0f | %s | %s | %s | %.0f | %s | %.2f | %s | %s | %s | %s | %.0f, %.0f, %.0f | %.2f%s |\n",
			s.row.entities, s.row.conc, s.rps, s.rps*float64(s.row.entities),
			fmtUS(s.p50), fmtUS(s.p99), fmtUS(s.p999), s.rawRPS, fmtUS(s.rawP99), s.ratio, health, feast,
			cmp.Or(s.row.target, "-"), met, s.serverCPU, s.redisCPU, s.generatorCPU, s.otherCo, note)
	}
}

func fmtUS(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2fms", v/1000)
	}
	return fmt.Sprintf("%.0fµs", v)
}
