package registry

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// writeDescriptorSet writes a descriptor set with fraud.v1.CardTransaction
// to dir/txn.binpb.
func writeDescriptorSet(t *testing.T, dir string) {
	t.Helper()
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, typeName string, repeated bool) *descriptorpb.FieldDescriptorProto {
		label := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
		if repeated {
			label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
		}
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: label.Enum(), JsonName: proto.String(name)}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	T := descriptorpb.FieldDescriptorProto_TYPE_STRING
	file := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("fraud/v1/txn.proto"),
		Package:    proto.String("fraud.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/timestamp.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Card"), Field: []*descriptorpb.FieldDescriptorProto{field("id", 1, T, "", false)}},
			{Name: proto.String("CardTransaction"), Field: []*descriptorpb.FieldDescriptorProto{
				field("txn_id", 1, T, "", false),
				field("card", 2, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".fraud.v1.Card", false),
				field("amount", 3, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, "", false),
				field("ts_ms", 4, descriptorpb.FieldDescriptorProto_TYPE_INT64, "", false),
				field("event_time", 5, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".google.protobuf.Timestamp", false),
				field("tags", 6, T, "", true),
				field("approved", 7, descriptorpb.FieldDescriptorProto_TYPE_BOOL, "", false),
			}},
		},
	}
	set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		protodesc.ToFileDescriptorProto(timestamppb.File_google_protobuf_timestamp_proto), file,
	}}
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "txn.binpb"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestProtobufSource(t *testing.T) {
	dir := t.TempDir()
	writeDescriptorSet(t, dir)
	for _, tt := range []struct {
		name, src string
		want      []string
	}{
		{"valid", `
kind: Source
name: s
format: protobuf
protobuf: {descriptor_set: txn.binpb, message: fraud.v1.CardTransaction}
kafka: {topic: t}
timestamp: {field: event_time}
keys: {card_id: card.id}
fields: {amount: double, approved: bool, ts_ms: int64}
event_id_field: txn_id
allowed_lateness: 0s
`, nil},
		{"epoch field", `
kind: Source
name: s
format: protobuf
protobuf: {descriptor_set: txn.binpb, message: fraud.v1.CardTransaction}
kafka: {topic: t}
timestamp: {field: ts_ms, encoding: epoch_ms}
keys: {card_id: card.id}
allowed_lateness: 0s
`, nil},
		{"mismatches", `
kind: Source
name: s
format: protobuf
protobuf: {descriptor_set: txn.binpb, message: fraud.v1.CardTransaction}
kafka: {topic: t}
timestamp: {field: ts_ms}
keys: {card_id: card.number, merchant_id: amount.id}
fields: {amount: string, tags: string, approved: bool, missing: int64}
allowed_lateness: 0s
`, []string{
			`:7:20: source "s": timestamp: field "ts_ms" of message fraud.v1.CardTransaction is int64, not a string or google.protobuf.Timestamp`,
			`:8:17: source "s": keys.card_id: message fraud.v1.Card has no field "number"`,
			`:8:43: source "s": keys.merchant_id: field "amount" of message fraud.v1.CardTransaction is not a message, so "amount.id" cannot go into it`,
			`:9:18: source "s": fields.amount: field "amount" of message fraud.v1.CardTransaction is double, not string`,
			`:9:32: source "s": fields.tags: field "tags" of message fraud.v1.CardTransaction is repeated`,
			`:9:65: source "s": fields.missing: message fraud.v1.CardTransaction has no field "missing"`,
		}},
		{"unknown message", `
kind: Source
name: s
format: protobuf
protobuf: {descriptor_set: txn.binpb, message: fraud.v1.Nope}
kafka: {topic: t}
timestamp: {field: ts_ms}
keys: {card_id: card.id}
allowed_lateness: 0s
`, []string{`:5:28: source "s": protobuf: descriptor set txn.binpb has no message "fraud.v1.Nope"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "s.yaml")
			r, err := LoadFiles(map[string][]byte{path: []byte(tt.src)})
			if err == nil {
				// A stored version carries the descriptor set itself, so
				// it needs no file where it is read.
				back, err := FromJSON(r.CanonicalJSON())
				if err != nil {
					t.Fatal(err)
				}
				md, err := back.Source("s").Protobuf.MessageDescriptor()
				if err != nil || md.FullName() != "fraud.v1.CardTransaction" {
					t.Fatalf("message descriptor from a stored version: %v, %v", md, err)
				}
			}
			var got []string
			if err != nil {
				for _, e := range err.(ErrorList) {
					got = append(got, strings.TrimPrefix(e.Error(), path))
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
