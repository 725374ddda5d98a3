package export

import (
	"container/heap"
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// resultStream reads one group's results file, in row order.
type resultStream struct {
	r    *spillReader
	rec  arrow.RecordBatch
	rows []int64
	i    int
}

func (s *resultStream) next() (bool, error) {
	if s.r.next() {
		s.rec = s.r.rec
		s.rows = s.rec.Column(0).(*array.Int64).Int64Values()
		s.i = 0
		return true, nil
	}
	return false, s.r.err
}

// close closes the stream and removes its results, which are read once.
func (s *resultStream) close() {
	s.r.close()
	s.r.f.remove()
}

// entityMerge merges the results files of one entity back into row order: a
// heap of streams ordered by their next row number.
type entityMerge struct {
	e       *entityPlan
	streams []*resultStream
}

func (m *entityMerge) Len() int { return len(m.streams) }
func (m *entityMerge) Less(i, j int) bool {
	a, b := m.streams[i], m.streams[j]
	return a.rows[a.i] < b.rows[b.i]
}
func (m *entityMerge) Swap(i, j int) { m.streams[i], m.streams[j] = m.streams[j], m.streams[i] }
func (m *entityMerge) Push(x any)    { m.streams = append(m.streams, x.(*resultStream)) }
func (m *entityMerge) Pop() any {
	s := m.streams[len(m.streams)-1]
	m.streams = m.streams[:len(m.streams)-1]
	return s
}

func openMerge(e *entityPlan, files []spillFile, mem memory.Allocator) (*entityMerge, error) {
	m := &entityMerge{e: e}
	for _, f := range files {
		r, err := openSpill(f, mem, 64<<10)
		if err != nil {
			m.close()
			return nil, fmt.Errorf("read results: %w", err)
		}
		s := &resultStream{r: r}
		ok, err := s.next()
		if err != nil || !ok {
			s.close()
			if err == nil {
				continue
			}
			m.close()
			return nil, fmt.Errorf("read results %s: %w", f.path, err)
		}
		m.streams = append(m.streams, s)
	}
	heap.Init(m)
	return m, nil
}

// takeRow appends the features of row, which must come next, to builders
// (one per feature column of the entity), but for direct columns.
func (m *entityMerge) takeRow(row int64, builders []arrowBuilder, direct []*directColumn) error {
	if len(m.streams) == 0 {
		return fmt.Errorf("results of entity %q end before row %d", m.e.name, row)
	}
	s := m.streams[0]
	if got := s.rows[s.i]; got != row {
		return fmt.Errorf("results of entity %q: row %d where row %d was due", m.e.name, got, row)
	}
	appendResults(builders, m.e.columns, direct, s.rec, s.i)
	s.i++
	if s.i < len(s.rows) {
		heap.Fix(m, 0)
		return nil
	}
	ok, err := s.next()
	if err != nil {
		return err
	}
	if ok {
		heap.Fix(m, 0)
		return nil
	}
	heap.Pop(m)
	s.close()
	return nil
}

// take appends the features of rows first..first+n-1, which must come
// next, to builders: from the results kept in memory where at says, and
// from the merge of the results files otherwise.
func (x *exporter) take(ei int, m *entityMerge, first int64, n int, builders []arrowBuilder) error {
	var at []uint64
	if x.at != nil {
		at = x.at[ei]
	}
	direct := make([]*directColumn, len(m.e.columns))
	if x.direct != nil {
		direct = x.direct[ei]
	}
	kept := x.kept[ei]
	if at != nil && len(m.streams) == 0 {
		// Every row's results are in memory: the columns are independent,
		// and gathered in parallel.
		return forEach(context.Background(), len(m.e.columns), x.workers, func(_ context.Context, c int) error {
			if direct[c] != nil {
				return nil
			}
			kind, b := m.e.columns[c].kind, builders[c]
			for r := first; r < first+int64(n); r++ {
				if at[r] == noResult {
					return fmt.Errorf("results of entity %q: no results for row %d", m.e.name, r)
				}
				appendFrom(b, kind, kept[at[r]>>32].Column(c+1), int(at[r]&(1<<32-1)))
			}
			return nil
		})
	}
	for r := first; r < first+int64(n); r++ {
		if at == nil || at[r] == noResult {
			if err := m.takeRow(r, builders, direct); err != nil {
				return err
			}
			continue
		}
		appendResults(builders, m.e.columns, direct, kept[at[r]>>32], int(at[r]&(1<<32-1)))
	}
	return nil
}

// appendResults appends row i of a results batch to builders, one per
// feature column, but for the direct columns.
func appendResults(builders []arrowBuilder, cols []*column, direct []*directColumn, rec arrow.RecordBatch, i int) {
	for c, col := range cols {
		if direct[c] == nil {
			appendFrom(builders[c], col.kind, rec.Column(c+1), i)
		}
	}
}

func (m *entityMerge) close() {
	for _, s := range m.streams {
		s.close()
	}
	m.streams = nil
}

type arrowBuilder = array.Builder

// outputSchema is the entity table's schema followed by one column per
// feature, with the table's metadata and extra added.
func (x *exporter) outputSchema() *arrow.Schema {
	in := x.table.schema
	fields := append([]arrow.Field(nil), in.Fields()...)
	for _, c := range x.plan.outputs {
		fields = append(fields, arrow.Field{Name: c.name, Type: arrowType(c.kind), Nullable: true})
	}
	md := map[string]string{}
	inMD := in.Metadata()
	for i, k := range inMD.Keys() {
		md[k] = inMD.Values()[i]
	}
	maps.Copy(md, x.opts.Metadata)
	keys := slices.Sorted(maps.Keys(md))
	vals := make([]string, len(keys))
	for i, k := range keys {
		vals[i] = md[k]
	}
	meta := arrow.NewMetadata(keys, vals)
	return arrow.NewSchema(fields, &meta)
}

// readTableAgain calls fn with each batch of the entity table: the batches
// kept from the first read if they all were, or those of a new read.
func (x *exporter) readTableAgain(ctx context.Context, fn func(arrow.RecordBatch) error) error {
	defer x.table.dropKept(x.spillMem)
	x.log.Debug("writing the output", "table_batches_kept", !x.table.dropped)
	return x.readTableKept(ctx, fn)
}

// readTableKept is readTableAgain, but keeps the batches kept, for a
// further read.
func (x *exporter) readTableKept(ctx context.Context, fn func(arrow.RecordBatch) error) error {
	if !x.table.dropped {
		for _, rec := range x.table.recs {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(rec); err != nil {
				return err
			}
		}
		return nil
	}
	rd, closeFn, err := x.table.open(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	return readAll(ctx, rd, fn)
}

// write reads the entity table again and writes each batch out with its
// rows' features, merged back from the groups' results in row order.
func (x *exporter) write(ctx context.Context) error {
	name := x.opts.Out
	if name == "" {
		name = "the output"
	}
	x.progress.begin(phaseWrite, "writing "+name, "rows", x.stats.Rows)
	schema := x.outputSchema()
	merges := make([]*entityMerge, len(x.plan.entities))
	defer func() {
		for _, recs := range x.kept {
			for _, r := range recs {
				x.keptMem.give(BatchBytes(r))
				r.Release()
			}
		}
		x.kept = nil
		x.direct = nil // the memory taken for it goes with the export
		for _, m := range merges {
			if m != nil {
				m.close()
			}
		}
	}()
	for i, e := range x.plan.entities {
		m, err := openMerge(e, x.results[i], x.mem)
		if err != nil {
			return err
		}
		merges[i] = m
	}
	out, err := x.createOutput(schema)
	if err != nil {
		return err
	}
	defer out.abort()
	builders := make([]arrowBuilder, len(x.plan.columns))
	for i, c := range x.plan.columns {
		builders[i] = array.NewBuilder(x.mem, arrowType(c.kind))
	}
	defer func() {
		for _, b := range builders {
			b.Release()
		}
	}()
	byEntity := make([][]arrowBuilder, len(x.plan.entities))
	direct := make([]*directColumn, len(x.plan.columns)) // by output column
	for i, e := range x.plan.entities {
		for j, c := range e.columns {
			byEntity[i] = append(byEntity[i], builders[c.index])
			if x.direct != nil {
				direct[c.index] = x.direct[i][j]
			}
		}
	}
	// The batches are made (gathered) in one goroutine and written in
	// another, so that gathering a batch overlaps writing the one before.
	batches := make(chan arrow.RecordBatch, 1)
	onlyStored := x.plan.onlyStored()
	defer warnFailed(x.log, x.plan.outputs)
	g, gctx := newWorkGroup(ctx)
	g.Go(func() error {
		defer close(batches)
		var first int64
		err := x.readTableAgain(gctx, func(rec arrow.RecordBatch) error {
			n := int(rec.NumRows())
			for i, m := range merges {
				if err := x.take(i, m, first, n, byEntity[i]); err != nil {
					return err
				}
			}
			cols := append([]arrow.Array(nil), rec.Columns()...)
			for i, b := range builders {
				if direct[i] != nil {
					cols = append(cols, direct[i].array(first, n))
				} else {
					cols = append(cols, b.NewArray())
				}
			}
			if !onlyStored {
				table, err := x.cols.plainFields(rec, first, x.mem)
				if err != nil {
					releaseAll(cols[rec.NumCols():])
					return err
				}
				cols = x.onDemandColumns(cols, table, n)
				releaseAll(table)
			}
			batch := array.NewRecordBatch(schema, cols, int64(n))
			releaseAll(cols[rec.NumCols():])
			first += int64(n)
			select {
			case batches <- batch:
				return nil
			case <-gctx.Done():
				batch.Release()
				return gctx.Err()
			}
		})
		if err != nil {
			return err
		}
		if first != x.stats.Rows {
			return fmt.Errorf("%s: read %d rows the second time, %d the first: did the file change during the export?", x.cols.path, first, x.stats.Rows)
		}
		for _, m := range merges {
			if len(m.streams) > 0 {
				return fmt.Errorf("results of entity %q hold rows after the last row %d", m.e.name, first-1)
			}
		}
		return nil
	})
	g.Go(func() error {
		// On an error the group's context ends, which stops the producer;
		// a batch left in the channel is garbage.
		for batch := range batches {
			err := out.write(batch)
			n := batch.NumRows()
			batch.Release()
			if err != nil {
				return err
			}
			x.progress.add(phaseWrite, n)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	return out.commit()
}
