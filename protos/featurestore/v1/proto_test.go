package featurestorev1_test

import (
	"math"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsv1 "github.com/featurestore/featurestore/protos/featurestore/v1"
)

func populatedResponse() *fsv1.GetOnlineFeaturesResponse {
	readTime := time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)
	window := &fsv1.Interval{
		Start: timestamppb.New(readTime.Truncate(time.Minute).Add(-59 * time.Minute)),
		End:   timestamppb.New(readTime.Add(time.Nanosecond)),
	}
	present := func(v *fsv1.Value, eventTime time.Time, w *fsv1.Interval) *fsv1.FeatureValue {
		return &fsv1.FeatureValue{
			Value:     v,
			Status:    fsv1.FeatureStatus_FEATURE_STATUS_PRESENT,
			EventTime: timestamppb.New(eventTime),
			Window:    w,
		}
	}
	return &fsv1.GetOnlineFeaturesResponse{
		FeatureNames: []string{
			"card_txn:amount_sum_1h", "card_txn:txn_count_1h", "card_txn:last_merchant",
			"card_txn:is_blocked", "card_txn:recent_mccs", "card_txn:recent_amounts_cents",
			"card_txn:recent_scores", "card_txn:recent_flags", "card_txn:amount_max_1h",
		},
		Results: []*fsv1.EntityResult{
			{Values: []*fsv1.FeatureValue{
				present(&fsv1.Value{Kind: &fsv1.Value_DoubleVal{DoubleVal: 1234.5}}, readTime.Add(-time.Second), window),
				present(&fsv1.Value{Kind: &fsv1.Value_Int64Val{Int64Val: -7}}, readTime.Add(-time.Second), window),
				present(&fsv1.Value{Kind: &fsv1.Value_StringVal{StringVal: "café {x}:*"}}, readTime.Add(-time.Hour), nil),
				present(&fsv1.Value{Kind: &fsv1.Value_BoolVal{BoolVal: true}}, readTime.Add(-time.Hour), nil),
				present(&fsv1.Value{Kind: &fsv1.Value_StringListVal{StringListVal: &fsv1.StringList{Val: []string{"5411", "", "5812"}}}}, readTime, nil),
				present(&fsv1.Value{Kind: &fsv1.Value_Int64ListVal{Int64ListVal: &fsv1.Int64List{Val: []int64{1, -1, 1 << 62}}}}, readTime, nil),
				present(&fsv1.Value{Kind: &fsv1.Value_DoubleListVal{DoubleListVal: &fsv1.DoubleList{Val: []float64{0.25, math.Inf(-1), 1e300}}}}, readTime, nil),
				// An empty list is a present value, distinct from an unset Value.
				present(&fsv1.Value{Kind: &fsv1.Value_BoolListVal{BoolListVal: &fsv1.BoolList{}}}, readTime, nil),
				present(&fsv1.Value{Kind: &fsv1.Value_DoubleVal{DoubleVal: 99.99}}, readTime.Add(-time.Minute), window),
			}},
			{Values: []*fsv1.FeatureValue{
				{Status: fsv1.FeatureStatus_FEATURE_STATUS_NOT_FOUND, Window: window},
				present(&fsv1.Value{Kind: &fsv1.Value_Int64Val{Int64Val: 0}}, time.Time{}, window),
				{Status: fsv1.FeatureStatus_FEATURE_STATUS_EXPIRED, EventTime: timestamppb.New(readTime.Add(-48 * time.Hour))},
				{Status: fsv1.FeatureStatus_FEATURE_STATUS_NULL_VALUE, EventTime: timestamppb.New(readTime.Add(-time.Hour))},
				{Status: fsv1.FeatureStatus_FEATURE_STATUS_NOT_FOUND},
				{Status: fsv1.FeatureStatus_FEATURE_STATUS_NOT_FOUND},
				{Status: fsv1.FeatureStatus_FEATURE_STATUS_NOT_FOUND},
				{Status: fsv1.FeatureStatus_FEATURE_STATUS_NOT_FOUND},
				{Status: fsv1.FeatureStatus_FEATURE_STATUS_NOT_FOUND, Window: window},
			}},
		},
		ReadTime:        timestamppb.New(readTime),
		RegistryVersion: 42,
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{"populated GetOnlineFeaturesResponse", populatedResponse()},
		{"request by feature service", &fsv1.GetOnlineFeaturesRequest{
			Kind: &fsv1.GetOnlineFeaturesRequest_FeatureService{FeatureService: "fraud_v3"},
			Entities: []*fsv1.EntityKey{
				{JoinKeyValues: []*fsv1.Value{{Kind: &fsv1.Value_StringVal{StringVal: "card-1"}}}},
				{JoinKeyValues: []*fsv1.Value{{Kind: &fsv1.Value_StringVal{StringVal: "card-2"}}}},
			},
			RequestContext:  map[string]*fsv1.Value{"amount": {Kind: &fsv1.Value_DoubleVal{DoubleVal: 12.5}}},
			IncludeMetadata: proto.Bool(false),
		}},
		{"request by feature refs", &fsv1.GetOnlineFeaturesRequest{
			Kind: &fsv1.GetOnlineFeaturesRequest_Features{Features: &fsv1.FeatureList{
				Refs: []string{"card_txn:amount_sum_1h", "merchant:risk"},
			}},
			Entities: []*fsv1.EntityKey{{JoinKeyValues: []*fsv1.Value{
				{Kind: &fsv1.Value_Int64Val{Int64Val: 7}},
				{Kind: &fsv1.Value_StringVal{StringVal: "eu"}},
			}}},
		}},
		{"registry", &fsv1.GetRegistryResponse{
			Version: &fsv1.RegistryVersion{
				Version:   3,
				Digest:    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
				AppliedAt: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
				AppliedBy: "ci@example.com",
				Message:   "add amount_sum_1h",
			},
			DefinitionsJson: []byte(`{"entities":[]}`),
			FeatureViews: []*fsv1.FeatureViewSummary{{
				Name: "card_txn", Entity: "card", Source: "payments",
				Features: []*fsv1.FeatureSummary{
					{Name: "amount_sum_1h", Type: fsv1.ValueType_VALUE_TYPE_DOUBLE, Aggregation: "sum", Window: durationpb.New(time.Hour)},
					{Name: "last_merchant", Type: fsv1.ValueType_VALUE_TYPE_STRING, Aggregation: "last"},
				},
			}},
			FeatureServices: []*fsv1.FeatureServiceSummary{{Name: "fraud_v3", Features: []string{"card_txn:amount_sum_1h"}}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(tt.msg)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			got := tt.msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(b, got); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if !proto.Equal(tt.msg, got) {
				t.Fatalf("binary round trip changed the message:\nwant %v\ngot  %v", tt.msg, got)
			}
			if u := got.ProtoReflect().GetUnknown(); len(u) != 0 {
				t.Errorf("unmarshal left %d bytes of unknown fields", len(u))
			}

			// grpcurl, reflection and gateways speak JSON; it must round-trip too.
			j, err := protojson.Marshal(tt.msg)
			if err != nil {
				t.Fatalf("marshal JSON: %v", err)
			}
			gotJSON := tt.msg.ProtoReflect().New().Interface()
			if err := protojson.Unmarshal(j, gotJSON); err != nil {
				t.Fatalf("unmarshal JSON: %v", err)
			}
			if !proto.Equal(tt.msg, gotJSON) {
				t.Fatalf("JSON round trip changed the message:\nwant %v\ngot  %v\njson %s", tt.msg, gotJSON, j)
			}
		})
	}
}

