package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// PartitionHandler applies the messages of one topic partition. The group
// runner calls it from one goroutine per assigned partition.
type PartitionHandler interface {
	// Resume returns the offset to read next: the one after the last offset
	// whose effects are durably applied, or kafka.FirstOffset when nothing
	// was ever applied. Correctness rests on it, not on Kafka's committed
	// offsets, which are only a hint for tools and lag metrics.
	Resume(ctx context.Context, topic string, partition int) (int64, error)
	// Apply applies msgs, in offset order, durably. It may be called again
	// with messages it already applied (after a crash or rebalance) and must
	// then change nothing. An error means nothing can be assumed applied;
	// the runner retries the same batch, unless the error wraps
	// ErrResumePartition: then the runner calls Resume again and reads from
	// the offset it returns.
	Apply(ctx context.Context, topic string, partition int, msgs []kafka.Message) error
}

// idleChecker is a PartitionHandler that can tell, while its partition
// gets no messages, whether what it applied is still in place: an error
// wrapping ErrResumePartition has the partition resumed again, as from
// Apply. The runner asks every GroupConfig.idleCheck of quiet, from the
// goroutine that calls Apply, between batches.
type idleChecker interface {
	checkIdle(ctx context.Context, topic string, partition int) error
}

// ErrResumePartition, wrapped in an error of PartitionHandler.Apply, says
// that the partition must be resumed again rather than the batch retried:
// state the handler cannot rebuild from the batch alone was taken from it
// (the offline log of the partition committed by another writer).
var ErrResumePartition = errors.New("the partition must be resumed again")

// GroupConfig configures a consumer group runner.
type GroupConfig struct {
	Brokers []string
	GroupID string
	Topic   string
	// BatchSize bounds the messages of one Apply call (default 1000) while
	// the partition keeps up.
	BatchSize int
	// Linger is how long a batch waits for more messages once it has one
	// (default 5ms): longer batches, later values.
	Linger time.Duration
	// MaxBatchSize bounds the messages of one Apply call while the
	// partition is behind by more than BatchSize messages (default 50,000).
	// The next batch is read while the current one is applied, so while
	// behind a batch grows with the time the last one took, up to this size
	// or MaxBatchBytes: the events of an entity in one batch are written to
	// it at once, so larger batches write less often per event, which is
	// how ingest catches up. A partition that keeps up is not slowed down:
	// a batch never waits more than Linger for more messages.
	MaxBatchSize int
	// MaxBatchBytes bounds the keys, values and headers of the messages of
	// one batch, plus 256 bytes each for what holds them (default 16 MiB).
	// A partition holds at most two batches: the one applied and the next.
	MaxBatchBytes int
	// Memory, if set, bounds the bytes of the batches of all partitions
	// together, of every group sharing it (one per process); see
	// MemoryBudget. Unset, memory under lag grows with the partitions
	// assigned: two batches of MaxBatchBytes each.
	Memory *MemoryBudget
	// SessionTimeout is the group session timeout (default 10s; Kafka
	// refuses less than 6s).
	SessionTimeout time.Duration
	// ShutdownTimeout bounds how long an in-flight batch may take to finish
	// after the group is stopped (default 30s): it bounds each attempt at a
	// batch, and the release of a partition (its offline log committed).
	ShutdownTimeout time.Duration
	// RebalanceTimeout is how long the group coordinator waits, once a
	// rebalance starts, for every member to join the group again. A member
	// joins again once all its partitions stopped: each finishes the
	// attempt at its batch in flight and is released, up to
	// ShutdownTimeout each, while the member heartbeats (keepAlive). A
	// member that takes longer is expelled: its
	// partitions go to others while it still applies their batches (the
	// fences keep that correct, but the work is done twice), and it joins
	// again as a new member, which starts another rebalance. The default,
	// and the least value (a smaller one is raised to it), is twice
	// ShutdownTimeout plus rebalanceMargin, and at least SessionTimeout:
	// 65s with the default ShutdownTimeout. It does not delay the
	// rebalance after a member died: that member stops heartbeating, and
	// is expelled after SessionTimeout.
	RebalanceTimeout time.Duration
	// RetryMin and RetryMax bound the backoff between attempts at a batch
	// that failed, say while Redis is down (defaults 100ms and 5s).
	RetryMin, RetryMax time.Duration
	// Dialer, if set, is used for all broker connections (TLS, SASL).
	Dialer *kafka.Dialer
	// OnGroup, if set, is told true when the process enters a generation
	// of the group (with or without partitions), and false when joining
	// one fails or RunGroup returns.
	OnGroup func(in bool)
	// DeadLetterTopic, if set, is the source's dead-letter topic, whose
	// absence is logged before the group is joined (see waitForTopics).
	DeadLetterTopic string
	// CreateTopics, if set, creates missing topics instead of waiting for
	// them: `featurestore dev`'s in-process broker, for sources applied
	// while it runs.
	CreateTopics func(ctx context.Context, topics []string) error
	// OnMissingTopics, if set, is told the topic RunGroup waits for, and
	// nil once it exists.
	OnMissingTopics func(missing []string)
	Logger          *slog.Logger
	// health, if set, is told of the partitions that stall, whose
	// batches fail, and that are released (Readiness.track).
	health *partitionHealth
	// idleCheck is how long a partition waits without messages before it
	// asks its handler (an idleChecker) whether its state is in place,
	// and again as long as none comes (default defaultIdleCheck).
	idleCheck time.Duration
}

