package client

import (
	"strings"
	"testing"

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
