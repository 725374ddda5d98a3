package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// FileStore keeps registry versions in a local directory: versions/N.json
// holds each version, HEAD the newest number. Commits take an exclusive lock
// on the directory and replace files atomically (write, fsync, rename, fsync
// the directory), so a crash never leaves a half-written version visible.
// It serves tests and dev mode; shared deployments use the Redis store.
type FileStore struct {
	dir string
}

// OpenFileStore opens (creating if needed) a file store in dir.
func OpenFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(filepath.Join(dir, "versions"), 0o755); err != nil {
		return nil, fmt.Errorf("open file registry: %w", err)
	}
	return &FileStore{dir: dir}, nil
}

type fileVersion struct {
	Info     VersionInfo     `json:"info"`
	Registry json.RawMessage `json:"registry"`
}

// Head returns the newest version number, 0 for none.
func (s *FileStore) Head(_ context.Context) (int64, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "HEAD"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read registry head: %w", err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read registry head %s: %w", filepath.Join(s.dir, "HEAD"), err)
	}
	return v, nil
}

func (s *FileStore) versionPath(v int64) string {
	return filepath.Join(s.dir, "versions", fmt.Sprintf("%010d.json", v))
}

func (s *FileStore) read(v int64) (*fileVersion, error) {
	b, err := os.ReadFile(s.versionPath(v))
	if err != nil {
		return nil, fmt.Errorf("read registry version %d: %w", v, err)
	}
	var fv fileVersion
	if err := json.Unmarshal(b, &fv); err != nil {
		return nil, fmt.Errorf("read registry version %d: %w", v, err)
	}
	return &fv, nil
}

// Get returns version v. A version above HEAD does not exist, even if its
// file does: a crash between writing the file and moving HEAD leaves one
// that was never committed.
func (s *FileStore) Get(ctx context.Context, v int64) (*Snapshot, error) {
	head, err := s.Head(ctx)
	if err != nil {
		return nil, err
	}
	if v < 1 || v > head {
		return nil, fmt.Errorf("registry version %d does not exist", v)
	}
	fv, err := s.read(v)
	if err != nil {
		return nil, err
	}
	return SnapshotOf(fv.Info, fv.Registry)
}

// Info returns the info of version v, without decoding its definitions.
func (s *FileStore) Info(ctx context.Context, v int64) (VersionInfo, error) {
	head, err := s.Head(ctx)
	if err != nil {
		return VersionInfo{}, err
	}
	if v < 1 || v > head {
		return VersionInfo{}, fmt.Errorf("registry version %d does not exist", v)
	}
	fv, err := s.read(v)
	if err != nil {
		return VersionInfo{}, err
	}
	return fv.Info, nil
}

// SnapshotOf rebuilds a stored version from its info and content (the
// canonical JSON as committed). It refuses content whose SHA-256 is not the
// recorded digest, so that a snapshot never pairs one version's info with
// other definitions; stores call it in Get.
func SnapshotOf(info VersionInfo, content []byte) (*Snapshot, error) {
	sum := sha256.Sum256(content)
	if d := "sha256:" + hex.EncodeToString(sum[:]); d != info.Digest {
		return nil, fmt.Errorf("registry version %d: content has digest %s, not the recorded %s", info.Version, d, info.Digest)
	}
	r, err := FromJSON(content)
	if err != nil {
		return nil, fmt.Errorf("registry version %d: %w", info.Version, err)
	}
	return &Snapshot{VersionInfo: info, Registry: r}, nil
}

// Versions lists every version, newest first.
func (s *FileStore) Versions(ctx context.Context) ([]VersionInfo, error) {
	head, err := s.Head(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]VersionInfo, 0, head)
	for v := head; v >= 1; v-- {
		fv, err := s.read(v)
		if err != nil {
			return nil, err
		}
		out = append(out, fv.Info)
	}
	return out, nil
}

// Commit stores content as version expected+1 if HEAD is still expected.
func (s *FileStore) Commit(ctx context.Context, expected int64, info VersionInfo, content []byte) (VersionInfo, error) {
	lock, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return VersionInfo{}, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return VersionInfo{}, fmt.Errorf("lock %s: %w", s.dir, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing unlocks too

	head, err := s.Head(ctx)
	if err != nil {
		return VersionInfo{}, err
	}
	if head != expected {
		return VersionInfo{}, fmt.Errorf("%w: head is version %d, not %d", ErrConflict, head, expected)
	}
	info.Version = expected + 1
	b, err := json.Marshal(fileVersion{Info: info, Registry: content})
	if err != nil {
		return VersionInfo{}, err
	}
	if err := writeFileAtomic(s.versionPath(info.Version), b); err != nil {
		return VersionInfo{}, err
	}
	if err := writeFileAtomic(filepath.Join(s.dir, "HEAD"), []byte(strconv.FormatInt(info.Version, 10)+"\n")); err != nil {
		return VersionInfo{}, err
	}
	return info, nil
}

// Close does nothing; a file store holds no resources between calls.
func (s *FileStore) Close() error { return nil }

// writeFileAtomic makes path hold b, or leaves it as it was.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename, there is nothing to remove
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
