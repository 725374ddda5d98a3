package offline

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	flatbuffers "github.com/google/flatbuffers/go"
)

// Arrow IPC metadata is a flatbuffer that arrow-go trusts. A vector length
// in it sizes a make(), a message's body length sizes the buffer its body
// is read into, a compressed buffer's prefix sizes the buffer it is
// decompressed into, and a child's offset may point back to its parent. So
// a few malformed bytes make arrow-go allocate gigabytes (a fatal "out of
// memory", which no recover catches) or recurse until the stack overflows
// (fatal too): a crash of an export, or over Arrow Flight of the server
// and its lookups, on an entity table sent or a log file damaged. These checks walk what arrow-go reads of the metadata,
// before it does: every vector and string must lie in its buffer, nesting
// is bounded, a body must fit in what holds it, and a compressed buffer
// may not claim more than maxUncompressed bytes.

// ErrMalformedIPC is the error of Arrow IPC data that fails the checks.
var ErrMalformedIPC = errors.New("malformed Arrow IPC data")

const (
	// maxIPCNesting bounds the depth of nested fields.
	maxIPCNesting = 64
	// maxUncompressed bounds what one compressed buffer may decompress to.
	maxUncompressed = 1 << 31
)

// The union tags and type tags of Arrow's Message.fbs and Schema.fbs that
// the checks look into.
const (
	headerSchema          = 1
	headerDictionaryBatch = 2
	headerRecordBatch     = 3
	typeTimestamp         = 10
	typeUnion             = 14
)

// fbCheck walks a flatbuffer, panicking with a fbError when something lies
// outside it; out-of-range reads of the flatbuffers runtime panic too.
type fbCheck struct {
	buf []byte
	// body reads the message's body, from bodyAt on, when it is at hand:
	// for what compressed buffers claim.
	body   io.ReaderAt
	bodyAt int64
	// tables counts the tables visited: a table's offset may be shared by
	// several parents (no writer does), which would make the walk, and
	// arrow-go's, exponential in the nesting.
	tables int
	// decoded sums the bytes the buffers of the message's record batches
	// take once read: what compressed buffers claim, the length of the
	// others.
	decoded int64
}

type fbError struct{ msg string }

func (c *fbCheck) fail(format string, args ...any) {
	panic(fbError{fmt.Sprintf(format, args...)})
}

// run calls f, turning its panics into errors wrapping ErrMalformedIPC.
func (c *fbCheck) run(what string, f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(fbError); ok {
				err = fmt.Errorf("%w: %s: %s", ErrMalformedIPC, what, e.msg)
				return
			}
			err = fmt.Errorf("%w: %s: %v", ErrMalformedIPC, what, r)
		}
	}()
	f()
	return nil
}

// root returns the root table of the buffer.
func (c *fbCheck) root() *flatbuffers.Table {
	if len(c.buf) < 8 {
		c.fail("%d bytes of metadata", len(c.buf))
	}
	return c.at(flatbuffers.GetUOffsetT(c.buf))
}

// at returns the table at pos, whose vtable must lie in the buffer.
func (c *fbCheck) at(pos flatbuffers.UOffsetT) *flatbuffers.Table {
	if uint64(pos)+4 > uint64(len(c.buf)) {
		c.fail("table at %d, beyond the %d bytes", pos, len(c.buf))
	}
	if c.tables++; c.tables > len(c.buf)/4 {
		c.fail("more tables than %d bytes hold", len(c.buf))
	}
	t := &flatbuffers.Table{Bytes: c.buf, Pos: pos}
	vt := int64(pos) - int64(t.GetSOffsetT(pos))
	if vt < 0 || vt+4 > int64(len(c.buf)) {
		c.fail("vtable at %d, beyond the %d bytes", vt, len(c.buf))
	}
	if n := int64(t.GetVOffsetT(flatbuffers.UOffsetT(vt))); vt+n > int64(len(c.buf)) {
		c.fail("vtable of %d bytes at %d, beyond the %d bytes", n, vt, len(c.buf))
	}
	return t
}

