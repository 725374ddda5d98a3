package ingest

import (
	"encoding/binary"
	"fmt"
	"slices"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/featurestore/featurestore/registry"
)

// confluentDecoder reads messages in the Confluent Schema Registry wire
// format (registry.FramingConfluent): a zero byte, the schema id (4 bytes,
// big-endian), for Protobuf the message indexes, then the encoding, which
// the source's own decoder reads. The schema id is not looked up: the
// source declares what its events are. For Protobuf, the indexes must name
// the declared message, the path of its index in its file's messages and
// in each enclosing message's.
type confluentDecoder struct {
	inner Decoder
	// indexes is the declared message's path, nil for JSON.
	indexes []int64
	message protoreflect.FullName
	scratch []int64
}

func newConfluentDecoder(src *registry.Source, inner Decoder) (*confluentDecoder, error) {
	d := &confluentDecoder{inner: inner}
	if src.Format == registry.FormatProtobuf {
		md, err := src.Protobuf.MessageDescriptor()
		if err != nil {
			return nil, fmt.Errorf("source %q: %w", src.Name, err)
		}
		d.message = md.FullName()
		var path []int64
		for m := protoreflect.Descriptor(md); ; m = m.Parent() {
			if _, ok := m.(protoreflect.MessageDescriptor); !ok {
				break
			}
			path = append(path, int64(m.Index()))
		}
		slices.Reverse(path)
		d.indexes = path
	}
	return d, nil
}

// confluentHeader is the magic byte and the schema id.
const confluentHeader = 5

// Decode implements Decoder.
func (d *confluentDecoder) Decode(payload []byte, ev *Event) error {
	if len(payload) < confluentHeader || payload[0] != 0 {
		n := min(len(payload), confluentHeader)
		return reject(ReasonInvalidPayload, "not in the Confluent wire format (framing confluent): want a zero byte and a 4-byte schema id first, got % x", payload[:n])
	}
	body := payload[confluentHeader:]
	if d.indexes != nil {
		idx, rest, err := d.readIndexes(body)
		if err != nil {
			return reject(ReasonInvalidPayload, "Confluent wire format (framing confluent): %v", err)
		}
		if !slices.Equal(idx, d.indexes) {
			return reject(ReasonInvalidPayload, "Confluent wire format (framing confluent): schema %d, message indexes %v name another message than %s (%v)",
				binary.BigEndian.Uint32(payload[1:confluentHeader]), idx, d.message, d.indexes)
		}
		body = rest
	}
	return d.inner.Decode(body, ev)
}

// maxIndexes bounds the message indexes: messages are not nested deeper.
const maxIndexes = 64

// readIndexes reads the message indexes: a count and that many indexes,
// each a zigzag varint; a count of 0 stands for [0], the file's first
// message.
func (d *confluentDecoder) readIndexes(b []byte) ([]int64, []byte, error) {
	n, k := binary.Varint(b)
	if k <= 0 {
		return nil, nil, fmt.Errorf("message indexes: bad count")
	}
	b = b[k:]
	if n == 0 {
		d.scratch = append(d.scratch[:0], 0)
		return d.scratch, b, nil
	}
	if n < 0 || n > maxIndexes {
		return nil, nil, fmt.Errorf("message indexes: count %d out of range", n)
	}
	d.scratch = d.scratch[:0]
	for range n {
		i, k := binary.Varint(b)
		if k <= 0 || i < 0 {
			return nil, nil, fmt.Errorf("message indexes: bad index")
		}
		d.scratch = append(d.scratch, i)
		b = b[k:]
	}
	return d.scratch, b, nil
}
