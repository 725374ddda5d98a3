package registry

import (
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/featurestore/featurestore/featurestore/derive"
)

// The definition kinds, as written in a document's "kind" field.
const (
	KindEntity         = "Entity"
	KindSource         = "Source"
	KindFeatureView    = "FeatureView"
	KindFeatureService = "FeatureService"
	// KindOnDemandFeatureView is written OnDemandFeatureView.
	KindOnDemandFeatureView = "OnDemandFeatureView"
)

// meta records where an object and each of its fields were defined. It is
// filled by the decoder and never part of the canonical form.
type meta struct {
	pos    Pos
	fields map[string]Pos
	bad    map[string]bool // fields that failed to decode
}

func (m *meta) setPos(p Pos, fields map[string]Pos, bad map[string]bool) {
	m.pos, m.fields, m.bad = p, fields, bad
}

// failed reports whether any of the named fields failed to decode, so that
// checks building on them stay quiet instead of repeating the error.
func (m *meta) failed(fields ...string) bool {
	for _, f := range fields {
		if m.bad[f] {
			return true
		}
	}
	return false
}

// keyField is the field map entry of the key of the map entry path, as
// decode records it: field names have no spaces, so no value's path is one.
func keyField(path string) string { return "key " + path }

// keyPosOf returns where the key of the map entry path (keys.card_id) was
// written, for errors about the key rather than its value.
func (m *meta) keyPosOf(path string) Pos {
	if p, ok := m.fields[keyField(path)]; ok {
		return p
	}
	return m.PosOf(path)
}

// Pos returns where the object was defined.
func (m *meta) Pos() Pos { return m.pos }

// PosOf returns where the named field was defined, or the object's position.
func (m *meta) PosOf(field string) Pos {
	if p, ok := m.fields[field]; ok {
		return p
	}
	return m.pos
}

// Entity is a thing features describe, identified by one or more join keys.
type Entity struct {
	meta        `json:"-"`
	Name        string    `yaml:"name" json:"name" required:"true" doc:"Unique name of the entity."`
	Description string    `yaml:"description" json:"description,omitempty" doc:"What the entity is."`
	JoinKeys    []JoinKey `yaml:"join_keys" json:"join_keys" required:"true" doc:"The keys that identify one entity, in order. More than one makes a composite key."`
}

// JoinKey is one component of an entity's key.
type JoinKey struct {
	meta `json:"-"`
	Name string  `yaml:"name" json:"name" required:"true" doc:"Name of the key, as lookups and entity tables name it."`
	Type KeyType `yaml:"type" json:"type" required:"true" doc:"Type of the key."`
}

// Source is a Kafka topic of events.
type Source struct {
	meta            `json:"-"`
	Name            string               `yaml:"name" json:"name" required:"true" doc:"Unique name of the source."`
	Description     string               `yaml:"description" json:"description,omitempty" doc:"What the events are."`
	Kafka           Kafka                `yaml:"kafka" json:"kafka" required:"true" doc:"Where the events are read from."`
	Format          Format               `yaml:"format" json:"format" default:"json" doc:"Encoding of the event payload."`
	Framing         Framing              `yaml:"framing" json:"framing,omitempty" default:"none" doc:"What surrounds the encoding in each Kafka message: none, or confluent, the Confluent Schema Registry wire format that Confluent's serializers write (a zero byte, the 4-byte schema id, for Protobuf the message indexes, then the encoding). The schema id is not looked up: format, and for Protobuf the declared message, decode every event, and the message indexes must name the declared message in its file. A message without the frame, or naming another message, is rejected as invalid_payload."`
	Protobuf        *Protobuf            `yaml:"protobuf" json:"protobuf,omitempty" doc:"How to decode Protobuf events; required when format is protobuf."`
	Timestamp       Timestamp            `yaml:"timestamp" json:"timestamp" required:"true" doc:"Which field carries the event time, and how."`
	Keys            map[string]string    `yaml:"keys" json:"keys" required:"true" doc:"Maps each join key the source provides to the event field that carries it (dot-separated path for nested fields)."`
	Fields          map[string]ValueType `yaml:"fields" json:"fields,omitempty" doc:"Event fields that features read, with their types (dot-separated paths for nested fields)."`
	EventIDField    string               `yaml:"event_id_field" json:"event_id_field,omitempty" doc:"Field with a unique event id (a string or a number). When set, an event with the id and the event time of an earlier event of the same partition still remembered (within the allowed lateness, at most dedup_max_ids of them; in a backfill file, the dedup_max_ids rows with an id before it) is dropped as a duplicate (result duplicate_id): the same event produced twice. Redelivered Kafka messages count once either way (offset fences)."`
	DedupMaxIDs     int                  `yaml:"dedup_max_ids" json:"dedup_max_ids,omitempty" default:"1000000" doc:"With event_id_field: the most events ingest remembers for dedup per partition, which bounds its memory (150 to 185 bytes of live heap plus the id each). When more events fall within the allowed lateness, the oldest remembered (by offset) are forgotten, so a copy arriving after more than this many newer events of its partition counts again. Replays and restarts decide the same either way. 1 to 100000000."`
	AllowedLateness Duration             `yaml:"allowed_lateness" json:"allowed_lateness" required:"true" missing:" (it was 0s when left out, before it was required: write 0s to keep rejecting every event older than the newest of its partition, or the disorder of your producers, such as 5m)" doc:"How far behind the newest event time of its Kafka partition (of any entity: events of several producers or keys interleave) an event may be and still be accepted; an older one is rejected as late. Required, so that no source rejects events out of order by a default: 0s accepts none, a few minutes suit most streams (5m in the examples). At most 3650d."`
	MaxFutureSkew   Duration             `yaml:"max_future_skew" json:"max_future_skew" default:"5m" doc:"How far an event's time may be ahead of its Kafka message's timestamp (the producer's CreateTime, even on a topic of LogAppendTime, which the Kafka client ingest uses does not read; for a backfill from files: of the backfill's clock) and still be accepted. A later event is rejected (reason future), so that one event from a wrong clock cannot move the partition's newest event time ahead and make the events after it late. An accepted event ahead of the clock is served as soon as it is applied by last values and lifetime aggregates, and by windows once the clock is in its tile (the interval a response reports still ends at the read time), though exports count it only from its event time on, and each view's ring of tiles in Redis holds this much more (memory of busy entities of views with small tiles grows with it): keep it small. Must be positive, and at most 3650d."`
}

