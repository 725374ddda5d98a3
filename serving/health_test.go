package serving

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// TestShutdownEndsHealthWatch: an open health Watch stream (client-side
// health checking keeps one per connection) does not hold a graceful
// shutdown for the whole ShutdownTimeout: the watcher is told NOT_SERVING,
// then its stream ends, and the server stops at once.
func TestShutdownEndsHealthWatch(t *testing.T) {
	ln := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- NewServer(pb.UnimplementedOnlineServiceServer{}, ServerConfig{Listener: ln, ShutdownTimeout: 10 * time.Second}).Run(ctx)
	}()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	watch, err := healthpb.NewHealthClient(conn).Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first status %v, %v; want SERVING", r.GetStatus(), err)
	}

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server still stopping after 5s, with a health watch open")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %v with a health watch open", d)
	}
	r, err := watch.Recv()
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("status at shutdown %v, %v; want NOT_SERVING", r.GetStatus(), err)
	}
	if r, err := watch.Recv(); err == nil {
		t.Fatalf("watch stream still open after shutdown: %v", r)
	}
}
