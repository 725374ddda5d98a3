package ingest

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The start mark of a view's offline log on a partition is a field of the
// partition's position hash:
//
//	offline.<view>  "<offset>,<hw>[,<dedup>]" (hw empty when none), or "start"
//
// "start" means the log holds the partition from its first offset;
// otherwise from the offset after <offset>, with the high-water time <hw>
// and the dedup rebuild offset <dedup> (Position.DedupFrom) there. It is set once and never changed: once the log has committed a
// position for the partition, the mark is not read any more.

// markOfflineStart sets the start mark of view's log on the partition to
// pos (or the partition's start, when !ok) unless one is set, and returns
// the mark in force: fromStart, or the position the log starts after.
func (p *Positions) markOfflineStart(ctx context.Context, source, topic string, partition int, view string, pos Position, ok bool) (mark Position, fromStart bool, err error) {
	key, field := p.key(source, topic, partition), "offline."+view
	val := "start"
	if ok {
		val = strconv.FormatInt(pos.Offset, 10) + ","
		if pos.HasHW {
			val += strconv.FormatInt(pos.HW, 10)
		}
		if pos.HasDedup {
			val += "," + strconv.FormatInt(pos.DedupFrom, 10)
		}
	}
	if err := p.c.HSetNX(ctx, key, field, val).Err(); err != nil {
		return Position{}, false, fmt.Errorf("mark the offline log start of %s on %s/%d: %w", view, source, partition, err)
	}
	cur, err := p.c.HGet(ctx, key, field).Result()
	if err != nil {
		if err == redis.Nil {
			err = fmt.Errorf("mark vanished")
		}
		return Position{}, false, fmt.Errorf("read the offline log start of %s on %s/%d: %w", view, source, partition, err)
	}
	if cur == "start" {
		return Position{}, true, nil
	}
	off, hw, _ := strings.Cut(cur, ",")
	hw, dedup, hasDedup := strings.Cut(hw, ",")
	if mark.Offset, err = strconv.ParseInt(off, 10, 64); err != nil {
		return Position{}, false, fmt.Errorf("offline log start of %s on %s/%d: %q: %w", view, source, partition, cur, err)
	}
	if hw != "" {
		if mark.HW, err = strconv.ParseInt(hw, 10, 64); err != nil {
			return Position{}, false, fmt.Errorf("offline log start of %s on %s/%d: %q: %w", view, source, partition, cur, err)
		}
		mark.HasHW = true
	}
	if hasDedup {
		if mark.DedupFrom, err = strconv.ParseInt(dedup, 10, 64); err != nil {
			return Position{}, false, fmt.Errorf("offline log start of %s on %s/%d: %q: %w", view, source, partition, cur, err)
		}
		mark.HasDedup = true
	}
	return mark, false, nil
}
