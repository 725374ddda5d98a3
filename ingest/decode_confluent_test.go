package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// confluentFrame returns payload in the Confluent wire format: a zero
// byte, the schema id, the message indexes (zigzag varints, a count first;
// none for JSON), then payload.
func confluentFrame(schemaID uint32, indexes []int64, payload []byte) []byte {
	b := []byte{0}
	b = binary.BigEndian.AppendUint32(b, schemaID)
	if indexes != nil {
		b = binary.AppendVarint(b, int64(len(indexes)))
		for _, i := range indexes {
			b = binary.AppendVarint(b, i)
		}
	}
	return append(b, payload...)
}

// TestDecodeConfluentJSON: with framing confluent, JSON events come after
// the magic byte and the schema id; a message without them is rejected.
func TestDecodeConfluentJSON(t *testing.T) {
	defs := strings.Replace(sprintf(testDefs, "epoch_ms"), "kind: Source\n", "kind: Source\nframing: confluent\n", 1)
	_, src, l := loadSource(t, defs)
	dec, err := NewDecoder(src, l, "")
	if err != nil {
		t.Fatal(err)
	}
	event := []byte(`{"meta":{"ts":1795687200123},"amount":12.5}`)
	var ev Event
	if err := dec.Decode(confluentFrame(42, nil, event), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Time != 1795687200123 || !ev.Fields[l.FieldIndex("amount")].Equal(featurestore.DoubleValue(12.5)) {
		t.Fatalf("decoded %+v", ev)
	}
	for name, payload := range map[string][]byte{
		"no frame":       event,
		"short":          {0, 0, 0},
		"magic byte 1":   append([]byte{1, 0, 0, 0, 42}, event...),
		"frame, no body": confluentFrame(42, nil, nil),
	} {
		var de *DecodeError
		if err := dec.Decode(payload, &ev); !errors.As(err, &de) || de.Reason != ReasonInvalidPayload {
			t.Errorf("%s: got %v, want invalid_payload", name, err)
		}
	}
}

// TestDecodeConfluentProtobuf: with framing confluent, Protobuf events come
// after the magic byte, the schema id and the message indexes, which must
// name the declared message: here t.Outer.Event, the first message nested
// in the file's second, [1, 0]; and the file's first, t.First, which
// Confluent's serializers write as the count 0 alone.
func TestDecodeConfluentProtobuf(t *testing.T) {
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	i64 := descriptorpb.FieldDescriptorProto_TYPE_INT64.Enum()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	fields := []*descriptorpb.FieldDescriptorProto{
		{Name: proto.String("card"), Number: proto.Int32(1), Label: opt, Type: str, JsonName: proto.String("card")},
		{Name: proto.String("ts"), Number: proto.Int32(2), Label: opt, Type: i64, JsonName: proto.String("ts")},
	}
	fdp := &descriptorpb.FileDescriptorProto{Name: proto.String("framed.proto"), Package: proto.String("t"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("First"), Field: fields},
			{Name: proto.String("Outer"), NestedType: []*descriptorpb.DescriptorProto{{Name: proto.String("Other")}, {Name: proto.String("Event"), Field: fields}}},
		}}
	fd, err := protodesc.NewFile(fdp, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "framed.binpb"), descriptorSet(fd), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		message string
		want    []int64
		wrong   []int64
	}{
		{"t.Outer.Event", []int64{1, 1}, []int64{1, 0}},
		{"t.First", []int64{}, []int64{1}},
		{"t.First", []int64{0}, []int64{0, 0}},
	} {
		t.Run(fmt.Sprintf("%s %v", tt.message, tt.want), func(t *testing.T) {
			defs := fmt.Sprintf(`
kind: Entity
name: card
join_keys: [{name: card, type: string}]
---
kind: Source
name: txns
format: protobuf
framing: confluent
protobuf: {descriptor_set: framed.binpb, message: %s}
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card: card}
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: card
source: txns
features: [{name: n, aggregation: count, window: 1h}]
`, tt.message)
			r, err := registry.LoadFiles(map[string][]byte{filepath.Join(dir, "defs.yaml"): []byte(defs)})
			if err != nil {
				t.Fatal(err)
			}
			_, dec := sourceDecoder(t, r, "txns")
			md := fd.Messages().ByName("First")
			if tt.message == "t.Outer.Event" {
				md = fd.Messages().ByName("Outer").Messages().ByName("Event")
			}
			msg := dynamicpb.NewMessage(md)
			msg.Set(md.Fields().ByName("card"), protoreflect.ValueOfString("c-1"))
			msg.Set(md.Fields().ByName("ts"), protoreflect.ValueOfInt64(1795687200123))
			body, err := proto.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			var ev Event
			if err := dec.Decode(confluentFrame(7, tt.want, body), &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Time != 1795687200123 || !ev.Keys[0].Equal(featurestore.StringValue("c-1")) {
				t.Fatalf("decoded %+v", ev)
			}
			var de *DecodeError
			if err := dec.Decode(confluentFrame(7, tt.wrong, body), &ev); !errors.As(err, &de) || de.Reason != ReasonInvalidPayload ||
				!strings.Contains(de.Error(), "name another message than "+tt.message) {
				t.Errorf("indexes %v: got %v, want invalid_payload naming %s", tt.wrong, err, tt.message)
			}
			for name, payload := range map[string][]byte{
				"no frame":          body,
				"no indexes":        confluentFrame(7, nil, nil),
				"negative count":    append(confluentFrame(7, nil, nil), 0x01),
				"truncated indexes": append(confluentFrame(7, nil, nil), 0x04, 0x02),
			} {
				if err := dec.Decode(payload, &ev); !errors.As(err, &de) || de.Reason != ReasonInvalidPayload {
					t.Errorf("%s: got %v, want invalid_payload", name, err)
				}
			}
		})
	}
}
