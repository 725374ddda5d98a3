package serving

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/featurestore/featurestore/featurestore/testenv"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// countPipelines counts, per node, the pipelines and single commands a
// cluster client sends for the caller (not its topology refreshes).
type countPipelines struct {
	mu   *sync.Mutex
	n    map[string]int
	addr string
}

func (h *countPipelines) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch cmd.Name() {
		case "cluster", "command", "hello", "client":
			return next(ctx, cmd) // the client's own topology and handshake
		}
		h.mu.Lock()
		h.n[h.addr]++
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}
func (h *countPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		switch cmds[0].Name() {
		case "hello", "client", "auth", "select":
			return next(ctx, cmds) // a new connection's handshake
		}
		h.mu.Lock()
		h.n[h.addr]++
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

// TestGetOnlineFeaturesRedisCluster serves, from a real three-node Redis
// Cluster written by the real ingest applier, the same requests as from
// standalone Redis: every response equals the standalone one (itself checked
// against fixed values in TestGetOnlineFeatures), and a request reaches each
// node at most once.
func TestGetOnlineFeaturesRedisCluster(t *testing.T) {
	addrs := testenv.RedisCluster(t, 3)
	rc := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rc.Close() })
	cc, ok := rc.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("UniversalClient for %d addresses is a %T, want a cluster client", len(addrs), rc)
	}
	var mu sync.Mutex
	calls := map[string]int{}
	cc.OnNewNode(func(n *redis.Client) {
		n.AddHook(&countPipelines{mu: &mu, n: calls, addr: n.Options().Addr})
	})

	cluster := newFixtureOn(t, rc, OnlineOptions{})
	standalone := newFixture(t, OnlineOptions{})

	named := func(card, user string, merchant int64) *pb.EntityKey {
		return &pb.EntityKey{JoinKeys: map[string]*pb.Value{"card_id": sval(card), "user_id": sval(user), "merchant_id": ival(merchant)}}
	}
	var many []*pb.EntityKey
	for i := range 200 {
		many = append(many, skey(fmt.Sprintf("c%d", i%5)))
	}
	for _, c := range []struct {
		name string
		now  time.Duration
		req  *pb.GetOnlineFeaturesRequest
	}{
		{"statuses", 21 * time.Minute, &pb.GetOnlineFeaturesRequest{Kind: refs(cardTxnAll...),
			Entities: []*pb.EntityKey{skey("c2"), skey("nobody"), skey("c1"), skey("c2")}}},
		{"expired and decayed", 65*time.Minute + 30*time.Second, &pb.GetOnlineFeaturesRequest{Kind: refs(cardTxnAll...),
			Entities: []*pb.EntityKey{skey("c1"), skey("c2")}}},
		{"feature service", 21 * time.Minute, &pb.GetOnlineFeaturesRequest{
			Kind: &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: "fraud"}, Entities: []*pb.EntityKey{skey("c1"), skey("c2")}}},
		{"two entities", 21 * time.Minute, &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h", "card_txn:last_amount", "pair_txn:*"),
			Entities: []*pb.EntityKey{named("c1", "u1", 42), named("c2", "u1", 43), named("c9", "u2", 42)}}},
		{"many entities", 21 * time.Minute, &pb.GetOnlineFeaturesRequest{Kind: refs(cardTxnAll...), Entities: many}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cluster.clock.set(c.now)
			standalone.clock.set(c.now)
			mu.Lock()
			clear(calls)
			mu.Unlock()
			got := get(t, cluster.client, c.req)
			mu.Lock()
			for node, n := range calls {
				if n != 1 {
					t.Errorf("node %s got %d round trips for one request, want 1", node, n)
				}
			}
			mu.Unlock()
			want := get(t, standalone.client, c.req)
			// The project names differ; everything else must not.
			if !proto.Equal(got, want) {
				t.Errorf("cluster response differs from standalone:\n got %v\nwant %v", got, want)
			}
			if len(got.GetResults()) != len(c.req.GetEntities()) {
				t.Errorf("%d results for %d entities", len(got.GetResults()), len(c.req.GetEntities()))
			}
		})
	}
}