func (c *GroupConfig) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.Linger <= 0 {
		c.Linger = 5 * time.Millisecond
	}
	if c.MaxBatchSize <= 0 {
		c.MaxBatchSize = 50_000
	}
	c.MaxBatchSize = max(c.MaxBatchSize, c.BatchSize)
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 16 << 20
	}

	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = defaultShutdownTimeout
	}
	c.RebalanceTimeout = max(c.RebalanceTimeout, 2*c.ShutdownTimeout+rebalanceMargin, c.SessionTimeout)
	if c.RetryMin <= 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.idleCheck <= 0 {
		c.idleCheck = defaultIdleCheck
	}
}

// defaultShutdownTimeout is GroupConfig.ShutdownTimeout's default.
const defaultShutdownTimeout = 30 * time.Second

// defaultIdleCheck is GroupConfig.idleCheck's default: a partition without
// messages finds a lost position (Applier.checkPosition: Redis restarted
// without persistence, or failed over to a replica that lagged) within
// this, not at its next message; one HMGET per quiet partition.
const defaultIdleCheck = 5 * time.Second

// RunGroup joins the consumer group and applies every partition it is
// assigned, until ctx ends. Several processes running it with the same group
// id share the topic's partitions and take over each other's partitions when
// one leaves; partitions added to the topic are picked up (watchPartitions).
// When ctx ends, the batch in flight on each partition is finished (within
// ShutdownTimeout) before RunGroup returns; a join of the group in progress
// is not waited for (closeGroup). RunGroup never creates the topic (unless
// CreateTopics says to): it waits for it to exist before it joins, and
// should it be deleted, it leaves the group and waits for it again.
func RunGroup(ctx context.Context, cfg GroupConfig, h PartitionHandler) error {
	cfg.defaults()
	log := cfg.Logger.With("group", cfg.GroupID, "topic", cfg.Topic)
	for {
		if !waitForTopics(ctx, &cfg, log) {
			return nil
		}
		gone, err := runGroup(ctx, &cfg, h, log)
		if err != nil || !gone || ctx.Err() != nil {
			return err
		}
		log.Error("the topic was deleted: its partitions stopped, the consumer group was left; waiting for the topic to exist again")
	}
}

