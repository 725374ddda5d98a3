package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/registry"
)

// Defaults of Options.
const (
	DefaultMemory = 1 << 30
	// maxParts bounds the buckets of one partitioning, and so the files
	// open at once; a larger input is split again, bucket by bucket.
	maxParts = 256
	// maxLevel bounds how often a bucket is split again. A bucket still
	// too large after that holds a few keys with most of the events, which
	// no hash can spread.
	maxLevel = 3
	// maxGroupBytes caps the size of a group whatever the budget: groups
	// that fit in the processor's caches better sort and sweep faster, and
	// more groups than workers balance their load.
	maxGroupBytes = 64 << 20
)

// MinMemory is the least memory budget (Options.Memory) that works.
const MinMemory = 1 << 20

// Options configures an export.
type Options struct {
	// Registry holds the definitions the features are resolved against.
	Registry *registry.Registry
	// Log gives the views' events.
	Log Log
	// Service names a feature service; or Features lists references
	// view:feature (view:* for every feature of a view). Exactly one is set.
	Service  string
	Features []string
	// Entities is the entity table's file; EntitiesFormat its format
	// (FormatAuto: from the extension).
	Entities       string
	EntitiesFormat Format
	// KeyColumns maps a join key to the entity table column that holds it,
	// where the names differ.
	KeyColumns map[string]string
	// TimestampColumn names the entity table's timestamp column;
	// DefaultTimestampColumn when empty.
	TimestampColumn string
	// Out is the output file; OutFormat its format (FormatParquet or
	// FormatArrow; FormatAuto: from the extension). It is written under a
	// temporary name and renamed when complete.
	Out       string
	OutFormat Format
	// Output, if set instead of Out, receives the output's batches, for a
	// server that streams them to its client.
	Output BatchWriter
	// Metadata is added to the output's schema metadata.
	Metadata map[string]string
	// Memory is about how many bytes the export may hold at once;
	// DefaultMemory when zero.
	Memory int64
	// Parallelism is how many goroutines compute at once; GOMAXPROCS when
	// zero.
	Parallelism int
	// TempDir is where the spill files go; the system's temporary
	// directory when empty.
	TempDir string
	Logger  *slog.Logger
	// Progress, when set, receives progress reports.
	Progress func(Progress)
}

// Stats says what an export did.
type Stats struct {
	Rows int64 // rows of the entity table, and of the output
	// Events counts the events read from the log; EventsUsed those kept:
	// of a key in the entity table, and that a row can see.
	Events, EventsUsed int64
	// Groups counts the partitions computed; Spilled the bytes written to
	// spill files: partitioned rows and events beyond the quarter of the
	// memory budget that keeps them in memory, and results beyond the
	// eighth that keeps those.
	Groups   int
	Spilled  int64
	Duration time.Duration
}

// exporter is one export's state.
type exporter struct {
	opts     Options
	plan     *plan
	table    *table
	cols     *entityColumns
	mem      memory.Allocator
	log      *slog.Logger
	dir      string
	workers  int
	budget   int64 // bytes one group may hold while computed
	spillMem *spillMemory
	parts    int // buckets of the first partitioning
	flush    int // bytes buffered per bucket before a spill write
	progress *progress
	stats    Stats

	minT, maxT int64 // of the entity rows
	hasRows    bool
	blooms     []*bloom // per entity: its keys in the table

	rowFiles [][][]spillFile // per entity, bucket
	evFiles  [][][]spillFile // per view, bucket
	groups   [][]*group      // per entity
	results  [][]spillFile   // per entity
	// kept holds, per entity, the results of groups kept in memory
	// (unsorted, row number first), and at, per entity and row, where its
	// results are among them: the batch's index << 32 | the row's index in
	// it, or noResult for a row whose group's results went to a file.
	// at is nil when the table is too large for it.
	keptMu  sync.Mutex
	kept    [][]arrow.RecordBatch
	at      [][]uint64
	keptMem *spillMemory // bounds the bytes of kept
	// direct holds, per entity and feature column, the column written in
	// place (directColumn), or nil; direct is nil when unused.
	direct [][]*directColumn
	// dicts gives an Arrow IPC file one dictionary per column; nil for
	// other outputs.
	dicts *dictUnifier
}

// noResult marks a row whose results are not kept in memory.
const noResult = ^uint64(0)

// Run exports the features of the entity table's rows: each row gets each
// feature's value as the online lookup would have served it at the row's
// timestamp, computed from the log's events by the window engine that
// serving reads with. See the package documentation for the algorithm and
// the output.
func Run(ctx context.Context, opts Options) (Stats, error) {
	start := time.Now()
	x, err := newExporter(opts)
	if err != nil {
		return Stats{}, err
	}
	dir, err := os.MkdirTemp(opts.TempDir, "featurestore-export-")
	if err != nil {
		return Stats{}, fmt.Errorf("spill directory: %w", err)
	}
	defer os.RemoveAll(dir)
	x.dir = dir
	err = Recovered(func() error { return x.run(ctx) })
	x.progress.end()
	x.stats.Duration = time.Since(start)
	if err != nil {
		return x.stats, err
	}
	x.log.Info("export done", "rows", x.stats.Rows, "events", x.stats.Events, "events_used", x.stats.EventsUsed,
		"groups", x.stats.Groups, "spilled_bytes", x.stats.Spilled, "duration", x.stats.Duration)
	return x.stats, nil
}

