package export

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
)

// Log is what the export reads events from: the offline log, which keeps the
// accepted events of each feature view as Arrow record batches. The export
// owns this interface so that it depends on the log's schema only, not on how
// the log stores its files.
//
// Each batch has the offline log's schema, version 1:
//
//   - event_time: timestamp[ms, tz=UTC], not null;
//   - ingest_time: timestamp[ms, tz=UTC], not null;
//   - topic: utf8; partition: int32; offset: int64 (the event's Kafka
//     position, whose (partition, offset) breaks ties of event time);
//   - the join keys of the view's entity, named as the join keys (string as
//     utf8, int64 as int64);
//   - the source fields the view uses, named by field path, sorted by name,
//     nullable (string as utf8, int64 as int64, double as float64, bool as
//     boolean).
//
// and the schema metadata featurestore.project, featurestore.view,
// featurestore.source and featurestore.log_version = "1". The export finds
// columns by name, so batches of one view may differ in their field columns
// (as the view's definition changes): a field a batch lacks, or holds in
// another type than the source declares now, reads as null, which is how the
// aggregations treat a field of the wrong kind.
type Log interface {
	// Scan calls fn with each committed record batch of the view's log,
	// one at a time, in any order, and returns fn's first error. The batch
	// is valid during the call; fn retains it to keep it longer, and its
	// columns with it (a batch may be a view of a mapped file, which only
	// the batch's references keep mapped). Scan may
	// skip batches whose events all have event times after until, but need
	// not. An error wrapping ErrLogChanged says that the log changed under
	// the scan (a compaction replaced files): the export then drops what it
	// read of the view and scans it again.
	Scan(ctx context.Context, view string, until int64, fn func(arrow.RecordBatch) error) error
}

// ErrLogChanged is wrapped by a Log's Scan error when the log changed
// during the scan so that it cannot go on, and a new scan would succeed.
var ErrLogChanged = errors.New("offline log changed during the scan")

// scanAttempts bounds how often a view is scanned again after
// ErrLogChanged.
const scanAttempts = 5

// LogSizer is implemented by logs that know how many bytes a view's log
// holds. The export then sizes its partitions from the start instead of
// splitting the ones that turn out too large.
type LogSizer interface {
	// Size returns about how many bytes Scan of the view reads.
	Size(ctx context.Context, view string) (int64, error)
}

// LogCommits is implemented by logs that know whether anything was ever
// committed to a view's log; see Uncommitted.
type LogCommits interface {
	// Committed tells whether the view's log has a commit.
	Committed(ctx context.Context, view string) (bool, error)
}

// Uncommitted returns, sorted, the stored feature views that the export of
// opts reads and whose log has nothing committed, so that their features
// can only be null: most often a wrong project or log location. It returns
// nil when opts.Log is not a LogCommits.
func Uncommitted(ctx context.Context, opts Options) ([]string, error) {
	lc, ok := opts.Log.(LogCommits)
	if !ok || opts.Registry == nil {
		return nil, nil
	}
	p, err := newPlan(opts.Registry, opts.Service, opts.Features)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, vp := range p.views {
		ok, err := lc.Committed(ctx, vp.name)
		if err != nil {
			return nil, fmt.Errorf("offline log of feature view %q: %w", vp.name, err)
		}
		if !ok {
			out = append(out, vp.name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Column names and metadata keys of the offline log's schema.
const (
	ColEventTime  = "event_time"
	ColIngestTime = "ingest_time"
	ColTopic      = "topic"
	ColPartition  = "partition"
	ColOffset     = "offset"

	MetaProject    = "featurestore.project"
	MetaView       = "featurestore.view"
	MetaSource     = "featurestore.source"
	MetaLogVersion = "featurestore.log_version"

	// LogVersion is the version of the log's schema the export reads.
	LogVersion = "1"
)
