package client_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
	"github.com/featurestore/featurestore/serving/client"
)

// replica is a server in front of the example server: it fails its next
// fail calls with UNAVAILABLE, as a server whose online store is
// unreachable does, and passes the others on.
type replica struct {
	pb.UnimplementedOnlineServiceServer
	next  pb.OnlineServiceClient
	fail  atomic.Int32
	calls atomic.Int32
	addr  string
}

func (r *replica) GetOnlineFeatures(ctx context.Context, req *pb.GetOnlineFeaturesRequest) (*pb.GetOnlineFeaturesResponse, error) {
	r.calls.Add(1)
	if r.fail.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "online store unreachable")
	}
	return r.next.GetOnlineFeatures(ctx, req)
}

// startReplica serves a replica on loopback until the test ends.
func startReplica(t *testing.T) *replica {
	t.Helper()
	conn, err := grpc.NewClient(serverAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{next: pb.NewOnlineServiceClient(conn), addr: ln.Addr().String()}
	gs := grpc.NewServer()
	pb.RegisterOnlineServiceServer(gs, r)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return r
}

// TestLookupRetriesUnavailable checks that a lookup failing with
// UNAVAILABLE is tried again, twice at most: a server that fails once or
// twice answers the lookup, one that keeps failing fails it after three
// tries.
func TestLookupRetriesUnavailable(t *testing.T) {
	r := startReplica(t)
	c, err := client.Dial(r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lookup := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := c.Lookup(ctx, client.Features("card_txn:txn_count_1h"), client.Key{"card-0001"})
		if err == nil {
			if n, ok := res.Get(0, "card_txn:txn_count_1h").Int64Val(); !ok || n != 3 {
				t.Errorf("txn_count_1h = %d, %v; want 3", n, ok)
			}
		}
		return err
	}
	for _, tt := range []struct {
		fail  int32
		calls int32
		code  codes.Code
	}{{0, 1, codes.OK}, {1, 2, codes.OK}, {2, 3, codes.OK}, {3, 3, codes.Unavailable}} {
		r.fail.Store(tt.fail)
		r.calls.Store(0)
		if err := lookup(); status.Code(err) != tt.code || r.calls.Load() != tt.calls {
			t.Errorf("server failing %d times: %v after %d calls, want %v after %d", tt.fail, err, r.calls.Load(), tt.code, tt.calls)
		}
		for range 20 {
			lookup() // successes earn back the retry tokens the failures cost
		}
	}
}

// TestLookupsSpreadOverReplicas checks that a name resolving to several
// servers gets its lookups spread over all of them, not sent to the first.
func TestLookupsSpreadOverReplicas(t *testing.T) {
	a, b := startReplica(t), startReplica(t)
	res := manual.NewBuilderWithScheme("replicas")
	res.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: a.addr}, {Addr: b.addr}}})
	c, err := client.Dial(res.Scheme()+":///featurestore", client.WithDialOptions(grpc.WithResolvers(res)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 40 {
		if _, err := c.Lookup(context.Background(), client.Features("card_txn:txn_count_1h"), client.Key{"card-0001"}); err != nil {
			t.Fatal(err)
		}
	}
	if na, nb := a.calls.Load(), b.calls.Load(); na < 10 || nb < 10 {
		t.Errorf("lookups per replica: %d and %d, want them spread", na, nb)
	}
}
