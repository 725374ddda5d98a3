package offline

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Dir is a Storage in a local directory. A Put writes a temporary file
// beside its target, fsyncs it, renames it over the target and fsyncs the
// directory, so a crash leaves either the old object or the new one, plus
// at most a temporary file that List reports as Temp. Create links the
// temporary file to its target instead of renaming, which fails when the
// target exists. New directories are fsynced into their parents.
type Dir struct {
	root string
	dirs sync.Map // directories known to exist and be durable
}

// tempMarker is in the name of every temporary file, which also starts with
// a dot: ".<name>~tmp-<random>". A tilde is in no name the log writes
// (projects, views and topics are of [A-Za-z0-9._-]), so that no data file
// or manifest entry is ever taken for a temporary file and deleted.
const tempMarker = "~tmp-"

// oldTempMarker is in the names of the temporary files of earlier versions:
// ".<name>.tmp-<random>", the random part of digits and lower-case letters.
// A topic may start with a dot and contain ".tmp-" too (".orders.tmp-v2"),
// so only a name that ends in ".tmp-" and such a random part is one: every
// name the log writes ends otherwise (data files in ".arrow", manifest
// entries in ".json", the checkpoint hint in "CHECKPOINT").
const oldTempMarker = ".tmp-"

// isTempName reports whether base is the name of a temporary file, of this
// version or an earlier one.
func isTempName(base string) bool {
	if !strings.HasPrefix(base, ".") {
		return false
	}
	if strings.Contains(base, tempMarker) {
		return true
	}
	i := strings.LastIndex(base, oldTempMarker)
	if i < 0 {
		return false
	}
	random := base[i+len(oldTempMarker):]
	for j := 0; j < len(random); j++ {
		if c := random[j]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return random != ""
}

// NewDir returns the storage rooted at dir, creating it if needed.
func NewDir(dir string) (*Dir, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("offline directory %s: %w", dir, err)
	}
	return &Dir{root: dir}, nil
}

// Root returns the directory the storage is rooted at.
func (d *Dir) Root() string { return d.root }

func (d *Dir) path(name string) string { return filepath.Join(d.root, filepath.FromSlash(name)) }

// mkdirs creates the directory of name and its missing parents, fsyncing
// each into its parent so that a file renamed into it survives a crash:
// also one that exists, once per Dir, since the process that made it
// may have crashed before its parent was synced.
func (d *Dir) mkdirs(dir string) error {
	if dir == "." || dir == "" {
		return nil
	}
	if _, ok := d.dirs.Load(dir); ok {
		return nil
	}
	if err := d.mkdirs(path.Dir(dir)); err != nil {
		return err
	}
	p := d.path(dir)
	if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return err
	}
	d.dirs.Store(dir, true)
	return nil
}

// syncedDir, when set (by tests), is called with each directory synced.
var syncedDir func(dir string)

func syncDir(dir string) error {
	if syncedDir != nil {
		syncedDir(dir)
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// CreateTemp creates a new file in dir named prefix and a random suffix, as
// os.CreateTemp does, but with the mode os.Create gives (0666 less the
// umask, so usually 0644) rather than 0600: the log's files are read by
// exports, Flight servers, compactions and notebooks that may run as other
// users than ingest, and renamed into place as they are (and so are
// exports' outputs). A umask such as 077 keeps them private.
func CreateTemp(dir, prefix string) (*os.File, error) {
	for range 10000 {
		name := filepath.Join(dir, prefix+strconv.FormatUint(rand.Uint64(), 36))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, fmt.Errorf("create a temporary file in %s: too many names taken", dir)
}

// writeTemp writes a durable temporary file beside name and returns its path.
func (d *Dir) writeTemp(ctx context.Context, name, step string, write func(io.Writer) error) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := d.mkdirs(path.Dir(name)); err != nil {
		return "", fmt.Errorf("create directory of %s: %w", name, err)
	}
	f, err := CreateTemp(filepath.Dir(d.path(name)), "."+path.Base(name)+tempMarker)
	if err != nil {
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	failpoint(step + ":created")
	bw := bufio.NewWriterSize(f, 256<<10)
	if err := write(bw); err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	failpoint(step + ":written")
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	failpoint(step + ":synced")
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	return tmp, nil
}

// Put implements Storage.
func (d *Dir) Put(ctx context.Context, name string, write func(io.Writer) error) error {
	tmp, err := d.writeTemp(ctx, name, "put", write)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, d.path(name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	failpoint("put:renamed")
	if err := syncDir(filepath.Dir(d.path(name))); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	failpoint("put:done")
	return nil
}

// Create implements Storage.
func (d *Dir) Create(ctx context.Context, name string, data []byte) error {
	return d.CreateFrom(ctx, name, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// CreateFrom implements Storage.
func (d *Dir) CreateFrom(ctx context.Context, name string, write func(io.Writer) error) error {
	tmp, err := d.writeTemp(ctx, name, "create", write)
	if err != nil {
		return err
	}
	err = os.Link(tmp, d.path(name))
	os.Remove(tmp)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", name, ErrExist)
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	failpoint("create:linked")
	if err := syncDir(filepath.Dir(d.path(name))); err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	failpoint("create:done")
	return nil
}

type fileObject struct {
	*os.File
	size int64
}

func (f fileObject) Size() int64 { return f.size }

// Open implements Storage.
func (d *Dir) Open(_ context.Context, name string) (Object, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	f, err := os.Open(d.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open %s: %w", name, ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	return fileObject{File: f, size: st.Size()}, nil
}

// List implements Storage.
func (d *Dir) List(ctx context.Context, dir string) ([]ObjectInfo, error) {
	base := d.root
	if dir != "" {
		if err := checkName(dir); err != nil {
			return nil, err
		}
		base = d.path(dir)
	}
	var out []ObjectInfo
	err := filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while listing, or no such directory
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.IsDir() || !e.Type().IsRegular() {
			return nil
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		out = append(out, ObjectInfo{Name: filepath.ToSlash(rel), Size: info.Size(), ModTime: info.ModTime(), Temp: isTempName(e.Name())})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", path.Join(d.root, dir), err)
	}
	return out, nil
}

// Delete implements Storage.
func (d *Dir) Delete(_ context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := os.Remove(d.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// failpoint is called at each step of a write; crash tests replace it to
// stop the process there.
var failpoint = func(string) {}