func newExporter(opts Options) (*exporter, error) {
	if opts.Registry == nil {
		return nil, errors.New("no registry")
	}
	if opts.Log == nil {
		return nil, errors.New("no offline log")
	}
	if opts.Entities == "" {
		return nil, errors.New("no entity table")
	}
	switch {
	case opts.Output != nil && opts.Out != "":
		return nil, errors.New("give an output file or an output writer, not both")
	case opts.Output != nil:
	case opts.Out == "":
		return nil, errors.New("no output file")
	default:
		if _, err := formatOf(opts.Out, opts.OutFormat, FormatParquet, FormatArrow); err != nil {
			return nil, err
		}
	}
	if opts.TimestampColumn == "" {
		opts.TimestampColumn = DefaultTimestampColumn
	}
	if opts.Memory == 0 {
		opts.Memory = DefaultMemory
	}
	if opts.Memory < MinMemory {
		return nil, fmt.Errorf("memory budget %d bytes is below the minimum of %d", opts.Memory, MinMemory)
	}
	if opts.Parallelism <= 0 {
		opts.Parallelism = runtime.GOMAXPROCS(0)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := newPlan(opts.Registry, opts.Service, opts.Features)
	if err != nil {
		return nil, err
	}
	x := &exporter{opts: opts, plan: p, mem: memory.NewGoAllocator(), log: opts.Logger,
		workers: opts.Parallelism, progress: newProgress(opts.Progress),
		spillMem: &spillMemory{limit: opts.Memory / 4}}
	empty := map[string]arrow.DataType{opts.TimestampColumn: arrow.FixedWidthTypes.Timestamp_ms}
	t, err := openTable(opts.Entities, opts.EntitiesFormat, keyColumnTypes(p, opts.KeyColumns), empty, x.mem)
	if err != nil {
		return nil, err
	}
	cols, err := findEntityColumns(opts.Entities, t.schema, p, opts.KeyColumns, opts.TimestampColumn)
	if err != nil {
		return nil, err
	}
	x.table, x.cols = t, cols
	// Parquet takes fewer types than Arrow: a label column it cannot hold
	// fails now, not once every feature is computed.
	if opts.Output == nil {
		if f, _ := formatOf(opts.Out, opts.OutFormat, FormatParquet, FormatArrow); f == FormatParquet {
			if err := checkParquet(opts.Entities, x.outputSchema(), x.mem); err != nil {
				return nil, err
			}
		}
	}
	return x, nil
}

func (x *exporter) run(ctx context.Context) error {
	x.size(ctx)
	step := func(name string, fn func() error) error {
		start := time.Now()
		err := fn()
		x.log.Debug("export step done", "step", name, "duration", time.Since(start), "err", err)
		return err
	}
	defer func() { x.dicts.release() }()
	if err := step("partition entity rows", func() error { return x.spillRows(ctx) }); err != nil {
		return err
	}
	// Before the log is read, so that dictionaries an Arrow IPC file
	// cannot hold fail the export early.
	if err := step("gather dictionaries", func() error { return x.gatherDictionaries(ctx) }); err != nil {
		return err
	}
	for vi, vp := range x.plan.views {
		if err := step("partition events of "+vp.name, func() error { return x.spillEvents(ctx, vi, vp) }); err != nil {
			return err
		}
	}
	if err := step("split large partitions", func() error { return x.makeGroups(ctx) }); err != nil {
		return err
	}
	if err := step("compute", func() error { return x.compute(ctx) }); err != nil {
		return err
	}
	return step("write", func() error { return x.write(ctx) })
}

// size chooses the number of buckets from what the inputs are expected to
// hold, so that a bucket's group fits its share of the memory budget: half
// the budget goes to the groups computed at once, the rest to buffers,
// merging and the runtime.
func (x *exporter) size(ctx context.Context) {
	x.budget = min(max(x.opts.Memory/int64(2*x.workers), 1<<20), maxGroupBytes)
	rows := x.table.rows
	if rows < 0 {
		rows = x.table.size / 16
	}
	perRow := int64(rowRefSize + 32)
	for _, e := range x.plan.entities {
		perRow += int64(len(e.columns)) * 2 * 16
	}
	est := rows * perRow * int64(len(x.plan.entities))
	if ls, ok := x.opts.Log.(LogSizer); ok {
		for _, vp := range x.plan.views {
			if n, err := ls.Size(ctx, vp.name); err == nil {
				est += n * 3 / 2
			}
		}
	}
	// Aim at half the budget: the estimate is rough (the log's bytes hold
	// columns the export does not read, and the references the sort needs
	// are not in them), and a group over budget is split again, which
	// reads and writes its events once more, in one goroutine; more
	// buckets than needed cost only their files.
	target := x.budget / 2
	x.parts = int(min(max(int64(x.workers), (est+target-1)/target), maxParts))
	nsources := int64(max(len(x.plan.entities), 1))
	x.flush = int(min(max(x.opts.Memory/(8*int64(x.workers)*int64(x.parts)*nsources), 32<<10), 1<<20))
	x.log.Debug("export sized", "rows", x.table.rows, "estimate_bytes", est, "buckets", x.parts, "group_budget_bytes", x.budget)
}

// resultBatchRows returns the rows of one batch of a group's results: the
// merge holds one batch of each group of an entity at once, and a quarter
// of the memory budget for all of them.
func (x *exporter) resultBatchRows(g *group) int {
	rowBytes := int64(8)
	for _, c := range g.entity.columns {
		rowBytes += int64(sizeOfKind(c.kind))
	}
	n := int64(0)
	for _, gs := range x.groups {
		n += int64(len(gs))
	}
	rows := x.opts.Memory / 4 / max(n, 1) / rowBytes
	return int(min(max(rows, 256), 64<<10))
}
