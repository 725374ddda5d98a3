package ingest

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

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

	// scratch holds the raw text of a number or of a string being checked.
	scratch []byte
	// escapes is whether the payload has a backslash, so that strings need
	// their escapes checked; checked lists the values already checked.
	escapes bool
	checked []*fastjson.Value
}

// maxScratch bounds the scratch buffer kept between events.
const maxScratch = 4096

func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, ".")
}

func newJSONDecoder(src *registry.Source, l Layout) *jsonDecoder {
	d := &jsonDecoder{layout: l, timePath: splitPath(src.Timestamp.Field), timeEnc: src.Timestamp.Encoding, idPath: splitPath(src.EventIDField), scratch: make([]byte, 0, 64)}
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
	if len(payload) == 0 {
		// A tombstone (a null value, on a compacted or CDC topic) or an
		// empty message: said as such, not as a parse error.
		return reject(ReasonInvalidPayload, "no value (a tombstone or an empty message)")
	}
	root, err := d.p.ParseBytes(payload)
	if err != nil {
		return reject(ReasonInvalidPayload, "invalid JSON: %v", err)
	}
	if root.Type() != fastjson.TypeObject {
		return reject(ReasonInvalidPayload, "expected a JSON object, got %s", jsonKind(root))
	}
	// The parser unescapes strings best effort: a bad escape or a lone
	// surrogate would come out as garbled text. Strings are checked before
	// they are first read, only when the payload has a backslash at all.
	d.escapes = bytes.IndexByte(payload, '\\') >= 0
	d.checked = d.checked[:0]
	tv := root.Get(d.timePath...)
	if d.escapes && !d.escapesOK(tv) {
		return reject(ReasonInvalidPayload, "event time at %q: %s", strings.Join(d.timePath, "."), errBadEscape)
	}
	if !d.numberOK(tv) {
		return reject(ReasonInvalidPayload, "event time at %q: %s", strings.Join(d.timePath, "."), d.badNumber(tv))
	}
	if tv == nil || tv.Type() == fastjson.TypeNull {
		return reject(ReasonMissingTime, "no event time at %q", strings.Join(d.timePath, "."))
	}
	if ev.Time, err = d.jsonTime(tv); err != nil {
		return reject(ReasonBadTime, "event time at %q: %v", strings.Join(d.timePath, "."), err)
	}
	for i, path := range d.keys {
		v := root.Get(path...)
		if d.escapes && !d.escapesOK(v) {
			return reject(ReasonInvalidPayload, "key %q at %q: %s", d.layout.Keys[i].Name, d.layout.Keys[i].Path, errBadEscape)
		}
		if !d.numberOK(v) {
			return reject(ReasonInvalidPayload, "key %q at %q: %s", d.layout.Keys[i].Name, d.layout.Keys[i].Path, d.badNumber(v))
		}
		if v == nil || v.Type() == fastjson.TypeNull {
			continue // a view that needs this key rejects the event
		}
		val, ok := d.jsonScalar(v, d.layout.Keys[i].Kind)
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
		if d.escapes && !d.escapesOK(v) {
			return reject(ReasonInvalidPayload, "field %q: %s", d.layout.Fields[i].Path, errBadEscape)
		}
		if !d.numberOK(v) {
			return reject(ReasonInvalidPayload, "field %q: %s", d.layout.Fields[i].Path, d.badNumber(v))
		}
		if v == nil || v.Type() == fastjson.TypeNull {
			continue
		}
		val, ok := d.jsonScalar(v, d.layout.Fields[i].Kind)
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
			if d.escapes && !d.escapesOK(v) {
				return reject(ReasonInvalidPayload, "event id at %q: %s", strings.Join(d.idPath, "."), errBadEscape)
			}
			if !d.numberOK(v) {
				return reject(ReasonInvalidPayload, "event id at %q: %s", strings.Join(d.idPath, "."), d.badNumber(v))
			}
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

const errBadEscape = "the string has an invalid escape or a lone surrogate"

// escapesOK tells whether v, if it is a string, has only valid escapes;
// callers skip it for payloads without a backslash (d.escapes false). It
// must run before anything reads v: reading a string makes the parser
// unescape it in place, which destroys its raw text. A value reached twice
// (two paths to it) is checked once.
func (d *jsonDecoder) escapesOK(v *fastjson.Value) bool {
	if v == nil {
		return true
	}
	if v.GetObject() != nil || len(v.GetArray()) > 0 {
		return true // not a string; these tests do not unescape v
	}
	for _, c := range d.checked {
		if c == v {
			return true
		}
	}
	d.checked = append(d.checked, v)
	// MarshalTo writes a string not yet read as it is in the payload.
	raw := v.MarshalTo(d.scratch[:0])
	if cap(raw) <= maxScratch {
		d.scratch = raw[:0]
	}
	if len(raw) < 2 || raw[0] != '"' {
		return true
	}
	return validEscapes(raw[1 : len(raw)-1])
}

// validEscapes tells whether the escapes of the raw JSON string s (without
// its quotes) are all valid: \" \\ \/ \b \f \n \r \t and \uXXXX, where a
// surrogate must be a high one followed by an escaped low one.
func validEscapes(s []byte) bool {
	for i := bytes.IndexByte(s, '\\'); i >= 0 && i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		i++
		if i == len(s) {
			return false
		}
		switch s[i] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		case 'u':
			r, ok := hex4(s[i+1:])
			if !ok {
				return false
			}
			i += 4
			switch {
			case r >= 0xdc00 && r <= 0xdfff:
				return false // a low surrogate first
			case r >= 0xd800 && r <= 0xdbff:
				if len(s) < i+7 || s[i+1] != '\\' || s[i+2] != 'u' {
					return false
				}
				if lo, ok := hex4(s[i+3:]); !ok || lo < 0xdc00 || lo > 0xdfff {
					return false
				}
				i += 6
			}
		default:
			return false
		}
	}
	return true
}

