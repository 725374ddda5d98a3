package ingest

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/fetch"
)

// isolationReadCommitted is the Fetch API's isolation level that returns
// only the records of decided transactions (below the last stable offset),
// with the list of the aborted ones among them.
const isolationReadCommitted = 1

// readerFetchBytes bounds what one fetch returns (unless its first record
// batch is larger: Kafka then returns that batch whole). A fetch's records
// are all decoded into messages at once, so it bounds the memory a reader
// holds beside its fetcher's batches; at 100 bytes an event it is 10,000
// events, which keeps the round trips per event negligible.
const readerFetchBytes = 1 << 20

// maxFetchBytes bounds a fetch grown to get past a batch (see fetch).
const maxFetchBytes = 64 << 20

// fetchTimeout bounds a fetch beyond the time the broker may wait for
// records.
const fetchTimeout = 30 * time.Second

// partitionReader reads one partition through Kafka's Fetch API at the
// read_committed isolation level and drops the records of aborted
// transactions, as Kafka's own consumers do; kafka-go's Reader reads
// uncommitted records, and at read_committed still hands over the records
// of aborted transactions, since it drops the fetch response's list of
// them. A record of a transaction still open is not returned until the
// transaction commits; one of a transaction that aborts, never.
//
// Transaction markers (the control records a transaction leaves in each
// partition it wrote to) are handed over as messages, as kafka-go's Reader
// hands them over: they take an offset, and the applier counts them and
// moves its position past them. Unlike kafka-go's Reader, the reader marks
// them (controlRecord), so that the applier tells them by their batch, not
// by their bytes (isTransactionMarker).
type partitionReader struct {
	tr        kafka.RoundTripper
	addr      net.Addr
	topic     string
	partition int
	maxBytes  int
	maxWait   time.Duration
	log       *slog.Logger
	// onAborted, if set, is told how many records of aborted transactions
	// each fetch dropped.
	onAborted func(n int)
	// onEnd, if set, is told the partition's end (its high watermark) each
	// time a fetch or a list of offsets returns it.
	onEnd func(end int64)
	// onStall, if set, is told why the partition stalls until an operator
	// acts (pastEnd, a replaced log), and "" when a fetch succeeds again.
	onStall func(why string)
	stalled bool
	// onLost, if set, is told how many events retention deleted before
	// the reader read them.
	onLost func(n int64)

	offset int64           // the next offset to fetch
	msgs   []kafka.Message // fetched and not yet returned
	pos    int             // next of msgs to return
	// pastEndLogged is when the stall of a position past the partition's
	// end was last logged.
	pastEndLogged time.Time
	// grow doubles the bytes of the next fetch so many times: a fetch came
	// back without progress (see fetch).
	grow uint

	// The anchor identifies the log the reader reads: the offset and sum
	// (recordSum) of a record of it, the last of each fetch, or the one
	// at the position the handler saved last (expect). Before the first
	// fetch after one failed (the topic deleted, a broker down), and before
	// the first of all when the handler gave one, the record at its offset
	// is fetched again and compared (checkAnchor): a topic deleted and
	// created again under its name holds other records at the same
	// offsets, whose events the per-key fences of the old ones would take
	// for replays and drop.
	anchor     int64
	anchorSum  uint64
	hasAnchor  bool
	checkFirst bool
	// replacedLogged is when a replaced log was last logged.
	replacedLogged time.Time
}

// errLogReplaced: the record at the anchor's offset is another one than
// the reader read there; the topic was deleted and created again.
var errLogReplaced = errors.New("the partition's log holds another record at an offset ingest read: the topic was deleted and created again")

// anchorBytes bounds the bytes of a record's value that its sum covers.
const anchorBytes = 64 << 10

// recordSum identifies a record of a partition by its key and value (the
// first anchorBytes of it, and its length). Not by its time: kafka-go reads
// the time of a record of a LogAppendTime topic from its batch, which the
// log cleaner rewrites on a compacted topic. Another topic of the name
// holding a record of the same key and value at the offset is taken for
// the same: its events up to there are those applied already.
func recordSum(key, value []byte) uint64 {
	h := fnv.New64a()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(len(key)))
	binary.LittleEndian.PutUint64(b[8:], uint64(len(value)))
	h.Write(b[:])
	h.Write(key)
	h.Write(value[:min(len(value), anchorBytes)])
	return h.Sum64()
}

