package ingest

import (
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// jsonDecoder decodes JSON objects with a reused parser, so that steady-state
// decoding allocates only the strings it keeps.
type jsonDecoder struct {
	p        fastjson.Parser
	layout   Layout
	keys     [][]string // compiled paths
	fields   [][]string
	timePath []string
	timeEnc  registry.TimeEncoding
	idPath   []string
}

func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, ".")
}

func newJSONDecoder(src *registry.Source, l Layout) *jsonDecoder {
	d := &jsonDecoder{layout: l, timePath: splitPath(src.Timestamp.Field), timeEnc: src.Timestamp.Encoding, idPath: splitPath(src.EventIDField)}
	for _, k := range l.Keys {
		d.keys = append(d.keys, splitPath(k.Path))
	}
	for _, f := range l.Fields {
		d.fields = append(d.fields, splitPath(f.Path))
	}
	return d
}

func jsonKind(v *fastjson.Value) string {
	switch v.Type() {
	case fastjson.TypeObject:
		return "an object"
	case fastjson.TypeArray:
		return "an array"
	case fastjson.TypeString:
		return "a string"
	case fastjson.TypeNumber:
		return "a number"
	case fastjson.TypeTrue, fastjson.TypeFalse:
		return "a boolean"
	}
	return "null"
}

// Decode implements Decoder.
func (d *jsonDecoder) Decode(payload []byte, ev *Event) error {
	ev.reset(&d.layout)
	root, err := d.p.ParseBytes(payload)
	if err != nil {
		return reject(ReasonInvalidPayload, "invalid JSON: %v", err)
	}
	if root.Type() != fastjson.TypeObject {
		return reject(ReasonInvalidPayload, "expected a JSON object, got %s", jsonKind(root))
	}
	tv := root.Get(d.timePath...)
	if tv == nil || tv.Type() == fastjson.TypeNull {
		return reject(ReasonMissingTime, "no event time at %q", strings.Join(d.timePath, "."))
	}
	if ev.Time, err = jsonTime(tv, d.timeEnc); err != nil {
		return reject(ReasonBadTime, "event time at %q: %v", strings.Join(d.timePath, "."), err)
	}
	for i, path := range d.keys {
		v := root.Get(path...)
		if v == nil || v.Type() == fastjson.TypeNull {
			continue // a view that needs this key rejects the event
		}
		val, ok := jsonScalar(v, d.layout.Keys[i].Kind)
		if ok && !validUTF8(val) {
			return reject(ReasonInvalidPayload, "key %q at %q: the string is not valid UTF-8", d.layout.Keys[i].Name, d.layout.Keys[i].Path)
		}
		if !ok {
			return reject(ReasonWrongType, "key %q at %q: expected %s, got %s", d.layout.Keys[i].Name, d.layout.Keys[i].Path, d.layout.Keys[i].Kind, jsonKind(v))
		}
		if de := checkKey(&d.layout, i, val); de != nil {
			return de
		}
		ev.Keys[i] = val
	}
	for i, path := range d.fields {
		v := root.Get(path...)
		if v == nil || v.Type() == fastjson.TypeNull {
			continue
		}
		val, ok := jsonScalar(v, d.layout.Fields[i].Kind)
		if ok && !validUTF8(val) {
			return reject(ReasonInvalidPayload, "field %q: the string is not valid UTF-8", d.layout.Fields[i].Path)
		}
		if !ok {
			return reject(ReasonWrongType, "field %q: expected %s, got %s", d.layout.Fields[i].Path, d.layout.Fields[i].Kind, jsonKind(v))
		}
		ev.Fields[i] = val
	}
	if d.idPath != nil {
		if v := root.Get(d.idPath...); v != nil {
			switch v.Type() {
			case fastjson.TypeString:
				// An empty id is no id, as in Protobuf, where an unset
				// string reads as "".
				ev.ID = string(v.GetStringBytes())
				ev.HasID = ev.ID != ""
			case fastjson.TypeNumber:
				ev.ID, ev.HasID = string(v.MarshalTo(nil)), true
			case fastjson.TypeNull:
			default:
				return reject(ReasonWrongType, "event id at %q: expected a string or a number, got %s", strings.Join(d.idPath, "."), jsonKind(v))
			}
		}
	}
	return nil
}

