package client

import (
	"fmt"
	"time"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// Status tells whether a Value holds a value, and if not, why. A model
// should treat every status but StatusPresent as missing.
type Status int

// The statuses, as in featurestore.v1.FeatureStatus.
const (
	// StatusUnspecified is never sent by a server; Result.Get gives it for
	// a feature the result does not have.
	StatusUnspecified Status = iota
	// StatusPresent: the value is set. Counts and sums over no events are
	// present, and 0.
	StatusPresent
	// StatusNotFound: no event for this entity, or none in the window of
	// an aggregation that has no value over no events (min, max, mean...).
	StatusNotFound
	// StatusExpired: the newest event of a last-value feature is older
	// than the feature view's TTL.
	StatusExpired
	// StatusNull: the newest event was found, but the field feeding the
	// feature was null or absent in it.
	StatusNull
	// StatusError: the server could not read this entity's state of the
	// feature's view (it does not decode), and logged why; every feature of
	// that view for that entity has this status, the other entities and
	// views of the lookup their values. Looking up again gives the same
	// until the state is written again: do not retry.
	StatusError
)

var statusNames = [...]string{"unspecified", "present", "not found", "expired", "null", "error"}

// String returns the status in words: "present", "not found", "expired",
// "null", "error" or "unspecified".
func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Value is the value of one feature for one entity, with its status and
// times. The typed accessors return the value and true when the value is
// present and of that type, and the zero value and false otherwise.
type Value struct {
	fv *pb.FeatureValue // in a response by rows
	// In a response by columns: element i of col.
	col *pb.FeatureColumn
	i   int
}

// Status tells whether the value is present, and if not, why.
func (v Value) Status() Status {
	if v.col != nil {
		return Status(v.col.GetStatuses()[v.i])
	}
	return Status(v.fv.GetStatus())
}

// Present reports whether the value is set (StatusPresent).
func (v Value) Present() bool {
	if c := v.col; c != nil && v.Status() == StatusPresent {
		switch c.GetType() {
		case pb.ValueType_VALUE_TYPE_STRING, pb.ValueType_VALUE_TYPE_INT64, pb.ValueType_VALUE_TYPE_DOUBLE, pb.ValueType_VALUE_TYPE_BOOL:
			return true
		}
	}
	return v.kind() != nil
}

// Any returns the value as a Go value: string, int64, float64, bool,
// []string, []int64, []float64 or []bool; nil when it is not present.
func (v Value) Any() any {
	if v.col != nil && v.Status() == StatusPresent {
		switch v.col.GetType() {
		case pb.ValueType_VALUE_TYPE_STRING:
			return v.col.GetStringValues()[v.i]
		case pb.ValueType_VALUE_TYPE_INT64:
			return v.col.GetInt64Values()[v.i]
		case pb.ValueType_VALUE_TYPE_DOUBLE:
			return v.col.GetDoubleValues()[v.i]
		case pb.ValueType_VALUE_TYPE_BOOL:
			return v.col.GetBoolValues()[v.i]
		}
	}
	switch k := v.kind().(type) {
	case *pb.Value_StringVal:
		return k.StringVal
	case *pb.Value_Int64Val:
		return k.Int64Val
	case *pb.Value_DoubleVal:
		return k.DoubleVal
	case *pb.Value_BoolVal:
		return k.BoolVal
	case *pb.Value_StringListVal:
		return k.StringListVal.GetVal()
	case *pb.Value_Int64ListVal:
		return k.Int64ListVal.GetVal()
	case *pb.Value_DoubleListVal:
		return k.DoubleListVal.GetVal()
	case *pb.Value_BoolListVal:
		return k.BoolListVal.GetVal()
	}
	return nil
}

// Int64Val returns the value of an int64 feature (counts, for example).
func (v Value) Int64Val() (int64, bool) {
	if v.col != nil {
		if v.colPresent(pb.ValueType_VALUE_TYPE_INT64) {
			return v.col.GetInt64Values()[v.i], true
		}
		return 0, false
	}
	if k, ok := v.kind().(*pb.Value_Int64Val); ok {
		return k.Int64Val, true
	}
	return 0, false
}

// DoubleVal returns the value of a double feature (sums and means of
// doubles, for example).
func (v Value) DoubleVal() (float64, bool) {
	if v.col != nil {
		if v.colPresent(pb.ValueType_VALUE_TYPE_DOUBLE) {
			return v.col.GetDoubleValues()[v.i], true
		}
		return 0, false
	}
	if k, ok := v.kind().(*pb.Value_DoubleVal); ok {
		return k.DoubleVal, true
	}
	return 0, false
}

// StringVal returns the value of a string feature.
func (v Value) StringVal() (string, bool) {
	if v.col != nil {
		if v.colPresent(pb.ValueType_VALUE_TYPE_STRING) {
			return v.col.GetStringValues()[v.i], true
		}
		return "", false
	}
	if k, ok := v.kind().(*pb.Value_StringVal); ok {
		return k.StringVal, true
	}
	return "", false
}

// BoolVal returns the value of a bool feature.
func (v Value) BoolVal() (bool, bool) {
	if v.col != nil {
		if v.colPresent(pb.ValueType_VALUE_TYPE_BOOL) {
			return v.col.GetBoolValues()[v.i], true
		}
		return false, false
	}
	if k, ok := v.kind().(*pb.Value_BoolVal); ok {
		return k.BoolVal, true
	}
	return false, false
}

// StringListVal returns the value of a string list feature (last_n of a
// string field, for example). The slice is shared: do not modify it.
func (v Value) StringListVal() ([]string, bool) {
	if k, ok := v.kind().(*pb.Value_StringListVal); ok {
		return k.StringListVal.GetVal(), true
	}
	return nil, false
}

// Int64ListVal returns the value of an int64 list feature. The slice is
// shared: do not modify it.
func (v Value) Int64ListVal() ([]int64, bool) {
	if k, ok := v.kind().(*pb.Value_Int64ListVal); ok {
		return k.Int64ListVal.GetVal(), true
	}
	return nil, false
}

// DoubleListVal returns the value of a double list feature. The slice is
// shared: do not modify it.
func (v Value) DoubleListVal() ([]float64, bool) {
	if k, ok := v.kind().(*pb.Value_DoubleListVal); ok {
		return k.DoubleListVal.GetVal(), true
	}
	return nil, false
}

// BoolListVal returns the value of a bool list feature. The slice is
// shared: do not modify it.
func (v Value) BoolListVal() ([]bool, bool) {
	if k, ok := v.kind().(*pb.Value_BoolListVal); ok {
		return k.BoolListVal.GetVal(), true
	}
	return nil, false
}

// colPresent reports whether the value, in a response by columns, is
// present and of type t.
func (v Value) colPresent(t pb.ValueType) bool {
	return v.col.GetType() == t && v.col.GetStatuses()[v.i] == pb.FeatureStatus_FEATURE_STATUS_PRESENT
}

// kind is the wire value when present, else nil; in a response by columns,
// that of a list only (the scalar accessors and Any read scalars there).
func (v Value) kind() any {
	if v.Status() != StatusPresent {
		return nil
	}
	if c := v.col; c != nil {
		switch c.GetType() {
		case pb.ValueType_VALUE_TYPE_STRING_LIST, pb.ValueType_VALUE_TYPE_INT64_LIST, pb.ValueType_VALUE_TYPE_DOUBLE_LIST, pb.ValueType_VALUE_TYPE_BOOL_LIST:
			return c.GetListValues()[v.i].GetKind()
		}
		return nil // scalars: read by the accessors
	}
	return v.fv.GetValue().GetKind()
}

// EventTime returns the event time the value comes from: for a last-value
// feature, that of the event found (even when expired or null); for an
// aggregation, the greatest among the events aggregated. ok is false when
// no event is involved.
func (v Value) EventTime() (t time.Time, ok bool) {
	if c := v.col; c != nil {
		if len(c.GetHasEventTime()) == 0 || !c.GetHasEventTime()[v.i] {
			return time.Time{}, false
		}
		return time.UnixMilli(c.GetEventTimesUnixMs()[v.i]).UTC(), true
	}
	ts := v.fv.GetEventTime()
	if ts == nil {
		return time.Time{}, false
	}
	return ts.AsTime(), true
}

// Window returns, for a windowed feature, the interval of event time its
// value aggregates: the events with event time e, start <= e < end, plus
// those stamped ahead of the read time in its tile, which a source's
// max_future_skew admits (FeatureValue.window in serving.proto). ok is false
// for last-value features and lifetime aggregations.
func (v Value) Window() (start, end time.Time, ok bool) {
	w := v.fv.GetWindow()
	if v.col != nil {
		w = v.col.GetWindow()
	}
	if w == nil {
		return time.Time{}, time.Time{}, false
	}
	return w.GetStart().AsTime(), w.GetEnd().AsTime(), true
}

// String formats the value for logs and debugging: the value itself when
// present (strings quoted), else its status.
func (v Value) String() string {
	switch x := v.Any().(type) {
	case nil:
		return v.Status().String()
	case string:
		return fmt.Sprintf("%q", x)
	case []string:
		return fmt.Sprintf("%q", x)
	default:
		return fmt.Sprint(x)
	}
}
