package serving

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// appendResponseJSON appends resp in the proto3 JSON mapping with proto
// field names, as protojson.MarshalOptions{UseProtoNames: true} writes it
// (up to white space, which protojson varies on purpose), but without
// reflection: protojson made nearly 9 allocations in 10 of an HTTP lookup,
// about 19 per feature value. It fails where protojson fails: a string
// that is not UTF-8, a time outside years 1 to 9999.
//
// TestResponseJSON checks it against protojson on random responses; a
// field added to the response messages must be added here too, and to the
// generator of that test.
func appendResponseJSON(b []byte, resp *pb.GetOnlineFeaturesResponse) ([]byte, error) {
	var err error
	o := jsonObject{b: append(b, '{')}
	if names := resp.GetFeatureNames(); len(names) > 0 {
		o.key("feature_names")
		if o.b, err = appendJSONArray(o.b, names, appendJSONString); err != nil {
			return nil, err
		}
	}
	if results := resp.GetResults(); len(results) > 0 {
		o.key("results")
		if o.b, err = appendJSONArray(o.b, results, appendEntityResult); err != nil {
			return nil, err
		}
	}
	if t := resp.GetReadTime(); t != nil {
		o.key("read_time")
		if o.b, err = appendJSONTime(o.b, t); err != nil {
			return nil, err
		}
	}
	if v := resp.GetRegistryVersion(); v != 0 {
		o.key("registry_version")
		o.b = appendJSONInt64(o.b, v)
	}
	// protojson writes fields in declaration order, which here is also
	// field number order.
	if cols := resp.GetColumns(); len(cols) > 0 {
		o.key("columns")
		if o.b, err = appendJSONArray(o.b, cols, appendFeatureColumn); err != nil {
			return nil, err
		}
	}
	return append(o.b, '}'), nil
}

// jsonObject writes the members of a JSON object, commas between them.
type jsonObject struct {
	b []byte
	n int
}

func (o *jsonObject) key(name string) {
	if o.n > 0 {
		o.b = append(o.b, ',')
	}
	o.n++
	o.b = append(o.b, '"')
	o.b = append(o.b, name...)
	o.b = append(o.b, '"', ':')
}

func appendEntityResult(b []byte, r *pb.EntityResult) ([]byte, error) {
	var err error
	o := jsonObject{b: append(b, '{')}
	if vals := r.GetValues(); len(vals) > 0 {
		o.key("values")
		if o.b, err = appendJSONArray(o.b, vals, appendFeatureValue); err != nil {
			return nil, err
		}
	}
	return append(o.b, '}'), nil
}

func appendFeatureValue(b []byte, fv *pb.FeatureValue) ([]byte, error) {
	var err error
	o := jsonObject{b: append(b, '{')}
	if v := fv.GetValue(); v != nil {
		o.key("value")
		if o.b, err = appendValue(o.b, v); err != nil {
			return nil, err
		}
	}
	if s := fv.GetStatus(); s != 0 {
		o.key("status")
		o.b = appendJSONEnum(o.b, int32(s), pb.FeatureStatus_name)
	}
	if t := fv.GetEventTime(); t != nil {
		o.key("event_time")
		if o.b, err = appendJSONTime(o.b, t); err != nil {
			return nil, err
		}
	}
	if w := fv.GetWindow(); w != nil {
		o.key("window")
		if o.b, err = appendInterval(o.b, w); err != nil {
			return nil, err
		}
	}
	return append(o.b, '}'), nil
}

