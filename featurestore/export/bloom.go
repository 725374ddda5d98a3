package export

import (
	"math"
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

// shrink folds the filter down to about 16 bits per distinct key added,
// estimated from the bits set: it is sized by the entity table's rows, and
// a table with many rows per key leaves most of it empty. A smaller filter
// stays in the processor's caches while the events are checked against
// it, once per event. Folding ORs word pairs (2i, 2i+1), whose hashes share
// all but the last bit of the word index, so every key added is still
// found. It must not run concurrently with add or has.
func (b *bloom) shrink() {
	set := 0
	for _, w := range b.words {
		set += bits.OnesCount64(w)
	}
	total := float64(64 * len(b.words))
	if set == 0 {
		b.words, b.shift = b.words[:1], 64
		return
	}
	// Each key sets 4 bits: the bits set by n keys are about
	// total*(1-exp(-4n/total)).
	keys := -total / 4 * math.Log(1-min(float64(set)/total, 0.999))
	want := max(int(keys*16/64), 1)
	for len(b.words)/2 >= want {
		half := len(b.words) / 2
		for i := range half {
			b.words[i] = b.words[2*i] | b.words[2*i+1]
		}
		b.words = b.words[:half:half]
		b.shift++
	}
}
