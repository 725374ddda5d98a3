package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/ingest"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
	"github.com/featurestore/featurestore/registry"
	"github.com/featurestore/featurestore/serving"
)

type fixedSnapshot struct{ s *registry.Snapshot }

func (f fixedSnapshot) Current() *registry.Snapshot { return f.s }

// TestKafkaIngestOnlineEqualsExport is the consistency proof through the
// real path: events are produced to a real Kafka topic (three partitions,
// out of order within the allowed lateness, some late beyond it, some
// malformed) and consumed by ingest's consumer group into a real Redis and
// an offline log, with the ingest process dying once half-way (its log
// buffers lost) and a new one resuming. The events come in stages separated
// by quiet gaps; after each stage has been ingested, random entities are
// looked up through serving.OnlineService, its clock set to random times
// between the stage's last event and the next stage's first: Redis then
// holds every event up to that time and none after it, so the lookup is
// what serving would have answered then. Finally 'featurestore export'
// computes the same (entity, time) rows from the offline log: every value
// must equal the online one and every null stand where the online status
// is not present. The lookups ask for on-demand features too (feature
// service with_risk), with request values that the entity table then
// carries as columns. The offline log is in a directory, then in an S3 bucket
// (the test S3 server), then in GCS and Azure buckets (the emulators).
func TestKafkaIngestOnlineEqualsExport(t *testing.T) {
	for _, where := range []string{"dir", "s3", "gs", "azblob"} {
		t.Run(where, func(t *testing.T) { testKafkaIngestOnlineEqualsExport(t, where) })
	}
}

