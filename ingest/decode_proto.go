package ingest

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// protoDecoder decodes Protobuf messages of the type the source names,
// from the descriptor set the registry version carries.
type protoDecoder struct {
	md       protoreflect.MessageDescriptor
	msg      *dynamicpb.Message
	layout   Layout
	keys     [][]protoreflect.FieldDescriptor
	fields   [][]protoreflect.FieldDescriptor
	timePath []protoreflect.FieldDescriptor
	timeEnc  registry.TimeEncoding
	idPath   []protoreflect.FieldDescriptor
	unmarsh  proto.UnmarshalOptions
	// read are the numbers of the top message's fields the decoder reads
	// (or reads a field of); nested are the messages below it that it reads
	// a field of (a path's message fields on the way, a
	// google.protobuf.Timestamp), with theirs. Only these are checked for a
	// wire type other than the declared one: a field the decoder never
	// reads cannot make an event wrong.
	read   []protowire.Number
	nested []nestedRead
	// unknown is the buffer the unknown fields of the top message are
	// read into, kept from event to event.
	unknown []byte
}

// maxKeptUnknown is the largest unknown-field buffer a decoder keeps for
// the next event.
const maxKeptUnknown = 64 << 10

func newProtoDecoder(src *registry.Source, l Layout, _ string) (*protoDecoder, error) {
	if src.Protobuf == nil {
		return nil, fmt.Errorf("source %q: format protobuf without a protobuf section", src.Name)
	}
	md, err := src.Protobuf.MessageDescriptor()
	if err != nil {
		return nil, fmt.Errorf("source %q: %w", src.Name, err)
	}
	// Unknown fields are kept, to tell a declared field that arrived with
	// another wire type (which the library keeps as unknown, reading the
	// field as its zero) from an undeclared one. Merge, as Decode resets
	// the message itself and sets its unknown-field buffer.
	d := &protoDecoder{md: md, msg: dynamicpb.NewMessage(md), layout: l, timeEnc: src.Timestamp.Encoding,
		unmarsh: proto.UnmarshalOptions{Merge: true}}
	compile := func(path string) ([]protoreflect.FieldDescriptor, error) {
		var out []protoreflect.FieldDescriptor
		m := md
		for _, name := range strings.Split(path, ".") {
			if m == nil {
				return nil, fmt.Errorf("source %q: field path %q goes through a non-message field", src.Name, path)
			}
			fd := m.Fields().ByName(protoreflect.Name(name))
			if fd == nil {
				return nil, fmt.Errorf("source %q: message %s has no field %q", src.Name, m.FullName(), name)
			}
			out = append(out, fd)
			m = fd.Message()
		}
		return out, nil
	}
	if d.timePath, err = compile(src.Timestamp.Field); err != nil {
		return nil, err
	}
	for _, k := range l.Keys {
		p, err := compile(k.Path)
		if err != nil {
			return nil, err
		}
		d.keys = append(d.keys, p)
	}
	for _, f := range l.Fields {
		p, err := compile(f.Path)
		if err != nil {
			return nil, err
		}
		d.fields = append(d.fields, p)
	}
	if src.EventIDField != "" {
		if d.idPath, err = compile(src.EventIDField); err != nil {
			return nil, err
		}
	}
	nested := map[string]int{}
	for _, path := range append(append([][]protoreflect.FieldDescriptor{d.timePath, d.idPath}, d.keys...), d.fields...) {
		if len(path) == 0 {
			continue
		}
		if !slices.Contains(d.read, path[0].Number()) {
			d.read = append(d.read, path[0].Number())
		}
		for i, fd := range path {
			if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() {
				break
			}
			name := fieldPath(path[:i+1])
			j, ok := nested[name]
			if !ok {
				j = len(d.nested)
				nested[name] = j
				d.nested = append(d.nested, nestedRead{path: path[:i+1]})
			}
			n := &d.nested[j]
			if i+1 == len(path) {
				// A message read whole (a google.protobuf.Timestamp).
				for k, fs := 0, fd.Message().Fields(); k < fs.Len(); k++ {
					if num := fs.Get(k).Number(); !slices.Contains(n.read, num) {
						n.read = append(n.read, num)
					}
				}
			} else if num := path[i+1].Number(); !slices.Contains(n.read, num) {
				n.read = append(n.read, num)
			}
		}
	}
	return d, nil
}

// nestedRead is a message below the top one that the decoder reads fields
// of: its path, and the numbers of the fields read.
type nestedRead struct {
	path []protoreflect.FieldDescriptor
	read []protowire.Number
}

// fieldPath is the dot-separated path of the field at the end of path.
func fieldPath(path []protoreflect.FieldDescriptor) string {
	var b strings.Builder
	for i, fd := range path {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(string(fd.Name()))
	}
	return b.String()
}

