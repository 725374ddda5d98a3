package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// Client looks features up over gRPC: one connection to each address the
// server's name resolves to, lookups spread over them in turn. It is safe
// for concurrent use.
type Client struct {
	conn *grpc.ClientConn
	rpc  pb.OnlineServiceClient
}

// An Option configures Dial.
type Option func(*config)

type config struct {
	tls      *tls.Config
	tlsNil   bool // WithTLS(nil) was the last WithTLS
	token    string
	dialOpts []grpc.DialOption
}

// WithTLS makes the client connect over TLS with cfg: an empty config
// verifies the server against the system's roots; set RootCAs for a private
// CA and Certificates for mutual TLS. Without WithTLS the connection is
// plaintext. A nil cfg makes Dial fail, so that a config that was never set
// cannot quietly give a plaintext connection.
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) { c.tls, c.tlsNil = cfg, cfg == nil }
}

// WithBearerToken sends token with every call as the metadata
// "authorization: Bearer <token>". Tokens are sent over TLS only: with a
// plaintext connection, Dial fails. For tokens that change while the client
// runs, pass grpc.WithPerRPCCredentials through WithDialOptions instead; for
// a token chosen call by call, leave this option out and add the metadata to
// the call's context with metadata.AppendToOutgoingContext.
func WithBearerToken(token string) Option {
	return func(c *config) { c.token = token }
}

// WithDialOptions passes opts to grpc.NewClient after the client's own, so
// they win where they conflict (interceptors, keepalive, a resolver, other
// transport credentials).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOpts = append(c.dialOpts, opts...) }
}

// Dial returns a client of the server at addr (host:port, or any target
// grpc.NewClient accepts). It does no I/O: the connections are made on the
// first call, and made again after a failure. Lookups go to every address
// addr resolves to in turn, those failing with UNAVAILABLE are tried
// again (see serviceConfig), and idle connections are checked with a ping
// every 30 s, so that a server gone without a word is found out.
func Dial(addr string, opts ...Option) (*Client, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.tlsNil {
		return nil, fmt.Errorf("featurestore client for %s: WithTLS: nil tls.Config (use &tls.Config{} to verify the server against the system's roots, or leave WithTLS out for plaintext)", addr)
	}
	creds := insecure.NewCredentials()
	if cfg.tls != nil {
		creds = credentials.NewTLS(cfg.tls)
	}
	dopts := []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true})}
	if cfg.token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer("Bearer "+cfg.token)))
	}
	conn, err := grpc.NewClient(addr, append(dopts, cfg.dialOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("featurestore client for %s: %w", addr, err)
	}
	return &Client{conn: conn, rpc: pb.NewOnlineServiceClient(conn)}, nil
}

// serviceConfig is the client's gRPC service configuration:
//
//   - round_robin: every address the name resolves to (the replicas of a
//     headless Kubernetes service, say) gets a connection and its share
//     of the lookups; gRPC's default would send them all to the first.
//   - lookups failing with UNAVAILABLE (the server could not reach its
//     online store, had no registry version yet, or was shutting down; the
//     connection failed) are tried again, twice at most, after about 10 ms
//     and then about 40 ms (gRPC's backoff, with jitter), within the
//     caller's deadline: lookups only read,
//     so a retry is always safe. gRPC's retry throttling stops retrying
//     once more than about a tenth of the calls fail, so that an outage
//     is not multiplied by three.
//
// WithDialOptions(grpc.WithDefaultServiceConfig(...)) replaces it.
const serviceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [{"service": "featurestore.v1.OnlineService", "method": "GetOnlineFeatures"}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s", "backoffMultiplier": 4, "retryableStatusCodes": ["UNAVAILABLE"]}
  }],
  "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
}`

// Close closes the connection; calls in flight fail with codes.Canceled.
func (c *Client) Close() error { return c.conn.Close() }

// bearer is a token sent as the authorization metadata of every call,
// over TLS only.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// Selector names the features of a lookup; make one with Features or
// Service.
type Selector struct {
	service   string
	isService bool
	refs      []string
	request   map[string]any
}

// WithRequest returns sel with request values: the request fields that
// on-demand features compute with (the amount of the transaction being
// scored, say), by name, for every entity of the lookup. A value is a
// string, a bool, a float64 or float32, an integer type (which fits an
// int64), or nil for null. A name that no selected feature uses fails the
// lookup with InvalidArgument, as a missing one does.
func (sel Selector) WithRequest(values map[string]any) Selector {
	sel.request = values
	return sel
}

// Features selects features by reference, "feature_view:feature" (or
// "feature_view:*" for all of a view's features); the result's columns are
// in this order.
func Features(refs ...string) Selector { return Selector{refs: refs} }

// Service selects the features of the named feature service, in the order
// it declares them. An empty name makes Lookup fail with InvalidArgument
// before any call.
func Service(name string) Selector { return Selector{service: name, isService: true} }

// Lookup reads the features sel names for each entity, all at one read
// time, in one call. The result has one row per entity in the order given;
// an entity given twice is answered twice.
func (c *Client) Lookup(ctx context.Context, sel Selector, entities ...Entity) (*Result, error) {
	req := &pb.GetOnlineFeaturesRequest{Entities: make([]*pb.EntityKey, len(entities))}
	if len(entities) > 1 {
		// By columns, many entities cost far less to decode; one entity's
		// row is a little smaller and cheaper than its columns.
		req.Layout = pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS
	}
	if sel.isService {
		// Sent, an empty name would read as an empty feature list, and the
		// server would answer that no features were requested.
		if sel.service == "" {
			return nil, status.Error(codes.InvalidArgument, "empty feature service name")
		}
		req.Kind = &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: sel.service}
	} else {
		req.Kind = &pb.GetOnlineFeaturesRequest_Features{Features: &pb.FeatureList{Refs: sel.refs}}
	}
	var err error
	if req.RequestContext, err = requestContext(sel.request); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	for i, e := range entities {
		if e == nil {
			return nil, status.Errorf(codes.InvalidArgument, "entity %d: nil", i)
		}
		k, err := e.entityKey()
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "entity %d: %v", i, err)
		}
		// Every entity has a join key. Without values, the server could not
		// tell a Keys from a Key and would answer about positions.
		if len(k.GetJoinKeys()) == 0 && len(k.GetJoinKeyValues()) == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "entity %d: no join key values", i)
		}
		req.Entities[i] = k
	}
	resp, err := c.rpc.GetOnlineFeatures(ctx, req)
	if err != nil {
		return nil, err
	}
	return newResult(resp, len(entities))
}
