package serving

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// encodeDefs have a feature of every value kind, windowed and not.
const encodeDefs = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card_id: card}
fields: {amount: double, n: int64, ok: bool, merchant: string}
allowed_lateness: 0s
---
kind: FeatureView
name: win
entity: card
source: txns
tile: 1m
features:
  - {name: count_1h, aggregation: count, window: 1h}
  - {name: sum_10m, aggregation: sum, field: amount, window: 10m}
  - {name: merchants, aggregation: last_n, field: merchant, n: 3, window: 1h}
  - {name: amounts, aggregation: last_n, field: amount, n: 3, window: 1h}
  - {name: ns, aggregation: last_n, field: n, n: 3, window: 1h}
  - {name: oks, aggregation: last_n, field: ok, n: 3, window: 1h}
  - {name: life, aggregation: count, window: lifetime}
---
kind: FeatureView
name: last
entity: card
source: txns
ttl: 1h
features:
  - {name: amount, field: amount, type: double}
  - {name: n, field: n, type: int64}
  - {name: ok, field: ok, type: bool}
  - {name: merchant, field: merchant, type: string}
`

// TestEncodeResponse checks the hand-written encoding of responses against
// the protobuf runtime's encoding of the messages fill builds, on random
// values of every kind and status, with and without metadata.
func TestEncodeResponse(t *testing.T) {
	snap := loadSnapshot(t, 1, encodeDefs)
	p := newPlan("p", snap)
	rng := rand.New(rand.NewPCG(1, 2))
	selections := map[string][]string{
		"all":    {"win:*", "last:*"},
		"last":   {"last:merchant", "last:n"},
		"window": {"win:sum_10m", "win:count_1h"},
		"mixed":  {"last:ok", "win:oks", "win:life", "last:amount", "win:amounts", "win:ns", "win:merchants"},
	}
	for name, refs := range selections {
		sel, err := p.parseRefs(refs)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			entities int
			meta     *bool
			version  int64
		}{
			{1, nil, 1}, {1, proto.Bool(false), 0}, {3, proto.Bool(true), 7}, {40, nil, math.MaxInt64}, {5, proto.Bool(false), 3},
			// Beyond 127 entities, the packed runs of statuses and flags
			// take lengths of two bytes, and those of event times longer.
			{127, nil, 1}, {128, proto.Bool(true), 2}, {300, proto.Bool(false), 3}, {1000, nil, 4},
		} {
			for round := range 20 {
				t.Run(fmt.Sprintf("%s/entities=%d/meta=%v/%d", name, tc.entities, tc.meta != nil && !*tc.meta, round), func(t *testing.T) {
					req := &pb.GetOnlineFeaturesRequest{IncludeMetadata: tc.meta}
					for range tc.entities {
						req.Entities = append(req.Entities, skey("c"))
					}
					vals := randomValues(rng, sel, tc.entities)
					now := time.UnixMilli(rng.Int64N(4e12) - 1e12).Add(time.Duration(rng.IntN(1e6)))
					want, err := proto.Marshal(fill(req, sel, vals, tc.version, now))
					if err != nil {
						t.Fatal(err)
					}
					got, err := proto.Marshal(encodeResponse(&scratch{}, req, sel, vals, tc.version, now))
					if err != nil {
						t.Fatal(err)
					}
					checkSameBytes(t, got, want)
					want, err = proto.Marshal(fillColumns(req, sel, vals, tc.version, now))
					if err != nil {
						t.Fatal(err)
					}
					got, err = proto.Marshal(encodeColumns(&scratch{}, req, sel, vals, tc.version, now))
					if err != nil {
						t.Fatal(err)
					}
					checkSameBytes(t, got, want)
				})
			}
		}
	}
}

func checkSameBytes(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		var g, w pb.GetOnlineFeaturesResponse
		_ = proto.Unmarshal(got, &g)
		_ = proto.Unmarshal(want, &w)
		t.Fatalf("encoded %d bytes, protobuf %d\ngot  %v\nwant %v", len(got), len(want), &g, &w)
	}
}

// TestColumnsMatchRows checks that a response by columns holds what the
// response by rows holds, value by value, decoded from the wire as a
// client does.
func TestColumnsMatchRows(t *testing.T) {
	snap := loadSnapshot(t, 1, encodeDefs)
	p := newPlan("p", snap)
	sel, err := p.parseRefs([]string{"win:*", "last:*"})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 200 {
		ne := 1 + rng.IntN(30)
		req := &pb.GetOnlineFeaturesRequest{}
		if round%3 == 0 {
			req.IncludeMetadata = proto.Bool(false)
		}
		for range ne {
			req.Entities = append(req.Entities, skey("c"))
		}
		vals := randomValues(rng, sel, ne)
		// Every entity is read at one time, so a column covers one interval.
		for i := range ne {
			for j := range sel.views {
				for f := range vals[i*len(sel.views)+j] {
					vals[i*len(sel.views)+j][f].Covered = vals[j][f].Covered
				}
			}
		}
		now := time.UnixMilli(rng.Int64N(4e12) - 1e12)
		var rows, cols pb.GetOnlineFeaturesResponse
		for _, x := range []struct {
			resp *pb.GetOnlineFeaturesResponse
			into *pb.GetOnlineFeaturesResponse
		}{{encodeResponse(&scratch{}, req, sel, vals, 5, now), &rows}, {encodeColumns(&scratch{}, req, sel, vals, 5, now), &cols}} {
			b, err := proto.Marshal(x.resp)
			if err != nil {
				t.Fatal(err)
			}
			if err := proto.Unmarshal(b, x.into); err != nil {
				t.Fatal(err)
			}
		}
		if len(cols.GetResults()) != 0 || len(cols.GetColumns()) != len(sel.cols) || !proto.Equal(cols.GetReadTime(), rows.GetReadTime()) ||
			cols.GetRegistryVersion() != 5 || fmt.Sprint(cols.GetFeatureNames()) != fmt.Sprint(rows.GetFeatureNames()) {
			t.Fatalf("round %d: columns response %v", round, &cols)
		}
		for c, col := range cols.GetColumns() {
			for i := range ne {
				if got, want := columnCell(t, col, i), rows.GetResults()[i].GetValues()[c]; !proto.Equal(got, want) {
					t.Fatalf("round %d: entity %d, %s: columns give %v, rows %v", round, i, sel.names[c], got, want)
				}
			}
		}
	}
}

// columnCell rebuilds the FeatureValue of entity i from a column, as a
// client of the columns layout reads it.
func columnCell(t *testing.T, col *pb.FeatureColumn, i int) *pb.FeatureValue {
	t.Helper()
	fv := &pb.FeatureValue{Status: col.GetStatuses()[i]}
	if fv.Status == pb.FeatureStatus_FEATURE_STATUS_PRESENT {
		switch col.GetType() {
		case pb.ValueType_VALUE_TYPE_STRING:
			fv.Value = &pb.Value{Kind: &pb.Value_StringVal{StringVal: col.GetStringValues()[i]}}
		case pb.ValueType_VALUE_TYPE_INT64:
			fv.Value = &pb.Value{Kind: &pb.Value_Int64Val{Int64Val: col.GetInt64Values()[i]}}
		case pb.ValueType_VALUE_TYPE_DOUBLE:
			fv.Value = &pb.Value{Kind: &pb.Value_DoubleVal{DoubleVal: col.GetDoubleValues()[i]}}
		case pb.ValueType_VALUE_TYPE_BOOL:
			fv.Value = &pb.Value{Kind: &pb.Value_BoolVal{BoolVal: col.GetBoolValues()[i]}}
		default:
			fv.Value = col.GetListValues()[i]
		}
	} else {
		// Absent values hold their type's zero.
		zero := true
		switch col.GetType() {
		case pb.ValueType_VALUE_TYPE_STRING:
			zero = col.GetStringValues()[i] == ""
		case pb.ValueType_VALUE_TYPE_INT64:
			zero = col.GetInt64Values()[i] == 0
		case pb.ValueType_VALUE_TYPE_DOUBLE:
			zero = math.Float64bits(col.GetDoubleValues()[i]) == 0
		case pb.ValueType_VALUE_TYPE_BOOL:
			zero = !col.GetBoolValues()[i]
		default:
			zero = col.GetListValues()[i].GetKind() == nil
		}
		if !zero {
			t.Fatalf("entity %d: %v is absent but holds a value: %v", i, fv.Status, col)
		}
	}
	if len(col.GetHasEventTime()) > 0 {
		if col.GetHasEventTime()[i] {
			ms := col.GetEventTimesUnixMs()[i]
			fv.EventTime = timestamppb.New(time.UnixMilli(ms))
		} else if col.GetEventTimesUnixMs()[i] != 0 {
			t.Fatalf("entity %d: no event time, but %d", i, col.GetEventTimesUnixMs()[i])
		}
	}
	fv.Window = col.GetWindow()
	return fv
}

// randomValues returns read results for the selection's views, as
// ReadViews would: the windowed features of a column cover the same interval
// for every entity (mostly: sometimes not, which fill allows).
func randomValues(rng *rand.Rand, sel *selection, entities int) [][]window.FeatureValue {
	covered := map[*viewPlan][]window.Interval{}
	for _, vp := range sel.views {
		for range vp.infos {
			covered[vp] = append(covered[vp], window.Interval{Start: rng.Int64N(1e13) - 5e12, End: rng.Int64N(1e13) - 5e12})
		}
	}
	var out [][]window.FeatureValue
	for range entities {
		for _, vp := range sel.views {
			fvs := make([]window.FeatureValue, len(vp.infos))
			for i, info := range vp.infos {
				fv := &fvs[i]
				fv.Status = window.Status(1 + rng.IntN(5))
				if fv.Status == window.StatusPresent {
					fv.Value = randomValue(rng, info.Kind)
				}
				if rng.IntN(3) > 0 {
					fv.EventTime, fv.HasEventTime = randomMs(rng), true
				}
				fv.Covered = covered[vp][i]
				if rng.IntN(10) == 0 {
					fv.Covered = window.Interval{Start: randomMs(rng), End: randomMs(rng)}
				}
			}
			out = append(out, fvs)
		}
	}
	return out
}

// randomMs returns a Unix millisecond, often one with a zero part.
func randomMs(rng *rand.Rand) int64 {
	switch rng.IntN(5) {
	case 0:
		return 0
	case 1:
		return rng.Int64N(2000) * 1000 // whole seconds
	case 2:
		return rng.Int64N(1000) - 500 // around the epoch
	}
	return rng.Int64N(1e13) - 5e12
}

func randomValue(rng *rand.Rand, k featurestore.Kind) featurestore.Value {
	n := rng.IntN(4)
	str := func() string { return []string{"", "m1", "ünï", string(make([]byte, 200))}[rng.IntN(4)] }
	i64 := func() int64 {
		return []int64{0, 1, -1, math.MaxInt64, math.MinInt64, rng.Int64()}[rng.IntN(6)]
	}
	dbl := func() float64 {
		return []float64{0, math.Copysign(0, -1), 1.5, -2.25, math.Inf(1), math.NaN(), rng.NormFloat64()}[rng.IntN(7)]
	}
	switch k {
	case featurestore.KindString:
		return featurestore.StringValue(str())
	case featurestore.KindInt64:
		return featurestore.Int64Value(i64())
	case featurestore.KindDouble:
		return featurestore.DoubleValue(dbl())
	case featurestore.KindBool:
		return featurestore.BoolValue(rng.IntN(2) == 0)
	case featurestore.KindStringList:
		l := make([]string, n)
		for i := range l {
			l[i] = str()
		}
		return featurestore.StringListValue(l)
	case featurestore.KindInt64List:
		l := make([]int64, n)
		for i := range l {
			l[i] = i64()
		}
		return featurestore.Int64ListValue(l)
	case featurestore.KindDoubleList:
		l := make([]float64, n)
		for i := range l {
			l[i] = dbl()
		}
		return featurestore.DoubleListValue(l)
	case featurestore.KindBoolList:
		l := make([]bool, n)
		for i := range l {
			l[i] = rng.IntN(2) == 0
		}
		return featurestore.BoolListValue(l)
	}
	panic(fmt.Sprintf("kind %s", k))
}
