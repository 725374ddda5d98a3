package serving

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// columnRows renders a response by columns as rows renders one by rows.
func columnRows(resp *pb.GetOnlineFeaturesResponse) [][]string {
	var out [][]string
	for c, col := range resp.GetColumns() {
		for i, st := range col.GetStatuses() {
			if c == 0 {
				out = append(out, nil)
			}
			fv := &pb.FeatureValue{Status: st}
			if st == pb.FeatureStatus_FEATURE_STATUS_PRESENT {
				switch col.GetType() {
				case pb.ValueType_VALUE_TYPE_DOUBLE:
					fv.Value = dval(col.GetDoubleValues()[i])
				case pb.ValueType_VALUE_TYPE_INT64:
					fv.Value = ival(col.GetInt64Values()[i])
				case pb.ValueType_VALUE_TYPE_STRING:
					fv.Value = sval(col.GetStringValues()[i])
				case pb.ValueType_VALUE_TYPE_BOOL:
					fv.Value = &pb.Value{Kind: &pb.Value_BoolVal{BoolVal: col.GetBoolValues()[i]}}
				}
			}
			out[i] = append(out[i], show(fv))
		}
	}
	return out
}

// TestOnDemandFeatures checks on-demand features against values worked
// out by hand from the fixture's events (at 21m: c1 has sum_10m 5,
// last_amount 5, a null last_merchant and mean_1h 35/3; c2 sum_10m 0,
// last_amount 7, last_merchant m3, mean_1h 7; nobody has no events), in
// both layouts.
func TestOnDemandFeatures(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, OnlineOptions{Metrics: NewMetrics(reg)})
	f.clock.set(21 * time.Minute)
	ctx10 := map[string]*pb.Value{"amount": dval(10), "merchant": sval("m3")}
	all := []string{"txn_risk:share_10m", "txn_risk:over_mean", "txn_risk:same_merchant", "txn_risk:jump", "txn_risk:mod"}
	g := func(x float64) string { return fmt.Sprintf("PRESENT %g", x) }
	three := 3.0 // a variable: constant expressions are exact, doubles are not
	mean1 := 35 / three
	want := [][]string{
		{g(10.0 / (5 + 10)), g(10 / mean1), "NULL_VALUE", g(10 - 5), "PRESENT 7"},
		{g(10.0 / (0 + 10)), g(10.0 / 7), "PRESENT true", g(10 - 7), "PRESENT 7"},
		{g(1), "NOT_FOUND", "NOT_FOUND", "NOT_FOUND", "PRESENT 7"},
	}
	ents := []*pb.EntityKey{skey("c1"), skey("c2"), skey("nobody")}
	for _, layout := range []pb.ResponseLayout{pb.ResponseLayout_RESPONSE_LAYOUT_ROWS, pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS} {
		for _, sel := range [][]string{all, {"txn_risk:*"}} {
			resp := get(t, f.client, &pb.GetOnlineFeaturesRequest{Kind: refs(sel...), Entities: ents, RequestContext: ctx10, Layout: layout})
			got := rows(resp)
			if layout == pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS {
				got = columnRows(resp)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) || strings.Join(resp.GetFeatureNames(), ",") != strings.Join(all, ",") {
				t.Errorf("%v %v: %q\nvalues:\n got %q\nwant %q", layout, sel, resp.GetFeatureNames(), got, want)
			}
		}
	}

	// Four lookups of three cards: values by view and status, and the
	// online store's reads.
	for st, want := range map[string]float64{"present": 44, "not_found": 12, "null": 4, "expired": 0} {
		if n := counter(t, reg, "featurestore_serving_values_total", map[string]string{"view": "txn_risk", "status": st}); n != want {
			t.Errorf("txn_risk values %s: %v, want %v", st, n, want)
		}
	}
	if n := histogramCount(t, reg, "featurestore_serving_redis_duration_seconds", map[string]string{"result": "ok"}); n != 4 {
		t.Errorf("online store reads observed: %d, want 4", n)
	}

	t.Run("mixed with stored features and by service", func(t *testing.T) {
		resp := get(t, f.client, &pb.GetOnlineFeaturesRequest{
			Kind:           &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: "risk"},
			Entities:       []*pb.EntityKey{skey("c2")},
			RequestContext: map[string]*pb.Value{"amount": dval(10), "merchant": sval("m1")},
		})
		checkRows(t, resp, [][]string{{g(1), "PRESENT 1", "PRESENT false"}})
		// Only the request fields the requested features use are needed.
		resp = get(t, f.client, &pb.GetOnlineFeaturesRequest{
			Kind:           refs("card_txn:n_1h", "txn_risk:jump"),
			Entities:       []*pb.EntityKey{skey("c1")},
			RequestContext: map[string]*pb.Value{"amount": ival(12)}, // an int64 for a double
		})
		checkRows(t, resp, [][]string{{"PRESENT 3", g(7)}})
		// A feature that reads no stored view takes the keys of its
		// view's inputs' entity all the same, positional or named.
		resp = get(t, f.client, &pb.GetOnlineFeaturesRequest{
			Kind:           refs("txn_risk:mod"),
			Entities:       []*pb.EntityKey{skey("c1"), {JoinKeys: map[string]*pb.Value{"card_id": sval("nobody")}}},
			RequestContext: map[string]*pb.Value{"amount": dval(3)},
		})
		checkRows(t, resp, [][]string{{"PRESENT 1"}, {"PRESENT 1"}})
	})

	t.Run("request values per row", func(t *testing.T) {
		row := rowKey
		resp := get(t, f.client, &pb.GetOnlineFeaturesRequest{
			Kind: refs("txn_risk:jump", "txn_risk:same_merchant"),
			Entities: []*pb.EntityKey{row("c1", nil), row("c2", map[string]*pb.Value{"amount": dval(20)}),
				row("c2", map[string]*pb.Value{"merchant": sval("m1"), "amount": ival(1)})},
			RequestContext: map[string]*pb.Value{"amount": dval(10), "merchant": sval("m3")},
			Layout:         pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS,
		})
		want := [][]string{{g(10 - 5), "NULL_VALUE"}, {g(20 - 7), "PRESENT true"}, {g(1 - 7), "PRESENT false"}}
		if got := columnRows(resp); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("values:\n got %q\nwant %q", got, want)
		}
		for _, c := range []struct {
			ents []*pb.EntityKey
			ctx  map[string]*pb.Value
			want string
		}{
			{[]*pb.EntityKey{row("c1", map[string]*pb.Value{"amount": dval(1)}), row("c2", nil)}, nil, `entity 1: request_context has no "amount", which txn_risk:jump uses`},
			{[]*pb.EntityKey{row("c1", map[string]*pb.Value{"amount": dval(1), "zz": dval(1)})}, nil, `entity 0: request_context "zz" is used by no requested feature`},
			{[]*pb.EntityKey{row("c1", map[string]*pb.Value{"amount": sval("1")})}, nil, `entity 0: request_context "amount": want a double value, got string`},
		} {
			_, err := f.client.GetOnlineFeatures(t.Context(), &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:jump"), Entities: c.ents, RequestContext: c.ctx})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), c.want) {
				t.Errorf("%v: %v, want InvalidArgument with %q", c.ents, err, c.want)
			}
		}
	})

	t.Run("a failed run is null and counted", func(t *testing.T) {
		resp := get(t, f.client, &pb.GetOnlineFeaturesRequest{
			Kind:           refs("txn_risk:mod", "txn_risk:jump"),
			Entities:       []*pb.EntityKey{skey("c1")},
			RequestContext: map[string]*pb.Value{"amount": dval(0.5)}, // 7 % 0
		})
		checkRows(t, resp, [][]string{{"NULL_VALUE", g(0.5 - 5)}})
		if n := counter(t, reg, "featurestore_serving_on_demand_errors_total", map[string]string{"view": "txn_risk", "feature": "mod"}); n != 1 {
			t.Errorf("errors counted: %v, want 1", n)
		}
	})

	t.Run("bad request context", func(t *testing.T) {
		for _, c := range []struct {
			refs []string
			ctx  map[string]*pb.Value
			want string
		}{
			{[]string{"txn_risk:share_10m"}, nil, `request_context has no "amount", which txn_risk:share_10m uses`},
			{[]string{"txn_risk:share_10m"}, map[string]*pb.Value{"amount": sval("10")}, `request_context "amount": want a double value, got string`},
			{[]string{"txn_risk:share_10m"}, map[string]*pb.Value{"amount": dval(1), "merchant": sval("m")}, `request_context "merchant" is used by no requested feature`},
			{[]string{"txn_risk:nope"}, ctx10, `unknown feature "nope" in on-demand feature view "txn_risk"`},
		} {
			_, err := f.client.GetOnlineFeatures(t.Context(), &pb.GetOnlineFeaturesRequest{Kind: refs(c.refs...), Entities: ents, RequestContext: c.ctx})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), c.want) {
				t.Errorf("%v %v: %v, want InvalidArgument with %q", c.refs, c.ctx, err, c.want)
			}
		}
	})
}

