package window

import (
	"math"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// Count counts events. Unlike the other aggregations it takes no field and
// counts every event added, whatever the value passed with it.
type Count struct {
	n uint64
}

// NewCount returns an empty count.
func NewCount() *Count { return &Count{} }

// Aggregation returns registry.AggCount.
func (c *Count) Aggregation() registry.Aggregation { return registry.AggCount }

// Add counts one event.
func (c *Count) Add(featurestore.Value, OrderKey) { c.n++ }

// Merge adds the count of o, a *Count.
func (c *Count) Merge(o State) {
	oc, ok := o.(*Count)
	if !ok {
		mismatch(c, o)
	}
	c.n += oc.n
}

// Result returns the number of events as an int64; 0 for none, present.
func (c *Count) Result() (featurestore.Value, bool) {
	return featurestore.Int64Value(int64(min(c.n, math.MaxInt64))), true
}

// Reset empties the count.
func (c *Count) Reset() { c.n = 0 }

// AppendBinary appends the encoding of the count.
func (c *Count) AppendBinary(b []byte) []byte { return marshalState(c, b) }

// UnmarshalBinary decodes a count written by AppendBinary.
func (c *Count) UnmarshalBinary(b []byte) error { return unmarshalState(c, b) }

func (c *Count) appendBody(b []byte, _ int64) []byte { return appendUvarint(b, c.n) }

func (c *Count) decodeBody(d *decoder, _ int64) {
	c.n = d.uvarint()
	if c.n > math.MaxInt64 {
		d.fail("count out of range")
	}
}
