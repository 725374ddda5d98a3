package export

import (
	"cmp"
	"context"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// makeGroups forms a group of each entity's bucket, and splits the groups
// that do not fit their share of the memory budget.
func (x *exporter) makeGroups(ctx context.Context) error {
	x.groups = make([][]*group, len(x.plan.entities))
	var queue []*group
	for _, e := range x.plan.entities {
		for b := range x.parts {
			g := &group{entity: e, rows: x.rowFiles[e.index][b]}
			for _, vp := range e.views {
				g.events = append(g.events, x.evFiles[vp.index][b])
			}
			if len(g.rows) == 0 {
				removeGroup(g) // events of keys without rows
				continue
			}
			queue = append(queue, g)
		}
	}
	for len(queue) > 0 {
		g := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if g.memory() <= x.budget {
			x.groups[g.entity.index] = append(x.groups[g.entity.index], g)
			continue
		}
		if g.level >= maxLevel {
			x.log.Warn("a partition exceeds its share of the memory budget: a few keys hold most of the events",
				"entity", g.entity.name, "bytes", g.memory(), "budget_bytes", x.budget)
			x.groups[g.entity.index] = append(x.groups[g.entity.index], g)
			continue
		}
		subs, err := x.split(ctx, g)
		if err != nil {
			return err
		}
		queue = append(queue, subs...)
	}
	for _, gs := range x.groups {
		x.stats.Groups += len(gs)
	}
	return nil
}

// split partitions a group's rows and events again, at the next level, into
// as many groups as it needs to fit.
func (x *exporter) split(ctx context.Context, g *group) ([]*group, error) {
	size := g.memory()
	n := int(min(max(size/x.budget+1, 2), maxParts))
	level := g.level + 1
	x.log.Debug("splitting a partition", "entity", g.entity.name, "bytes", size, "into", n, "level", level)
	rows, err := x.repartition(ctx, g.rows, rowsSchema, level, n)
	if err != nil {
		return nil, err
	}
	events := make([][][]spillFile, len(g.events))
	for vi, vp := range g.entity.views {
		if events[vi], err = x.repartition(ctx, g.events[vi], eventsSchema(vp), level, n); err != nil {
			return nil, err
		}
	}
	var subs []*group
	for b := range n {
		sub := &group{entity: g.entity, level: level, rows: rows[b]}
		for vi := range events {
			sub.events = append(sub.events, events[vi][b])
		}
		if len(sub.rows) == 0 {
			removeGroup(sub)
			continue
		}
		// A part that kept most of the group holds a key too large to
		// spread: splitting it again would only copy it again.
		if sub.memory() >= size*9/10 {
			sub.level = maxLevel
		}
		subs = append(subs, sub)
	}
	return subs, nil
}

// repartition copies spill files into n buckets at a level, by the hash of
// their key column, and removes them.
func (x *exporter) repartition(ctx context.Context, files []spillFile, schema *arrow.Schema, level, n int) ([][]spillFile, error) {
	p := newPartitioner(x.spillMem, x.dir, schema, level, n, x.flush, x.mem)
	var err error
	for _, f := range files {
		err = readSpill(f, x.mem, func(rec arrow.RecordBatch) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			keys := rec.Column(0).(*array.Binary)
			for i := range int(rec.NumRows()) {
				bw := p.bucket(hashKey(keys.Value(i)))
				if err := bw.added(1, copyRow(bw.b, rec, i)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			break
		}
		f.remove()
	}
	out, cerr := p.close()
	if err == nil {
		err = cerr
	}
	buckets := make([][]spillFile, n)
	x.collect(buckets, out)
	return buckets, err
}

// removeGroup deletes a group's spill files.
func removeGroup(g *group) {
	for _, f := range g.rows {
		f.remove()
	}
	for _, fs := range g.events {
		for _, f := range fs {
			f.remove()
		}
	}
}

// makeDirect makes the fixed-width feature columns direct (directColumn),
// if they fit in the share of the budget that kept results take.
func (x *exporter) makeDirect() {
	var n int64
	for _, e := range x.plan.entities {
		for _, c := range e.columns {
			if directKind(c.kind) {
				n++
			}
		}
	}
	if n == 0 || !x.keptMem.take(n*directBytes(x.stats.Rows)) {
		return
	}
	x.direct = make([][]*directColumn, len(x.plan.entities))
	for i, e := range x.plan.entities {
		x.direct[i] = newDirectColumns(e.columns, x.stats.Rows)
	}
}

// compute computes every group, largest first, on x.workers goroutines.
func (x *exporter) compute(ctx context.Context) error {
	var all []*group
	for _, gs := range x.groups {
		all = append(all, gs...)
	}
	slices.SortFunc(all, func(a, b *group) int { return cmp.Compare(b.memory(), a.memory()) })
	x.progress.begin(phaseCompute, "computing features", "rows", x.stats.Rows*int64(len(x.plan.entities)))
	// Results go straight to their rows when an index of 8 bytes a row
	// fits in a sixteenth of the budget; a group's results are then kept
	// in memory while they fit in an eighth, and written sorted by row
	// number to a file for the merge otherwise.
	x.kept = make([][]arrow.RecordBatch, len(x.plan.entities))
	x.keptMem = &spillMemory{limit: x.opts.Memory / 8}
	if int64(len(x.plan.entities))*x.stats.Rows*8 <= x.opts.Memory/16 {
		x.at = make([][]uint64, len(x.plan.entities))
		for i := range x.at {
			at := make([]uint64, x.stats.Rows)
			for r := range at {
				at[r] = noResult
			}
			x.at[i] = at
		}
		x.makeDirect()
	}
	out := make([]spillFile, len(all))
	err := forEach(ctx, len(all), x.workers, func(ctx context.Context, i int) error {
		f, err := x.computeGroup(ctx, all[i])
		if err != nil {
			return err
		}
		removeGroup(all[i])
		out[i] = f
		return nil
	})
	if err != nil {
		return err
	}
	kept := 0
	for _, recs := range x.kept {
		kept += len(recs)
	}
	x.log.Debug("groups computed", "groups", len(all), "results_in_memory", kept, "indexed", x.at != nil, "direct_columns", x.direct != nil)
	x.results = make([][]spillFile, len(x.plan.entities))
	for i, g := range all {
		if out[i].rows > 0 {
			x.results[g.entity.index] = append(x.results[g.entity.index], out[i])
			x.stats.Spilled += out[i].bytes - out[i].inMemory
		}
	}
	return nil
}
