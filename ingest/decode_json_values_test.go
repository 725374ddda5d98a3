package ingest

import (
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// These tests check decoded values against references that do not share
// code with the decoder: strconv.ParseFloat for doubles, exact big-number
// arithmetic for epoch times, encoding/json for string escapes.

func newTestJSONDecoder(t testing.TB, enc string) Decoder {
	t.Helper()
	_, src, l := loadTestSource(t, enc)
	dec, err := NewDecoder(src, l, "")
	if err != nil {
		t.Fatal(err)
	}
	return dec
}

// decodeReason returns the reason of err, "" for no error; it fails the test
// if err is not a DecodeError.
func decodeReason(t *testing.T, err error) Reason {
	t.Helper()
	if err == nil {
		return ""
	}
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("error %v is not a DecodeError", err)
	}
	return de.Reason
}

const tsRFC = `"meta":{"ts":"2026-11-26T10:00:00Z"}`

// randomDecimal returns a random d.ddde±N text with 1 to 17 significant
// digits; exponents are mostly small, sometimes near the ends of float64.
func randomDecimal(r *rand.Rand) string {
	var b strings.Builder
	if r.IntN(4) == 0 {
		b.WriteByte('-')
	}
	b.WriteByte(byte('1' + r.IntN(9)))
	if n := r.IntN(17); n > 0 {
		b.WriteByte('.')
		for range n {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
	}
	exp := r.IntN(61) - 30
	if r.IntN(5) == 0 {
		exp = r.IntN(650) - 330
	}
	b.WriteByte("eE"[r.IntN(2)])
	if exp >= 0 && r.IntN(2) == 0 {
		b.WriteByte('+')
	}
	b.WriteString(strconv.Itoa(exp))
	return b.String()
}

// TestDecodeJSONDoubleMatchesParseFloat: a double is the correctly rounded
// value of its decimal text, as strconv.ParseFloat gives it, bit for bit;
// non-finite numbers stay rejected.
func TestDecodeJSONDoubleMatchesParseFloat(t *testing.T) {
	dec := newTestJSONDecoder(t, "rfc3339")
	amount := 0 // field index of amount
	check := func(text string) {
		t.Helper()
		var ev Event
		err := dec.Decode([]byte(`{`+tsRFC+`,"amount":`+text+`}`), &ev)
		want, perr := strconv.ParseFloat(text, 64)
		if perr != nil || math.IsInf(want, 0) || math.IsNaN(want) {
			if r := decodeReason(t, err); r != ReasonWrongType {
				t.Errorf("amount %s: got %v (%v), want reason %s", text, ev.Fields[amount], err, ReasonWrongType)
			}
			return
		}
		if err != nil {
			t.Errorf("amount %s: %v", text, err)
			return
		}
		got := ev.Fields[amount]
		if got.Kind() != featurestore.KindDouble || math.Float64bits(got.Double()) != math.Float64bits(want) {
			t.Errorf("amount %s = %v, want %v", text, got, want)
		}
	}
	for _, s := range []string{
		"1.1e-5", "-1.1e-5", "1.1E-5", "0.1", "0.3", "12.5", "7", "-0", "-0.0", "0e0", "1e23", "8.41e21", "1.7976931348623157e308",
		"2.2250738585072011e-308", "2.2250738585072014e-308", "4.9406564584124654e-324", "5e-324", "1e-400", "-1e-400",
		"9007199254740993", "123456789012345678901234567890", "0.000000000000000000000000000001", "1.00000000000000011102230246251565404236316680908203125",
		"3.0000000000000004e-3", "1e-5", "1.5e+300", "123.456e-2", "6.02214076e23", "1076252495.636", "1.076252495636e9",
		// stay rejected
		"NaN", "nan", "inf", "-inf", "1e400", "-1e400", "1.7976931348623159e308",
	} {
		check(s)
	}
	r := rand.New(rand.NewPCG(1, 2))
	n := 20000
	if testing.Short() {
		n = 5000
	}
	for range n {
		check(randomDecimal(r))
	}
}

// TestDecodeJSONDoubleRejections: texts the parser takes as numbers but
// that are not finite JSON doubles are still of the wrong type.
func TestDecodeJSONDoubleRejections(t *testing.T) {
	dec := newTestJSONDecoder(t, "rfc3339")
	for _, s := range []string{"NaN", "nan", "inf", "-inf", "+inf", "1e400", "-1e400", "+1", "1e", "1e+", "--1", "1-2", "1.2.3", "1e5.5", "-"} {
		var ev Event
		err := dec.Decode([]byte(`{`+tsRFC+`,"amount":`+s+`}`), &ev)
		if r := decodeReason(t, err); r != ReasonWrongType && r != ReasonInvalidPayload {
			t.Errorf("amount %s: got %v (%v), want a rejection", s, ev.Fields[0], err)
		}
	}
	// The exact value of 1.1e-5, which the decoder used to get one ulp off.
	var ev Event
	if err := dec.Decode([]byte(`{`+tsRFC+`,"amount":1.1e-5}`), &ev); err != nil || ev.Fields[0].Double() != 1.1e-5 {
		t.Errorf("1.1e-5 decoded as %v (%v)", ev.Fields[0], err)
	}
}

// exactEpochMillis is floor(text × unit) in ms, computed with big.Rat, or
// ok false if text is not a decimal.
func exactEpochMillis(text, enc string) (int64, bool) {
	r, ok := new(big.Rat).SetString(text)
	if !ok {
		return 0, false
	}
	switch enc {
	case "epoch_s":
		r.Mul(r, big.NewRat(1000, 1))
	case "epoch_us":
		r.Mul(r, big.NewRat(1, 1000))
	}
	q := new(big.Int).Div(r.Num(), r.Denom()) // Euclidean: floor, as Denom > 0
	if !q.IsInt64() {
		return math.MaxInt64, true
	}
	return q.Int64(), true
}

func inTimeRange(ms int64) bool { return ms >= minTimeMs && ms <= maxTimeMs }

// randomEpoch returns a random decimal in [-2e9, 2e9] with the given number
// of fraction digits.
func randomEpoch(r *rand.Rand, frac int) string {
	var b strings.Builder
	if r.IntN(2) == 0 {
		b.WriteByte('-')
	}
	b.WriteString(strconv.FormatInt(r.Int64N(2_000_000_000), 10))
	b.WriteByte('.')
	for range frac {
		b.WriteByte(byte('0' + r.IntN(10)))
	}
	return b.String()
}

// TestEpochFractionExact: an epoch time with a fraction is floor(value ×
// unit) exactly, in JSON, in text (CSV) and in float columns, which the
// decoder sees as their shortest decimal.
func TestEpochFractionExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	n := 3000
	if testing.Short() {
		n = 1000
	}
	for _, enc := range []string{"epoch_s", "epoch_ms", "epoch_us"} {
		t.Run(enc, func(t *testing.T) {
			dec := newTestJSONDecoder(t, enc)
			te := registry.TimeEncoding(enc)
			check := func(text string) {
				t.Helper()
				want, ok := exactEpochMillis(text, enc)
				if !ok {
					t.Fatalf("bad test text %q", text)
				}
				var ev Event
				err := dec.Decode([]byte(`{"meta":{"ts":`+text+`}}`), &ev)
				got, terr := epochMillis(text, te)
				if !inTimeRange(want) {
					if decodeReason(t, err) != ReasonBadTime {
						t.Errorf("JSON %s: got %d (%v), want reason %s", text, ev.Time, err, ReasonBadTime)
					}
					if terr == nil {
						t.Errorf("text %s: got %d, want an error", text, got)
					}
					return
				}
				if err != nil || ev.Time != want {
					t.Errorf("JSON %s: got %d (%v), want %d", text, ev.Time, err, want)
				}
				if terr != nil || got != want {
					t.Errorf("text %s: got %d (%v), want %d", text, got, terr, want)
				}
			}
			checkFloat := func(f float64) {
				t.Helper()
				text := strconv.FormatFloat(f, 'g', -1, 64) // as a float64 column gives it
				want, _ := exactEpochMillis(strconv.FormatFloat(f, 'f', -1, 64), enc)
				got, err := epochMillis(text, te)
				if !inTimeRange(want) {
					if err == nil {
						t.Errorf("float %v: got %d, want an error", f, got)
					}
					return
				}
				if err != nil || got != want {
					t.Errorf("float %v: got %d (%v), want %d", f, got, err, want)
				}
			}
			for _, s := range []string{
				"1076252495.636", "1.001", "-1.001", "0.001", "-0.001", "0.0", "-0.0", "1.076252495636e9", "1076252495636e-3",
				"1795687200.1239", "-1500.5", "0.000001", "-0.000001", "1e-9", "-1e-9", "1.5e3", "-62135596800", "1e300", "-1e300",
				"253402300799.999", "253402300799999.999", "253402300799999999.999",
			} {
				check(s)
			}
			for _, f := range []float64{1076252495.636, 1.001, -1.001, 0.001, 1795687200.123, -1795687200.123, 0.1, 1e-7} {
				checkFloat(f)
			}
			for range n {
				s3, s6 := randomEpoch(r, 3), randomEpoch(r, 6)
				check(s3)
				check(s6)
				f3, _ := strconv.ParseFloat(s3, 64)
				f6, _ := strconv.ParseFloat(s6, 64)
				checkFloat(f3)
				checkFloat(f6)
			}
		})
	}
}