// MaxDedupIDs returns the source's DedupMaxIDs, DefaultDedupMaxIDs when it
// sets none.
func (o *Source) MaxDedupIDs() int {
	if o.DedupMaxIDs <= 0 {
		return DefaultDedupMaxIDs
	}
	return o.DedupMaxIDs
}

// FutureSkew returns the source's MaxFutureSkew, DefaultMaxFutureSkew when
// it sets none.
func (o *Source) FutureSkew() time.Duration {
	if o.MaxFutureSkew <= 0 {
		return DefaultMaxFutureSkew.Std()
	}
	return o.MaxFutureSkew.Std()
}

// Reach is how far from the newest event time of a partition, and from the
// clock, the events the source accepts can fall: its allowed lateness
// behind, plus its future skew ahead. The online store sizes each view's
// ring of tiles and the life of its keys with it, so that an accepted event
// neither takes the slot of a tile still read nor expires before it is.
func (o *Source) Reach() time.Duration {
	return o.AllowedLateness.Std() + o.FutureSkew()
}

// Kafka says where a source's events are.
type Kafka struct {
	meta            `json:"-"`
	Topic           string   `yaml:"topic" json:"topic" required:"true" doc:"Topic to consume. It must exist: ingest creates no topic, and waits for a missing one."`
	Brokers         []string `yaml:"brokers" json:"brokers,omitempty" doc:"Bootstrap brokers (host:port, the port from 1 to 65535; an IPv6 host in brackets). Leave empty to use a named connection."`
	Connection      string   `yaml:"connection" json:"connection,omitempty" default:"default" doc:"Named connection, resolved to brokers by the process that reads the source, so that one set of definitions serves several environments. Not allowed together with brokers."`
	DeadLetterTopic string   `yaml:"dead_letter_topic" json:"dead_letter_topic,omitempty" doc:"Topic that receives events that cannot be used, with the reason and original position in headers. Create it beforehand, with the replication it needs: ingest warns when it does not exist; brokers that create topics create it at the first letter, and elsewhere the partition of the first rejected event stops until it exists."`
}

// Protobuf names the message type of Protobuf events.
type Protobuf struct {
	meta          `json:"-"`
	DescriptorSet string `yaml:"descriptor_set" json:"descriptor_set" required:"true" doc:"File descriptor set (protoc --descriptor_set_out / buf build -o) with the message type, relative to the YAML file."`
	Message       string `yaml:"message" json:"message" required:"true" doc:"Fully qualified message name, like fraud.v1.CardTransaction."`
	// Descriptor holds the descriptor set file's contents, read when the
	// definitions are loaded, so that a registry version is complete in
	// itself and a changed descriptor shows up in a plan.
	Descriptor []byte `yaml:"-" json:"descriptor,omitempty"`
}

// MessageDescriptor returns the message type the source's events have.
func (p *Protobuf) MessageDescriptor() (protoreflect.MessageDescriptor, error) {
	return messageDescriptor(p.Descriptor, p.DescriptorSet, p.Message)
}

