package cmd

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/ingest"
	featurestorev1 "github.com/featurestore/featurestore/protos/featurestore/v1"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDev starts dev mode on free ports, checks that another command reaches
// its registry with plain flags, stops it, and starts it again on the same
// data directory.
func TestDev(t *testing.T) {
	dataDir := t.TempDir()
	for round := 1; round <= 2; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		var out, errOut syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- runContext(ctx, []string{"dev", "--data-dir", dataDir, "--definitions", "../../examples",
				"--kafka-listen", "127.0.0.1:0", "--redis-listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0", "--generate-rate", "200", "--log-level", "warn"}, &out, &errOut, envMap(nil))
		}()
		addrRE := regexp.MustCompile(`Redis \(in-process\):\s+(\S+)`)
		var redisAddr string
		for redisAddr == "" {
			select {
			case code := <-done:
				t.Fatalf("round %d: dev exited %d early\n%s%s", round, code, out.String(), errOut.String())
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				t.Fatalf("round %d: dev did not start\n%s%s", round, out.String(), errOut.String())
			}
			if m := addrRE.FindStringSubmatch(out.String()); m != nil {
				redisAddr = m[1]
			}
		}
		if !strings.Contains(out.String(), "version 1 of project \"default\"") || !strings.Contains(out.String(), "topics: 2") {
			t.Errorf("round %d: unexpected banner:\n%s", round, out.String())
		}
		// The hint to list versions reaches dev's Redis, not the default one.
		if !strings.Contains(out.String(), "featurestore versions --redis-addr "+redisAddr+"\n") {
			t.Errorf("round %d: the banner's versions hint lacks --redis-addr %s:\n%s", round, redisAddr, out.String())
		}
		code, vout, verr := runCLI(t, nil, "versions", "--redis-addr", redisAddr)
		if code != 0 || !strings.Contains(vout, "dev mode start") {
			t.Errorf("round %d: versions against dev mode: exit %d\n%s%s", round, code, vout, verr)
		}
		// Generated events flow through ingest into the in-process Redis.
		rc := redis.NewClient(&redis.Options{Addr: redisAddr})
		pos := ingest.NewPositions(rc, "default")
		deadline := time.Now().Add(30 * time.Second)
		for {
			n := int64(0)
			for p := range 3 {
				if got, ok, _ := pos.Load(ctx, "card_transactions", "card_transactions", p); ok {
					n += got.Offset + 1
				}
			}
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no generated event was ingested\n%s", round, errOut.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		rc.Close()
		// And lookups answer over gRPC.
		grpcAddr := regexp.MustCompile(`gRPC lookups:\s+(\S+)`).FindStringSubmatch(out.String())
		if grpcAddr == nil {
			t.Fatalf("round %d: no gRPC address in the banner:\n%s", round, out.String())
		}
		conn, err := grpc.NewClient(grpcAddr[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := featurestorev1.NewOnlineServiceClient(conn).GetOnlineFeatures(ctx, &featurestorev1.GetOnlineFeaturesRequest{
			Kind: &featurestorev1.GetOnlineFeaturesRequest_FeatureService{FeatureService: "fraud_detection_v1"},
			Entities: []*featurestorev1.EntityKey{{JoinKeys: map[string]*featurestorev1.Value{
				"card_id":     {Kind: &featurestorev1.Value_StringVal{StringVal: "card-0001"}},
				"merchant_id": {Kind: &featurestorev1.Value_StringVal{StringVal: "m-001"}},
			}}},
		})
		conn.Close()
		if err != nil || len(resp.GetResults()) != 1 || len(resp.GetResults()[0].GetValues()) != 10 {
			t.Fatalf("round %d: lookup against dev mode: %v", round, err)
		}
		// The same lookup over HTTP, as the banner's curl example sends it.
		curl := regexp.MustCompile(`curl -s -H 'Content-Type: application/json' -d '(.*)' (\S+)`).FindStringSubmatch(out.String())
		if curl == nil {
			t.Fatalf("round %d: no curl example in the banner:\n%s", round, out.String())
		}
		hresp, err := http.Post(curl[2], "application/json", strings.NewReader(curl[1]))
		if err != nil {
			t.Fatalf("round %d: HTTP lookup: %v", round, err)
		}
		body, _ := io.ReadAll(hresp.Body)
		hresp.Body.Close()
		var hres featurestorev1.GetOnlineFeaturesResponse
		if err := protojson.Unmarshal(body, &hres); hresp.StatusCode != http.StatusOK || err != nil || len(hres.GetResults()) != 1 || len(hres.GetResults()[0].GetValues()) != 10 {
			t.Fatalf("round %d: HTTP lookup against dev mode: %d %v\n%s", round, hresp.StatusCode, err, body)
		}
		// The banner's second example: the on-demand features.
		curls := regexp.MustCompile(`curl -s -H 'Content-Type: application/json' -d '(.*)' (\S+)`).FindAllStringSubmatch(out.String(), -1)
		if len(curls) != 2 {
			t.Fatalf("round %d: %d curl examples in the banner, want 2:\n%s", round, len(curls), out.String())
		}
		hresp, err = http.Post(curls[1][2], "application/json", strings.NewReader(curls[1][1]))
		if err != nil {
			t.Fatalf("round %d: HTTP lookup: %v", round, err)
		}
		body, _ = io.ReadAll(hresp.Body)
		hresp.Body.Close()
		if err := protojson.Unmarshal(body, &hres); hresp.StatusCode != http.StatusOK || err != nil || len(hres.GetResults()) != 1 || len(hres.GetResults()[0].GetValues()) != 4 {
			t.Fatalf("round %d: on-demand HTTP lookup against dev mode: %d %v\n%s", round, hresp.StatusCode, err, body)
		}
		if hresp, err := http.Get(strings.TrimSuffix(curl[2], "/v1/features:get") + "/healthz"); err != nil || hresp.StatusCode != http.StatusOK {
			t.Fatalf("round %d: /healthz of dev mode: %v %v", round, hresp, err)
		} else {
			hresp.Body.Close()
		}
		// And a training export over Flight.
		flightAddr := regexp.MustCompile(`Flight exports:\s+grpc://(\S+)`).FindStringSubmatch(out.String())
		if flightAddr == nil {
			t.Fatalf("round %d: no Flight address in the banner:\n%s", round, out.String())
		}
		// The first round's log has nothing committed yet (dev mode
		// commits it once a minute and when it stops): the export says
		// so, unless the command allows it; the second finds the commit
		// the first round's stop made.
		service := `{"feature_service": "fraud_detection_v1"}`
		if round == 1 {
			rows, err := flightExportOne(ctx, flightAddr[1], service)
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "nothing committed") {
				t.Fatalf("round 1: Flight export against dev mode before its log's first commit: %d rows, %v; want FailedPrecondition", rows, err)
			}
			service = `{"feature_service": "fraud_detection_v1", "allow_empty": true}`
		}
		if rows, err := flightExportOne(ctx, flightAddr[1], service); err != nil || rows != 1 {
			t.Fatalf("round %d: Flight export against dev mode: %d rows, %v", round, rows, err)
		}
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("round %d: dev exited %d on stop\n%s", round, code, errOut.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: dev did not stop", round)
		}
	}
}

