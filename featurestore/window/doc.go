// Package window is the one definition of time in the feature store: which
// events a feature value at time t is made of, and the aggregation code that
// computes it. Ingest (writing tiles to the online store), serving (merging
// them at request time) and the training export (building the same tiles
// from offline events) all call this package, so that a model is trained on
// exactly the values it is served.
//
// # Time
//
// Times are int64 Unix milliseconds: event times, read times, tile bounds and
// durations alike. Arithmetic is exact for times within ±2^53 ms (±285,000
// years) of the epoch; times outside that range are not supported.
//
// A tile of size g is the half-open interval [k*g, (k+1)*g) of event time,
// aligned to the Unix epoch, for the integer tile index k = TileOf(t, g) =
// floor(t/g). Floor division, not Go's truncating division: t = -1 is in tile
// -1, [-g, 0).
//
// A read happens at a time t: online, the server's clock once per request;
// offline, the timestamp of an entity row. An event is visible at t when its
// event time e <= t. Every feature is a function of the visible events only.
//
// A sliding window of length W (a multiple of g, n = W/g tiles) read at t
// covers the tiles TileOf(t)-n+1 .. TileOf(t): the n-1 whole tiles before the
// one that holds t, and the visible part of that one. In event time it is the
// half-open interval
//
//	Covered(t, W, g) = [(TileOf(t)-n+1)*g, t+1)
//
// and an event with event time e contributes iff start <= e < end. The window
// is therefore between W-g+1 ms and W long: it slides in steps of one tile at
// its start and continuously at its end. With W = g the window is the visible
// part of the current tile only. Windows decay: read later, with no new
// events, a window loses its old tiles and a count falls to zero.
//
// A lifetime aggregation covers every visible event: [-inf, t+1).
//
// A last value (a feature without aggregation) is the feature's field in the
// newest visible event, where events are ordered by their order key
// (event time, Kafka partition, Kafka offset): greater event time wins, ties go
// to the greater partition, then the greater offset. Events of two topics can
// share an order key (a backfill file's rows have positions of their own);
// between those the greater value of the feature's field wins
// (featurestore.Value.Compare), so the order is total and the same wherever
// and in whatever order the events are seen. With the view's TTL > 0 the value is
// expired at t when t - e > TTL for the newest event's time e: an event exactly
// TTL old is still served, one a millisecond older is not (the boundary is
// inclusive). A TTL of 0 never expires. Expiry is not a fallback to an older
// event: the newest event decides. If the newest event has no value for the
// field (null or absent), the status is null, again without fallback. A
// last value with a filter is taken from the newest visible event that passes
// the filter.
//
// Aggregations (count, sum, mean, min, max, last, last_n, count_distinct,
// stddev) take the events in their window that pass the feature's filter and,
// except count, have a non-null value of the declared type in the feature's
// field; events with a null or absent field are skipped by the aggregation. So
// the aggregation last is the last non-null value, unlike a last value. The
// value of a feature also reports the newest event time among the events it
// aggregated, and for windows the covered interval.
//
// # States
//
// Every aggregation keeps a state that is a deterministic function of the set
// of events added to it: the same events, added in any order, in any batches,
// through any tree of partial states merged together and round trips through
// the binary encoding in between, give the same state, the same bytes and the
// same result, bit for bit, floating point included. Sums are exact (see Sum),
// the last values are chosen by the total order key, and count_distinct's
// sketch is a function of the set of value hashes. Results are the same on
// every platform: sums, means and standard deviations are computed in exact
// integer arithmetic and rounded once, and the few float64 operations left
// (the HyperLogLog estimate) are written so that no compiler may fuse them
// into multiply-adds. Each event must be added once per state (events are
// identified by partition and offset; merging two states is the union of
// disjoint event sets).
//
// A view's windowed features keep one TileState per tile index, holding for
// the events of that tile one state per distinct computation (features that
// differ only in name and window length share one); lifetime features keep
// one LifetimeState, last values one LastValues. A read at t needs the
// tiles of TilesNeeded(t), and must be given states that hold no event later
// than t in the tile TileOf(t), the lifetime state and the last values (tiles
// after TileOf(t) are ignored, tiles before it are complete). Online this holds
// when ingest accepts no event from the future; the export holds it by adding
// a key's events in time order up to each row's timestamp.
//
// A tile stays readable until TileExpiry: reads at t >= (k+n)*g never need
// tile k, for the longest window of n tiles.
package window
