package serving

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// listen returns a listener on a free loopback TCP port.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serveGRPC serves svc over gRPC on a loopback TCP port until the test ends
// and returns its address.
func serveGRPC(t testing.TB, svc *OnlineService) string {
	t.Helper()
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(svc, ServerConfig{Listener: ln, ShutdownTimeout: time.Second}).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("grpc server: %v", err)
		}
	})
	return ln.Addr().String()
}

// serveHTTP serves svc over HTTP on a loopback TCP port until the test ends
// and returns its base URL.
func serveHTTP(t testing.TB, svc *OnlineService, cfg HTTPConfig) string {
	t.Helper()
	cfg.Listener = listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewHTTPServer(svc, cfg).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("http server: %v", err)
		}
	})
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + cfg.Listener.Addr().String()
}

func dialGRPC(t testing.TB, addr string) pb.OnlineServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewOnlineServiceClient(conn)
}

type httpReply struct {
	status int
	header http.Header
	body   []byte
}

// post sends body to the lookup route with the content type given ("" for
// none) and returns the reply.
func post(t testing.TB, c *http.Client, url, contentType string, body io.Reader) httpReply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+HTTPLookupPath, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return do(t, c, req)
}

func do(t testing.TB, c *http.Client, req *http.Request) httpReply {
	t.Helper()
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpReply{resp.StatusCode, resp.Header, b}
}

func postProto(t testing.TB, url string, req *pb.GetOnlineFeaturesRequest) httpReply {
	t.Helper()
	b, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return post(t, nil, url, "application/json", strings.NewReader(string(b)))
}

// errorBody decodes the JSON error body of r.
func errorBody(t testing.TB, r httpReply) (code, message string) {
	t.Helper()
	var e struct{ Code, Message string }
	if err := json.Unmarshal(r.body, &e); err != nil || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("error body %q (%s): %v", r.body, r.header.Get("Content-Type"), err)
	}
	return e.Code, e.Message
}

// TestHTTPMatchesGRPC sends the same requests over gRPC and HTTP to one
// service and checks the JSON response decodes to the gRPC response.
func TestHTTPMatchesGRPC(t *testing.T) {
	f := newFixture(t, OnlineOptions{})
	grpcClient := dialGRPC(t, serveGRPC(t, f.svc))
	url := serveHTTP(t, f.svc, HTTPConfig{})
	named := func(card, user string, merchant int64) *pb.EntityKey {
		return &pb.EntityKey{JoinKeys: map[string]*pb.Value{"card_id": sval(card), "user_id": sval(user), "merchant_id": ival(merchant)}}
	}
	for _, c := range []struct {
		name string
		req  *pb.GetOnlineFeaturesRequest
	}{
		{"statuses, order, duplicates", &pb.GetOnlineFeaturesRequest{Kind: refs(cardTxnAll...), Entities: []*pb.EntityKey{skey("c2"), skey("nobody"), skey("c1"), skey("c2")}}},
		{"feature service", &pb.GetOnlineFeaturesRequest{Kind: &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: "fraud"}, Entities: []*pb.EntityKey{skey("c1"), skey("c2")}}},
		{"composite keys", &pb.GetOnlineFeaturesRequest{Kind: refs("pair_txn:*"), Entities: []*pb.EntityKey{{JoinKeyValues: []*pb.Value{sval("u1"), ival(42)}}, {JoinKeyValues: []*pb.Value{sval("u2"), ival(42)}}}}},
		{"named keys of two entities", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h", "pair_txn:*"), Entities: []*pb.EntityKey{named("c1", "u1", 42), named("c2", "u1", 43)}}},
		{"no metadata", &pb.GetOnlineFeaturesRequest{Kind: refs(cardTxnAll...), Entities: []*pb.EntityKey{skey("c1")}, IncludeMetadata: proto.Bool(false)}},
		{"by columns", &pb.GetOnlineFeaturesRequest{Kind: &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: "fraud"}, Entities: []*pb.EntityKey{skey("c2"), skey("nobody"), skey("c1")}, Layout: pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS}},
		{"by columns, no metadata", &pb.GetOnlineFeaturesRequest{Kind: refs(cardTxnAll...), Entities: []*pb.EntityKey{skey("c1"), skey("c2")}, IncludeMetadata: proto.Bool(false), Layout: pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS}},
		{"on-demand features", &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:*", "card_txn:n_1h"), Entities: []*pb.EntityKey{skey("c1"), skey("c2"), skey("nobody")},
			RequestContext: map[string]*pb.Value{"amount": dval(10), "merchant": sval("m3")}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := get(t, grpcClient, c.req)
			r := postProto(t, url, c.req)
			if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, content type %q: %s", r.status, r.header.Get("Content-Type"), r.body)
			}
			got := &pb.GetOnlineFeaturesResponse{}
			if err := protojson.Unmarshal(r.body, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("HTTP response differs from gRPC's:\n http %v\n grpc %v", got, want)
			}
		})
	}
}