// odService returns a service of the definitions defs, on the test Redis,
// in a project of the test's own.
func odService(t *testing.T, defs string, opts OnlineOptions) *OnlineService {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), ContextTimeoutEnabled: true})
	t.Cleanup(func() { rc.Close() })
	snaps := &staticSnapshots{}
	snaps.p.Store(loadSnapshot(t, 1, defs))
	opts.Project = testenv.UniqueName(t, "od")
	return NewOnlineService(snaps, online.New(rc, online.Options{}), opts)
}

// odBaseDefs are a card view for the on-demand views below to read.
const odBaseDefs = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card_id: card}
fields: {amount: double}
allowed_lateness: 0s
---
kind: FeatureView
name: card_txn
entity: card
source: txns
tile: 1m
features:
  - {name: n_1h, aggregation: count, window: 1h}
---
`

// odKindsDefs have two on-demand views whose request field "amount" has
// different types, which the registry accepts.
const odKindsDefs = odBaseDefs + `
kind: OnDemandFeatureView
name: od_double
inputs: {n: card_txn:n_1h}
request_fields: {amount: double}
features:
  - {name: twice, type: double, expression: "amount * 2"}
---
kind: OnDemandFeatureView
name: od_int
inputs: {n: card_txn:n_1h}
request_fields: {amount: int64}
features:
  - {name: plus_one, type: int64, expression: "amount + 1"}
