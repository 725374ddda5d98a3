package offline

import (
	"context"
	"fmt"
	"net/url"
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
	scheme, _, isURL := strings.Cut(location, "://")
	if !isURL {
		d, err := NewDir(location)
		if err != nil {
			return nil, nil, err
		}
		return d, func() error { return nil }, nil
	}
	switch scheme {
	case "s3":
	case "file":
		return nil, nil, fmt.Errorf("offline log %s: use the directory's path instead of a file:// URL (its files are committed by rename and fsync, which file:// buckets do not do)", location)
	default:
		return nil, nil, fmt.Errorf("offline log %s: unsupported scheme %q: give a directory or an s3:// bucket URL", location, scheme)
	}
	if _, err := url.Parse(location); err != nil {
		return nil, nil, fmt.Errorf("offline log: %w", err)
	}
	b, err := blob.OpenBucket(ctx, location)
	if err != nil {
		return nil, nil, fmt.Errorf("offline log %s: %w", location, err)
	}
	ok, err := b.IsAccessible(ctx)
	if err == nil && !ok {
		err = fmt.Errorf("the bucket does not exist or is not accessible")
	}
	if err != nil {
		_ = b.Close()
		return nil, nil, fmt.Errorf("offline log %s: %w", location, err)
	}
	return NewBucket(b), b.Close, nil
}
