package export

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestBloomShrink fills filters sized for many more keys than are added,
// shrinks them, and checks that every key added is still found and that
// false positives stay rare.
func TestBloomShrink(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ sizedFor, keys int }{{1_000_000, 100_000}, {1_000_000, 1_000_000}, {1000, 1}, {1000, 0}, {1 << 20, 5000}} {
		t.Run(fmt.Sprintf("sized=%d/keys=%d", c.sizedFor, c.keys), func(t *testing.T) {
			b := newBloom(int64(c.sizedFor), 1<<30)
			added := make([]uint64, c.keys)
			for i := range added {
				added[i] = rng.Uint64()
				b.add(added[i])
			}
			before := len(b.words)
			b.shrink()
			if c.keys*4 < c.sizedFor && len(b.words) >= before && before > 1 {
				t.Errorf("filter of %d words not shrunk for %d keys", before, c.keys)
			}
			if c.keys > 0 && len(b.words)*64 < c.keys*8 {
				t.Errorf("filter shrunk to %d words for %d keys: under 8 bits a key", len(b.words), c.keys)
			}
			for _, h := range added {
				if !b.has(h) {
					t.Fatalf("key hash %x added but not found after shrinking to %d words", h, len(b.words))
				}
			}
			fp := 0
			const probes = 200_000
			for range probes {
				if b.has(rng.Uint64()) {
					fp++
				}
			}
			if rate := float64(fp) / probes; rate > 0.01 {
				t.Errorf("false positive rate %.4f after shrinking to %d words for %d keys; want under 1%%", rate, len(b.words), c.keys)
			}
		})
	}
}
