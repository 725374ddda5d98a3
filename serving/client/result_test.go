package client

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// FuzzResult reads arbitrary responses as a lookup of entities would: a
// response the client accepts must be readable through every accessor
// without a panic, whatever the server sent.
func FuzzResult(f *testing.F) {
	str := &pb.Value{Kind: &pb.Value_StringVal{StringVal: "a"}}
	list := &pb.Value{Kind: &pb.Value_Int64ListVal{Int64ListVal: &pb.Int64List{Val: []int64{1, 2}}}}
	present := pb.FeatureStatus_FEATURE_STATUS_PRESENT
	for _, seed := range []struct {
		entities int
		resp     *pb.GetOnlineFeaturesResponse
	}{
		{1, &pb.GetOnlineFeaturesResponse{FeatureNames: []string{"v:a", "v:b"}, Results: []*pb.EntityResult{{Values: []*pb.FeatureValue{{Value: str, Status: present}, {Value: list, Status: present}}}}}},
		{2, &pb.GetOnlineFeaturesResponse{FeatureNames: []string{"v:a", "v:b", "v:c"}, Columns: []*pb.FeatureColumn{
			{Type: pb.ValueType_VALUE_TYPE_DOUBLE, Statuses: []pb.FeatureStatus{present, 2}, DoubleValues: []float64{1.5, 0}, HasEventTime: []bool{true, false}, EventTimesUnixMs: []int64{1e12, 0}},
			{Type: pb.ValueType_VALUE_TYPE_INT64_LIST, Statuses: []pb.FeatureStatus{present, 3}, ListValues: []*pb.Value{list, {}}},
			{Type: 99, Statuses: []pb.FeatureStatus{present, 7}, Window: &pb.Interval{}},
		}}},
	} {
		b, err := proto.Marshal(seed.resp)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, seed.entities)
	}
	f.Fuzz(func(t *testing.T, b []byte, entities int) {
		var resp pb.GetOnlineFeaturesResponse
		if proto.Unmarshal(b, &resp) != nil || entities < 0 || entities > 1000 {
			return
		}
		r, err := newResult(&resp, entities)
		if err != nil {
			return
		}
		if r.Len() != entities {
			t.Fatalf("%d rows for %d entities", r.Len(), entities)
		}
		for row := range r.Len() {
			for col, name := range r.Features() {
				for _, v := range []Value{r.At(row, col), r.Get(row, name)} {
					_, _ = v.Status(), v.Present()
					_, _ = v.Any(), v.String()
					_, _ = v.Int64Val()
					_, _ = v.DoubleVal()
					_, _ = v.StringVal()
					_, _ = v.BoolVal()
					_, _ = v.StringListVal()
					_, _ = v.Int64ListVal()
					_, _ = v.DoubleListVal()
					_, _ = v.BoolListVal()
					_, _ = v.EventTime()
					_, _, _ = v.Window()
					if v.Present() != (v.Any() != nil) {
						t.Fatalf("row %d, %s: Present %v, Any %v", row, name, v.Present(), v.Any())
					}
				}
			}
		}
	})
}

// TestStatusesMatchTheProto checks that every status of the API has its
// Status, named as the proto names it (NULL_VALUE is "null").
func TestStatusesMatchTheProto(t *testing.T) {
	for n, name := range pb.FeatureStatus_name {
		want := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "FEATURE_STATUS_"), "_", " "))
		if want == "null value" {
			want = "null"
		}
		if got := Status(n).String(); got != want {
			t.Errorf("Status(%d) is %q, want %q (%s)", n, got, want, name)
		}
	}
	if StatusError != Status(pb.FeatureStatus_FEATURE_STATUS_ERROR) {
		t.Errorf("StatusError is %d, the proto's %d", StatusError, pb.FeatureStatus_FEATURE_STATUS_ERROR)
	}
}

