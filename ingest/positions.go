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
// fences would not skip, and rebuilds the same late-event decisions, so
// that a replay accepts exactly the events the first pass accepted.
//
// Key, per project, source and partition (one slot each):
//
//	fs:{pos.<project>.<source>.<partition>}  hash: offset, hw
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
}

func (p *Positions) key(source string, partition int) string {
	return "fs:{pos." + p.project + "." + source + "." + strconv.Itoa(partition) + "}"
}

// Load returns the partition's position; ok is false when none was saved.
func (p *Positions) Load(ctx context.Context, source string, partition int) (pos Position, ok bool, err error) {
	vals, err := p.c.HMGet(ctx, p.key(source, partition), "offset", "hw").Result()
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
	return pos, true, nil
}

// saveScript moves a position forward only: a worker that lost its
// partition in a rebalance cannot move it back.
var saveScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'offset')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
if ARGV[2] == '' then
  redis.call('HSET', KEYS[1], 'offset', ARGV[1])
  redis.call('HDEL', KEYS[1], 'hw')
else
  redis.call('HSET', KEYS[1], 'offset', ARGV[1], 'hw', ARGV[2])
end
return 1
`)

// Save records a position if it is ahead of the stored one.
func (p *Positions) Save(ctx context.Context, source string, partition int, pos Position) error {
	hw := ""
	if pos.HasHW {
		hw = strconv.FormatInt(pos.HW, 10)
	}
	err := saveScript.Run(ctx, p.c, []string{p.key(source, partition)}, pos.Offset, hw).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("save position of %s/%d: %w", source, partition, err)
	}
	return nil
}