---
kind: FeatureService
name: both
features: [od_double:twice, od_int:plus_one]
`

// TestRequestFieldTypesDiffer looks up features of two on-demand views
// that declare the request field "amount" as double in one and int64 in
// the other: each view takes the value converted to its own type (an int64
// for both), in any order, by service, for the request and for a row; a
// value one of them cannot take is INVALID_ARGUMENT naming the field and
// that view's feature, never a silent null.
func TestRequestFieldTypesDiffer(t *testing.T) {
	svc := odService(t, odKindsDefs, OnlineOptions{})
	client := pb.NewOnlineServiceClient(start(t, svc))
	want := map[string]string{"od_double:twice": "PRESENT 10", "od_int:plus_one": "PRESENT 6"}
	for name, kind := range map[string]*pb.GetOnlineFeaturesRequest{
		"double first": {Kind: refs("od_double:twice", "od_int:plus_one")},
		"int64 first":  {Kind: refs("od_int:plus_one", "od_double:twice")},
		"service":      {Kind: &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: "both"}},
	} {
		kind := kind.Kind
		for _, perRow := range []bool{false, true} {
			req := &pb.GetOnlineFeaturesRequest{Kind: kind, Entities: []*pb.EntityKey{skey("c1")}, RequestContext: map[string]*pb.Value{"amount": ival(5)}}
			if perRow {
				req.Entities = []*pb.EntityKey{rowKey("c1", map[string]*pb.Value{"amount": ival(5)}), rowKey("c2", map[string]*pb.Value{"amount": ival(5)})}
				req.RequestContext = nil
			}
			resp := get(t, client, req)
			for i, row := range rows(resp) {
				for j, name := range resp.GetFeatureNames() {
					if row[j] != want[name] {
						t.Errorf("%s, per row %v: entity %d: %s = %s, want %s", name, perRow, i, name, row[j], want[name])
					}
				}
			}
		}
		// A null is null for both.
		resp := get(t, client, &pb.GetOnlineFeaturesRequest{Kind: kind, Entities: []*pb.EntityKey{skey("c1")}, RequestContext: map[string]*pb.Value{"amount": {}}})
		checkRows(t, resp, [][]string{{"NULL_VALUE", "NULL_VALUE"}})
		// A double suits od_double only.
		for _, c := range []struct {
			req  *pb.GetOnlineFeaturesRequest
			want string
		}{
			{&pb.GetOnlineFeaturesRequest{Kind: kind, Entities: []*pb.EntityKey{skey("c1")}, RequestContext: map[string]*pb.Value{"amount": dval(5)}},
				`request_context "amount": want a int64 value, got double (used by od_int:plus_one)`},
			{&pb.GetOnlineFeaturesRequest{Kind: kind, Entities: []*pb.EntityKey{rowKey("c1", map[string]*pb.Value{"amount": ival(5)}), rowKey("c2", map[string]*pb.Value{"amount": dval(5)})}},
				`entity 1: request_context "amount": want a int64 value, got double (used by od_int:plus_one)`},
		} {
			_, err := client.GetOnlineFeatures(t.Context(), c.req)
			if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != c.want {
				t.Errorf("%s: %v, want InvalidArgument %q", name, err, c.want)
			}
		}
	}
	resp := get(t, client, &pb.GetOnlineFeaturesRequest{Kind: refs("od_double:twice"), Entities: []*pb.EntityKey{skey("c1")}, RequestContext: map[string]*pb.Value{"amount": dval(2.5)}})
	checkRows(t, resp, [][]string{{"PRESENT 5"}})
}

// odStringDefs have an on-demand string feature that slices a request
// string by bytes (as expr does), which can cut a character in two.
const odStringDefs = odBaseDefs + `
kind: OnDemandFeatureView
name: od_str
inputs: {n: card_txn:n_1h}
request_fields: {merchant: string, amount: double}
features:
  - {name: first, type: string, expression: "merchant[0:1]"}
  - {name: twice, type: double, expression: "amount * 2"}
