package cmd

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenHash(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The reference: sha256sum of the token without the newline.
	sum := sha256.Sum256([]byte("fst_abc-DEF_123"))
	want := hex.EncodeToString(sum[:]) + "\n"
	for _, c := range []struct {
		name, content string
		code          int
		out, err      string
	}{
		{"plain", "fst_abc-DEF_123", 0, want, ""},
		{"echo newline", "fst_abc-DEF_123\n", 0, want, ""},
		{"crlf and spaces", "  fst_abc-DEF_123\r\n", 0, want, ""},
		{"empty", "\n", 1, "", "no token"},
		{"inner space", "fst abc\n", 1, "", "the token contains white space or control characters"},
		{"control character", "fst\x00abc", 1, "", "the token contains white space or control characters"},
		{"too long", strings.Repeat("a", maxTokenBytes+1), 1, "", "longer than 4096 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := write(strings.ReplaceAll(c.name, " ", "_"), c.content)
			code, out, errOut := runCLI(t, nil, "token", "hash", p)
			if code != c.code || out != c.out || !strings.Contains(errOut, c.err) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q", code, out, errOut, c.code, c.out, c.err)
			}
		})
	}
}

func TestTokenNew(t *testing.T) {
	seen := map[string]bool{}
	for range 3 {
		code, out, errOut := runCLI(t, nil, "token", "new")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		tok, ok1 := strings.CutPrefix(lines[0], "token: ")
		hash, ok2 := strings.CutPrefix(lines[len(lines)-1], "token_sha256: ")
		if len(lines) != 2 || !ok1 || !ok2 || !strings.HasPrefix(tok, "fst_") || len(tok) != 4+43 {
			t.Fatalf("output %q", out)
		}
		sum := sha256.Sum256([]byte(tok))
		if hash != hex.EncodeToString(sum[:]) {
			t.Errorf("hash %s of %s, want %x", hash, tok, sum)
		}
		if seen[tok] {
			t.Errorf("token %s twice", tok)
		}
		seen[tok] = true
	}
}

func TestTokenUsage(t *testing.T) {
	for _, args := range [][]string{{"token"}, {"token", "mint"}, {"token", "new", "x"}, {"token", "hash", "a", "b"}} {
		if code, _, errOut := runCLI(t, nil, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2\n%s", args, code, errOut)
		}
	}
	if code, _, errOut := runCLI(t, nil, "token", "hash", filepath.Join(t.TempDir(), "missing")); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: exit %d\n%s", code, errOut)
	}
}