// expect makes the reader check, before its first fetch, that the record
// at offset is the one whose sum the handler saved with its position.
func (r *partitionReader) expect(offset int64, sum uint64) {
	r.anchor, r.anchorSum, r.hasAnchor, r.checkFirst = offset, sum, true, true
}

// newTransport returns the transport the readers of a group share; d, if
// set, gives its TLS, SASL and dialing. Its metadata cache holds the given
// topics only (all when none is given), so that a cluster of many topics
// does not cost every group a metadata request of all of them every few
// seconds.
func newTransport(d *kafka.Dialer, topics ...string) *kafka.Transport {
	t := &kafka.Transport{DialTimeout: 10 * time.Second, MetadataTopics: topics}
	if d != nil {
		t.TLS, t.SASL, t.ClientID = d.TLS, d.SASLMechanism, d.ClientID
		if d.Timeout > 0 {
			t.DialTimeout = d.Timeout
		}
		if d.DialFunc != nil {
			t.Dial = d.DialFunc
		}
	}
	return t
}

// setOffset makes the reader read from offset next, which may be
// kafka.FirstOffset (the partition's first kept offset) or
// kafka.LastOffset (its end), found by the next fetch.
func (r *partitionReader) setOffset(next int64) {
	r.msgs, r.pos, r.offset = r.msgs[:0], 0, next
}

// resolve turns r.offset from kafka.FirstOffset or kafka.LastOffset into
// an offset.
func (r *partitionReader) resolve(ctx context.Context) error {
	first, last, err := r.bounds(ctx)
	if err != nil {
		return err
	}
	switch r.offset {
	case kafka.FirstOffset:
		r.offset = first
	case kafka.LastOffset:
		r.offset = last
	default:
		return fmt.Errorf("offset %d is neither an offset nor FirstOffset or LastOffset", r.offset)
	}
	return nil
}

// FetchMessage returns the next message, fetching when none is left. It
// returns an error when ctx ends or a fetch fails; the caller may call it
// again (the reader then fetches from where it stopped).
func (r *partitionReader) FetchMessage(ctx context.Context) (kafka.Message, error) {
	m, _, err := r.readBefore(ctx, math.MaxInt64)
	return m, err
}

// readBefore returns the next message if its offset is before end, and
// false once every offset before end has been read: offsets the reader
// skipped (records of aborted transactions) count as read.
func (r *partitionReader) readBefore(ctx context.Context, end int64) (kafka.Message, bool, error) {
	for r.pos >= len(r.msgs) {
		if r.offset >= end {
			return kafka.Message{}, false, nil
		}
		if err := r.fetch(ctx); err != nil {
			return kafka.Message{}, false, err
		}
	}
	m := r.msgs[r.pos]
	if m.Offset >= end {
		return kafka.Message{}, false, nil
	}
	r.msgs[r.pos] = kafka.Message{} // the caller owns its bytes now
	r.pos++
	return m, true, nil
}

// fetch fetches from r.offset into r.msgs, which may stay empty (nothing
// new within maxWait, or only records of aborted transactions), checking
// the anchor first when it must.
func (r *partitionReader) fetch(ctx context.Context) error {
	r.msgs, r.pos = r.msgs[:0], 0
	if r.checkFirst {
		if err := r.checkAnchor(ctx); err != nil {
			return err
		}
	}
	err := r.fetchRecords(ctx)
	if err == nil && r.stalled {
		r.setStalled("")
	}
	if err != nil {
		r.checkFirst = r.hasAnchor
	} else if n := len(r.msgs); n > 0 {
		m := &r.msgs[n-1]
		r.anchor, r.anchorSum, r.hasAnchor = m.Offset, recordSum(m.Key, m.Value), true
	}
	return err
}

