package ingest

// Dedup by event id (a source's event_id_field).
//
// Offset fences make a redelivered Kafka message count once; they cannot
// tell that two messages at different offsets are the same event, produced
// twice (a producer that retried after a lost acknowledgement, an upstream
// job run again). With event_id_field set, an event is a duplicate, dropped
// (counted with result duplicate_id, not dead-lettered), when an earlier
// accepted event of the same partition had the same id and the same event
// time, and that time is still within the allowed lateness of the
// partition's high-water mark. A duplicate outside the lateness is late and
// rejected as such, so remembering the (id, time) pairs of the accepted
// events within the lateness catches every duplicate; two events that share
// an id but not a time are different events (an id reused) and both count.
// Producers key events by entity, so the copies of an event share a
// partition; copies on different partitions are not found.
//
// The pairs are kept in memory per partition. The decisions must be the
// same after a crash, a rebalance or a replay, so the set is never saved:
// it is rebuilt from Kafka. With each position ingest saves the offset of
// the oldest remembered pair (Position.DedupFrom); a process resuming the
// partition at offset P reads from that offset instead of P+1 and, up to P,
// only rebuilds the set (Applier.warm): the events there that decode, are
// not too far ahead of their Kafka timestamps and whose time is within the
// lateness of the high-water mark saved at P are exactly the accepted ones
// still remembered at P. An event there that was late when it came is not
// within the lateness at P either, since the high-water mark only grows.
// The offline log keeps the same offset with its positions, so a resume
// from the log's older position rebuilds the set as it was there.
//
// Memory: one pair per accepted event with an id within the lateness, in
// event time, per partition: about 80 bytes plus the id's length each.

// dedupKey is a remembered event: its id and its event time.
type dedupKey struct {
	id   string
	time int64
}

// dedupEntry is a remembered event in arrival order.
type dedupEntry struct {
	key    dedupKey
	offset int64
}

// dedupSet is a partition's remembered events. Additions made while a
// batch is prepared are pending until the batch is applied (commit), and
// dropped if it fails (discard), so that a retried batch decides the same.
type dedupSet struct {
	seen    map[dedupKey]struct{}
	order   []dedupEntry // committed, in offset order; order[head:] are kept
	head    int
	pending []dedupEntry
	pend    map[dedupKey]struct{}
}

// reset forgets everything: the partition is (re)started.
func (s *dedupSet) reset() {
	s.seen, s.pend = map[dedupKey]struct{}{}, map[dedupKey]struct{}{}
	s.order, s.head, s.pending = nil, 0, nil
}

// has tells whether k is remembered, committed or pending.
func (s *dedupSet) has(k dedupKey) bool {
	if _, ok := s.seen[k]; ok {
		return true
	}
	_, ok := s.pend[k]
	return ok
}

// add remembers k, seen at offset, pending until commit.
func (s *dedupSet) add(k dedupKey, offset int64) {
	s.pend[k] = struct{}{}
	s.pending = append(s.pending, dedupEntry{k, offset})
}

// discard drops the pending additions.
func (s *dedupSet) discard() {
	clear(s.pend)
	s.pending = s.pending[:0]
}

// commit makes the pending additions part of the set, then forgets the
// events older than horizon (the high-water mark minus the lateness).
func (s *dedupSet) commit(horizon int64) {
	for _, e := range s.pending {
		s.seen[e.key] = struct{}{}
	}
	s.order = append(s.order, s.pending...)
	s.discard()
	s.prune(horizon)
}

// prune forgets the events older than horizon, from the oldest offset on.
// An old entry behind a newer one stays until the newer one goes; it can
// never match a lookup, which is for an event within the lateness: newer
// than the horizon, so not of its time.
func (s *dedupSet) prune(horizon int64) {
	for s.head < len(s.order) && s.order[s.head].key.time < horizon {
		delete(s.seen, s.order[s.head].key)
		s.order[s.head] = dedupEntry{}
		s.head++
	}
	if s.head > 1024 && s.head > len(s.order)/2 {
		s.order = append(s.order[:0], s.order[s.head:]...)
		s.head = 0
	}
}

// from returns the offset a resume must rebuild the set from, once the
// pending additions are committed with horizon: that of the oldest event
// kept, or next when none is.
func (s *dedupSet) from(horizon, next int64) int64 {
	for _, e := range s.order[s.head:] {
		if e.key.time >= horizon {
			return e.offset
		}
	}
	for _, e := range s.pending {
		if e.key.time >= horizon {
			return e.offset
		}
	}
	return next
}
