package window

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/featurestore/featurestore/featurestore"
)

// ErrCorrupt is returned, wrapped, when a state's binary encoding is not one
// that this package writes: truncated, of another version or aggregation,
// out of range, or not in canonical form.
var ErrCorrupt = errors.New("corrupt state")

// encodingVersion is the first byte of every encoded state. A change of
// format gets a new version; decoders reject versions they do not know.
const encodingVersion = 1

// decoder reads an encoding front to back; the first error sticks, so
// callers check once at the end.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at byte %d", ErrCorrupt, fmt.Sprintf(format, args...), d.off)
	}
}

func (d *decoder) left() int { return len(d.b) - d.off }

func (d *decoder) byte() byte {
	if d.err != nil || d.off >= len(d.b) {
		d.fail("truncated")
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || n > d.left() {
		d.fail("truncated")
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b[d.off:])
	// A final zero byte after others is a non-minimal encoding; refusing it
	// keeps every state to one encoding.
	if n <= 0 || (n > 1 && d.b[d.off+n-1] == 0) {
		d.fail("bad varint")
		return 0
	}
	d.off += n
	return x
}

func (d *decoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

// count reads a number of following items, each at least min bytes long,
// and refuses counts the remaining input cannot hold, so that corrupt input
// cannot make a decoder allocate much.
func (d *decoder) count(limit, min int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(limit) || n*uint64(min) > uint64(d.left()) {
		d.fail("bad count %d", n)
		return 0
	}
	return int(n)
}

func (d *decoder) uint32() uint32 {
	p := d.bytes(4)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(p)
}

func (d *decoder) uint64() uint64 {
	p := d.bytes(8)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(p)
}

func (d *decoder) value() featurestore.Value {
	if d.err != nil {
		return featurestore.Value{}
	}
	v, n, err := featurestore.DecodeValue(d.b[d.off:])
	if err != nil {
		d.fail("value: %v", err)
		return featurestore.Value{}
	}
	d.off += n
	return v
}

// end fails unless all input was read.
func (d *decoder) end() error {
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d bytes after the end", len(d.b)-d.off)
	}
	return d.err
}

func appendVarint(b []byte, x int64) []byte { return binary.AppendVarint(b, x) }

func appendUvarint(b []byte, x uint64) []byte { return binary.AppendUvarint(b, x) }
