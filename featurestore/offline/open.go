package offline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob:// bucket URLs
	_ "gocloud.dev/blob/gcsblob"   // gs:// bucket URLs
	_ "gocloud.dev/blob/s3blob"    // s3:// bucket URLs
	"golang.org/x/oauth2/google"
)

// Open opens the storage of an offline log at location: a local directory
// (Dir), an S3 bucket URL, s3://bucket?region=...&prefix=path/ (AWS S3 and
// S3-compatible stores with an endpoint= parameter), a Google Cloud Storage
// bucket URL, gs://bucket?prefix=path/, or an Azure Blob Storage container
// URL, azblob://container?prefix=path/ (Bucket; see docs/operations.md),
// checked reachable. Close releases it.
//
// Other bucket URL schemes are refused: file:// (fileblob) and mem://
// (memblob) do not make Create exclusive across processes, which several
// writers sharing a log rely on.
func Open(ctx context.Context, location string) (st Storage, close func() error, err error) {
	if !IsURL(location) {
		d, err := NewDir(location)
		if err != nil {
			return nil, nil, err
		}
		return d, func() error { return nil }, nil
	}
	b, err := OpenBucketURL(ctx, location)
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

// OpenBucketURL opens the bucket of a URL of a linked scheme: s3://, gs://
// or azblob://, with gocloud.dev/blob's parameters; a gs:// URL must have
// credentials to use (see gcsCredentials), an azblob:// one a storage
// account (azureAccount). The export's object URLs open their buckets
// through it too.
func OpenBucketURL(ctx context.Context, bucketURL string) (*blob.Bucket, error) {
	switch scheme, _, _ := strings.Cut(bucketURL, "://"); scheme {
	case "s3":
	case "gs":
		if err := gcsCredentials(ctx, bucketURL); err != nil {
			return nil, err
		}
	case "azblob":
		if err := azureAccount(bucketURL); err != nil {
			return nil, err
		}
	case "file":
		return nil, errors.New("use the directory's path instead of a file:// URL (its files are committed by rename and fsync, which file:// buckets do not do)")
	default:
		return nil, fmt.Errorf("unsupported scheme %q: give a directory, or an s3://, gs:// or azblob:// bucket URL", scheme)
	}
	return blob.OpenBucket(ctx, bucketURL)
}

// gcsCredentials checks that a gs:// bucket URL has credentials to use:
// Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's
// application-default login, or the service account of GCE, GKE or Cloud
// Run), unless the URL says otherwise (anonymous, access_id or
// private_key_path) or STORAGE_EMULATOR_HOST points at an emulator. The
// driver goes on without credentials when it finds none, printing a
// warning to stdout, and the first request then fails with a message
// about a private key.
func gcsCredentials(ctx context.Context, location string) error {
	if os.Getenv("STORAGE_EMULATOR_HOST") != "" || os.Getenv("STORAGE_EMULATOR_HOST_GRPC") != "" {
		return nil
	}
	if u, err := url.Parse(location); err == nil {
		q := u.Query()
		if q.Has("anonymous") || q.Has("access_id") || q.Has("private_key_path") {
			return nil
		}
	}
	if _, err := google.FindDefaultCredentials(ctx, "https://www.googleapis.com/auth/devstorage.read_write"); err != nil {
		return fmt.Errorf("no Google Cloud credentials (%w): set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, "+
			"run `gcloud auth application-default login`, or run as a service account on GCE, GKE or Cloud Run", err)
	}
	return nil
}

// azureAccount checks that an azblob:// URL names its storage account:
// AZURE_STORAGE_ACCOUNT, a connection string
// (AZURE_STORAGE_CONNECTION_STRING), or the URL's storage_account
// parameter. Without one the driver would address no account and fail
// with a message about the URL. Credentials are the driver's:
// AZURE_STORAGE_KEY, a connection string, AZURE_STORAGE_SAS_TOKEN, or else
// Azure's DefaultAzureCredential (workload or managed identity, the Azure
// CLI's login), whose error lists what it tried.
func azureAccount(location string) error {
	if os.Getenv("AZURE_STORAGE_ACCOUNT") != "" || os.Getenv("AZURE_STORAGE_CONNECTION_STRING") != "" ||
		os.Getenv("AZURE_STORAGEBLOB_CONNECTIONSTRING") != "" {
		return nil
	}
	if u, err := url.Parse(location); err == nil && u.Query().Get("storage_account") != "" {
		return nil
	}
	return errors.New("no Azure storage account: set AZURE_STORAGE_ACCOUNT (with AZURE_STORAGE_KEY, " +
		"AZURE_STORAGE_SAS_TOKEN or an Azure identity) or AZURE_STORAGE_CONNECTION_STRING, or add storage_account= to the URL")
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
