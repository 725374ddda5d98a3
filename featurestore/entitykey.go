package featurestore

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// EntityKey identifies one entity: the values of its join keys in the order
// the entity declares them. A key with more than one part is a composite key.
//
// An EntityKey holds its canonical binary form, so it is comparable and can be
// a map key, and two keys are equal exactly when they have the same parts of
// the same kinds: the string "1" and the int64 1 differ, and so do ("a", "bc")
// and ("ab", "c"). The zero EntityKey has no parts and identifies nothing.
//
// Binary form, per part in order (self-delimiting, so parts never run into
// each other):
//
//	0x01 keyUvarint(len(s)) s     a string part
//	0x02 varint(v)             an int64 part (zig-zag, as encoding/binary)
//
// Encoded form (Encode, AppendText): the binary form in unpadded base64url
// (RFC 4648 section 5). It uses only A-Z a-z 0-9 - and _, so it can be put in a
// Redis key name without changing its hash slot or namespace (no '{', '}',
// ':', '*' or white space), in a file name or in a URL. Every encoding is
// canonical: DecodeEntityKey accepts exactly the strings Encode produces.
type EntityKey struct {
	b string // binary form; "" for the zero key
}

// KeyKind is the type of one part of an entity key.
type KeyKind uint8

// The kinds of entity key parts. Their values are the tags of the binary form
// and must never change.
const (
	KeyString KeyKind = 1
	KeyInt64  KeyKind = 2
)

// String returns the kind's name as definitions write it.
func (k KeyKind) String() string {
	switch k {
	case KeyString:
		return "string"
	case KeyInt64:
		return "int64"
	}
	return "KeyKind(" + strconv.Itoa(int(k)) + ")"
}

// KeyPart is the value of one join key.
type KeyPart struct {
	Kind KeyKind
	Str  string // the value of a KeyString part
	Int  int64  // the value of a KeyInt64 part
}

// StringPart returns a string key part.
func StringPart(s string) KeyPart { return KeyPart{Kind: KeyString, Str: s} }

// Int64Part returns an int64 key part.
func Int64Part(v int64) KeyPart { return KeyPart{Kind: KeyInt64, Int: v} }

// String renders the part for people: a quoted string or a decimal number.
func (p KeyPart) String() string {
	switch p.Kind {
	case KeyString:
		return strconv.Quote(p.Str)
	case KeyInt64:
		return strconv.FormatInt(p.Int, 10)
	}
	return "<" + p.Kind.String() + ">"
}

func (p KeyPart) appendBinary(dst []byte) []byte {
	dst = append(dst, byte(p.Kind))
	if p.Kind == KeyString {
		dst = binary.AppendUvarint(dst, uint64(len(p.Str)))
		return append(dst, p.Str...)
	}
	return binary.AppendVarint(dst, p.Int)
}

// MaxKeyValueBytes bounds a string join key value: it is part of the
// Redis key of every view of the entity, so one huge value from a bad event
// or request would cost memory in every hash and on every read. Ingest
// rejects such events (key_too_long), serving such requests.
const MaxKeyValueBytes = 1024

// NewEntityKey returns the key made of parts, in order. It fails when there
// are no parts or a part has an unknown kind.
func NewEntityKey(parts ...KeyPart) (EntityKey, error) {
	if len(parts) == 0 {
		return EntityKey{}, errors.New("entity key has no parts")
	}
	n := 0
	for i, p := range parts {
		switch p.Kind {
		case KeyString:
			if len(p.Str) > MaxKeyValueBytes {
				return EntityKey{}, fmt.Errorf("entity key part %d: a string of %d bytes, more than the %d a join key value may have", i, len(p.Str), MaxKeyValueBytes)
			}
			n += 1 + binary.MaxVarintLen64 + len(p.Str)
		case KeyInt64:
			n += 1 + binary.MaxVarintLen64
		default:
			return EntityKey{}, fmt.Errorf("entity key part %d: unknown kind %d", i, p.Kind)
		}
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = p.appendBinary(b)
	}
	return EntityKey{b: string(b)}, nil
}

// StringKey returns the key of an entity with one string join key.
func StringKey(s string) EntityKey {
	return EntityKey{b: string(StringPart(s).appendBinary(make([]byte, 0, 1+binary.MaxVarintLen64+len(s))))}
}

// Int64Key returns the key of an entity with one int64 join key.
func Int64Key(v int64) EntityKey {
	var buf [1 + binary.MaxVarintLen64]byte
	return EntityKey{b: string(Int64Part(v).appendBinary(buf[:0]))}
}

// IsZero reports whether k is the zero key, which has no parts.
func (k EntityKey) IsZero() bool { return k.b == "" }

// Parts returns the key's parts in order.
func (k EntityKey) Parts() []KeyPart {
	var parts []KeyPart
	for rest := k.b; rest != ""; {
		p, n, err := readKeyPart(rest)
		if err != nil {
			// Only NewEntityKey and the decoders make keys, and they check.
			panic("featurestore: corrupt entity key: " + err.Error())
		}
		parts = append(parts, p)
		rest = rest[n:]
	}
	return parts
}

