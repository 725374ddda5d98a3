package client_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/ingest"
	"github.com/featurestore/featurestore/registry"
	"github.com/featurestore/featurestore/serving"
)

// serverAddr is where the examples' server listens, as `featurestore serve`
// listens on 127.0.0.1:6566 by default.
var serverAddr string

// readTime is the examples' server clock, fixed so that their output is.
var readTime = time.Date(2026, 11, 26, 10, 30, 0, 0, time.UTC)

// TestMain runs the examples against a real server with the definitions of
// examples/ and a few card transactions, written by the real ingest path
// into the in-process Redis stand-in of dev mode, so the examples need no
// services.
func TestMain(m *testing.M) {
	stop, err := startExampleServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, "example server:", err)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	os.Exit(code)
}

type fixedSnapshot struct{ s *registry.Snapshot }

func (f fixedSnapshot) Current() *registry.Snapshot { return f.s }

type noDeadLetters struct{}

func (noDeadLetters) Send(context.Context, []ingest.DeadLetter) error { return nil }

func startExampleServer() (stop func(), err error) {
	mr, err := miniredis.Run()
	if err != nil {
		return nil, err
	}
	rc := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	r, err := registry.LoadDir("../../examples")
	if err != nil {
		return nil, err
	}
	const project = "default"
	a, err := ingest.NewApplier(project, r, r.Source("card_transactions"), online.New(rc, online.Options{}), ingest.NewPositions(rc, project), noDeadLetters{}, nil)
	if err != nil {
		return nil, err
	}
	var msgs []kafka.Message
	for i, e := range []struct {
		card, merchant, country string
		amount                  float64
		approved                bool
		at                      time.Duration // before readTime
	}{
		{"card-0001", "m-001", "FR", 12.5, true, 50 * time.Minute},
		{"card-0001", "m-002", "FR", 80, false, 25 * time.Minute},
		{"card-0002", "m-001", "DE", 31, true, 20 * time.Minute},
		{"card-0001", "m-001", "DE", 7.25, true, 4 * time.Minute},
	} {
		msgs = append(msgs, kafka.Message{Topic: "card_transactions", Offset: int64(i), Value: fmt.Appendf(nil,
			`{"txn_id":"t-%d","card_id":%q,"merchant_id":%q,"amount":%g,"currency":"EUR","country":%q,"channel":"online","approved":%t,"event_time":%q}`,
			i, e.card, e.merchant, e.amount, e.country, e.approved, readTime.Add(-e.at).Format(time.RFC3339))})
	}
	if err := a.Apply(context.Background(), "card_transactions", 0, msgs); err != nil {
		return nil, err
	}
	svc := serving.NewOnlineService(fixedSnapshot{&registry.Snapshot{VersionInfo: registry.VersionInfo{Version: 1}, Registry: r}},
		online.New(rc, online.Options{}), serving.OnlineOptions{Project: project, Now: func() time.Time { return readTime }})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	serverAddr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serving.NewServer(svc, serving.ServerConfig{Listener: ln}).Run(ctx) }()
	return func() {
		cancel()
		<-done
		rc.Close()
		mr.Close()
	}, nil
}
