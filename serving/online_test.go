package serving

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/ingest"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
	"github.com/featurestore/featurestore/registry"
	"github.com/featurestore/featurestore/serving/client"
)

const testDefs = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Entity
name: user_merchant
join_keys: [{name: user_id, type: string}, {name: merchant_id, type: int64}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card_id: card}
fields: {amount: double, merchant: string}
allowed_lateness: 1h
---
kind: Source
name: pays
kafka: {topic: pays}
timestamp: {field: ts, encoding: epoch_ms}
keys: {user_id: user, merchant_id: mid}
fields: {amount: double}
allowed_lateness: 0s
---
kind: FeatureView
name: card_txn
entity: card
source: txns
tile: 1m
ttl: 30m
features:
  - {name: n_1h, aggregation: count, window: 1h}
  - {name: sum_10m, aggregation: sum, field: amount, window: 10m}
  - {name: max_10m, aggregation: max, field: amount, window: 10m}
  - {name: n_lifetime, aggregation: count, window: lifetime}
  - {name: last_merchant, field: merchant, type: string}
  - {name: last_amount, field: amount, type: double}
---
kind: FeatureView
name: card_more
entity: card
source: txns
tile: 1m
features:
  - {name: mean_1h, aggregation: mean, field: amount, window: 1h}
  - {name: n_10m, aggregation: count, window: 10m}
  - {name: merchants, aggregation: last_n, field: merchant, n: 3, window: 1h}
  - {name: n_5m, aggregation: count, window: 5m}
---
kind: FeatureView
name: pair_txn
entity: user_merchant
source: pays
tile: 1m
features:
  - {name: n_1h, aggregation: count, window: 1h}
  - {name: last_amount, field: amount, type: double}
---
kind: OnDemandFeatureView
name: txn_risk
inputs:
  sum_10m: card_txn:sum_10m
  last_amount: card_txn:last_amount
  last_merchant: card_txn:last_merchant
  mean_1h: card_more:mean_1h
request_fields: {amount: double, merchant: string}
features:
  - {name: share_10m, type: double, expression: "amount / (sum_10m + amount)"}
  - {name: over_mean, type: double, expression: "amount / mean_1h"}
  - {name: same_merchant, type: bool, expression: "merchant == last_merchant"}
  - {name: jump, type: double, expression: "amount - last_amount"}
  - {name: mod, type: int64, expression: "7 % int(amount)"}
