package offline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// CompactOptions configure Compact. Zero fields take the defaults.
type CompactOptions struct {
	// TargetBytes is the size merged files grow to at most; files of this
	// size or more are left alone. Default 256 MiB.
	TargetBytes int64
	// BatchRows is the number of rows per record batch of merged files.
	// Default 65,536.
	BatchRows int
	// DryRun plans the merges and reports them without writing.
	DryRun bool
	// Logger receives a line per merge; nil discards them.
	Logger *slog.Logger
}

// CompactStats says what Compact did (or, in a dry run, would do).
type CompactStats struct {
	Merges      int   // files written
	FilesIn     int   // files replaced
	BytesIn     int64 // their size
	BytesOut    int64 // size of the files written
	Rows        int64 // rows moved
	SkippedRace int   // merges dropped because another writer changed their files first
}

// errRunGone aborts the commit of a merge whose input files are no longer
// all committed.
var errRunGone = errors.New("merged files changed")

// Compact merges runs of small committed files of a view: consecutive files
// (by offset) of the same date, topic and partition, with the same schema,
// up to TargetBytes together. A merged file is named by its partition and
// offset range like any other, written and committed the same way: the
// manifest entry that adds it removes its inputs, whose files are deleted
// after. Events, their order within the partition and their columns are
// unchanged. It runs safely beside ingest writing the same log.
func Compact(ctx context.Context, st Storage, project, view string, opts CompactOptions) (CompactStats, error) {
	if opts.TargetBytes <= 0 {
		opts.TargetBytes = 256 << 20
	}
	if opts.BatchRows <= 0 {
		opts.BatchRows = 64 << 10
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var stats CompactStats
	if err := checkSegment("project", project); err != nil {
		return stats, err
	}
	if err := checkSegment("feature view", view); err != nil {
		return stats, err
	}
	m := newManifest(st, project, view)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.load(ctx); err != nil {
		return stats, err
	}
	dir := viewDir(project, view) + "/"
	for _, run := range planRuns(m.sortedFiles(), opts.TargetBytes) {
		out := mergedInfo(run)
		if opts.DryRun {
			stats.Merges++
			stats.FilesIn += len(run)
			for _, f := range run {
				stats.BytesIn += f.Bytes
			}
			stats.Rows += out.Rows
			continue
		}
		n, err := mergeFiles(ctx, st, dir, run, out, opts.BatchRows)
		if errors.Is(err, ErrNotExist) {
			// Another compaction (an overlapping run of the command) may
			// have merged these files and deleted them since the plan was
			// made: the manifest says so. A committed file that is missing
			// is an error.
			gone, rerr := runGone(ctx, m, run)
			if rerr != nil {
				return stats, errors.Join(err, rerr)
			}
			if gone {
				stats.SkippedRace++
				continue
			}
		}
		if err != nil {
			return stats, err
		}
		out.Bytes = n
		failpoint("compact:written")
		_, err = m.commit(ctx, func() (*entry, error) {
			e := &entry{Add: []FileInfo{out}}
			for _, f := range run {
				if _, ok := m.files[f.Path]; !ok {
					return nil, errRunGone
				}
				e.Remove = append(e.Remove, f.Path)
			}
			return e, nil
		})
		if errors.Is(err, errRunGone) {
			// The merged file is left to the orphan clean-up: another
			// writer may have committed a file of the same name.
			stats.SkippedRace++
			continue
		}
		if err != nil {
			return stats, err
		}
		failpoint("compact:committed")
		for _, f := range run {
			if err := st.Delete(ctx, dir+f.Path); err != nil {
				log.Warn("delete compacted file; the orphan clean-up will", "file", dir+f.Path, "err", err)
			}
			stats.BytesIn += f.Bytes
		}
		stats.Merges++
		stats.FilesIn += len(run)
		stats.BytesOut += out.Bytes
		stats.Rows += out.Rows
		log.Info("compacted", "view", view, "file", out.Path, "inputs", len(run), "rows", out.Rows, "bytes", out.Bytes)
	}
	return stats, nil
}

// runGone re-reads the manifest and reports whether a file of run is no
// longer committed.
func runGone(ctx context.Context, m *manifest, run []FileInfo) (bool, error) {
	if err := m.refresh(ctx); err != nil {
		return false, err
	}
	for _, f := range run {
		if _, ok := m.files[f.Path]; !ok {
			return true, nil
		}
	}
	return false, nil
}

// planRuns picks the runs to merge from files sorted as sortedFiles sorts.
func planRuns(files []FileInfo, target int64) [][]FileInfo {
	var runs [][]FileInfo
	var run []FileInfo
	var size int64
	closeRun := func() {
		if len(run) >= 2 {
			runs = append(runs, run)
		}
		run, size = nil, 0
	}
	for _, f := range files {
		if len(run) > 0 {
			p := run[len(run)-1]
			if p.Day() != f.Day() || p.Topic != f.Topic || p.Partition != f.Partition || p.Schema != f.Schema || size+f.Bytes > target {
				closeRun()
			}
		}
		if f.Bytes >= target {
			closeRun()
			continue
		}
		run = append(run, f)
		size += f.Bytes
	}
	closeRun()
	return runs
}

// mergedInfo describes the file that replaces run (all but its size).
func mergedInfo(run []FileInfo) FileInfo {
	f0, fl := run[0], run[len(run)-1]
	out := FileInfo{Path: filePath(f0.Day(), f0.Topic, f0.Partition, f0.First, fl.Last), Topic: f0.Topic, Partition: f0.Partition,
		First: f0.First, Last: fl.Last, MinTime: f0.MinTime, MaxTime: f0.MaxTime, Schema: f0.Schema}
	for _, f := range run {
		out.Rows += f.Rows
		out.MinTime, out.MaxTime = min(out.MinTime, f.MinTime), max(out.MaxTime, f.MaxTime)
	}
	return out
}

// mergeFiles writes the rows of run, in order, to out's file in record
// batches of about batchRows rows, holding one output batch in memory.
func mergeFiles(ctx context.Context, st Storage, dir string, run []FileInfo, out FileInfo, batchRows int) (int64, error) {
	mem := memory.NewGoAllocator()
	var n int64
	err := st.Put(ctx, dir+out.Path, func(w io.Writer) error {
		cw := &countingWriter{w: w}
		var fw *ipc.FileWriter
		var schema *arrow.Schema
		var pending []arrow.RecordBatch
		var pendingRows, rows int64
		defer func() {
			for _, r := range pending {
				r.Release()
			}
		}()
		emit := func() error {
			if len(pending) == 0 {
				return nil
			}
			rec, err := concatBatches(mem, schema, pending, pendingRows)
			if err != nil {
				return err
			}
			defer rec.Release()
			for _, r := range pending {
				r.Release()
			}
			pending, pendingRows = pending[:0], 0
			return fw.Write(rec)
		}
		for _, f := range run {
			err := scanFile(ctx, st, dir+f.Path, false, func(rec arrow.RecordBatch) error {
				if schema == nil {
					schema = rec.Schema()
					if schemaFingerprint(schema) != out.Schema {
						return fmt.Errorf("file %s: schema does not match its manifest entry", f.Path)
					}
					var err error
					if fw, err = ipc.NewFileWriter(cw, ipc.WithSchema(schema), ipc.WithAllocator(mem)); err != nil {
						return err
					}
				} else if !schema.Equal(rec.Schema()) {
					return fmt.Errorf("file %s: schema differs from the other files merged", f.Path)
				}
				rec.Retain()
				pending = append(pending, rec)
				pendingRows += rec.NumRows()
				rows += rec.NumRows()
				if pendingRows >= int64(batchRows) {
					return emit()
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if rows != out.Rows {
			return fmt.Errorf("merged files hold %d rows, their manifest entries %d", rows, out.Rows)
		}
		if err := emit(); err != nil {
			return err
		}
		err := fw.Close()
		n = cw.n
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("compact into %s: %w", out.Path, err)
	}
	return n, nil
}

// concatBatches joins record batches of one schema into one.
func concatBatches(mem memory.Allocator, schema *arrow.Schema, recs []arrow.RecordBatch, rows int64) (arrow.RecordBatch, error) {
	if len(recs) == 1 {
		recs[0].Retain()
		return recs[0], nil
	}
	cols := make([]arrow.Array, len(schema.Fields()))
	parts := make([]arrow.Array, len(recs))
	for c := range cols {
		for i, r := range recs {
			parts[i] = r.Column(c)
		}
		a, err := array.Concatenate(parts, mem)
		if err != nil {
			for _, done := range cols[:c] {
				done.Release()
			}
			return nil, err
		}
		cols[c] = a
	}
	rec := array.NewRecordBatch(schema, cols, rows)
	for _, a := range cols {
		a.Release()
	}
	return rec, nil
}