// TestNewResultShapes checks which responses a lookup of entities accepts:
// the dense matrix by rows or by columns, and nothing that would misalign
// rows or columns (fewer or more entities, missing or extra columns).
func TestNewResultShapes(t *testing.T) {
	present := pb.FeatureStatus_FEATURE_STATUS_PRESENT
	one := func() *pb.EntityResult {
		return &pb.EntityResult{Values: []*pb.FeatureValue{{Status: present, Value: &pb.Value{Kind: &pb.Value_Int64Val{Int64Val: 1}}}}}
	}
	col := func(n int) *pb.FeatureColumn {
		return &pb.FeatureColumn{Type: pb.ValueType_VALUE_TYPE_INT64, Statuses: make([]pb.FeatureStatus, n), Int64Values: make([]int64, n)}
	}
	names := []string{"v:a"}
	tests := []struct {
		name     string
		entities int
		resp     *pb.GetOnlineFeaturesResponse
		wantErr  string // empty: accepted
	}{
		{"rows", 2, &pb.GetOnlineFeaturesResponse{FeatureNames: names, Results: []*pb.EntityResult{one(), one()}}, ""},
		{"columns", 2, &pb.GetOnlineFeaturesResponse{FeatureNames: names, Columns: []*pb.FeatureColumn{col(2)}}, ""},
		{"rows for no entities", 0, &pb.GetOnlineFeaturesResponse{FeatureNames: names}, ""},
		{"columns for no entities", 0, &pb.GetOnlineFeaturesResponse{FeatureNames: names, Columns: []*pb.FeatureColumn{col(0)}}, ""},
		{"no results", 2, &pb.GetOnlineFeaturesResponse{FeatureNames: names}, "0 columns and 0 results for 1 features"},
		{"fewer rows", 2, &pb.GetOnlineFeaturesResponse{FeatureNames: names, Results: []*pb.EntityResult{one()}}, "1 results for 2 entities"},
		{"more rows", 1, &pb.GetOnlineFeaturesResponse{FeatureNames: names, Results: []*pb.EntityResult{one(), one()}}, "2 results for 1 entities"},
		{"rows for no entities, with a row", 0, &pb.GetOnlineFeaturesResponse{FeatureNames: names, Results: []*pb.EntityResult{one()}}, "1 results for 0 entities"},
		{"entity without values", 1, &pb.GetOnlineFeaturesResponse{FeatureNames: names, Results: []*pb.EntityResult{{}}}, "result 0 has 0 values for 1 features"},
		{"fewer in a column", 2, &pb.GetOnlineFeaturesResponse{FeatureNames: names, Columns: []*pb.FeatureColumn{col(1)}}, "1 statuses for 2 entities"},
		{"extra column", 2, &pb.GetOnlineFeaturesResponse{FeatureNames: names, Columns: []*pb.FeatureColumn{col(2), col(2)}}, "2 columns and 0 results for 1 features"},
		{"missing column", 2, &pb.GetOnlineFeaturesResponse{FeatureNames: []string{"v:a", "v:b"}, Columns: []*pb.FeatureColumn{col(2)}}, "1 columns and 0 results for 2 features"},
		{"rows and columns", 1, &pb.GetOnlineFeaturesResponse{FeatureNames: names, Results: []*pb.EntityResult{one()}, Columns: []*pb.FeatureColumn{col(1)}}, "1 columns and 1 results for 1 features"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := newResult(tt.resp, tt.entities)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("newResult: %v", err)
			case tt.wantErr == "" && r.Len() != tt.entities:
				t.Fatalf("%d rows, want %d", r.Len(), tt.entities)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("newResult accepted it, want an error with %q", tt.wantErr)
			case tt.wantErr != "" && (status.Code(err) != codes.Internal || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("newResult: %v, want Internal with %q", err, tt.wantErr)
			}
		})
	}
}

// TestFeaturesNotShared checks that the caller may sort or otherwise
// change the names Features returns without changing the result: Get
// must still find each feature's own column.
func TestFeaturesNotShared(t *testing.T) {
	int64Val := func(n int64) *pb.FeatureValue {
		return &pb.FeatureValue{Status: pb.FeatureStatus_FEATURE_STATUS_PRESENT, Value: &pb.Value{Kind: &pb.Value_Int64Val{Int64Val: n}}}
	}
	r, err := newResult(&pb.GetOnlineFeaturesResponse{FeatureNames: []string{"v:b", "v:a"},
		Results: []*pb.EntityResult{{Values: []*pb.FeatureValue{int64Val(2), int64Val(1)}}}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(r.Features())
	if got := r.Features(); !slices.Equal(got, []string{"v:b", "v:a"}) {
		t.Errorf("Features() = %q after sorting a copy, want [v:b v:a]", got)
	}
	for name, want := range map[string]int64{"v:a": 1, "v:b": 2} {
		if n, ok := r.Get(0, name).Int64Val(); !ok || n != want {
			t.Errorf("Get(0, %q) = %d, %v; want %d", name, n, ok, want)
		}
	}
}
