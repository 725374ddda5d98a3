// Package ingest turns Kafka messages into feature updates: it decodes each
// event of a source (JSON or Protobuf), takes its event time, entity keys and
// fields as the source declares them, and rejects what it cannot use with a
// reason that names the problem. The consumer group, late-event checks, tile
// updates and dead letters build on the decoded Event.
package ingest