// appendFeatureColumn writes the arrays as they are, whatever type says:
// like protojson it mirrors the message and does not check it.
func appendFeatureColumn(b []byte, c *pb.FeatureColumn) ([]byte, error) {
	var err error
	o := jsonObject{b: append(b, '{')}
	if t := c.GetType(); t != 0 {
		o.key("type")
		o.b = appendJSONEnum(o.b, int32(t), pb.ValueType_name)
	}
	if s := c.GetStatuses(); len(s) > 0 {
		o.key("statuses")
		o.b, _ = appendJSONArray(o.b, s, appendJSONFeatureStatus)
	}
	if v := c.GetStringValues(); len(v) > 0 {
		o.key("string_values")
		if o.b, err = appendJSONArray(o.b, v, appendJSONString); err != nil {
			return nil, err
		}
	}
	if v := c.GetInt64Values(); len(v) > 0 {
		o.key("int64_values")
		o.b, _ = appendJSONArray(o.b, v, appendJSONInt64Elem)
	}
	if v := c.GetDoubleValues(); len(v) > 0 {
		o.key("double_values")
		o.b, _ = appendJSONArray(o.b, v, appendJSONDoubleElem)
	}
	if v := c.GetBoolValues(); len(v) > 0 {
		o.key("bool_values")
		o.b, _ = appendJSONArray(o.b, v, appendJSONBoolElem)
	}
	if v := c.GetListValues(); len(v) > 0 {
		o.key("list_values")
		if o.b, err = appendJSONArray(o.b, v, appendValue); err != nil {
			return nil, err
		}
	}
	if v := c.GetHasEventTime(); len(v) > 0 {
		o.key("has_event_time")
		o.b, _ = appendJSONArray(o.b, v, appendJSONBoolElem)
	}
	if v := c.GetEventTimesUnixMs(); len(v) > 0 {
		o.key("event_times_unix_ms")
		o.b, _ = appendJSONArray(o.b, v, appendJSONInt64Elem)
	}
	if w := c.GetWindow(); w != nil {
		o.key("window")
		if o.b, err = appendInterval(o.b, w); err != nil {
			return nil, err
		}
	}
	return append(o.b, '}'), nil
}

func appendInterval(b []byte, w *pb.Interval) ([]byte, error) {
	var err error
	o := jsonObject{b: append(b, '{')}
	if t := w.GetStart(); t != nil {
		o.key("start")
		if o.b, err = appendJSONTime(o.b, t); err != nil {
			return nil, err
		}
	}
	if t := w.GetEnd(); t != nil {
		o.key("end")
		if o.b, err = appendJSONTime(o.b, t); err != nil {
			return nil, err
		}
	}
	return append(o.b, '}'), nil
}

func appendValue(b []byte, v *pb.Value) ([]byte, error) {
	var err error
	b = append(b, '{')
	switch k := v.GetKind().(type) {
	case *pb.Value_StringVal:
		b = append(b, `"string_val":`...)
		if b, err = appendJSONString(b, k.StringVal); err != nil {
			return nil, err
		}
	case *pb.Value_Int64Val:
		b = append(b, `"int64_val":`...)
		b = appendJSONInt64(b, k.Int64Val)
	case *pb.Value_DoubleVal:
		b = append(b, `"double_val":`...)
		b = appendJSONDouble(b, k.DoubleVal)
	case *pb.Value_BoolVal:
		b = append(b, `"bool_val":`...)
		b = strconv.AppendBool(b, k.BoolVal)
	case *pb.Value_StringListVal:
		b = append(b, `"string_list_val":`...)
		if b, err = appendList(b, k.StringListVal.GetVal(), appendJSONString); err != nil {
			return nil, err
		}
	case *pb.Value_Int64ListVal:
		b = append(b, `"int64_list_val":`...)
		b, _ = appendList(b, k.Int64ListVal.GetVal(), appendJSONInt64Elem)
	case *pb.Value_DoubleListVal:
		b = append(b, `"double_list_val":`...)
		b, _ = appendList(b, k.DoubleListVal.GetVal(), appendJSONDoubleElem)
	case *pb.Value_BoolListVal:
		b = append(b, `"bool_list_val":`...)
		b, _ = appendList(b, k.BoolListVal.GetVal(), appendJSONBoolElem)
	}
	return append(b, '}'), nil
}