// jsonScalar converts v to kind, strictly: a string is not a number, a
// fraction is not an int64, and a double is finite (the parser takes NaN,
// nan and inf as numbers; one of them would make every sum, mean and max
// over its window NaN). Strings are taken as they are: validUTF8 checks them.
func jsonScalar(v *fastjson.Value, kind featurestore.Kind) (featurestore.Value, bool) {
	switch kind {
	case featurestore.KindString:
		if v.Type() == fastjson.TypeString {
			return featurestore.StringValue(string(v.GetStringBytes())), true
		}
	case featurestore.KindInt64:
		if v.Type() == fastjson.TypeNumber {
			if i, err := v.Int64(); err == nil {
				return featurestore.Int64Value(i), true
			}
		}
	case featurestore.KindDouble:
		if v.Type() == fastjson.TypeNumber {
			if f, err := v.Float64(); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
				return featurestore.DoubleValue(f), true
			}
		}
	case featurestore.KindBool:
		switch v.Type() {
		case fastjson.TypeTrue:
			return featurestore.BoolValue(true), true
		case fastjson.TypeFalse:
			return featurestore.BoolValue(false), true
		}
	}
	return featurestore.Value{}, false
}

// validUTF8 tells whether a string value is valid UTF-8 (other values are).
// The JSON parser does not check strings, and one invalid string stored
// online would fail every lookup of its entity: Protobuf refuses to encode
// it, and so do Arrow readers of the offline log. Such an event is invalid.
func validUTF8(v featurestore.Value) bool {
	return v.Kind() != featurestore.KindString || utf8.ValidString(v.Str())
}

// Event times must fall in years 1..9999, which keeps millisecond arithmetic
// far from overflow.
var (
	minTimeMs = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	maxTimeMs = time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC).UnixMilli()
)

func jsonTime(v *fastjson.Value, enc registry.TimeEncoding) (int64, error) {
	if enc == registry.TimeRFC3339 || enc == "" {
		if v.Type() != fastjson.TypeString {
			return 0, errorf("expected an RFC 3339 string, got %s", jsonKind(v))
		}
		return parseRFC3339(string(v.GetStringBytes()))
	}
	if v.Type() != fastjson.TypeNumber {
		return 0, errorf("expected a number (%s), got %s", enc, jsonKind(v))
	}
	if i, err := v.Int64(); err == nil {
		return epochMillisInt(i, enc) // without making a string of it
	}
	raw := string(v.MarshalTo(nil))
	return epochMillis(raw, enc)
}

func parseRFC3339(s string) (int64, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, errorf("not RFC 3339: %q", s)
	}
	ms := t.UnixMilli()
	if ms < minTimeMs || ms > maxTimeMs {
		return 0, errorf("%q is out of range", s)
	}
	return ms, nil
}

// epochMillis converts an epoch number in the given unit to milliseconds,
// rounding down (towards earlier times).
func epochMillis(raw string, enc registry.TimeEncoding) (int64, error) {
	if i, err := strconv.ParseInt(raw, 10, 64); err == nil {
		return epochMillisInt(i, enc)
	}
	_, _, perUnit, err := epochUnit(enc)
	if err != nil {
		return 0, err
	}
	f, err := strconv.ParseFloat(raw, 64)
	if err != nil {
		return 0, errorf("invalid number %s", raw)
	}
	f = math.Floor(f * perUnit)
	if f > float64(maxTimeMs) || f < float64(minTimeMs) || math.IsNaN(f) {
		return 0, errorf("%s is out of range for %s", raw, enc)
	}
	return int64(f), nil
}

// epochMillisInt is epochMillis of an integer.
func epochMillisInt(i int64, enc registry.TimeEncoding) (int64, error) {
	mul, div, _, err := epochUnit(enc)
	if err != nil {
		return 0, err
	}
	if i > maxTimeMs/mul*div || i < minTimeMs/mul*div {
		return 0, errorf("%d is out of range for %s", i, enc)
	}
	ms := floorDiv(i*mul, div)
	if ms < minTimeMs || ms > maxTimeMs {
		return 0, errorf("%d is out of range for %s", i, enc)
	}
	return ms, nil
}

// epochUnit returns how to convert the unit of enc to milliseconds: times
// mul divided by div for integers, times perUnit for fractions.
func epochUnit(enc registry.TimeEncoding) (mul, div int64, perUnit float64, err error) {
	switch enc {
	case registry.TimeEpochS:
		return 1000, 1, 1000, nil
	case registry.TimeEpochMs:
		return 1, 1, 1, nil
	case registry.TimeEpochUs:
		return 1, 1000, 0.001, nil
	}
	return 0, 0, 0, errorf("unknown encoding %q", enc)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