// runGroup is RunGroup once its topic exists: it returns true if the topic
// was deleted (watchPartitions), false when ctx ends.
func runGroup(ctx context.Context, cfg *GroupConfig, h PartitionHandler, log *slog.Logger) (gone bool, err error) {
	// The partitions' readers share one transport (a pool of connections
	// per broker).
	tr := newTransport(cfg.Dialer, cfg.Topic)
	defer tr.CloseIdleConnections()
	conns := newGroupConns()
	gcfg := cfg.consumerGroup(log)
	gcfg.Dialer = conns.dialer(cfg.Dialer)
	group, err := kafka.NewConsumerGroup(gcfg)
	if err != nil {
		return false, fmt.Errorf("join consumer group %s: %w", cfg.GroupID, err)
	}
	// The member id of the last generation, which a join of the group
	// after it uses too.
	var member string
	defer func() { closeGroup(group, member, cfg.leaver(tr), conns, cfg.ShutdownTimeout, log) }()

	inGroup := func(in bool) {
		if cfg.OnGroup != nil {
			cfg.OnGroup(in)
		}
	}
	defer inGroup(false)
	backoff := cfg.RetryMin
	var deleted atomic.Bool // set by watchPartitions
	for {
		gen, err := group.Next(ctx)
		if ctx.Err() != nil {
			return false, nil
		}
		if deleted.Load() {
			return true, nil
		}
		if err != nil {
			inGroup(false)
			// Next retries by itself; errors here are transient more
			// often than not. Wait, then ask again.
			log.Warn("consumer group generation failed", "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return false, nil
			}
			backoff = min(2*backoff, cfg.RetryMax)
			continue
		}
		backoff = cfg.RetryMin
		member = gen.MemberID
		inGroup(true)
		var parts []int
		for _, a := range gen.Assignments[cfg.Topic] {
			parts = append(parts, a.ID)
		}
		log.Info("partitions assigned", "generation", gen.ID, "member", gen.MemberID, "partitions", parts)
		var wg sync.WaitGroup
		stopped := make(chan struct{}) // closed once the partitions stopped
		if len(parts) > 0 {
			gen.Start(func(genCtx context.Context) { keepAlive(genCtx, cfg, gen, tr, stopped, log) })
		}
		wg.Add(1)
		gen.Start(func(genCtx context.Context) {
			defer wg.Done()
			watchPartitions(ctx, genCtx, cfg, conns, &deleted, log)
		})
		for _, a := range gen.Assignments[cfg.Topic] {
			wg.Add(1)
			gen.Start(func(genCtx context.Context) {
				defer wg.Done()
				// The partition stops when its generation ends (a
				// rebalance) or when the process stops.
				genCtx, cancel := context.WithCancel(genCtx)
				defer cancel()
				stop := context.AfterFunc(ctx, cancel)
				defer stop()
				w := &partitionWorker{cfg: cfg, log: log.With("partition", a.ID), h: h, gen: gen, tr: tr, partition: a.ID}
				w.run(ctx, genCtx)
			})
		}
		// The generation ends on a rebalance, when the partitions of the
		// topic change, or when ctx ends; Start's functions see their
		// context cancelled and finish their batch.
		wg.Wait()
		close(stopped)
		if ctx.Err() != nil {
			return false, nil
		}
		if deleted.Load() {
			return true, nil
		}
	}
}

// partitionCheckEvery is how often watchPartitions asks for the number of
// partitions of the topic (a variable for tests).
var partitionCheckEvery = 5 * time.Second

// watchPartitions ends the generation when the number of partitions of the
// topic changes, so that the group is joined again and partitions added to
// the topic are assigned. kafka-go's own watcher (WatchPartitionChanges)
// asks with auto-creation on: a topic deleted while ingest runs would be
// created again, with the brokers' default partitions and replication. This
// one asks without (missingTopics).
//
// When the topic is gone, it sets deleted and closes the group's
// connections before the generation ends: kafka-go joins the group again
// as soon as a generation ends, and the leader of a join asks for the
// topic's partitions with auto-creation on. With its connections closed,
// the join fails, and runGroup closes the group and returns. It checks
// once more when the generation ends otherwise (a rebalance), for the same
// reason, unless ctx (the process's) ended. The member does not leave the
// group (a leave starts a rebalance, and the other members' join would
// create the topic): the coordinator expels it after SessionTimeout, by
// when the other members saw the topic gone too.
func watchPartitions(ctx, genCtx context.Context, cfg *GroupConfig, conns *groupConns, deleted *atomic.Bool, log *slog.Logger) {
	count := func(ctx context.Context) (int, bool) {
		ctx, cancel := context.WithTimeout(ctx, partitionCheckTimeout)
		defer cancel()
		n, err := partitionCount(ctx, cfg)
		if err != nil {
			log.Debug("partition count check failed", "err", err)
			return 0, false
		}
		return n, true
	}
	gone := func() {
		deleted.Store(true)
		conns.close()
	}
	known, ok := count(genCtx)
	if ok && known == 0 {
		gone()
		return
	}
	t := time.NewTicker(partitionCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done(): // as the partitions do: the group closes after
			return
		case <-genCtx.Done():
			if ctx.Err() == nil {
				if n, ok := count(context.WithoutCancel(ctx)); ok && n == 0 {
					gone()
				}
			}
			return
		case <-t.C:
		}
		n, ok := count(genCtx)
		switch {
		case !ok:
		case n == 0:
			gone()
			return
		case known == 0:
			known = n // the first check failed
		case n != known:
			log.Info("the number of partitions of the topic changed; joining the consumer group again", "from", known, "to", n)
			return
		}
	}
}

// partitionCheckTimeout bounds a check of watchPartitions.
const partitionCheckTimeout = 10 * time.Second

