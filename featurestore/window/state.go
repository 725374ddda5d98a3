package window

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// State is the state of one aggregation over a set of events. It is a
// deterministic function of that set: adding the same events in any order, or
// merging partial states built from disjoint parts of it in any grouping,
// gives an equal state with the same encoding and the same Result.
//
// States are not safe for concurrent use, except that Result and
// AppendBinary only read, so any number of goroutines may call them at once
// while no one modifies the state.
type State interface {
	// Aggregation returns which aggregation the state computes.
	Aggregation() registry.Aggregation
	// Add adds one event: its value of the feature's field and its order key.
	// A null value, or one of a kind the aggregation does not take, is
	// ignored, except by Count, which counts every event, and by Last, which
	// keeps the newest event's value whatever it is. Each event must be added
	// at most once.
	Add(v featurestore.Value, k OrderKey)
	// Merge adds the events of o, which holds none of the events already in
	// the state, and is left unchanged. o must be of the same type, built
	// with the same parameters; Merge panics otherwise, as that is a bug in
	// the caller, not bad data.
	Merge(o State)
	// Result returns the aggregation's value, and whether there is one:
	// count, sum and count_distinct of no events are 0 and present, last_n of
	// no events is an empty list, present; mean, min, max, stddev and last of
	// no events are absent.
	Result() (featurestore.Value, bool)
	// Reset empties the state, keeping its parameters and buffers.
	Reset()
	// AppendBinary appends the encoding of the state: the version byte, the
	// aggregation's code, and the state's body.
	AppendBinary(b []byte) []byte
	// UnmarshalBinary replaces the state with the one encoded in b, which
	// must have been written by AppendBinary of a state with the same
	// parameters. Corrupt input is an error wrapping ErrCorrupt, never a
	// panic; the state is then empty.
	UnmarshalBinary(b []byte) error

	// appendBody and decodeBody write and read the state without header;
	// times are relative to base, so that states in a tile take few bytes.
	appendBody(b []byte, base int64) []byte
	decodeBody(d *decoder, base int64)
}

// aggCode numbers the aggregations in encodings. Never reuse a number.
func aggCode(a registry.Aggregation) byte {
	switch a {
	case registry.AggCount:
		return 1
	case registry.AggSum:
		return 2
	case registry.AggMean:
		return 3
	case registry.AggMin:
		return 4
	case registry.AggMax:
		return 5
	case registry.AggLast:
		return 6
	case registry.AggLastN:
		return 7
	case registry.AggCountDistinct:
		return 8
	case registry.AggStddev:
		return 9
	}
	return 0
}

func marshalState(s State, b []byte) []byte {
	b = append(b, encodingVersion, aggCode(s.Aggregation()))
	return s.appendBody(b, 0)
}

func unmarshalState(s State, b []byte) error {
	s.Reset()
	d := &decoder{b: b}
	if v := d.byte(); d.err == nil && v != encodingVersion {
		d.fail("unknown version %d", v)
	}
	if c := d.byte(); d.err == nil && c != aggCode(s.Aggregation()) {
		d.fail("aggregation code %d, want %d (%s)", c, aggCode(s.Aggregation()), s.Aggregation())
	}
	if d.err == nil {
		s.decodeBody(d, 0)
	}
	if err := d.end(); err != nil {
		s.Reset()
		return fmt.Errorf("decode %s state: %w", s.Aggregation(), err)
	}
	return nil
}

func mismatch(s, o State) {
	panic(fmt.Sprintf("window: merge of %T (%s) into %T (%s)", o, o.Aggregation(), s, s.Aggregation()))
}

// Encoding of an exact accumulator: a flags byte (bits 0-2 the special
// values, bit 3 negative, bit 4 non-zero) and, when non-zero, the varint of
// the lowest set bit's position minus the scale (so that the 2^0 bit is 0),
// uvarint(n), and n bytes: the magnitude shifted right by the lowest set bit,
// big-endian. So a sum of a few amounts takes a few bytes.
const (
	accNegative = 1 << 3
	accNonZero  = 1 << 4
)

