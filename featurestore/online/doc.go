// Package online keeps the online state of feature views in Redis: what ingest
// writes and serving reads (DESIGN.md sections 4 and 5). This comment is the
// reference for the layout.
//
// The package stores and guards; it does not aggregate. Tile states, lifetime
// aggregates and last values are opaque byte strings here, encoded and merged
// in Go by featurestore/window. Standalone Redis and Redis Cluster are used
// through the same code, a redis.UniversalClient.
//
// # Keys
//
// Each (feature view, entity) pair has one hash:
//
//	fs:{<entity key>}:<project>:<view>
//
// The project (Key.Project) keeps projects that share a Redis apart.
//
// <entity key> is featurestore.EntityKey.Encode: the typed join key values in
// the entity's declared order, in a self-delimiting binary form, in unpadded
// base64url. Join key values are never spliced into the name raw, so a value
// holding '{', '}', ':', '*' or white space cannot change the key's slot or
// step into another namespace, and distinct typed keys ("1" and 1, ("a","bc")
// and ("ab","c")) never share a hash. The braces are the Redis Cluster hash
// tag: every view of an entity hashes to the same slot (Key.Slot), so one node
// holds all of an entity's state. The registry's keys, fs:{reg.<project>}:...,
// cannot collide with these: an encoded entity key has no '.'. Ingest
// positions, fs:{pos.<project>.<source>/<topic>/<partition>}, cannot either.
// With Options.Replicas, Apply also writes short-lived sync keys,
// fs:{w<n>}:sync (a minute's TTL, one per slot it waits on; replicas.go),
// which cannot be an entity's hash (no project and view after the tag), nor
// a registry key or a position (their tags start with "reg." and "pos.").
//
// # Fields
//
//	v                    version: the number of writes to the hash, decimal;
//	                     every write increments it
//	f:<topic>:<part>     fence: the highest offset of that partition of the
//	                     view's source topic whose events the hash includes,
//	                     decimal. The topic is part of the name so that a view
//	                     moved to another topic starts with fresh fences
//	t:<slot>             a tile: the state of tile k = floor(event time / g),
//	                     the interval [k*g, (k+1)*g) for the view's tile size
//	                     g, kept in slot k mod R of a ring of R slots
//	                     (ring.go), its value prefixed by k as a varint.
//	                     R covers every tile still readable or writable, so
//	                     an active entity holds at most R tiles and old
//	                     tiles need no deletes
//	c:<slot>             a rollup tile, of a view with rollup tiles of r
//	                     tiles each: the state of the tiles K*r to K*r+r-1,
//	                     in slot K mod Rc of their own ring (RollupSlotField)
//	r                    the number of slots R of the ring the tiles are in,
//	                     decimal (views with windows), followed by :r for
//	                     a view with rollup tiles, then by /g, the tile
//	                     size in milliseconds (TiledRingValue); values
//	                     written before the tile size was recorded lack /g
//	l                    the state of the view's lifetime aggregates
//	x                    the view's last values
//
// Values of t:, c:, l and x are compact binary blobs defined by
// featurestore/window, never JSON.
//
// # Writing: effectively once
//
// Kafka delivers at least once, and go-redis resends commands and pipelines
// after timeouts (MaxRetries, 3 by default), so every write must be harmless
// when repeated. Store.Apply writes a batch of updates in rounds:
//
//  1. Read. One pipeline of HMGET, one per hash: v, the fences of the
//     partitions the batch has events from, and the fields the merge needs
//     (the tiles the events fall in, r, l, x). A hash with no v is version 0.
//  2. Merge, in Go (Update.Merge): drop the events at or below their
//     partition's fence, fold the rest into the blobs, and return the fields
//     to set, the fields to delete, the new fences and the TTL. Nothing
//     left to write means the batch was a replay. A hash whose r is not the
//     writer's ring, or records another tile size (ring.go), needs every
//     tile: the merge returns
//     ErrNeedTiles, and the hash goes back to step 1, read with HGETALL
//     this time, so that the write lays its tiles out in the new ring.
//  3. Write. One pipeline of writeScript calls (EVALSHA, with EVAL when the
//     node lacks the script), one per hash, each with that hash as its only
//     key, so it is valid on Redis Cluster. The script writes nothing unless
//     v still equals the version read in step 1 and no fence would move back;
//     then it deletes and sets the fields, sets the fences, increments v and
//     sets the TTL (PEXPIRE), all atomically.
//  4. Hashes whose version had moved go back to step 1 after a short random
//     pause, up to Options.MaxAttempts rounds.
//
// A blind update (Update.Blind) skips the read when it can: its merge with
// the empty state is sent in step 1, instead of the HMGET, to blindScript,
// which writes it only if the hash holds none of the update's events (every
// stored fence below the update's lowest offset of that partition) and none
// of the fields it sets, except tile slots holding another tile (an older
// one is overwritten, a newer one kept, unless it is beyond the writer's
// bound, Update.MaxTile: ring.go) and r holding the write's ring.
// Otherwise it writes nothing and returns the fields an HMGET would have,
// and the update goes on to step 2.
// Either way the conditions are checked and the write made in one script, so
// a blind write is exactly what the merge with the stored state would have
// written; ingest catching up on a backlog, where most writes start new
// tiles, saves a command and a round trip per hash. One blindScript call
// takes up to 16 hashes, each written or refused on its own, which spreads
// the cost of a script call (a few microseconds of Redis CPU, as much as the
// writes themselves) over them; on Redis Cluster the hashes of a call share
// a slot, as the views of one entity do.
//
// The version check serialises concurrent writers of a hash, from several
// partitions or processes (a zombie consumer after a rebalance), without
// locks: no update is lost. The fences make repeats no-ops: a batch replayed
// after a crash, or a write that go-redis resent because the reply was lost,
// finds the version it expected gone, conflicts, and in the next round its
// merge finds all its events behind the fences, so nothing is applied twice.
// The fence check in the script is defence in depth: with the version check
// a fence can only move back through a bug in the merge (ErrFenceRegression).
// Kafka offset commits are only where to resume; correctness rests on the
// fences.
//
// A fence is a high-water mark, so the events of one partition must reach a
// hash in offset order: a batch applied after a later batch of the same
// partition is taken for a replay and skipped. One consumer per partition,
// flushing its batches one after the other, guarantees that.
//
// A batch costs two round trips per round (per node on Cluster), however many
// hashes it writes.
//
// # Reading
//
// ReadViews, serving's read, sends one pipeline of one command per (entity,
// view): one round trip whatever the number of entities and views. A view
// with windows is read with HGETALL, keeping the tiles whose index (in their
// value) falls in the longest window at the read time, l and x, and
// skipping v and the fences: reading the whole hash costs Redis less than
// an HMGET of every slot a window spans (no field names to parse and look
// up, only the fields that exist in the reply), and the ring bounds what a
// hash holds beyond the window. A read of some of a view's features
// (ViewLayout.Select) needs only their longest window; when its tiles are
// at most a quarter of the ring, the read is an HMGET of r, l, x (those the
// features need) and of those tiles' slots, and a hash whose r is another
// ring's is read again whole with HGETALL, in a second round trip. A view
// without windows is read with an HMGET of l and x, those it has.
// Store.Read sends HMGET of given fields. go-redis splits a pipeline by
// node on Redis Cluster and sends the parts in parallel: one round trip per
// node involved, at the same time. Serving merges the tiles at request
// time, so windowed values decay without writes.
//
// A hash that does not decode (ErrCorruptState) fails only its own read:
// ReadBuffer.ReadViews gives its features window.StatusError and names it in
// ReadBuffer.Corrupt, so that one bad entity does not fail a lookup of many.
//
// # Expiry
//
// Every write sets the hash's TTL: the longest window plus the allowed
// lateness, or the view's TTL for last values, whichever is longer, so the
// hash of an entity that stops receiving events disappears once nothing in it
// can be read again. Its fences disappear with it; ingest must therefore drop
// events too late for any window (allowed lateness) before they reach Apply,
// or a replay older than the retention would rebuild dead state.
//
// # Client settings
//
// Give the client ContextTimeoutEnabled: true so that a request's deadline
// also bounds a command already sent: a Redis that stops answering then fails
// a Read or Apply at the deadline instead of after ReadTimeout and retries.
// MaxRetries may stay at its default: retries are safe (see above).
// Protocol: 2 (RESP2) makes reads cheaper for go-redis (HGETALL replies are
// flat arrays, read into one slice, not maps); the store works with either.
package online