// partitionCount returns the number of partitions of the group's topic, 0
// if it does not exist, asking the brokers without auto-creation.
func partitionCount(ctx context.Context, cfg *GroupConfig) (int, error) {
	counts, err := topicPartitions(ctx, cfg, []string{cfg.Topic})
	return counts[cfg.Topic], err
}

// keepAlive heartbeats for the member of generation gen, from the end of
// the generation until stopped is closed: kafka-go stops heartbeating when
// a generation ends (a rebalance starts), while the member's partitions
// finish their batches in flight (up to ShutdownTimeout each), and the
// coordinator expels a member that has neither heartbeated for
// SessionTimeout nor asked to join again. Kept alive, the member has
// RebalanceTimeout to join again. It stops when the coordinator no longer
// knows the generation or the member (the rebalance ended without it), and
// at once when stopped is closed while the generation goes on (ctx ended:
// the group leaves when RunGroup returns).
func keepAlive(genCtx context.Context, cfg *GroupConfig, gen *kafka.Generation, tr kafka.RoundTripper, stopped <-chan struct{}, log *slog.Logger) {
	select {
	case <-stopped:
		return
	case <-genCtx.Done():
	}
	every := cfg.SessionTimeout / 5
	client := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr, Timeout: every}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stopped:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		res, err := client.Heartbeat(ctx, &kafka.HeartbeatRequest{GroupID: cfg.GroupID, GenerationID: gen.ID, MemberID: gen.MemberID})
		cancel()
		if err == nil {
			err = res.Error
		}
		switch {
		case err == nil, errors.Is(err, kafka.RebalanceInProgress):
		case errors.Is(err, kafka.IllegalGeneration), errors.Is(err, kafka.UnknownMemberId):
			log.Debug("heartbeats while the partitions stop end", "generation", gen.ID, "err", err)
			return
		default:
			log.Debug("heartbeat while the partitions stop failed", "generation", gen.ID, "err", err)
		}
	}
}

// rebalanceMargin is what RebalanceTimeout allows a member beyond the
// attempt at its batch and the release of its partitions: to stop reading
// and committing, and to send its request to join again.
const rebalanceMargin = 5 * time.Second

// consumerGroup returns the configuration of the kafka-go consumer group
// of a GroupConfig with its defaults.
func (c *GroupConfig) consumerGroup(log *slog.Logger) kafka.ConsumerGroupConfig {
	return kafka.ConsumerGroupConfig{
		ID:      c.GroupID,
		Brokers: c.Brokers,
		Dialer:  c.Dialer,
		Topics:  []string{c.Topic},
		// Off: its metadata requests create a deleted topic again;
		// watchPartitions does its work.
		WatchPartitionChanges: false,
		SessionTimeout:        c.SessionTimeout,
		RebalanceTimeout:      c.RebalanceTimeout,
		HeartbeatInterval:     c.SessionTimeout / 5,
		JoinGroupBackoff:      time.Second,
		StartOffset:           kafka.FirstOffset,
		ErrorLogger:           kafka.LoggerFunc(func(msg string, args ...any) { log.Debug("kafka consumer group", "detail", fmt.Sprintf(msg, args...)) }),
	}
}

// topicCheckEvery is how often waitForTopics asks again for topics that do
// not exist (a variable for tests); it logs at most once a minute.
var topicCheckEvery = 5 * time.Second

