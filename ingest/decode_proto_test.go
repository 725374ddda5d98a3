package ingest

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/featurestore/featurestore/featurestore"
	featurestorev1 "github.com/featurestore/featurestore/protos/featurestore/v1"
	"github.com/featurestore/featurestore/registry"
)

// descriptorSet serializes fd with its imports, as protoc
// --include_imports would.
func descriptorSet(fd protoreflect.FileDescriptor) []byte {
	var set descriptorpb.FileDescriptorSet
	seen := map[string]bool{}
	var add func(protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		for i := range f.Imports().Len() {
			add(f.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	add(fd)
	b, err := proto.Marshal(&set)
	if err != nil {
		panic(err)
	}
	return b
}

// sourceDecoder returns the layout and the decoder of a source of r.
func sourceDecoder(t testing.TB, r *registry.Registry, source string) (Layout, Decoder) {
	t.Helper()
	src := r.Source(source)
	l, err := NewLayout(r, src)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := NewDecoder(src, l, "")
	if err != nil {
		t.Fatal(err)
	}
	return l, dec
}

// versionsDefs declare a source of featurestore.v1.RegistryVersion
// messages, from the descriptor set fs.binpb.
const versionsDefs = `
kind: Entity
name: applier
join_keys: [{name: who, type: string}]
---
kind: Source
name: versions
format: protobuf
protobuf: {descriptor_set: fs.binpb, message: featurestore.v1.RegistryVersion}
kafka: {topic: versions}
timestamp: {field: applied_at}
keys: {who: applied_by}
fields: {version: int64, message: string}
event_id_field: digest
allowed_lateness: 0s
---
kind: FeatureView
name: by_applier
entity: applier
source: versions
features: [{name: n, aggregation: count, window: 1h}, {name: last_version, field: version, type: int64}]
`

// TestDecodeProtobuf decodes featurestore.v1.RegistryVersion messages as
// events: a real message type with a Timestamp, strings and an int64.
func TestDecodeProtobuf(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fs.binpb"), descriptorSet(featurestorev1.File_featurestore_v1_registry_proto), 0o644); err != nil {
		t.Fatal(err)
	}
	defs := filepath.Join(dir, "defs.yaml")
	r, err := registry.LoadFiles(map[string][]byte{defs: []byte(versionsDefs)})
	if err != nil {
		t.Fatal(err)
	}
	// Decode from a stored version, as ingest does: no file needed.
	if r, err = registry.FromJSON(r.CanonicalJSON()); err != nil {
		t.Fatal(err)
	}
	l, dec := sourceDecoder(t, r, "versions")
	at := time.Date(2026, 11, 26, 10, 0, 0, 123_999_999, time.UTC)
	payload, _ := proto.Marshal(&featurestorev1.RegistryVersion{Version: 7, Digest: "sha256:ab", AppliedAt: timestamppb.New(at), AppliedBy: "ana@host", Message: "hello"})
	var ev Event
	if err := dec.Decode(payload, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Time != at.UnixMilli() || !ev.Keys[0].Equal(featurestore.StringValue("ana@host")) || ev.ID != "sha256:ab" {
		t.Fatalf("decoded %+v", ev)
	}
	if !ev.Fields[l.FieldIndex("version")].Equal(featurestore.Int64Value(7)) || !ev.Fields[l.FieldIndex("message")].Equal(featurestore.StringValue("hello")) {
		t.Fatalf("fields %v", ev.Fields)
	}

	noTime, _ := proto.Marshal(&featurestorev1.RegistryVersion{Version: 1})
	var de *DecodeError
	if err := dec.Decode(noTime, &ev); !errors.As(err, &de) || de.Reason != ReasonMissingTime {
		t.Fatalf("no time: %v", err)
	}
	if err := dec.Decode([]byte{0xff, 0xff, 0xff}, &ev); !errors.As(err, &de) || de.Reason != ReasonInvalidPayload {
		t.Fatalf("garbage: %v", err)
	}
}

// TestDecodeProtobufEdges decodes proto3 messages of a type made for the
// test, against values written out by hand: proto3 scalars carry no
// presence, so an event id, time or string key at its zero value is not
// set; a string field read as an int64 key is parsed; what cannot be
// converted (a non-integer string, a uint64 above int64, a NaN or infinite
// double, a string that is not UTF-8 in a proto2 message, Timestamp nanos
// out of range) rejects the event with a reason naming the field, never a
// panic or a null.
func TestDecodeProtobufEdges(t *testing.T) {
	file := func(syntax string) *descriptorpb.FileDescriptorProto {
		label := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
		field := func(name string, n int32, typ descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto {
			return &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(n), Label: label, Type: typ.Enum(), JsonName: proto.String(name)}
		}
		ts := field("at", 7, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE)
		ts.TypeName = proto.String(".google.protobuf.Timestamp")
		return &descriptorpb.FileDescriptorProto{
			Name: proto.String("edge_" + syntax + ".proto"), Package: proto.String("edge" + syntax), Syntax: proto.String(syntax),
			Dependency: []string{"google/protobuf/timestamp.proto"},
			MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("Ev"), Field: []*descriptorpb.FieldDescriptorProto{
				field("id", 1, descriptorpb.FieldDescriptorProto_TYPE_INT64),
				field("ts", 2, descriptorpb.FieldDescriptorProto_TYPE_INT64),
				field("who", 3, descriptorpb.FieldDescriptorProto_TYPE_STRING),
				field("num", 4, descriptorpb.FieldDescriptorProto_TYPE_STRING),
				field("amount", 5, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE),
				field("big", 6, descriptorpb.FieldDescriptorProto_TYPE_UINT64),
				ts,
			}}},
		}
	}
	for _, syntax := range []string{"proto3", "proto2"} {
		fd, err := protodesc.NewFile(file(syntax), protoregistry.GlobalFiles)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "edge.binpb"), descriptorSet(fd), 0o644); err != nil {
			t.Fatal(err)
		}
		timeField := "ts"
		for _, tsField := range []string{"ts", "at"} {
			timeField = tsField
			r, err := registry.LoadFiles(map[string][]byte{filepath.Join(dir, "defs.yaml"): []byte(sprintf(`
kind: Entity
name: person
join_keys: [{name: who, type: string}]
---
kind: Entity
name: numbered
join_keys: [{name: num, type: int64}]
---
kind: Source
name: evs
format: protobuf
protobuf: {descriptor_set: edge.binpb, message: edge%s.Ev}
kafka: {topic: evs}
timestamp: {field: %s, encoding: epoch_ms}
keys: {who: who, num: num}
fields: {amount: double, big: int64}
event_id_field: id
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
`, syntax, timeField))})
			if err != nil {
				t.Fatal(err)
			}
			_, dec := sourceDecoder(t, r, "evs")
			md := fd.Messages().ByName("Ev")
			msg := func(set func(m *dynamicpb.Message)) []byte {
				m := dynamicpb.NewMessage(md)
				if tsField == "ts" {
					m.Set(md.Fields().ByName("ts"), protoreflect.ValueOfInt64(1_795_687_200_000))
				} else {
					m.Set(md.Fields().ByName("at"), protoreflect.ValueOfMessage(timestamppb.New(time.UnixMilli(1_795_687_200_000)).ProtoReflect()))
				}
				set(m)
				b, err := proto.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			str := func(name, v string) func(m *dynamicpb.Message) {
				return func(m *dynamicpb.Message) {
					m.Set(md.Fields().ByName(protoreflect.Name(name)), protoreflect.ValueOfString(v))
				}
			}
			for _, c := range []struct {
				name    string
				payload []byte
				want    string // the event, or the rejection
			}{
				{"set", msg(func(m *dynamicpb.Message) {
					m.Set(md.Fields().ByName("id"), protoreflect.ValueOfInt64(5))
					m.Set(md.Fields().ByName("who"), protoreflect.ValueOfString("ana"))
					m.Set(md.Fields().ByName("num"), protoreflect.ValueOfString("-42"))
					m.Set(md.Fields().ByName("amount"), protoreflect.ValueOfFloat64(2.5))
					m.Set(md.Fields().ByName("big"), protoreflect.ValueOfUint64(1<<62))
				}), `1795687200000 id "5" keys [-42 "ana"] fields [2.5 4611686018427387904]`},
				{"zero values", msg(func(m *dynamicpb.Message) {
					m.Set(md.Fields().ByName("id"), protoreflect.ValueOfInt64(0))
					m.Set(md.Fields().ByName("who"), protoreflect.ValueOfString(""))
				}), map[string]string{
					// proto2 fields have presence: a zero set is a zero.
					// proto3 fields unset read as zero, as proto3 has them.
					"proto3": `1795687200000 no id keys [null null] fields [0 0]`,
					"proto2": `1795687200000 id "0" keys [null ""] fields [null null]`,
				}[syntax]},
				{"string not an integer", msg(str("num", "x12")), `wrong_type: key "num" in field "num": expected an int64, got "x12"`},
				{"uint64 above int64", msg(func(m *dynamicpb.Message) {
					m.Set(md.Fields().ByName("big"), protoreflect.ValueOfUint64(1<<63))
				}), `wrong_type: field "big": 9223372036854775808 is out of range for int64`},
				{"NaN", msg(func(m *dynamicpb.Message) {
					m.Set(md.Fields().ByName("amount"), protoreflect.ValueOfFloat64(math.NaN()))
				}), `wrong_type: field "amount": expected a finite double, got NaN`},
				{"infinity", msg(func(m *dynamicpb.Message) {
					m.Set(md.Fields().ByName("amount"), protoreflect.ValueOfFloat64(math.Inf(-1)))
				}), `wrong_type: field "amount": expected a finite double, got -Inf`},
			} {
				var ev Event
				got := ""
				if err := dec.Decode(c.payload, &ev); err != nil {
					got = err.Error()
				} else {
					id := "no id"
					if ev.HasID {
						id = sprintf("id %q", ev.ID)
					}
					got = sprintf("%d %s keys %v fields %v", ev.Time, id, ev.Keys, ev.Fields)
				}
				if got != c.want {
					t.Errorf("%s, time in %s, %s: got %s, want %s", syntax, tsField, c.name, got, c.want)
				}
			}
			// Time at zero: not set in proto3 (an int64 without presence),
			// the epoch in proto2; a Timestamp has presence in both.
			noTime := dynamicpb.NewMessage(md)
			if tsField == "ts" {
				noTime.Set(md.Fields().ByName("ts"), protoreflect.ValueOfInt64(0))
			}
			b, _ := proto.Marshal(noTime)
			var ev Event
			err = dec.Decode(b, &ev)
			var de *DecodeError
			if wantMissing := syntax == "proto3" || tsField == "at"; wantMissing != (errors.As(err, &de) && de.Reason == ReasonMissingTime) {
				t.Errorf("%s, time in %s, zero: %v, time %d", syntax, tsField, err, ev.Time)
			}
			if tsField == "at" {
				bad := dynamicpb.NewMessage(md)
				bad.Set(md.Fields().ByName("at"), protoreflect.ValueOfMessage((&timestamppb.Timestamp{Seconds: 1_795_687_200, Nanos: -1}).ProtoReflect()))
				b, _ := proto.Marshal(bad)
				if err := dec.Decode(b, &ev); !errors.As(err, &de) || de.Reason != ReasonBadTime {
					t.Errorf("%s: negative nanos: %v, time %d", syntax, err, ev.Time)
				}
			}
			if syntax == "proto2" {
				// proto2 strings are not checked by the Protobuf decoder.
				if err := dec.Decode(msg(str("who", "caf\xe9")), &ev); err == nil || err.Error() != `invalid_payload: key "who" in field "who": the string is not valid UTF-8` {
					t.Errorf("proto2, time in %s, invalid UTF-8: %v", tsField, err)
				}
			}
		}
	}
}