// TestDevPortInUse: dev mode with its gRPC port taken fails at start with
// an error naming the listener, before it runs anything.
func TestDevPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut syncBuffer
	code := runContext(ctx, []string{"dev", "--data-dir", t.TempDir(), "--definitions", "../../examples",
		"--kafka-listen", "127.0.0.1:0", "--redis-listen", "127.0.0.1:0", "--metrics-addr", "", "--grpc-addr", busy.Addr().String(),
		"--http-addr", "", "--flight-addr", "", "--log-level", "warn"}, &out, &errOut, envMap(nil))
	if code == 0 || !strings.Contains(errOut.String(), "grpc listener") {
		t.Fatalf("dev on a port in use: exit %d\n%s%s", code, out.String(), errOut.String())
	}
}

// TestDevIngestFailureStops: when dev mode's ingest fails (here its
// offline log cannot be made: a file stands where its directory would be),
// dev stops and exits with the error, rather than serving lookups that no
// event will ever change under a banner that says ingest runs.
func TestDevIngestFailureStops(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut syncBuffer
	code := runContext(ctx, []string{"dev", "--data-dir", filepath.Join(dir, "data"), "--offline-dir", filepath.Join(blocker, "offline"),
		"--definitions", "../../examples", "--kafka-listen", "127.0.0.1:0", "--redis-listen", "127.0.0.1:0", "--metrics-addr", "",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "", "--flight-addr", "", "--generate-rate", "0", "--log-level", "warn"}, &out, &errOut, envMap(nil))
	if ctx.Err() != nil {
		t.Fatalf("dev kept running after its ingest failed\n%s%s", out.String(), errOut.String())
	}
	if code != 1 || !strings.Contains(errOut.String(), "ingest") || !strings.Contains(errOut.String(), "offline") {
		t.Fatalf("dev with an offline log it cannot make: exit %d, want 1 and an error naming ingest's offline log\n%s%s", code, out.String(), errOut.String())
	}
}

// TestDevNotLoopback: the dev stand-ins listen on loopback only; another
// address is a usage error (exit 2) naming its flag, before anything starts.
func TestDevNotLoopback(t *testing.T) {
	for _, flag := range []string{"--kafka-listen", "--redis-listen"} {
		code, out, errOut := runCLI(t, nil, "dev", "--data-dir", t.TempDir(), "--definitions", "../../examples", flag, "0.0.0.0:0")
		if code != 2 || !strings.Contains(errOut, flag) || !strings.Contains(errOut, "loopback") {
			t.Errorf("dev %s 0.0.0.0:0: exit %d, want 2 and an error naming the flag\n%s%s", flag, code, out, errOut)
		}
	}
}

// TestDevWithoutDefinitions: dev run outside the repository (its default
// --definitions is the repository's examples) says what to do.
func TestDevWithoutDefinitions(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "examples")
	code, out, errOut := runCLI(t, nil, "dev", "--data-dir", t.TempDir(), "--definitions", missing)
	if code != 2 || !strings.Contains(errOut, "give --definitions DIR") {
		t.Errorf("dev without definitions: exit %d, want 2 and a hint\n%s%s", code, out, errOut)
	}
}

// TestGenerateRate: dev's --generate-rate is kept on average, below 10
// per second too: the generator sent max(1, rate/10) every 100ms, so rates
// 1 to 9 gave 10 per second and 15 gave 10.
func TestGenerateRate(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "auditgen")
	testenv.CreateTopic(t, brokers, topic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	const rate = 1
	generateTransactions(ctx, brokers, topic, rate, slog.New(slog.NewTextHandler(io.Discard, nil)))
	conn, err := kafka.DialLeader(context.Background(), "tcp", brokers[0], topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n, err := conn.ReadLastOffset()
	if err != nil {
		t.Fatal(err)
	}
	if n > 3*rate+1 {
		t.Fatalf("--generate-rate %d for 3s produced %d events, want about %d", rate, n, 3*rate)
	}
}
