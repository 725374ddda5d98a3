package registry

import (
	"fmt"
	"slices"
	"strings"

	"github.com/featurestore/featurestore/featurestore"
)

// enum is implemented by the string types whose values come from a fixed set;
// the decoder, the JSON Schema and the reference page all read the set from it.
type enum interface {
	enumValues() []string
}

func checkEnum(kind, v string, allowed []string) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	return fmt.Errorf("unknown %s %q (one of: %s)", kind, v, strings.Join(allowed, ", "))
}

// ValueType is the type of an event field, a join key or a feature value.
type ValueType string

// The value types. Lists are produced by last_n only.
const (
	TypeString     ValueType = "string"
	TypeInt64      ValueType = "int64"
	TypeDouble     ValueType = "double"
	TypeBool       ValueType = "bool"
	TypeStringList ValueType = "string_list"
	TypeInt64List  ValueType = "int64_list"
	TypeDoubleList ValueType = "double_list"
	TypeBoolList   ValueType = "bool_list"
)

func (ValueType) enumValues() []string {
	return []string{"string", "int64", "double", "bool"}
}

// UnmarshalText accepts the scalar types an event field or feature may declare.
func (t *ValueType) UnmarshalText(b []byte) error {
	if err := checkEnum("type", string(b), t.enumValues()); err != nil {
		// Lists come out of last_n; they are valid in stored snapshots.
		if !strings.HasSuffix(string(b), "_list") || checkEnum("type", strings.TrimSuffix(string(b), "_list"), t.enumValues()) != nil {
			return err
		}
	}
	*t = ValueType(b)
	return nil
}

// ListOf returns the list type whose elements are t.
func (t ValueType) ListOf() ValueType { return t + "_list" }

// Kind returns the kind of the values of type t, KindNull for no type: the
// one mapping of types to kinds, which ingest, the window engine and
// on-demand expressions use.
func (t ValueType) Kind() featurestore.Kind {
	switch t {
	case TypeString:
		return featurestore.KindString
	case TypeInt64:
		return featurestore.KindInt64
	case TypeDouble:
		return featurestore.KindDouble
	case TypeBool:
		return featurestore.KindBool
	case TypeStringList:
		return featurestore.KindStringList
	case TypeInt64List:
		return featurestore.KindInt64List
	case TypeDoubleList:
		return featurestore.KindDoubleList
	case TypeBoolList:
		return featurestore.KindBoolList
	}
	return featurestore.KindNull
}

// Numeric reports whether arithmetic aggregations accept the type.
func (t ValueType) Numeric() bool { return t == TypeInt64 || t == TypeDouble }

// KeyType is the type of an entity's join key.
type KeyType string

// The join key types.
const (
	KeyString KeyType = "string"
	KeyInt64  KeyType = "int64"
)

func (KeyType) enumValues() []string { return []string{"string", "int64"} }

// UnmarshalText accepts string and int64.
func (t *KeyType) UnmarshalText(b []byte) error {
	if err := checkEnum("join key type", string(b), t.enumValues()); err != nil {
		return err
	}
	*t = KeyType(b)
	return nil
}

// Aggregation names how a feature combines the events of its window.
type Aggregation string

// The aggregations. An empty Aggregation is a last-value feature.
const (
	AggNone          Aggregation = ""
	AggCount         Aggregation = "count"
	AggSum           Aggregation = "sum"
	AggMean          Aggregation = "mean"
	AggMin           Aggregation = "min"
	AggMax           Aggregation = "max"
	AggLast          Aggregation = "last"
	AggLastN         Aggregation = "last_n"
	AggCountDistinct Aggregation = "count_distinct"
	AggStddev        Aggregation = "stddev"
)

func (Aggregation) enumValues() []string {
	return []string{"count", "sum", "mean", "min", "max", "last", "last_n", "count_distinct", "stddev"}
}

// UnmarshalText accepts the aggregation names.
func (a *Aggregation) UnmarshalText(b []byte) error {
	if err := checkEnum("aggregation", string(b), a.enumValues()); err != nil {
		return err
	}
	*a = Aggregation(b)
	return nil
}