// Timestamp says where an event's event time is.
type Timestamp struct {
	meta     `json:"-"`
	Field    string       `yaml:"field" json:"field" required:"true" doc:"Field with the event time (dot-separated path for nested fields)."`
	Encoding TimeEncoding `yaml:"encoding" json:"encoding" default:"rfc3339" doc:"How the event time is written."`
}

// FeatureView is a group of features of one entity computed from one source.
type FeatureView struct {
	meta        `json:"-"`
	Name        string            `yaml:"name" json:"name" required:"true" doc:"Unique name of the feature view; features are referenced as view:feature."`
	Description string            `yaml:"description" json:"description,omitempty" doc:"What the features describe."`
	Entity      string            `yaml:"entity" json:"entity" required:"true" doc:"Name of the entity the features belong to."`
	Source      string            `yaml:"source" json:"source" required:"true" doc:"Name of the source the features are computed from."`
	Tile        Duration          `yaml:"tile" json:"tile" default:"1m" doc:"Tile size: windows are built from epoch-aligned tiles of this length, and every window must be a multiple of it."`
	Rollup      Duration          `yaml:"rollup" json:"rollup,omitempty" doc:"Length of rollup tiles kept beside the tiles, a multiple of the tile at least twice as long and shorter than the longest window: a window read merges the rollup tiles it covers whole and the tiles at its two ends only, so a lookup of a day of minute tiles with a 1h rollup merges at most 142 tiles instead of 1,440. Values are the same with or without, bit for bit; ingest writes each entity's rollup tile beside its tile, and a busy entity's hash holds one rollup tile per rollup of its ring. For entities with events in most tiles of long windows (see the operations page). Zero (the default) keeps none."`
	TTL         Duration          `yaml:"ttl" json:"ttl,omitempty" doc:"Maximum age of a last value: older values are served and exported as expired. Zero means last values never expire."`
	Online      *bool             `yaml:"online" json:"online" default:"true" doc:"Whether the features are kept in the online store for lookups."`
	Offline     *bool             `yaml:"offline" json:"offline" default:"true" doc:"Whether accepted events are kept in the offline store for training exports."`
	Owner       string            `yaml:"owner" json:"owner,omitempty" doc:"Who answers for the view (a team or an address)."`
	Tags        map[string]string `yaml:"tags" json:"tags,omitempty" doc:"Free-form labels."`
	Features    []*Feature        `yaml:"features" json:"features" required:"true" doc:"The features of the view."`
}

// IsOnline reports whether the view is served online (the default).
func (v *FeatureView) IsOnline() bool { return v.Online == nil || *v.Online }

// IsOffline reports whether the view is logged offline (the default).
func (v *FeatureView) IsOffline() bool { return v.Offline == nil || *v.Offline }

