package serving

// Tests of the Go client (package serving/client) against the real server,
// here so that they share the fixture of the serving tests: data written by
// the real ingest path into real Redis, and a controllable clock.

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
	"github.com/featurestore/featurestore/serving/client"
)

// showClient renders a client value like show renders a proto one.
func showClient(v client.Value) string {
	st := strings.ToUpper(strings.ReplaceAll(v.Status().String(), " ", "_"))
	if st == "NULL" {
		st = "NULL_VALUE"
	}
	switch x := v.Any().(type) {
	case nil:
		return st
	case string:
		return fmt.Sprintf("%s %q", st, x)
	case []string:
		return fmt.Sprintf("%s %q", st, x)
	default:
		return fmt.Sprintf("%s %v", st, x)
	}
}

func clientRows(res *client.Result) [][]string {
	var out [][]string
	for i := range res.Len() {
		var row []string
		for j := range res.Features() {
			row = append(row, showClient(res.At(i, j)))
		}
		out = append(out, row)
	}
	return out
}

func dialClient(t *testing.T, addr string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.Dial(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func clientLookup(t *testing.T, c *client.Client, sel client.Selector, entities ...client.Entity) *client.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.Lookup(ctx, sel, entities...)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	return res
}

// TestClient checks the client against the server, as it asks (by
// columns) and as an older server answers it (by rows): the same values.
func TestClient(t *testing.T) {
	f := newFixture(t, OnlineOptions{})
	addr := serveGRPC(t, f.svc)
	// The client asks by columns for several entities, by rows for one; a
	// server that knows no layouts ignores the field and answers by rows.
	// Each layout is forced here, so that every accessor is checked on both.
	for _, layout := range []pb.ResponseLayout{pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS, pb.ResponseLayout_RESPONSE_LAYOUT_UNSPECIFIED} {
		t.Run(layout.String(), func(t *testing.T) {
			force := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				if r, ok := req.(*pb.GetOnlineFeaturesRequest); ok {
					r.Layout = layout
				}
				return invoker(ctx, method, req, reply, cc, opts...)
			}
			testClient(t, f, dialClient(t, addr, client.WithDialOptions(grpc.WithUnaryInterceptor(force))), layout)
		})
	}
	t.Run("as the client asks", func(t *testing.T) {
		c := dialClient(t, addr)
		for n, columns := range map[int]bool{1: false, 3: true} {
			keys := make([]client.Entity, n)
			for i := range keys {
				keys[i] = client.Key{"c1"}
			}
			res := clientLookup(t, c, client.Features(cardTxnAll...), keys...)
			if got := len(res.Proto().GetColumns()) > 0; got != columns || res.Len() != n {
				t.Errorf("%d entities: by columns %v, want %v; %d rows", n, got, columns, res.Len())
			}
			if got := clientRows(res)[n-1]; fmt.Sprint(got) != `[PRESENT 3 PRESENT 5 PRESENT 5 PRESENT 3 NULL_VALUE PRESENT 5]` {
				t.Errorf("%d entities: %q", n, got)
			}
		}
	})
}