// lookup follows path in m; ok is false when a field on the way, or the
// field itself, is not set (for fields that track presence).
func lookup(m protoreflect.Message, path []protoreflect.FieldDescriptor) (protoreflect.Value, protoreflect.FieldDescriptor, bool) {
	for i, fd := range path {
		if fd.HasPresence() && !m.Has(fd) {
			return protoreflect.Value{}, fd, false
		}
		v := m.Get(fd)
		if i == len(path)-1 {
			return v, fd, true
		}
		m = v.Message()
	}
	return protoreflect.Value{}, nil, false
}

// Decode implements Decoder.
func (d *protoDecoder) Decode(payload []byte, ev *Event) error {
	ev.reset(&d.layout)
	d.msg.Reset()
	d.msg.SetUnknown(d.unknown[:0])
	if err := d.unmarsh.Unmarshal(payload, d.msg); err != nil {
		return reject(ReasonInvalidPayload, "invalid %s message: %v", d.md.FullName(), err)
	}
	if u := d.msg.GetUnknown(); len(u) > 0 {
		if cap(u) <= maxKeptUnknown {
			d.unknown = u[:0]
		}
		if de := checkUnknown(d.msg, nil, d.read); de != nil {
			return de
		}
	}
	for _, n := range d.nested {
		if de := checkNested(d.msg, n); de != nil {
			return de
		}
	}
	tv, tfd, ok := lookup(d.msg, d.timePath)
	if !ok || unset(d.msg, d.timePath) {
		return reject(ReasonMissingTime, "no event time in field %q", tfd.Name())
	}
	var err error
	if ev.Time, err = d.protoTime(tv, tfd); err != nil {
		return reject(ReasonBadTime, "event time: %v", err)
	}
	for i, path := range d.keys {
		v, fd, ok := lookup(d.msg, path)
		if !ok || (fd.Kind() == protoreflect.StringKind && unset(d.msg, path)) {
			continue // a view that needs this key rejects the event
		}
		val, problem := protoScalar(v, fd, d.layout.Keys[i].Kind)
		if problem != "" {
			return reject(protoReason(problem), "key %q in field %q: %s", d.layout.Keys[i].Name, d.layout.Keys[i].Path, problem)
		}
		if de := checkKey(&d.layout, i, val); de != nil {
			return de
		}
		ev.Keys[i] = val
	}
	for i, path := range d.fields {
		v, fd, ok := lookup(d.msg, path)
		if !ok {
			continue
		}
		val, problem := protoScalar(v, fd, d.layout.Fields[i].Kind)
		if problem != "" {
			return reject(protoReason(problem), "field %q: %s", d.layout.Fields[i].Path, problem)
		}
		ev.Fields[i] = val
	}
	if d.idPath != nil {
		if v, fd, ok := lookup(d.msg, d.idPath); ok && !unset(d.msg, d.idPath) {
			if fd.Kind() == protoreflect.StringKind {
				ev.ID = v.String()
			} else {
				ev.ID = fmt.Sprint(v.Interface())
			}
			ev.HasID = ev.ID != ""
		}
	}
	return nil
}

// checkNested checks the unknown fields of the message n.path in m, if it
// is set.
func checkNested(m protoreflect.Message, n nestedRead) *DecodeError {
	for _, fd := range n.path {
		if !m.Has(fd) {
			return nil
		}
		m = m.Get(fd).Message()
	}
	if len(m.GetUnknown()) == 0 {
		return nil
	}
	return checkUnknown(m, n.path, n.read)
}

// checkUnknown rejects m, the message at path, if one of its unknown fields
// has the number of a field it declares and the decoder reads (read): the
// field arrived with a wire type
// other than its declaration's (a double as a varint, an int64 as bytes),
// and Protobuf kept it as unknown and reads the declared field as its zero
// (or its earlier value). Undeclared numbers, of fields of a newer schema,
// are ignored. Repeated scalars, packed or not, never arrive as unknown.
func checkUnknown(m protoreflect.Message, path []protoreflect.FieldDescriptor, read []protowire.Number) *DecodeError {
	fields := m.Descriptor().Fields()
	for b := m.GetUnknown(); len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return reject(ReasonInvalidPayload, "invalid %s message: %v", m.Descriptor().FullName(), protowire.ParseError(n))
		}
		b = b[n:]
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return reject(ReasonInvalidPayload, "invalid %s message: %v", m.Descriptor().FullName(), protowire.ParseError(n))
		}
		b = b[n:]
		fd := fields.ByNumber(num)
		if fd == nil || !slices.Contains(read, num) {
			continue
		}
		declared := fd.Kind().String()
		switch {
		case fd.IsMap():
			declared = "map"
		case fd.IsList():
			declared = "repeated " + declared
		}
		return reject(ReasonWrongType, "field %q (number %d) is declared %s but arrived as %s",
			fieldPath(append(path[:len(path):len(path)], fd)), num, declared, wireTypeName(typ))
	}
	return nil
}

