package featurestore

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func mustEntityKey(t testing.TB, parts ...KeyPart) EntityKey {
	t.Helper()
	k, err := NewEntityKey(parts...)
	if err != nil {
		t.Fatalf("NewEntityKey(%v): %v", parts, err)
	}
	return k
}

func TestEntityKeyEncode(t *testing.T) {
	tests := []struct {
		name    string
		parts   []KeyPart
		binary  string // hex-free: the binary form as a Go string
		encoded string
		str     string
	}{
		{"string", []KeyPart{StringPart("card_1")}, "\x01\x06card_1", "AQZjYXJkXzE", `"card_1"`},
		{"empty string", []KeyPart{StringPart("")}, "\x01\x00", "AQA", `""`},
		{"int64 zero", []KeyPart{Int64Part(0)}, "\x02\x00", "AgA", "0"},
		{"int64 one", []KeyPart{Int64Part(1)}, "\x02\x02", "AgI", "1"},
		{"int64 minus one", []KeyPart{Int64Part(-1)}, "\x02\x01", "AgE", "-1"},
		{"int64 max", []KeyPart{Int64Part(math.MaxInt64)}, "\x02\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01", "Av7__________wE", "9223372036854775807"},
		{"int64 min", []KeyPart{Int64Part(math.MinInt64)}, "\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "Av___________wE", "-9223372036854775808"},
		{"string one", []KeyPart{StringPart("1")}, "\x01\x011", "AQEx", `"1"`},
		{"composite", []KeyPart{StringPart("a"), Int64Part(12)}, "\x01\x01a\x02\x18", "AQFhAhg", `("a", 12)`},
		{"composite a bc", []KeyPart{StringPart("a"), StringPart("bc")}, "\x01\x01a\x01\x02bc", "AQFhAQJiYw", `("a", "bc")`},
		{"composite ab c", []KeyPart{StringPart("ab"), StringPart("c")}, "\x01\x02ab\x01\x01c", "AQJhYgEBYw", `("ab", "c")`},
		{"braces and colons", []KeyPart{StringPart("}{:*x")}, "\x01\x05}{:*x", "AQV9ezoqeA", `"}{:*x"`},
		{"white space", []KeyPart{StringPart(" \t\r\n")}, "\x01\x04 \t\r\n", "AQQgCQ0K", `" \t\r\n"`},
		{"not utf-8", []KeyPart{StringPart("\xff\xfe")}, "\x01\x02\xff\xfe", "AQL__g", `"\xff\xfe"`},
		{"long string", []KeyPart{StringPart(strings.Repeat("x", 200))}, "\x01\xc8\x01" + strings.Repeat("x", 200), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := mustEntityKey(t, tt.parts...)
			bin, _ := k.MarshalBinary()
			if string(bin) != tt.binary {
				t.Errorf("binary = %q, want %q", bin, tt.binary)
			}
			enc := k.Encode()
			if tt.encoded != "" && enc != tt.encoded {
				t.Errorf("Encode() = %q, want %q", enc, tt.encoded)
			}
			if tt.str != "" && k.String() != tt.str {
				t.Errorf("String() = %s, want %s", k.String(), tt.str)
			}
			d, err := DecodeEntityKey(enc)
			if err != nil {
				t.Fatalf("DecodeEntityKey(%q): %v", enc, err)
			}
			if d != k {
				t.Errorf("decoded key %v != %v", d, k)
			}
			if got := d.Parts(); !reflect.DeepEqual(got, tt.parts) {
				t.Errorf("Parts() = %v, want %v", got, tt.parts)
			}
			checkEntityKeyChars(t, enc)
		})
	}
}

func TestEntityKeyShortcuts(t *testing.T) {
	if StringKey("x") != mustEntityKey(t, StringPart("x")) {
		t.Error("StringKey differs from NewEntityKey")
	}
	if Int64Key(-7) != mustEntityKey(t, Int64Part(-7)) {
		t.Error("Int64Key differs from NewEntityKey")
	}
	if StringKey("1") == Int64Key(1) {
		t.Error(`the string "1" and the int64 1 have the same key`)
	}
	if !(EntityKey{}).IsZero() || StringKey("").IsZero() {
		t.Error("IsZero: only the key without parts is zero")
	}
}

func TestNewEntityKeyErrors(t *testing.T) {
	tests := []struct {
		parts []KeyPart
		err   string
	}{
		{nil, "entity key has no parts"},
		{[]KeyPart{StringPart("a"), {Kind: 9}}, "entity key part 1: unknown kind 9"},
		{[]KeyPart{{}}, "entity key part 0: unknown kind 0"},
	}
	for _, tt := range tests {
		if _, err := NewEntityKey(tt.parts...); err == nil || err.Error() != tt.err {
			t.Errorf("NewEntityKey(%v) error = %v, want %q", tt.parts, err, tt.err)
		}
	}
}