// TestRoundTripKeepsPresence checks the distinctions the API documents: an
// unset Value is not an empty list, and an unset include_metadata is not false.
func TestRoundTripKeepsPresence(t *testing.T) {
	in := &fsv1.GetOnlineFeaturesResponse{Results: []*fsv1.EntityResult{{Values: []*fsv1.FeatureValue{
		{Status: fsv1.FeatureStatus_FEATURE_STATUS_NOT_FOUND},
		{Status: fsv1.FeatureStatus_FEATURE_STATUS_PRESENT, Value: &fsv1.Value{Kind: &fsv1.Value_StringListVal{StringListVal: &fsv1.StringList{}}}},
	}}}}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out fsv1.GetOnlineFeaturesResponse
	if err := proto.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	vals := out.GetResults()[0].GetValues()
	if vals[0].GetValue().GetKind() != nil || vals[0].GetWindow() != nil || vals[0].GetEventTime() != nil {
		t.Errorf("NOT_FOUND value gained fields: %v", vals[0])
	}
	if l := vals[1].GetValue().GetStringListVal(); l == nil || len(l.GetVal()) != 0 {
		t.Errorf("empty list did not survive as a present empty list: %v", vals[1])
	}

	for _, im := range []*bool{nil, proto.Bool(false), proto.Bool(true)} {
		b, err := proto.Marshal(&fsv1.GetOnlineFeaturesRequest{IncludeMetadata: im})
		if err != nil {
			t.Fatal(err)
		}
		var req fsv1.GetOnlineFeaturesRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			t.Fatal(err)
		}
		if (im == nil) != (req.IncludeMetadata == nil) || (im != nil && *im != req.GetIncludeMetadata()) {
			t.Errorf("include_metadata %v came back as %v", im, req.IncludeMetadata)
		}
	}
}

