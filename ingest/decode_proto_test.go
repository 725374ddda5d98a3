package ingest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
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

// TestDecodeProtobuf decodes featurestore.v1.RegistryVersion messages as
// events: a real message type with a Timestamp, strings and an int64.
func TestDecodeProtobuf(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fs.binpb"), descriptorSet(featurestorev1.File_featurestore_v1_registry_proto), 0o644); err != nil {
		t.Fatal(err)
	}
	defs := filepath.Join(dir, "defs.yaml")
	r, err := registry.LoadFiles(map[string][]byte{defs: []byte(`
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
---
kind: FeatureView
name: by_applier
entity: applier
source: versions
features: [{name: n, aggregation: count, window: 1h}, {name: last_version, field: version, type: int64}]
`)})
	if err != nil {
		t.Fatal(err)
	}
	// Decode from a stored version, as ingest does: no file needed.
	if r, err = registry.FromJSON(r.CanonicalJSON()); err != nil {
		t.Fatal(err)
	}
	src := r.Source("versions")
	l, err := NewLayout(r, src)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := NewDecoder(src, l, "")
	if err != nil {
		t.Fatal(err)
	}
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
