package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The machine is shared: CPU time is sampled from /proc for the server,
// Redis, this process and the whole machine, so that a run can tell how much
// CPU went elsewhere (other work on the machine) while it ran.

// clockTicks is USER_HZ, 100 on every Linux platform Go supports.
const clockTicks = 100

// cpuSample is cumulative CPU time in clock ticks.
type cpuSample struct {
	busy, total          uint64 // whole machine
	server, redis, local uint64
}

// cpuDelta is the CPU used during a run, in core-seconds.
type cpuDelta struct {
	server, redis, local, other float64
	wall                        time.Duration
	known                       bool
}

type cpuMeter struct {
	serverPID, redisPID int
}

func (m *cpuMeter) sample() (cpuSample, bool) {
	var s cpuSample
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, false
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return s, false
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest time is already in user
			break
		}
		s.total += n
		if i != 3 && i != 4 { // idle, iowait
			s.busy += n
		}
	}
	// Zero for a process that is not on this machine or not known.
	s.server, _ = procTicks(m.serverPID)
	s.redis, _ = procTicks(m.redisPID)
	s.local, _ = procTicks(os.Getpid())
	return s, true
}

func (m *cpuMeter) delta(a, b cpuSample, wall time.Duration) cpuDelta {
	sec := func(t uint64) float64 { return float64(t) / clockTicks }
	d := cpuDelta{
		server: sec(b.server - a.server),
		redis:  sec(b.redis - a.redis),
		local:  sec(b.local - a.local),
		wall:   wall,
		known:  true,
	}
	d.other = max(0, sec(b.busy-a.busy)-d.server-d.redis-d.local)
	return d
}

// procTicks returns utime+stime of a process, all threads.
func procTicks(pid int) (uint64, bool) {
	if pid <= 0 {
		return 0, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return u + s, true
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// server is `featurestore serve` running as a child process.
type server struct {
	cmd      *exec.Cmd
	grpcAddr string
	logPath  string
	done     chan error
}

// startServer starts the binary's serve command and waits until its gRPC
// health service says SERVING.
func startServer(ctx context.Context, binary, redisAddr, project, dir string, env []string) (*server, error) {
	grpcAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s := &server{grpcAddr: grpcAddr, logPath: filepath.Join(dir, "serve.log"), done: make(chan error, 1)}
	logf, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(binary, "serve", "--project", project, "--redis-addr", redisAddr,
		"--grpc-addr", grpcAddr, "--metrics-addr", metricsAddr, "--log-level", "warn")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Env = append(os.Environ(), env...)
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s serve: %w", binary, err)
	}
	go func() { s.done <- s.cmd.Wait(); logf.Close() }()

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.stop()
		return nil, err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return s, nil
		}
		select {
		case err := <-s.done:
			return nil, fmt.Errorf("featurestore serve exited: %v; log:\n%s", err, tail(s.logPath))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("featurestore serve not serving after 60s; log:\n%s", tail(s.logPath))
		}
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop ends the server with SIGTERM, as an orchestrator would.
func (s *server) stop() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("featurestore serve: %w; log:\n%s", err, tail(s.logPath))
		}
		return err
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return errors.New("featurestore serve did not stop within 20s of SIGTERM")
	}
}

// tail returns the end of a log file.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// dialServer opens the load generator's connection to the server.
func dialServer(addr string, window int) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if window > 0 {
		opts = append(opts, grpc.WithInitialWindowSize(int32(window)), grpc.WithInitialConnWindowSize(int32(window)))
	}
	return grpc.NewClient(addr, opts...)
}

// cacheDir is where the benchmark keeps its Redis snapshot between runs, by
// the convention of .ci/services.sh.
func cacheDir() (string, error) {
	if d := os.Getenv("FEATURESTORE_CACHE"); d != "" {
		return filepath.Join(d, "loadbench"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "featurestore", "loadbench"), nil
}

// redisServer is a redis-server of the benchmark's own, so that other users
// of a shared Redis neither slow the benchmark down unseen nor get 1M
// entities written into their Redis. Its data is saved to an RDB file in
// the cache directory on request (SAVE) and loaded from it at start.
type redisServer struct {
	cmd  *exec.Cmd
	addr string
	done chan error
}

func startRedis(ctx context.Context, dir string) (*redisServer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// A save cut short leaves its temporary file behind.
	if old, _ := filepath.Glob(filepath.Join(dir, "temp-*.rdb")); len(old) > 0 {
		for _, f := range old {
			_ = os.Remove(f)
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	r := &redisServer{addr: addr, done: make(chan error, 1)}
	r.cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--dir", dir,
		"--dbfilename", "loadbench.rdb", "--save", "", "--appendonly", "no", "--daemonize", "no",
		"--logfile", filepath.Join(dir, "redis.log"))
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server (install it, or give -redis-addr): %w", err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	// Loading a snapshot of 1M entities takes a few seconds; until then
	// Redis answers LOADING.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_, err = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 64)
			n := 0
			if err == nil {
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				n, err = c.Read(buf)
			}
			c.Close()
			if err == nil && strings.HasPrefix(string(buf[:n]), "+PONG") {
				return r, nil
			}
		}
		select {
		case err := <-r.done:
			return nil, fmt.Errorf("redis-server exited: %v; log:\n%s", err, tail(filepath.Join(dir, "redis.log")))
		case <-ctx.Done():
			r.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, errors.New("redis-server not ready after 2 minutes")
		}
	}
}

func (r *redisServer) pid() int { return r.cmd.Process.Pid }

func (r *redisServer) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}
