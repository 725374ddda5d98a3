package offline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// Bucket is a Storage in object storage, through a gocloud.dev/blob bucket
// (S3, GCS, Azure, or any other driver the binary links). An object appears
// whole when its writer closes and never in part, so Put needs no temporary
// object; Create and CreateFrom use the bucket's if-not-exist precondition,
// which the driver must enforce atomically for several writers to share a
// log (S3, GCS and Azure do; memblob does within a process; fileblob does
// not, as it checks and renames without a lock: use Dir for a local
// directory).
type Bucket struct {
	b *blob.Bucket
}

// NewBucket returns the storage over b. The caller keeps b and closes it.
func NewBucket(b *blob.Bucket) *Bucket { return &Bucket{b: b} }

func blobErr(op, name string, err error) error {
	switch gcerrors.Code(err) {
	case gcerrors.NotFound:
		return fmt.Errorf("%s %s: %w (%w)", op, name, ErrNotExist, err)
	case gcerrors.FailedPrecondition:
		return fmt.Errorf("%s %s: %w (%w)", op, name, ErrExist, err)
	}
	return fmt.Errorf("%s %s: %w", op, name, err)
}

// Put implements Storage.
func (b *Bucket) Put(ctx context.Context, name string, write func(io.Writer) error) error {
	return b.upload(ctx, name, write, "put", false)
}

// CreateFrom implements Storage.
func (b *Bucket) CreateFrom(ctx context.Context, name string, write func(io.Writer) error) error {
	return b.upload(ctx, name, write, "create", true)
}

// upload writes the object name with what write produces; with ifNotExist
// only if name does not exist. step names its failpoints.
func (b *Bucket) upload(ctx context.Context, name string, write func(io.Writer) error, step string, ifNotExist bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	// The object is uploaded from a pipe that write fills: the driver's
	// Upload reads until the pipe ends, and commits the object only then.
	// A failed write cancels the upload's context and ends the pipe with
	// its error, which discards the object. (Writing to the driver's own
	// writer instead ends, on an aborted write, in a nil dereference in the
	// Azure driver's Close.)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	uploaded := make(chan error, 1)
	go func() {
		err := b.b.Upload(wctx, name, pr, &blob.WriterOptions{ContentType: "application/octet-stream", IfNotExist: ifNotExist})
		// A driver that stops reading early leaves write blocked on the
		// pipe: make it fail.
		if err != nil {
			pr.CloseWithError(err)
		} else {
			pr.CloseWithError(io.ErrClosedPipe)
		}
		uploaded <- err
	}()
	if err := write(pw); err != nil {
		cancel()
		pw.CloseWithError(err)
		if uerr := <-uploaded; uerr != nil && !errors.Is(uerr, err) && !errors.Is(uerr, context.Canceled) {
			return blobErr("write", name, uerr)
		}
		return fmt.Errorf("write %s: %w", name, err)
	}
	failpoint(step + ":written")
	pw.Close()
	if err := <-uploaded; err != nil {
		return blobErr("write", name, err)
	}
	failpoint(step + ":done")
	return nil
}

// Create implements Storage.
func (b *Bucket) Create(ctx context.Context, name string, data []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	// Upload rather than WriteAll: see Put.
	err := b.b.Upload(ctx, name, bytes.NewReader(data), &blob.WriterOptions{ContentType: "application/json", IfNotExist: true})
	if err != nil {
		return blobErr("create", name, err)
	}
	failpoint("create:done")
	return nil
}

// bucketObject reads an object by ranges, so that reading one record batch
// of a large file fetches only that batch.
type bucketObject struct {
	ctx  context.Context
	b    *blob.Bucket
	name string
	size int64
}

func (o *bucketObject) Size() int64  { return o.size }
func (o *bucketObject) Close() error { return nil }

func (o *bucketObject) ReadAt(p []byte, off int64) (int, error) {
	if off >= o.size {
		return 0, io.EOF
	}
	n := int64(len(p))
	if off+n > o.size {
		n = o.size - off
	}
	r, err := o.b.NewRangeReader(o.ctx, o.name, off, n, nil)
	if err != nil {
		return 0, blobErr("read", o.name, err)
	}
	defer r.Close()
	got, err := io.ReadFull(r, p[:n])
	if err != nil {
		return got, fmt.Errorf("read %s: %w", o.name, err)
	}
	if int(n) < len(p) {
		return got, io.EOF
	}
	return got, nil
}

// Open implements Storage. The object reads with ctx.
func (b *Bucket) Open(ctx context.Context, name string) (Object, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	a, err := b.b.Attributes(ctx, name)
	if err != nil {
		return nil, blobErr("open", name, err)
	}
	return &bucketObject{ctx: ctx, b: b.b, name: name, size: a.Size}, nil
}

// List implements Storage.
func (b *Bucket) List(ctx context.Context, dir string) ([]ObjectInfo, error) {
	prefix := ""
	if dir != "" {
		if err := checkName(dir); err != nil {
			return nil, err
		}
		prefix = dir + "/"
	}
	var out []ObjectInfo
	it := b.b.List(&blob.ListOptions{Prefix: prefix})
	for {
		o, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", dir, err)
		}
		if !o.IsDir {
			out = append(out, ObjectInfo{Name: o.Key, Size: o.Size, ModTime: o.ModTime})
		}
	}
}

// Delete implements Storage.
func (b *Bucket) Delete(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := b.b.Delete(ctx, name); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return blobErr("delete", name, err)
	}
	return nil
}