// fetchRecords fetches from r.offset into r.msgs.
func (r *partitionReader) fetchRecords(ctx context.Context) error {
	if r.offset < 0 {
		if err := r.resolve(ctx); err != nil {
			return err
		}
	}
	// A broker that stops answering without closing the connection fails
	// the fetch after a while, instead of stalling the partition for good.
	ctx, cancel := context.WithTimeout(ctx, r.maxWait+fetchTimeout)
	defer cancel()
	res, err := r.tr.RoundTrip(ctx, r.addr, &fetch.Request{
		ReplicaID:   -1,
		MaxWaitTime: int32(r.maxWait / time.Millisecond),
		MinBytes:    1,
		// Twice the partition's bytes, so that the partition's limit is the
		// one reached: a broker stopping at the request's limit may leave
		// the aborted transactions out (kfake, dev mode's broker, does).
		MaxBytes:       int32(2 * r.fetchBytes()),
		IsolationLevel: isolationReadCommitted,
		SessionID:      -1,
		SessionEpoch:   -1,
		Topics: []fetch.RequestTopic{{Topic: r.topic, Partitions: []fetch.RequestPartition{{
			Partition: int32(r.partition), CurrentLeaderEpoch: -1, FetchOffset: r.offset, LogStartOffset: -1,
			PartitionMaxBytes: int32(r.fetchBytes()),
		}}}},
	})
	p, err := r.partitionOf(res, err, r.offset)
	if err != nil {
		return err
	}
	if p.ErrorCode != 0 {
		err := kafka.Error(p.ErrorCode)
		if errors.Is(err, kafka.OffsetOutOfRange) {
			return r.outOfRange(ctx)
		}
		return fmt.Errorf("fetch %s/%d at offset %d: %w", r.topic, r.partition, r.offset, err)
	}
	if r.onEnd != nil {
		r.onEnd(p.HighWatermark)
	}
	if p.RecordSet.Records == nil {
		return nil
	}
	start := r.offset
	aborted, nextBatch, err := r.collect(p.RecordSet.Records, p.AbortedTransactions, p.HighWatermark)
	if aborted > 0 && r.onAborted != nil {
		r.onAborted(aborted)
	}
	if err != nil || r.offset > start {
		r.grow = 0
		return err
	}
	// Batches came back but none held a record at or after the offset: the
	// records from it to the end of its batch were removed by compaction
	// (a compacted batch keeps its offsets, even with no record left, and a
	// fetch at one of its removed offsets returns it again). The next batch
	// starts past them; when none came whole within the fetch's bytes, ask
	// for more; when none came within the most bytes, there is none before
	// the last stable offset, which is where reading goes on.
	switch {
	case nextBatch > start:
		r.offset, r.grow = nextBatch, 0
	case r.fetchBytes() < maxFetchBytes:
		r.grow++
	case p.LastStableOffset > start:
		r.offset, r.grow = p.LastStableOffset, 0
	default:
		return fmt.Errorf("fetch %s/%d at offset %d: batches without a record at or after it, and none after it", r.topic, r.partition, start)
	}
	return nil
}

// partitionOf returns the reader's partition in the response of a fetch
// at offset, or the error of the round trip (err) or of the response.
func (r *partitionReader) partitionOf(res protocol.Message, err error, offset int64) (*fetch.ResponsePartition, error) {
	if err != nil {
		return nil, fmt.Errorf("fetch %s/%d at offset %d: %w", r.topic, r.partition, offset, err)
	}
	resp, ok := res.(*fetch.Response)
	if !ok {
		return nil, fmt.Errorf("fetch %s/%d: unexpected response %T", r.topic, r.partition, res)
	}
	if resp.ErrorCode != 0 {
		return nil, fmt.Errorf("fetch %s/%d: %w", r.topic, r.partition, kafka.Error(resp.ErrorCode))
	}
	for i := range resp.Topics {
		for j := range resp.Topics[i].Partitions {
			if q := &resp.Topics[i].Partitions[j]; resp.Topics[i].Topic == r.topic && int(q.Partition) == r.partition {
				return q, nil
			}
		}
	}
	return nil, fmt.Errorf("fetch %s/%d: the response has no such partition", r.topic, r.partition)
}

// fetchBytes is the partition's bytes of the next fetch.
func (r *partitionReader) fetchBytes() int {
	return min(r.maxBytes<<r.grow, maxFetchBytes)
}

