package ingest

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/featurestore/featurestore/registry"
)

// wireDecoders returns the decoders of two sources of a proto3 message made
// for the test:
//
//	message Inner { int64 id = 1; double score = 2; string label = 3; }
//	message Ev {
//	  int64 ts = 1; string who = 2; int64 num = 3; double amount = 4;
//	  Inner inner = 5; repeated int64 tags = 6; string id = 7;
//	  google.protobuf.Timestamp at = 8; string note = 9;
//	}
//
// "evs" reads ts (epoch_ms), the keys who, num and inner.id, the fields
// amount and inner.score, and the event id id; "stamped" reads its time
// from the Timestamp at and the key who.
func wireDecoders(t testing.TB) (evs, stamped Decoder) {
	t.Helper()
	label := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	field := func(name string, n int32, typ descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(n), Label: label, Type: typ.Enum(), JsonName: proto.String(name)}
	}
	inner := field("inner", 5, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE)
	inner.TypeName = proto.String(".wire.Inner")
	tags := field("tags", 6, descriptorpb.FieldDescriptorProto_TYPE_INT64)
	tags.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	at := field("at", 8, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE)
	at.TypeName = proto.String(".google.protobuf.Timestamp")
	fdp := &descriptorpb.FileDescriptorProto{
		Name: proto.String("wire.proto"), Package: proto.String("wire"), Syntax: proto.String("proto3"),
		Dependency: []string{"google/protobuf/timestamp.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Inner"), Field: []*descriptorpb.FieldDescriptorProto{
				field("id", 1, descriptorpb.FieldDescriptorProto_TYPE_INT64),
				field("score", 2, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE),
				field("label", 3, descriptorpb.FieldDescriptorProto_TYPE_STRING),
			}},
			{Name: proto.String("Ev"), Field: []*descriptorpb.FieldDescriptorProto{
				field("ts", 1, descriptorpb.FieldDescriptorProto_TYPE_INT64),
				field("who", 2, descriptorpb.FieldDescriptorProto_TYPE_STRING),
				field("num", 3, descriptorpb.FieldDescriptorProto_TYPE_INT64),
				field("amount", 4, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE),
				inner, tags,
				field("id", 7, descriptorpb.FieldDescriptorProto_TYPE_STRING),
				at,
				field("note", 9, descriptorpb.FieldDescriptorProto_TYPE_STRING),
			}},
		},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "wire.binpb"), descriptorSet(fd), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := registry.LoadFiles(map[string][]byte{filepath.Join(dir, "defs.yaml"): []byte(`
kind: Entity
name: person
join_keys: [{name: who, type: string}]
---
kind: Entity
name: numbered
join_keys: [{name: num, type: int64}]
---
kind: Entity
name: nested
join_keys: [{name: inner_id, type: int64}]
---
kind: Source
name: evs
format: protobuf
protobuf: {descriptor_set: wire.binpb, message: wire.Ev}
kafka: {topic: evs}
timestamp: {field: ts, encoding: epoch_ms}
keys: {who: who, num: num, inner_id: inner.id}
fields: {amount: double, inner.score: double}
event_id_field: id
allowed_lateness: 0s
---
kind: Source
name: stamped
format: protobuf
protobuf: {descriptor_set: wire.binpb, message: wire.Ev}
kafka: {topic: stamped}
timestamp: {field: at}
keys: {who: who}
allowed_lateness: 0s
---
kind: FeatureView
name: by_person
entity: person
source: evs
features: [{name: n, aggregation: count, window: 1h}]
---
kind: FeatureView
name: by_number
entity: numbered
source: evs
features: [{name: n, aggregation: count, window: 1h}]
---
kind: FeatureView
name: by_nested
entity: nested
source: evs
features: [{name: n, aggregation: count, window: 1h}]
---
kind: FeatureView
name: stamped_by_person
entity: person
source: stamped
features: [{name: n, aggregation: count, window: 1h}]
`)})
	if err != nil {
		t.Fatal(err)
	}
	src := r.Source("evs")
	l, err := NewLayout(r, src)
	if err != nil {
		t.Fatal(err)
	}
	// The tests below expect the keys and fields in this order.
	if len(l.Keys) != 3 || l.Keys[0].Name != "inner_id" || l.Keys[1].Name != "num" || l.Keys[2].Name != "who" ||
		len(l.Fields) != 2 || l.Fields[0].Path != "amount" || l.Fields[1].Path != "inner.score" {
		t.Fatalf("layout %+v", l)
	}
	if evs, err = NewDecoder(src, l, ""); err != nil {
		t.Fatal(err)
	}
	src = r.Source("stamped")
	if l, err = NewLayout(r, src); err != nil {
		t.Fatal(err)
	}
	if stamped, err = NewDecoder(src, l, ""); err != nil {
		t.Fatal(err)
	}
	return evs, stamped
}