func testClient(t *testing.T, f *fixture, c *client.Client, layout pb.ResponseLayout) {
	t.Run("statuses, order, duplicates", func(t *testing.T) {
		res := clientLookup(t, c, client.Features(cardTxnAll...), client.Key{"c2"}, client.Key{"nobody"}, client.Key{"c1"}, client.Key{"c2"})
		if byColumns := len(res.Proto().GetColumns()) > 0; byColumns != (layout == pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS) {
			t.Fatalf("answered by columns: %v, want layout %v", byColumns, layout)
		}
		if !slices.Equal(res.Features(), cardTxnAll) {
			t.Errorf("features %q", res.Features())
		}
		want := [][]string{
			{"PRESENT 1", "PRESENT 0", "NOT_FOUND", "PRESENT 1", `PRESENT "m3"`, "PRESENT 7"},
			{"PRESENT 0", "PRESENT 0", "NOT_FOUND", "PRESENT 0", "NOT_FOUND", "NOT_FOUND"},
			{"PRESENT 3", "PRESENT 5", "PRESENT 5", "PRESENT 3", "NULL_VALUE", "PRESENT 5"},
			{"PRESENT 1", "PRESENT 0", "NOT_FOUND", "PRESENT 1", `PRESENT "m3"`, "PRESENT 7"},
		}
		if got := clientRows(res); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("values:\n got %q\nwant %q", got, want)
		}
		if !res.ReadTime().Equal(t0.Add(21*time.Minute)) || res.RegistryVersion() != 1 {
			t.Errorf("read time %v, registry version %d", res.ReadTime(), res.RegistryVersion())
		}
	})

	t.Run("on-demand features with request values", func(t *testing.T) {
		sel := client.Features("card_txn:n_1h", "txn_risk:jump", "txn_risk:same_merchant").WithRequest(map[string]any{"amount": 12, "merchant": "m3"})
		res := clientLookup(t, c, sel, client.Key{"c2"}, client.Key{"c1"})
		want := [][]string{{"PRESENT 1", "PRESENT 5", "PRESENT true"}, {"PRESENT 3", "PRESENT 7", "NULL_VALUE"}}
		if got := clientRows(res); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("values:\n got %q\nwant %q", got, want)
		}
		// Rows with values of their own, over the lookup's.
		res = clientLookup(t, c, sel, client.WithRequest(client.Key{"c2"}, map[string]any{"amount": 20.5}), client.Key{"c1"},
			client.WithRequest(client.Key{"c1"}, map[string]any{"merchant": "m2", "amount": int64(2)}))
		want = [][]string{{"PRESENT 1", "PRESENT 13.5", "PRESENT true"}, {"PRESENT 3", "PRESENT 7", "NULL_VALUE"}, {"PRESENT 3", "PRESENT -3", "NULL_VALUE"}}
		if got := clientRows(res); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("values with rows' own:\n got %q\nwant %q", got, want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c.Lookup(ctx, sel, client.WithRequest(client.Key{"c1"}, map[string]any{"amount": struct{}{}})); status.Code(err) != codes.InvalidArgument ||
			!strings.Contains(err.Error(), `entity 0: request value "amount": a struct {}`) {
			t.Errorf("a struct as a row's value: %v", err)
		}
		for req, msg := range map[string]string{"[]int": "request values are strings, bools, numbers or nil", "missing": `request_context has no "merchant"`} {
			values := map[string]any{"amount": 1.5}
			if req == "[]int" {
				values["merchant"] = []int{1}
			}
			_, err := c.Lookup(ctx, sel.WithRequest(values), client.Key{"c1"})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), msg) {
				t.Errorf("%s: %v, want InvalidArgument with %q", req, err, msg)
			}
		}
	})

	t.Run("typed accessors and times", func(t *testing.T) {
		res := clientLookup(t, c, client.Features(cardTxnAll...), client.Key{"c1"})
		if n, ok := res.Get(0, "card_txn:n_1h").Int64Val(); !ok || n != 3 {
			t.Errorf("n_1h Int64Val %d %v", n, ok)
		}
		for _, name := range []string{"card_txn:n_1h", "card_txn:sum_10m"} {
			if v := res.Get(0, name); !v.Present() || v.Status() != client.StatusPresent {
				t.Errorf("%s: present %v, status %v", name, v.Present(), v.Status())
			}
		}
		sum := res.Get(0, "card_txn:sum_10m")
		if x, ok := sum.DoubleVal(); !ok || x != 5 {
			t.Errorf("sum_10m DoubleVal %v %v", x, ok)
		}
		if _, ok := sum.Int64Val(); ok {
			t.Error("a double read as an int64")
		}
		start, end, ok := sum.Window()
		if !ok || !start.Equal(t0.Add(12*time.Minute)) || !end.Equal(t0.Add(21*time.Minute+time.Millisecond)) {
			t.Errorf("sum_10m window [%v, %v) %v", start, end, ok)
		}
		if et, ok := sum.EventTime(); !ok || !et.Equal(t0.Add(20*time.Minute)) {
			t.Errorf("sum_10m event time %v %v", et, ok)
		}
		merchant := res.Get(0, "card_txn:last_merchant")
		if s, ok := merchant.StringVal(); ok || s != "" || merchant.Status() != client.StatusNull || merchant.Present() || merchant.Any() != nil {
			t.Errorf("null last_merchant: %q %v, status %v", s, ok, merchant.Status())
		}
		if et, ok := merchant.EventTime(); !ok || !et.Equal(t0.Add(20*time.Minute)) {
			t.Errorf("null last_merchant event time %v %v", et, ok)
		}
		if _, _, ok := merchant.Window(); ok {
			t.Error("a last-value feature has a window")
		}
		if _, _, ok := res.Get(0, "card_txn:n_lifetime").Window(); ok {
			t.Error("a lifetime aggregation has a window")
		}
		if v := res.Get(0, "card_txn:nope"); v.Status() != client.StatusUnspecified || v.Present() || v.String() != "unspecified" {
			t.Errorf("a feature not in the result: %v", v)
		}
		if s := fmt.Sprint(res.Get(0, "card_txn:n_1h"), " ", merchant); s != "3 null" {
			t.Errorf("String: %q", s)
		}
	})

	t.Run("feature service, lists", func(t *testing.T) {
		res := clientLookup(t, c, client.Service("fraud"), client.Key{"c1"})
		want := get(t, f.client, &pb.GetOnlineFeaturesRequest{Kind: &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: "fraud"}, Entities: []*pb.EntityKey{skey("c1")}})
		if !slices.Equal(res.Features(), want.GetFeatureNames()) {
			t.Errorf("features %q, want %q", res.Features(), want.GetFeatureNames())
		}
		got, ok := res.Get(0, "card_more:merchants").StringListVal()
		if wantList := want.GetResults()[0].GetValues()[3].GetValue().GetStringListVal().GetVal(); !ok || len(got) == 0 || !slices.Equal(got, wantList) {
			t.Errorf("merchants %q %v, want %q", got, ok, wantList)
		}
		if mean, ok := res.Get(0, "card_more:mean_1h").DoubleVal(); !ok || mean != 35.0/3 {
			t.Errorf("mean_1h %v %v", mean, ok)
		}
	})

	t.Run("composite keys", func(t *testing.T) {
		res := clientLookup(t, c, client.Features("pair_txn:*"),
			client.Key{"u1", 42}, client.Key{"u1", int64(43)}, client.Keys{"user_id": "u2", "merchant_id": uint32(42)}, client.Key{"u1", uint64(42)})
		want := [][]string{{"PRESENT 2", "PRESENT 5"}, {"PRESENT 1", "PRESENT 4"}, {"PRESENT 0", "NOT_FOUND"}, {"PRESENT 2", "PRESENT 5"}}
		if got := clientRows(res); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("values:\n got %q\nwant %q", got, want)
		}
	})

	t.Run("named keys of two entities", func(t *testing.T) {
		res := clientLookup(t, c, client.Features("card_txn:n_1h", "pair_txn:*"),
			client.Keys{"card_id": "c1", "user_id": "u1", "merchant_id": 42}, client.Keys{"card_id": "c2", "user_id": "u1", "merchant_id": 43})
		want := [][]string{{"PRESENT 3", "PRESENT 2", "PRESENT 5"}, {"PRESENT 1", "PRESENT 1", "PRESENT 4"}}
		if got := clientRows(res); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("values:\n got %q\nwant %q", got, want)
		}
	})

	t.Run("errors", func(t *testing.T) {
		expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		for _, e := range []struct {
			name     string
			ctx      context.Context
			sel      client.Selector
			entities []client.Entity
			code     codes.Code
			message  string
		}{
			{"unknown view", context.Background(), client.Features("nope:x"), []client.Entity{client.Key{"c1"}}, codes.InvalidArgument, `unknown feature view "nope"`},
			{"unknown service", context.Background(), client.Service("nope"), []client.Entity{client.Key{"c1"}}, codes.InvalidArgument, `unknown feature service "nope"`},
			{"key type at the server", context.Background(), client.Features("card_txn:n_1h"), []client.Entity{client.Key{7}}, codes.InvalidArgument, `entity 0: join key "card_id" (position 0) of entity "card": want a string value, got int64`},
			{"no entities", context.Background(), client.Features("card_txn:n_1h"), nil, codes.InvalidArgument, "no entities requested"},
			{"key type in the client", context.Background(), client.Features("card_txn:n_1h"), []client.Entity{client.Key{"c1"}, client.Key{1.5}}, codes.InvalidArgument, "entity 1: join key value at position 0: a float64; join keys are strings or integers"},
			{"named key type in the client", context.Background(), client.Features("card_txn:n_1h"), []client.Entity{client.Keys{"card_id": []byte("c1")}}, codes.InvalidArgument, `entity 0: join key "card_id": a []uint8; join keys are strings or integers`},
			{"key out of range", context.Background(), client.Features("pair_txn:n_1h"), []client.Entity{client.Key{"u1", uint64(math.MaxUint64)}}, codes.InvalidArgument, "entity 0: join key value at position 1: 18446744073709551615 does not fit an int64"},
			{"nil entity", context.Background(), client.Features("card_txn:n_1h"), []client.Entity{nil}, codes.InvalidArgument, "entity 0: nil"},
			{"deadline passed", expired, client.Features("card_txn:n_1h"), []client.Entity{client.Key{"c1"}}, codes.DeadlineExceeded, ""},
		} {
			_, err := c.Lookup(e.ctx, e.sel, e.entities...)
			if status.Code(err) != e.code || !strings.Contains(status.Convert(err).Message(), e.message) {
				t.Errorf("%s: got %v, want %v with %q", e.name, err, e.code, e.message)
			}
		}
	})
}

