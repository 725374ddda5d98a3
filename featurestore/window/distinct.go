package window

import (
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/cespare/xxhash/v2"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// CountDistinct estimates the number of distinct values of a field with a
// HyperLogLog sketch of precision p (4 to 16): 2^p registers, and a relative
// standard error of 1.04/sqrt(2^p) (0.81% at the default 14).
//
// Each value is hashed with XXH64 over its binary encoding
// (featurestore.Value.AppendBinary), so the string "1" and the int64 1 are
// different values. The state has two forms, chosen by the number of
// distinct hashes alone, so that it stays a function of the set of values:
//
//   - sparse, up to SparseMax(p) distinct hashes: the sorted hashes
//     themselves. The count is then exact (up to 64-bit hash collisions,
//     about one in 10^13 at a thousand values), and the encoding takes about
//     9 bytes per value, so a tile with a few events costs a few bytes;
//   - dense, beyond that: the 2^p registers of 6 bits, 3*2^p/4 bytes
//     encoded (12 KiB at p = 14), where SparseMax is chosen so that the
//     sparse form is never much larger.
//
// A merge is the union of the sets (the registers' maximum once dense). The
// dense estimate is Ertl's improved estimator ("New cardinality estimation
// algorithms for HyperLogLog sketches", 2017), accurate over the whole range
// without bias correction tables, computed in a fixed order of float64
// operations so that it is the same everywhere.
type CountDistinct struct {
	p      uint8
	dense  bool
	hashes []uint64 // sparse: sorted distinct hashes
	regs   []uint8  // dense: 2^p registers
	tmp    []uint64 // merge buffer
}

// SparseMax returns how many distinct hashes a sketch of precision p keeps
// exactly before it turns dense: 3*2^p/32, at least 1. So the sparse
// encoding (about 8 to 10 bytes a hash) stays around the size of the dense
// one (6 bits a register).
func SparseMax(p int) int { return max(1, 3<<p/32) }

// NewCountDistinct returns an empty sketch of precision p, from
// registry.MinPrecision to registry.MaxPrecision. It panics on another p.
func NewCountDistinct(p int) *CountDistinct {
	if p < registry.MinPrecision || p > registry.MaxPrecision {
		panic(fmt.Sprintf("window: count_distinct precision %d", p))
	}
	return &CountDistinct{p: uint8(p)}
}

// Aggregation returns registry.AggCountDistinct.
func (c *CountDistinct) Aggregation() registry.Aggregation { return registry.AggCountDistinct }

// Precision returns p.
func (c *CountDistinct) Precision() int { return int(c.p) }

// Add adds a non-null value to the set.
func (c *CountDistinct) Add(v featurestore.Value, _ OrderKey) {
	if v.IsNull() {
		return
	}
	c.addHash(HashValue(v))
}

// HashValue returns the 64-bit hash that count_distinct keeps of a value:
// XXH64 of its binary encoding.
func HashValue(v featurestore.Value) uint64 {
	var buf [64]byte
	if v.Kind() != featurestore.KindString || v.Len() <= 48 {
		return xxhash.Sum64(v.AppendBinary(buf[:0]))
	}
	var d xxhash.Digest
	d.Reset()
	hdr := appendUvarint(append(buf[:0], byte(featurestore.KindString)), uint64(v.Len()))
	_, _ = d.Write(hdr)
	_, _ = d.WriteString(v.Str())
	return d.Sum64()
}

func (c *CountDistinct) addHash(h uint64) {
	if c.dense {
		c.addReg(h)
		return
	}
	i, found := slices.BinarySearch(c.hashes, h)
	if found {
		return
	}
	c.hashes = slices.Insert(c.hashes, i, h)
	if len(c.hashes) > SparseMax(int(c.p)) {
		c.toDense()
	}
}

// addReg sets the register of h: its first p bits choose the register, and
// the register keeps the greatest position of the first 1 bit in the rest.
func (c *CountDistinct) addReg(h uint64) {
	p := uint(c.p)
	rho := uint8(min(bits.LeadingZeros64(h<<p), 64-int(p)) + 1)
	i := h >> (64 - p)
	if rho > c.regs[i] {
		c.regs[i] = rho
	}
}

func (c *CountDistinct) toDense() {
	if c.regs == nil {
		c.regs = make([]uint8, 1<<c.p)
	} else {
		clear(c.regs)
	}
	c.dense = true
	for _, h := range c.hashes {
		c.addReg(h)
	}
	c.hashes = c.hashes[:0]
}

// Merge adds the values of o, a *CountDistinct of the same precision.
func (c *CountDistinct) Merge(o State) {
	oc, ok := o.(*CountDistinct)
	if !ok || oc.p != c.p {
		mismatch(c, o)
	}
	switch {
	case oc.dense:
		if !c.dense {
			c.toDense()
		}
		maxBytes(c.regs, oc.regs)
	case c.dense:
		for _, h := range oc.hashes {
			c.addReg(h)
		}
	default:
		c.union(oc.hashes)
	}
}

// union merges the sorted set o into the sparse set.
func (c *CountDistinct) union(o []uint64) {
	if len(o) <= 8 {
		// A few hashes, as a tile of a few events holds: insert them.
		for _, h := range o {
			c.addHash(h)
			if c.dense {
				for _, h := range o {
					c.addReg(h)
				}
				return
			}
		}
		return
	}
	a, out := c.hashes, c.tmp[:0]
	for len(a) > 0 && len(o) > 0 {
		switch {
		case a[0] < o[0]:
			out, a = append(out, a[0]), a[1:]
		case a[0] > o[0]:
			out, o = append(out, o[0]), o[1:]
		default:
			out, a, o = append(out, a[0]), a[1:], o[1:]
		}
	}
	out = append(append(out, a...), o...)
	c.hashes, c.tmp = out, c.hashes
	if len(c.hashes) > SparseMax(int(c.p)) {
		c.toDense()
	}
}

// maxBytes sets a[i] = max(a[i], b[i]).
func maxBytes(a, b []uint8) {
	b = b[:len(a)]
	for i, x := range b {
		if x > a[i] {
			a[i] = x
		}
	}
}

// Result returns the estimated number of distinct values as an int64: exact
// while sparse, Ertl's estimate rounded to the nearest integer once dense. It
// is 0 for no events, present.
func (c *CountDistinct) Result() (featurestore.Value, bool) {
	if !c.dense {
		return featurestore.Int64Value(int64(len(c.hashes))), true
	}
	return featurestore.Int64Value(int64(math.Round(ertl(c.regs, int(c.p))))), true
}

// IsDense reports whether the sketch holds registers rather than the hashes.
func (c *CountDistinct) IsDense() bool { return c.dense }

// ertl is the improved raw estimator of Ertl (2017), Algorithm 6, for
// registers of precision p holding 0..65-p. Products are converted to
// float64 explicitly so that no platform fuses them into a multiply-add,
// which would round differently.
func ertl(regs []uint8, p int) float64 {
	q := 64 - p
	var hist [66]int
	for _, r := range regs {
		hist[r]++
	}
	m := float64(len(regs))
	z := float64(m * ertlTau(float64(m-float64(hist[q+1]))/m))
	for k := q; k >= 1; k-- {
		z = float64(0.5 * (z + float64(hist[k])))
	}
	z += float64(m * ertlSigma(float64(hist[0])/m))
	return float64(0.5/math.Ln2) * float64(m*m) / z
}

func ertlSigma(x float64) float64 {
	if x == 1 {
		return math.Inf(1)
	}
	y, z := 1.0, x
	for {
		x = float64(x * x)
		prev := z
		z += float64(x * y)
		y += y
		if z == prev {
			return z
		}
	}
}

func ertlTau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	y, z := 1.0, 1-x
	for {
		x = math.Sqrt(x)
		prev := z
		y *= 0.5
		z -= float64(float64((1-x)*(1-x)) * y)
		if z == prev {
			return z / 3
		}
	}
}

