// Package offline is the offline log: every event that ingest accepts for a
// feature view with offline: true, kept in Arrow IPC files for training
// exports and backfills, with the same accepted set as the online store.
//
// # Layout
//
// One log per (project, feature view), in a Storage: a local directory
// (Dir) or object storage (Bucket, over gocloud.dev/blob).
//
//	<project>/<view>/_manifest/<seq, 20 digits>.json   manifest entries
//	<project>/<view>/_manifest/CHECKPOINT              number of a recent checkpoint
//	<project>/<view>/date=YYYY-MM-DD/<topic>-<partition>-<first>-<last>.arrow
//
// A file holds the events of one view from one Kafka partition whose event
// times fall on one UTC date, with offsets first..last (the smallest and the
// largest in the file). The name is deterministic in (topic, partition,
// offset range), so replaying the same events writes the same name.
//
// # Schema
//
// Arrow IPC file format, uncompressed, record batches of up to
// Options.BatchRows rows. Schema metadata: featurestore.project,
// featurestore.view, featurestore.source and featurestore.log_version = "1".
// Columns, in order:
//
//	event_time   timestamp[ms, tz=UTC]  not null
//	ingest_time  timestamp[ms, tz=UTC]  not null  when ingest accepted the event
//	topic        utf8                   not null
//	partition    int32                  not null
//	offset       int64                  not null
//	<join keys>  utf8 or int64          not null  the entity's join keys, in its order
//	<fields>     utf8, int64, float64 or boolean, nullable
//	             the source fields the view's features and filters read,
//	             sorted by field path and named by it
//
// A definition change that alters the columns starts files with the new
// schema; readers match columns by name, and a field a file lacks reads as
// null.
//
// # Commit protocol
//
// A file becomes visible only through its view's manifest, which readers
// read instead of listing directories:
//
//  1. The file is written with Storage.CreateFrom, which never replaces an
//     object: in a directory a temporary file beside the target, fsynced,
//     hard-linked to the target, and the directory fsynced (new
//     directories are fsynced into their parents); in object storage an
//     upload with an if-not-exist precondition, which appears whole or not
//     at all. Another writer may have committed the same name (the
//     partition's new owner after a rebalance), and a committed file must
//     hold what its entry says: a writer that finds the name taken reads
//     the manifest again and, if the partition moved on, drops its rows as
//     a writer that lost the partition. An uncommitted file there is
//     written again if it holds the same events or is older than
//     Options.OrphanGrace, and otherwise waited for: the flush fails and
//     is retried.
//  2. A manifest entry numbered one past the last is created with
//     Storage.Create, exclusively (a hard link in a directory, an
//     if-not-exist precondition in object storage), after the same temporary
//     file and fsync steps. It adds the files and records, per (topic,
//     partition), the committed offset and the partition's high-water event
//     time there. Creating a number that exists fails: the writer reads the
//     newer entries and tries again, so several ingest processes and a
//     compaction can share a log.
//  3. Every 64 entries the entry is a checkpoint with the whole state, and
//     CHECKPOINT is set to its number; loading starts there and reads entry
//     after entry until one is missing. Entries are never deleted by commits
//     (a taken number stays taken); RemoveOrphans deletes those a
//     checkpoint superseded over a day before.
//
// A crash before step 2 leaves an unreferenced file, which the writer's
// start (RemoveOrphans) deletes along with temporary files, or which the
// replay, writing the same name, uses or replaces as above; after it, the
// events are committed. No visible file is ever partial, and no event is
// committed twice: Append drops events at or below the committed (or
// buffered) offset of their partition, as the online store's fences do.
//
// # Resuming ingest
//
// Ingest resumes a partition at the smallest of its online position and the
// positions of the source's offline views (Writer.Resume), with the
// high-water event time saved there, so the replay makes the same
// late-event decisions and both stores end with the same accepted events.
//
// # Compaction
//
// Compact merges runs of consecutive small files of one (view, date,
// partition) into one file, named by the run's offset range, committed by
// one manifest entry that adds it and removes the inputs; the inputs are
// deleted after. The command is featurestore compact.
package offline
