package window

import (
	"fmt"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// LastN keeps the values of the n newest events added (greatest OrderKeys,
// then greatest values: see newer), newest first. Null values, and values
// of another kind, are skipped.
type LastN struct {
	kind featurestore.Kind
	n    int
	e    []lastEntry // newest first, at most n
	tmp  []lastEntry // merge buffer, kept for reuse
}

type lastEntry struct {
	key OrderKey
	v   featurestore.Value
}

// NewLastN returns an empty state that keeps the n newest values of kind, a
// scalar kind other than null. It panics on n < 1 or another kind.
func NewLastN(kind featurestore.Kind, n int) *LastN {
	if n < 1 || kind.ListOf() == featurestore.KindNull {
		panic(fmt.Sprintf("window: last_n of %d values of kind %s", n, kind))
	}
	return &LastN{kind: kind, n: n}
}

// Aggregation returns registry.AggLastN.
func (l *LastN) Aggregation() registry.Aggregation { return registry.AggLastN }

// Add adds v if it is of the state's kind and among the n newest.
func (l *LastN) Add(v featurestore.Value, k OrderKey) {
	if v.Kind() != l.kind {
		return
	}
	i := len(l.e)
	for i > 0 && newer(k, v, l.e[i-1].key, l.e[i-1].v) {
		i--
	}
	if i >= l.n {
		return
	}
	if len(l.e) < l.n {
		l.e = append(l.e, lastEntry{})
	}
	copy(l.e[i+1:], l.e[i:])
	l.e[i] = lastEntry{key: k, v: v}
}

// Merge keeps the n newest of both states; o must be a *LastN with the same
// kind and n.
func (l *LastN) Merge(o State) {
	ol, ok := o.(*LastN)
	if !ok || ol.kind != l.kind || ol.n != l.n {
		mismatch(l, o)
	}
	if len(ol.e) == 0 {
		return
	}
	a, b := l.e, ol.e
	out := l.tmp[:0]
	for len(out) < l.n && (len(a) > 0 || len(b) > 0) {
		if len(b) == 0 || (len(a) > 0 && newer(a[0].key, a[0].v, b[0].key, b[0].v)) {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	l.e, l.tmp = out, l.e
}

// Result returns the values newest first, as a list of the state's kind. It
// is present even for no events: an empty list.
func (l *LastN) Result() (featurestore.Value, bool) {
	switch l.kind {
	case featurestore.KindString:
		out := make([]string, len(l.e))
		for i, e := range l.e {
			out[i] = e.v.Str()
		}
		return featurestore.StringListValue(out), true
	case featurestore.KindInt64:
		out := make([]int64, len(l.e))
		for i, e := range l.e {
			out[i] = e.v.Int64()
		}
		return featurestore.Int64ListValue(out), true
	case featurestore.KindDouble:
		out := make([]float64, len(l.e))
		for i, e := range l.e {
			out[i] = e.v.Double()
		}
		return featurestore.DoubleListValue(out), true
	}
	out := make([]bool, len(l.e))
	for i, e := range l.e {
		out[i] = e.v.Bool()
	}
	return featurestore.BoolListValue(out), true
}

// Newest returns the order key of the newest event kept, and whether there
// is one.
func (l *LastN) Newest() (OrderKey, bool) {
	if len(l.e) == 0 {
		return OrderKey{}, false
	}
	return l.e[0].key, true
}

// Reset empties the state.
func (l *LastN) Reset() {
	clear(l.e) // drop references to values
	clear(l.tmp)
	l.e, l.tmp = l.e[:0], l.tmp[:0]
}

// AppendBinary appends the encoding of the state.
func (l *LastN) AppendBinary(b []byte) []byte { return marshalState(l, b) }

// UnmarshalBinary decodes a state written by AppendBinary.
func (l *LastN) UnmarshalBinary(b []byte) error { return unmarshalState(l, b) }

// The body is the number of entries and, newest first, each entry's order
// key and value. The first entry's time is relative to base, the others'
// relative to the entry before (a non-negative step back).
func (l *LastN) appendBody(b []byte, base int64) []byte {
	b = appendUvarint(b, uint64(len(l.e)))
	prev := base
	for i, e := range l.e {
		if i == 0 {
			b = appendVarint(b, e.key.Time-base)
		} else {
			b = appendUvarint(b, uint64(prev-e.key.Time))
		}
		prev = e.key.Time
		b = appendVarint(b, int64(e.key.Partition))
		b = appendVarint(b, e.key.Offset)
		b = e.v.AppendBinary(b)
	}
	return b
}

func (l *LastN) decodeBody(d *decoder, base int64) {
	l.Reset()
	n := d.count(l.n, 5)
	for i := range n {
		var k OrderKey
		if i == 0 {
			k.Time = base + d.varint()
		} else {
			k.Time = l.e[i-1].key.Time - int64(d.uvarint())
		}
		p := d.varint()
		k.Offset = d.varint()
		k.Partition = int32(p)
		v := d.value()
		switch {
		case d.err != nil:
			return
		case p != int64(k.Partition):
			d.fail("partition out of range")
		case v.Kind() != l.kind:
			d.fail("last_n value of kind %s, want %s", v.Kind(), l.kind)
		case i > 0 && newer(k, v, l.e[i-1].key, l.e[i-1].v):
			d.fail("last_n entries out of order")
		}
		if d.err != nil {
			return
		}
		l.e = append(l.e, lastEntry{key: k, v: v})
	}
}
