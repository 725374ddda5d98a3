package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/registry"
)

// This file replays a source's Kafka topic from its earliest offset through
// the Applier, as ingest applies it, up to the end each partition has when
// the replay starts: featurestore backfill --from-kafka. It is how a view
// added to a source, or a cleared store, gets the topic's retained history.
//
// The replay keeps positions of its own (ReplayPositions), so it starts at
// the earliest offset whatever ingest's positions say, and its late-event
// decisions are those of a first pass over the topic. Its writes carry the
// topic's real positions: the online fences and the offline log's positions
// skip what ingest applied before, so the replay adds only what is missing
// (the events of a new view), and replaying again, or resuming an
// interrupted replay, adds nothing.

// ReplayConfig configures Replay.
type ReplayConfig struct {
	Project  string
	Registry *registry.Registry
	Source   *registry.Source
	Brokers  []string
	Dialer   *kafka.Dialer // nil: a plain TCP dialer
	Store    *online.Store
	// Positions is where the replay keeps its own positions: not ingest's
	// (NewPositions with a project name of its own, as the command's
	// "<project>.backfill").
	Positions *Positions
	// Offline is the offline log; nil writes none.
	Offline *offline.Writer
	// BatchSize is the most messages applied together. Default 1000.
	BatchSize int
	// DeadLetters receives the rejected messages, as letters naming the
	// topic, partition and offset; nil counts them only.
	DeadLetters func(BackfillLetter) error
	// SyncDeadLetters, when not nil, makes the letters handed to DeadLetters
	// so far durable. It is called before the replay's position or the offline
	// log may pass the messages they were rejected from: a run resumed after a crash does not
	// read those messages again, so their letters would be lost.
	SyncDeadLetters func() error
	// Progress is called after each batch, per partition (File names the
	// topic and partition), and at the end with Final set.
	Progress func(BackfillProgress)
	Logger   *slog.Logger
}

// ReplayResult is what a replay did.
type ReplayResult struct {
	Topic string
	// Messages counts the messages read, per partition.
	Messages map[int]int64
	// Rejected counts the rejected messages, or uses by a view, by reason.
	Rejected map[Reason]int64
}

// replaySink counts dead letters and hands them on.
type replaySink struct {
	mu       sync.Mutex
	fn       func(BackfillLetter) error
	sync     func() error
	rejected map[Reason]int64
}

func (s *replaySink) Send(_ context.Context, letters []DeadLetter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range letters {
		s.rejected[l.Reason]++
		if s.fn == nil {
			continue
		}
		m := l.Message
		if err := s.fn(BackfillLetter{File: "kafka:" + m.Topic + "/" + strconv.Itoa(m.Partition), Offset: m.Offset,
			Reason: l.Reason, View: l.View, Detail: l.Detail}); err != nil {
			return err
		}
	}
	// Send returns once the letters are durable: the applier then applies
	// the batch and saves its position.
	if s.sync != nil && s.fn != nil {
		if err := s.sync(); err != nil {
			return fmt.Errorf("dead letters: %w", err)
		}
	}
	return nil
}

// Replay applies the source's topic, every partition from its earliest
// offset (or the replay's saved position) to its end when Replay starts.
func Replay(ctx context.Context, cfg ReplayConfig) (ReplayResult, error) {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &kafka.Dialer{Timeout: 10 * time.Second}
	}
	topic := cfg.Source.Kafka.Topic
	res := ReplayResult{Topic: topic, Messages: map[int]int64{}}
	sink := &replaySink{fn: cfg.DeadLetters, sync: cfg.SyncDeadLetters, rejected: map[Reason]int64{}}
	res.Rejected = sink.rejected
	a, err := NewApplier(cfg.Project, cfg.Registry, cfg.Source, cfg.Store, cfg.Positions, sink, cfg.Logger)
	if err != nil {
		return res, err
	}
	if err := a.SetOffline(cfg.Offline, cfg.Registry); err != nil {
		return res, err
	}
	tr := newTransport(cfg.Dialer, topic)
	defer tr.CloseIdleConnections()
	ends, err := partitionEnds(ctx, tr, cfg.Brokers, topic)
	if err != nil {
		return res, err
	}
	// logged is, per partition, the last offset handed to the offline log.
	logged := make([]int64, len(ends))
	for p := range len(ends) {
		n, last, err := replayPartition(ctx, &cfg, tr, a, topic, p, ends[p])
		// Another writer committed the partition's offline log meanwhile
		// (an ingest process replaying the same positions): resume again,
		// a few times at most.
		for retries := 0; errors.Is(err, ErrResumePartition) && retries < 5; retries++ {
			var more, again int64
			more, again, err = replayPartition(ctx, &cfg, tr, a, topic, p, ends[p])
			n, last = n+more, max(last, again)
		}
		res.Messages[p], logged[p] = n, last
		if err != nil {
			return res, err
		}
	}
	if cfg.Offline != nil {
		if err := cfg.Offline.Flush(ctx); err != nil {
			return res, err
		}
		// The final flush drops, and succeeds, what another writer's
		// commit made it lose: the log must hold what was handed to it.
		var views []string
		for _, ov := range a.offViews {
			views = append(views, ov.schema.View)
		}
		for p, last := range logged {
			if last < 0 {
				continue
			}
			if err := checkLogged(ctx, cfg.Offline, views, topic, int32(p), last, "ingest logging the topic, or another replay"); err != nil {
				return res, fmt.Errorf("replay of %s/%d: %w", topic, p, err)
			}
		}
	}
	return res, nil
}