// Reset empties the sketch, keeping its buffers.
func (c *CountDistinct) Reset() {
	c.dense = false
	c.hashes = c.hashes[:0]
}

// AppendBinary appends the encoding of the sketch.
func (c *CountDistinct) AppendBinary(b []byte) []byte { return marshalState(c, b) }

// UnmarshalBinary decodes a sketch written by AppendBinary.
func (c *CountDistinct) UnmarshalBinary(b []byte) error { return unmarshalState(c, b) }

// The body is a form byte and, for the sparse form (0), the number of
// hashes, the first hash and the steps to each next one, as uvarints; for the
// dense form (1), the registers packed 6 bits each, four to three bytes,
// little-endian.
func (c *CountDistinct) appendBody(b []byte, _ int64) []byte {
	if !c.dense {
		b = append(b, 0)
		b = appendUvarint(b, uint64(len(c.hashes)))
		prev := uint64(0)
		for _, h := range c.hashes {
			b = appendUvarint(b, h-prev)
			prev = h
		}
		return b
	}
	b = append(b, 1)
	for i := 0; i < len(c.regs); i += 4 {
		x := uint32(c.regs[i]) | uint32(c.regs[i+1])<<6 | uint32(c.regs[i+2])<<12 | uint32(c.regs[i+3])<<18
		b = append(b, byte(x), byte(x>>8), byte(x>>16))
	}
	return b
}

func (c *CountDistinct) decodeBody(d *decoder, _ int64) {
	c.Reset()
	switch d.byte() {
	case 0:
		n := d.count(SparseMax(int(c.p)), 1)
		prev := uint64(0)
		for i := range n {
			step := d.uvarint()
			if d.err != nil {
				return
			}
			if (i > 0 && step == 0) || prev+step < prev {
				d.fail("hashes out of order")
				return
			}
			prev += step
			c.hashes = append(c.hashes, prev)
		}
	case 1:
		m := 1 << c.p
		packed := d.bytes(3 * m / 4)
		if d.err != nil {
			return
		}
		if c.regs == nil {
			c.regs = make([]uint8, m)
		}
		c.dense = true
		top := uint8(65 - c.p)
		for i := 0; i < m; i += 4 {
			j := 3 * i / 4
			x := uint32(packed[j]) | uint32(packed[j+1])<<8 | uint32(packed[j+2])<<16
			for k := range 4 {
				r := uint8(x >> (6 * k) & 63)
				if r > top {
					d.fail("register %d out of range", r)
					return
				}
				c.regs[i+k] = r
			}
		}
	default:
		if d.err == nil {
			d.fail("bad sketch form")
		}
	}
}
