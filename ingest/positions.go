package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Positions keeps, per source partition, where ingest stands: the last
// offset whose effects are all applied, and the partition's high-water event
// time at that offset. Resuming from it replays nothing that the per-key
// fences would not skip, and rebuilds the same late-event and duplicate
// decisions (dedup.go), so that a replay accepts exactly the events the
// first pass accepted.
//
// Key, per project, source and partition (one slot each):
//
//	fs:{pos.<project>.<source>.<partition>}  hash: offset, hw, dedup, topic
//
// The topic is the one the offset is in: a source moved to another topic
// starts that topic at its earliest offset, not at the old one's offsets.
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
	// Topic is the topic Offset is in; empty in positions saved before
	// positions recorded it, taken to be the source's.
	Topic string
}

func (p *Positions) key(source string, partition int) string {
	return "fs:{pos." + p.project + "." + source + "." + strconv.Itoa(partition) + "}"
}

// Load returns the partition's position; ok is false when none was saved.
func (p *Positions) Load(ctx context.Context, source string, partition int) (pos Position, ok bool, err error) {
	vals, err := p.c.HMGet(ctx, p.key(source, partition), "offset", "hw", "dedup", "topic").Result()
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
	pos.Topic, _ = vals[3].(string)
	return pos, true, nil
}

// Offset returns the partition's saved offset in topic; ok is false when
// none is, or the saved one is in another topic.
func (p *Positions) Offset(ctx context.Context, source, topic string, partition int) (offset int64, ok bool, err error) {
	vals, err := p.c.HMGet(ctx, p.key(source, partition), "offset", "topic").Result()
	if err != nil {
		return 0, false, fmt.Errorf("load position of %s/%d: %w", source, partition, err)
	}
	v, isStr := vals[0].(string)
	if t, _ := vals[1].(string); !isStr || t != "" && t != topic {
		return 0, false, nil
	}
	if offset, err = strconv.ParseInt(v, 10, 64); err != nil {
		return 0, false, fmt.Errorf("load position of %s/%d: %w", source, partition, err)
	}
	return offset, true, nil
}

// saveScript moves a position forward only, within its topic: a worker
// that lost its partition in a rebalance cannot move it back. A position in
// another topic is replaced.
var saveScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'offset', 'topic')
if cur[1] and (not cur[2] or cur[2] == ARGV[4]) and tonumber(cur[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'offset', ARGV[1], 'topic', ARGV[4])
for i, f in ipairs({'hw', 'dedup'}) do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], f)
  else
    redis.call('HSET', KEYS[1], f, ARGV[i + 1])
  end
end
return 1
`)

// Save records a position if it is ahead of the stored one.
func (p *Positions) Save(ctx context.Context, source string, partition int, pos Position) error {
	hw := ""
	if pos.HasHW {
		hw = strconv.FormatInt(pos.HW, 10)
	}
	dedup := ""
	if pos.HasDedup {
		dedup = strconv.FormatInt(pos.DedupFrom, 10)
	}
	err := saveScript.Run(ctx, p.c, []string{p.key(source, partition)}, pos.Offset, hw, dedup, pos.Topic).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("save position of %s/%d: %w", source, partition, err)
	}
	return nil
}
