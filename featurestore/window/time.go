package window

import (
	"math"

	"github.com/featurestore/featurestore/featurestore"
)

// Unbounded is the start of an interval that reaches back to the beginning
// of time: lifetime aggregations, and last values without TTL.
const Unbounded int64 = math.MinInt64

// TileOf returns the index of the tile of size g (ms, > 0) that holds time t:
// floor(t/g), also for negative t.
func TileOf(t, g int64) int64 {
	k := t / g
	if t%g < 0 {
		k--
	}
	return k
}

// TileStart returns the first millisecond of tile k of size g.
func TileStart(k, g int64) int64 { return k * g }

// Interval is a half-open interval of event time [Start, End) in Unix ms: an
// event with event time e is in it iff Start <= e < End. Start is Unbounded
// for an interval without beginning.
type Interval struct {
	Start, End int64
}

// Contains reports whether event time e is in the interval.
func (i Interval) Contains(e int64) bool { return i.Start <= e && e < i.End }

// Covered returns the interval of event time that a window of length w (a
// multiple of the tile size g) covers when read at t:
// [(TileOf(t, g)-w/g+1)*g, t+1).
func Covered(t, w, g int64) Interval {
	return Interval{Start: (TileOf(t, g) - w/g + 1) * g, End: t + 1}
}

// TileRange is the inclusive range of tile indexes First..Last. It is empty
// when First > Last.
type TileRange struct {
	First, Last int64
}

// Len returns the number of tiles in the range.
func (r TileRange) Len() int {
	if r.First > r.Last {
		return 0
	}
	return int(r.Last - r.First + 1)
}

// Contains reports whether tile k is in the range.
func (r TileRange) Contains(k int64) bool { return r.First <= k && k <= r.Last }

// WindowTiles returns the tiles that a window of length w (a multiple of the
// tile size g) merges when read at t.
func WindowTiles(t, w, g int64) TileRange {
	k := TileOf(t, g)
	return TileRange{First: k - w/g + 1, Last: k}
}

// Expired reports whether a last value from an event at event time e is
// expired at t under ttl (ms): t - e > ttl. A ttl of 0 or less never expires.
// The boundary is inclusive: a value exactly ttl old is not expired.
func Expired(t, e, ttl int64) bool { return ttl > 0 && t-e > ttl }

// OrderKey orders events totally and identically everywhere: by event time,
// then Kafka partition, then offset. The newest event has the greatest key.
type OrderKey struct {
	Time      int64
	Partition int32
	Offset    int64
}

// Compare returns -1, 0 or +1 as k is before, the same as, or after o.
func (k OrderKey) Compare(o OrderKey) int {
	switch {
	case k.Time != o.Time:
		return cmpInt(k.Time, o.Time)
	case k.Partition != o.Partition:
		return cmpInt(int64(k.Partition), int64(o.Partition))
	default:
		return cmpInt(k.Offset, o.Offset)
	}
}

// After reports whether k orders after o.
func (k OrderKey) After(o OrderKey) bool { return k.Compare(o) > 0 }

// newer reports whether the event of order key k and value v is newer than
// that of ok and ov: by order key and, between events of one order key, by
// value (featurestore.Value.Compare: the greater wins). Two events of one
// topic never share an order key, but events of two topics can: a backfill
// file's rows have the partition and offsets of a pseudo-topic of their own,
// as a Kafka topic's events have theirs. The value decides between them, so
// that the state does not depend on the order they were added in, and
// ingest, serving and export agree.
func newer(k OrderKey, v featurestore.Value, ok OrderKey, ov featurestore.Value) bool {
	if c := k.Compare(ok); c != 0 {
		return c > 0
	}
	return v.Compare(ov) > 0
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