`

// TestOnDemandInvalidUTF8 looks up an on-demand string feature whose run
// gives a string that is not valid UTF-8 (the first byte of "ü") for one
// row: that value is NULL_VALUE, as a failed run, and counted, over gRPC
// and HTTP, by rows and by columns; the rest of the response is as ever,
// not made undecodable (gRPC) or a 500 (HTTP).
func TestOnDemandInvalidUTF8(t *testing.T) {
	reg := prometheus.NewRegistry()
	svc := odService(t, odStringDefs, OnlineOptions{Metrics: NewMetrics(reg)})
	client := pb.NewOnlineServiceClient(start(t, svc))
	url := serveHTTP(t, svc, HTTPConfig{})
	want := [][]string{{`PRESENT "m"`, "PRESENT 4"}, {"NULL_VALUE", "PRESENT 4"}, {`PRESENT "x"`, "PRESENT 4"}}
	for _, layout := range []pb.ResponseLayout{pb.ResponseLayout_RESPONSE_LAYOUT_ROWS, pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS} {
		req := &pb.GetOnlineFeaturesRequest{
			Kind: refs("od_str:first", "od_str:twice"),
			Entities: []*pb.EntityKey{
				rowKey("c1", map[string]*pb.Value{"merchant": sval("m1")}),
				rowKey("c2", map[string]*pb.Value{"merchant": sval("ü")}),
				rowKey("c3", map[string]*pb.Value{"merchant": sval("xü")}),
			},
			RequestContext: map[string]*pb.Value{"amount": dval(2)},
			Layout:         layout,
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		g, err := client.GetOnlineFeatures(ctx, req)
		cancel()
		if err != nil {
			t.Fatalf("%v: gRPC: %v", layout, err)
		}
		r := postProto(t, url, req)
		if r.status != 200 {
			t.Fatalf("%v: HTTP %d: %s", layout, r.status, r.body)
		}
		h := &pb.GetOnlineFeaturesResponse{}
		if err := protojson.Unmarshal(r.body, h); err != nil {
			t.Fatal(err)
		}
		if layout == pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS {
			g, h = columnsAsRows(t, g, len(req.Entities)), columnsAsRows(t, h, len(req.Entities))
		}
		for via, resp := range map[string]*pb.GetOnlineFeaturesResponse{"gRPC": g, "HTTP": h} {
			if got := rows(resp); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%v, %s: values:\n got %q\nwant %q", layout, via, got, want)
			}
		}
	}
	if n := counter(t, reg, "featurestore_serving_on_demand_errors_total", map[string]string{"view": "od_str", "feature": "first"}); n != 4 {
		t.Errorf("errors counted: %v, want 4 (one a lookup)", n)
	}
}