// collect appends the records of rs from r.offset on to r.msgs and moves
// r.offset past every record it saw, skipping the records of the aborted
// transactions txns (those the broker lists for the range fetched), and
// returns how many it skipped, and the lowest base offset of a batch that
// starts after the offset the fetch asked for (-1 if none).
//
// A transaction's records are aborted when its producer wrote them at or
// after the transaction's first offset, up to the producer's abort marker:
// batches are taken in offset order, the aborted transactions by first
// offset, and a producer is aborting from the first of its transactional
// batches (data or control) at or after an aborted first offset until its
// abort marker, as in Kafka's consumer. Control batches count, so that the
// marker of a transaction whose records all came before the fetch offset
// ends it, rather than leaving it listed for the producer's next, committed
// transaction.
func (r *partitionReader) collect(rs protocol.RecordReader, txns []fetch.ResponseTransaction, hw int64) (aborted int, nextBatch int64, err error) {
	batches := batchesOf(rs)
	// The broker lists them in offset order; sort anyway, it is short.
	pending := slices.SortedFunc(slices.Values(txns), func(a, b fetch.ResponseTransaction) int {
		return cmp.Compare(a.FirstOffset, b.FirstOffset)
	})
	var aborting map[int64]bool
	abortFrom := func(base int64) {
		for len(pending) > 0 && pending[0].FirstOffset <= base {
			if aborting == nil {
				aborting = map[int64]bool{}
			}
			aborting[pending[0].ProducerID] = true
			pending = pending[1:]
		}
	}
	start := r.offset
	nextBatch = -1
	for _, b := range batches {
		if o, ok := b.(interface{ Offset() int64 }); ok && o.Offset() > start && (nextBatch < 0 || o.Offset() < nextBatch) {
			nextBatch = o.Offset()
		}
		// A record is handed over, or, of an aborted transaction, skipped.
		visit := func(rec *protocol.Record) error { _, err := r.add(rec, hw, false); return err }
		switch b := b.(type) {
		case *protocol.ControlBatch:
			abortFrom(b.BaseOffset)
			visit = func(rec *protocol.Record) error {
				key, err := r.add(rec, hw, true)
				if isAbortKey(key) {
					delete(aborting, b.ProducerID) // an abort marker ends its transaction
				}
				return err
			}
		case *protocol.RecordBatch:
			if b.Attributes.Transactional() {
				abortFrom(b.BaseOffset)
				if aborting[b.ProducerID] {
					visit = func(rec *protocol.Record) error {
						if rec.Offset >= r.offset {
							aborted++
							r.offset = rec.Offset + 1
						}
						return nil
					}
				}
			}
		} // message sets of magic 0 and 1 have no transactions
		if err := r.each(b, visit); err != nil {
			return aborted, nextBatch, err
		}
	}
	return aborted, nextBatch, nil
}

// batchesOf returns the record batches of a fetched partition's records.
func batchesOf(rs protocol.RecordReader) []protocol.RecordReader {
	if s, ok := rs.(*protocol.RecordStream); ok {
		return s.Records
	}
	return []protocol.RecordReader{rs}
}

// each calls fn with each record of a batch.
func (r *partitionReader) each(b protocol.RecordReader, fn func(*protocol.Record) error) error {
	for {
		rec, err := b.ReadRecord()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("fetch %s/%d: read records: %w", r.topic, r.partition, err)
		}
		err = fn(rec)
		closeBytes(rec.Key)
		closeBytes(rec.Value)
		if err != nil {
			return err
		}
	}
}

func closeBytes(b protocol.Bytes) {
	if b != nil {
		b.Close()
	}
}

// controlRecord is the WriterData of a message that the reader took from a
// control batch: a transaction marker. WriterData is the one field of
// kafka.Message free for a reader's own use (kafka-go's Writer alone reads
// it, and a dead letter is a new message).
type controlRecord struct{}

