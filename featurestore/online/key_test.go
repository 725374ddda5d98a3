package online

import (
	"strings"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
)

func TestFieldNames(t *testing.T) {
	if got := TileField(29450000); got != "t:29450000" {
		t.Errorf("TileField = %q", got)
	}
	if got := TileField(-3); got != "t:-3" {
		t.Errorf("TileField(-3) = %q", got)
	}
	if got := FenceField("card_transactions", 7); got != "f:card_transactions:7" {
		t.Errorf("FenceField = %q", got)
	}
	for _, tt := range []struct {
		field string
		index int64
		ok    bool
	}{
		{"t:0", 0, true},
		{"t:-12", -12, true},
		{"t:12", 12, true},
		{"t:012", 0, false},
		{"t:+1", 0, false},
		{"t:", 0, false},
		{"x", 0, false},
		{"f:t:1", 0, false},
	} {
		i, ok := ParseTileField(tt.field)
		if ok != tt.ok || ok && i != tt.index {
			t.Errorf("ParseTileField(%q) = %d, %v; want %d, %v", tt.field, i, ok, tt.index, tt.ok)
		}
	}
}

func TestHashTag(t *testing.T) {
	// The rules of the Redis Cluster specification, "Hash tags".
	tests := []struct{ key, tag string }{
		{"{user1000}.following", "user1000"},
		{"foo{}{bar}", "foo{}{bar}"},
		{"foo{{bar}}zap", "{bar"},
		{"foo{bar}{zap}", "bar"},
		{"nobraces", "nobraces"},
		{"open{only", "open{only"},
		{"}{x}", "x"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := hashTag(tt.key); got != tt.tag {
			t.Errorf("hashTag(%q) = %q, want %q", tt.key, got, tt.tag)
		}
	}
}

func TestSlot(t *testing.T) {
	// Check values: the CRC16 of the specification's appendix, and slots
	// that redis-cli CLUSTER KEYSLOT returns.
	if got := crc16("123456789"); got != 0x31C3 {
		t.Errorf("crc16(123456789) = %#x, want 0x31c3", got)
	}
	for _, tt := range []struct {
		key  string
		slot int
	}{
		{"foo", 12182},
		{"bar", 5061},
		{"{user1000}.following", 3443},
		{"{user1000}.followers", 3443},
		{"user1000", 3443},
		{"", 0},
	} {
		if got := Slot(tt.key); got != tt.slot {
			t.Errorf("Slot(%q) = %d, want %d", tt.key, got, tt.slot)
		}
	}
}

// trickyEntities are keys whose values hold the characters that would move a
// raw key to another slot or namespace, and pairs that a naive encoding would
// confuse.
func trickyEntities(t testing.TB) []featurestore.EntityKey {
	t.Helper()
	var out []featurestore.EntityKey
	for _, parts := range [][]featurestore.KeyPart{
		{featurestore.StringPart("{")},
		{featurestore.StringPart("}")},
		{featurestore.StringPart("{}")},
		{featurestore.StringPart("}{")},
		{featurestore.StringPart(":")},
		{featurestore.StringPart("*")},
		{featurestore.StringPart("a}b{c")},
		{featurestore.StringPart("x}:view")},
		{featurestore.StringPart("reg.prod")},
		{featurestore.StringPart("")},
		{featurestore.StringPart(" ")},
		{featurestore.StringPart("1")},
		{featurestore.Int64Part(1)},
		{featurestore.StringPart("a"), featurestore.StringPart("bc")},
		{featurestore.StringPart("ab"), featurestore.StringPart("c")},
		{featurestore.StringPart("a"), featurestore.StringPart("b:c")},
		{featurestore.StringPart("a:b"), featurestore.StringPart("c")},
		{featurestore.StringPart("a"), featurestore.Int64Part(1)},
		{featurestore.StringPart("a"), featurestore.StringPart("1")},
		{featurestore.Int64Part(-1), featurestore.StringPart("{*}")},
	} {
		k, err := featurestore.NewEntityKey(parts...)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

func TestKeyNameSlot(t *testing.T) {
	names := map[string]featurestore.EntityKey{}
	for _, e := range trickyEntities(t) {
		enc := e.Encode()
		a, b := Key{View: "card_txn", Entity: e}, Key{View: "card:profile}{", Entity: e}
		if want := "fs:{" + enc + "}:card_txn"; a.Name() != want {
			t.Errorf("%v: name %q, want %q", e, a.Name(), want)
		}
		if tag := hashTag(a.Name()); tag != enc {
			t.Errorf("%v: hash tag of %q is %q, want the encoded key %q", e, a.Name(), tag, enc)
		}
		if a.Slot() != b.Slot() || a.Slot() != int(crc16(enc)%16384) {
			t.Errorf("%v: views in slots %d and %d, want %d", e, a.Slot(), b.Slot(), crc16(enc)%16384)
		}
		if strings.ContainsAny(enc, "{}:*. \t\r\n") {
			t.Errorf("%v: encoding %q has a forbidden character", e, enc)
		}
		if prev, dup := names[a.Name()]; dup {
			t.Errorf("%v and %v share the key %q", prev, e, a.Name())
		}
		names[a.Name()] = e
	}
}

func TestCheckDataField(t *testing.T) {
	for _, bad := range []string{"", "v", "f:", "f:topic:1"} {
		if checkDataField(bad) == nil {
			t.Errorf("checkDataField(%q) accepted a reserved name", bad)
		}
	}
	for _, good := range []string{"t:1", "l", "x", "vv", "fx"} {
		if err := checkDataField(good); err != nil {
			t.Errorf("checkDataField(%q): %v", good, err)
		}
	}
}

func TestBytesOf(t *testing.T) {
	if b := bytesOf(""); b == nil || len(b) != 0 {
		t.Errorf("bytesOf(\"\") = %#v, want empty and not nil", b)
	}
	if b := bytesOf("abc"); string(b) != "abc" {
		t.Errorf("bytesOf(abc) = %q", b)
	}
}

func BenchmarkKeyName(b *testing.B) {
	b.ReportAllocs()
	k := Key{View: "card_txn", Entity: featurestore.StringKey("card_4242424242424242")}
	for b.Loop() {
		_ = k.Name()
	}
}

// FuzzKeySlot checks that whatever the join key values and view name, a key's
// hash tag is exactly the encoded entity key, so every view of an entity
// shares its slot, and that the entity can be read back from the name.
func FuzzKeySlot(f *testing.F) {
	f.Add("card_1", int64(0), "card_txn", false)
	f.Add("a}b{c", int64(-1), "v{x}", true)
	f.Add("{", int64(1), "}", false)
	f.Add("", int64(9), ":", true)
	f.Fuzz(func(t *testing.T, s string, i int64, view string, composite bool) {
		if view == "" {
			return
		}
		parts := []featurestore.KeyPart{featurestore.StringPart(s)}
		if composite {
			parts = append(parts, featurestore.Int64Part(i))
		}
		e, err := featurestore.NewEntityKey(parts...)
		if err != nil {
			t.Fatal(err)
		}
		k := Key{View: view, Entity: e}
		name := k.Name()
		enc, ok := strings.CutPrefix(name, "fs:{")
		if !ok {
			t.Fatalf("name %q lacks the prefix", name)
		}
		enc, rest, ok := strings.Cut(enc, "}:")
		if !ok || rest != view || hashTag(name) != enc {
			t.Fatalf("name %q: tag %q, view %q", name, hashTag(name), rest)
		}
		d, err := featurestore.DecodeEntityKey(enc)
		if err != nil || d != e {
			t.Fatalf("entity of %q: %v, %v", name, d, err)
		}
		if other := (Key{View: "other", Entity: e}); other.Slot() != k.Slot() {
			t.Fatalf("views of %v in slots %d and %d", e, k.Slot(), other.Slot())
		}
	})
}