func wireTypeName(t protowire.Type) string {
	switch t {
	case protowire.VarintType:
		return "a varint"
	case protowire.Fixed64Type:
		return "a fixed64"
	case protowire.BytesType:
		return "length-delimited bytes"
	case protowire.StartGroupType:
		return "a group"
	case protowire.Fixed32Type:
		return "a fixed32"
	}
	return fmt.Sprintf("wire type %d", t)
}

// unset tells whether the last field of path, one without presence (a
// proto3 scalar), holds its zero value: proto3 cannot tell a field set to
// zero from one never set, and the zero of an event id, an event time or a
// string key is taken as "not set" (missing_time, no id, no key), never as
// the id "0", the time 1970-01-01 or the entity "". An integer key of 0
// stays 0.
func unset(m protoreflect.Message, path []protoreflect.FieldDescriptor) bool {
	for _, fd := range path[:len(path)-1] {
		m = m.Get(fd).Message()
	}
	fd := path[len(path)-1]
	return !fd.HasPresence() && !m.Has(fd)
}

// Problems of protoScalar, which say the reason too.
const (
	problemNotUTF8 = "the string is not valid UTF-8"
)

// protoReason is the rejection reason of a protoScalar problem.
func protoReason(problem string) Reason {
	if problem == problemNotUTF8 {
		return ReasonInvalidPayload
	}
	return ReasonWrongType
}

// protoScalar converts a field value the registry checked to carry kind: a
// string or enum to a string (an integer to its decimal text, for keys), an
// integer or a float to a double, an integer (or, for keys, a string of
// one) to an int64. It returns what is wrong with a value that cannot be
// converted: a string that is not an integer, an unsigned integer above
// int64's range, a NaN or infinite double (which would make every sum, mean
// and max over its window NaN), a string that is not valid UTF-8 (proto2
// fields are not checked when decoded).
func protoScalar(v protoreflect.Value, fd protoreflect.FieldDescriptor, kind featurestore.Kind) (featurestore.Value, string) {
	switch kind {
	case featurestore.KindString:
		if fd.Kind() == protoreflect.EnumKind {
			if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
				return featurestore.StringValue(string(ev.Name())), ""
			}
			return featurestore.StringValue(strconv.Itoa(int(v.Enum()))), ""
		}
		s := v.String() // an integer key's value in decimal
		if !utf8.ValidString(s) {
			return featurestore.Value{}, problemNotUTF8
		}
		return featurestore.StringValue(s), ""
	case featurestore.KindInt64:
		switch fd.Kind() {
		case protoreflect.StringKind:
			i, err := strconv.ParseInt(v.String(), 10, 64)
			if err != nil {
				return featurestore.Value{}, fmt.Sprintf("expected an int64, got %q", v.String())
			}
			return featurestore.Int64Value(i), ""
		case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
			u := v.Uint()
			if u > math.MaxInt64 {
				return featurestore.Value{}, fmt.Sprintf("%d is out of range for int64", u)
			}
			return featurestore.Int64Value(int64(u)), ""
		}
		return featurestore.Int64Value(v.Int()), ""
	case featurestore.KindDouble:
		switch fd.Kind() {
		case protoreflect.DoubleKind, protoreflect.FloatKind:
			f := v.Float()
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return featurestore.Value{}, fmt.Sprintf("expected a finite double, got %v", f)
			}
			return featurestore.DoubleValue(f), ""
		case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
			return featurestore.DoubleValue(float64(v.Uint())), ""
		}
		return featurestore.DoubleValue(float64(v.Int())), ""
	case featurestore.KindBool:
		return featurestore.BoolValue(v.Bool()), ""
	}
	return featurestore.Value{}, "unsupported kind " + kind.String()
}

func (d *protoDecoder) protoTime(v protoreflect.Value, fd protoreflect.FieldDescriptor) (int64, error) {
	switch {
	case fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Timestamp":
		m := v.Message()
		secs := m.Get(fd.Message().Fields().ByName("seconds")).Int()
		nanos := m.Get(fd.Message().Fields().ByName("nanos")).Int()
		if nanos < 0 || nanos >= 1e9 {
			return 0, errorf("timestamp nanos %d is outside [0, 999999999]", nanos)
		}
		if secs > maxTimeMs/1000 || secs < minTimeMs/1000 {
			return 0, errorf("timestamp %ds is out of range", secs)
		}
		return secs*1000 + floorDiv(nanos, 1e6), nil
	case fd.Kind() == protoreflect.StringKind:
		return parseRFC3339(v.String())
	case fd.Kind() == protoreflect.Uint64Kind || fd.Kind() == protoreflect.Fixed64Kind || fd.Kind() == protoreflect.Uint32Kind || fd.Kind() == protoreflect.Fixed32Kind:
		return epochMillis(strconv.FormatUint(v.Uint(), 10), d.timeEnc)
	default:
		return epochMillis(strconv.FormatInt(v.Int(), 10), d.timeEnc)
	}
}
