package offline

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/cespare/xxhash/v2"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// The fixed columns of every log file, first and in this order.
const (
	ColEventTime  = "event_time"
	ColIngestTime = "ingest_time"
	ColTopic      = "topic"
	ColPartition  = "partition"
	ColOffset     = "offset"
)

// fixedColumns is the number of fixed columns before the join keys.
const fixedColumns = 5

// The schema metadata keys of every log file.
const (
	MetaProject    = "featurestore.project"
	MetaView       = "featurestore.view"
	MetaSource     = "featurestore.source"
	MetaLogVersion = "featurestore.log_version"
)

// LogVersion is the value of MetaLogVersion this package writes and reads.
const LogVersion = "1"

// KeyColumn is an entity join key column.
type KeyColumn struct {
	Name string
	Kind featurestore.KeyKind
}

// FieldColumn is a source field column.
type FieldColumn struct {
	Name string // the field path
	Kind featurestore.Kind
	// Index is the field's index in window.Event.Fields, as
	// window.SourceFields orders the source's fields.
	Index int
}

// Schema is the log layout of one feature view: its join key columns and
// the source fields its features and filters read.
type Schema struct {
	Project, View, Source string
	Keys                  []KeyColumn   // in the entity's order
	Fields                []FieldColumn // sorted by name
	arrow                 *arrow.Schema
	fingerprint           string
}

// NewSchema returns the log schema of the feature view named view in r. It
// fails when the view is not logged offline, or when a column name would be
// used twice.
func NewSchema(project string, r *registry.Registry, view string) (*Schema, error) {
	v := r.View(view)
	if v == nil {
		return nil, fmt.Errorf("offline log: no feature view %q", view)
	}
	if !v.IsOffline() {
		return nil, fmt.Errorf("offline log: feature view %q is not offline", view)
	}
	if err := checkSegment("project", project); err != nil {
		return nil, err
	}
	if err := checkSegment("feature view", view); err != nil {
		return nil, err
	}
	src := r.Source(v.Source)
	if src == nil {
		return nil, fmt.Errorf("offline log: feature view %q: no source %q", view, v.Source)
	}
	ent := r.Entity(v.Entity)
	if ent == nil {
		return nil, fmt.Errorf("offline log: feature view %q: no entity %q", view, v.Entity)
	}
	srcFields, err := window.SourceFields(src)
	if err != nil {
		return nil, fmt.Errorf("offline log: feature view %q: %w", view, err)
	}
	s := &Schema{Project: project, View: view, Source: src.Name}
	for _, k := range ent.JoinKeys {
		kind := featurestore.KeyString
		if k.Type == registry.KeyInt64 {
			kind = featurestore.KeyInt64
		}
		s.Keys = append(s.Keys, KeyColumn{Name: k.Name, Kind: kind})
	}
	var used []string
	for _, f := range v.Features {
		if f.Field != "" {
			used = append(used, f.Field)
		}
		for _, c := range f.Filter {
			used = append(used, c.Field)
		}
	}
	slices.Sort(used)
	for _, name := range slices.Compact(used) {
		i := slices.IndexFunc(srcFields, func(f window.Field) bool { return f.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("offline log: feature view %q: field %q is not declared by source %q", view, name, src.Name)
		}
		s.Fields = append(s.Fields, FieldColumn{Name: name, Kind: srcFields[i].Kind, Index: i})
	}
	if err := s.build(); err != nil {
		return nil, fmt.Errorf("offline log: feature view %q: %w", view, err)
	}
	return s, nil
}

// build makes the Arrow schema and its fingerprint.
func (s *Schema) build() error {
	ts := arrow.FixedWidthTypes.Timestamp_ms // timestamp[ms, tz=UTC]
	fields := []arrow.Field{
		{Name: ColEventTime, Type: ts},
		{Name: ColIngestTime, Type: ts},
		{Name: ColTopic, Type: arrow.BinaryTypes.String},
		{Name: ColPartition, Type: arrow.PrimitiveTypes.Int32},
		{Name: ColOffset, Type: arrow.PrimitiveTypes.Int64},
	}
	seen := map[string]string{}
	for _, f := range fields {
		seen[f.Name] = "a fixed column"
	}
	for _, k := range s.Keys {
		if what, dup := seen[k.Name]; dup {
			return fmt.Errorf("join key %q has the name of %s", k.Name, what)
		}
		seen[k.Name] = "a join key"
		t := arrow.DataType(arrow.BinaryTypes.String)
		if k.Kind == featurestore.KeyInt64 {
			t = arrow.PrimitiveTypes.Int64
		}
		fields = append(fields, arrow.Field{Name: k.Name, Type: t})
	}
	for _, f := range s.Fields {
		if what, dup := seen[f.Name]; dup {
			return fmt.Errorf("field %q has the name of %s", f.Name, what)
		}
		seen[f.Name] = "a field"
		t, ok := arrowType(f.Kind)
		if !ok {
			return fmt.Errorf("field %q: type %s cannot be logged", f.Name, f.Kind)
		}
		fields = append(fields, arrow.Field{Name: f.Name, Type: t, Nullable: true})
	}
	md := arrow.NewMetadata(
		[]string{MetaProject, MetaView, MetaSource, MetaLogVersion},
		[]string{s.Project, s.View, s.Source, LogVersion})
	s.arrow = arrow.NewSchema(fields, &md)
	s.fingerprint = schemaFingerprint(s.arrow)
	return nil
}

// arrowType is the column type of a field kind.
func arrowType(k featurestore.Kind) (arrow.DataType, bool) {
	switch k {
	case featurestore.KindString:
		return arrow.BinaryTypes.String, true
	case featurestore.KindInt64:
		return arrow.PrimitiveTypes.Int64, true
	case featurestore.KindDouble:
		return arrow.PrimitiveTypes.Float64, true
	case featurestore.KindBool:
		return arrow.FixedWidthTypes.Boolean, true
	}
	return nil, false
}

// Arrow returns the Arrow schema of the view's log files.
func (s *Schema) Arrow() *arrow.Schema { return s.arrow }

// Fingerprint identifies the columns: files with equal fingerprints can be
// concatenated.
func (s *Schema) Fingerprint() string { return s.fingerprint }

// schemaFingerprint hashes the column names, types and nullability, and the
// metadata.
func schemaFingerprint(s *arrow.Schema) string {
	d := xxhash.New()
	for _, f := range s.Fields() {
		_, _ = d.WriteString(f.Name)
		_, _ = d.WriteString("\x00" + f.Type.Fingerprint() + "\x00" + strconv.FormatBool(f.Nullable) + "\x00")
	}
	md := s.Metadata()
	for i, k := range md.Keys() {
		_, _ = d.WriteString(k + "\x00" + md.Values()[i] + "\x00")
	}
	return strconv.FormatUint(d.Sum64(), 16)
}
