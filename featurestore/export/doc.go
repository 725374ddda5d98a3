// Package export builds point-in-time correct training sets: for each row
// of an entity table (entity keys, a timestamp, labels), the value each
// requested feature had for that entity at that timestamp, exactly as the
// online lookup would have served it then.
//
// # Values
//
// The values come from the offline log's events (see Log) through the
// window engine that ingest and serving use (package window): a key's events
// are added in order to the same tile states, lifetime state and last values
// that ingest builds, and read with the same window.Reader that serving
// reads with, at the row's timestamp t in Unix milliseconds (rounded down).
// So a window covers window.Covered(t, W, g), a last value is the newest
// event's by order key with the view's TTL, and no event with an event time
// after t is ever used: rows of a key are visited in time order and only the
// events up to each row's t have been added when it is read. The values
// equal the online ones bit for bit, floating point included.
//
// Each requested feature becomes one column, named view:feature as serving
// names it, typed by the feature's value type: int64, float64 (double),
// utf8 (string), boolean, or a list of these (last_n). A value is null where
// the online lookup would give no value: status not found (no event, or an
// aggregation such as mean over none), expired (a last value older than the
// TTL), or null (a last value whose newest event has no value). Counts, sums
// and count_distinct over no events are 0, and last_n an empty list, as
// online.
//
// Features of views on different entities can be exported together: each
// row then carries the join keys of every entity involved, and each view is
// read with its own entity's key.
//
// # Output
//
// The output is the entity table's columns, unchanged, followed by the
// feature columns in request order, as an Arrow IPC file or a Parquet file.
// Rows keep the entity table's order: the output's row i is the input's
// row i. It is written under a temporary name and renamed when complete.
//
// # Algorithm
//
// Memory stays bounded by Options.Memory whatever the sizes of the entity
// table and the log:
//
//  1. The entity table is read once, and each row is written, with its
//     number, to one of P spill files per entity, chosen by a hash of the
//     row's key. A spill file is a list of Arrow record batches kept in
//     memory while they fit in a quarter of the budget, and an Arrow IPC
//     stream in a temporary directory for what does not. The keys also go
//     into a Bloom filter.
//  2. Each view's log is scanned once, and each event written to the spill
//     file of its key's hash, unless no row can see it: its key is not in
//     the table (by the Bloom filter), its event time is after the latest
//     row's timestamp, or it is older than the earliest row reads: before
//     the first tile its windows cover and, for last values, more than
//     the view's TTL before it (views with lifetime aggregates, or last
//     values without a TTL, keep every older event).
//  3. A bucket (an entity's rows and its views' events with keys of one
//     hash bucket) whose size exceeds its share of the memory budget is
//     split again with another hash, up to three times.
//  4. Buckets are computed in parallel: a bucket's rows are sorted by
//     (key, timestamp) and its events by (key, event time, partition,
//     offset), and each key is swept once: its events are added in order up
//     to each row's timestamp, tiles older than the tiles a read needs are
//     dropped, and the view is read. A group's results are kept in memory,
//     with an index from row number to where its results are, while they
//     fit in an eighth of the budget and the index (8 bytes a row) in a
//     sixteenth; beyond that, they are written to a file sorted by row
//     number.
//  5. The entity table is read again, and each batch is written out with
//     its rows' features: gathered through the index (column by column,
//     in parallel, when every result is in memory), and merged back from
//     the results files by row number for the rest.
//
// P is chosen so that a bucket fits its share of the budget (the budget over
// twice the parallelism, at most 64 MiB: smaller buckets sort and sweep
// faster, and balance the workers) from the entity table's size and, when
// the log tells (LogSizer), the events' size. Each spill file is read back
// whole when its bucket is computed; a bucket that holds a single key with
// more events than its share of the budget is computed anyway, over budget.
package export