func slot(i int) flatbuffers.VOffsetT { return flatbuffers.VOffsetT(4 + 2*i) }

// sub returns the table in field i of t, nil if absent.
func (c *fbCheck) sub(t *flatbuffers.Table, i int) *flatbuffers.Table {
	o := t.Offset(slot(i))
	if o == 0 {
		return nil
	}
	return c.at(t.Indirect(flatbuffers.UOffsetT(o) + t.Pos))
}

// vector returns the start and length of the vector in field i of t, of
// elements of elem bytes, which must lie in the buffer.
func (c *fbCheck) vector(t *flatbuffers.Table, i, elem int) (flatbuffers.UOffsetT, int) {
	o := t.Offset(slot(i))
	if o == 0 {
		return 0, 0
	}
	n, start := t.VectorLen(flatbuffers.UOffsetT(o)), t.Vector(flatbuffers.UOffsetT(o))
	if uint64(start)+uint64(n)*uint64(elem) > uint64(len(c.buf)) {
		c.fail("a vector of %d elements at %d, beyond the %d bytes", n, start, len(c.buf))
	}
	return start, n
}

// each calls f with each table of the vector of tables in field i of t.
func (c *fbCheck) each(t *flatbuffers.Table, i int, f func(*flatbuffers.Table)) {
	start, n := c.vector(t, i, 4)
	for j := range n {
		pos := start + flatbuffers.UOffsetT(4*j)
		f(c.at(pos + flatbuffers.GetUOffsetT(c.buf[pos:])))
	}
}

// str checks the string in field i of t.
func (c *fbCheck) str(t *flatbuffers.Table, i int) {
	if o := t.Offset(slot(i)); o != 0 {
		t.ByteVector(flatbuffers.UOffsetT(o) + t.Pos)
	}
}

func (c *fbCheck) keyValues(t *flatbuffers.Table, i int) {
	c.each(t, i, func(kv *flatbuffers.Table) {
		c.str(kv, 0)
		c.str(kv, 1)
	})
}

func (c *fbCheck) schema(s *flatbuffers.Table) {
	c.each(s, 1, func(f *flatbuffers.Table) { c.field(f, 1) })
	c.keyValues(s, 2)
	c.vector(s, 3, 8)
}

func (c *fbCheck) field(f *flatbuffers.Table, depth int) {
	if depth > maxIPCNesting {
		c.fail("fields nested deeper than %d", maxIPCNesting)
	}
	c.str(f, 0)
	if typ := c.sub(f, 3); typ != nil {
		switch f.GetByteSlot(slot(2), 0) {
		case typeUnion:
			c.vector(typ, 1, 4)
		case typeTimestamp:
			c.str(typ, 1)
		}
	}
	if dict := c.sub(f, 4); dict != nil {
		c.sub(dict, 1)
	}
	c.each(f, 5, func(child *flatbuffers.Table) { c.field(child, depth+1) })
	c.keyValues(f, 6)
}

// recordBatch checks a RecordBatch table, and with the body at hand the
// sizes its compressed buffers claim.
func (c *fbCheck) recordBatch(rb *flatbuffers.Table, bodyLen int64) {
	c.vector(rb, 1, 16)
	start, n := c.vector(rb, 2, 16)
	compressed := c.sub(rb, 3) != nil
	c.vector(rb, 4, 8)
	for j := range n {
		b := c.buf[start+flatbuffers.UOffsetT(16*j):]
		off, length := int64(binary.LittleEndian.Uint64(b)), int64(binary.LittleEndian.Uint64(b[8:]))
		if off < 0 || length < 0 || off > bodyLen || length > bodyLen-off {
			c.fail("buffer %d at %d of %d bytes, beyond the body's %d", j, off, length, bodyLen)
		}
		decoded := length
		if compressed && length >= 8 && c.body != nil {
			var p [8]byte
			if _, err := c.body.ReadAt(p[:], c.bodyAt+off); err != nil {
				c.fail("buffer %d: %v", j, err)
			}
			// -1 marks a buffer stored uncompressed after the prefix.
			switch size := int64(binary.LittleEndian.Uint64(p[:])); {
			case size > maxUncompressed || size < -1:
				c.fail("compressed buffer %d claims %d bytes", j, size)
			case size >= 0:
				decoded = size
			}
		}
		c.decoded += decoded
	}
}