func TestDecodeEntityKeyErrors(t *testing.T) {
	tests := []struct{ in, err string }{
		{"", `decode entity key: empty`},
		{"AQZjYXJkXzE=", `decode entity key "AQZjYXJkXzE=": invalid character '=' at offset 11`},
		{"AQZj\nYXJkXzE", `decode entity key "AQZj\nYXJkXzE": invalid character '\n' at offset 4`},
		{"AQZj+XJkXzE", `decode entity key "AQZj+XJkXzE": invalid character '+' at offset 4`},
		{"A", `decode entity key "A": illegal base64 data at input byte 0`},
		// "AgB" has set padding bits where "AgA" has none: one key, one spelling.
		{"AgB", `decode entity key "AgB": illegal base64 data at input byte 2`},
		{"AwA", `decode entity key "AwA": entity key part 0: unknown kind 3`},
		{"AQ", `decode entity key "AQ": entity key part 0: bad string length`},
		{"AQVh", `decode entity key "AQVh": entity key part 0: string length 5 runs past the end`},
		// 0x80 0x00 is a two-byte spelling of zero.
		{"AoAA", `decode entity key "AoAA": entity key part 0: bad int64 value`},
		{"AYAA", `decode entity key "AYAA": entity key part 0: bad string length`},
		{"AYAAYQ", `decode entity key "AYAAYQ": entity key part 0: bad string length`},
		// Ten bytes that overflow 64 bits, and eleven bytes.
		{"Av___________wI", `decode entity key "Av___________wI": entity key part 0: bad int64 value`},
		{"Av____________8B", `decode entity key "Av____________8B": entity key part 0: bad int64 value`},
		{"AQFhAA", `decode entity key "AQFhAA": entity key part 1: unknown kind 0`},
	}
	for _, tt := range tests {
		if _, err := DecodeEntityKey(tt.in); err == nil || err.Error() != tt.err {
			t.Errorf("DecodeEntityKey(%q) error = %v, want %s", tt.in, err, tt.err)
		}
	}
}

func TestEntityKeyText(t *testing.T) {
	k := mustEntityKey(t, StringPart("a:b"), Int64Part(3))
	b, err := json.Marshal(map[EntityKey]int{k: 1})
	if err != nil {
		t.Fatal(err)
	}
	var m map[EntityKey]int
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m[k] != 1 || len(m) != 1 {
		t.Errorf("JSON round trip of %s: %v", b, m)
	}
	var u EntityKey
	bin, _ := k.MarshalBinary()
	if err := u.UnmarshalBinary(bin); err != nil || u != k {
		t.Errorf("UnmarshalBinary = %v, %v; want %v", u, err, k)
	}
	if err := u.UnmarshalBinary([]byte("\x02\x80\x00")); err == nil {
		t.Error("UnmarshalBinary accepted a non-minimal varint")
	}
}

func checkEntityKeyChars(t testing.TB, enc string) {
	t.Helper()
	if enc == "" {
		t.Fatal("empty encoding")
	}
	for i := 0; i < len(enc); i++ {
		if !isKeyEncodingChar(enc[i]) || strings.IndexByte("{}:* \t\r\n", enc[i]) >= 0 {
			t.Fatalf("encoding %q has forbidden character %q", enc, enc[i])
		}
	}
}

// randomEntityKey makes keys that are likely to look alike: short strings from a
// small alphabet rich in the characters that matter to Redis, small and
// extreme integers, one to four parts.
func randomEntityKey(r *rand.Rand) []KeyPart {
	const alphabet = "ab1{}:*\x00\x01\x02 "
	parts := make([]KeyPart, 1+r.IntN(4))
	for i := range parts {
		if r.IntN(2) == 0 {
			b := make([]byte, r.IntN(5))
			for j := range b {
				b[j] = alphabet[r.IntN(len(alphabet))]
			}
			if r.IntN(50) == 0 {
				b = []byte(strings.Repeat("z", 120+r.IntN(20))) // two-byte lengths
			}
			parts[i] = StringPart(string(b))
			continue
		}
		switch r.IntN(4) {
		case 0:
			parts[i] = Int64Part(int64(r.IntN(5)) - 2)
		case 1:
			parts[i] = Int64Part(int64(r.Uint64()))
		case 2:
			parts[i] = Int64Part([]int64{math.MinInt64, math.MaxInt64, 63, -64, 64, -65}[r.IntN(6)])
		default:
			parts[i] = Int64Part(int64(r.IntN(300)))
		}
	}
	return parts
}

