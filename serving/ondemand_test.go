package serving

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