// showBits renders a response's values by rows, doubles by their bits
// so that -0 and NaN payloads are told apart.
func showBits(resp *pb.GetOnlineFeaturesResponse) string {
	var b strings.Builder
	for i, r := range resp.GetResults() {
		for j, v := range r.GetValues() {
			fmt.Fprintf(&b, "[%d,%d] %s", i, j, show(v))
			if d, ok := v.GetValue().GetKind().(*pb.Value_DoubleVal); ok {
				fmt.Fprintf(&b, " bits=%x", math.Float64bits(d.DoubleVal))
			}
			fmt.Fprintf(&b, " et=%v w=%v\n", v.GetEventTime(), v.GetWindow())
		}
	}
	return b.String()
}

// TestHTTPMatchesGRPCBitForBit sends requests with on-demand features
// (NaN, -0, nulls, per-row values) and stored ones over gRPC and HTTP, by
// rows and by columns: all four must give the same values, bit for bit.
func TestHTTPMatchesGRPCBitForBit(t *testing.T) {
	f := newFixture(t, OnlineOptions{})
	f.clock.set(21 * time.Minute)
	url := serveHTTP(t, f.svc, HTTPConfig{})
	negZero := math.Copysign(0, -1)
	reqs := map[string]*pb.GetOnlineFeaturesRequest{
		"od -0": {Kind: refs("txn_risk:*", "card_txn:n_1h", "card_more:merchants"), Entities: []*pb.EntityKey{skey("c1"), skey("c2"), skey("nobody"), skey("c1")},
			RequestContext: map[string]*pb.Value{"amount": dval(negZero), "merchant": sval("")}},
		"od 0 (NaN)": {Kind: refs("txn_risk:share_10m", "txn_risk:mod", "card_txn:last_amount"), Entities: []*pb.EntityKey{skey("nobody"), skey("c2")},
			RequestContext: map[string]*pb.Value{"amount": dval(0)}},
		"od per row": {Kind: refs("txn_risk:jump", "txn_risk:same_merchant"), Entities: []*pb.EntityKey{rowKey("c1", map[string]*pb.Value{"amount": ival(math.MaxInt64)}), rowKey("c2", map[string]*pb.Value{"amount": dval(math.Inf(-1))})},
			RequestContext: map[string]*pb.Value{"merchant": sval("m3")}},
		"service risk": {Kind: &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: "risk"}, Entities: []*pb.EntityKey{skey("c2"), skey("c2")},
			RequestContext: map[string]*pb.Value{"amount": dval(1), "merchant": sval("m3")}},
	}
	for name, req := range reqs {
		t.Run(name, func(t *testing.T) {
			var outs []string
			for _, layout := range []pb.ResponseLayout{pb.ResponseLayout_RESPONSE_LAYOUT_ROWS, pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS} {
				r := proto.Clone(req).(*pb.GetOnlineFeaturesRequest)
				r.Layout = layout
				g := get(t, f.client, r)
				h := postProto(t, url, r)
				if h.status != 200 {
					t.Fatalf("HTTP %d: %s", h.status, h.body)
				}
				hr := &pb.GetOnlineFeaturesResponse{}
				if err := protojson.Unmarshal(h.body, hr); err != nil {
					t.Fatal(err)
				}
				if layout == pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS {
					g = columnsAsRows(t, g, len(r.Entities))
					hr = columnsAsRows(t, hr, len(r.Entities))
				}
				outs = append(outs, showBits(g), showBits(hr))
			}
			ways := []string{"gRPC by rows", "HTTP by rows", "gRPC by columns", "HTTP by columns"}
			for i := 1; i < len(outs); i++ {
				if outs[i] != outs[0] {
					t.Errorf("%s differs from %s:\n%s\nvs\n%s", ways[i], ways[0], outs[i], outs[0])
				}
			}
		})
	}
}

