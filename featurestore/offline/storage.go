package offline

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"
)

// Storage holds the files of the offline log and its manifest. Names are
// slash-separated paths relative to the storage's root, like
// "proj/view/date=2024-05-01/txns-0-10-99.arrow". The log owns this
// interface; a local directory (Dir) and object storage (Bucket) implement it.
type Storage interface {
	// Put writes the object name with what write produces, atomically: once
	// Put returns nil the whole object is durable under name; if it fails or
	// the process dies, name holds nothing or what it held before, never a
	// part. An existing object is replaced.
	Put(ctx context.Context, name string, write func(io.Writer) error) error
	// Create writes the object name with data, atomically and durably as
	// Put, but only if name does not exist: otherwise it writes nothing and
	// returns an error satisfying errors.Is(err, ErrExist). It is how
	// concurrent writers agree on the order of manifest entries.
	Create(ctx context.Context, name string, data []byte) error
	// CreateFrom is Create with what write produces, streamed as Put
	// streams it. The writer writes data files with it, so that a file
	// another writer may have committed under the same (deterministic)
	// name is never replaced.
	CreateFrom(ctx context.Context, name string, write func(io.Writer) error) error
	// Open opens an object for reading. A missing object is an error
	// satisfying errors.Is(err, ErrNotExist).
	Open(ctx context.Context, name string) (Object, error)
	// List returns every object whose name starts with dir + "/", at any
	// depth, with unfinished temporary objects (Temp set) where the storage
	// has any. The order is unspecified.
	List(ctx context.Context, dir string) ([]ObjectInfo, error)
	// Delete removes an object. Deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error
}

// Object is an open stored object.
type Object interface {
	io.ReaderAt
	io.Closer
	// Size returns the object's size in bytes.
	Size() int64
}

// ObjectInfo describes a listed object.
type ObjectInfo struct {
	Name    string
	Size    int64
	ModTime time.Time
	// Temp marks what a Put or Create left behind when it did not finish:
	// never a committed object, always safe to delete once no write is in
	// progress.
	Temp bool
}

// The errors a Storage reports, to be tested with errors.Is.
var (
	ErrExist    = errors.New("object exists")
	ErrNotExist = errors.New("object does not exist")
)

// readAll reads a whole object.
func readAll(ctx context.Context, st Storage, name string) ([]byte, error) {
	o, err := st.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	b := make([]byte, o.Size())
	if _, err := o.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

// checkName rejects names that could escape the root or mean two things.
func checkName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") {
		return errors.New("bad object name " + name)
	}
	for _, p := range strings.Split(name, "/") {
		if p == "" || p == "." || p == ".." || strings.ContainsAny(p, "\\\x00") {
			return errors.New("bad object name " + name)
		}
	}
	return nil
}