// CheckIPCMessage checks the metadata of an Arrow IPC message (the Message
// flatbuffer, without its length prefix) with its body.
func CheckIPCMessage(meta, body []byte) error {
	_, err := CheckIPCMessageSize(meta, body)
	return err
}

// CheckIPCMessageSize checks a message like CheckIPCMessage, and returns
// the bytes its buffers take once read: a compressed body may decompress
// to far more than it holds (up to maxUncompressed per buffer), so a bound
// on what a reader may allocate must count these, before arrow-go reads
// the message.
func CheckIPCMessageSize(meta, body []byte) (int64, error) {
	c, _, err := checkMessageOf(meta, bytes.NewReader(body), 0, int64(len(body)))
	return c.decoded, err
}

// checkMessage checks the message of metadata meta whose body of at most
// bodyLen bytes r holds from at on, and returns the body's length.
func checkMessage(meta []byte, r io.ReaderAt, at, bodyLen int64) (n int64, err error) {
	_, n, err = checkMessageOf(meta, r, at, bodyLen)
	return n, err
}

// checkMessageOf is checkMessage, returning the check's state as well.
func checkMessageOf(meta []byte, r io.ReaderAt, at, bodyLen int64) (c *fbCheck, n int64, err error) {
	c = &fbCheck{buf: meta, body: r, bodyAt: at}
	err = c.run("message", func() { n = c.message(bodyLen) })
	return c, n, err
}

func (c *fbCheck) message(bodyLen int64) int64 {
	m := c.root()
	n := m.GetInt64Slot(slot(3), 0)
	if n < 0 || n > bodyLen {
		c.fail("a body of %d bytes, with %d at hand", n, bodyLen)
	}
	c.keyValues(m, 4)
	h := c.sub(m, 2)
	if h == nil {
		return n
	}
	switch m.GetByteSlot(slot(1), 0) {
	case headerSchema:
		c.schema(h)
	case headerRecordBatch:
		c.recordBatch(h, bodyLen)
	case headerDictionaryBatch:
		if rb := c.sub(h, 1); rb != nil {
			c.recordBatch(rb, bodyLen)
		}
	}
	return n
}

// CheckIPCFile checks the metadata of an Arrow IPC file or stream of size
// bytes read through r, before arrow-go reads it: of a file its footer and
// the blocks it lists, and with messages each message its blocks point to;
// of a stream every message.
func CheckIPCFile(r io.ReaderAt, size int64, messages bool) error {
	var magic [6]byte
	if _, err := r.ReadAt(magic[:], 0); err == nil && string(magic[:]) == "ARROW1" {
		_, err := checkIPCFooter(r, size, messages)
		return err
	}
	for pos := int64(0); pos < size; {
		meta, next, err := readIPCMeta(r, pos, size)
		if err != nil || meta == nil {
			return err
		}
		n, err := checkMessage(meta, r, next, size-next)
		if err != nil {
			return err
		}
		pos = next + n
	}
	return nil
}