// TestEntityKeyProperties checks on many random keys that encoding round-trips,
// uses only allowed characters, and is injective: distinct keys never share an
// encoding.
func TestEntityKeyProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n := 200000
	if testing.Short() {
		n = 20000
	}
	seen := make(map[string][]KeyPart, n)
	for range n {
		parts := randomEntityKey(r)
		k := mustEntityKey(t, parts...)
		enc := k.Encode()
		checkEntityKeyChars(t, enc)
		d, err := DecodeEntityKey(enc)
		if err != nil {
			t.Fatalf("DecodeEntityKey(%q) of %v: %v", enc, parts, err)
		}
		if got := d.Parts(); !reflect.DeepEqual(got, parts) {
			t.Fatalf("round trip of %v gave %v", parts, got)
		}
		if prev, ok := seen[enc]; ok && !reflect.DeepEqual(prev, parts) {
			t.Fatalf("%v and %v share the encoding %q", prev, parts, enc)
		}
		seen[enc] = parts
	}
	t.Logf("%d distinct keys", len(seen))
}

func FuzzDecodeEntityKey(f *testing.F) {
	for _, s := range []string{
		"AQZjYXJkXzE", "AQA", "AgA", "AgI", "Av7__________wE", "Av___________wE", "Av___________wI",
		"AQFhAhg", "AQFhAQJiYw", "AQV9ezoqeA", "AoAA", "AgB", "AQ", "", "AQZjYXJkXzE=", "{a}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := DecodeEntityKey(s)
		if err != nil {
			return
		}
		if enc := k.Encode(); enc != s {
			t.Fatalf("DecodeEntityKey(%q) re-encodes as %q", s, enc)
		}
		k2, err := NewEntityKey(k.Parts()...)
		if err != nil || k2 != k {
			t.Fatalf("rebuilding %q from its parts gave %v, %v", s, k2, err)
		}
		checkEntityKeyChars(t, s)
	})
}

func FuzzEntityKeyBinary(f *testing.F) {
	for _, s := range []string{
		"\x01\x06card_1", "\x02\x00", "\x02\x80\x00", "\x01\x01a\x02\x18", "\x01\x80\x00",
		"\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", "\x03",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var k EntityKey
		if err := k.UnmarshalBinary(b); err != nil {
			return
		}
		if out, _ := k.MarshalBinary(); string(out) != string(b) {
			t.Fatalf("binary %q re-marshals as %q", b, out)
		}
		d, err := DecodeEntityKey(k.Encode())
		if err != nil || d != k {
			t.Fatalf("encoded form of %q does not round-trip: %v, %v", b, d, err)
		}
	})
}

// FuzzEntityKeyParts builds pairs of keys from fuzzed parts and checks that
// they share an encoding exactly when they are the same parts.
func FuzzEntityKeyParts(f *testing.F) {
	f.Add("a", "bc", int64(1), uint8(0), "ab", "c", int64(1), uint8(0))
	f.Add("1", "", int64(1), uint8(1), "1", "", int64(1), uint8(2))
	f.Add("{x}", ":", int64(-1), uint8(7), "{x}", ":", int64(-1), uint8(7))
	f.Add("", "", int64(0), uint8(3), "", "", int64(0), uint8(4))
	f.Fuzz(func(t *testing.T, s1, s2 string, i1 int64, shape1 uint8, s3, s4 string, i2 int64, shape2 uint8) {
		a, b := entityKeyPartsOf(s1, s2, i1, shape1), entityKeyPartsOf(s3, s4, i2, shape2)
		ka, kb := mustEntityKey(t, a...), mustEntityKey(t, b...)
		ea, eb := ka.Encode(), kb.Encode()
		checkEntityKeyChars(t, ea)
		if (ea == eb) != reflect.DeepEqual(a, b) {
			t.Fatalf("%v -> %q, %v -> %q", a, ea, b, eb)
		}
		d, err := DecodeEntityKey(ea)
		if err != nil || !reflect.DeepEqual(d.Parts(), a) {
			t.Fatalf("%v does not round-trip: %v, %v", a, d, err)
		}
	})
}

// entityKeyPartsOf picks one of eight key shapes from fuzzed values.
func entityKeyPartsOf(s1, s2 string, i int64, shape uint8) []KeyPart {
	switch shape % 8 {
	case 0:
		return []KeyPart{StringPart(s1), StringPart(s2)}
	case 1:
		return []KeyPart{StringPart(s1)}
	case 2:
		return []KeyPart{Int64Part(i)}
	case 3:
		return []KeyPart{StringPart(s1), Int64Part(i)}
	case 4:
		return []KeyPart{Int64Part(i), StringPart(s1)}
	case 5:
		return []KeyPart{StringPart(s1 + s2)}
	case 6:
		return []KeyPart{StringPart(s1), StringPart(s2), Int64Part(i)}
	default:
		return []KeyPart{StringPart(s1), Int64Part(i), StringPart(s2)}
	}
}

func BenchmarkEntityKey(b *testing.B) {
	b.ReportAllocs()
	parts := [2]KeyPart{StringPart("card_4242424242424242"), Int64Part(1234567)}
	for b.Loop() {
		k, _ := NewEntityKey(parts[:]...)
		_ = k.Encode()
	}
}