// add appends rec as a message if it is at or after r.offset (a fetch
// starts at the batch holding the offset asked for), and returns its key
// either way. A marker's headers are dropped, as kafka-go's Reader drops
// them.
func (r *partitionReader) add(rec *protocol.Record, hw int64, marker bool) ([]byte, error) {
	key, err := protocol.ReadAll(rec.Key)
	if err != nil {
		return nil, fmt.Errorf("fetch %s/%d: read the key at offset %d: %w", r.topic, r.partition, rec.Offset, err)
	}
	if rec.Offset < r.offset {
		return key, nil
	}
	value, err := protocol.ReadAll(rec.Value)
	if err != nil {
		return nil, fmt.Errorf("fetch %s/%d: read the value at offset %d: %w", r.topic, r.partition, rec.Offset, err)
	}
	// A record without a timestamp (NO_TIMESTAMP, -1: old message formats,
	// producers that send none) has the zero time, as kafka-go's Reader
	// gives it (its makeTime); the protocol package gives 1969-12-31.
	ts := rec.Time
	if ts.UnixMilli() <= 0 {
		ts = time.Time{}
	}
	m := kafka.Message{Topic: r.topic, Partition: r.partition, Offset: rec.Offset, HighWaterMark: hw,
		Key: key, Value: value, Time: ts}
	if marker {
		m.WriterData = controlRecord{}
	}
	if !marker && len(rec.Headers) > 0 {
		m.Headers = make([]kafka.Header, len(rec.Headers))
		for i, h := range rec.Headers {
			m.Headers[i] = kafka.Header(h)
		}
	}
	r.msgs = append(r.msgs, m)
	r.offset = rec.Offset + 1
	return key, nil
}

// isAbortKey tells whether a control record's key is an abort marker's:
// version 0 (int16), type 0 (int16: 0 abort, 1 commit).
func isAbortKey(k []byte) bool {
	return len(k) == 4 && k[0] == 0 && k[1] == 0 && k[2] == 0 && k[3] == 0
}

// outOfRange handles a fetch refused for an offset the partition's log
// does not hold. Before its first offset, retention deleted events before
// ingest read them: that is logged, and reading goes on from the first
// offset kept. Past its end, the topic was deleted and recreated (or its
// log lost), and the per-key fences of the old offsets would take the new
// events for replays: the partition stays stalled until an operator acts
// (docs/operations.md), which is logged at most once a minute.
func (r *partitionReader) outOfRange(ctx context.Context) error {
	first, last, err := r.bounds(ctx)
	if err != nil {
		return fmt.Errorf("fetch %s/%d: offset %d out of range: %w", r.topic, r.partition, r.offset, err)
	}
	if first <= r.offset && r.offset <= last {
		// The log holds it after all: a leader that changed meanwhile, say.
		return fmt.Errorf("fetch %s/%d: offset %d refused as out of range, though the log holds %d to %d: %w", r.topic, r.partition, r.offset, first, last, kafka.OffsetOutOfRange)
	}
	if r.offset < first {
		r.log.Error("events were deleted by the topic's retention before ingest read them; reading goes on from the first offset kept",
			"offset", r.offset, "first_offset", first, "lost", first-r.offset)
		// A partition read again from before its position in Redis (for
		// dedup ids or the offline log) lost for those only the events
		// up to the position: Redis has them.
		from := r.offset
		if r.hasAnchor && r.anchor >= from {
			from = r.anchor + 1
		}
		if r.onLost != nil && first > from {
			r.onLost(first - from)
		}
		r.offset = first
		return nil
	}
	return r.pastEnd(r.offset, last)
}

// pastEnd stalls the partition at an offset past its end, logged at most
// once a minute.
func (r *partitionReader) pastEnd(offset, end int64) error {
	r.setStalled(fmt.Sprintf("recreated topic or lost log: position %d is past the partition's end %d", offset, end))
	if now := time.Now(); now.Sub(r.pastEndLogged) >= time.Minute {
		r.pastEndLogged = now
		r.log.Error("the position to read from is past the partition's end: the topic was deleted and recreated, or its log lost; "+
			"the partition stays stalled (docs/operations.md: a recreated topic)", "offset", offset, "end_offset", end)
	}
	return fmt.Errorf("fetch %s/%d: offset %d is past the partition's end %d: %w", r.topic, r.partition, offset, end, kafka.OffsetOutOfRange)
}

