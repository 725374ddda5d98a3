package client_test

import (
	"context"
	"crypto/tls"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/featurestore/featurestore/serving/client"
)

// TestDialTLS checks that WithTLS(nil) is an error instead of a plaintext
// connection, and that a real config, given last, is still accepted.
func TestDialTLS(t *testing.T) {
	tests := []struct {
		name    string
		opts    []client.Option
		wantErr string // empty: Dial succeeds
	}{
		{"nil config", []client.Option{client.WithTLS(nil)}, "WithTLS: nil tls.Config"},
		{"nil config with token", []client.Option{client.WithTLS(nil), client.WithBearerToken("t")}, "WithTLS: nil tls.Config"},
		{"empty config", []client.Option{client.WithTLS(&tls.Config{})}, ""},
		{"nil then config", []client.Option{client.WithTLS(nil), client.WithTLS(&tls.Config{})}, ""},
		{"token over plaintext", []client.Option{client.WithBearerToken("t")}, "credentials require transport level security"},
		{"plaintext", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := client.Dial("127.0.0.1:1", tt.opts...)
			if err == nil {
				defer c.Close()
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Dial: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Dial succeeded, want an error with %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Dial: %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}

// TestLookupRejectsBeforeCall checks that requests the server could only
// answer with a misleading message fail in the client, with InvalidArgument
// and a message naming the problem, and that no call is made.
func TestLookupRejectsBeforeCall(t *testing.T) {
	tests := []struct {
		name     string
		sel      client.Selector
		entities []client.Entity
		wantMsg  string
	}{
		{"empty service", client.Service(""), []client.Entity{client.Keys{"card_id": "card-0001"}}, "empty feature service name"},
		{"nil keys", client.Service("fraud_detection_v1"), []client.Entity{client.Keys(nil)}, "entity 0: no join key values"},
		{"empty keys", client.Service("fraud_detection_v1"), []client.Entity{client.Keys{"card_id": "c", "merchant_id": "m"}, client.Keys{}}, "entity 1: no join key values"},
		{"nil key", client.Features("card_txn:txn_count_1h"), []client.Entity{client.Key(nil)}, "entity 0: no join key values"},
		{"empty key", client.Features("card_txn:txn_count_1h"), []client.Entity{client.Key{"c"}, client.Key{}}, "entity 1: no join key values"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				calls++
				return invoker(ctx, method, req, reply, cc, opts...)
			}
			c, err := client.Dial(serverAddr, client.WithDialOptions(grpc.WithUnaryInterceptor(count)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.Lookup(context.Background(), tt.sel, tt.entities...)
			if calls != 0 {
				t.Errorf("made %d calls, want none", calls)
			}
			if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != tt.wantMsg {
				t.Errorf("got %v %q, want InvalidArgument %q", status.Code(err), status.Convert(err).Message(), tt.wantMsg)
			}
		})
	}
}

// TestLookupStillCalls checks the valid neighbours of the rejected requests
// against the example server, so that the checks reject no more than they
// should.
func TestLookupStillCalls(t *testing.T) {
	c, err := client.Dial(serverAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tt := range []struct {
		sel client.Selector
		ent client.Entity
	}{
		{client.Service("fraud_detection_v1"), client.Keys{"card_id": "card-0001", "merchant_id": "m-001"}},
		{client.Features("card_txn:txn_count_1h"), client.Key{"card-0001"}},
		{client.Features("card_txn:txn_count_1h"), client.Keys{"card_id": "card-0001"}},
	} {
		res, err := c.Lookup(context.Background(), tt.sel, tt.ent)
		if err != nil {
			t.Fatalf("Lookup(%v): %v", tt.ent, err)
		}
		if res.Len() != 1 {
			t.Fatalf("Lookup(%v): %d rows, want 1", tt.ent, res.Len())
		}
	}
}

// amount and bigID are named integer types, as applications define them.
type (
	amount int64
	bigID  uint64
)

// TestNamedIntegerValues checks that named integer types (amount,
// time.Duration) are integers, as documented ("an integer type"), both as
// request values and as join keys, and not refused by the client: the
// request values are answered; an integer join key of the example's string
// card_id reaches the server, which names its type. A named unsigned one
// beyond int64 is refused before any call.
func TestNamedIntegerValues(t *testing.T) {
	c, err := client.Dial(serverAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, v := range []any{int64(500), amount(500), time.Duration(500), bigID(500)} {
		sel := client.Features("txn_risk:amount_over_card_max_1d").WithRequest(map[string]any{"amount": v})
		if _, err := c.Lookup(ctx, sel, client.Keys{"card_id": "card-0001", "merchant_id": "m-001"}); err != nil {
			t.Errorf("request value %T(%v): %v", v, v, err)
		}
	}
	for _, tc := range []struct {
		key  any
		want string
	}{
		{amount(42), `entity 0: join key "card_id" (position 0) of entity "card": want a string value, got int64`},
		{time.Duration(42), `entity 0: join key "card_id" (position 0) of entity "card": want a string value, got int64`},
		{bigID(42), `entity 0: join key "card_id" (position 0) of entity "card": want a string value, got int64`},
		{bigID(math.MaxUint64), "entity 0: join key value at position 0: 18446744073709551615 does not fit an int64"},
		{1.5, "entity 0: join key value at position 0: a float64; join keys are strings or integers"},
	} {
		_, err := c.Lookup(ctx, client.Features("card_txn:txn_count_1h"), client.Key{tc.key})
		if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != tc.want {
			t.Errorf("join key %T(%v): %v, want InvalidArgument %q", tc.key, tc.key, err, tc.want)
		}
	}
}
