//go:build unix

package offline

import (
	"context"
	"io"
	"os"
	"syscall"
	"testing"
)

// TestDirFileModes: a directory's files get the mode a created file gets
// (0666 less the umask), not a temporary file's 0600: exports, Flight
// servers and notebooks of other users read them.
func TestDirFileModes(t *testing.T) {
	for _, c := range []struct {
		umask int
		want  os.FileMode
	}{{0o022, 0o644}, {0o077, 0o600}} {
		old := syscall.Umask(c.umask)
		d, err := NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		write := func(w io.Writer) error { _, err := io.WriteString(w, "x"); return err }
		for name, err := range map[string]error{
			"v/put":         d.Put(ctx, "v/put", write),
			"v/create":      d.Create(ctx, "v/create", []byte("x")),
			"v/create-from": d.CreateFrom(ctx, "v/create-from", write),
		} {
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(d.path(name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != c.want {
				t.Errorf("umask %03o: %s has mode %v, want %v", c.umask, name, fi.Mode().Perm(), c.want)
			}
		}
		syscall.Umask(old)
	}
}