// checkAnchor fetches the record at the anchor's offset and compares it
// with the anchor. Another record there means the topic was deleted and
// created again: the partition stays stalled until an operator acts
// (docs/operations.md), logged at most once a minute. No record there yet
// (the new topic is shorter) stalls it as a position past the end does;
// none any more (retention or compaction removed it) cannot tell, and
// reading goes on.
func (r *partitionReader) checkAnchor(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	res, err := r.tr.RoundTrip(ctx, r.addr, &fetch.Request{
		ReplicaID: -1, MinBytes: 1, MaxBytes: 2 * readerFetchBytes, SessionID: -1, SessionEpoch: -1,
		Topics: []fetch.RequestTopic{{Topic: r.topic, Partitions: []fetch.RequestPartition{{
			Partition: int32(r.partition), CurrentLeaderEpoch: -1, FetchOffset: r.anchor, LogStartOffset: -1,
			PartitionMaxBytes: readerFetchBytes,
		}}}},
	})
	p, err := r.partitionOf(res, err, r.anchor)
	if err != nil {
		return err
	}
	if p.ErrorCode != 0 {
		if kerr := kafka.Error(p.ErrorCode); !errors.Is(kerr, kafka.OffsetOutOfRange) {
			return fmt.Errorf("fetch %s/%d at offset %d, read before: %w", r.topic, r.partition, r.anchor, kerr)
		}
		first, last, err := r.bounds(ctx)
		if err != nil {
			return fmt.Errorf("fetch %s/%d: offset %d out of range: %w", r.topic, r.partition, r.anchor, err)
		}
		if r.anchor < first {
			r.checkFirst = false // gone: retention deleted it
			return nil
		}
		return r.pastEnd(r.anchor, last)
	}
	found, same := false, false
	if p.RecordSet.Records != nil {
		for _, b := range batchesOf(p.RecordSet.Records) {
			err := r.each(b, func(rec *protocol.Record) error {
				if rec.Offset != r.anchor || found {
					return nil
				}
				key, err := protocol.ReadAll(rec.Key)
				if err != nil {
					return err
				}
				value, err := protocol.ReadAll(rec.Value)
				if err != nil {
					return err
				}
				found, same = true, recordSum(key, value) == r.anchorSum
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	if !found || same {
		// Not found: compaction removed it (or the batch holding it lies
		// before the offset's); nothing to compare.
		r.checkFirst = false
		return nil
	}
	r.setStalled(fmt.Sprintf("recreated topic: offset %d holds another record than ingest read there", r.anchor))
	if now := time.Now(); now.Sub(r.replacedLogged) >= time.Minute {
		r.replacedLogged = now
		r.log.Error("the partition holds another record at an offset ingest read before: the topic was deleted and created again; "+
			"the partition stays stalled, since the fences of the old offsets would take its events for replays (docs/operations.md: a recreated topic)",
			"offset", r.anchor, "next_offset", r.offset)
	}
	return fmt.Errorf("fetch %s/%d: offset %d: %w", r.topic, r.partition, r.anchor, errLogReplaced)
}

// setStalled records why the partition is stalled, or with why empty that
// it is not.
func (r *partitionReader) setStalled(why string) {
	r.stalled = why != ""
	if r.onStall != nil {
		r.onStall(why)
	}
}

// bounds returns the partition's first kept offset and its end.
func (r *partitionReader) bounds(ctx context.Context) (first, last int64, err error) {
	ends, err := listEnds(ctx, r.tr, r.addr, r.topic, []int{r.partition}, kafka.ReadUncommitted)
	if err != nil {
		return 0, 0, err
	}
	if r.onEnd != nil {
		r.onEnd(ends[0][1])
	}
	return ends[0][0], ends[0][1], nil
}

// listEnds returns the first kept offset and the end of each of the
// partitions of topic: the end of the log (the high watermark) at
// kafka.ReadUncommitted, or the last stable offset at kafka.ReadCommitted
// (the first offset of a transaction still open, before which every record
// is decided).
func listEnds(ctx context.Context, tr kafka.RoundTripper, addr net.Addr, topic string, parts []int, iso kafka.IsolationLevel) ([][2]int64, error) {
	c := &kafka.Client{Addr: addr, Transport: tr}
	var reqs []kafka.OffsetRequest
	for _, p := range parts {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	resp, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}, IsolationLevel: iso})
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	ends := make([][2]int64, len(parts))
	for i, p := range parts {
		found := false
		for _, po := range resp.Topics[topic] {
			if po.Partition != p {
				continue
			}
			if po.Error != nil {
				return nil, fmt.Errorf("list offsets of %s/%d: %w", topic, p, po.Error)
			}
			ends[i], found = [2]int64{po.FirstOffset, po.LastOffset}, true
		}
		if !found {
			return nil, fmt.Errorf("list offsets of %s/%d: no such partition in the response", topic, p)
		}
	}
	return ends, nil
}
