package client

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// Result is the answer to one lookup: a row per entity, in request order,
// and a column per feature. It is safe for concurrent reads.
//
// Lookup asks the server for the response of several entities by columns
// (RESPONSE_LAYOUT_COLUMNS), much cheaper to encode and decode than one
// message per value, and for that of one entity by rows; a server that
// answers by rows anyway (older servers do) is read the same way.
type Result struct {
	resp *pb.GetOnlineFeaturesResponse
	rows int

	indexOnce sync.Once
	index     map[string]int // feature name -> column, built on first Get
}

// newResult checks that resp is the dense matrix the protocol promises, by
// rows or by columns, so that the accessors never index out of its bounds.
func newResult(resp *pb.GetOnlineFeaturesResponse, entities int) (*Result, error) {
	cols := len(resp.GetFeatureNames())
	// Neither columns nor results: by columns for no features, or by rows
	// for no entities.
	if columns := resp.GetColumns(); len(columns) > 0 || (len(resp.GetResults()) == 0 && entities > 0) {
		if len(resp.GetResults()) > 0 || len(columns) != cols {
			return nil, status.Errorf(codes.Internal, "malformed response: %d columns and %d results for %d features", len(columns), len(resp.GetResults()), cols)
		}
		for j, c := range columns {
			if err := checkColumn(c, entities); err != nil {
				return nil, status.Errorf(codes.Internal, "malformed response: column %d (%s): %v", j, resp.GetFeatureNames()[j], err)
			}
		}
		return &Result{resp: resp, rows: entities}, nil
	}
	if n := len(resp.GetResults()); n != entities {
		return nil, status.Errorf(codes.Internal, "malformed response: %d results for %d entities", n, entities)
	}
	for i, r := range resp.GetResults() {
		if n := len(r.GetValues()); n != cols {
			return nil, status.Errorf(codes.Internal, "malformed response: result %d has %d values for %d features", i, n, cols)
		}
	}
	return &Result{resp: resp, rows: entities}, nil
}

// checkColumn checks that every array of a column has one element per
// entity: statuses, the values of its type (a type this client does not
// know has none it reads), and the event times when sent.
func checkColumn(c *pb.FeatureColumn, entities int) error {
	values := -1
	switch c.GetType() {
	case pb.ValueType_VALUE_TYPE_STRING:
		values = len(c.GetStringValues())
	case pb.ValueType_VALUE_TYPE_INT64:
		values = len(c.GetInt64Values())
	case pb.ValueType_VALUE_TYPE_DOUBLE:
		values = len(c.GetDoubleValues())
	case pb.ValueType_VALUE_TYPE_BOOL:
		values = len(c.GetBoolValues())
	case pb.ValueType_VALUE_TYPE_STRING_LIST, pb.ValueType_VALUE_TYPE_INT64_LIST, pb.ValueType_VALUE_TYPE_DOUBLE_LIST, pb.ValueType_VALUE_TYPE_BOOL_LIST:
		values = len(c.GetListValues())
	}
	switch times := len(c.GetHasEventTime()); {
	case len(c.GetStatuses()) != entities:
		return fmt.Errorf("%d statuses for %d entities", len(c.GetStatuses()), entities)
	case values >= 0 && values != entities:
		return fmt.Errorf("%d values of %v for %d entities", values, c.GetType(), entities)
	case times != 0 && times != entities, len(c.GetEventTimesUnixMs()) != times:
		return fmt.Errorf("%d event times and %d flags for %d entities", len(c.GetEventTimesUnixMs()), times, entities)
	}
	return nil
}

// Len is the number of rows: the number of entities of the lookup.
func (r *Result) Len() int { return r.rows }

// Features are the columns, as "feature_view:feature", in the order the
// lookup asked for them (or the feature service declares them). The slice
// is the caller's: Get reads the response's own names, so sorting it, say,
// changes nothing.
func (r *Result) Features() []string { return slices.Clone(r.resp.GetFeatureNames()) }

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
		r.checkRow(row)
		return Value{}
	}
	return r.At(row, col)
}

// At returns the value in column col (an index into Features) for the
// entity of row. It panics if row or col is out of range.
func (r *Result) At(row, col int) Value {
	if cols := r.resp.GetColumns(); len(cols) > 0 {
		r.checkRow(row)
		return Value{col: cols[col], i: row}
	}
	return Value{fv: r.resp.GetResults()[row].GetValues()[col]}
}

func (r *Result) checkRow(row int) {
	if row < 0 || row >= r.rows {
		panic(fmt.Sprintf("client: row %d out of range [0, %d)", row, r.rows))
	}
}

// ReadTime is the one time at which every value was read: windows end at
// it, and TTLs are measured from it.
func (r *Result) ReadTime() time.Time { return r.resp.GetReadTime().AsTime() }

// RegistryVersion is the registry version that resolved the lookup's names.
func (r *Result) RegistryVersion() int64 { return r.resp.GetRegistryVersion() }

// Proto returns the response as received (by columns from a server that
// knows them), for logging or forwarding. It is shared with the Result: do
// not modify it.
func (r *Result) Proto() *pb.GetOnlineFeaturesResponse { return r.resp }