func testKafkaIngestOnlineEqualsExport(t *testing.T, where string) {
	brokers := testenv.KafkaBrokers(t)
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), ContextTimeoutEnabled: true})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	project := strings.NewReplacer("/", "-", ".", "-").Replace(testenv.UniqueName(t, "kexport"))
	topic := testenv.UniqueName(t, "txns")
	testenv.CreateTopic(t, brokers, topic, 3)
	defsText := strings.NewReplacer("kafka: {topic: txns}", "kafka: {topic: "+topic+"}", "allowed_lateness: 0s", "allowed_lateness: 1m").Replace(consistencyDefs)
	defs := filepath.Join(dir, "defs")
	if err := os.MkdirAll(defs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(defs, "defs.yaml"), []byte(defsText), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"FEATURESTORE_REGISTRY": "file:" + filepath.Join(dir, "registry"), "FEATURESTORE_PROJECT": project}
	if code, out, errOut := runCLI(t, env, "apply", "--message", "consistency", defs); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(defsText)})
	if err != nil {
		t.Fatal(err)
	}
	src := r.Source("txns")
	store := online.New(rc, online.Options{})
	positions := ingest.NewPositions(rc, project)
	logDir := offlineLocation(t, where, dir)
	st, closeSt, err := offline.Open(ctx, logDir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSt()

	// Stages of six minutes of events, twelve minutes apart.
	const (
		t0      = 1_795_687_200_000
		stages  = 8
		perStep = 600
		minute  = 60_000
	)
	rng := rand.New(rand.NewPCG(21, 21))
	users := []string{"u0", "u1", "007", "u{:*}", "u4"}
	base := func(k int) int64 { return t0 + int64(k)*12*minute }
	type event struct {
		time      int64
		partition int
		payload   []byte
		late, bad bool
	}
	stageEvents := make([][]event, stages)
	maxTime := make([]int64, stages) // the latest event time of each stage
	newest := map[int]int64{}        // per partition, the newest time produced
	for k := range stages {
		for i := range perStep {
			// In time order, give or take up to 50s (within the lateness).
			ts := base(k) + int64(i)*6*minute/perStep + rng.Int64N(50)*1000 - 50_000
			ts = max(ts, base(k))
			e := event{time: ts, partition: rng.IntN(3)}
			if nw, ok := newest[e.partition]; ok && rng.IntN(40) == 0 {
				e.time, e.late = nw-10*minute, true // beyond the lateness: rejected
			}
			m := map[string]any{"ts": e.time, "user_id": users[rng.IntN(len(users))], "shop_id": rng.Int64N(4) - 1,
				"bank": []string{"b0", "b1"}[rng.IntN(2)], "account_no": rng.Int64N(2)}
			if rng.IntN(8) > 0 {
				m["amount"] = float64(rng.IntN(100_000))/100 + 0.25
			}
			if rng.IntN(8) > 0 {
				m["qty"] = rng.Int64N(10) - 2
			}
			if rng.IntN(6) > 0 {
				m["cat"] = []string{"a", "b", "c", "d"}[rng.IntN(4)]
			}
			if rng.IntN(5) > 0 {
				m["ok"] = rng.IntN(2) == 0
			}
			if e.payload, err = json.Marshal(m); err != nil {
				t.Fatal(err)
			}
			if rng.IntN(100) == 0 {
				e.payload, e.bad = e.payload[:len(e.payload)/2], true
			}
			if !e.late && !e.bad {
				maxTime[k] = max(maxTime[k], e.time)
				newest[e.partition] = max(newest[e.partition], e.time)
			}
			stageEvents[k] = append(stageEvents[k], e)
		}
	}

	// Ingest, as featurestore ingest runs it: one consumer group, an
	// applier per process, the offline log.
	cfg := ingest.GroupConfig{Brokers: brokers, GroupID: topic, Topic: topic, BatchSize: 50, SessionTimeout: 6 * time.Second}
	type process struct {
		w    *offline.Writer
		stop func()
	}
	startIngest := func(crash bool) process {
		w, err := offline.OpenWriter(ctx, st, project, offline.Options{FlushRows: 400})
		if err != nil {
			t.Fatal(err)
		}
		a, err := ingest.NewApplier(project, r, src, store, positions, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.SetOffline(w, r); err != nil {
			t.Fatal(err)
		}
		gctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		var h ingest.PartitionHandler = a
		if crash {
			// Only Resume and Apply: its stop releases nothing, as a
			// process killed would not.
			h = struct{ ingest.PartitionHandler }{a}
		}
		go func() { done <- ingest.RunGroup(gctx, cfg, h) }()
		return process{w: w, stop: func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("RunGroup: %v", err)
			}
		}}
	}
	applied := func() int64 {
		var n int64
		for p := range 3 {
			if pos, ok, _ := positions.Load(ctx, src.Name, topic, p); ok {
				n += pos.Offset + 1
			}
		}
		return n
	}

	var clock atomic.Int64
	svc := serving.NewOnlineService(fixedSnapshot{&registry.Snapshot{VersionInfo: registry.VersionInfo{Version: 1}, Registry: r}}, store,
		serving.OnlineOptions{Project: project, Now: func() time.Time { return time.UnixMilli(clock.Load()) }})

	type row struct {
		user    string
		shop    int64
		bank    string
		account int64
		t       int64
		price   float64 // request fields of the on-demand features
		tag     string
	}
	var rows []row
	var want [][]any
	var names []string
	kw := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: time.Millisecond,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return int(m.Key[0] - '0') })}
	defer kw.Close()
	proc := startIngest(true)
	produced := int64(0)
	for k := range stages {
		msgs := make([]kafka.Message, len(stageEvents[k]))
		for i, e := range stageEvents[k] {
			msgs[i] = kafka.Message{Key: []byte{byte('0' + e.partition)}, Value: e.payload}
		}
		if err := kw.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		produced += int64(len(msgs))
		deadline := time.Now().Add(90 * time.Second)
		for applied() < produced {
			if time.Now().After(deadline) {
				t.Fatalf("stage %d: ingest applied %d of %d events", k, applied(), produced)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if k == stages/2 {
			// The process dies: its log buffers are lost, Redis is ahead.
			proc.stop()
			proc = startIngest(false)
		}
		// Lookups at times after this stage's events and before the next's.
		end := base(k+1) - 1
		if k == stages-1 {
			end = maxTime[k] + 20*minute
		}
		for range 125 {
			ts := maxTime[k] + rng.Int64N(end-maxTime[k]+1)
			rw := row{user: append(users, "none")[rng.IntN(len(users)+1)], shop: rng.Int64N(5) - 1,
				bank: []string{"b0", "b1"}[rng.IntN(2)], account: rng.Int64N(3), t: ts,
				price: float64(rng.IntN(5000)) / 100, tag: []string{"a", "b", "c", "dd"}[rng.IntN(4)]} // not "": an empty CSV field is null
			clock.Store(ts)
			resp, err := svc.GetOnlineFeatures(ctx, &pb.GetOnlineFeaturesRequest{
				Kind: &pb.GetOnlineFeaturesRequest_FeatureService{FeatureService: "with_risk"},
				Entities: []*pb.EntityKey{{JoinKeys: map[string]*pb.Value{
					"user_id":    {Kind: &pb.Value_StringVal{StringVal: rw.user}},
					"shop_id":    {Kind: &pb.Value_Int64Val{Int64Val: rw.shop}},
					"bank":       {Kind: &pb.Value_StringVal{StringVal: rw.bank}},
					"account_no": {Kind: &pb.Value_Int64Val{Int64Val: rw.account}},
				}}},
				RequestContext: map[string]*pb.Value{
					"price": {Kind: &pb.Value_DoubleVal{DoubleVal: rw.price}},
					"tag":   {Kind: &pb.Value_StringVal{StringVal: rw.tag}},
				},
			})
			dec := fromWire(t, resp, err)
			if dec.GetReadTime().AsTime().UnixMilli() != ts {
				t.Fatalf("read time %v, want %d", dec.GetReadTime().AsTime(), ts)
			}
			names = dec.GetFeatureNames()
			var cells []any
			for _, fv := range dec.GetResults()[0].GetValues() {
				cells = append(cells, pbCell(fv))
			}
			rows, want = append(rows, rw), append(want, cells)
		}
	}
	proc.stop()
	if err := proc.w.Close(ctx); err != nil {
		t.Fatal(err)
	}

	var csv strings.Builder
	csv.WriteString("user_id,shop_id,bank,account_no,event_timestamp,row,price,tag\n")
	for i, rw := range rows {
		fmt.Fprintf(&csv, "%s,%d,%s,%d,%d,%d,%s,%q\n", rw.user, rw.shop, rw.bank, rw.account, rw.t, i, strconv.FormatFloat(rw.price, 'g', -1, 64), rw.tag)
	}
	in := filepath.Join(dir, "rows.csv")
	if err := os.WriteFile(in, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "train.parquet")
	code, stdout, errOut := runCLI(t, env, "export", "--offline-dir", logDir, "--entities", in, "--service", "with_risk", "--out", out)
	if code != 0 {
		t.Fatalf("export: exit %d\n%s%s", code, stdout, errOut)
	}
	got := readParquetCells(t, out)
	mismatches, values, nulls := 0, 0, 0
	for i := range rows {
		if got["row"][i] != int64(i) {
			t.Fatalf("output row %d is input row %v", i, got["row"][i])
		}
		for j, name := range names {
			values++
			g, w := got[name][i], want[i][j]
			if w == nil {
				nulls++
			}
			if !sameCell(g, w) {
				mismatches++
				if mismatches <= 10 {
					t.Errorf("row %d %+v: %s exported %#v, online %#v", i, rows[i], name, g, w)
				}
			}
		}
	}
	if nulls == 0 || nulls == values {
		t.Errorf("%d of %d online values are null: the rows do not test both", nulls, values)
	}
	t.Logf("%d events through Kafka in %d stages, %d rows x %d features = %d values (%d null) compared, online lookups against the export: %d mismatches",
		produced, stages, len(rows), len(names), values, nulls, mismatches)
}

// fromWire returns the response of a lookup, which comes encoded for the
// wire, decoded as a client decodes it; err is the lookup's.
func fromWire(t *testing.T, resp *pb.GetOnlineFeaturesResponse, err error) *pb.GetOnlineFeaturesResponse {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	var dec pb.GetOnlineFeaturesResponse
	if err := proto.Unmarshal(b, &dec); err != nil {
		t.Fatal(err)
	}
	return &dec
}

// pbCell renders a served value as a cell of the export: nil unless
// present, lists as []any.
func pbCell(fv *pb.FeatureValue) any {
	if fv.GetStatus() != pb.FeatureStatus_FEATURE_STATUS_PRESENT {
		return nil
	}
	switch v := fv.GetValue().GetKind().(type) {
	case *pb.Value_StringVal:
		return v.StringVal
	case *pb.Value_Int64Val:
		return v.Int64Val
	case *pb.Value_DoubleVal:
		return v.DoubleVal
	case *pb.Value_BoolVal:
		return v.BoolVal
	case *pb.Value_StringListVal:
		return anySlice(v.StringListVal.GetVal())
	case *pb.Value_Int64ListVal:
		return anySlice(v.Int64ListVal.GetVal())
	case *pb.Value_DoubleListVal:
		return anySlice(v.DoubleListVal.GetVal())
	case *pb.Value_BoolListVal:
		return anySlice(v.BoolListVal.GetVal())
	}
	return fmt.Sprintf("unknown value %v", fv.GetValue())
}

func anySlice[T any](s []T) []any {
	out := make([]any, 0, len(s))
	for _, x := range s {
		out = append(out, x)
	}
	return out
}