// metadataRecorder is the online service with the incoming metadata of
// each call sent to md.
type metadataRecorder struct {
	pb.UnimplementedOnlineServiceServer
	svc *OnlineService
	md  chan metadata.MD
}

func (r metadataRecorder) GetOnlineFeatures(ctx context.Context, req *pb.GetOnlineFeaturesRequest) (*pb.GetOnlineFeaturesResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.md <- md
	return r.svc.GetOnlineFeatures(ctx, req)
}

// TestClientTLSAndToken serves gRPC over TLS and checks that the client
// verifies the server, sends its token and its dial options, and refuses to
// send a token in clear.
func TestClientTLSAndToken(t *testing.T) {
	f := newFixture(t, OnlineOptions{})
	serverTLS, clientTLS := selfSignedTLS(t)
	serverTLS.NextProtos = []string{"h2"}
	ln := tls.NewListener(listen(t), serverTLS)
	rec := metadataRecorder{svc: f.svc, md: make(chan metadata.MD, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(rec, ServerConfig{Listener: ln, ShutdownTimeout: time.Second}).Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	addr := ln.Addr().String()

	c := dialClient(t, addr, client.WithTLS(clientTLS), client.WithBearerToken("s3cret"),
		client.WithDialOptions(grpc.WithUserAgent("fraud-scorer/1.0")))
	res := clientLookup(t, c, client.Features("card_txn:n_1h"), client.Key{"c1"})
	if n, ok := res.Get(0, "card_txn:n_1h").Int64Val(); !ok || n != 3 {
		t.Errorf("n_1h %d %v", n, ok)
	}
	md := <-rec.md
	if got := md.Get("authorization"); !slices.Equal(got, []string{"Bearer s3cret"}) {
		t.Errorf("authorization metadata %q", got)
	}
	if ua := md.Get("user-agent"); len(ua) != 1 || !strings.HasPrefix(ua[0], "fraud-scorer/1.0") {
		t.Errorf("user agent %q: dial options not passed", ua)
	}

	// A client that does not trust the server's certificate fails.
	untrusting := dialClient(t, addr, client.WithTLS(&tls.Config{MinVersion: tls.VersionTLS12}))
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	if _, err := untrusting.Lookup(cctx, client.Features("card_txn:n_1h"), client.Key{"c1"}); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted server certificate: %v", err)
	}

	// A token is never sent over plaintext.
	if c, err := client.Dial(addr, client.WithBearerToken("s3cret")); err == nil || !strings.Contains(err.Error(), "require transport level security") {
		t.Errorf("token over plaintext: Dial gave %v", err)
		if c != nil {
			c.Close()
		}
	}
	select {
	case md := <-rec.md:
		t.Errorf("a call reached the server without TLS or trust: %v", md)
	default:
	}
}