// TestHTTPJSONForm checks the JSON text itself for requests written by
// hand, as with curl: proto field names, enum names, int64 as strings, RFC
// 3339 times; by rows and by columns.
func TestHTTPJSONForm(t *testing.T) {
	f := newFixture(t, OnlineOptions{})
	url := serveHTTP(t, f.svc, HTTPConfig{})
	// int64 join keys may be JSON numbers or strings; both field name
	// spellings are accepted.
	t.Run("rows", func(t *testing.T) {
		checkJSONForm(t, url, `{
		"features": {"refs": ["pair_txn:n_1h", "pair_txn:last_amount"]},
		"entities": [
			{"join_key_values": [{"string_val": "u1"}, {"int64_val": 42}]},
			{"joinKeyValues": [{"stringVal": "u1"}, {"int64Val": "43"}]},
			{"join_keys": {"user_id": {"string_val": "u9"}, "merchant_id": {"int64_val": 1}}}
		]
	}`, `{
		"feature_names": ["pair_txn:n_1h", "pair_txn:last_amount"],
		"results": [
			{"values": [
				{"value": {"int64_val": "2"}, "status": "FEATURE_STATUS_PRESENT", "event_time": "2026-11-26T08:04:00Z",
				 "window": {"start": "2026-11-26T07:22:00Z", "end": "2026-11-26T08:21:00.001Z"}},
				{"value": {"double_val": 5}, "status": "FEATURE_STATUS_PRESENT", "event_time": "2026-11-26T08:04:00Z"}]},
			{"values": [
				{"value": {"int64_val": "1"}, "status": "FEATURE_STATUS_PRESENT", "event_time": "2026-11-26T08:03:00Z",
				 "window": {"start": "2026-11-26T07:22:00Z", "end": "2026-11-26T08:21:00.001Z"}},
				{"value": {"double_val": 4}, "status": "FEATURE_STATUS_PRESENT", "event_time": "2026-11-26T08:03:00Z"}]},
			{"values": [
				{"value": {"int64_val": "0"}, "status": "FEATURE_STATUS_PRESENT",
				 "window": {"start": "2026-11-26T07:22:00Z", "end": "2026-11-26T08:21:00.001Z"}},
				{"status": "FEATURE_STATUS_NOT_FOUND"}]}
		],
		"read_time": "2026-11-26T08:21:00Z",
		"registry_version": "1"
	}`)
	})
	t.Run("columns", func(t *testing.T) {
		checkJSONForm(t, url, `{
		"features": {"refs": ["pair_txn:n_1h", "pair_txn:last_amount"]},
		"entities": [
			{"join_key_values": [{"string_val": "u1"}, {"int64_val": 42}]},
			{"join_key_values": [{"string_val": "u1"}, {"int64_val": 43}]},
			{"join_key_values": [{"string_val": "u9"}, {"int64_val": 1}]}
		],
		"layout": "RESPONSE_LAYOUT_COLUMNS"
	}`, `{
		"feature_names": ["pair_txn:n_1h", "pair_txn:last_amount"],
		"read_time": "2026-11-26T08:21:00Z",
		"registry_version": "1",
		"columns": [
			{"type": "VALUE_TYPE_INT64",
			 "statuses": ["FEATURE_STATUS_PRESENT", "FEATURE_STATUS_PRESENT", "FEATURE_STATUS_PRESENT"],
			 "int64_values": ["2", "1", "0"],
			 "has_event_time": [true, true, false],
			 "event_times_unix_ms": ["1795680240000", "1795680180000", "0"],
			 "window": {"start": "2026-11-26T07:22:00Z", "end": "2026-11-26T08:21:00.001Z"}},
			{"type": "VALUE_TYPE_DOUBLE",
			 "statuses": ["FEATURE_STATUS_PRESENT", "FEATURE_STATUS_PRESENT", "FEATURE_STATUS_NOT_FOUND"],
			 "double_values": [5, 4, 0],
			 "has_event_time": [true, true, false],
			 "event_times_unix_ms": ["1795680240000", "1795680180000", "0"]}
		]
	}`)
	})
}

// TestHTTPJSONNull: a JSON null where a request holds a Value (a request
// value, a join-key value) is the empty Value gRPC takes there: a null
// request value, and a join key with no value, refused as over gRPC.
// protojson alone refuses null there (a syntax error).
func TestHTTPJSONNull(t *testing.T) {
	f := newFixture(t, OnlineOptions{})
	url := serveHTTP(t, f.svc, HTTPConfig{})
	want := get(t, f.client, &pb.GetOnlineFeaturesRequest{
		Kind:           refs("txn_risk:jump", "txn_risk:same_merchant"),
		Entities:       []*pb.EntityKey{rowKey("c2", map[string]*pb.Value{"merchant": {}}), rowKey("c2", nil)},
		RequestContext: map[string]*pb.Value{"amount": {}, "merchant": sval("m3")},
	})
	checkRows(t, want, [][]string{{"NULL_VALUE", "NULL_VALUE"}, {"NULL_VALUE", "PRESENT true"}})
	r := post(t, nil, url, "application/json", strings.NewReader(`{
		"features": {"refs": ["txn_risk:jump", "txn_risk:same_merchant"]},
		"request_context": {"amount": null, "merchant": {"string_val": "m3"}},
		"entities": [
			{"join_key_values": [{"string_val": "c2"}], "requestContext": {"merchant": null}},
			{"join_key_values": [{"string_val": "c2"}]}
		]}`))
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	got := &pb.GetOnlineFeaturesResponse{}
	if err := protojson.Unmarshal(r.body, got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("HTTP response differs from gRPC's:\n http %v\n grpc %v", got, want)
	}

	for _, c := range []struct{ body, message string }{
		{`{"features": {"refs": ["card_txn:n_1h"]}, "entities": [{"join_key_values": [null]}]}`, `entity 0: join key "card_id" (position 0) of entity "card": want a string value, got no value`},
		{`{"features": {"refs": ["card_txn:n_1h"]}, "entities": [{"join_keys": {"card_id": null}}]}`, `entity 0: join key "card_id" of entity "card": want a string value, got no value`},
		// Elsewhere null stays what protojson makes of it.
		{`{"features": {"refs": [null]}, "entities": [{"join_key_values": [{"string_val": "c1"}]}]}`, `malformed GetOnlineFeaturesRequest: `},
	} {
		r := post(t, nil, url, "application/json", strings.NewReader(c.body))
		if code, msg := errorBody(t, r); r.status != 400 || code != "INVALID_ARGUMENT" || !strings.Contains(msg, c.message) {
			t.Errorf("%s: got %d %s %q, want 400 INVALID_ARGUMENT %q", c.body, r.status, code, msg, c.message)
		}
	}
}

