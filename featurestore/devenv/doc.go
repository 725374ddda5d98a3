// Package devenv runs in-process stand-ins for Kafka and Redis, so that
// `featurestore dev` (what `make run` calls) needs nothing installed.
//
// Kafka is a single-broker kfake cluster (github.com/twmb/franz-go/pkg/kfake)
// and Redis is a miniredis server (github.com/alicebob/miniredis/v2). Both
// listen on loopback only: neither has authentication, and kfake advertises
// its listen address to clients, so a wildcard address would be useless to
// them anyway. Real clients (kafka-go, franz-go, go-redis) talk to them over
// TCP exactly as they would to the real services; production and the
// integration tests use real Kafka and Redis (see DESIGN.md section 8).
//
// # What survives a restart
//
// With Options.DataDir set, the Kafka stand-in keeps its state under
// DataDir/kafka: topics, records and committed consumer-group offsets
// survive a restart of the process, including an unclean one (records are
// written to segment files as they are produced; without fsync per batch, so
// an operating-system crash may lose the last writes, as with Kafka's
// defaults). Records are kept until deleted: the stand-in applies no
// retention unless a topic is given retention settings. Committed offsets of
// a group with no members expire after seven days, as in Kafka. Without a
// DataDir everything lives in memory and is gone on Close.
//
// The Redis stand-in keeps nothing: each start begins with an empty Redis.
// That is safe by design, not by luck. The online state is derived state, and
// the offset fences that make ingest effectively-once live in Redis next to
// the values they guard (DESIGN.md section 4). An empty Redis has no fences,
// so ingest replays every source partition from its earliest offset and
// rebuilds the tiles and last values from the retained Kafka records. This
// rests on ingest choosing where to resume from the fences, never from the
// group's committed offsets alone: the commits do survive the restart, and an
// ingest that trusted them would leave out everything before them. Whatever
// else lives in Redis, such as the registry, has to be written again after
// Start returns. Expect the first moments after a restart to be spent
// replaying.
//
// # Key expiry
//
// miniredis does not expire keys with the wall clock on its own: TTLs only
// shrink when its clock is advanced. Start runs a goroutine that advances it
// with the wall clock every ExpiryTick, so PEXPIRE'd keys really disappear
// as they would in Redis, at most one tick late; PTTL reads up to one tick
// high. Each advance visits every key, so on a large database the goroutine
// ticks less often rather than hold miniredis' lock more than a twentieth of
// the time. miniredis' own ClockTTL mode was not used: it advances the clock
// inside every command, which makes each command cost as much as one such
// visit (3ms with 10,000 keys instead of 0.1µs).
//
// # Addresses and the data directory
//
// Explicit addresses are taken as given: if the port is taken (another
// `featurestore dev`, a local Kafka or Redis), Start fails and says so. A
// data directory is locked while an Env uses it, so two processes cannot
// write the same Kafka log.
package devenv
