package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Defaults for Options. Dev mode passes the well-known ports explicitly;
// the zero Options pick free ports, which is what tests want.
const (
	DefaultKafkaAddr = "127.0.0.1:0"
	DefaultRedisAddr = "127.0.0.1:0"

	// DefaultPartitions is the partition count of topics created without
	// one: requested with Partitions <= 0, or created on first use by a
	// producer or consumer. More than one, so that code which assumes a
	// single partition fails in dev mode rather than in production.
	DefaultPartitions = 3

	// CloseTimeout bounds how long Close waits for each stand-in to stop.
	CloseTimeout = 10 * time.Second
)

// Options configure Start. The zero value is valid: in-memory Kafka and Redis
// on free loopback ports.
type Options struct {
	// DataDir, if set, is where the Kafka stand-in keeps topics, records and
	// committed offsets (in DataDir/kafka), so that they survive a restart.
	// It is created if needed and locked while the Env runs. Empty means
	// Kafka state lives in memory only.
	DataDir string

	// KafkaAddr is the loopback host:port the Kafka stand-in listens on and
	// advertises. Default DefaultKafkaAddr (a free port); dev mode passes
	// 127.0.0.1:9092.
	KafkaAddr string

	// RedisAddr is the loopback host:port the Redis stand-in listens on.
	// Default DefaultRedisAddr (a free port); dev mode passes 127.0.0.1:6379.
	RedisAddr string

	// Topics are created at start if they do not exist yet. An existing
	// topic is left as it is, even if its partition count differs.
	Topics []TopicSpec

	// Logger receives start and stop events and the Kafka stand-in's own
	// log. Nil discards.
	Logger *slog.Logger
}

// TopicSpec names a topic to create at start.
type TopicSpec struct {
	Name string
	// Partitions <= 0 means DefaultPartitions.
	Partitions int
}

// Env is a running pair of stand-ins. Close it to stop them.
type Env struct {
	log       *slog.Logger
	kafka     *kafkaStandIn
	redis     *redisStandIn
	unlockDir func() error

	closeOnce sync.Once
	closeErr  error
}

// Start starts the Kafka and Redis stand-ins and creates opts.Topics. On
// error nothing is left running. ctx bounds the start only; the stand-ins run
// until Close.
func Start(ctx context.Context, opts Options) (*Env, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kafkaAddr, err := LoopbackAddr("kafka", opts.KafkaAddr, DefaultKafkaAddr)
	if err != nil {
		return nil, err
	}
	redisAddr, err := LoopbackAddr("redis", opts.RedisAddr, DefaultRedisAddr)
	if err != nil {
		return nil, err
	}
	topics, err := normalizeTopics(opts.Topics)
	if err != nil {
		return nil, err
	}

	e := &Env{log: log, unlockDir: func() error { return nil }}
	ok := false
	defer func() {
		if !ok {
			_ = e.Close()
		}
	}()

	kafkaDir := ""
	if opts.DataDir != "" {
		unlock, err := lockDir(opts.DataDir)
		if err != nil {
			return nil, err
		}
		e.unlockDir = unlock
		kafkaDir = filepath.Join(opts.DataDir, "kafka")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start dev environment: %w", err)
	}

	t0 := time.Now()
	if e.kafka, err = startKafka(kafkaAddr, kafkaDir, log); err != nil {
		return nil, err
	}
	if err := e.kafka.createTopics(topics); err != nil {
		return nil, err
	}
	log.Info("kafka stand-in started", "addr", e.kafka.addr, "data_dir", kafkaDir,
		"topics", len(topics), "duration", time.Since(t0))
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start dev environment: %w", err)
	}

	t0 = time.Now()
	if e.redis, err = startRedis(redisAddr); err != nil {
		return nil, err
	}
	log.Info("redis stand-in started", "addr", e.redis.addr, "duration", time.Since(t0))

	ok = true
	return e, nil
}

// KafkaBrokers returns the bootstrap addresses of the Kafka stand-in.
func (e *Env) KafkaBrokers() []string { return []string{e.kafka.addr} }

// CreateTopics creates the topics of specs that do not exist yet, as Start
// does with Options.Topics: for the sources of a registry version applied
// while the environment runs.
func (e *Env) CreateTopics(specs []TopicSpec) error {
	topics, err := normalizeTopics(specs)
	if err != nil {
		return err
	}
	return e.kafka.createTopics(topics)
}

// RedisAddr returns the host:port of the Redis stand-in.
func (e *Env) RedisAddr() string { return e.redis.addr }

// Close stops Redis, then Kafka (the reverse of Start), and releases the data
// directory. Each stand-in gets CloseTimeout to stop. Clients still connected
// see their connections closed. Close is idempotent: later calls return the
// first call's result.
func (e *Env) Close() error {
	e.closeOnce.Do(func() {
		var errs []error
		if e.redis != nil {
			t0 := time.Now()
			errs = append(errs, e.redis.close())
			e.log.Info("redis stand-in stopped", "duration", time.Since(t0))
		}
		if e.kafka != nil {
			t0 := time.Now()
			errs = append(errs, e.kafka.close())
			e.log.Info("kafka stand-in stopped", "duration", time.Since(t0))
		}
		errs = append(errs, e.unlockDir())
		e.closeErr = errors.Join(errs...)
	})
	return e.closeErr
}

// LoopbackAddr checks that addr is host:port with a loopback host. Only
// loopback: the stand-ins have no authentication, and kfake advertises the
// address it listens on, so 0.0.0.0 would be handed to clients as a broker.
func LoopbackAddr(what, addr, def string) (string, error) {
	if addr == "" {
		return def, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%s address %q: %w", what, addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return "", fmt.Errorf("%s address %q: bad port: %w", what, addr, err)
	}
	if host == "localhost" {
		return net.JoinHostPort("127.0.0.1", port), nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("%s address %q: the dev stand-ins listen on loopback only (127.0.0.1, ::1 or localhost)", what, addr)
	}
	return addr, nil
}

func normalizeTopics(specs []TopicSpec) ([]TopicSpec, error) {
	out := make([]TopicSpec, 0, len(specs))
	for _, t := range specs {
		if t.Name == "" {
			return nil, errors.New("topic with an empty name")
		}
		if t.Partitions <= 0 {
			t.Partitions = DefaultPartitions
		}
		out = append(out, t)
	}
	return out, nil
}

// listenError explains the common case of a taken port.
func listenError(what, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("start %s stand-in on %s: address already in use (another `featurestore dev`, or a local %s, is listening there; stop it or choose another address): %w",
			what, addr, what, err)
	}
	return fmt.Errorf("start %s stand-in on %s: %w", what, addr, err)
}

// waitBounded runs stop and waits at most d for it to return.
func waitBounded(what string, d time.Duration, stop func()) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		stop()
	}()
	select {
	case <-done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("stop %s stand-in: still running after %s", what, d)
	}
}