---
kind: FeatureService
name: fraud
features: [card_txn:n_1h, card_more:*, card_txn:last_merchant]
---
kind: FeatureService
name: risk
features: [txn_risk:share_10m, card_txn:n_1h, txn_risk:same_merchant]
`

// t0 is the start of the test's event times, on a tile boundary.
var t0 = time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)

func at(d time.Duration) int64 { return t0.Add(d).UnixMilli() }

type clock struct{ ms atomic.Int64 }

func (c *clock) now() time.Time       { return time.UnixMilli(c.ms.Load()).UTC() }
func (c *clock) set(d time.Duration)  { c.ms.Store(at(d)) }
func newClock(d time.Duration) *clock { c := &clock{}; c.set(d); return c }

type staticSnapshots struct {
	p atomic.Pointer[registry.Snapshot]
}

func (s *staticSnapshots) Current() *registry.Snapshot { return s.p.Load() }

func loadSnapshot(t testing.TB, version int64, defs string) *registry.Snapshot {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(defs)})
	if err != nil {
		t.Fatal(err)
	}
	return &registry.Snapshot{VersionInfo: registry.VersionInfo{Version: version}, Registry: r}
}

// ingestEvents writes JSON events of a source through the real ingest
// applier, one partition, offsets in order.
func ingestEvents(t testing.TB, rc redis.UniversalClient, project string, r *registry.Registry, source string, events []string) {
	t.Helper()
	a, err := ingest.NewApplier(project, r, r.Source(source), online.New(rc, online.Options{}), ingest.NewPositions(rc, project), discardSink{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]kafka.Message, len(events))
	for i, e := range events {
		msgs[i] = kafka.Message{Topic: source, Partition: 0, Offset: int64(i), Value: []byte(e)}
	}
	if err := a.Apply(context.Background(), source, 0, msgs); err != nil {
		t.Fatal(err)
	}
}

type discardSink struct{}

func (discardSink) Send(context.Context, []ingest.DeadLetter) error { return nil }

type fixture struct {
	svc    *OnlineService
	client pb.OnlineServiceClient
	conn   *grpc.ClientConn
	clock  *clock
	snaps  *staticSnapshots
}

// start serves svc over bufconn through the real Server.
func start(t testing.TB, svc *OnlineService) *grpc.ClientConn {
	t.Helper()
	return serveBufconn(t, func(ctx context.Context, ln net.Listener) error {
		return NewServer(svc, ServerConfig{Listener: ln, ShutdownTimeout: time.Second}).Run(ctx)
	})
}

// serveBufconn runs a server (run, until its context ends) on a bufconn
// listener and returns a client connection to it; both end with the test,
// and the server must return nil.
func serveBufconn(t testing.TB, run func(ctx context.Context, ln net.Listener) error) *grpc.ClientConn {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, ln) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return conn
}

func newFixture(t testing.TB, opts OnlineOptions) *fixture {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), ContextTimeoutEnabled: true})
	t.Cleanup(func() { rc.Close() })
	return newFixtureOn(t, rc, opts)
}

// newFixtureOn writes the test's events through the real ingest applier into
// rc, standalone or cluster, and serves them.
func newFixtureOn(t testing.TB, rc redis.UniversalClient, opts OnlineOptions) *fixture {
	t.Helper()
	project := testenv.UniqueName(t, "serving")
	snap := loadSnapshot(t, 1, testDefs)
	ms := func(d time.Duration) int64 { return at(d) }
	ingestEvents(t, rc, project, snap.Registry, "txns", []string{
		fmt.Sprintf(`{"card":"c1","ts":%d,"amount":10,"merchant":"m1"}`, ms(10*time.Second)),
		fmt.Sprintf(`{"card":"c1","ts":%d,"amount":20,"merchant":"m2"}`, ms(5*time.Minute)),
		fmt.Sprintf(`{"card":"c2","ts":%d,"amount":7,"merchant":"m3"}`, ms(time.Minute)),
		fmt.Sprintf(`{"card":"c1","ts":%d,"amount":5}`, ms(20*time.Minute)), // no merchant: null
	})
	ingestEvents(t, rc, project, snap.Registry, "pays", []string{
		fmt.Sprintf(`{"user":"u1","mid":42,"ts":%d,"amount":3}`, ms(2*time.Minute)),
		fmt.Sprintf(`{"user":"u1","mid":43,"ts":%d,"amount":4}`, ms(3*time.Minute)),
		fmt.Sprintf(`{"user":"u1","mid":42,"ts":%d,"amount":5}`, ms(4*time.Minute)),
	})
	f := &fixture{clock: newClock(21 * time.Minute), snaps: &staticSnapshots{}}
	f.snaps.p.Store(snap)
	opts.Project = project
	opts.Now = f.clock.now
	f.svc = NewOnlineService(f.snaps, online.New(rc, online.Options{}), opts)
	f.conn = start(t, f.svc)
	f.client = pb.NewOnlineServiceClient(f.conn)
	return f
}

func refs(r ...string) *pb.GetOnlineFeaturesRequest_Features {
	return &pb.GetOnlineFeaturesRequest_Features{Features: &pb.FeatureList{Refs: r}}
}

func skey(s ...string) *pb.EntityKey {
	k := &pb.EntityKey{}
	for _, v := range s {
		k.JoinKeyValues = append(k.JoinKeyValues, &pb.Value{Kind: &pb.Value_StringVal{StringVal: v}})
	}
	return k
}

// rowKey is the row of one card with request values of its own.
func rowKey(card string, ctx map[string]*pb.Value) *pb.EntityKey {
	k := skey(card)
	k.RequestContext = ctx
	return k
}

func ival(v int64) *pb.Value   { return &pb.Value{Kind: &pb.Value_Int64Val{Int64Val: v}} }
func dval(v float64) *pb.Value { return &pb.Value{Kind: &pb.Value_DoubleVal{DoubleVal: v}} }
func sval(v string) *pb.Value  { return &pb.Value{Kind: &pb.Value_StringVal{StringVal: v}} }

// show renders a feature value compactly for comparisons.
func show(v *pb.FeatureValue) string {
	st := strings.TrimPrefix(v.GetStatus().String(), "FEATURE_STATUS_")
	if v.GetValue() == nil {
		return st
	}
	switch k := v.GetValue().GetKind().(type) {
	case *pb.Value_Int64Val:
		return fmt.Sprintf("%s %d", st, k.Int64Val)
	case *pb.Value_DoubleVal:
		return fmt.Sprintf("%s %g", st, k.DoubleVal)
	case *pb.Value_StringVal:
		return fmt.Sprintf("%s %q", st, k.StringVal)
	case *pb.Value_StringListVal:
		return fmt.Sprintf("%s %q", st, k.StringListVal.GetVal())
	case *pb.Value_BoolVal:
		return fmt.Sprintf("%s %v", st, k.BoolVal)
	}
	return st + " ?"
}

func rows(resp *pb.GetOnlineFeaturesResponse) [][]string {
	var out [][]string
	for _, r := range resp.GetResults() {
		var row []string
		for _, v := range r.GetValues() {
			row = append(row, show(v))
		}
		out = append(out, row)
	}
	return out
}

func checkRows(t *testing.T, resp *pb.GetOnlineFeaturesResponse, want [][]string) {
	t.Helper()
	got := rows(resp)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("values:\n got %q\nwant %q", got, want)
	}
}

func get(t *testing.T, c pb.OnlineServiceClient, req *pb.GetOnlineFeaturesRequest) *pb.GetOnlineFeaturesResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.GetOnlineFeatures(ctx, req)
	if err != nil {
		t.Fatalf("GetOnlineFeatures: %v", err)
	}
	return resp
}

var cardTxnAll = []string{"card_txn:n_1h", "card_txn:sum_10m", "card_txn:max_10m", "card_txn:n_lifetime", "card_txn:last_merchant", "card_txn:last_amount"}

func TestGetOnlineFeatures(t *testing.T) {
	f := newFixture(t, OnlineOptions{})

	t.Run("statuses and request order", func(t *testing.T) {
		f.clock.set(21 * time.Minute)
		resp := get(t, f.client, &pb.GetOnlineFeaturesRequest{
			Kind:     refs(cardTxnAll...),
			Entities: []*pb.EntityKey{skey("c2"), skey("nobody"), skey("c1"), skey("c2")},
		})
		if fmt.Sprint(resp.GetFeatureNames()) != fmt.Sprint(cardTxnAll) {
			t.Errorf("feature names %q", resp.GetFeatureNames())
		}
		checkRows(t, resp, [][]string{
			{"PRESENT 1", "PRESENT 0", "NOT_FOUND", "PRESENT 1", `PRESENT "m3"`, "PRESENT 7"},
			{"PRESENT 0", "PRESENT 0", "NOT_FOUND", "PRESENT 0", "NOT_FOUND", "NOT_FOUND"},
			{"PRESENT 3", "PRESENT 5", "PRESENT 5", "PRESENT 3", "NULL_VALUE", "PRESENT 5"},
			{"PRESENT 1", "PRESENT 0", "NOT_FOUND", "PRESENT 1", `PRESENT "m3"`, "PRESENT 7"},
		})
		if got, want := resp.GetReadTime().AsTime(), t0.Add(21*time.Minute); !got.Equal(want) {
			t.Errorf("read time %v, want %v", got, want)
		}
		if resp.GetRegistryVersion() != 1 {
			t.Errorf("registry version %d, want 1", resp.GetRegistryVersion())
		}
		c1 := resp.GetResults()[2].GetValues()
		// last_merchant is null: the event time is of the event found.
		if got := c1[4].GetEventTime().AsTime(); !got.Equal(t0.Add(20 * time.Minute)) {
			t.Errorf("c1 last_merchant event time %v", got)
		}
		// sum_10m at 21m covers the tiles 12m..21m: [12m, 21m+1ms).
		w := c1[1].GetWindow()
		if !w.GetStart().AsTime().Equal(t0.Add(12*time.Minute)) || !w.GetEnd().AsTime().Equal(t0.Add(21*time.Minute+time.Millisecond)) {
			t.Errorf("c1 sum_10m window [%v, %v)", w.GetStart().AsTime(), w.GetEnd().AsTime())
		}
		if c1[3].GetWindow() != nil || c1[4].GetWindow() != nil {
			t.Error("lifetime and last-value features have a window")
		}
		// nobody's counts are 0 with no event involved.
		if resp.GetResults()[1].GetValues()[0].GetEventTime() != nil {
			t.Error("a count over no events has an event time")
		}
	})

	t.Run("no metadata", func(t *testing.T) {
		f.clock.set(21 * time.Minute)
		resp := get(t, f.client, &pb.GetOnlineFeaturesRequest{Kind: refs(cardTxnAll...), Entities: []*pb.EntityKey{skey("c1")}, IncludeMetadata: proto.Bool(false)})
		for _, v := range resp.GetResults()[0].GetValues() {
			if v.GetEventTime() != nil || v.GetWindow() != nil {
				t.Errorf("metadata set with include_metadata false: %v", v)
			}
		}
		checkRows(t, resp, [][]string{{"PRESENT 3", "PRESENT 5", "PRESENT 5", "PRESENT 3", "NULL_VALUE", "PRESENT 5"}})
	})

	t.Run("decay and expiry over time", func(t *testing.T) {
		for _, c := range []struct {
			now  time.Duration
			want [][]string // c1, c2
		}{
			// c2's only event, at 1m, is now older than the 30m TTL.
			{32 * time.Minute, [][]string{
				{"PRESENT 3", "PRESENT 0", "NOT_FOUND", "PRESENT 3", "NULL_VALUE", "PRESENT 5"},
				{"PRESENT 1", "PRESENT 0", "NOT_FOUND", "PRESENT 1", "EXPIRED", "EXPIRED"}}},
			// The first two events of c1 and c2's left the hour.
			{65*time.Minute + 30*time.Second, [][]string{
				{"PRESENT 1", "PRESENT 0", "NOT_FOUND", "PRESENT 3", "EXPIRED", "EXPIRED"},
				{"PRESENT 0", "PRESENT 0", "NOT_FOUND", "PRESENT 1", "EXPIRED", "EXPIRED"}}},
			{3 * time.Hour, [][]string{
				{"PRESENT 0", "PRESENT 0", "NOT_FOUND", "PRESENT 3", "EXPIRED", "EXPIRED"},
				{"PRESENT 0", "PRESENT 0", "NOT_FOUND", "PRESENT 1", "EXPIRED", "EXPIRED"}}},
		} {
			f.clock.set(c.now)
			resp := get(t, f.client, &pb.GetOnlineFeaturesRequest{Kind: refs(cardTxnAll...), Entities: []*pb.EntityKey{skey("c1"), skey("c2")}})
			t.Logf("at %v", c.now)
			checkRows(t, resp, c.want)
		}
	})

	t.Run("feature service and two views", func(t *testing.T) {
		f.clock.set(21 * time.Minute)
		resp := get(t, f.client, &pb.GetOnlineFeaturesRequest{Kind: &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: "fraud"}, Entities: []*pb.EntityKey{skey("c1")}})
		want := []string{"card_txn:n_1h", "card_more:mean_1h", "card_more:n_10m", "card_more:merchants", "card_more:n_5m", "card_txn:last_merchant"}
		if fmt.Sprint(resp.GetFeatureNames()) != fmt.Sprint(want) {
			t.Errorf("feature names %q, want %q", resp.GetFeatureNames(), want)
		}
		got := rows(resp)
		if len(got) != 1 || len(got[0]) != 6 || got[0][0] != "PRESENT 3" || got[0][1] != "PRESENT 11.666666666666666" ||
			got[0][2] != "PRESENT 1" || !strings.HasPrefix(got[0][3], "PRESENT [") || got[0][4] != "PRESENT 1" || got[0][5] != "NULL_VALUE" {
			t.Errorf("values %q", got)
		}
	})

	t.Run("composite keys", func(t *testing.T) {
		f.clock.set(21 * time.Minute)
		key := func(u string, m int64) *pb.EntityKey {
			return &pb.EntityKey{JoinKeyValues: []*pb.Value{sval(u), ival(m)}}
		}
		resp := get(t, f.client, &pb.GetOnlineFeaturesRequest{Kind: refs("pair_txn:*"),
			Entities: []*pb.EntityKey{key("u1", 42), key("u1", 43), key("u2", 42)}})
		checkRows(t, resp, [][]string{{"PRESENT 2", "PRESENT 5"}, {"PRESENT 1", "PRESENT 4"}, {"PRESENT 0", "NOT_FOUND"}})
	})

	t.Run("features of two entities with named join keys", func(t *testing.T) {
		f.clock.set(21 * time.Minute)
		named := func(card, user string, merchant int64) *pb.EntityKey {
			return &pb.EntityKey{JoinKeys: map[string]*pb.Value{"card_id": sval(card), "user_id": sval(user), "merchant_id": ival(merchant)}}
		}
		both := get(t, f.client, &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h", "pair_txn:*"),
			Entities: []*pb.EntityKey{named("c1", "u1", 42), named("c2", "u1", 43)}})
		cards := get(t, f.client, &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{skey("c1"), skey("c2")}})
		pairs := get(t, f.client, &pb.GetOnlineFeaturesRequest{Kind: refs("pair_txn:*"),
			Entities: []*pb.EntityKey{{JoinKeyValues: []*pb.Value{sval("u1"), ival(42)}}, {JoinKeyValues: []*pb.Value{sval("u1"), ival(43)}}}})
		var want [][]string
		for i := range 2 {
			want = append(want, append(rows(cards)[i], rows(pairs)[i]...))
		}
		checkRows(t, both, want)
	})

	t.Run("registry version change", func(t *testing.T) {
		f.clock.set(21 * time.Minute)
		old := f.snaps.Current()
		defer f.snaps.p.Store(old)
		f.snaps.p.Store(loadSnapshot(t, 2, strings.Replace(testDefs, "name: n_5m,", "name: n_5m_renamed,", 1)))
		resp := get(t, f.client, &pb.GetOnlineFeaturesRequest{Kind: refs("card_more:n_5m_renamed"), Entities: []*pb.EntityKey{skey("c1")}})
		if resp.GetRegistryVersion() != 2 {
			t.Errorf("registry version %d, want 2", resp.GetRegistryVersion())
		}
		_, err := f.client.GetOnlineFeatures(context.Background(), &pb.GetOnlineFeaturesRequest{Kind: refs("card_more:n_5m"), Entities: []*pb.EntityKey{skey("c1")}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("a feature of the old version: %v", err)
		}
		// A store that lost versions gives the next apply a number already
		// seen: the content, not the number, decides the plan.
		f.snaps.p.Store(loadSnapshot(t, 2, strings.Replace(testDefs, "name: n_5m,", "name: n_5m_again,", 1)))
		get(t, f.client, &pb.GetOnlineFeaturesRequest{Kind: refs("card_more:n_5m_again"), Entities: []*pb.EntityKey{skey("c1")}})
	})

	t.Run("reflection", func(t *testing.T) {
		stream, err := reflectionpb.NewServerReflectionClient(f.conn).ServerReflectionInfo(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer stream.CloseSend()
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		if !slices.Contains(names, "featurestore.v1.OnlineService") || !slices.Contains(names, "grpc.health.v1.Health") {
			t.Errorf("reflection lists %q", names)
		}
	})

	t.Run("health", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(f.conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "featurestore.v1.OnlineService"})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health: %v %v", resp, err)
		}
	})
}

func TestGetOnlineFeaturesBadRequests(t *testing.T) {
	f := newFixture(t, OnlineOptions{MaxEntities: 5})
	c1 := []*pb.EntityKey{skey("c1")}
	amount3 := map[string]*pb.Value{"amount": dval(3)}
	for _, c := range []struct {
		name string
		req  *pb.GetOnlineFeaturesRequest
		want string
	}{
		{"unknown service", &pb.GetOnlineFeaturesRequest{Kind: &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: "nope"}, Entities: c1}, `unknown feature service "nope"`},
		{"unknown view", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h", "nope:x"), Entities: c1}, `unknown feature view "nope"`},
		{"unknown feature", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:nope"), Entities: c1}, `unknown feature "nope" in feature view "card_txn"`},
		{"misspelt feature", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1hh"), Entities: c1}, `unknown feature "n_1hh" in feature view "card_txn" (did you mean "n_1h"?)`},
		{"misspelt view", &pb.GetOnlineFeaturesRequest{Kind: refs("card_tx:n_1h"), Entities: c1}, `unknown feature view "card_tx" in "card_tx:n_1h" (did you mean "card_txn"?)`},
		{"malformed ref", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn"), Entities: c1}, `invalid feature reference "card_txn"`},
		{"repeated ref", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h", "card_txn:*"), Entities: c1}, `feature "card_txn:n_1h" requested more than once`},
		{"no features", &pb.GetOnlineFeaturesRequest{Kind: refs(), Entities: c1}, "no features requested"},
		{"no kind", &pb.GetOnlineFeaturesRequest{Entities: c1}, "set feature_service or features"},
		{"two entities, positional keys", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h", "pair_txn:n_1h"), Entities: c1}, `entity 0: the features belong to entities [card user_merchant]: name the join keys (join_keys)`},
		{"named key missing", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h", "pair_txn:n_1h"), Entities: []*pb.EntityKey{{JoinKeys: map[string]*pb.Value{"card_id": sval("c1"), "user_id": sval("u1")}}}}, `entity 0: no value for join key "merchant_id" of entity "user_merchant"`},
		{"named key misspelt", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h", "pair_txn:n_1h"), Entities: []*pb.EntityKey{{JoinKeys: map[string]*pb.Value{"card_id": sval("c1"), "user_id": sval("u1"), "merchantid": ival(1)}}}},
			`entity 0: no value for join key "merchant_id" of entity "user_merchant" (the request names ["merchantid"], which no entity of the requested features has)`},
		{"named key unused", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{{JoinKeys: map[string]*pb.Value{"card_id": sval("c1"), "shop": sval("s")}}}}, `entity 0: join key "shop" belongs to no entity of the requested features`},
		{"named key type", &pb.GetOnlineFeaturesRequest{Kind: refs("pair_txn:n_1h"), Entities: []*pb.EntityKey{{JoinKeys: map[string]*pb.Value{"user_id": sval("u1"), "merchant_id": sval("42")}}}}, `entity 0: join key "merchant_id" of entity "user_merchant": want a int64 value, got string`},
		{"both key forms", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{{JoinKeyValues: []*pb.Value{sval("c1")}, JoinKeys: map[string]*pb.Value{"card_id": sval("c1")}}}}, `entity 0: give join_key_values or join_keys, not both`},
		{"no entities", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h")}, "no entities requested"},
		{"too many entities", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{skey("a"), skey("b"), skey("c"), skey("d"), skey("e"), skey("f")}}, "6 entities requested, more than the 5 allowed"},
		{"arity", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{skey("c1"), skey("c1", "x")}}, `entity 1: entity "card" has 1 join keys [card_id], got 2 values`},
		{"empty key", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{{}}}, `entity 0: entity "card" has 1 join keys [card_id], got 0 values`},
		{"key type", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{skey("c1"), {JoinKeyValues: []*pb.Value{ival(1)}}}}, `entity 1: join key "card_id" (position 0) of entity "card": want a string value, got int64`},
		{"composite key type", &pb.GetOnlineFeaturesRequest{Kind: refs("pair_txn:n_1h"), Entities: []*pb.EntityKey{skey("u1", "42")}}, `entity 0: join key "merchant_id" (position 1) of entity "user_merchant": want a int64 value, got string`},
		{"unset key value", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{{JoinKeyValues: []*pb.Value{{}}}}}, `entity 0: join key "card_id" (position 0) of entity "card": want a string value, got no value`},
		{"double key", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{{JoinKeyValues: []*pb.Value{dval(1)}}}}, `got double`},
		{"key too long", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{skey(strings.Repeat("c", 1025))}}, `entity 0: join key "card_id" (position 0) of entity "card": a string of 1025 bytes, more than the 1024 a join key value may have`},
		{"request context", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: c1, RequestContext: map[string]*pb.Value{"amount": dval(1)}}, `request_context "amount" is used by no requested feature`},
		{"unknown layout", &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: c1, Layout: 7}, "unknown layout 7"},
		// txn_risk:mod reads no stored view, only the request field amount:
		// its keys are still those of txn_risk's inputs' entity, card.
		{"on-demand without stored reads, key type", &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:mod"), Entities: []*pb.EntityKey{{JoinKeyValues: []*pb.Value{ival(1)}}}, RequestContext: amount3}, `entity 0: join key "card_id" (position 0) of entity "card": want a string value, got int64`},
		{"on-demand without stored reads, arity", &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:mod"), Entities: []*pb.EntityKey{skey("a", "b", "c")}, RequestContext: amount3}, `entity 0: entity "card" has 1 join keys [card_id], got 3 values`},
		{"on-demand without stored reads, empty key", &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:mod"), Entities: []*pb.EntityKey{{}}, RequestContext: amount3}, `entity 0: entity "card" has 1 join keys [card_id], got 0 values`},
		{"on-demand without stored reads, named key unused", &pb.GetOnlineFeaturesRequest{Kind: refs("txn_risk:mod"), Entities: []*pb.EntityKey{{JoinKeys: map[string]*pb.Value{"card_id": sval("c1"), "shop": sval("s")}}}, RequestContext: amount3}, `entity 0: join key "shop" belongs to no entity of the requested features`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.client.GetOnlineFeatures(context.Background(), c.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), c.want) {
				t.Errorf("got %v, want InvalidArgument with %q", err, c.want)
			}
		})
	}
}

// TestGetOnlineFeaturesCorruptState: a hash field that does not decode
// fails neither the lookup nor the other entities: a lookup of several
// entities, one of whose card_txn hash is corrupt, gives the others their
// values and that one FEATURE_STATUS_ERROR for its card_txn features (no
// value, no event time, the window of the others) and for the on-demand
// features using them, its card_more and other on-demand features as
// usual, in request order, by rows and by columns, over gRPC and HTTP. Each
// corrupt read is counted by view; the key is logged at error level once,
// however often it is read within a minute.
func TestGetOnlineFeaturesCorruptState(t *testing.T) {
	reg, rec := prometheus.NewRegistry(), &logRecorder{}
	f := newFixture(t, OnlineOptions{Metrics: NewMetrics(reg), Logger: slog.New(rec)})
	url := serveHTTP(t, f.svc, HTTPConfig{})
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	defer rc.Close()
	key := online.Key{Project: f.svc.opts.Project, View: "card_txn", Entity: featurestore.StringKey("c2")}.Name()
	if err := rc.HSet(context.Background(), key, online.LastField, "\xff\xff\xff").Err(); err != nil {
		t.Fatal(err)
	}
	f.clock.set(21 * time.Minute)
	mean1 := (10.0 + 20 + 5) / 3 // c1's mean_1h
	want := [][]string{
		{"PRESENT 3", "PRESENT 5", "PRESENT 1", "PRESENT 5", fmt.Sprintf("PRESENT %g", 10/mean1)},
		{"ERROR", "ERROR", "PRESENT 0", "ERROR", fmt.Sprintf("PRESENT %g", 10.0/7)},
		{"PRESENT 0", "NOT_FOUND", "PRESENT 0", "NOT_FOUND", "NOT_FOUND"},
		{"ERROR", "ERROR", "PRESENT 0", "ERROR", fmt.Sprintf("PRESENT %g", 10.0/7)},
	}
	for _, layout := range []pb.ResponseLayout{pb.ResponseLayout_RESPONSE_LAYOUT_ROWS, pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS} {
		t.Run(layout.String(), func(t *testing.T) {
			req := &pb.GetOnlineFeaturesRequest{
				Kind:           refs("card_txn:n_1h", "card_txn:last_amount", "card_more:n_10m", "txn_risk:jump", "txn_risk:over_mean"),
				Entities:       []*pb.EntityKey{skey("c1"), skey("c2"), skey("nobody"), skey("c2")},
				RequestContext: map[string]*pb.Value{"amount": dval(10)},
				Layout:         layout,
			}
			resp := get(t, f.client, req)
			if layout == pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS {
				resp = columnsAsRows(t, resp, len(req.Entities))
			}
			checkRows(t, resp, want)
			c1, c2 := resp.GetResults()[0].GetValues(), resp.GetResults()[1].GetValues()
			if c2[0].GetEventTime() != nil || c2[1].GetEventTime() != nil {
				t.Errorf("values in error have an event time: %v", c2)
			}
			if w := c2[0].GetWindow(); w == nil || !proto.Equal(w, c1[0].GetWindow()) {
				t.Errorf("c2 n_1h in error covers %v, c1's %v", w, c1[0].GetWindow())
			}

			r := postProto(t, url, req)
			if r.status != http.StatusOK || !strings.Contains(string(r.body), `"FEATURE_STATUS_ERROR"`) {
				t.Fatalf("HTTP status %d: %s", r.status, r.body)
			}
			got := &pb.GetOnlineFeaturesResponse{}
			if err := protojson.Unmarshal(r.body, got); err != nil {
				t.Fatal(err)
			}
			if layout == pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS {
				got = columnsAsRows(t, got, len(req.Entities))
			}
			if !proto.Equal(got, resp) {
				t.Errorf("HTTP response differs from gRPC's:\n http %v\n grpc %v", got, resp)
			}
		})
	}

	// Four lookups (gRPC and HTTP, by rows and by columns), each reading
	// c2's card_txn hash twice.
	if n := counter(t, reg, "featurestore_serving_corrupt_state_total", map[string]string{"view": "card_txn"}); n != 8 {
		t.Errorf("corrupt reads of card_txn counted: %v, want 8", n)
	}
	if n := counter(t, reg, "featurestore_serving_corrupt_state_total", map[string]string{"view": "card_more"}); n != 0 {
		t.Errorf("corrupt reads of card_more counted: %v, want 0", n)
	}
	for view, n := range map[string]float64{"card_txn": 16, "txn_risk": 8, "card_more": 0} {
		if got := counter(t, reg, "featurestore_serving_values_total", map[string]string{"view": view, "status": "error"}); got != n {
			t.Errorf("%s values served in error: %v, want %v", view, got, n)
		}
	}
	if n := counter(t, reg, "featurestore_serving_values_total", map[string]string{"view": "card_txn", "status": "not_found"}); n != 4 {
		t.Errorf("card_txn values not found: %v, want 4 (nobody's last_amount, errors aside)", n)
	}
	// Tiles merged, per read of a windowed view: card_txn's of c1 and
	// nobody (c2's fail) and card_more's of all four, in each lookup.
	if n := histogramCount(t, reg, "featurestore_serving_tiles_merged", nil); n != 4*(2+4) {
		t.Errorf("reads observed in featurestore_serving_tiles_merged: %d, want %d", n, 4*(2+4))
	}
	lines := rec.matching(key)
	if len(lines) != 1 || lines[0].level != slog.LevelError || !strings.Contains(lines[0].text, "view=card_txn") ||
		!strings.Contains(lines[0].text, online.ErrCorruptState.Error()) {
		t.Errorf("log lines naming %s: %v, want one error naming the view and the decode error", key, lines)
	}

	// The Go client reads the status (by columns, for several entities).
	res := clientLookup(t, dialClient(t, serveGRPC(t, f.svc)), client.Features("card_txn:n_1h", "card_txn:last_amount", "card_more:n_10m"),
		client.Key{"c1"}, client.Key{"c2"}, client.Key{"nobody"}, client.Key{"c2"})
	var wantClient [][]string
	for _, row := range want {
		wantClient = append(wantClient, row[:3])
	}
	if got := clientRows(res); fmt.Sprint(got) != fmt.Sprint(wantClient) {
		t.Errorf("client values:\n got %q\nwant %q", got, wantClient)
	}
	if v := res.At(1, 0); v.Status() != client.StatusError || v.Present() || v.Any() != nil {
		t.Errorf("client: c2 n_1h %v, status %v", v, v.Status())
	}
}

// columnsAsRows returns a response by columns of ne entities rebuilt by
// rows, as columnCell reads each value.
func columnsAsRows(t *testing.T, resp *pb.GetOnlineFeaturesResponse, ne int) *pb.GetOnlineFeaturesResponse {
	t.Helper()
	if len(resp.GetResults()) != 0 || len(resp.GetColumns()) != len(resp.GetFeatureNames()) {
		t.Fatalf("not a response by columns: %v", resp)
	}
	out := &pb.GetOnlineFeaturesResponse{FeatureNames: resp.GetFeatureNames(), ReadTime: resp.GetReadTime(), RegistryVersion: resp.GetRegistryVersion()}
	for i := range ne {
		r := &pb.EntityResult{}
		for _, col := range resp.GetColumns() {
			fv := columnCell(t, col, i)
			if fv.GetStatus() != pb.FeatureStatus_FEATURE_STATUS_PRESENT && (fv.GetValue() != nil || fv.GetEventTime() != nil) {
				t.Errorf("entity %d: %v", i, fv)
			}
			r.Values = append(r.Values, fv)
		}
		out.Results = append(out.Results, r)
	}
	return out
}

// TestGetOnlineFeaturesRedisDown checks that an online store that accepts
// connections but never answers fails the call with UNAVAILABLE at the
// server's default deadline, and one that refuses connections at once.
func TestGetOnlineFeaturesRedisDown(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()

	for _, c := range []struct{ name, addr string }{{"silent", silentServer(t)}, {"refused", refused}} {
		t.Run(c.name, func(t *testing.T) {
			rc := redis.NewClient(&redis.Options{Addr: c.addr, ContextTimeoutEnabled: true, MaxRetries: -1})
			defer rc.Close()
			snaps := &staticSnapshots{}
			snaps.p.Store(loadSnapshot(t, 1, testDefs))
			conn := start(t, NewOnlineService(snaps, online.New(rc, online.Options{}), OnlineOptions{Project: "p", DefaultDeadline: 300 * time.Millisecond}))
			begin := time.Now()
			_, err := pb.NewOnlineServiceClient(conn).GetOnlineFeatures(context.Background(), &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{skey("c1")}})
			took := time.Since(begin)
			if status.Code(err) != codes.Unavailable {
				t.Errorf("got %v, want Unavailable", err)
			}
			if took > 2*time.Second {
				t.Errorf("took %v, want about the 300ms default deadline", took)
			}
		})
	}
}

// silentServer returns the address of a server that accepts connections
// and never answers, until the test ends.
func silentServer(t testing.TB) string {
	t.Helper()
	ln := listen(t)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold the connection open, never answer
		}
	}()
	return ln.Addr().String()
}

// TestGetOnlineFeaturesCallerGaveUp: a lookup whose caller's deadline
// passed, or whose caller cancelled, is DEADLINE_EXCEEDED or CANCELLED,
// whether Redis answers or hangs; it is not an online store failure: not
// logged as a warning, not counted as a read error. Only the server's
// default deadline (the caller set none) passing before Redis answers is
// UNAVAILABLE, as an outage.
func TestGetOnlineFeaturesCallerGaveUp(t *testing.T) {
	silent := silentServer(t)
	past := func() (context.Context, context.CancelFunc) {
		return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	}
	cancelled := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx, cancel
	}
	soon := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 100*time.Millisecond)
	}
	none := func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }
	for _, c := range []struct {
		name, redis string
		ctx         func() (context.Context, context.CancelFunc)
		code        codes.Code
		failure     bool // an online store failure: warned and counted
	}{
		{"deadline passed, redis up", testenv.RedisAddr(t), past, codes.DeadlineExceeded, false},
		{"cancelled, redis up", testenv.RedisAddr(t), cancelled, codes.Canceled, false},
		{"deadline passes, redis silent", silent, soon, codes.DeadlineExceeded, false},
		{"default deadline passes, redis silent", silent, none, codes.Unavailable, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := redis.NewClient(&redis.Options{Addr: c.redis, ContextTimeoutEnabled: true, MaxRetries: -1})
			defer rc.Close()
			snaps := &staticSnapshots{}
			snaps.p.Store(loadSnapshot(t, 1, testDefs))
			reg, rec := prometheus.NewRegistry(), &logRecorder{}
			svc := NewOnlineService(snaps, online.New(rc, online.Options{}), OnlineOptions{Project: testenv.UniqueName(t, "gaveup"),
				DefaultDeadline: 300 * time.Millisecond, Metrics: NewMetrics(reg), Logger: slog.New(rec)})
			ctx, cancel := c.ctx()
			defer cancel()
			begin := time.Now()
			_, err := svc.GetOnlineFeatures(ctx, &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h"), Entities: []*pb.EntityKey{skey("c1")}})
			if status.Code(err) != c.code {
				t.Errorf("got %v, want %v", err, c.code)
			}
			if took := time.Since(begin); took > 2*time.Second {
				t.Errorf("took %v", took)
			}
			failures := 0
			if c.failure {
				failures = 1
			}
			if n := histogramCount(t, reg, "featurestore_serving_redis_duration_seconds", map[string]string{"result": "error"}); n != uint64(failures) {
				t.Errorf("online store read errors counted: %d, want %d", n, failures)
			}
			if n := histogramCount(t, reg, "featurestore_serving_redis_duration_seconds", map[string]string{"result": "canceled"}); n != uint64(1-failures) {
				t.Errorf("online store reads counted as canceled: %d, want %d", n, 1-failures)
			}
			warned := 0
			for _, l := range rec.matching("online store") {
				if l.level >= slog.LevelWarn {
					warned++
				}
			}
			if warned != failures {
				t.Errorf("online store warnings: %d, want %d: %v", warned, failures, rec.lines)
			}
		})
	}
}

// awaitHealth waits up to 10s until gRPC health on conn reports want for
// the whole server and for service.
func awaitHealth(t *testing.T, conn *grpc.ClientConn, service string, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	hc := healthpb.NewHealthClient(conn)
	var got healthpb.HealthCheckResponse_ServingStatus
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, s := range []string{"", service} {
			resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: s})
			if err != nil {
				t.Fatal(err)
			}
			if got = resp.GetStatus(); got != want {
				break
			}
		}
		if got == want {
			return
		}
	}
	t.Fatalf("health of %q %v, want %v", service, got, want)
}

// TestHealthFollowsReadiness: gRPC health says NOT_SERVING until a registry
// version is loaded, SERVING while Redis answers, NOT_SERVING once it does
// not (here its client is closed), as HTTP's /healthz does.
func TestHealthFollowsReadiness(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), ContextTimeoutEnabled: true})
	snaps := &staticSnapshots{}
	svc := NewOnlineService(snaps, online.New(rc, online.Options{}), OnlineOptions{Project: testenv.UniqueName(t, "health")})
	ping := func(ctx context.Context) error { return rc.Ping(ctx).Err() }
	conn := serveBufconn(t, func(ctx context.Context, ln net.Listener) error {
		return NewServer(svc, ServerConfig{Listener: ln, Ready: svc.Ready(ping), HealthInterval: 20 * time.Millisecond}).Run(ctx)
	})
	await := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		awaitHealth(t, conn, pb.OnlineService_ServiceDesc.ServiceName, want)
	}
	await(healthpb.HealthCheckResponse_NOT_SERVING) // no registry version yet
	snaps.p.Store(loadSnapshot(t, 1, testDefs))
	await(healthpb.HealthCheckResponse_SERVING)
	rc.Close()
	await(healthpb.HealthCheckResponse_NOT_SERVING)
}
