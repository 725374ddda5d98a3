package cmd

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/featurestore/featurestore/featurestore/offline"
)

// An object URL names one object of a bucket: s3://bucket/key?params,
// gs://bucket/key?params or azblob://container/key?params, the bucket
// URL's parameters (region, endpoint, ...; docs/operations.md) with
// the object's key as the path. The export reads its entity table from one
// and writes its training set to one, through a local file in its temporary
// directory: the table readers need random access, and the object appears
// whole when the upload completes.

// isObjectURL tells whether s is an object URL rather than a local path.
func isObjectURL(s string) bool { return offline.IsURL(s) }

// openObjectURL opens the bucket of an object URL and returns its key.
func openObjectURL(ctx context.Context, s string) (*blob.Bucket, string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", s, err)
	}
	if u.Scheme != "s3" && u.Scheme != "gs" && u.Scheme != "azblob" {
		return nil, "", fmt.Errorf("%s: unsupported scheme %q: give a local path, or an s3://, gs:// or azblob:// object URL", s, u.Scheme)
	}
	key := strings.TrimPrefix(u.Path, "/")
	if u.Host == "" || key == "" || strings.HasSuffix(key, "/") {
		return nil, "", fmt.Errorf("%s: want %s://BUCKET/KEY, the key naming a file", s, u.Scheme)
	}
	b, err := offline.OpenBucketURL(ctx, (&url.URL{Scheme: u.Scheme, Host: u.Host, RawQuery: u.RawQuery}).String())
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", s, err)
	}
	return b, key, nil
}

// objectBase returns the last element of an object URL's key.
func objectBase(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "object"
	}
	return path.Base(u.Path)
}

// downloadObject copies the object of an object URL to the file local.
func downloadObject(ctx context.Context, s, local string) error {
	b, key, err := openObjectURL(ctx, s)
	if err != nil {
		return err
	}
	defer b.Close()
	r, err := b.NewReader(ctx, key, nil)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return fmt.Errorf("%s: no such object", s)
		}
		return fmt.Errorf("%s: %w", s, err)
	}
	defer r.Close()
	f, err := os.Create(local)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("download %s: %w", s, err)
	}
	return f.Close()
}

// uploadObject copies the file at local to the object of an object URL; the
// object appears whole when the upload completes, or not at all
// (offline.Bucket.Put).
func uploadObject(ctx context.Context, local, s string) error {
	b, key, err := openObjectURL(ctx, s)
	if err != nil {
		return err
	}
	defer b.Close()
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	err = offline.NewBucket(b).Put(ctx, key, func(w io.Writer) error {
		_, err := io.Copy(w, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("upload %s: %w", s, err)
	}
	return nil
}