// FuzzDecodeProtobuf feeds arbitrary payloads to the Protobuf decoder of a
// source of featurestore.v1.RegistryVersion messages, bare and in the
// Confluent wire format: whatever a topic holds, decoding gives an event
// or a DecodeError (a dead letter with its reason), never a panic.
func FuzzDecodeProtobuf(f *testing.F) {
	at := timestamppb.New(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	for _, m := range []*featurestorev1.RegistryVersion{
		{Version: 7, Digest: "sha256:ab", AppliedAt: at, AppliedBy: "ana@host", Message: "hello"},
		{Version: -1, AppliedAt: &timestamppb.Timestamp{Seconds: -1, Nanos: 2_000_000_000}},
		{},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
		f.Add(append([]byte{0, 0, 0, 0, 1, 2, 0}, b...))
	}
	f.Add([]byte{0, 0, 0, 0, 1, 0x7f})
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fs.binpb"), descriptorSet(featurestorev1.File_featurestore_v1_registry_proto), 0o644); err != nil {
		f.Fatal(err)
	}
	var decs []Decoder
	for _, defs := range []string{versionsDefs, strings.Replace(versionsDefs, "kind: Source\n", "kind: Source\nframing: confluent\n", 1)} {
		r, err := registry.LoadFiles(map[string][]byte{filepath.Join(dir, "defs.yaml"): []byte(defs)})
		if err != nil {
			f.Fatal(err)
		}
		_, dec := sourceDecoder(f, r, "versions")
		decs = append(decs, dec)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, dec := range decs {
			var ev Event
			err := dec.Decode(b, &ev)
			var de *DecodeError
			if err != nil && !errors.As(err, &de) {
				t.Fatalf("error %v is not a DecodeError", err)
			}
		}
	})
}