// TestServices pins the service and method names: they are part of the wire
// protocol (the gRPC path), so a rename breaks every deployed client.
func TestServices(t *testing.T) {
	type method struct{ name, in, out string }
	tests := []struct {
		service string
		desc    *grpc.ServiceDesc
		methods []method
	}{
		{
			service: "featurestore.v1.OnlineService",
			desc:    &fsv1.OnlineService_ServiceDesc,
			methods: []method{
				{"GetOnlineFeatures", "featurestore.v1.GetOnlineFeaturesRequest", "featurestore.v1.GetOnlineFeaturesResponse"},
			},
		},
		{
			service: "featurestore.v1.RegistryService",
			desc:    &fsv1.RegistryService_ServiceDesc,
			methods: []method{
				{"ListVersions", "featurestore.v1.ListVersionsRequest", "featurestore.v1.ListVersionsResponse"},
				{"GetRegistry", "featurestore.v1.GetRegistryRequest", "featurestore.v1.GetRegistryResponse"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(tt.service))
			if err != nil {
				t.Fatalf("service not registered: %v", err)
			}
			sd, ok := d.(protoreflect.ServiceDescriptor)
			if !ok {
				t.Fatalf("%s is a %T, not a service", tt.service, d)
			}
			if got, want := sd.Methods().Len(), len(tt.methods); got != want {
				t.Errorf("descriptor has %d methods, want %d", got, want)
			}
			for i, m := range tt.methods {
				if i >= sd.Methods().Len() {
					break
				}
				md := sd.Methods().Get(i)
				if string(md.Name()) != m.name || string(md.Input().FullName()) != m.in || string(md.Output().FullName()) != m.out {
					t.Errorf("method %d is %s(%s) returns (%s), want %s(%s) returns (%s)",
						i, md.Name(), md.Input().FullName(), md.Output().FullName(), m.name, m.in, m.out)
				}
				if md.IsStreamingClient() || md.IsStreamingServer() {
					t.Errorf("method %s is streaming, want unary", md.Name())
				}
			}

			if tt.desc.ServiceName != tt.service {
				t.Errorf("ServiceDesc.ServiceName = %q, want %q", tt.desc.ServiceName, tt.service)
			}
			if len(tt.desc.Streams) != 0 {
				t.Errorf("ServiceDesc has %d streams, want none", len(tt.desc.Streams))
			}
			var got []string
			for _, m := range tt.desc.Methods {
				got = append(got, m.MethodName)
				if m.Handler == nil {
					t.Errorf("method %s has no handler", m.MethodName)
				}
			}
			var want []string
			for _, m := range tt.methods {
				want = append(want, m.name)
			}
			if len(got) != len(want) {
				t.Fatalf("ServiceDesc methods = %q, want %q", got, want)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("ServiceDesc methods = %q, want %q", got, want)
					break
				}
			}
		})
	}

	// The full method names are what clients put on the wire.
	for got, want := range map[string]string{
		fsv1.OnlineService_GetOnlineFeatures_FullMethodName: "/featurestore.v1.OnlineService/GetOnlineFeatures",
		fsv1.RegistryService_ListVersions_FullMethodName:    "/featurestore.v1.RegistryService/ListVersions",
		fsv1.RegistryService_GetRegistry_FullMethodName:     "/featurestore.v1.RegistryService/GetRegistry",
	} {
		if got != want {
			t.Errorf("full method name %q, want %q", got, want)
		}
	}
}

// TestEnumNumbers pins enum numbers: clients and stored data hold the numbers,
// so renumbering a value silently changes its meaning.
func TestEnumNumbers(t *testing.T) {
	tests := []struct {
		name string
		got  protoreflect.EnumNumber
		want protoreflect.EnumNumber
	}{
		{"VALUE_TYPE_UNSPECIFIED", fsv1.ValueType_VALUE_TYPE_UNSPECIFIED.Number(), 0},
		{"VALUE_TYPE_STRING", fsv1.ValueType_VALUE_TYPE_STRING.Number(), 1},
		{"VALUE_TYPE_INT64", fsv1.ValueType_VALUE_TYPE_INT64.Number(), 2},
		{"VALUE_TYPE_DOUBLE", fsv1.ValueType_VALUE_TYPE_DOUBLE.Number(), 3},
		{"VALUE_TYPE_BOOL", fsv1.ValueType_VALUE_TYPE_BOOL.Number(), 4},
		{"VALUE_TYPE_STRING_LIST", fsv1.ValueType_VALUE_TYPE_STRING_LIST.Number(), 10},
		{"VALUE_TYPE_INT64_LIST", fsv1.ValueType_VALUE_TYPE_INT64_LIST.Number(), 11},
		{"VALUE_TYPE_DOUBLE_LIST", fsv1.ValueType_VALUE_TYPE_DOUBLE_LIST.Number(), 12},
		{"VALUE_TYPE_BOOL_LIST", fsv1.ValueType_VALUE_TYPE_BOOL_LIST.Number(), 13},
		{"FEATURE_STATUS_UNSPECIFIED", fsv1.FeatureStatus_FEATURE_STATUS_UNSPECIFIED.Number(), 0},
		{"FEATURE_STATUS_PRESENT", fsv1.FeatureStatus_FEATURE_STATUS_PRESENT.Number(), 1},
		{"FEATURE_STATUS_NOT_FOUND", fsv1.FeatureStatus_FEATURE_STATUS_NOT_FOUND.Number(), 2},
		{"FEATURE_STATUS_EXPIRED", fsv1.FeatureStatus_FEATURE_STATUS_EXPIRED.Number(), 3},
		{"FEATURE_STATUS_NULL_VALUE", fsv1.FeatureStatus_FEATURE_STATUS_NULL_VALUE.Number(), 4},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}
