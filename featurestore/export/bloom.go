package export

import (
	"math/bits"
	"sync/atomic"
)

// bloom is a blocked Bloom filter of key hashes: each key sets 4 bits of one
// 64-bit word. The export fills it with the keys of the entity table and
// drops the events of other keys before spilling them; a false positive
// only spills an event that the sweep then skips.
type bloom struct {
	words []uint64
	shift uint // the word of hash h is h >> shift
}

// newBloom returns a filter for about n keys, at 16 bits a key (about 0.1%
// false positives), and at most maxBytes.
func newBloom(n, maxBytes int64) *bloom {
	want := max(n*16/64, 1)
	limit := max(maxBytes/8, 1)
	words := uint64(1) << bits.Len64(uint64(min(want, limit)-1))
	if int64(words) > limit && words > 1 {
		words >>= 1
	}
	return &bloom{words: make([]uint64, words), shift: uint(64 - bits.TrailingZeros64(words))}
}

func (b *bloom) word(h uint64) int {
	if b.shift == 64 {
		return 0
	}
	return int(h >> b.shift)
}

// mask returns the 4 bits of a hash within its word, from its low 24 bits.
func mask(h uint64) uint64 {
	return 1<<(h&63) | 1<<(h>>6&63) | 1<<(h>>12&63) | 1<<(h>>18&63)
}

// add adds a key hash; it is safe for concurrent use.
func (b *bloom) add(h uint64) { atomic.OrUint64(&b.words[b.word(h)], mask(h)) }

// has reports whether a key hash may have been added. It must not run
// concurrently with add.
func (b *bloom) has(h uint64) bool {
	m := mask(h)
	return b.words[b.word(h)]&m == m
}