// appendList appends a StringList, Int64List, DoubleList or BoolList
// message: {"val":[...]}, or {} when empty.
func appendList[T any](b []byte, vals []T, elem func([]byte, T) ([]byte, error)) ([]byte, error) {
	if len(vals) == 0 {
		return append(b, '{', '}'), nil
	}
	b, err := appendJSONArray(append(b, `{"val":`...), vals, elem)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// appendJSONArray appends vals as a JSON array, each element written by
// elem.
func appendJSONArray[T any](b []byte, vals []T, elem func([]byte, T) ([]byte, error)) ([]byte, error) {
	b = append(b, '[')
	var err error
	for i, x := range vals {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = elem(b, x); err != nil {
			return nil, err
		}
	}
	return append(b, ']'), nil
}

// appendJSONEnum appends an enum value by its name, or by its number when
// it has none (a value from a newer schema), as protojson does.
func appendJSONEnum(b []byte, n int32, names map[int32]string) []byte {
	name, ok := names[n]
	if !ok {
		return strconv.AppendInt(b, int64(n), 10)
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"')
}

// Element writers for appendJSONArray, which cannot fail.

func appendJSONFeatureStatus(b []byte, s pb.FeatureStatus) ([]byte, error) {
	return appendJSONEnum(b, int32(s), pb.FeatureStatus_name), nil
}

func appendJSONInt64Elem(b []byte, n int64) ([]byte, error) { return appendJSONInt64(b, n), nil }

func appendJSONDoubleElem(b []byte, x float64) ([]byte, error) { return appendJSONDouble(b, x), nil }

func appendJSONBoolElem(b []byte, x bool) ([]byte, error) { return strconv.AppendBool(b, x), nil }

// appendJSONInt64 appends an int64 as the mapping wants it: a decimal
// string, since JSON numbers lose precision past 2^53 in many readers.
func appendJSONInt64(b []byte, n int64) []byte {
	b = append(b, '"')
	b = strconv.AppendInt(b, n, 10)
	return append(b, '"')
}

// appendJSONDouble appends a double as protojson does: NaN and infinities
// as strings, exponent form below 1e-6 and from 1e21.
func appendJSONDouble(b []byte, x float64) []byte {
	switch {
	case math.IsNaN(x):
		return append(b, `"NaN"`...)
	case math.IsInf(x, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(x, -1):
		return append(b, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(x); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, x, format, -1, 64)
	if format == 'e' {
		// 1e-07 becomes 1e-7.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

// appendJSONString appends s quoted, escaping what JSON requires and
// nothing more, as protojson does.
func appendJSONString(b []byte, s string) ([]byte, error) {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				return nil, errInvalidUTF8
			}
			i += n
			continue
		}
		if c >= ' ' && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, '\\')
		switch c {
		case '"', '\\':
			b = append(b, c)
		case '\b':
			b = append(b, 'b')
		case '\f':
			b = append(b, 'f')
		case '\n':
			b = append(b, 'n')
		case '\r':
			b = append(b, 'r')
		case '\t':
			b = append(b, 't')
		default:
			b = append(b, 'u')
			b = append(b, "0000"[1+(bits.Len32(uint32(c))-1)/4:]...)
			b = strconv.AppendUint(b, uint64(c), 16)
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"'), nil
}

// Bounds of google.protobuf.Timestamp in the JSON mapping: years 1 to 9999.
const (
	minJSONSeconds = -62135596800
	maxJSONSeconds = 253402300799
)

// appendJSONTime appends a timestamp in RFC 3339, UTC, with 0, 3, 6 or 9
// fractional digits.
func appendJSONTime(b []byte, ts *timestamppb.Timestamp) ([]byte, error) {
	secs, nanos := ts.GetSeconds(), ts.GetNanos()
	if secs < minJSONSeconds || secs > maxJSONSeconds {
		return nil, fmt.Errorf("google.protobuf.Timestamp: seconds out of range %d", secs)
	}
	if nanos < 0 || nanos > 999999999 {
		return nil, fmt.Errorf("google.protobuf.Timestamp: nanos out of range %d", nanos)
	}
	b = append(b, '"')
	b = time.Unix(secs, int64(nanos)).UTC().AppendFormat(b, "2006-01-02T15:04:05.000000000")
	for range 2 {
		if n := len(b); string(b[n-3:]) == "000" {
			b = b[:n-3]
		}
	}
	if n := len(b); string(b[n-4:]) == ".000" {
		b = b[:n-4]
	}
	return append(b, 'Z', '"'), nil
}
