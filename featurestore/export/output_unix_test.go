//go:build unix

package export

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// TestOutputFileMode: an export's output gets the mode a created file gets,
// 0666 less the umask, so that a umask of 077 keeps a training set private
// (it was 0644 whatever the umask).
func TestOutputFileMode(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil)
	for _, c := range []struct {
		umask int
		want  os.FileMode
	}{{0o022, 0o644}, {0o077, 0o600}} {
		for _, format := range []Format{FormatArrow, FormatParquet} {
			path := filepath.Join(t.TempDir(), "out."+string(format))
			old := syscall.Umask(c.umask)
			s, err := createSink(path, format, schema, memory.DefaultAllocator, nil)
			syscall.Umask(old)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.commit(); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != c.want {
				t.Errorf("umask %03o, %s: mode %v, want %v", c.umask, format, fi.Mode().Perm(), c.want)
			}
		}
	}
}
