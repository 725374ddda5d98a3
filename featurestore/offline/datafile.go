package offline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// errPartitionTaken is what createFile returns when the name it writes is
// taken because another writer committed the partition: the stream is lost.
var errPartitionTaken = errors.New("another writer committed the partition")

// errFileBusy is what a flush fails with while a name it writes holds an
// uncommitted file with other rows that is younger than the orphan grace:
// a file that another writer may be about to commit. The flush is retried;
// by then that writer has committed it (and this one finds its partition
// lost), or the file has aged into an orphan and is replaced.
var errFileBusy = errors.New("an uncommitted file of another writer, or of an interrupted write, holds the name")

// createFile writes the data file of fb as name (its path within the view's
// directory) and returns its size. File names are deterministic in
// (topic, partition, offset range), so another writer can write the same
// name: the partition's new owner after a rebalance, a second run of the
// same backfill. A file that may be committed must never be replaced by
// other rows (its manifest entry describes its rows, schema and size), nor
// be missing for a moment, so the file is created exclusively, and a name
// that exists is settled from the manifest read again:
//
//   - The partition moved on since this writer's commit: another writer
//     committed it (perhaps this very name), and the stream is lost
//     (errPartitionTaken), as the commit would find.
//   - Otherwise the file was uncommitted when the manifest was read: left
//     by an interrupted attempt (this writer's own failed commit, a crash
//     before the commit), or another writer's that it has not committed
//     yet, and may commit at any moment from now on. So a file holding the
//     same rows (schema, offsets and event times; ingest times may differ)
//     is never deleted: when this writer's file would have the very same
//     layout (batches and size), it is replaced atomically (Storage.Put),
//     so that its age starts over (another process's clean-up, ingest's
//     grace is 10 minutes, must not delete it before this writer commits
//     it) while the name holds, to every reader, a whole file of the same
//     events laid out the same; otherwise it is used as it is, with its
//     size. A file with other rows older than the orphan grace is an
//     orphan, as RemoveOrphans has it: deleted and created again. Otherwise
//     the flush fails with errFileBusy, to be retried (ingest retries; a
//     backfill fails, to be run again).
//
// The delete of an orphan has the same narrow window as RemoveOrphans: a
// writer that replaced the orphan, or commits it after holding it past the
// grace, between the listing and the delete loses its file.
func (w *Writer) createFile(ctx context.Context, m *manifest, st *stream, p string, fb *fileBuilder) (int64, error) {
	name := viewDir(w.project, st.id.view) + "/" + p
	write := func(n *int64) func(io.Writer) error {
		return func(out io.Writer) error {
			cw := &countingWriter{w: out}
			err := writeIPC(cw, w.mem, fb.s.arrow, fb.batches)
			*n = cw.n
			return err
		}
	}
	for range 3 {
		var n int64
		err := w.st.CreateFrom(ctx, name, write(&n))
		if !errors.Is(err, ErrExist) {
			return n, err
		}
		m.mu.Lock()
		err = m.refresh(ctx)
		cur, ok := m.position(st.id.topic, st.id.partition)
		_, committed := m.files[p]
		m.mu.Unlock()
		switch {
		case err != nil:
			return 0, err
		case ok != st.hasKnown || ok && cur.Offset != st.known.Offset:
			return 0, errPartitionTaken
		case committed:
			// Only a commit that moves the partition adds its files.
			return 0, fmt.Errorf("write %s: committed, though the partition's position is where this writer left it", name)
		}
		mod, found, err := modTime(ctx, w.st, name)
		if err != nil {
			return 0, err
		}
		if !found {
			continue // removed since: create it
		}
		age, grace := w.opts.Now().Sub(mod), w.opts.OrphanGrace
		orphan := grace <= 0 || age >= grace
		same, err := sameRows(ctx, w.st, name, fb)
		switch {
		case err != nil && !orphan:
			return 0, fmt.Errorf("write %s: %w, written %s ago, and it cannot be compared: %v", name, errFileBusy, age.Round(time.Second), err)
		case err == nil && same.rows:
			if !same.layout || ipcSize(w.mem, fb) != same.size {
				return same.size, nil
			}
			err := w.st.Put(ctx, name, write(&n))
			return n, err
		case orphan:
			if err := w.st.Delete(ctx, name); err != nil {
				return 0, err
			}
			continue
		}
		return 0, fmt.Errorf("write %s: %w, written %s ago with other rows; a flush fails until it is committed or older than the orphan grace (%s)",
			name, errFileBusy, age.Round(time.Second), grace)
	}
	return 0, fmt.Errorf("write %s: the name was taken again after each removal", name)
}

// ipcSize returns the size of the file fb writes.
func ipcSize(mem memory.Allocator, fb *fileBuilder) int64 {
	cw := &countingWriter{w: io.Discard}
	if err := writeIPC(cw, mem, fb.s.arrow, fb.batches); err != nil {
		return -1
	}
	return cw.n
}

// modTime returns when the object name was written, by listing its
// directory (found false when it is not there).
func modTime(ctx context.Context, st Storage, name string) (time.Time, bool, error) {
	objs, err := st.List(ctx, path.Dir(name))
	if err != nil {
		return time.Time{}, false, err
	}
	for _, o := range objs {
		if o.Name == name && !o.Temp {
			return o.ModTime, true, nil
		}
	}
	return time.Time{}, false, nil
}

// sameness is how a log file compares with the rows of a fileBuilder.
type sameness struct {
	rows   bool  // the same schema, and the same offsets and event times in order
	layout bool  // rows, cut into record batches of the same sizes
	size   int64 // of the file
}

// sameRows compares the log file name with the rows fb would write, as far
// as a file's manifest entry describes them (the schema, and in order the
// offsets and event times: the same events of the same partition), and
// their cut into record batches.
func sameRows(ctx context.Context, st Storage, name string, fb *fileBuilder) (sameness, error) {
	f, err := OpenFile(ctx, st, name)
	if err != nil {
		return sameness{}, err
	}
	defer f.Close()
	if schemaFingerprint(f.Schema()) != fb.s.fingerprint {
		return sameness{}, nil
	}
	// A cursor over fb's rows.
	bi, ri := 0, 0
	next := func() (off, ts int64, ok bool) {
		for bi < len(fb.batches) && ri >= int(fb.batches[bi].NumRows()) {
			bi, ri = bi+1, 0
		}
		if bi == len(fb.batches) {
			return 0, 0, false
		}
		b := fb.batches[bi]
		off, ts = b.Column(4).(*array.Int64).Value(ri), int64(b.Column(0).(*array.Timestamp).Value(ri))
		ri++
		return off, ts, true
	}
	layout := f.NumBatches() == len(fb.batches)
	for i := range f.NumBatches() {
		rec, err := f.Batch(i)
		if err != nil {
			return sameness{}, err
		}
		layout = layout && rec.NumRows() == fb.batches[i].NumRows()
		same := sameBatch(rec, next)
		rec.Release()
		if !same {
			return sameness{}, nil
		}
	}
	if _, _, more := next(); more {
		return sameness{}, nil
	}
	return sameness{rows: true, layout: layout, size: f.o.Size()}, nil
}

// sameBatch reports whether the offsets and event times of rec are the next
// ones of next.
func sameBatch(rec arrow.RecordBatch, next func() (int64, int64, bool)) bool {
	offs, times := rec.Column(4).(*array.Int64), rec.Column(0).(*array.Timestamp)
	for r := range int(rec.NumRows()) {
		off, ts, ok := next()
		if !ok || off != offs.Value(r) || ts != int64(times.Value(r)) {
			return false
		}
	}
	return true
}