// String renders the key for people: a lone part as itself, a composite key
// as a parenthesised list, like ("a", 12).
func (k EntityKey) String() string {
	parts := k.Parts()
	switch len(parts) {
	case 0:
		return "()"
	case 1:
		return parts[0].String()
	}
	var sb strings.Builder
	sb.WriteByte('(')
	for i, p := range parts {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(p.String())
	}
	sb.WriteByte(')')
	return sb.String()
}

// keyEncoding is unpadded base64url. Strict mode rejects set padding bits, so
// that no two strings decode to the same bytes.
var keyEncoding = base64.RawURLEncoding.Strict()

// Encode returns the key's encoded form (see EntityKey); "" for the zero key.
func (k EntityKey) Encode() string {
	return string(k.appendEncoded(make([]byte, 0, keyEncoding.EncodedLen(len(k.b)))))
}

// AppendText appends the key's encoded form to dst. With UnmarshalText it
// lets keys be JSON object keys and text fields.
func (k EntityKey) AppendText(dst []byte) ([]byte, error) {
	return k.appendEncoded(dst), nil
}

func (k EntityKey) appendEncoded(dst []byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, keyEncoding.EncodedLen(len(k.b)))...)
	keyEncoding.Encode(dst[n:], []byte(k.b))
	return dst
}

// MarshalText returns the key's encoded form.
func (k EntityKey) MarshalText() ([]byte, error) { return []byte(k.Encode()), nil }

// UnmarshalText parses an encoded form, as DecodeEntityKey.
func (k *EntityKey) UnmarshalText(text []byte) error {
	d, err := DecodeEntityKey(string(text))
	if err != nil {
		return err
	}
	*k = d
	return nil
}

// AppendBinary appends the key's binary form to dst.
func (k EntityKey) AppendBinary(dst []byte) ([]byte, error) { return append(dst, k.b...), nil }

// MarshalBinary returns the key's binary form.
func (k EntityKey) MarshalBinary() ([]byte, error) { return []byte(k.b), nil }

// UnmarshalBinary parses a binary form. Like the encoded form, it must be
// canonical: MarshalBinary of the result returns data unchanged.
func (k *EntityKey) UnmarshalBinary(data []byte) error {
	d, err := parseEntityKeyBinary(string(data))
	if err != nil {
		return err
	}
	*k = d
	return nil
}

// DecodeEntityKey parses the encoded form of a key. Only what Encode returns
// is accepted, so decoding and encoding again gives s back.
func DecodeEntityKey(s string) (EntityKey, error) {
	if s == "" {
		return EntityKey{}, errors.New("decode entity key: empty")
	}
	// The standard decoder skips \r and \n; a key must not have two spellings.
	for i := 0; i < len(s); i++ {
		if !isKeyEncodingChar(s[i]) {
			return EntityKey{}, fmt.Errorf("decode entity key %q: invalid character %q at offset %d", s, s[i], i)
		}
	}
	b, err := keyEncoding.DecodeString(s)
	if err != nil {
		return EntityKey{}, fmt.Errorf("decode entity key %q: %w", s, err)
	}
	k, err := parseEntityKeyBinary(string(b))
	if err != nil {
		return EntityKey{}, fmt.Errorf("decode entity key %q: %w", s, err)
	}
	return k, nil
}

func isKeyEncodingChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// parseEntityKeyBinary checks that b is a canonical binary form of at least one part.
func parseEntityKeyBinary(b string) (EntityKey, error) {
	if b == "" {
		return EntityKey{}, errors.New("entity key has no parts")
	}
	for rest, i := b, 0; rest != ""; i++ {
		_, n, err := readKeyPart(rest)
		if err != nil {
			return EntityKey{}, fmt.Errorf("entity key part %d: %w", i, err)
		}
		rest = rest[n:]
	}
	return EntityKey{b: b}, nil
}

// readKeyPart reads the part at the start of b and returns it with the number of
// bytes it took. Varints must be minimal, so that every key has exactly one
// binary form.
func readKeyPart(b string) (KeyPart, int, error) {
	kind := KeyKind(b[0])
	switch kind {
	case KeyString:
		l, n := keyUvarint(b[1:])
		if n <= 0 {
			return KeyPart{}, 0, errors.New("bad string length")
		}
		start := 1 + n
		if l > uint64(len(b)-start) {
			return KeyPart{}, 0, fmt.Errorf("string length %d runs past the end", l)
		}
		end := start + int(l)
		return KeyPart{Kind: KeyString, Str: b[start:end]}, end, nil
	case KeyInt64:
		u, n := keyUvarint(b[1:])
		if n <= 0 {
			return KeyPart{}, 0, errors.New("bad int64 value")
		}
		// Zig-zag decoding, as binary.Varint.
		v := int64(u >> 1)
		if u&1 != 0 {
			v = ^v
		}
		return KeyPart{Kind: KeyInt64, Int: v}, 1 + n, nil
	}
	return KeyPart{}, 0, fmt.Errorf("unknown kind %d", kind)
}

// keyUvarint is binary.Uvarint on a string that also rejects non-minimal
// encodings: it returns n <= 0 for anything but the shortest form.
func keyUvarint(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, -1 // overflows 64 bits
			}
			if c == 0 && i > 0 {
				return 0, -1 // a trailing zero byte: not the shortest form
			}
			return x | uint64(c)<<shift, i + 1
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, 0
}
