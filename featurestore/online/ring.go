package online

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"time"
)

// A view with rollup tiles (window.View.Rollup, r tiles each) keeps them in
// a second ring, in fields c:<K mod Rc>, Rc = RollupRingSize(R, r), the
// values laid out as tile slots (AppendSlot, with the rollup tile's index).
// RingField then holds "R:r/g" (TiledRingValue), so that a change of the rollup
// lays the hash out again like a change of R: the writer rebuilds every
// rollup tile from the tiles, which the ring keeps for as long as a rollup
// tile made of them can be read. A reader uses rollup tiles only from a
// hash whose RingField is its own; from another, it merges tiles alone.

// Tiles live in a ring of slots: tile k of a view is kept in the field
// t:<k mod R> of the hash, its value prefixed by the tile index. R covers
// every tile that can still be read or written (the longest window, the
// source's reach: its allowed lateness behind and its future skew ahead,
// and a margin), so a slot is only ever reused by a tile whose previous
// occupant can no longer be read. The hash of an active entity therefore
// holds at most R tiles: old tiles need no deletes.
//
// An event as far ahead as the future skew allows must not take the slot
// of a tile still read: when one entity of a view gets events from several
// partitions, one partition's event ahead of the clock lands beside
// another's current tiles, and a slot keeps the newer of two tiles.
// Readers find tiles by the index in their values, whatever their slots.
// Writers must not: after a change of R (of the longest window, the
// lateness or the skew) a tile's slot in the new ring can hold a tile of
// the old one that is still read, which a write would overwrite, or a newer
// one, for which it would drop its events. So each hash records its R in
// RingField; a writer that finds another R there (or none, in a hash that
// exists) asks for every tile (ErrNeedTiles) and lays them out in its ring
// in the same write, and a blind write is refused on such a hash.
//
// RingField also records the tile size g. After a change of the tile size
// (a breaking change: windows start from empty) the tiles of the hash are
// of no use to the view, and their indexes are not comparable with its
// own: a writer that finds another g drops every tile and rollup tile
// (their states' fingerprints include the tile size, so no reader of the
// new definitions would read them) before it writes. A hash written before
// g was recorded holds tiles of unknown size: its writer keeps only those
// whose index can be a tile of its own size, at most the tile of its clock
// plus the future skew (and a tile of clock skew between processes); an
// old 1-minute tile, read as a 2-minute one, lies decades ahead. The same
// bound keeps a slot holding a tile beyond it from blocking a current tile,
// in a write that reads (ingest) and in a blind one (blindScript, given the
// bound by the writer, Update.MaxTile), whatever the hash's RingField says.
// A reader merges no tile of a hash whose RingField records another tile
// size.

// RingSize returns R for a view of tile size g (ms) whose longest window
// spans maxTiles tiles, for a source of the given reach
// (registry.Source.Reach).
func RingSize(g int64, maxTiles int64, reach time.Duration) int64 {
	reachTiles := (reach.Milliseconds() + g - 1) / g
	// +2: the tile of the write clock and one tile of clock skew between
	// the processes.
	return maxTiles + reachTiles + 2
}

// SlotField returns the field that holds tile k in a ring of r slots.
func SlotField(k, r int64) string {
	return tilePrefix + strconv.FormatInt(slotOf(k, r), 10)
}

// AppendSlot appends the slot value for tile k with the given tile blob.
func AppendSlot(b []byte, k int64, blob []byte) []byte {
	b = binary.AppendVarint(b, k)
	return append(b, blob...)
}

// ErrCorruptSlot is returned for a slot value without a tile index.
var ErrCorruptSlot = errors.New("corrupt tile slot")

// DecodeSlot splits a slot value into its tile index and tile blob.
func DecodeSlot(b []byte) (k int64, blob []byte, err error) {
	k, n := binary.Varint(b)
	if n <= 0 {
		return 0, nil, ErrCorruptSlot
	}
	return k, b[n:], nil
}

// RollupRingSize returns the slots of the ring of rollup tiles of r tiles
// each beside a ring of R tiles: every rollup tile that holds a tile of the
// ring, and a margin.
func RollupRingSize(R, r int64) int64 { return (R+r-1)/r + 2 }

// RollupSlotField returns the field that holds rollup tile K in a ring of
// rc slots.
func RollupSlotField(K, rc int64) string {
	return rollupPrefix + strconv.FormatInt(slotOf(K, rc), 10)
}

// TiledRingValue returns the value of RingField of a hash laid out in a
// ring of R tiles of g milliseconds and, for r > 0, rollup tiles of r tiles
// each: "R/g" or "R:r/g". The tile size is part of it because tile indexes
// of different tile sizes are not comparable: an index of 1-minute tiles
// is about twice that of 2-minute tiles for the same time, so a writer of
// another tile size would take the old tiles for newer than its own.
func TiledRingValue(R, r, g int64) []byte {
	b := RingValue(R, r)
	b = append(b, '/')
	return strconv.AppendInt(b, g, 10)
}

// RingValue returns the value of RingField as it was written before the
// tile size was recorded: "R", or "R:r" with rollup tiles of r tiles each
// (r > 0). Writers write TiledRingValue; RingTile reads either.
func RingValue(R, r int64) []byte {
	b := strconv.AppendInt(nil, R, 10)
	if r > 0 {
		b = append(b, ':')
		b = strconv.AppendInt(b, r, 10)
	}
	return b
}

// RingTile returns the tile size (ms) that a value of RingField records,
// and false when it records none: a value written before the tile size was
// recorded ("R" or "R:r"), or no value. The tiles of such a hash are of
// unknown size: they may be of another tile size than the reader's or
// writer's, whatever their indexes.
func RingTile(v []byte) (g int64, ok bool) {
	i := bytes.LastIndexByte(v, '/')
	if i < 0 {
		return 0, false
	}
	g, err := strconv.ParseInt(string(v[i+1:]), 10, 64)
	if err != nil || g <= 0 {
		return 0, false
	}
	return g, true
}

// IsRollupSlotField reports whether a field of a hash is a rollup tile
// slot (RollupSlotField).
func IsRollupSlotField(name string) bool {
	return len(name) > len(rollupPrefix) && name[:len(rollupPrefix)] == rollupPrefix
}
