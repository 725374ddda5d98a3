package online

import "unsafe"

// Conversions without copies, as VictoriaMetrics' bytesutil: Redis replies
// arrive as strings, and copying every tile blob of a lookup would cost as
// much again as reading them.

// bytesOf returns the bytes of s without copying them. The caller must not
// modify them. An empty s gives an empty, non-nil slice, so that a present but
// empty value stays distinct from an absent one (nil).
func bytesOf(s string) []byte {
	if len(s) == 0 {
		return []byte{}
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// stringOf returns b as a string without copying it. b must not be modified
// afterwards.
func stringOf(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
