package serving

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// rawCodec sends a []byte as the message as it is, under the proto codec's
// name, so that a test can send a body that does not parse: the status it
// gets tells whether the server decoded the body before it authenticated
// the call.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *v.(*[]byte) = bytes.Clone(data); return nil }
func (rawCodec) Name() string                       { return "proto" }

// garbage is n bytes that do not parse as any protobuf message.
func garbage(n int) []byte { return bytes.Repeat([]byte{0xff}, n) }

// TestPreauthLookup: a lookup's credentials are checked before its body is
// read, so that a caller without them cannot make the server receive and
// decode up to the message limit per call; and that limit is the HTTP
// body's, which a request of DefaultMaxEntities entities fits with room to
// spare.
func TestPreauthLookup(t *testing.T) {
	f := newAuthFixture(t)
	const missing = "authentication required: send authorization: Bearer <token>, or a client certificate"
	for _, c := range []struct {
		name  string
		authz string
		cert  *certSpec
		body  int
		code  codes.Code
		msg   string // a part of the status message
	}{
		// Unauthenticated calls are refused whatever their body: one that
		// was decoded first would get INTERNAL, one that was read first and
		// is over the limit RESOURCE_EXHAUSTED.
		{name: "no credentials", body: 3 << 20, code: codes.Unauthenticated, msg: missing},
		{name: "no credentials, over the limit", body: DefaultMaxRecvMsgSize + 1, code: codes.Unauthenticated, msg: missing},
		{name: "unknown token", authz: "Bearer tok-nobody", body: 3 << 20, code: codes.Unauthenticated, msg: "invalid credentials"},
		{name: "certificate of no principal", cert: &certSpec{cn: "stranger"}, body: 3 << 20, code: codes.Unauthenticated,
			msg: "the client certificate identifies no principal"},
		// Authenticated calls get their body decoded, by token or by
		// certificate alike, up to the message limit.
		{name: "valid token", authz: "Bearer tok-nogrants", body: 3 << 20, code: codes.Internal, msg: "unmarshal"},
		{name: "certificate of a principal", cert: &certSpec{cn: "pairs"}, body: 3 << 20, code: codes.Internal, msg: "unmarshal"},
		{name: "valid token, over the limit", authz: "Bearer tok-admin", body: DefaultMaxRecvMsgSize + 1, code: codes.ResourceExhausted,
			msg: "larger than max"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if c.authz != "" {
				ctx = withAuthorization(ctx, c.authz)
			}
			var resp []byte
			err := f.conn(t, c.cert).Invoke(ctx, pb.OnlineService_GetOnlineFeatures_FullMethodName, garbage(c.body), &resp, grpc.ForceCodec(rawCodec{}))
			if st := status.Convert(err); st.Code() != c.code || !strings.Contains(st.Message(), c.msg) {
				t.Errorf("got %v %q, want %v %q", st.Code(), st.Message(), c.code, c.msg)
			}
		})
	}

	t.Run("a full request with a valid token", func(t *testing.T) {
		req := &pb.GetOnlineFeaturesRequest{Kind: refs("card_txn:n_1h", "pair_txn:*")}
		for i := range DefaultMaxEntities {
			req.Entities = append(req.Entities, &pb.EntityKey{JoinKeys: map[string]*pb.Value{
				"card_id": sval(fmt.Sprintf("card-%040d", i)), "user_id": sval(fmt.Sprintf("user-%040d", i)), "merchant_id": ival(int64(i)),
			}})
		}
		if n := proto.Size(req); n > DefaultMaxRecvMsgSize/16 {
			t.Errorf("%d entities of composite keys take %d bytes, too close to the limit of %d", DefaultMaxEntities, n, DefaultMaxRecvMsgSize)
		}
		ctx, cancel := context.WithTimeout(withAuthorization(context.Background(), "Bearer tok-admin"), 5*time.Second)
		defer cancel()
		resp, err := pb.NewOnlineServiceClient(f.conn(t, nil)).GetOnlineFeatures(ctx, req)
		if err != nil || len(resp.GetResults()) != DefaultMaxEntities {
			t.Errorf("got %d results, %v; want %d", len(resp.GetResults()), err, DefaultMaxEntities)
		}
	})

	t.Run("health is open", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(f.conn(t, nil)).Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health: %v %v", resp, err)
		}
	})
}

// exchangeRaw opens a DoExchange call on conn, sends msg as its first
// message, and returns the call's status.
func exchangeRaw(t *testing.T, conn *grpc.ClientConn, authz string, msg []byte) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if authz != "" {
		ctx = withAuthorization(ctx, authz)
	}
	desc := &grpc.StreamDesc{StreamName: "DoExchange", ClientStreams: true, ServerStreams: true}
	stream, err := conn.NewStream(ctx, desc, flightExchangeMethod, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	// A message the server refused before reading it ends in io.EOF; the
	// status comes with RecvMsg.
	if err := stream.SendMsg(msg); err != nil && err != io.EOF {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	var resp []byte
	for {
		if err := stream.RecvMsg(&resp); err != nil {
			return err
		}
	}
}

// TestPreauthFlight: the Flight server authenticates a call before it reads
// any message of it, bounds one message far below the upload's bound, and
// bounds the calls of one connection.
func TestPreauthFlight(t *testing.T) {
	f := newFlightFixture(t)
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	replaceFile(t, policyFile, []byte(authPolicy(f.project)))
	auth, err := NewAuth(AuthOptions{PolicyFile: policyFile, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	addr := f.serve(t, FlightConfig{Auth: auth, UploadIdleTimeout: testIdleTimeout})
	conn := dial(t, addr, insecure.NewCredentials())

	// One message over the bound, refused before it is read, whether the
	// caller may export anything or not; without credentials, refused
	// before that.
	big := garbage(flightMaxMessageBytes + 1)
	for _, c := range []struct {
		name, authz string
		code        codes.Code
		msg         string
	}{
		{name: "no credentials", code: codes.Unauthenticated, msg: "authentication required"},
		{name: "unknown token", authz: "Bearer tok-nobody", code: codes.Unauthenticated, msg: "invalid credentials"},
		{name: "a principal without grants", authz: "Bearer tok-nogrants", code: codes.ResourceExhausted, msg: "larger than max"},
		{name: "a principal granted everything", authz: "Bearer tok-admin", code: codes.ResourceExhausted, msg: "larger than max"},
	} {
		t.Run("oversized message, "+c.name, func(t *testing.T) {
			err := exchangeRaw(t, conn, c.authz, big)
			if st := status.Convert(err); st.Code() != c.code || !strings.Contains(st.Message(), c.msg) {
				t.Errorf("got %v %q, want %v %q", st.Code(), st.Message(), c.code, c.msg)
			}
		})
	}

	t.Run("streams of one connection", func(t *testing.T) {
		// Health is open, so anyone can open watches: a connection holds
		// at most flightMaxConcurrentStreams calls, and one more waits.
		conn := dial(t, addr, insecure.NewCredentials())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		hc := healthpb.NewHealthClient(conn)
		for i := range flightMaxConcurrentStreams {
			w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err == nil {
				_, err = w.Recv()
			}
			if err != nil {
				t.Fatalf("watch %d: %v", i, err)
			}
		}
		wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer wcancel()
		w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("watch %d on one connection: %v, want it held until its deadline", flightMaxConcurrentStreams+1, err)
		}
	})
}
