package devenv

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// ExpiryTick is how often the Redis stand-in's clock is advanced with the
// wall clock, at most; a key expires at most this long after its deadline
// (longer on a large database, see redisStandIn.runClock).
const ExpiryTick = 100 * time.Millisecond

// maxClockShare bounds the share of time the clock goroutine may hold
// miniredis' lock. Advancing the clock sorts every key of every database
// (3.7ms for 10k keys, 41ms for 100k), so a large dev database is ticked less
// often instead of stalling every command.
const maxClockShare = 20 // at most 1/20 of the time

type redisStandIn struct {
	m    *miniredis.Miniredis
	addr string

	stop    chan struct{}
	stopped sync.WaitGroup
}

func startRedis(addr string) (*redisStandIn, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "listen" {
			return nil, listenError("redis", addr, err)
		}
		return nil, fmt.Errorf("start redis stand-in on %s: %w", addr, err)
	}
	r := &redisStandIn{m: m, addr: m.Addr(), stop: make(chan struct{})}
	r.stopped.Go(r.runClock)
	return r, nil
}

// runClock advances miniredis' TTLs with the wall clock until stop is closed.
// miniredis stores TTLs as remaining durations that only shrink when told to
// (FastForward), so without this PEXPIRE'd keys would live forever. The
// elapsed time comes from the monotonic clock, so wall-clock jumps neither
// expire everything nor freeze expiry.
func (r *redisStandIn) runClock() {
	last := time.Now()
	wait := ExpiryTick
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-timer.C:
		}
		now := time.Now()
		r.m.FastForward(now.Sub(last))
		last = now
		wait = max(ExpiryTick, maxClockShare*time.Since(now))
		timer.Reset(wait)
	}
}

func (r *redisStandIn) close() error {
	close(r.stop)
	r.stopped.Wait()
	return waitBounded("redis", CloseTimeout, r.m.Close)
}
