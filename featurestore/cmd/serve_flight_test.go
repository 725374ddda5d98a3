package cmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// writeExampleLog writes random card transactions of the examples to an
// offline log (a directory or a bucket URL) through the real writer: both
// views of card_transactions.
func writeExampleLog(t *testing.T, location, project string, r *registry.Registry, n int) {
	t.Helper()
	ctx := context.Background()
	st, closeSt, err := offline.Open(ctx, location)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSt()
	w, err := offline.OpenWriter(ctx, st, project, offline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	src := r.Source("card_transactions")
	fields, err := window.SourceFields(src)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	const t0 = 1_795_687_200_000 // 2026-11-26T10:00:00Z
	type txn struct {
		at             int64
		card, merchant string
		vals           []featurestore.Value
	}
	var txns []txn
	for range n {
		x := txn{at: t0 + rng.Int64N(2*3_600_000), card: fmt.Sprintf("c%d", rng.IntN(5)), merchant: fmt.Sprintf("m%d", rng.IntN(3))}
		x.vals = make([]featurestore.Value, len(fields))
		for i, f := range fields {
			switch f.Name {
			case "amount":
				x.vals[i] = featurestore.DoubleValue(float64(rng.IntN(200_000)) / 100)
			case "approved":
				x.vals[i] = featurestore.BoolValue(rng.IntN(10) > 0)
			case "card_id":
				x.vals[i] = featurestore.StringValue(x.card)
			case "merchant_id":
				x.vals[i] = featurestore.StringValue(x.merchant)
			case "channel":
				x.vals[i] = featurestore.StringValue([]string{"online", "pos"}[rng.IntN(2)])
			case "country":
				x.vals[i] = featurestore.StringValue([]string{"FR", "DE", "IT"}[rng.IntN(3)])
			case "currency":
				x.vals[i] = featurestore.StringValue("EUR")
			}
		}
		txns = append(txns, x)
	}
	for view, key := range map[string]func(txn) string{"card_txn": func(x txn) string { return x.card }, "merchant_txn": func(x txn) string { return x.merchant }} {
		s, err := offline.NewSchema(project, r, view)
		if err != nil {
			t.Fatal(err)
		}
		for start := 0; start < len(txns); start += 100 {
			b := offline.Batch{Topic: src.Kafka.Topic, IngestTime: t0 + 3*3_600_000, End: offline.Position{Offset: int64(min(start+100, len(txns)) - 1)}}
			for off := start; off < min(start+100, len(txns)); off++ {
				x := txns[off]
				b.Entities = append(b.Entities, offline.EntityEvents{Key: featurestore.StringKey(key(x)),
					Events: []window.Event{{Time: x.at, Offset: int64(off), Fields: x.vals}}})
			}
			if err := w.Append(ctx, s, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// writeEntityParquet writes rows of cards and merchants at random times to
// a Parquet file, with a nullable label: a training job's label table.
func writeEntityParquet(t *testing.T, path string, rows int) {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "card_id", Type: arrow.BinaryTypes.String},
		{Name: "merchant_id", Type: arrow.BinaryTypes.String},
		{Name: "event_timestamp", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
		{Name: "label", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		// The request fields of the examples' on-demand features.
		{Name: "amount", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "country", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	rng := rand.New(rand.NewPCG(5, 6))
	const t0us = 1_795_687_200_000_000
	for i := range rows {
		b.Field(0).(*array.StringBuilder).Append(fmt.Sprintf("c%d", rng.IntN(6))) // c5 has no events
		b.Field(1).(*array.StringBuilder).Append(fmt.Sprintf("m%d", rng.IntN(3)))
		b.Field(2).(*array.TimestampBuilder).Append(arrow.Timestamp(t0us + rng.Int64N(3*3_600_000_000) - 600_000_000))
		if i%5 == 0 {
			b.Field(3).AppendNull()
		} else {
			b.Field(3).(*array.Float64Builder).Append(float64(rng.IntN(2)))
		}
		b.Field(4).(*array.Float64Builder).Append(float64(rng.IntN(100000)) / 100)
		b.Field(5).(*array.StringBuilder).Append([]string{"FR", "DE", "US"}[rng.IntN(3)])
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	w, err := pqarrow.NewFileWriter(schema, fh, nil, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestServeFlightPython runs 'featurestore serve' in-process with an
// offline log and an access policy, and has testdata/flight_export.py, a
// training job with pyarrow.flight, get the training set of a Parquet
// label table over Flight; the script checks that it equals what
// 'featurestore export' wrote to a file for the same table, and that
// pyarrow surfaces the server's errors. The service, fraud_detection_v2,
// includes on-demand features, computed from the table's request columns.
func TestServeFlightPython(t *testing.T) {
	for _, where := range []string{"dir", "s3", "gs", "azblob"} {
		t.Run(where, func(t *testing.T) { testServeFlightPython(t, where) })
	}
}

// testServeFlightPython is TestServeFlightPython with the offline log in a
// directory, or (where is "s3", "gs" or "azblob") in a bucket of the test
// S3 server or of the GCS or Azure emulator.
func testServeFlightPython(t *testing.T, where string) {
	py := testenv.Python(t)
	dir := t.TempDir()
	project := testenv.UniqueName(t, "flight")
	env := map[string]string{
		"FEATURESTORE_REGISTRY":     "file:" + filepath.Join(dir, "registry"),
		"FEATURESTORE_REDIS_ADDR":   testenv.RedisAddr(t),
		"FEATURESTORE_PROJECT":      project,
		"FEATURESTORE_METRICS_ADDR": "",
	}
	if code, out, errOut := runCLI(t, env, "apply", "../../examples"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	r, err := registry.LoadDir("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	logDir := offlineLocation(t, where, dir)
	writeExampleLog(t, logDir, project, r, 3000)
	labels := filepath.Join(dir, "labels.parquet")
	writeEntityParquet(t, labels, 5000)
	fileExport := filepath.Join(dir, "train.arrow")
	if code, out, errOut := runCLI(t, env, "export", "--offline-dir", logDir, "--entities", labels,
		"--service", "fraud_detection_v2", "--out", fileExport); code != 0 {
		t.Fatalf("export: exit %d\n%s%s", code, out, errOut)
	}
	// The examples' service includes on-demand features, computed from the
	// table's amount and country: some must have values.
	if code, out, errOut := runCLI(t, env, "export", "--offline-dir", logDir, "--entities", labels,
		"--features", "txn_risk:*", "--out", filepath.Join(dir, "risk.parquet")); code != 0 {
		t.Fatalf("export: exit %d\n%s%s", code, out, errOut)
	}
	risk := readParquetCells(t, filepath.Join(dir, "risk.parquet"))
	for _, name := range []string{"txn_risk:amount_over_card_max_1d", "txn_risk:country_changed"} {
		if nonNull := slices.IndexFunc(risk[name], func(v any) bool { return v != nil }); nonNull < 0 {
			t.Errorf("%s: null in every row", name)
		}
	}
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(fmt.Sprintf(`principals:
  - name: trainer
    token_sha256: [%s]
    grants: [{project: %s, views: [card_txn, merchant_txn, txn_risk]}]
  - name: cards-only
    token_sha256: [%s]
    grants: [{project: %s, views: [card_txn]}]
`, tokenHash("tok-trainer"), project, tokenHash("tok-cards"), project)), 0o600); err != nil {
		t.Fatal(err)
	}

	flightAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- runContext(ctx, []string{"serve", "--grpc-addr", freeAddr(t), "--http-addr", "", "--flight-addr", flightAddr,
			"--offline-dir", logDir, "--auth-policy", policy, "--flight-temp-dir", t.TempDir(), "--flight-export-memory", "64MiB"},
			&bytes.Buffer{}, &stderr, envMap(env))
	}()
	conn, err := grpc.NewClient(flightAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitServing(t, conn, 15*time.Second, stderr.String)

	cmd := exec.Command(py, filepath.Join("testdata", "flight_export.py"), "--location", "grpc://"+flightAddr,
		"--token", "tok-trainer", "--other-token", "tok-cards", "--entities", labels, "--expected", fileExport,
		"--feature-service", "fraud_detection_v2")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("flight_export.py: %v\n%s\nserve:\n%s", err, out, stderr.String())
	}
	t.Logf("flight_export.py: %s", strings.TrimSpace(string(out)))
	if !strings.Contains(string(out), "5000 rows") {
		t.Errorf("flight_export.py did not report the rows it checked:\n%s", out)
	}
	cancel()
	waitStopped(t, done, stderr.String)
}

func TestServeFlightUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--flight-addr", "127.0.0.1:8815"}, "--flight-addr needs --offline-dir"},
		{[]string{"--flight-max-exports", "0"}, "--flight-max-exports must be positive"},
		{[]string{"--flight-max-upload-bytes", "-1"}, "--flight-max-upload-bytes must be positive"},
		{[]string{"--flight-upload-idle-timeout", "0"}, "--flight-upload-idle-timeout must be positive"},
		{[]string{"--flight-parallelism", "-1"}, "--flight-parallelism must not be negative"},
		{[]string{"--flight-export-memory", "lots"}, `--flight-export-memory: "lots" is not a positive size like 512MiB`},
	} {
		code, _, errOut := runCLI(t, nil, append([]string{"serve"}, c.args...)...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("serve %q: exit %d, want 2 with %q\n%s", c.args, code, c.want, errOut)
		}
	}
}

// flightExportOne exports a feature service for one entity row (card-0001
// at m-001, now) over Flight at addr, and returns the rows of the answer.
func flightExportOne(ctx context.Context, addr, command string) (int64, error) {
	client, err := flight.NewClientWithMiddleware(addr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer client.Close()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "card_id", Type: arrow.BinaryTypes.String},
		{Name: "merchant_id", Type: arrow.BinaryTypes.String},
		{Name: "event_timestamp", Type: arrow.FixedWidthTypes.Timestamp_ms},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).Append("card-0001")
	b.Field(1).(*array.StringBuilder).Append("m-001")
	b.Field(2).(*array.TimestampBuilder).Append(arrow.Timestamp(time.Now().UnixMilli()))
	rec := b.NewRecordBatch()
	defer rec.Release()
	stream, err := client.DoExchange(ctx)
	if err != nil {
		return 0, err
	}
	w := flight.NewRecordWriter(stream, ipc.WithSchema(schema))
	w.SetFlightDescriptor(&flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(command)})
	// A server that refuses the call may end it before the batch is sent:
	// the send then fails with io.EOF, and the call's status is what the
	// stream receives.
	if err := w.Write(rec); err != nil {
		return 0, callStatus(stream, err)
	}
	if err := stream.CloseSend(); err != nil {
		return 0, callStatus(stream, err)
	}
	rdr, err := flight.NewRecordReader(stream)
	if err != nil {
		return 0, err
	}
	defer rdr.Release()
	var rows int64
	for rdr.Next() {
		rows += rdr.RecordBatch().NumRows()
	}
	return rows, rdr.Err()
}

// callStatus returns the status a stream ended with when sending on it
// failed with io.EOF (the server ended the call), and err otherwise.
func callStatus(stream flight.FlightService_DoExchangeClient, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		if _, rerr := stream.Recv(); rerr != nil {
			return rerr
		}
	}
}

// TestFlightCompressedUploadBypassesLimit: --flight-max-upload-bytes counts
// a compressed batch at the uncompressed size its buffers claim, before it
// is decompressed. An entity table of 2M rows (about 24 MB of Arrow
// buffers) sent ZSTD-compressed is a few kilobytes on the wire; counted as
// sent, a 25 KB upload once made the server allocate gigabytes (one
// compressed buffer may claim up to 2 GiB).
func TestFlightCompressedUploadBypassesLimit(t *testing.T) {
	env := fileRegistryEnv(t)
	flightAddr := testAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stop, logs := startCommandLog(ctx, env, "serve", "--grpc-addr", testAddr(t), "--http-addr", "",
		"--offline-dir", t.TempDir(), "--flight-addr", flightAddr, "--flight-max-upload-bytes", "1048576")
	defer func() { stop() }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs(), "flight listening") {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", logs())
		}
		time.Sleep(50 * time.Millisecond)
	}

	const rows = 2_000_000
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "card_id", Type: arrow.BinaryTypes.String},
		{Name: "event_timestamp", Type: arrow.FixedWidthTypes.Timestamp_ms},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	keys, ts := b.Field(0).(*array.StringBuilder), b.Field(1).(*array.TimestampBuilder)
	keys.Reserve(rows)
	ts.Reserve(rows)
	now := arrow.Timestamp(time.Now().UnixMilli())
	for range rows {
		keys.Append("") // empty keys: offsets all 0, which compress well
		ts.Append(now)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()

	client, err := flight.NewClientWithMiddleware(flightAddr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	stream, err := client.DoExchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := flight.NewRecordWriter(stream, ipc.WithSchema(schema), ipc.WithZstd())
	w.SetFlightDescriptor(&flight.FlightDescriptor{Type: flight.DescriptorCMD,
		Cmd: []byte(`{"features": ["card_txn:last_country"], "allow_empty": true}`)})
	sendErr := w.Write(rec)
	if sendErr == nil {
		sendErr = stream.CloseSend()
	}
	var got int64
	var callErr error
	if sendErr != nil {
		callErr = callStatus(stream, sendErr)
	} else if rdr, err := flight.NewRecordReader(stream); err != nil {
		callErr = err
	} else {
		for rdr.Next() {
			got += rdr.RecordBatch().NumRows()
		}
		callErr = rdr.Err()
		rdr.Release()
	}
	if status.Code(callErr) != codes.ResourceExhausted {
		t.Fatalf("a %d-row entity table (~%d MB uncompressed) sent ZSTD-compressed to a server with --flight-max-upload-bytes 1048576: "+
			"got %d rows back, err %v; want RESOURCE_EXHAUSTED\nserver log:\n%s",
			rows, (rows*(4+8))>>20, got, callErr, lastLines(logs(), 3))
	}
}

// TestServeFlightExportMemoryBelowMinimum: serve refuses at start a
// --flight-export-memory below the export's minimum (1 MiB), with which
// every Flight export would fail with INTERNAL.
func TestServeFlightExportMemoryBelowMinimum(t *testing.T) {
	env := fileRegistryEnv(t)
	code, out := runBounded(t, env, 4*time.Second, "serve", "--grpc-addr", testAddr(t), "--http-addr", "",
		"--offline-dir", t.TempDir(), "--flight-addr", testAddr(t), "--flight-export-memory", "1KiB")
	if code != 2 || !strings.Contains(out, "--flight-export-memory") {
		t.Fatalf("serve --flight-export-memory 1KiB: exit %d, want 2 naming the flag\n%s", code, out)
	}
}
