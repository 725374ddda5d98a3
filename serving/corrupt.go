package serving

import (
	"sync"
	"time"

	"github.com/featurestore/featurestore/featurestore/online"
)

// A hash of the online store that does not decode fails only its own
// entity and view (online.ReadBuffer.ReadViews): the lookup serves the other
// entities, gives that one's features FEATURE_STATUS_ERROR, counts it in
// featurestore_serving_corrupt_state_total and logs it at error level. The
// log is bounded, since a corrupt key that is looked up a thousand times a
// second would otherwise write as many lines: each key is logged at most
// once per logLimitInterval, and at most logLimitKeys keys per interval;
// a line left out is counted, and the next line logged says how many were
// (suppressed). The counter counts them all. Lookups that panic are logged
// the same way, by the place of the panic (OnlineService.panicked).
const (
	logLimitInterval = time.Minute
	logLimitKeys     = 100
)

// logLimiter decides which of many like lines are logged, by key: the
// corrupt hashes by their Redis key, the panics of lookups by their place.
// The zero value is ready to use.
type logLimiter struct {
	mu         sync.Mutex
	last       map[string]time.Time // key → when it was last logged
	suppressed int                  // lines left out since the last one logged
}

// allow reports whether the line of key is to be logged now, and if so how
// many lines were left out before it.
func (l *logLimiter) allow(key string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = make(map[string]time.Time)
	}
	at, seen := l.last[key]
	if seen && now.Sub(at) < logLimitInterval {
		l.suppressed++
		return false, 0
	}
	if !seen && len(l.last) >= logLimitKeys {
		for k, at := range l.last {
			if now.Sub(at) >= logLimitInterval {
				delete(l.last, k)
			}
		}
		if len(l.last) >= logLimitKeys {
			l.suppressed++
			return false, 0
		}
	}
	l.last[key] = now
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// corruptState records the reads of a lookup whose hash does not decode:
// each is counted by view, and logged unless corruptLog leaves it out.
func (s *OnlineService) corruptState(corrupt []online.CorruptRead, reads []online.ViewRead) {
	now := time.Now()
	for _, c := range corrupt {
		view := reads[c.Request].Layout.Name
		s.opts.Metrics.corruptState(view)
		if ok, suppressed := s.corruptLog.allow(c.Key, now); ok {
			s.opts.Logger.Error("online state does not decode: its features are served with status error",
				"key", c.Key, "view", view, "err", c.Err, "suppressed", suppressed)
		}
	}
}
