package featurestore

// MinTimeMs and MaxTimeMs bound the times the feature store takes, event
// times and the times of an export's rows, in Unix milliseconds: the years
// 1 to 9999 (UTC), those RFC 3339 can write, which keeps millisecond
// arithmetic (windows, TTLs, unit conversions) far from overflow.
const (
	MinTimeMs = -62_135_596_800_000 // 0001-01-01T00:00:00Z
	MaxTimeMs = 253_402_300_799_999 // 9999-12-31T23:59:59.999Z
)
