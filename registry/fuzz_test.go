package registry

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the loader next to the valid base
// definitions: it must never panic, and whatever it accepts must survive a
// round trip through the canonical form.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.bad.yaml")
	examples, _ := filepath.Glob("../examples/*.yaml")
	for _, p := range append(files, examples...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	base, err := os.ReadFile("testdata/base/base.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := LoadFiles(map[string][]byte{"base.yaml": base, "fuzz.yaml": data})
		if err != nil {
			if _, ok := err.(ErrorList); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		back, err := FromJSON(r.CanonicalJSON())
		if err != nil {
			t.Fatalf("accepted definitions do not round-trip: %v", err)
		}
		if back.Digest() != r.Digest() {
			t.Fatalf("round trip changed the digest")
		}
	})
}