// readIPCMeta reads the encapsulated message metadata at pos (the
// continuation marker, if any, the length, then the flatbuffer), returning
// nil at the end-of-stream marker, and where the message's body starts.
func readIPCMeta(r io.ReaderAt, pos, size int64) (meta []byte, body int64, err error) {
	var p [8]byte
	if _, err := r.ReadAt(p[:4], pos); err != nil {
		return nil, 0, fmt.Errorf("%w: message length at %d: %v", ErrMalformedIPC, pos, err)
	}
	pos += 4
	n := int64(int32(binary.LittleEndian.Uint32(p[:4])))
	if n == -1 { // the continuation marker
		if _, err := r.ReadAt(p[:4], pos); err != nil {
			return nil, 0, fmt.Errorf("%w: message length at %d: %v", ErrMalformedIPC, pos, err)
		}
		pos += 4
		n = int64(int32(binary.LittleEndian.Uint32(p[:4])))
	}
	if n == 0 {
		return nil, pos, nil
	}
	if n < 0 || n > size-pos {
		return nil, 0, fmt.Errorf("%w: message metadata of %d bytes at %d, in a file of %d", ErrMalformedIPC, n, pos, size)
	}
	meta = make([]byte, n)
	if _, err := r.ReadAt(meta, pos); err != nil {
		return nil, 0, err
	}
	return meta, pos + n, nil
}

// ipcBlock is a block of an Arrow IPC file's footer: where a message starts,
// the length of its metadata (with its prefix and padding) and of its body.
type ipcBlock struct{ off, metaLen, bodyLen int64 }

// checkIPCFooter checks the footer of an Arrow IPC file of size bytes, the
// bounds of the blocks it lists and, with messages, the messages they
// point to. It returns the blocks, of dictionaries and record batches.
func checkIPCFooter(r io.ReaderAt, size int64, messages bool) ([]ipcBlock, error) {
	var tail [10]byte
	if size < 6+8+10 {
		return nil, fmt.Errorf("%w: an Arrow file of %d bytes", ErrMalformedIPC, size)
	}
	if _, err := r.ReadAt(tail[:], size-10); err != nil {
		return nil, err
	}
	n := int64(int32(binary.LittleEndian.Uint32(tail[:4])))
	if string(tail[4:]) != "ARROW1" || n <= 0 || n > size-10-8 {
		return nil, fmt.Errorf("%w: the file's footer (%d bytes) in a file of %d", ErrMalformedIPC, n, size)
	}
	footer := make([]byte, n)
	if _, err := r.ReadAt(footer, size-10-n); err != nil {
		return nil, err
	}
	c := &fbCheck{buf: footer}
	// The blocks: an offset, the length of the message's metadata (an
	// int32, padded) and that of its body.
	var blocks []ipcBlock
	if err := c.run("footer", func() {
		f := c.root()
		if s := c.sub(f, 1); s != nil {
			c.schema(s)
		}
		for _, i := range []int{2, 3} {
			start, m := c.vector(f, i, 24)
			for j := range m {
				b := footer[start+flatbuffers.UOffsetT(24*j):]
				blocks = append(blocks, ipcBlock{int64(binary.LittleEndian.Uint64(b)), int64(int32(binary.LittleEndian.Uint32(b[8:]))),
					int64(binary.LittleEndian.Uint64(b[16:]))})
			}
		}
		c.keyValues(f, 4)
	}); err != nil {
		return nil, err
	}
	end := size - 10 - n
	for _, b := range blocks {
		if b.off < 8 || b.metaLen <= 0 || b.bodyLen < 0 || b.off > end || b.metaLen > end-b.off || b.bodyLen > end-b.off-b.metaLen {
			return nil, fmt.Errorf("%w: a block of %d+%d bytes at %d, in a file of %d", ErrMalformedIPC, b.metaLen, b.bodyLen, b.off, size)
		}
		if !messages {
			continue
		}
		if err := checkBlock(r, b); err != nil {
			return nil, err
		}
	}
	return blocks, nil
}

// checkBlock checks the message of block b of the file r.
func checkBlock(r io.ReaderAt, b ipcBlock) error {
	meta, _, err := readIPCMeta(r, b.off, b.off+b.metaLen)
	if err != nil {
		return err
	}
	if meta == nil {
		return fmt.Errorf("%w: a block at %d holds no message", ErrMalformedIPC, b.off)
	}
	_, err = checkMessage(meta, r, b.off+b.metaLen, b.bodyLen)
	return err
}
