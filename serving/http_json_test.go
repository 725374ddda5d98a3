package serving

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// checkResponseJSON compares appendResponseJSON with protojson, the
// reference: both fail, or both give the same JSON value (numbers compared
// as written).
func checkResponseJSON(t *testing.T, resp *pb.GetOnlineFeaturesResponse) {
	t.Helper()
	got, gotErr := appendResponseJSON(nil, resp)
	want, wantErr := protojson.MarshalOptions{UseProtoNames: true}.Marshal(resp)
	if (gotErr != nil) != (wantErr != nil) {
		t.Fatalf("error %v, protojson's %v, for %v", gotErr, wantErr, resp)
	}
	if gotErr != nil {
		return
	}
	decode := func(b []byte) any {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil || d.More() {
			t.Fatalf("invalid JSON %q: %v", b, err)
		}
		return v
	}
	if g, w := decode(got), decode(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("JSON differs from protojson's:\n got %s\nwant %s", got, want)
	}
}

var (
	jsonTestStrings = []string{"", "card_txn:n_1h", `q"uo\te`, "\x00\x01\x1f\x7f", "\b\f\n\r\t", "<&>", "é ü", "\u2028\u2029", "😀", "\ufffd", "bad\xff", "\xc3"}
	jsonTestDoubles = []float64{0, math.Copysign(0, -1), 1, -2.5, 1e-6, 1e-7, 9.99e-7, 1e20, 1e21, -1e21, 123456789.125, 5e-324, math.MaxFloat64, math.NaN(), math.Inf(1), math.Inf(-1), 1.0 / 3}
	jsonTestInts    = []int64{0, 1, -1, 1 << 53, math.MaxInt64, math.MinInt64}
	jsonTestSeconds = []int64{0, -1, 1795680000, minJSONSeconds, maxJSONSeconds, minJSONSeconds - 1, maxJSONSeconds + 1}
	jsonTestNanos   = []int32{0, 1, 1000, 1000000, 120000000, 100000000, 999999999, 123456789, -1, 1000000000}
)

// randomResponse makes a response of random shape and content, with now
// and then a value protojson refuses.
func randomResponse(rng *rand.Rand) *pb.GetOnlineFeaturesResponse {
	pick := func(n int) int { return rng.IntN(n) }
	str := func() string {
		s := ""
		for range pick(3) {
			s += jsonTestStrings[pick(len(jsonTestStrings))]
		}
		return s
	}
	dbl := func() float64 {
		if pick(2) == 0 {
			return jsonTestDoubles[pick(len(jsonTestDoubles))]
		}
		return rng.NormFloat64() * math.Pow(10, float64(pick(40)-20))
	}
	i64 := func() int64 {
		if pick(2) == 0 {
			return jsonTestInts[pick(len(jsonTestInts))]
		}
		return rng.Int64() - rng.Int64()
	}
	ts := func() *timestamppb.Timestamp {
		if pick(3) == 0 {
			return nil
		}
		secs := rng.Int64N(maxJSONSeconds-minJSONSeconds+1) + minJSONSeconds
		if pick(4) == 0 {
			secs = jsonTestSeconds[pick(len(jsonTestSeconds))]
		}
		nanos := jsonTestNanos[pick(len(jsonTestNanos)-2)] // valid ones
		if pick(20) == 0 {
			nanos = jsonTestNanos[pick(len(jsonTestNanos))]
		}
		return &timestamppb.Timestamp{Seconds: secs, Nanos: nanos}
	}
	value := func() *pb.Value {
		v := &pb.Value{}
		switch pick(10) {
		case 0:
			return nil
		case 1:
			// no kind
		case 2:
			v.Kind = &pb.Value_StringVal{StringVal: str()}
		case 3:
			v.Kind = &pb.Value_Int64Val{Int64Val: i64()}
		case 4:
			v.Kind = &pb.Value_DoubleVal{DoubleVal: dbl()}
		case 5:
			v.Kind = &pb.Value_BoolVal{BoolVal: pick(2) == 0}
		case 6:
			l := &pb.StringList{}
			for range pick(4) {
				l.Val = append(l.Val, str())
			}
			v.Kind = &pb.Value_StringListVal{StringListVal: l}
		case 7:
			l := &pb.Int64List{}
			for range pick(4) {
				l.Val = append(l.Val, i64())
			}
			v.Kind = &pb.Value_Int64ListVal{Int64ListVal: l}
		case 8:
			l := &pb.DoubleList{}
			for range pick(4) {
				l.Val = append(l.Val, dbl())
			}
			v.Kind = &pb.Value_DoubleListVal{DoubleListVal: l}
		case 9:
			l := &pb.BoolList{}
			for range pick(4) {
				l.Val = append(l.Val, pick(2) == 0)
			}
			v.Kind = &pb.Value_BoolListVal{BoolListVal: l}
		}
		return v
	}
	resp := &pb.GetOnlineFeaturesResponse{ReadTime: ts()}
	for range pick(4) {
		resp.FeatureNames = append(resp.FeatureNames, str())
	}
	for range pick(4) {
		r := &pb.EntityResult{}
		for range pick(5) {
			fv := &pb.FeatureValue{Value: value(), Status: pb.FeatureStatus(pick(7) - 1), EventTime: ts()}
			if pick(2) == 0 {
				fv.Window = &pb.Interval{Start: ts(), End: ts()}
			}
			r.Values = append(r.Values, fv)
		}
		resp.Results = append(resp.Results, r)
	}
	if pick(2) == 0 {
		resp.RegistryVersion = i64()
	}
	return resp
}

func TestResponseJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		checkResponseJSON(t, randomResponse(rng))
	}
	// Every special value on its own, so none depends on the draw.
	for _, s := range jsonTestStrings {
		checkResponseJSON(t, &pb.GetOnlineFeaturesResponse{FeatureNames: []string{s}})
	}
	for _, x := range jsonTestDoubles {
		checkResponseJSON(t, &pb.GetOnlineFeaturesResponse{Results: []*pb.EntityResult{{Values: []*pb.FeatureValue{{Value: dval(x)}}}}})
	}
	for _, secs := range jsonTestSeconds {
		for _, nanos := range jsonTestNanos {
			checkResponseJSON(t, &pb.GetOnlineFeaturesResponse{ReadTime: &timestamppb.Timestamp{Seconds: secs, Nanos: nanos}})
		}
	}
}

func FuzzResponseJSON(f *testing.F) {
	f.Add("card_txn:n_1h", "m1", 2.5, int64(3), int64(1795680000), int32(120000000), int32(1))
	f.Add("\x00\"\\", "bad\xff", math.Inf(-1), int64(math.MinInt64), int64(minJSONSeconds-1), int32(-1), int32(9))
	f.Add("", "", 1e-7, int64(0), int64(0), int32(0), int32(0))
	f.Fuzz(func(t *testing.T, name, s string, x float64, n, secs int64, nanos, st int32) {
		ts := &timestamppb.Timestamp{Seconds: secs, Nanos: nanos}
		checkResponseJSON(t, &pb.GetOnlineFeaturesResponse{
			FeatureNames: []string{name, s},
			Results: []*pb.EntityResult{{Values: []*pb.FeatureValue{
				{Value: sval(s), Status: pb.FeatureStatus(st), EventTime: ts},
				{Value: dval(x), Window: &pb.Interval{Start: ts, End: ts}},
				{Value: ival(n)},
				{Value: &pb.Value{Kind: &pb.Value_DoubleListVal{DoubleListVal: &pb.DoubleList{Val: []float64{x, -x}}}}},
			}}},
			ReadTime:        ts,
			RegistryVersion: n,
		})
	})
}