// waitForTopics returns once the group's topic exists, asking the brokers
// every topicCheckEvery, or false when ctx ends first. Joining the group
// would create a missing topic (kafka-go asks for its partitions with
// auto-creation on, and brokers create topics by default), so a misspelt
// topic name would be created and read, empty, for ever. The check asks
// without auto-creation. A check that fails (brokers unreachable) is
// retried, as a group join would be.
//
// A missing dead-letter topic is logged and not waited for: brokers that
// create topics create it at the first letter, as they always did (the
// dead-letter writer allows it), and where they do not, the first rejected
// event's partition stops until it exists (its warnings say why).
func waitForTopics(ctx context.Context, cfg *GroupConfig, log *slog.Logger) bool {
	topics := []string{cfg.Topic}
	if cfg.DeadLetterTopic != "" {
		topics = append(topics, cfg.DeadLetterTopic)
	}
	var logged time.Time
	for {
		missing, err := missingTopics(ctx, cfg, topics)
		if err == nil && len(missing) > 0 && cfg.CreateTopics != nil {
			if err = cfg.CreateTopics(ctx, missing); err == nil {
				log.Info("created missing topics", "topics", missing)
				missing = nil
			} else {
				err = fmt.Errorf("create topics %v: %w", missing, err)
			}
		}
		if err == nil && !slices.Contains(missing, cfg.Topic) {
			if cfg.OnMissingTopics != nil {
				cfg.OnMissingTopics(nil)
			}
			if len(missing) > 0 {
				log.Warn("the dead-letter topic does not exist: brokers that create topics create it at the first rejected event; elsewhere that event's partition stops until it exists (create it with the replication it needs)",
					"dead_letter_topic", cfg.DeadLetterTopic)
			}
			if !logged.IsZero() {
				log.Info("the topic exists now; joining the consumer group")
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if time.Since(logged) >= time.Minute {
			if err != nil {
				err = connectError(ctx, cfg, err)
				log.Warn("cannot tell whether the topic exists; asking again", "err", err, "retry_in", topicCheckEvery)
			} else {
				log.Error("the topic does not exist; waiting for it (ingest does not create topics: create it with the partitions and replication it needs)",
					"retry_in", topicCheckEvery)
			}
			logged = time.Now()
		}
		if err == nil && cfg.OnMissingTopics != nil {
			cfg.OnMissingTopics([]string{cfg.Topic})
		}
		if !sleep(ctx, topicCheckEvery) {
			return false
		}
	}
}

// connectError returns why a connection to the first broker fails, when it
// does, or else err: the client's error for a refused SASL login is an
// unexpected EOF, where the dialer's names the failure.
func connectError(ctx context.Context, cfg *GroupConfig, err error) error {
	if len(cfg.Brokers) == 0 {
		return err
	}
	d := cfg.Dialer
	if d == nil {
		d = kafka.DefaultDialer
	}
	conn, derr := d.DialContext(ctx, "tcp", cfg.Brokers[0])
	if derr != nil {
		return derr
	}
	conn.Close()
	return err
}

// missingTopics returns the topics the brokers do not know, asking them
// without auto-creation.
func missingTopics(ctx context.Context, cfg *GroupConfig, topics []string) ([]string, error) {
	counts, err := topicPartitions(ctx, cfg, topics)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, name := range topics {
		if counts[name] == 0 {
			missing = append(missing, name)
		}
	}
	return missing, nil
}

// topicPartitions returns the number of partitions of each topic the
// brokers know, asking them without auto-creation (a topic they do not
// know is absent). Each call has a transport of its own: a transport
// answers metadata requests from what it cached, for seconds, and would
// not see a topic created or deleted meanwhile.
func topicPartitions(ctx context.Context, cfg *GroupConfig, topics []string) (map[string]int, error) {
	tr := newTransport(cfg.Dialer, topics...)
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr, Timeout: 10 * time.Second}
	res, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, t := range res.Topics {
		switch {
		case !slices.Contains(topics, t.Name), errors.Is(t.Error, kafka.UnknownTopicOrPartition):
		case t.Error != nil:
			return nil, fmt.Errorf("topic %s: %w", t.Name, t.Error)
		default:
			counts[t.Name] = len(t.Partitions)
		}
	}
	return counts, nil
}

// closeGroup closes the consumer group within d. kafka-go's Close waits
// for the group's goroutine, which cannot be interrupted while it waits
// for the coordinator. After a rebalance ended the last generation, it
// joins the group again, and the coordinator answers a join once every
// member of the group joined again (or RebalanceTimeout passed): a member
// applying a batch joins once the batch is applied and its partitions
// released, up to ShutdownTimeout each; kafka-go then syncs, and only
// then sees that it was closed and leaves. So a stop at that moment would
// wait for the slowest member of the group. The join is abandoned
// instead, which is safe: this member's partitions stopped, what they
// applied is fenced, and a join applies nothing.
//
// Once Close has had closeGrace (it leaves a generation in a round trip
// or two), closeGroup asks the coordinator to remove member, the member
// id of the last generation, which the join uses: the coordinator answers
// the join (an unknown member) and goes on with the rebalance without it,
// and kafka-go returns. Should Close still wait (a first join, whose
// member id is not known until the coordinator answers; a member id
// kafka-go replaced after an error; a coordinator that does not answer),
// the group's connections are closed and no more are opened: kafka-go's
// requests fail and it returns. A member abandoned in a join is in the
// rebalance without its process, as if it had died: the coordinator
// expels it after SessionTimeout.
func closeGroup(group io.Closer, member string, leave func(ctx context.Context, member string) error, conns *groupConns, d time.Duration, log *slog.Logger) {
	done := make(chan error, 1)
	go func() { done <- group.Close() }()
	deadline := time.Now().Add(d)
	closed := func(within time.Duration) bool {
		t := time.NewTimer(min(within, time.Until(deadline)))
		defer t.Stop()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, kafka.ErrGroupClosed) {
				log.Warn("close consumer group failed", "err", err)
			}
			return true
		case <-t.C:
			return false
		}
	}
	if closed(closeGrace) {
		return
	}
	start := time.Now()
	if member != "" {
		ctx, cancel := context.WithTimeout(context.Background(), min(leaveTimeout, max(time.Until(deadline), 0)))
		err := leave(ctx, member)
		cancel()
		if err == nil && closed(closeGrace) {
			log.Info("left the consumer group while joining it", "member", member, "took", time.Since(start))
			return
		}
		if err != nil {
			log.Debug("leave the consumer group while joining it failed", "member", member, "err", err)
		}
	}
	conns.close()
	if closed(d) {
		log.Info("closed the consumer group's connections: a join in progress is abandoned, its member expelled after the session timeout", "took", time.Since(start))
		return
	}
	log.Warn("close consumer group timed out", "timeout", d)
}