// checkJSONForm posts the JSON request and compares the JSON response with
// want, as values (white space and key order aside).
func checkJSONForm(t *testing.T, url, request, want string) {
	t.Helper()
	r := post(t, nil, url, "application/json; charset=utf-8", strings.NewReader(request))
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var got, wantV any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(want), &wantV); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wantV) {
		t.Errorf("response\n got %s\nwant %s", r.body, want)
	}
}

func TestHTTPErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, OnlineOptions{MaxEntities: 3, Metrics: NewMetrics(reg)})
	url := serveHTTP(t, f.svc, HTTPConfig{MaxBodyBytes: 1024})
	ok := `{"features": {"refs": ["card_txn:n_1h"]}, "entities": [{"join_key_values": [{"string_val": "c1"}]}]}`
	big := `{"features": {"refs": ["card_txn:n_1h"]}, "entities": [{"join_key_values": [{"string_val": "` + strings.Repeat("x", 1024) + `"}]}]}`
	for _, c := range []struct {
		name, method, path, contentType string
		body                            io.Reader
		status                          int
		code, message                   string
	}{
		{"wrong method", http.MethodGet, HTTPLookupPath, "", nil, 405, "UNIMPLEMENTED", "method GET not allowed: /v1/features:get takes POST"},
		{"no content type", http.MethodPost, HTTPLookupPath, "", strings.NewReader(ok), 415, "INVALID_ARGUMENT", "no Content-Type: send the request as application/json"},
		{"form content type", http.MethodPost, HTTPLookupPath, "application/x-www-form-urlencoded", strings.NewReader(ok), 415, "INVALID_ARGUMENT", `Content-Type "application/x-www-form-urlencoded": send the request as application/json`},
		{"other charset", http.MethodPost, HTTPLookupPath, "application/json; charset=latin1", strings.NewReader(ok), 415, "INVALID_ARGUMENT", "JSON must be UTF-8"},
		{"too large, length known", http.MethodPost, HTTPLookupPath, "application/json", strings.NewReader(big), 413, "RESOURCE_EXHAUSTED", "request body larger than 1024 bytes"},
		// An io.Reader without a known length is sent chunked.
		{"too large, chunked", http.MethodPost, HTTPLookupPath, "application/json", io.MultiReader(strings.NewReader(big)), 413, "RESOURCE_EXHAUSTED", "request body larger than 1024 bytes"},
		{"empty body", http.MethodPost, HTTPLookupPath, "application/json", nil, 400, "INVALID_ARGUMENT", "empty request body"},
		{"truncated JSON", http.MethodPost, HTTPLookupPath, "application/json", strings.NewReader(`{"features": {"refs": [`), 400, "INVALID_ARGUMENT", "malformed GetOnlineFeaturesRequest: "},
		{"unknown field", http.MethodPost, HTTPLookupPath, "application/json", strings.NewReader(`{"feature": {"refs": ["card_txn:n_1h"]}}`), 400, "INVALID_ARGUMENT", `unknown field "feature"`},
		{"wrong JSON type", http.MethodPost, HTTPLookupPath, "application/json", strings.NewReader(`{"features": {"refs": "card_txn:n_1h"}}`), 400, "INVALID_ARGUMENT", "malformed GetOnlineFeaturesRequest: "},
		{"unknown view", http.MethodPost, HTTPLookupPath, "application/json", strings.NewReader(`{"features": {"refs": ["nope:x"]}, "entities": [{"join_key_values": [{"string_val": "c1"}]}]}`), 400, "INVALID_ARGUMENT", `unknown feature view "nope"`},
		{"key type", http.MethodPost, HTTPLookupPath, "application/json", strings.NewReader(`{"features": {"refs": ["card_txn:n_1h"]}, "entities": [{"join_key_values": [{"int64_val": 1}]}]}`), 400, "INVALID_ARGUMENT", `join key "card_id" (position 0) of entity "card": want a string value, got int64`},
		{"too many entities", http.MethodPost, HTTPLookupPath, "application/json", strings.NewReader(`{"feature_service": "fraud", "entities": [{}, {}, {}, {}]}`), 400, "INVALID_ARGUMENT", "4 entities requested, more than the 3 allowed"},
		// txn_risk:mod reads no stored view; its keys are still checked.
		{"on-demand key type", http.MethodPost, HTTPLookupPath, "application/json", strings.NewReader(`{"features": {"refs": ["txn_risk:mod"]}, "request_context": {"amount": {"double_val": 3}}, "entities": [{"join_key_values": [{"int64_val": 1}]}]}`), 400, "INVALID_ARGUMENT", `join key "card_id" (position 0) of entity "card": want a string value, got int64`},
		{"on-demand arity", http.MethodPost, HTTPLookupPath, "application/json", strings.NewReader(`{"features": {"refs": ["txn_risk:mod"]}, "request_context": {"amount": {"double_val": 3}}, "entities": [{"join_key_values": [{"string_val": "a"}, {"string_val": "b"}]}]}`), 400, "INVALID_ARGUMENT", `entity 0: entity "card" has 1 join keys [card_id], got 2 values`},
		{"on-demand empty key", http.MethodPost, HTTPLookupPath, "application/json", strings.NewReader(`{"features": {"refs": ["txn_risk:mod"]}, "request_context": {"amount": {"double_val": 3}}, "entities": [{}]}`), 400, "INVALID_ARGUMENT", `entity 0: entity "card" has 1 join keys [card_id], got 0 values`},
		{"unknown path", http.MethodPost, "/v1/features", "application/json", strings.NewReader(ok), 404, "NOT_FOUND", "no route /v1/features: lookups are POST /v1/features:get"},
		{"health by POST", http.MethodPost, HTTPHealthPath, "", nil, 405, "UNIMPLEMENTED", "method POST not allowed: /healthz takes GET"},
		{"timeout not a duration", http.MethodPost, HTTPLookupPath + "#timeout=soon", "application/json", strings.NewReader(ok), 400, "INVALID_ARGUMENT", `X-Featurestore-Timeout: "soon" is not a positive duration`},
		{"timeout not positive", http.MethodPost, HTTPLookupPath + "#timeout=-1s", "application/json", strings.NewReader(ok), 400, "INVALID_ARGUMENT", `X-Featurestore-Timeout: "-1s" is not a positive duration`},
		// The client's deadline passed: not an outage.
		{"timeout passed", http.MethodPost, HTTPLookupPath + "#timeout=1ns", "application/json", strings.NewReader(ok), 504, "DEADLINE_EXCEEDED", "deadline passed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, url+c.path, c.body)
			if err != nil {
				t.Fatal(err)
			}
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			// A fragment (never sent) names the test's timeout header.
			if _, timeout, ok := strings.Cut(c.path, "#timeout="); ok {
				req.Header.Set(HTTPTimeoutHeader, timeout)
			}
			r := do(t, nil, req)
			code, msg := errorBody(t, r)
			if r.status != c.status || code != c.code || !strings.Contains(msg, c.message) {
				t.Errorf("got %d %s %q, want %d %s %q", r.status, code, msg, c.status, c.code, c.message)
			}
			if c.status == 405 && r.header.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
		})
	}
	// Every lookup that reached the route is counted, by its gRPC code.
	if r := post(t, nil, url, "application/json", strings.NewReader(ok)); r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	got := histogramCounts(t, reg, "featurestore_serving_request_duration_seconds")
	want := map[string]uint64{
		"POST /v1/features:get OK":                1,
		"POST /v1/features:get Unimplemented":     1,
		"POST /v1/features:get InvalidArgument":   15,
		"POST /v1/features:get ResourceExhausted": 2,
		"POST /v1/features:get DeadlineExceeded":  1,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("request duration counts by method/code %v, want %v", got, want)
	}
}