// replayFetchRetries is how many failed fetches in a row a replay retries.
const replayFetchRetries = 5

// partitionEnds returns, for each partition of topic, its first kept
// offset and its last stable offset: every record before it is decided
// (committed, aborted, or not transactional), so that a replay never waits
// for a transaction still open.
func partitionEnds(ctx context.Context, tr kafka.RoundTripper, brokers []string, topic string) ([][2]int64, error) {
	addr := kafka.TCP(brokers...)
	md, err := (&kafka.Client{Addr: addr, Transport: tr}).Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("kafka at %v: %w", brokers, err)
	}
	var parts []int
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("partitions of topic %s: %w", topic, t.Error)
		}
		for _, p := range t.Partitions {
			parts = append(parts, p.ID)
		}
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("partitions of topic %s: %w", topic, kafka.UnknownTopicOrPartition)
	}
	slices.Sort(parts)
	if parts[len(parts)-1] != len(parts)-1 {
		return nil, fmt.Errorf("partitions of topic %s: ids %v are not 0 to %d", topic, parts, len(parts)-1)
	}
	return listEnds(ctx, tr, addr, topic, parts, kafka.ReadCommitted)
}

// replayPartition applies partition p from where the replay stands to the
// offset before end[1]. It returns the number of messages applied and the
// offset of the last one handed to the offline log (-1 for none).
func replayPartition(ctx context.Context, cfg *ReplayConfig, tr kafka.RoundTripper, a *Applier, topic string, p int, end [2]int64) (int64, int64, error) {
	logged := int64(-1)
	next, err := a.Resume(ctx, topic, p)
	if err != nil {
		return 0, logged, err
	}
	if next == kafka.FirstOffset {
		next = end[0]
	}
	// From next up to rebuild the applier only rebuilds its dedup state:
	// nothing to apply there, nor to count.
	rebuild := a.rebuildUntil(p)
	name := fmt.Sprintf("kafka:%s/%d", topic, p)
	start := time.Now()
	report := func(done int64, final bool) {
		if cfg.Progress != nil {
			cfg.Progress(BackfillProgress{File: name, Done: done, Total: end[1] - end[0], Elapsed: time.Since(start), Final: final})
		}
	}
	if max(next, rebuild+1) >= end[1] {
		report(end[1]-end[0], true)
		return 0, logged, nil
	}
	r := &partitionReader{tr: tr, addr: kafka.TCP(cfg.Brokers...), topic: topic, partition: p,
		maxBytes: readerFetchBytes, maxWait: 500 * time.Millisecond, log: cfg.Logger.With("partition", p)}
	r.onAborted = a.countAborted
	r.setOffset(next)
	// n counts the messages of batches applied; inBatch those of the batch
	// in hand, which a failed Apply (to be read again) does not add.
	var n, inBatch int64
	batch := make([]kafka.Message, 0, cfg.BatchSize)
	failures := 0
	for {
		m, ok, err := r.readBefore(ctx, end[1])
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return n, logged, err
			}
			// A leader moving or a connection dropped: try again a few
			// times, as ingest's readers do, before giving up.
			if failures++; failures <= replayFetchRetries {
				cfg.Logger.Warn("replay fetch failed; retrying", "partition", p, "err", err, "attempt", failures)
				if !sleep(ctx, time.Duration(failures)*time.Second) {
					return n, logged, ctx.Err()
				}
				continue
			}
			return n, logged, fmt.Errorf("read %s: %w", name, err)
		}
		failures = 0
		if ok {
			batch = append(batch, m)
			if m.Offset > rebuild {
				inBatch++
			}
		}
		if len(batch) > 0 && (len(batch) == cfg.BatchSize || !ok) {
			if err := a.Apply(ctx, topic, p, batch); err != nil {
				return n, logged, err
			}
			n, inBatch = n+inBatch, 0
			if last := batch[len(batch)-1].Offset; last > rebuild {
				logged = last
			}
			report(batch[len(batch)-1].Offset+1-end[0], false)
			batch = batch[:0]
		}
		if !ok {
			report(end[1]-end[0], true)
			return n, logged, nil
		}
	}
}
