package serving

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// benchService returns the service the handler benchmarks look up: the
// tests' definitions, 1,000 events of 100 cards over 17 minutes written
// through the ingest applier into the real Redis (RESP2, as featurestore
// serve's client), read at minute 20, with the metrics on as featurestore
// serve has them.
func benchService(b *testing.B) *OnlineService {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(b), ContextTimeoutEnabled: true, Protocol: 2})
	b.Cleanup(func() { rc.Close() })
	project := testenv.UniqueName(b, "serving")
	snap := loadSnapshot(b, 1, testDefs)
	var events []string
	for i := range 1000 {
		events = append(events, fmt.Sprintf(`{"card":"c%d","ts":%d,"amount":%d,"merchant":"m%d"}`, i%100, at(time.Duration(i)*time.Second), i+1, i%7))
	}
	ingestEvents(b, rc, project, snap.Registry, "txns", events)
	snaps := &staticSnapshots{}
	snaps.p.Store(snap)
	return NewOnlineService(snaps, online.New(rc, online.Options{}), OnlineOptions{Project: project, Now: newClock(20 * time.Minute).now, Metrics: NewMetrics(prometheus.NewRegistry())})
}

// BenchmarkGetOnlineFeatures measures the handler against real Redis: 10
// features from 2 views, for 1 and for 100 entities (benchService), each
// response encoded into a reused buffer as gRPC's codec does.
func BenchmarkGetOnlineFeatures(b *testing.B) {
	svc := benchService(b)
	features := refs(append(append([]string{}, cardTxnAll...), "card_more:mean_1h", "card_more:n_10m", "card_more:merchants", "card_more:n_5m")...)
	for _, layout := range []pb.ResponseLayout{pb.ResponseLayout_RESPONSE_LAYOUT_ROWS, pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS} {
		for _, n := range []int{1, 100} {
			name := fmt.Sprintf("layout=%s/entities=%d", strings.ToLower(strings.TrimPrefix(layout.String(), "RESPONSE_LAYOUT_")), n)
			req := &pb.GetOnlineFeaturesRequest{Kind: features, Layout: layout}
			for i := range n {
				req.Entities = append(req.Entities, skey(fmt.Sprintf("c%d", i)))
			}
			var buf []byte
			b.Run(name, func(b *testing.B) {
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					resp, err := svc.GetOnlineFeatures(ctx, req)
					if err != nil {
						b.Fatal(err)
					}
					if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf[:0], resp); err != nil {
						b.Fatal(err)
					}
				}
				var got pb.GetOnlineFeaturesResponse
				err := proto.Unmarshal(buf, &got)
				ok := len(got.Results) == n && len(got.Results[0].GetValues()) == 10
				if layout == pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS {
					ok = len(got.Columns) == 10 && len(got.Columns[0].GetStatuses()) == n
				}
				if err != nil || !ok {
					b.Fatalf("response of %d bytes: %v", len(buf), err)
				}
				b.ReportMetric(float64(len(buf)), "resp-B")
			})
			// What a Go client pays to decode the response with the
			// generated code.
			b.Run(name+"/decode", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					var got pb.GetOnlineFeaturesResponse
					if err := proto.Unmarshal(buf, &got); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkOnDemand measures what on-demand features add to a lookup: the
// 5 features of txn_risk against a lookup of the 4 stored features they
// read, for 1 entity (by rows) and 100 (by columns) (benchService).
func BenchmarkOnDemand(b *testing.B) {
	svc := benchService(b)
	ctx := map[string]*pb.Value{"amount": dval(125), "merchant": sval("m3")}
	for _, c := range []struct {
		name string
		kind *pb.GetOnlineFeaturesRequest_Features
		ctx  map[string]*pb.Value
	}{
		{"stored inputs", refs("card_txn:sum_10m", "card_txn:last_amount", "card_txn:last_merchant", "card_more:mean_1h"), nil},
		{"on-demand", refs("txn_risk:*"), ctx},
	} {
		for _, n := range []int{1, 100} {
			layout := pb.ResponseLayout_RESPONSE_LAYOUT_ROWS
			if n > 1 {
				layout = pb.ResponseLayout_RESPONSE_LAYOUT_COLUMNS
			}
			req := &pb.GetOnlineFeaturesRequest{Kind: c.kind, Layout: layout, RequestContext: c.ctx}
			for i := range n {
				req.Entities = append(req.Entities, skey(fmt.Sprintf("c%d", i)))
			}
			b.Run(fmt.Sprintf("%s/entities=%d", c.name, n), func(b *testing.B) {
				b.ReportAllocs()
				var buf []byte
				for b.Loop() {
					resp, err := svc.GetOnlineFeatures(context.Background(), req)
					if err != nil {
						b.Fatal(err)
					}
					if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf[:0], resp); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