// TestEpochBounds: every epoch value whose floor in ms is within years
// 1..9999 is accepted, in every encoding; one unit beyond is rejected.
func TestEpochBounds(t *testing.T) {
	tests := []struct {
		enc  string
		text string
		ms   int64 // 0: rejected
	}{
		{"epoch_us", "253402300799999999", maxTimeMs},
		{"epoch_us", "253402300799999998", maxTimeMs},
		{"epoch_us", "253402300799999000", maxTimeMs},
		{"epoch_us", "253402300799998999", maxTimeMs - 1},
		{"epoch_us", "253402300799999999.9", maxTimeMs},
		{"epoch_us", "2.53402300799999999e17", maxTimeMs},
		{"epoch_us", "253402300800000000", 0},
		{"epoch_us", "253402300800000000.0", 0},
		{"epoch_us", "-62135596800000000", minTimeMs},
		{"epoch_us", "-62135596799999999", minTimeMs},
		{"epoch_us", "-62135596800000001", 0},
		{"epoch_us", "-62135596800000000.1", 0},
		{"epoch_ms", "253402300799999", maxTimeMs},
		{"epoch_ms", "253402300799999.999", maxTimeMs},
		{"epoch_ms", "253402300800000", 0},
		{"epoch_ms", "-62135596800000", minTimeMs},
		{"epoch_ms", "-62135596800000.001", 0},
		{"epoch_ms", "-62135596800001", 0},
		{"epoch_s", "253402300799", maxTimeMs - 999},
		{"epoch_s", "253402300799.999", maxTimeMs},
		{"epoch_s", "253402300799.9999999", maxTimeMs},
		{"epoch_s", "253402300800", 0},
		{"epoch_s", "253402300800.0", 0},
		{"epoch_s", "-62135596800", minTimeMs},
		{"epoch_s", "-62135596800.000", minTimeMs},
		{"epoch_s", "-62135596800.0001", 0},
		{"epoch_s", "-62135596801", 0},
	}
	for _, tt := range tests {
		t.Run(tt.enc+" "+tt.text, func(t *testing.T) {
			dec := newTestJSONDecoder(t, tt.enc)
			var ev Event
			err := dec.Decode([]byte(`{"meta":{"ts":`+tt.text+`}}`), &ev)
			got, terr := epochMillis(tt.text, registry.TimeEncoding(tt.enc))
			if tt.ms == 0 {
				if decodeReason(t, err) != ReasonBadTime {
					t.Errorf("JSON: got %d (%v), want reason %s", ev.Time, err, ReasonBadTime)
				}
				if terr == nil {
					t.Errorf("text: got %d, want an error", got)
				}
				return
			}
			if err != nil || ev.Time != tt.ms {
				t.Errorf("JSON: got %d (%v), want %d", ev.Time, err, tt.ms)
			}
			if terr != nil || got != tt.ms {
				t.Errorf("text: got %d (%v), want %d", got, terr, tt.ms)
			}
			if i, err := strconv.ParseInt(tt.text, 10, 64); err == nil {
				got, err := epochMillisInt(i, registry.TimeEncoding(tt.enc))
				if err != nil || got != tt.ms {
					t.Errorf("int: got %d (%v), want %d", got, err, tt.ms)
				}
			}
		})
	}
}