func appendAcc(b []byte, w []uint64, special uint8, scale int) []byte {
	flags := special
	m := w // the magnitude
	var tmp [sqWords]uint64
	if negative(w) {
		m = tmp[:len(w)]
		copy(m, w)
		negate(m)
		flags |= accNegative
	}
	loW := slices.IndexFunc(m, func(x uint64) bool { return x != 0 })
	if loW < 0 {
		return append(b, flags) // zero: never negative
	}
	hiW := len(m) - 1
	for m[hiW] == 0 {
		hiW--
	}
	low := loW*64 + bits.TrailingZeros64(m[loW])
	top := hiW*64 + 63 - bits.LeadingZeros64(m[hiW])
	n := (top - low + 8) / 8
	b = append(b, flags|accNonZero)
	b = appendVarint(b, int64(low-scale))
	b = appendUvarint(b, uint64(n))
	// The n bytes from bit low up, big-endian: eight at a time from the
	// low end.
	start := len(b)
	b = slices.Grow(b, n)[:start+n]
	out := b[start:]
	for pos, end := low, n; end > 0; pos, end = pos+64, end-8 {
		x := field(m, pos, 64)
		if end >= 8 {
			binary.BigEndian.PutUint64(out[end-8:end], x)
			continue
		}
		for i := end - 1; i >= 0; i-- {
			out[i] = byte(x)
			x >>= 8
		}
	}
	return b
}

// decodeAcc reads an accumulator whose lowest bit may not be below minLow,
// nor its top bit at or above maxBits.
func decodeAcc(d *decoder, w []uint64, sp *span, special *uint8, scale, minLow, maxBits int, allowSpecial bool) {
	clear(w)
	*sp = emptySpan(len(w))
	flags := d.byte()
	if d.err != nil {
		return
	}
	*special = flags & specialMask
	switch {
	case flags&^(specialMask|accNegative|accNonZero) != 0:
		d.fail("bad sum flags %#x", flags)
	case *special != 0 && !allowSpecial:
		d.fail("non-finite value in an integer sum")
	case flags&accNonZero == 0 && flags&accNegative != 0:
		d.fail("negative zero sum")
	}
	if d.err != nil || flags&accNonZero == 0 {
		return
	}
	rel := d.varint()
	n := d.count(maxBits/8+1, 1)
	p := d.bytes(n)
	if d.err != nil {
		return
	}
	if n == 0 || p[0] == 0 || p[n-1]&1 == 0 {
		d.fail("sum not in canonical form")
		return
	}
	width := 8*(n-1) + bits.Len8(p[0])
	if rel < int64(minLow-scale) || rel > int64(maxBits-scale) || int(rel)+scale+width > maxBits {
		d.fail("sum out of range")
		return
	}
	// The magnitude, big-endian bytes, goes in shifted left by low, eight
	// bytes (one word of it) at a time from its low end. Its top bit is
	// below maxBits, inside w.
	low := int(rel) + scale
	lo, s := low>>6, uint(low&63)
	for i, end := lo, n; end > 0; i, end = i+1, end-8 {
		var x uint64
		if end >= 8 {
			x = binary.BigEndian.Uint64(p[end-8 : end])
		} else {
			for _, c := range p[:end] {
				x = x<<8 | uint64(c)
			}
		}
		w[i] |= x << s
		if s > 0 && i+1 < len(w) {
			w[i+1] |= x >> (64 - s)
		}
	}
	if flags&accNegative != 0 {
		// Two's complement from the lowest non-zero word up: the words
		// below it stay zero.
		w[lo] = -w[lo]
		for i := lo + 1; i < len(w); i++ {
			w[i] = ^w[i]
		}
	}
	// Word lo holds the lowest set bit; above the magnitude's top word
	// (and the one its sign may need) all words extend the sign.
	sp.lo, sp.hi = uint8(lo), shrink(w, min(len(w)-1, (low+width-1)>>6+1))
}

// isNumeric reports whether v is an int64 or a double.
func isNumeric(k featurestore.Kind) bool {
	return k == featurestore.KindInt64 || k == featurestore.KindDouble
}