// hex4 returns the value of the 4 hex digits that s starts with.
func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// numberOK tells whether v, if it is a number, is written as JSON writes
// numbers: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?. The parser takes
// more: leading zeros (05, which other readers of the same topic take as
// an error, or as octal), a leading '+' or '.', a trailing '.' or 'e'.
// NaN and infinities are left to the type checks, which refuse them as
// wrong_type (docs/operations.md).
func (d *jsonDecoder) numberOK(v *fastjson.Value) bool {
	if v == nil || v.Type() != fastjson.TypeNumber {
		return true
	}
	return jsonNumber(d.numberText(v))
}

// badNumber says why the number v is not one (numberOK false).
func (d *jsonDecoder) badNumber(v *fastjson.Value) string {
	return fmt.Sprintf("%s is not a JSON number", d.numberText(v))
}

// jsonNumber tells whether s follows JSON's number grammar (RFC 8259,
// section 6), or names NaN or an infinity (see numberOK).
func jsonNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - start
	}
	switch {
	case i < len(s) && (s[i] == 'n' || s[i] == 'N' || s[i] == 'i' || s[i] == 'I'):
		return true
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// numberText returns the raw text of the number v, in the scratch buffer:
// valid until the next use of the buffer.
func (d *jsonDecoder) numberText(v *fastjson.Value) string {
	b := v.MarshalTo(d.scratch[:0])
	if cap(b) <= maxScratch {
		d.scratch = b[:0]
	}
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// jsonFloat returns the double of the number v, correctly rounded as
// strconv.ParseFloat has it (the parser's own conversion is off by an ulp
// for many numbers with exponents), and false for a number that is not a
// finite double. A leading '+', which JSON does not allow, stays refused.
func (d *jsonDecoder) jsonFloat(v *fastjson.Value) (float64, bool) {
	s := d.numberText(v)
	if s == "" || s[0] == '+' {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// jsonScalar converts v to kind, strictly: a string is not a number, a
// fraction is not an int64, and a double is finite (the parser takes NaN,
// nan and inf as numbers; one of them would make every sum, mean and max
// over its window NaN). Strings are taken as they are: validUTF8 checks them.
func (d *jsonDecoder) jsonScalar(v *fastjson.Value, kind featurestore.Kind) (featurestore.Value, bool) {
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
			if f, ok := d.jsonFloat(v); ok {
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
const (
	minTimeMs = featurestore.MinTimeMs
	maxTimeMs = featurestore.MaxTimeMs
)

func (d *jsonDecoder) jsonTime(v *fastjson.Value) (int64, error) {
	enc := d.timeEnc
	if enc == registry.TimeRFC3339 || enc == "" {
		if v.Type() != fastjson.TypeString {
			return 0, errorf("expected an RFC 3339 string, got %s", jsonKind(v))
		}
		// Without copying: parseRFC3339 keeps no reference to its text.
		b := v.GetStringBytes()
		if len(b) == 0 {
			return parseRFC3339("")
		}
		return parseRFC3339(unsafe.String(&b[0], len(b)))
	}
	if v.Type() != fastjson.TypeNumber {
		return 0, errorf("expected a number (%s), got %s", enc, jsonKind(v))
	}
	return epochMillis(d.numberText(v), enc)
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

// epochMillis converts an epoch number in the given unit, as text (JSON,
// CSV, or a float column's shortest representation), to milliseconds,
// rounding down (towards earlier times). A decimal is converted exactly
// from its digits: through a float64, 1.001 s would come out as 1000 ms.
func epochMillis(raw string, enc registry.TimeEncoding) (int64, error) {
	_, _, shift, err := epochUnit(enc)
	if err != nil {
		return 0, err
	}
	ms, ok, inRange := decimalMillis(raw, shift)
	if !ok {
		// Not a plain decimal: what else ParseFloat takes (Inf, NaN, hex
		// floats) is taken as its float64.
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return 0, errorf("invalid number %s", raw)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, errorf("%s is out of range for %s", raw, enc)
		}
		return epochMillisFloat(f, enc)
	}
	if !inRange {
		return 0, errorf("%s is out of range for %s", raw, enc)
	}
	return ms, nil
}

// epochMillisFloat is epochMillis of a float64 that has no text (a float
// column): of its shortest decimal representation, the number people wrote
// and read, not of its binary value (1.001 is 1.000999999999999889 in
// binary, which would round down to 1000 ms).
func epochMillisFloat(f float64, enc registry.TimeEncoding) (int64, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errorf("%v is out of range for %s", f, enc)
	}
	_, _, shift, err := epochUnit(enc)
	if err != nil {
		return 0, err
	}
	var buf [32]byte
	b := strconv.AppendFloat(buf[:0], f, 'e', -1, 64)
	ms, ok, inRange := decimalMillis(unsafe.String(&b[0], len(b)), shift)
	if !ok || !inRange {
		return 0, errorf("%v is out of range for %s", f, enc)
	}
	return ms, nil
}

// decimalMillis returns floor(s × 10^shift) for a decimal s: an optional
// sign, digits with an optional point (at least one digit), an optional
// exponent. ok is false if s is not such a decimal, inRange false if the
// result is outside [minTimeMs, maxTimeMs].
func decimalMillis(s string, shift int) (ms int64, ok, inRange bool) {
	i := 0
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	intDigits := s[start:i]
	var fracDigits string
	if i < len(s) && s[i] == '.' {
		i++
		start = i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		fracDigits = s[start:i]
	}
	if len(intDigits)+len(fracDigits) == 0 {
		return 0, false, false
	}
	exp := 0
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		expNeg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			expNeg = s[i] == '-'
			i++
		}
		start = i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if exp < 1e8 { // saturates far beyond any payload's length
				exp = exp*10 + int(s[i]-'0')
			}
			i++
		}
		if i == start {
			return 0, false, false
		}
		if expNeg {
			exp = -exp
		}
	}
	if i != len(s) {
		return 0, false, false
	}
	// The value is 0.d1d2…dn × 10^point, with d the digits of intDigits
	// then fracDigits: its integer part is the first point digits.
	n := len(intDigits) + len(fracDigits)
	point := len(intDigits) + exp + shift
	const limit = 1e16 // beyond any time in range
	var acc int64
	frac := false
	for k := range n {
		var c byte
		if k < len(intDigits) {
			c = intDigits[k]
		} else {
			c = fracDigits[k-len(intDigits)]
		}
		if k < point {
			acc = acc*10 + int64(c-'0')
			if acc > limit {
				return 0, true, false
			}
		} else if c != '0' {
			frac = true
			break
		}
	}
	for k := n; k < point && acc != 0; k++ {
		acc *= 10
		if acc > limit {
			return 0, true, false
		}
	}
	ms = acc
	if neg {
		ms = -ms
		if frac {
			ms-- // floor
		}
	}
	return ms, true, ms >= minTimeMs && ms <= maxTimeMs
}

// epochMillisInt is epochMillis of an integer.
func epochMillisInt(i int64, enc registry.TimeEncoding) (int64, error) {
	mul, div, _, err := epochUnit(enc)
	if err != nil {
		return 0, err
	}
	// Every i with floor(i × mul / div) in range, and no more: i × mul
	// must not pass maxTimeMs × div + div - 1, nor fall below
	// minTimeMs × div. (Go's division truncates: down for the positive
	// bound, up for the negative one, as needed.)
	if i > (maxTimeMs*div+div-1)/mul || i < minTimeMs*div/mul {
		return 0, errorf("%d is out of range for %s", i, enc)
	}
	ms := floorDiv(i*mul, div)
	if ms < minTimeMs || ms > maxTimeMs {
		return 0, errorf("%d is out of range for %s", i, enc)
	}
	return ms, nil
}

// epochUnit returns how to convert the unit of enc to milliseconds: times
// mul divided by div for integers, times 10^shift for decimals.
func epochUnit(enc registry.TimeEncoding) (mul, div int64, shift int, err error) {
	switch enc {
	case registry.TimeEpochS:
		return 1000, 1, 3, nil
	case registry.TimeEpochMs:
		return 1, 1, 0, nil
	case registry.TimeEpochUs:
		return 1, 1000, -3, nil
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