// inputTypes lists the field types an aggregation accepts.
func (a Aggregation) inputTypes() []ValueType {
	switch a {
	case AggCount:
		return nil // count needs no field
	case AggSum, AggMean, AggMin, AggMax, AggStddev:
		return []ValueType{TypeInt64, TypeDouble}
	case AggCountDistinct:
		return []ValueType{TypeString, TypeInt64, TypeBool}
	default: // last, last_n, and last value
		return []ValueType{TypeString, TypeInt64, TypeDouble, TypeBool}
	}
}

// OutputType is the type of the value an aggregation of a field of type in
// produces.
func (a Aggregation) OutputType(in ValueType) ValueType {
	switch a {
	case AggCount, AggCountDistinct:
		return TypeInt64
	case AggMean, AggStddev:
		return TypeDouble
	case AggLastN:
		return in.ListOf()
	default: // sum, min, max, last, last value keep the field's type
		return in
	}
}

// Format is the encoding of a source's events.
type Format string

// The event formats.
const (
	FormatJSON     Format = "json"
	FormatProtobuf Format = "protobuf"
)

func (Format) enumValues() []string { return []string{"json", "protobuf"} }

// UnmarshalText accepts json and protobuf.
func (f *Format) UnmarshalText(b []byte) error {
	if err := checkEnum("format", string(b), f.enumValues()); err != nil {
		return err
	}
	*f = Format(b)
	return nil
}

// Framing is what surrounds a source's event encoding in a Kafka message.
type Framing string

// The framings.
const (
	FramingNone Framing = "none"
	// FramingConfluent is the Confluent Schema Registry wire format: a zero
	// byte, the schema id (4 bytes, big-endian), for Protobuf the message
	// indexes, then the encoding.
	FramingConfluent Framing = "confluent"
)

func (Framing) enumValues() []string { return []string{"none", "confluent"} }

// UnmarshalText accepts none and confluent.
func (f *Framing) UnmarshalText(b []byte) error {
	if err := checkEnum("framing", string(b), f.enumValues()); err != nil {
		return err
	}
	*f = Framing(b)
	return nil
}

// TimeEncoding is how an event carries its event time.
type TimeEncoding string

// The event time encodings.
const (
	TimeRFC3339 TimeEncoding = "rfc3339"
	TimeEpochS  TimeEncoding = "epoch_s"
	TimeEpochMs TimeEncoding = "epoch_ms"
	TimeEpochUs TimeEncoding = "epoch_us"
)

func (TimeEncoding) enumValues() []string {
	return []string{"rfc3339", "epoch_s", "epoch_ms", "epoch_us"}
}

// UnmarshalText accepts the encodings.
func (e *TimeEncoding) UnmarshalText(b []byte) error {
	if err := checkEnum("time encoding", string(b), e.enumValues()); err != nil {
		return err
	}
	*e = TimeEncoding(b)
	return nil
}

// Op is the comparison of a filter condition.
type Op string

// The filter operators.
const (
	OpEq    Op = "eq"
	OpNe    Op = "ne"
	OpGt    Op = "gt"
	OpGe    Op = "ge"
	OpLt    Op = "lt"
	OpLe    Op = "le"
	OpIn    Op = "in"
	OpNotIn Op = "not_in"
)

func (Op) enumValues() []string { return []string{"eq", "ne", "gt", "ge", "lt", "le", "in", "not_in"} }

// UnmarshalText accepts the operator names.
func (o *Op) UnmarshalText(b []byte) error {
	if err := checkEnum("operator", string(b), o.enumValues()); err != nil {
		return err
	}
	*o = Op(b)
	return nil
}

// ordered reports whether the operator compares by order.
func (o Op) ordered() bool { return o == OpGt || o == OpGe || o == OpLt || o == OpLe }

// set reports whether the operator takes a list of values.
func (o Op) set() bool { return o == OpIn || o == OpNotIn }