// Wire-format pieces, written by hand with protowire so that the tests do
// not depend on the decoder or on a generated or dynamic message.
func wVarint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func wDouble(num protowire.Number, f float64) []byte {
	return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), math.Float64bits(f))
}

func wFixed32(num protowire.Number, v uint32) []byte {
	return protowire.AppendFixed32(protowire.AppendTag(nil, num, protowire.Fixed32Type), v)
}

func wBytes(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

func wGroup(num protowire.Number, v []byte) []byte {
	return protowire.AppendGroup(protowire.AppendTag(nil, num, protowire.StartGroupType), num, v)
}

func wCat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// wPacked is the packed encoding of vs, the bytes of a length-delimited
// field.
func wPacked(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = protowire.AppendVarint(b, v)
	}
	return b
}

const wireTime = 1_795_687_200_000

var (
	wTs     = wVarint(1, wireTime)
	wWho    = wBytes(2, []byte("ana"))
	wNum    = wVarint(3, 42)
	wAmount = wDouble(4, 2.5)
	wInner  = wBytes(5, wCat(wVarint(1, 7), wDouble(2, 0.5)))
	wID     = wBytes(7, []byte("e-1"))
	// The valid event, and what it decodes to.
	wValid     = wCat(wTs, wWho, wNum, wAmount, wInner, wID)
	wValidWant = `1795687200000 id "e-1" keys [7 42 "ana"] fields [2.5 0.5]`
)

func wireDecode(dec Decoder, payload []byte) string {
	var ev Event
	if err := dec.Decode(payload, &ev); err != nil {
		var de *DecodeError
		if !errors.As(err, &de) {
			return "not a DecodeError: " + err.Error()
		}
		return err.Error()
	}
	id := "no id"
	if ev.HasID {
		id = sprintf("id %q", ev.ID)
	}
	return sprintf("%d %s keys %v fields %v", ev.Time, id, ev.Keys, ev.Fields)
}

