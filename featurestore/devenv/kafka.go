package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
)

// kafkaStandIn is a one-broker kfake cluster.
type kafkaStandIn struct {
	c    *kfake.Cluster
	addr string
	log  *slog.Logger
}

func startKafka(addr, dataDir string, log *slog.Logger) (*kafkaStandIn, error) {
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		// kfake always listens on 127.0.0.1:<port>; ListenFn lets us pick
		// the host as well. The listener's address is what the broker
		// advertises in metadata, which is why it must be reachable.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, addr)
		}),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(DefaultPartitions),
		kfake.ClusterID("featurestore-dev"),
		kfake.WithLogger(kfakeLogger{log}),
	}
	if dataDir != "" {
		// DataDir makes kfake append records to segment files as they
		// are produced and log group commits as they happen, and reload
		// both on NewCluster. No SyncWrites: fsync per batch would cost
		// far more than dev mode gains from surviving an OS crash.
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "listen" {
			return nil, listenError("kafka", addr, err)
		}
		if dataDir != "" {
			// Unreadable state (another kfake version's format, a
			// damaged file) is not repaired by retrying. Removing only the
			// Kafka state is not enough: the offline log next to it holds
			// offsets in these topics, which a new state restarts at 0.
			return nil, fmt.Errorf("start kafka stand-in from data directory %s (remove the whole data directory %s, not only its kafka directory, to start afresh): %w",
				dataDir, filepath.Dir(dataDir), err)
		}
		return nil, fmt.Errorf("start kafka stand-in: %w", err)
	}
	return &kafkaStandIn{c: c, addr: c.ListenAddrs()[0], log: log}, nil
}

// createTopics creates the topics that do not exist yet. Topics persisted by
// an earlier run exist already, so this is idempotent across restarts.
func (k *kafkaStandIn) createTopics(topics []TopicSpec) error {
	for _, t := range topics {
		if k.c.TopicInfo(t.Name) != nil {
			if n := len(k.c.PartitionInfos(t.Name)); n != t.Partitions {
				// Kafka cannot shrink a topic, and growing one moves keys
				// to other partitions; neither should happen silently.
				k.log.Warn("kafka stand-in: topic exists with another partition count, kept as is",
					"topic", t.Name, "partitions", n, "requested", t.Partitions)
			}
			continue
		}
		err := k.c.CreateTopic(t.Name, int32(t.Partitions), nil)
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %q with %d partitions: %w", t.Name, t.Partitions, err)
		}
	}
	return nil
}

// close stops the cluster. With a data directory, kfake first answers the
// offset commits already queued, then writes its state; both happen here.
func (k *kafkaStandIn) close() error {
	return waitBounded("kafka", CloseTimeout, k.c.Close)
}

// kfakeLogger forwards kfake's log to slog, level for level. kfake logs
// little: failed disk writes and load repairs (warn), requests it could not
// handle, which close the client's connection (info), group events.
type kfakeLogger struct{ l *slog.Logger }

func (k kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	var lvl slog.Level
	switch level {
	case kfake.LogLevelError:
		lvl = slog.LevelError
	case kfake.LogLevelWarn:
		lvl = slog.LevelWarn
	case kfake.LogLevelInfo:
		lvl = slog.LevelInfo
	case kfake.LogLevelDebug:
		lvl = slog.LevelDebug
	default:
		return
	}
	ctx := context.Background()
	if !k.l.Enabled(ctx, lvl) {
		return
	}
	k.l.Log(ctx, lvl, "kafka stand-in", "detail", fmt.Sprintf(format, args...))
}
