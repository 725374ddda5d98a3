package online

import (
	"errors"
	"strconv"
	"strings"

	"github.com/featurestore/featurestore/featurestore"
)

// Key names the online state of one entity in one feature view: one Redis
// hash.
type Key struct {
	// Project namespaces the key, so that projects sharing a Redis never
	// share state; ingest and serving always set it.
	Project string
	View    string
	Entity  featurestore.EntityKey
}

// keyPrefix starts every key of the online store. The registry's keys
// (fs:{reg.<project>}:...) share it but cannot collide: an encoded entity key
// never contains a '.'.
const keyPrefix = "fs:{"

// Name returns the Redis key of the hash:
// fs:{<encoded entity key>}:<project>:<view>, or fs:{<encoded entity key>}:<view>
// without a project.
func (k Key) Name() string {
	// Sized for typical keys so that building the name takes one allocation.
	return stringOf(k.appendName(make([]byte, 0, len(keyPrefix)+48+3+len(k.Project)+len(k.View))))
}

// appendName appends the key's Name to b.
func (k Key) appendName(b []byte) []byte {
	b = append(b, keyPrefix...)
	b, _ = k.Entity.AppendText(b)
	b = append(b, "}:"...)
	if k.Project != "" {
		b = append(b, k.Project...)
		b = append(b, ':')
	}
	return append(b, k.View...)
}

// String returns the Redis key, for messages.
func (k Key) String() string { return k.Name() }

// Slot returns the Redis Cluster hash slot of the key. Every view of one
// entity has the same slot, and a key's slot depends only on its encoded
// entity key, whatever characters the join key values hold.
func (k Key) Slot() int { return Slot(k.Name()) }

func (k Key) validate() error {
	if k.View == "" {
		return errors.New("key has no view name")
	}
	if k.Entity.IsZero() {
		return errors.New("key of view " + strconv.Quote(k.View) + " has no entity key")
	}
	return nil
}

// Names of the fields of an online hash. See the package documentation.
const (
	// VersionField counts the writes to the hash; every write bumps it.
	VersionField = "v"
	// LifetimeField holds the state of the view's lifetime aggregates.
	LifetimeField = "l"
	// LastField holds the view's last values.
	LastField = "x"
	// RingField holds the number of slots of the ring the hash's tiles are
	// laid out in (see SlotField), decimal: a writer whose ring differs
	// lays the tiles out again before it writes one (ErrNeedTiles).
	RingField = "r"

	tilePrefix   = "t:"
	rollupPrefix = "c:"
	fencePrefix  = "f:"
)

// TileField returns the name of the field that holds tile index, the tile
// [index*g, (index+1)*g) of a view with tile size g.
func TileField(index int64) string { return tilePrefix + strconv.FormatInt(index, 10) }

// ParseTileField returns the tile index of a field named by TileField.
func ParseTileField(field string) (index int64, ok bool) {
	s, found := strings.CutPrefix(field, tilePrefix)
	if !found {
		return 0, false
	}
	i, err := strconv.ParseInt(s, 10, 64)
	return i, err == nil && TileField(i) == field
}

// FenceField returns the name of the field that holds the highest offset of
// partition of topic whose events the hash contains.
func FenceField(topic string, partition int32) string {
	return fencePrefix + topic + ":" + strconv.FormatInt(int64(partition), 10)
}

// checkDataField rejects names that only the store itself may write.
func checkDataField(name string) error {
	switch {
	case name == "":
		return errors.New("empty field name")
	case name == VersionField:
		return errors.New("field " + VersionField + " is the store's version counter")
	case strings.HasPrefix(name, fencePrefix):
		return errors.New("field " + strconv.Quote(name) + " is a fence; set fences through Write.Fences")
	}
	return nil
}

// Slot returns the Redis Cluster hash slot of a key name: CRC16 (XMODEM) of
// its hash tag, modulo 16384. The hash tag is what lies between the first '{'
// and the first '}' after it, when that is not empty; else the whole name.
func Slot(name string) int {
	return int(crc16(hashTag(name)) % 16384)
}

// hashTag returns the part of name that Redis Cluster hashes.
func hashTag(name string) string {
	if s := strings.IndexByte(name, '{'); s >= 0 {
		if e := strings.IndexByte(name[s+1:], '}'); e > 0 {
			return name[s+1 : s+1+e]
		}
	}
	return name
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), as in the
// Redis Cluster specification.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^s[i]]
	}
	return crc
}

var crc16Table = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()