// Feature returns the named feature of the view, or nil.
func (v *FeatureView) Feature(name string) *Feature {
	for _, f := range v.Features {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// Feature is one value computed for an entity: the last value of an event
// field, or an aggregation of the events in a window.
type Feature struct {
	meta        `json:"-"`
	Name        string       `yaml:"name" json:"name" required:"true" doc:"Name of the feature, unique in its view."`
	Description string       `yaml:"description" json:"description,omitempty" doc:"What the feature means."`
	Aggregation Aggregation  `yaml:"aggregation" json:"aggregation,omitempty" doc:"How events are combined. Without it the feature is the last value of field."`
	Field       string       `yaml:"field" json:"field,omitempty" doc:"Event field the feature reads; declared in the source's fields. Not used by count."`
	Type        ValueType    `yaml:"type" json:"type,omitempty" doc:"Type of a last-value feature; must match the field's declared type. Optional for aggregations, and checked against their output type when given."`
	Window      Window       `yaml:"window" json:"window,omitzero" doc:"Sliding window (a multiple of the view's tile) or lifetime. Required for aggregations; not allowed for last values."`
	N           int          `yaml:"n" json:"n,omitempty" doc:"How many values last_n keeps (1 to 1000)."`
	Precision   int          `yaml:"precision" json:"precision,omitempty" default:"14" doc:"HyperLogLog precision p of count_distinct (4 to 16): 2^p registers, relative standard error 1.04/sqrt(2^p), 0.81% at 14."`
	Filter      []*Condition `yaml:"filter" json:"filter,omitempty" doc:"Conditions an event must all meet to count towards the feature."`

	valueType ValueType
}

// ValueType is the type of the feature's served value.
func (f *Feature) ValueType() ValueType { return f.valueType }

// IsLastValue reports whether the feature is the last value of a field.
func (f *Feature) IsLastValue() bool { return f.Aggregation == AggNone }

// Condition is one test an event must pass for a filtered feature.
type Condition struct {
	meta  `json:"-"`
	Field string  `yaml:"field" json:"field" required:"true" doc:"Event field to test; declared in the source's fields."`
	Op    Op      `yaml:"op" json:"op" required:"true" doc:"Comparison."`
	Value Literal `yaml:"value" json:"value" required:"true" doc:"Value to compare with, of the field's type; a list for in and not_in."`
}

// OnDemandFeatureView is a group of features computed when they are asked
// for, by an expression over stored features (its inputs) and values the
// request supplies (its request fields). Nothing of it is stored: serving
// computes it at each lookup, export at each row, with the same code
// (package derive).
type OnDemandFeatureView struct {
	meta          `json:"-"`
	Name          string                `yaml:"name" json:"name" required:"true" doc:"Unique name of the view, among feature views too; features are referenced as view:feature."`
	Description   string                `yaml:"description" json:"description,omitempty" doc:"What the features describe."`
	Inputs        map[string]FeatureRef `yaml:"inputs" json:"inputs" required:"true" doc:"The stored features the expressions read, each under the variable name the expressions use: name: view:feature, of a feature view (not of another on-demand view). A lookup reads them for the entities of their views, so a request for the view's features names the join keys of every entity they come from."`
	RequestFields map[string]ValueType  `yaml:"request_fields" json:"request_fields,omitempty" doc:"Values each lookup supplies, with their types (string, int64, double or bool), under the variable names the expressions use: in a gRPC or HTTP lookup, the request's request_context (for all its entities); in an export, the entity table's columns of these names (one value per row)."`
	Owner         string                `yaml:"owner" json:"owner,omitempty" doc:"Who answers for the view (a team or an address)."`
	Tags          map[string]string     `yaml:"tags" json:"tags,omitempty" doc:"Free-form labels."`
	Features      []*OnDemandFeature    `yaml:"features" json:"features" required:"true" doc:"The features of the view."`

	vars []OnDemandVar
}

// OnDemandVar is a variable of an on-demand view's expressions: an input
// (Input set) or a request field.
type OnDemandVar struct {
	Name  string
	Type  ValueType
	Input *FeatureRef
}

// Vars returns the variables of the view's expressions: its inputs, then
// its request fields, each sorted by name. Compiled expressions index
// their values in this order.
func (v *OnDemandFeatureView) Vars() []OnDemandVar { return v.vars }

// Feature returns the named feature of the view, or nil.
func (v *OnDemandFeatureView) Feature(name string) *OnDemandFeature {
	for _, f := range v.Features {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// OnDemandFeature is one feature of an on-demand view: an expression.
type OnDemandFeature struct {
	meta        `json:"-"`
	Name        string    `yaml:"name" json:"name" required:"true" doc:"Name of the feature, unique in its view."`
	Description string    `yaml:"description" json:"description,omitempty" doc:"What the feature means."`
	Type        ValueType `yaml:"type" json:"type" required:"true" doc:"Type of the feature's value: string, int64, double or bool. An int64 expression may give a double feature."`
	Expression  string    `yaml:"expression" json:"expression" required:"true" doc:"How the value is computed, in the expr language over the view's inputs and request fields; see [On-demand expressions](#on-demand-expressions). The value is null when a variable the expression uses is null (a stored feature with no value, say), and when the run fails."`

	expr *derive.Expr
}

// Expr returns the compiled expression, over the view's Vars.
func (f *OnDemandFeature) Expr() *derive.Expr { return f.expr }

// FeatureService is the named set of features a model uses.
type FeatureService struct {
	meta        `json:"-"`
	Name        string            `yaml:"name" json:"name" required:"true" doc:"Unique name of the feature service."`
	Description string            `yaml:"description" json:"description,omitempty" doc:"What the model is."`
	Owner       string            `yaml:"owner" json:"owner,omitempty" doc:"Who answers for the service."`
	Tags        map[string]string `yaml:"tags" json:"tags,omitempty" doc:"Free-form labels."`
	Features    []FeatureRef      `yaml:"features" json:"features" required:"true" doc:"Feature references, view:feature, or view:* for every feature of a view."`

	resolved []FeatureRef
}

// Resolved returns the service's features with view:* expanded, in order,
// without repeats.
func (s *FeatureService) Resolved() []FeatureRef { return s.resolved }

// FeatureRef names a feature as view:feature.
type FeatureRef struct {
	View    string
	Feature string
}

// String renders view:feature.
func (r FeatureRef) String() string { return r.View + ":" + r.Feature }

// MarshalText renders view:feature.
func (r FeatureRef) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses view:feature.
func (r *FeatureRef) UnmarshalText(b []byte) error {
	ref, err := ParseFeatureRef(string(b))
	if err != nil {
		return err
	}
	*r = ref
	return nil
}
