package serving

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// checkResponseJSON compares appendResponseJSON with protojson, the
// reference: both fail, or both give the same JSON value (numbers compared
// as written) and, white space aside, the same bytes, so field order and
// string escapes match too.
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
	// protojson adds white space at random; json.Compact removes it and
	// changes nothing else.
	var g, w bytes.Buffer
	if err := json.Compact(&g, got); err != nil {
		t.Fatal(err)
	}
	if err := json.Compact(&w, want); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g.Bytes(), w.Bytes()) {
		t.Fatalf("JSON is written differently from protojson's:\n got %s\nwant %s", got, want)
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
	// Columns of random shape, not only the consistent ones the server
	// makes: the encoder mirrors whatever the message holds. Type and
	// statuses include numbers with no name; a nil column or list value is
	// written as {}, as protojson does.
	for range pick(4) {
		if pick(10) == 0 {
			resp.Columns = append(resp.Columns, nil)
			continue
		}
		n := pick(5)
		some := func() int { // n elements, or sometimes none or a few
			if pick(3) == 0 {
				return pick(3)
			}
			return n
		}
		c := &pb.FeatureColumn{Type: pb.ValueType(pick(16) - 1)}
		for range some() {
			c.Statuses = append(c.Statuses, pb.FeatureStatus(pick(7)-1))
		}
		if pick(3) == 0 {
			for range some() {
				c.StringValues = append(c.StringValues, str())
			}
		}
		if pick(3) == 0 {
			for range some() {
				c.Int64Values = append(c.Int64Values, i64())
			}
		}
		if pick(3) == 0 {
			for range some() {
				c.DoubleValues = append(c.DoubleValues, dbl())
			}
		}
		if pick(3) == 0 {
			for range some() {
				c.BoolValues = append(c.BoolValues, pick(2) == 0)
			}
		}
		if pick(3) == 0 {
			for range some() {
				c.ListValues = append(c.ListValues, value())
			}
		}
		if pick(2) == 0 {
			for range some() {
				has := pick(2) == 0
				c.HasEventTime = append(c.HasEventTime, has)
				ms := int64(0)
				if has {
					ms = i64()
				}
				c.EventTimesUnixMs = append(c.EventTimesUnixMs, ms)
			}
		}
		if pick(2) == 0 {
			c.Window = &pb.Interval{Start: ts(), End: ts()}
		}
		resp.Columns = append(resp.Columns, c)
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
		checkResponseJSON(t, &pb.GetOnlineFeaturesResponse{Columns: []*pb.FeatureColumn{{StringValues: []string{s}}}})
	}
	for _, x := range jsonTestDoubles {
		checkResponseJSON(t, &pb.GetOnlineFeaturesResponse{Results: []*pb.EntityResult{{Values: []*pb.FeatureValue{{Value: dval(x)}}}}})
		checkResponseJSON(t, &pb.GetOnlineFeaturesResponse{Columns: []*pb.FeatureColumn{{DoubleValues: []float64{x}}}})
	}
	for _, n := range jsonTestInts {
		checkResponseJSON(t, &pb.GetOnlineFeaturesResponse{Columns: []*pb.FeatureColumn{{Int64Values: []int64{n}, EventTimesUnixMs: []int64{n}}}})
	}
	for typ := range int32(16) {
		checkResponseJSON(t, &pb.GetOnlineFeaturesResponse{Columns: []*pb.FeatureColumn{{Type: pb.ValueType(typ - 1), Statuses: []pb.FeatureStatus{pb.FeatureStatus(typ - 1)}}}})
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
			Columns: []*pb.FeatureColumn{{
				Type:             pb.ValueType(st),
				Statuses:         []pb.FeatureStatus{pb.FeatureStatus(st), pb.FeatureStatus_FEATURE_STATUS_PRESENT},
				StringValues:     []string{name, s},
				Int64Values:      []int64{n, secs},
				DoubleValues:     []float64{x, -x},
				BoolValues:       []bool{st > 0, st <= 0},
				ListValues:       []*pb.Value{sval(s), {}},
				HasEventTime:     []bool{true, false},
				EventTimesUnixMs: []int64{secs, 0},
				Window:           &pb.Interval{Start: ts},
			}},
		})
	})
}