// TestDecodeJSONStringEscapes: a string with a bad escape or a lone
// surrogate is an invalid payload, wherever the decoder reads it (join
// keys, fields, event id, time); valid escapes decode as encoding/json
// decodes them.
func TestDecodeJSONStringEscapes(t *testing.T) {
	dec := newTestJSONDecoder(t, "rfc3339")
	bad := []string{
		`\ud800`, `\udbff`, `\udc00`, `\udfff`, `\ud800\u0041`, `x\ud800y`, `\ud800\ud800`, `\udc00\ud800`, `\ud800\`, `\ud800\u`,
		`\ud800\udc0`, `\ud800\udcxx`, `a\qb`, `\u12`, `\u`, `\u12g4`, `\u+123`, `\x41`, `\'`, `\U0041`, `\a`, `\0`, `\ `,
		`ok\n then \z`, `\\\q`,
	}
	for _, esc := range bad {
		for _, where := range []string{
			`{` + tsRFC + `,"country":"%s"}`,
			`{` + tsRFC + `,"bank":"%s"}`,
			`{` + tsRFC + `,"card":{"id":"%s"}}`,
			`{` + tsRFC + `,"id":"%s"}`,
			`{"meta":{"ts":"2026-11-26T10:00:00Z%s"}}`,
		} {
			payload := sprintf(where, esc)
			var ev Event
			err := dec.Decode([]byte(payload), &ev)
			if r := decodeReason(t, err); r != ReasonInvalidPayload {
				t.Errorf("%s: got reason %q (%v), keys %v fields %v id %q, want %s", payload, r, err, ev.Keys, ev.Fields, ev.ID, ReasonInvalidPayload)
			}
		}
	}
	good := []string{
		``, `plain`, `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `a\"b\\c\/d\be\ff\ng\rh\ti`, `\u0041`, `\u00e9`, `\u00E9`,
		`\u20ac`, `\uffff`, `\ufffd`, `\u0000`, `\u001f`, `\ud83d\ude00`, `\uD83D\uDE00`, `\udbff\udfff`, `\ud800\udc00`,
		`caf\u00e9 \ud83d\ude00!`, `\\u0041`, `\\\u0041`, `\\ud800`, `end\\`, `\"\"`, `x\u0041\u0042y`, `\ud83d\ude00\ud83d\ude00`,
	}
	for _, esc := range good {
		var want string
		if err := json.Unmarshal([]byte(`"`+esc+`"`), &want); err != nil {
			t.Fatalf("test string %s: %v", esc, err)
		}
		for _, where := range []string{
			`{` + tsRFC + `,"country":"%s","bank":"%[1]s","card":{"id":"%[1]s"},"id":"%[1]s"}`,
		} {
			payload := sprintf(where, esc)
			var ev Event
			if err := dec.Decode([]byte(payload), &ev); err != nil {
				t.Errorf("%s: %v", payload, err)
				continue
			}
			if got := ev.Fields[2]; !got.Equal(featurestore.StringValue(want)) {
				t.Errorf("%s: country %q, want %q", payload, got.Str(), want)
			}
			if got := ev.Keys[1]; !got.Equal(featurestore.StringValue(want)) {
				t.Errorf("%s: bank %q, want %q", payload, got.Str(), want)
			}
			if got := ev.Keys[2]; !got.Equal(featurestore.StringValue(want)) {
				t.Errorf("%s: card id %q, want %q", payload, got.Str(), want)
			}
			if ev.ID != want {
				t.Errorf("%s: id %q, want %q", payload, ev.ID, want)
			}
		}
	}
	// Random mixes: valid exactly when encoding/json takes the string
	// without replacing a lone surrogate by U+FFFD (no token has one).
	tokens := []string{`a`, `é`, `0`, `\\`, `\"`, `\/`, `\n`, `\t`, `\u00e9`, `\u0041`, `\ud83d`, `\ude00`, `\udbff\udfff`,
		`\ud800`, `\u12`, `\u`, `\q`, `\`, `u`, `d`, `8`}
	r := rand.New(rand.NewPCG(5, 6))
	for range 3000 {
		var b strings.Builder
		for range 1 + r.IntN(6) {
			b.WriteString(tokens[r.IntN(len(tokens))])
		}
		esc := b.String()
		var want string
		jerr := json.Unmarshal([]byte(`"`+esc+`"`), &want)
		valid := jerr == nil && !strings.ContainsRune(want, utf8.RuneError)
		var ev Event
		err := dec.Decode([]byte(`{`+tsRFC+`,"country":"`+esc+`"}`), &ev)
		switch {
		case valid:
			if err != nil || ev.Fields[2].Str() != want {
				t.Errorf("%s: got %q (%v), want %q", esc, ev.Fields[2].Str(), err, want)
			}
		default: // a bad escape, a lone surrogate or an escaped closing quote
			if decodeReason(t, err) != ReasonInvalidPayload {
				t.Errorf("%s: got %q (%v), want reason %s", esc, ev.Fields[2].Str(), err, ReasonInvalidPayload)
			}
		}
	}
	// An escaped time is a time.
	var ev Event
	if err := dec.Decode([]byte(`{"meta":{"ts":"\u0032026-11-26T10:00:00\u005a"}}`), &ev); err != nil || ev.Time != 1795687200000 {
		t.Errorf("escaped time: %d (%v)", ev.Time, err)
	}
}

// TestDecodeJSONSharedPathEscapes: a key and a field read from the same
// string are both checked and both unescaped once.
func TestDecodeJSONSharedPathEscapes(t *testing.T) {
	defs := strings.Replace(sprintf(testDefs, "rfc3339"), "bank: bank,", "bank: country,", 1)
	_, src, l := loadSource(t, defs)
	dec, err := NewDecoder(src, l, "")
	if err != nil {
		t.Fatal(err)
	}
	bank, country := l.KeyIndex("bank"), l.FieldIndex("country")
	var ev Event
	if err := dec.Decode([]byte(`{`+tsRFC+`,"country":"caf\u00e9\\\"\ud83d\ude00"}`), &ev); err != nil {
		t.Fatal(err)
	}
	want := featurestore.StringValue("café\\\"😀")
	if !ev.Keys[bank].Equal(want) || !ev.Fields[country].Equal(want) {
		t.Errorf("bank %v, country %v, want %v", ev.Keys[bank], ev.Fields[country], want)
	}
	for _, esc := range []string{`\ud800`, `a\qb`} {
		err := dec.Decode([]byte(`{`+tsRFC+`,"country":"`+esc+`"}`), &ev)
		if r := decodeReason(t, err); r != ReasonInvalidPayload {
			t.Errorf("%s: got %v, want reason %s", esc, err, ReasonInvalidPayload)
		}
	}
}

// TestDecodeJSONDuplicateKeys pins that of duplicate object keys the first
// wins, for fields, join keys, the event time and the event id; a later
// duplicate is not read at all.
func TestDecodeJSONDuplicateKeys(t *testing.T) {
	dec := newTestJSONDecoder(t, "rfc3339")
	var ev Event
	payload := `{"meta":{"ts":"2026-11-26T10:00:00Z"},"meta":{"ts":"2027-01-01T00:00:00Z"},"country":"FR","country":"DE","bank":"b1","bank":"b2",` +
		`"card":{"id":"c1","id":"c2"},"id":"e1","id":"e2","amount":1,"amount":"x","country":"\q"}`
	if err := dec.Decode([]byte(payload), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Time != 1795687200000 || ev.Fields[2].Str() != "FR" || ev.Keys[1].Str() != "b1" || ev.Keys[2].Str() != "c1" || ev.ID != "e1" || ev.Fields[0].Double() != 1 {
		t.Errorf("got time %d keys %v fields %v id %q, want the first of each", ev.Time, ev.Keys, ev.Fields, ev.ID)
	}
}

// BenchmarkDecodeJSONNumbers decodes epoch times and doubles with
// fractions and exponents.
func BenchmarkDecodeJSONNumbers(b *testing.B) {
	dec := newTestJSONDecoder(b, "epoch_s")
	benchDecode(b, dec, []byte(`{"meta":{"ts":1795687200.123},"account_no":42,"amount":1.25e-3,"qty":3,"approved":true,"merchant":"m-9","channel":"online"}`))
}

// TestJSONNumberGrammar compares jsonNumber with encoding/json's validator
// on every string of up to 5 characters over the characters of numbers,
// and on random longer ones.
func TestJSONNumberGrammar(t *testing.T) {
	const alphabet = "0123456789.-+eE"
	check := func(s string) {
		if got, want := jsonNumber(s), json.Valid([]byte(s)); got != want {
			t.Errorf("jsonNumber(%q) = %v, encoding/json says %v", s, got, want)
		}
	}
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		check(prefix)
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			gen(prefix+string(c), n-1)
		}
	}
	gen("", 5)
	r := rand.New(rand.NewPCG(7, 8))
	for range 200_000 {
		b := make([]byte, 6+r.IntN(10))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		check(string(b))
	}
}
