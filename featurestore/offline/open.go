package offline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/s3blob" // s3:// bucket URLs
)

// Open opens the storage of an offline log at location: a local directory
// (Dir), or an S3 bucket URL, s3://bucket?region=...&prefix=path/ (Bucket;
// AWS S3 and S3-compatible stores with an endpoint= parameter, see
// docs/operations.md), checked reachable. Close releases it.
//
// Other bucket URL schemes are refused: file:// (fileblob) and mem://
// (memblob) do not make Create exclusive across processes, which several
// writers sharing a log rely on, and the drivers of gs:// and azblob:// are
// not linked.
func Open(ctx context.Context, location string) (st Storage, close func() error, err error) {
	if !IsURL(location) {
		d, err := NewDir(location)
		if err != nil {
			return nil, nil, err
		}
		return d, func() error { return nil }, nil
	}
	switch scheme, _, _ := strings.Cut(location, "://"); scheme {
	case "s3":
	case "file":
		return nil, nil, fmt.Errorf("offline log %s: use the directory's path instead of a file:// URL (its files are committed by rename and fsync, which file:// buckets do not do)", location)
	default:
		return nil, nil, fmt.Errorf("offline log %s: unsupported scheme %q: give a directory or an s3:// bucket URL", location, scheme)
	}
	b, err := blob.OpenBucket(ctx, location)
	if err != nil {
		return nil, nil, fmt.Errorf("offline log %s: %w", location, err)
	}
	st = NewBucket(b)
	if err := Ping(ctx, st); err != nil {
		_ = b.Close()
		return nil, nil, fmt.Errorf("offline log %s: %w", location, err)
	}
	return st, b.Close, nil
}

// OpenExisting is Open for readers of a log (export, the Flight service,
// compaction): a directory must exist already. Open creates a missing
// directory, as a writer starting a log must; a reader given a mistyped
// directory would create it, read an empty log and export every feature as
// null.
func OpenExisting(ctx context.Context, location string) (st Storage, close func() error, err error) {
	if !IsURL(location) {
		fi, err := os.Stat(location)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, nil, fmt.Errorf("offline log %s: no such directory (ingest and backfill with --offline-dir create it; check the path)", location)
		case err != nil:
			return nil, nil, fmt.Errorf("offline log %s: %w", location, err)
		case !fi.IsDir():
			return nil, nil, fmt.Errorf("offline log %s: not a directory", location)
		}
	}
	return Open(ctx, location)
}

// IsURL tells whether location is a URL (scheme://...) rather than a local
// path.
func IsURL(location string) bool {
	scheme, _, ok := strings.Cut(location, "://")
	return ok && scheme != "" && !strings.ContainsAny(scheme, `/\`)
}

// Ping checks that a storage is reachable: a Dir's directory exists, a
// Bucket's bucket answers. Other storages are taken as reachable.
func Ping(ctx context.Context, st Storage) error {
	if p, ok := st.(interface{ ping(context.Context) error }); ok {
		return p.ping(ctx)
	}
	return nil
}

func (d *Dir) ping(context.Context) error {
	fi, err := os.Stat(d.root)
	if err == nil && !fi.IsDir() {
		err = fmt.Errorf("%s is not a directory", d.root)
	}
	return err
}

func (b *Bucket) ping(ctx context.Context) error {
	ok, err := b.b.IsAccessible(ctx)
	if err == nil && !ok {
		err = errors.New("the bucket does not exist or is not accessible")
	}
	return err
}
