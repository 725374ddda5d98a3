package ingest

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Positions keeps, per source partition, where ingest stands: the last
// offset whose effects are all applied, and the partition's high-water event
// time at that offset. Resuming from it replays nothing that the per-key
// fences would not skip, and rebuilds the same late-event and duplicate
// decisions (dedup.go), so that a replay accepts exactly the events the
// first pass accepted.
//
// Key, per project, source, topic and partition (one slot each):
//
//	fs:{pos.<project>.<source>/<topic>/<partition>}  hash: offset, hw, dedup,
//	                                                 rec, offline.<view> marks
//
// The topic is part of the key because offsets mean something in one topic
// only: a source moved to another topic starts that one at its earliest
// offset, and while processes on the old and the new definitions both run
// (a rolling change) neither resets the other's position. Topic names hold
// no '/', source names no '.' and project names neither (a Kafka replay's
// project, <project>.backfill, one '.'), so keys cannot collide.
type Positions struct {
	c       redis.UniversalClient
	project string
}

// NewPositions returns the position store of a project.
func NewPositions(c redis.UniversalClient, project string) *Positions {
	return &Positions{c: c, project: project}
}

// Position is where a partition stands.
type Position struct {
	Offset int64 // last applied offset
	HW     int64 // high-water event time (ms) after that offset
	HasHW  bool
	// DedupFrom is the offset from which a resume rebuilds the events
	// remembered for dedup by event id (dedup.go): that of the oldest one,
	// or Offset+1 when there is none. HasDedup is false when the source
	// does not dedup, or did not when the position was saved.
	DedupFrom int64
	HasDedup  bool
	// Record is the sum (recordSum) of the record at Offset, by which a
	// resume tells the topic it was read from from one created again
	// under its name. HasRecord is false for positions saved without it,
	// or whose offset a version that does not save it moved on since (a
	// rolling deploy): the field holds the offset it is of.
	Record    uint64
	HasRecord bool
}

func (p *Positions) key(source, topic string, partition int) string {
	return "fs:{pos." + p.project + "." + source + "/" + topic + "/" + strconv.Itoa(partition) + "}"
}

// Load returns the position of the source's partition of topic; ok is
// false when none was saved.
func (p *Positions) Load(ctx context.Context, source, topic string, partition int) (pos Position, ok bool, err error) {
	vals, err := p.c.HMGet(ctx, p.key(source, topic, partition), "offset", "hw", "dedup", "rec").Result()
	if err != nil {
		return Position{}, false, fmt.Errorf("load position of %s/%d: %w", source, partition, err)
	}
	if vals[0] == nil {
		return Position{}, false, nil
	}
	if pos.Offset, err = strconv.ParseInt(vals[0].(string), 10, 64); err != nil {
		return Position{}, false, fmt.Errorf("load position of %s/%d: %w", source, partition, err)
	}
	if s, isStr := vals[1].(string); isStr && s != "" {
		if pos.HW, err = strconv.ParseInt(s, 10, 64); err != nil {
			return Position{}, false, fmt.Errorf("load position of %s/%d: %w", source, partition, err)
		}
		pos.HasHW = true
	}
	if s, isStr := vals[2].(string); isStr && s != "" {
		if pos.DedupFrom, err = strconv.ParseInt(s, 10, 64); err != nil {
			return Position{}, false, fmt.Errorf("load position of %s/%d: dedup: %w", source, partition, err)
		}
		pos.HasDedup = true
	}
	if s, isStr := vals[3].(string); isStr && s != "" {
		off, sum, found := strings.Cut(s, ":")
		at, err1 := strconv.ParseInt(off, 10, 64)
		rec, err2 := strconv.ParseUint(sum, 16, 64)
		if !found || err1 != nil || err2 != nil {
			return Position{}, false, fmt.Errorf("load position of %s/%d: rec %q: want offset:sum", source, partition, s)
		}
		pos.Record, pos.HasRecord = rec, at == pos.Offset
	}
	return pos, true, nil
}

// saveScript moves a position forward only: a worker that lost its
// partition in a rebalance cannot move it back. It returns the offset
// stored after it ran.
var saveScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'offset')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return cur end
redis.call('HSET', KEYS[1], 'offset', ARGV[1])
for i, f in ipairs({'hw', 'dedup', 'rec'}) do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], f)
  else
    redis.call('HSET', KEYS[1], f, ARGV[i + 1])
  end
end
return ARGV[1]
`)

// Save records a position if it is ahead of the stored one, and returns
// the offset stored then: pos's, or the stored one ahead of it (a
// partition read again from an earlier offset to fill the offline log, or
// another consumer ahead).
func (p *Positions) Save(ctx context.Context, source, topic string, partition int, pos Position) (stored int64, err error) {
	hw := ""
	if pos.HasHW {
		hw = strconv.FormatInt(pos.HW, 10)
	}
	dedup := ""
	if pos.HasDedup {
		dedup = strconv.FormatInt(pos.DedupFrom, 10)
	}
	rec := ""
	if pos.HasRecord {
		rec = strconv.FormatInt(pos.Offset, 10) + ":" + strconv.FormatUint(pos.Record, 16)
	}
	v, err := saveScript.Run(ctx, p.c, []string{p.key(source, topic, partition)}, pos.Offset, hw, dedup, rec).Text()
	if err == nil {
		stored, err = strconv.ParseInt(v, 10, 64)
	}
	if err != nil {
		return 0, fmt.Errorf("save position of %s/%d: %w", source, partition, err)
	}
	return stored, nil
}