// TestDecodeProtobufWireTypeMismatch sends declared fields with a wire type
// other than their declaration's: the Protobuf library keeps such a field
// as an unknown field and reads the declared one as its zero, which would
// apply the event with amount 0 or credit it to entity 0. The event is
// rejected as wrong_type, naming the field.
func TestDecodeProtobufWireTypeMismatch(t *testing.T) {
	dec, stamped := wireDecoders(t)
	for _, c := range []struct {
		name    string
		payload []byte
		want    string
	}{
		{"double sent as varint", wCat(wTs, wWho, wNum, wVarint(4, 42), wInner, wID),
			`wrong_type: field "amount" (number 4) is declared double but arrived as a varint`},
		{"int64 key sent as bytes", wCat(wTs, wWho, wBytes(3, []byte("42")), wAmount, wInner, wID),
			`wrong_type: field "num" (number 3) is declared int64 but arrived as length-delimited bytes`},
		{"string key sent as varint", wCat(wTs, wVarint(2, 5), wNum, wAmount, wInner, wID),
			`wrong_type: field "who" (number 2) is declared string but arrived as a varint`},
		{"packed varints sent to a singular int64 key", wCat(wTs, wWho, wBytes(3, wPacked(42)), wAmount, wInner, wID),
			`wrong_type: field "num" (number 3) is declared int64 but arrived as length-delimited bytes`},
		{"int64 time sent as fixed64", wCat(protowire.AppendFixed64(protowire.AppendTag(nil, 1, protowire.Fixed64Type), wireTime), wWho, wNum, wAmount, wInner, wID),
			`wrong_type: field "ts" (number 1) is declared int64 but arrived as a fixed64`},
		{"string event id sent as fixed32", wCat(wTs, wWho, wNum, wAmount, wInner, wFixed32(7, 1)),
			`wrong_type: field "id" (number 7) is declared string but arrived as a fixed32`},
		{"message sent as varint", wCat(wTs, wWho, wNum, wAmount, wVarint(5, 1), wID),
			`wrong_type: field "inner" (number 5) is declared message but arrived as a varint`},
		{"double sent as a group", wCat(wTs, wWho, wNum, wGroup(4, wVarint(1, 1)), wInner, wID),
			`wrong_type: field "amount" (number 4) is declared double but arrived as a group`},
		// A valid value first does not hide a mismatched one after it
		// (the last value of a singular field wins).
		{"valid then mismatched", wCat(wValid, wVarint(4, 42)),
			`wrong_type: field "amount" (number 4) is declared double but arrived as a varint`},
		// Nested paths: the messages on the way are checked too.
		{"nested int64 key sent as bytes", wCat(wTs, wWho, wNum, wAmount, wBytes(5, wCat(wBytes(1, []byte("7")), wDouble(2, 0.5))), wID),
			`wrong_type: field "inner.id" (number 1) is declared int64 but arrived as length-delimited bytes`},
		{"nested double sent as varint", wCat(wTs, wWho, wNum, wAmount, wBytes(5, wCat(wVarint(1, 7), wVarint(2, 1))), wID),
			`wrong_type: field "inner.score" (number 2) is declared double but arrived as a varint`},
	} {
		if got := wireDecode(dec, c.payload); got != c.want {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
		// The decoder reuses its message: the next valid event is exact.
		if got := wireDecode(dec, wValid); got != wValidWant {
			t.Errorf("valid after %s: got %s, want %s", c.name, got, wValidWant)
		}
	}

	// google.protobuf.Timestamp, a message the decoder reads the time from.
	at := func(ts []byte) []byte { return wCat(wWho, wBytes(8, ts)) }
	if got, want := wireDecode(stamped, at(wCat(wVarint(1, 1_795_687_200), wVarint(2, 5_000_000)))), `1795687200005 no id keys ["ana"] fields []`; got != want {
		t.Errorf("timestamp: got %s, want %s", got, want)
	}
	if got, want := wireDecode(stamped, at(wCat(wBytes(1, []byte("1795687200")), wVarint(2, 5_000_000)))), `wrong_type: field "at.seconds" (number 1) is declared int64 but arrived as length-delimited bytes`; got != want {
		t.Errorf("timestamp seconds sent as bytes: got %s, want %s", got, want)
	}
}

// TestDecodeProtobufUndeclaredFields sends field numbers the descriptor
// does not declare, of every wire type, at the top and in a nested
// message, and declared fields the decoder does not read with another wire
// type: producers with a newer schema send them, and they are ignored;
// the declared fields decode to their exact values. Repeated scalars are
// accepted packed and unpacked, as Protobuf requires.
func TestDecodeProtobufUndeclaredFields(t *testing.T) {
	dec, _ := wireDecoders(t)
	undeclared := wCat(wVarint(20, 1), wDouble(21, 3.5), wBytes(22, []byte("new")), wGroup(23, wVarint(1, 9)), wFixed32(24, 7), wBytes(1000, wPacked(1, 2, 3)))
	for _, c := range []struct {
		name    string
		payload []byte
	}{
		{"valid", wValid},
		{"undeclared first", wCat(undeclared, wValid)},
		{"undeclared last", wCat(wValid, undeclared)},
		{"undeclared between", wCat(wTs, wWho, undeclared, wNum, wAmount, wInner, undeclared, wID)},
		{"undeclared in the nested message", wCat(wTs, wWho, wNum, wAmount, wBytes(5, wCat(undeclared, wVarint(1, 7), wDouble(2, 0.5), undeclared)), wID)},
		{"packed repeated", wCat(wValid, wBytes(6, wPacked(1, 2, 3)))},
		{"unpacked repeated", wCat(wValid, wVarint(6, 1), wVarint(6, 2))},
		{"packed and unpacked repeated", wCat(wVarint(6, 1), wValid, wBytes(6, wPacked(2, 3)), undeclared)},
		// Declared fields the decoder does not read, of another wire type:
		// they cannot make the event wrong, and a producer's change to a
		// field no feature reads does not stop ingest.
		{"unread string sent as varint", wCat(wValid, wVarint(9, 1))},
		{"nested unread string sent as fixed64", wCat(wTs, wWho, wNum, wAmount, wBytes(5, wCat(wVarint(1, 7), wDouble(2, 0.5), wDouble(3, 1))), wID)},
	} {
		for range 2 { // the decoder reuses its message
			if got := wireDecode(dec, c.payload); got != wValidWant {
				t.Errorf("%s: got %s, want %s", c.name, got, wValidWant)
			}
		}
	}
}

// BenchmarkDecodeProto decodes a valid event, then one that also carries
// fields the descriptor does not declare.
func BenchmarkDecodeProto(b *testing.B) {
	dec, _ := wireDecoders(b)
	for _, c := range []struct {
		name    string
		payload []byte
	}{
		{"valid", wValid},
		{"undeclared", wCat(wValid, wVarint(20, 1), wBytes(22, []byte("a newer field")), wBytes(5, wCat(wVarint(1, 7), wDouble(2, 0.5), wVarint(9, 1))))},
	} {
		b.Run(c.name, func(b *testing.B) { benchDecode(b, dec, c.payload) })
	}
}
