package registry

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// readDescriptorSet reads a file descriptor set file.
func readDescriptorSet(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read descriptor set: %w", err)
	}
	return b, nil
}

// messageDescriptor finds the named message type in a serialized file
// descriptor set; name is the set's file name for messages.
func messageDescriptor(b []byte, name, message string) (protoreflect.MessageDescriptor, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("descriptor set %s: %w", name, err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("descriptor set %s: %w", name, err)
	}
	d, err := files.FindDescriptorByName(protoreflect.FullName(message))
	if err != nil {
		return nil, fmt.Errorf("descriptor set %s has no message %q", name, message)
	}
	md, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		return nil, fmt.Errorf("descriptor set %s: %q is not a message", name, message)
	}
	return md, nil
}

// protoField finds the field at a dot-separated path in md.
func protoField(md protoreflect.MessageDescriptor, path string) (protoreflect.FieldDescriptor, error) {
	parts := strings.Split(path, ".")
	for i, name := range parts {
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return nil, fmt.Errorf("message %s has no field %q", md.FullName(), name)
		}
		if i == len(parts)-1 {
			if fd.IsList() || fd.IsMap() {
				return nil, fmt.Errorf("field %q of message %s is repeated", name, md.FullName())
			}
			return fd, nil
		}
		if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() {
			return nil, fmt.Errorf("field %q of message %s is not a message, so %q cannot go into it", name, md.FullName(), path)
		}
		md = fd.Message()
	}
	return nil, fmt.Errorf("empty field path")
}

func isProtoInt(k protoreflect.Kind) bool {
	switch k {
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		return true
	}
	return false
}

// protoFits reports whether a Protobuf field can carry a value of type t.
func protoFits(fd protoreflect.FieldDescriptor, t ValueType) bool {
	switch t {
	case TypeString:
		return fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.EnumKind
	case TypeInt64:
		return isProtoInt(fd.Kind())
	case TypeDouble:
		return fd.Kind() == protoreflect.DoubleKind || fd.Kind() == protoreflect.FloatKind || isProtoInt(fd.Kind())
	case TypeBool:
		return fd.Kind() == protoreflect.BoolKind
	}
	return false
}

func protoKindName(fd protoreflect.FieldDescriptor) string {
	if fd.Kind() == protoreflect.MessageKind {
		return string(fd.Message().FullName())
	}
	return fd.Kind().String()
}

// checkProtoSource checks that the fields a source names exist in its
// Protobuf message with types that can carry what is declared.
func checkProtoSource(e *errs, ctx string, o *Source, md protoreflect.MessageDescriptor) {
	check := func(pos Pos, what, path string, fits func(protoreflect.FieldDescriptor) bool, want string) {
		if path == "" || !fieldPathRE.MatchString(path) {
			return
		}
		fd, err := protoField(md, path)
		if err != nil {
			e.add(pos, "%s: %s: %v", ctx, what, err)
			return
		}
		if !fits(fd) {
			e.add(pos, "%s: %s: field %q of message %s is %s, not %s", ctx, what, path, md.FullName(), protoKindName(fd), want)
		}
	}
	ts := func(fd protoreflect.FieldDescriptor) bool {
		if fd.Kind() == protoreflect.MessageKind {
			return fd.Message().FullName() == "google.protobuf.Timestamp"
		}
		if o.Timestamp.Encoding == TimeRFC3339 {
			return fd.Kind() == protoreflect.StringKind
		}
		return isProtoInt(fd.Kind())
	}
	tsWant := "an integer or google.protobuf.Timestamp"
	if o.Timestamp.Encoding == TimeRFC3339 {
		tsWant = "a string or google.protobuf.Timestamp"
	}
	check(o.Timestamp.PosOf("field"), "timestamp", o.Timestamp.Field, ts, tsWant)
	key := func(fd protoreflect.FieldDescriptor) bool {
		return fd.Kind() == protoreflect.StringKind || isProtoInt(fd.Kind())
	}
	for _, k := range slices.Sorted(maps.Keys(o.Keys)) {
		check(o.PosOf("keys."+k), "keys."+k, o.Keys[k], key, "a string or an integer")
	}
	for _, f := range slices.Sorted(maps.Keys(o.Fields)) {
		t := o.Fields[f]
		check(o.PosOf("fields."+f), "fields."+f, f, func(fd protoreflect.FieldDescriptor) bool { return protoFits(fd, t) }, string(t))
	}
	check(o.PosOf("event_id_field"), "event_id_field", o.EventIDField, key, "a string or an integer")
}