// TestHTTPErrorsMatchGRPC sends bad requests over gRPC and as JSON over
// HTTP: the same code (HTTP 400 for INVALID_ARGUMENT) and the very same
// message, naming the culprit.
func TestHTTPErrorsMatchGRPC(t *testing.T) {
	f := newFixture(t, OnlineOptions{MaxEntities: 4})
	url := serveHTTP(t, f.svc, HTTPConfig{})
	c1 := []*pb.EntityKey{skey("c1")}
	named := func(m map[string]*pb.Value) []*pb.EntityKey { return []*pb.EntityKey{{JoinKeys: m}} }
	for _, c := range []struct {
		name string
		req  *pb.GetOnlineFeaturesRequest
		want string
	}{
		{"named key missing", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h", "pair_txn:n_1h"), Entities: named(map[string]*pb.Value{"card_id": sval("c1"), "user_id": sval("u1")})}, `no value for join key "merchant_id"`},
		{"named key unused", &pb.GetOnlineFeaturesRequest{Kind: refs("pair_txn:n_1h"), Entities: named(map[string]*pb.Value{"user_id": sval("u1"), "merchant_id": ival(1), "card_id": sval("c")})}, `join key "card_id" belongs to no entity`},
		{"positional for two entities", &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:share_10m", "pair_txn:n_1h"), Entities: c1, RequestContext: map[string]*pb.Value{"amount": dval(1)}}, "name the join keys"},
		{"composite arity", &pb.GetOnlineFeaturesRequest{Kind: refs("pair_txn:*"), Entities: []*pb.EntityKey{skey("u1")}}, `entity "user_merchant" has 2 join keys`},
		{"composite order", &pb.GetOnlineFeaturesRequest{Kind: refs("pair_txn:*"), Entities: []*pb.EntityKey{{JoinKeyValues: []*pb.Value{ival(42), sval("u1")}}}}, `join key "user_id" (position 0)`},
		{"wildcard twice", &pb.GetOnlineFeaturesRequest{Kind: refs("card_more:*", "card_more:*"), Entities: c1}, "requested more than once"},
		{"od wildcard and feature", &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:*", "txn_risk:mod"), Entities: c1}, `feature "txn_risk:mod" requested more than once`},
		{"unknown od feature", &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:nope"), Entities: c1}, `unknown feature "nope" in on-demand feature view "txn_risk"`},
		{"empty feature", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:"), Entities: c1}, `invalid feature reference "card_txn:"`},
		{"empty view wildcard", &pb.GetOnlineFeaturesRequest{Kind: refs(":*"), Entities: c1}, `invalid feature reference ":*"`},
		{"request field missing", &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:jump"), Entities: c1}, `request_context has no "amount", which txn_risk:jump uses`},
		{"request field missing in a row", &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:jump"), Entities: []*pb.EntityKey{rowKey("c1", map[string]*pb.Value{"amount": dval(1)}), skey("c2")}}, `entity 1: request_context has no "amount"`},
		{"request field type", &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:jump"), Entities: c1, RequestContext: map[string]*pb.Value{"amount": sval("1")}}, `request_context "amount": want a double value, got string`},
		{"request field of a row unused", &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:jump"), Entities: []*pb.EntityKey{rowKey("c1", map[string]*pb.Value{"amount": dval(1), "merchant": sval("m")})}}, `entity 0: request_context "merchant" is used by no requested feature`},
		{"too many entities", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{skey("a"), skey("a"), skey("a"), skey("a"), skey("a")}}, "5 entities requested, more than the 4 allowed"},
		{"no entities", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h")}, "no entities requested"},
		{"unknown service", &pb.GetOnlineFeaturesRequest{Kind: &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: "frau"}, Entities: c1}, `unknown feature service "frau" (did you mean "fraud"?)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.client.GetOnlineFeatures(context.Background(), c.req)
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), c.want) {
				t.Errorf("gRPC: %v, want INVALID_ARGUMENT with %q", err, c.want)
			}
			r := postProto(t, url, c.req)
			code, msg := errorBody(t, r)
			if r.status != 400 || code != "INVALID_ARGUMENT" || msg != st.Message() {
				t.Errorf("HTTP: %d %s %q, gRPC said %q", r.status, code, msg, st.Message())
			}
		})
	}
}

// histogramCounts returns the sample counts of the request duration
// histogram by "method code", but for series with none (those made at 0 at
// the start).
func histogramCounts(t testing.TB, reg *prometheus.Registry, name string) map[string]uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if n := m.GetHistogram().GetSampleCount(); n > 0 {
				out[labels["method"]+" "+labels["code"]] = n
			}
		}
	}
	return out
}

// TestHTTPStatusCodes checks the HTTP status of every gRPC code a lookup can
// fail with, including those only an interceptor produces (authentication),
// through an interceptor that fails with the code the test names in the
// Authorization header.
func TestHTTPStatusCodes(t *testing.T) {
	f := newFixture(t, OnlineOptions{})
	url := serveHTTP(t, f.svc, HTTPConfig{
		Interceptor: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			a := metadata.ValueFromIncomingContext(ctx, "authorization")
			if len(a) != 1 {
				return next(ctx, req)
			}
			n, err := strconv.Atoi(strings.TrimPrefix(a[0], "Bearer code-"))
			if err != nil {
				return nil, errors.New("a plain error, not a status")
			}
			return nil, status.Errorf(codes.Code(n), "refused with %s", codes.Code(n))
		},
	})
	for _, c := range []struct {
		code   codes.Code
		status int
		name   string
	}{
		{codes.InvalidArgument, 400, "INVALID_ARGUMENT"},
		{codes.Unauthenticated, 401, "UNAUTHENTICATED"},
		{codes.PermissionDenied, 403, "PERMISSION_DENIED"},
		{codes.NotFound, 404, "NOT_FOUND"},
		{codes.ResourceExhausted, 429, "RESOURCE_EXHAUSTED"},
		{codes.Internal, 500, "INTERNAL"},
		{codes.Unknown, 500, "UNKNOWN"},
		{codes.FailedPrecondition, 500, "FAILED_PRECONDITION"},
		{codes.Canceled, 500, "CANCELLED"},
		{codes.Unavailable, 503, "UNAVAILABLE"},
		{codes.DeadlineExceeded, 504, "DEADLINE_EXCEEDED"},
	} {
		req, _ := http.NewRequest(http.MethodPost, url+HTTPLookupPath, strings.NewReader(`{"feature_service": "fraud", "entities": [{"join_key_values": [{"string_val": "c1"}]}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", fmt.Sprintf("Bearer code-%d", c.code))
		r := do(t, nil, req)
		code, msg := errorBody(t, r)
		if r.status != c.status || code != c.name || msg != "refused with "+c.code.String() {
			t.Errorf("%v: got %d %s %q, want %d %s", c.code, r.status, code, msg, c.status, c.name)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, url+HTTPLookupPath, strings.NewReader(`{"feature_service": "fraud", "entities": [{"join_key_values": [{"string_val": "c1"}]}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer secret")
	r := do(t, nil, req)
	if code, msg := errorBody(t, r); r.status != 500 || code != "INTERNAL" || msg != "internal error" {
		t.Errorf("an error without a status: got %d %s %q, want 500 INTERNAL and no detail", r.status, code, msg)
	}
}

// TestHTTPUnavailable checks 503 for lookups and health when there is no
// registry version yet, and when Redis refuses connections or never answers
// (at the default deadline, not a hang).
func TestHTTPUnavailable(t *testing.T) {
	silent := silentServer(t)
	closed := listen(t)
	refused := closed.Addr().String()
	closed.Close()
	lookup := `{"features": {"refs": ["card_txn:n_1h"]}, "entities": [{"join_key_values": [{"string_val": "c1"}]}]}`

	for _, c := range []struct {
		name, redisAddr string
		noRegistry      bool
		message         string
	}{
		{"no registry version", testenv.RedisAddr(t), true, "no registry version loaded yet"},
		{"redis refuses", refused, false, "online store: "},
		{"redis silent", silent, false, "online store: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := redis.NewClient(&redis.Options{Addr: c.redisAddr, ContextTimeoutEnabled: true, MaxRetries: -1})
			defer rc.Close()
			snaps := &staticSnapshots{}
			if !c.noRegistry {
				snaps.p.Store(loadSnapshot(t, 1, testDefs))
			}
			svc := NewOnlineService(snaps, online.New(rc, online.Options{}), OnlineOptions{Project: testenv.UniqueName(t, "http"), DefaultDeadline: 300 * time.Millisecond})
			url := serveHTTP(t, svc, HTTPConfig{Ping: func(ctx context.Context) error { return rc.Ping(ctx).Err() }})
			r := post(t, nil, url, "application/json", strings.NewReader(lookup))
			if code, msg := errorBody(t, r); r.status != 503 || code != "UNAVAILABLE" || !strings.Contains(msg, c.message) {
				t.Errorf("lookup: got %d %s %q, want 503 UNAVAILABLE %q", r.status, code, msg, c.message)
			}
			req, _ := http.NewRequest(http.MethodGet, url+HTTPHealthPath, nil)
			r = do(t, nil, req)
			if code, msg := errorBody(t, r); r.status != 503 || code != "UNAVAILABLE" || !strings.Contains(msg, c.message) {
				t.Errorf("health: got %d %s %q, want 503 UNAVAILABLE %q", r.status, code, msg, c.message)
			}
		})
	}
}

func TestHTTPHealthReady(t *testing.T) {
	f := newFixture(t, OnlineOptions{})
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	defer rc.Close()
	url := serveHTTP(t, f.svc, HTTPConfig{Ping: func(ctx context.Context) error { return rc.Ping(ctx).Err() }})
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(method, url+HTTPHealthPath, nil)
		r := do(t, nil, req)
		if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: status %d %q", method, r.status, r.header.Get("Content-Type"))
		}
		if method == http.MethodGet && string(r.body) != `{"status":"ok","registry_version":1}`+"\n" {
			t.Errorf("%s: body %q", method, r.body)
		}
	}
}

// TestHTTPHooks serves HTTPS and checks what the auth hooks get: the
// middleware wraps lookups but not health; the interceptor sees the
// authorization header as metadata and the client's TLS state as its peer.
func TestHTTPHooks(t *testing.T) {
	f := newFixture(t, OnlineOptions{})
	serverTLS, clientTLS := selfSignedTLS(t)
	type seen struct {
		auth []string
		peer *peer.Peer
		ok   bool
	}
	seenc := make(chan seen, 1)
	url := serveHTTP(t, f.svc, HTTPConfig{
		TLS: serverTLS,
		Middleware: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") == "" {
					WriteHTTPError(w, status.Error(codes.Unauthenticated, "no token"))
					return
				}
				next.ServeHTTP(w, r)
			})
		},
		Interceptor: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			p, ok := peer.FromContext(ctx)
			seenc <- seen{metadata.ValueFromIncomingContext(ctx, "authorization"), p, ok && info.FullMethod == "/featurestore.v1.OnlineService/GetOnlineFeatures"}
			return next(ctx, req)
		},
	})
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS, ForceAttemptHTTP2: true}}
	body := `{"feature_service": "fraud", "entities": [{"join_key_values": [{"string_val": "c1"}]}]}`

	r := post(t, hc, url, "application/json", strings.NewReader(body))
	if code, _ := errorBody(t, r); r.status != 401 || code != "UNAUTHENTICATED" {
		t.Errorf("no token: got %d %s, want 401 UNAUTHENTICATED", r.status, code)
	}
	req, _ := http.NewRequest(http.MethodPost, url+HTTPLookupPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer t0k3n")
	if r := do(t, hc, req); r.status != 200 {
		t.Errorf("with token: status %d: %s", r.status, r.body)
	}
	s := <-seenc
	if !s.ok || fmt.Sprint(s.auth) != "[Bearer t0k3n]" {
		t.Errorf("interceptor saw authorization %q, peer found and method right: %v", s.auth, s.ok)
	}
	if info, ok := s.peer.AuthInfo.(credentials.TLSInfo); !ok || !info.State.HandshakeComplete {
		t.Errorf("interceptor's peer has no TLS state: %#v", s.peer.AuthInfo)
	}
	if a, ok := s.peer.Addr.(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		t.Errorf("interceptor's peer address %v", s.peer.Addr)
	}
	hreq, _ := http.NewRequest(http.MethodGet, url+HTTPHealthPath, nil)
	if r := do(t, hc, hreq); r.status != 200 {
		t.Errorf("health behind the middleware: status %d %s", r.status, r.body)
	}
}

// selfSignedTLS returns a server configuration with a fresh certificate
// for 127.0.0.1, and a client configuration trusting it.
func selfSignedTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "featurestore test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// TestHTTPShutdown checks that a lookup in flight when the server is told
// to stop finishes, that no new connection is accepted meanwhile, and that
// a lookup still running after ShutdownTimeout is cut off.
func TestHTTPShutdown(t *testing.T) {
	f := newFixture(t, OnlineOptions{})
	body := `{"feature_service": "fraud", "entities": [{"join_key_values": [{"string_val": "c1"}]}]}`
	for _, c := range []struct {
		name    string
		release bool // let the lookup finish
	}{{"drained", true}, {"cut off", false}} {
		t.Run(c.name, func(t *testing.T) {
			entered, release := make(chan struct{}), make(chan struct{})
			defer close(release)
			ln := listen(t)
			srv := NewHTTPServer(f.svc, HTTPConfig{Listener: ln, ShutdownTimeout: 200 * time.Millisecond,
				Interceptor: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
					close(entered)
					<-release
					return next(ctx, req)
				}})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- srv.Run(ctx) }()
			url := "http://" + ln.Addr().String()
			type result struct {
				status int
				err    error
			}
			resc := make(chan result, 1)
			go func() {
				resp, err := http.Post(url+HTTPLookupPath, "application/json", strings.NewReader(body))
				if err != nil {
					resc <- result{err: err}
					return
				}
				resp.Body.Close()
				resc <- result{status: resp.StatusCode}
			}()
			<-entered
			cancel()
			// The listener closes at once.
			for {
				conn, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					break
				}
				conn.Close()
				time.Sleep(10 * time.Millisecond)
			}
			if c.release {
				release <- struct{}{}
				if r := <-resc; r.err != nil || r.status != 200 {
					t.Errorf("lookup in flight: %d %v, want 200", r.status, r.err)
				}
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
				return
			}
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			if r := <-resc; r.err == nil {
				t.Errorf("lookup still in flight after the shutdown timeout got %d, want its connection closed", r.status)
			}
		})
	}
}

// BenchmarkHTTPLookup measures what JSON over HTTP adds to a lookup of 10
// features from 2 views against real Redis: the handler alone (decode,
// lookup, encode; no network), and HTTP and gRPC clients over loopback TCP.
func BenchmarkHTTPLookup(b *testing.B) {
	f := newFixture(b, OnlineOptions{})
	url := serveHTTP(b, f.svc, HTTPConfig{})
	grpcClient := dialGRPC(b, serveGRPC(b, f.svc))
	h := NewHTTPServer(f.svc, HTTPConfig{}).Handler()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	features := refs(append(append([]string{}, cardTxnAll...), "card_more:mean_1h", "card_more:n_10m", "card_more:merchants", "card_more:n_5m")...)
	for _, n := range []int{1, 100} {
		req := &pb.GetOnlineFeaturesRequest{Kind: features}
		for i := range n {
			req.Entities = append(req.Entities, skey([]string{"c1", "c2", "nobody"}[i%3]))
		}
		body, err := protojson.Marshal(req)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("entities=%d/handler", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				hr, _ := http.NewRequest(http.MethodPost, HTTPLookupPath, strings.NewReader(string(body)))
				hr.Header.Set("Content-Type", "application/json")
				w := &discardResponse{h: http.Header{}}
				h.ServeHTTP(w, hr)
				if w.status != 0 && w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
		})
		b.Run(fmt.Sprintf("entities=%d/http-loopback", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := hc.Post(url+HTTPLookupPath, "application/json", strings.NewReader(string(body)))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
		b.Run(fmt.Sprintf("entities=%d/grpc-loopback", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := grpcClient.GetOnlineFeatures(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// discardResponse is an http.ResponseWriter that keeps only the status.
type discardResponse struct {
	h      http.Header
	status int
}

func (d *discardResponse) Header() http.Header         { return d.h }
func (d *discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardResponse) WriteHeader(s int)           { d.status = s }

// TestHTTPTimeoutHeaderCapped: a timeout asked for beyond the server's
// write timeout is cut to just under it, so that a lookup still running
// then answers 503 rather than losing its connection; shorter ones stand.
func TestHTTPTimeoutHeaderCapped(t *testing.T) {
	for _, c := range []struct {
		header string
		want   time.Duration
	}{
		{"250ms", 250 * time.Millisecond},
		{"29s", 29 * time.Second},
		{"1h", httpWriteTimeout - time.Second},
	} {
		r := httptest.NewRequest(http.MethodPost, HTTPLookupPath, nil)
		r.Header.Set(HTTPTimeoutHeader, c.header)
		start := time.Now()
		r, cancel, err := withTimeout(r, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		deadline, ok := r.Context().Deadline()
		cancel()
		if got := deadline.Sub(start); !ok || got < c.want || got > c.want+time.Second {
			t.Errorf("%s: %s: deadline in %s, want %s", HTTPTimeoutHeader, c.header, got, c.want)
		}
	}
}

// TestHTTPDefaultDeadlineCapped: without the header, a server default
// deadline beyond the write timeout is cut to just under it as well;
// a shorter one is left to the lookup.
func TestHTTPDefaultDeadlineCapped(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, HTTPLookupPath, nil)
	r2, cancel, err := withTimeout(r, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, ok := r2.Context().Deadline(); ok {
		t.Error("a default deadline of 1s: withTimeout set one; the lookup applies it")
	}
	start := time.Now()
	r2, cancel, err = withTimeout(r, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if d, ok := r2.Context().Deadline(); !ok || d.Sub(start) > httpMaxLookupTimeout+time.Second {
		t.Errorf("a default deadline of 1h: deadline %v (set %v), want %s", d.Sub(start), ok, httpMaxLookupTimeout)
	}
}
