package ingest

// Dedup by event id (a source's event_id_field).
//
// Offset fences make a redelivered Kafka message count once; they cannot
// tell that two messages at different offsets are the same event, produced
// twice (a producer that retried after a lost acknowledgement, an upstream
// job run again). With event_id_field set, an event is a duplicate, dropped
// (counted with result duplicate_id, not dead-lettered), when an earlier
// event of the same partition still remembered had the same id and the same
// event time. A duplicate outside the allowed lateness of the partition's
// high-water mark is late and rejected as such, so remembering the (id,
// time) pairs of the events within the lateness catches every duplicate, up
// to the source's dedup_max_ids remembered events; two events that share an
// id but not a time are different events (an id reused) and both count.
// Producers key events by entity, so the copies of an event share a
// partition; copies on different partitions are not found.
//
// The pairs are kept in memory per partition, in a list in offset order:
// every event of the partition that decodes with an id and a time and is
// not too far ahead of its Kafka timestamp (accepted, late or duplicate
// alike), from the oldest remembered on. Before an event is decided, the
// oldest are forgotten while their time is older than the lateness allows
// (the high-water mark minus the lateness), and after it is added, while
// the list holds more than the source's dedup_max_ids, which bounds the
// memory. Either way the list only loses its oldest entries, so it always
// holds every such event from its first one's offset on, and its content
// at an offset depends on the messages up to there alone, not on how they
// were batched. A late event in it never matches a later lookup: a copy of
// it is late too (the high-water mark only grows). A duplicate in it keeps
// its key remembered from its own offset on.
//
// The decisions must be the same after a crash, a rebalance or a replay, so
// the list is never saved: it is rebuilt from Kafka. With each position
// ingest saves the offset of the list's first event (Position.DedupFrom); a
// process resuming the partition at offset P reads from that offset instead
// of P+1 and, up to P, only rebuilds the list (Applier.warm), adding every
// event there that decodes with an id and is not too far ahead: the list as
// it was at P. The offline log keeps the same offset with its positions, so
// a resume from the log's older position rebuilds the list as it was there.
//
// Memory: per remembered event, at most dedup_max_ids per partition, the
// id's own allocation (its length rounded up to Go's size class: 16 bytes
// for an id of 9 to 16, 48 for a UUID's 36) plus 90 to 120 bytes in a set
// filled once (after a resume rebuilt it) and 150 to 185 in one whose
// oldest events are forgotten as new ones come (by the lateness or the
// cap: a partition's steady state); 118 and 152 at a million. Measured
// with runtime.MemStats, the live heap after a collection with and
// without sets of 100,000 to 2,000,000 events (BenchmarkDedupMemory,
// TestDedupMemory). The map's share is 52 to 84 bytes filled, 77 to 112
// sliding: a 32-byte slot and a control byte per entry, at most 7/8 of
// the slots used and about half that after the map grows, and deleted
// entries' slots are kept for reuse, not freed. The list's is 34 to 39
// filled, 66 to 77 sliding: 32 bytes per entry, and forgotten entries are
// dropped from its front only once they are half of it (commit), so a
// sliding list holds up to twice the remembered events, plus append's
// spare capacity.

// dedupKey is a remembered event: its id and its event time.
type dedupKey struct {
	id   string
	time int64
}

// dedupEntry is a remembered event in offset order.
type dedupEntry struct {
	key    dedupKey
	offset int64
}

// dedupSet is a partition's remembered events. What a batch changes while
// it is prepared is undone if the batch fails (discard), so that a retried
// batch decides the same; commit keeps it.
type dedupSet struct {
	max   int                // entries kept at most
	seen  map[dedupKey]int32 // the keys of order[head:], with their entries
	order []dedupEntry       // in offset order; order[head:] are remembered
	head  int
	// At the last commit: head and len(order). Entries from head0 up to
	// head were forgotten by the batch in progress, those from len0 on
	// added by it.
	head0, len0 int
	// forgot counts the entries the batch in progress forgot for the cap.
	forgot int
}

// reset forgets everything: the partition is (re)started. max bounds the
// entries kept.
func (s *dedupSet) reset(max int) {
	*s = dedupSet{max: max, seen: map[dedupKey]int32{}}
}

// len returns the number of remembered events.
func (s *dedupSet) len() int { return len(s.order) - s.head }

// has tells whether k is remembered.
func (s *dedupSet) has(k dedupKey) bool { return s.seen[k] > 0 }

// prune forgets the oldest events while their time is older than horizon.
func (s *dedupSet) prune(horizon int64) {
	for s.head < len(s.order) && s.order[s.head].key.time < horizon {
		s.pop()
	}
}

// add remembers k, seen at offset, then forgets the oldest events beyond
// the cap.
func (s *dedupSet) add(k dedupKey, offset int64) {
	s.order = append(s.order, dedupEntry{k, offset})
	s.seen[k]++
	for s.len() > s.max {
		s.pop()
		s.forgot++
	}
}

// pop forgets the oldest event. Its entry stays in order until commit, for
// discard.
func (s *dedupSet) pop() {
	k := s.order[s.head].key
	if s.seen[k]--; s.seen[k] <= 0 {
		delete(s.seen, k)
	}
	s.head++
}

// discard undoes what the batch in progress changed.
func (s *dedupSet) discard() {
	for _, e := range s.order[s.head0:s.head] {
		s.seen[e.key]++
	}
	for _, e := range s.order[s.len0:] {
		if s.seen[e.key]--; s.seen[e.key] <= 0 {
			delete(s.seen, e.key)
		}
	}
	clear(s.order[s.len0:])
	s.order, s.head, s.forgot = s.order[:s.len0], s.head0, 0
}

// commit keeps what the batch in progress changed, after forgetting the
// events older than horizon (the high-water mark after the batch minus the
// lateness: what the next event's decision forgets first), and returns how
// many events the batch forgot for the cap.
func (s *dedupSet) commit(horizon int64) int {
	s.prune(horizon)
	clear(s.order[s.head0:s.head])
	if s.head > 1024 && s.head > len(s.order)/2 {
		n := copy(s.order, s.order[s.head:])
		clear(s.order[n:])
		s.order, s.head = s.order[:n], 0
	}
	s.head0, s.len0 = s.head, len(s.order)
	forgot := s.forgot
	s.forgot = 0
	return forgot
}

// from returns the offset a resume must rebuild the set from, once the
// batch in progress is committed with horizon: that of the oldest event
// kept, or next when none is.
func (s *dedupSet) from(horizon, next int64) int64 {
	for _, e := range s.order[s.head:] {
		if e.key.time >= horizon {
			return e.offset
		}
	}
	return next
}