// columnsResponse is a response of entities × features in
// RESPONSE_LAYOUT_COLUMNS, a double feature with event times and a window.
func columnsResponse(entities, features int) *pb.GetOnlineFeaturesResponse {
	resp := &pb.GetOnlineFeaturesResponse{ReadTime: timestamppb.New(time.Unix(1795680000, 0)), RegistryVersion: 7}
	for j := range features {
		resp.FeatureNames = append(resp.FeatureNames, "card_txn:amount_sum_1h_"+strconv.Itoa(j))
		c := &pb.FeatureColumn{
			Type:   pb.ValueType_VALUE_TYPE_DOUBLE,
			Window: &pb.Interval{Start: timestamppb.New(time.Unix(1795676400, 0)), End: timestamppb.New(time.Unix(1795680000, 0))},
		}
		for i := range entities {
			c.Statuses = append(c.Statuses, pb.FeatureStatus_FEATURE_STATUS_PRESENT)
			c.DoubleValues = append(c.DoubleValues, float64(i)*1.25)
			c.HasEventTime = append(c.HasEventTime, true)
			c.EventTimesUnixMs = append(c.EventTimesUnixMs, 1795679999000+int64(i))
		}
		resp.Columns = append(resp.Columns, c)
	}
	return resp
}

func TestResponseJSONAllocs(t *testing.T) {
	resp := columnsResponse(10, 3)
	resp.Columns = append(resp.Columns, &pb.FeatureColumn{
		Type:         pb.ValueType_VALUE_TYPE_STRING_LIST,
		Statuses:     []pb.FeatureStatus{pb.FeatureStatus_FEATURE_STATUS_PRESENT, 99},
		StringValues: []string{"a", "b"},
		ListValues:   []*pb.Value{{Kind: &pb.Value_StringListVal{StringListVal: &pb.StringList{Val: []string{"x"}}}}, {}},
	})
	resp.Results = []*pb.EntityResult{{Values: []*pb.FeatureValue{{Value: dval(1), Status: pb.FeatureStatus_FEATURE_STATUS_PRESENT, EventTime: resp.ReadTime}}}}
	checkResponseJSON(t, resp)
	b, err := appendResponseJSON(nil, resp)
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { b, _ = appendResponseJSON(b[:0], resp) }); n != 0 {
		t.Errorf("appendResponseJSON made %v allocations into a large enough buffer, want 0", n)
	}
}

// BenchmarkResponseJSON encodes the same 100 entities × 10 features in
// either layout.
func BenchmarkResponseJSON(b *testing.B) {
	cols := columnsResponse(100, 10)
	rows := &pb.GetOnlineFeaturesResponse{FeatureNames: cols.FeatureNames, ReadTime: cols.ReadTime, RegistryVersion: cols.RegistryVersion}
	for i := range 100 {
		r := &pb.EntityResult{}
		for _, c := range cols.Columns {
			r.Values = append(r.Values, &pb.FeatureValue{
				Value:     dval(c.DoubleValues[i]),
				Status:    c.Statuses[i],
				EventTime: timestamppb.New(time.UnixMilli(c.EventTimesUnixMs[i])),
				Window:    c.Window,
			})
		}
		rows.Results = append(rows.Results, r)
	}
	for _, bc := range []struct {
		name string
		resp *pb.GetOnlineFeaturesResponse
	}{{"layout=rows", rows}, {"layout=columns", cols}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			buf, _ := appendResponseJSON(nil, bc.resp)
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				buf, _ = appendResponseJSON(buf[:0], bc.resp)
			}
		})
	}
}