// closeGrace is how long closeGroup lets kafka-go's Close take before it
// makes it return: leaving a generation takes a round trip or two.
const closeGrace = 500 * time.Millisecond

// leaveTimeout bounds closeGroup's request to leave the group: a
// coordinator that does not answer it soon will not answer the join.
const leaveTimeout = 2 * time.Second

// leaver returns a function that asks the group's coordinator to remove a
// member from the group, through tr.
func (c *GroupConfig) leaver(tr kafka.RoundTripper) func(ctx context.Context, member string) error {
	return func(ctx context.Context, member string) error {
		client := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Transport: tr}
		res, err := client.LeaveGroup(ctx, &kafka.LeaveGroupRequest{GroupID: c.GroupID, Members: []kafka.LeaveGroupRequestMember{{ID: member}}})
		if err != nil {
			return err
		}
		if res.Error != nil {
			return res.Error
		}
		for _, m := range res.Members {
			if m.Error != nil {
				return m.Error
			}
		}
		return nil
	}
}

// groupConns keeps the open connections of a consumer group, so that
// closeGroup can close them.
type groupConns struct {
	// ctx ends when the connections are closed, and with it the dials in
	// progress (a broker gone does not answer them); no dial succeeds
	// after.
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	conns  map[*groupConn]struct{}
}

func newGroupConns() *groupConns {
	ctx, cancel := context.WithCancel(context.Background())
	return &groupConns{ctx: ctx, cancel: cancel, conns: map[*groupConn]struct{}{}}
}

// errGroupConnsClosed is the error of a connection the consumer group asks
// for once closeGroup closed its connections.
var errGroupConnsClosed = errors.New("the consumer group is closed")

// dialer returns a copy of d (kafka.DefaultDialer if nil) whose
// connections s keeps.
func (s *groupConns) dialer(d *kafka.Dialer) *kafka.Dialer {
	if d == nil {
		d = kafka.DefaultDialer
	}
	dd := *d
	dial := d.DialFunc
	if dial == nil {
		// As kafka-go's dialer does without DialFunc (Happy Eyeballs is
		// on by default).
		dial = (&net.Dialer{LocalAddr: d.LocalAddr, FallbackDelay: d.FallbackDelay, KeepAlive: d.KeepAlive}).DialContext
	}
	dd.DialFunc = func(ctx context.Context, network, address string) (net.Conn, error) {
		if s.ctx.Err() != nil {
			return nil, errGroupConnsClosed
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(s.ctx, cancel)()
		conn, err := dial(ctx, network, address)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.ctx.Err() != nil { // close ran while this dialed
			conn.Close()
			return nil, errGroupConnsClosed
		}
		c := &groupConn{Conn: conn, s: s}
		s.conns[c] = struct{}{}
		return c, nil
	}
	return &dd
}

// close closes the connections open, ends the dials in progress and
// makes the dialer refuse new ones.
func (s *groupConns) close() {
	s.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Conn.Close()
	}
	clear(s.conns)
}

// groupConn is a connection of a consumer group, which groupConns forgets
// once closed: the group opens new ones at each generation.
type groupConn struct {
	net.Conn
	s *groupConns
}

func (c *groupConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
