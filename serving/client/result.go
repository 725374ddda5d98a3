package client

import (
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// Result is the answer to one lookup: a row per entity, in request order,
// and a column per feature. It is safe for concurrent reads.
type Result struct {
	resp *pb.GetOnlineFeaturesResponse

	indexOnce sync.Once
	index     map[string]int // feature name -> column, built on first Get
}

// newResult checks that resp is the dense matrix the protocol promises, so
// that the accessors never index out of its bounds.
func newResult(resp *pb.GetOnlineFeaturesResponse, entities int) (*Result, error) {
	if n := len(resp.GetResults()); n != entities {
		return nil, status.Errorf(codes.Internal, "malformed response: %d results for %d entities", n, entities)
	}
	cols := len(resp.GetFeatureNames())
	for i, r := range resp.GetResults() {
		if n := len(r.GetValues()); n != cols {
			return nil, status.Errorf(codes.Internal, "malformed response: result %d has %d values for %d features", i, n, cols)
		}
	}
	return &Result{resp: resp}, nil
}

// Len is the number of rows: the number of entities of the lookup.
func (r *Result) Len() int { return len(r.resp.GetResults()) }

// Features are the columns, as "feature_view:feature", in the order the
// lookup asked for them (or the feature service declares them).
func (r *Result) Features() []string { return r.resp.GetFeatureNames() }

// Get returns the value of the named feature for the entity of row. A name
// that is not among Features gives the zero Value, whose status is
// StatusUnspecified. Get panics if row is out of range.
func (r *Result) Get(row int, feature string) Value {
	r.indexOnce.Do(func() {
		r.index = make(map[string]int, len(r.resp.GetFeatureNames()))
		for i, name := range r.resp.GetFeatureNames() {
			r.index[name] = i
		}
	})
	col, ok := r.index[feature]
	if !ok {
		_ = r.resp.GetResults()[row] // the same panic for a bad row
		return Value{}
	}
	return r.At(row, col)
}

// At returns the value in column col (an index into Features) for the
// entity of row. It panics if row or col is out of range.
func (r *Result) At(row, col int) Value {
	return Value{r.resp.GetResults()[row].GetValues()[col]}
}

// ReadTime is the one time at which every value was read: windows end at
// it, and TTLs are measured from it.
func (r *Result) ReadTime() time.Time { return r.resp.GetReadTime().AsTime() }

// RegistryVersion is the registry version that resolved the lookup's names.
func (r *Result) RegistryVersion() int64 { return r.resp.GetRegistryVersion() }

// Proto returns the response as received, for logging or forwarding. It is
// shared with the Result: do not modify it.
func (r *Result) Proto() *pb.GetOnlineFeaturesResponse { return r.resp }
