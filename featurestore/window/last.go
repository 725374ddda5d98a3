package window

import (
	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// Last keeps the value of the newest event added: the one with the greatest
// OrderKey, and of those the greatest value (see newer). It keeps the value
// whatever it is, null included, so that a last-value feature can tell a
// newest event without the field apart; the aggregation last skips null
// values before they reach the state.
type Last struct {
	has bool
	key OrderKey
	v   featurestore.Value
}

// NewLast returns an empty state.
func NewLast() *Last { return &Last{} }

// Aggregation returns registry.AggLast.
func (l *Last) Aggregation() registry.Aggregation { return registry.AggLast }

// Add keeps v if the event (k, v) is newer than the newest so far.
func (l *Last) Add(v featurestore.Value, k OrderKey) {
	if !l.has || newer(k, v, l.key, l.v) {
		l.has, l.key, l.v = true, k, v
	}
}

// Merge keeps the newer of the two newest events; o must be a *Last.
func (l *Last) Merge(o State) {
	ol, ok := o.(*Last)
	if !ok {
		mismatch(l, o)
	}
	if ol.has {
		l.Add(ol.v, ol.key)
	}
}

// Result returns the newest event's value; absent for no events.
func (l *Last) Result() (featurestore.Value, bool) { return l.v, l.has }

// Key returns the order key of the newest event, and whether there is one.
func (l *Last) Key() (OrderKey, bool) { return l.key, l.has }

// Reset empties the state.
func (l *Last) Reset() { *l = Last{} }

// AppendBinary appends the encoding of the state.
func (l *Last) AppendBinary(b []byte) []byte { return marshalState(l, b) }

// UnmarshalBinary decodes a state written by AppendBinary.
func (l *Last) UnmarshalBinary(b []byte) error { return unmarshalState(l, b) }

// The body is a byte 0 for no event, or 1, the order key and the value.
func (l *Last) appendBody(b []byte, base int64) []byte {
	if !l.has {
		return append(b, 0)
	}
	b = append(b, 1)
	b = appendKey(b, l.key, base)
	return l.v.AppendBinary(b)
}

func (l *Last) decodeBody(d *decoder, base int64) {
	l.Reset()
	switch d.byte() {
	case 0:
		return
	case 1:
	default:
		d.fail("bad presence byte")
		return
	}
	l.has = true
	l.key = decodeKey(d, base)
	l.v = d.value()
}

// appendKey writes an order key: the time relative to base, the partition
// and the offset, as varints.
func appendKey(b []byte, k OrderKey, base int64) []byte {
	b = appendVarint(b, k.Time-base)
	b = appendVarint(b, int64(k.Partition))
	return appendVarint(b, k.Offset)
}

func decodeKey(d *decoder, base int64) OrderKey {
	t := d.varint()
	p := d.varint()
	o := d.varint()
	if p != int64(int32(p)) {
		d.fail("partition out of range")
	}
	return OrderKey{Time: t + base, Partition: int32(p), Offset: o}
}
