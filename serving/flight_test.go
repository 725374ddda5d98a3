package serving

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	flightgen "github.com/apache/arrow-go/v18/arrow/flight/gen/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	flatbuffers "github.com/google/flatbuffers/go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/export"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
)

// offlineEvent is one event of the Flight tests' offline log.
type offlineEvent struct {
	time     int64
	offset   int64
	card     string
	merchant string // "" is null
	amount   float64
	user     string // of the pays source
	mid      int64
}

// storeLog reads a project's offline log in storage, for the export: what
// featurestore serve wires.
type storeLog struct {
	st      offline.Storage
	project string
}

func (l *storeLog) Scan(ctx context.Context, view string, _ int64, fn func(arrow.RecordBatch) error) error {
	snap, err := offline.ReadSnapshot(ctx, l.st, l.project, view)
	if err != nil {
		return err
	}
	return offline.Scan(ctx, l.st, snap, snap.Files, func(_ offline.FileInfo, rec arrow.RecordBatch) error { return fn(rec) })
}

// Committed implements export.LogCommits.
func (l *storeLog) Committed(ctx context.Context, view string) (bool, error) {
	snap, err := offline.ReadSnapshot(ctx, l.st, l.project, view)
	return snap.Seq > 0, err
}

// flightFixture is an offline log written through the real writer, and
// what the Flight tests export from it.
type flightFixture struct {
	project string
	snaps   *staticSnapshots
	log     *storeLog
	txns    []offlineEvent // of source txns, by card
	pays    []offlineEvent // of source pays
}

func newFlightFixture(t *testing.T) *flightFixture {
	t.Helper()
	ctx := context.Background()
	f := &flightFixture{project: "p", snaps: &staticSnapshots{}}
	snap := loadSnapshot(t, 3, testDefs)
	f.snaps.p.Store(snap)
	r := snap.Registry
	rng := rand.New(rand.NewPCG(5, 8))
	for i := range 400 {
		e := offlineEvent{time: at(time.Duration(rng.IntN(180*60)) * time.Second), offset: int64(i),
			card: fmt.Sprintf("c%d", rng.IntN(4)), amount: float64(rng.IntN(10_000)) / 100}
		if rng.IntN(5) > 0 {
			e.merchant = fmt.Sprintf("m%d", rng.IntN(5))
		}
		f.txns = append(f.txns, e)
	}
	for i := range 100 {
		f.pays = append(f.pays, offlineEvent{time: at(time.Duration(rng.IntN(180*60)) * time.Second), offset: int64(i),
			user: fmt.Sprintf("u%d", rng.IntN(3)), mid: int64(rng.IntN(3)), amount: float64(rng.IntN(1000))})
	}
	st, err := offline.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := offline.OpenWriter(ctx, st, f.project, offline.Options{BatchRows: 64})
	if err != nil {
		t.Fatal(err)
	}
	write := func(view, topic string, evs []offlineEvent, key func(offlineEvent) featurestore.EntityKey) {
		s, err := offline.NewSchema(f.project, r, view)
		if err != nil {
			t.Fatal(err)
		}
		fields, err := window.SourceFields(r.Source(r.View(view).Source))
		if err != nil {
			t.Fatal(err)
		}
		// Two batches, so that the log has several files and entries.
		for _, part := range [][]offlineEvent{evs[:len(evs)/2], evs[len(evs)/2:]} {
			byKey := map[string]*offline.EntityEvents{}
			var order []string
			hw := int64(0)
			for _, e := range part {
				k := key(e)
				ks := k.String()
				if byKey[ks] == nil {
					byKey[ks] = &offline.EntityEvents{Key: k}
					order = append(order, ks)
				}
				vals := make([]featurestore.Value, len(fields))
				for i, fd := range fields {
					switch {
					case fd.Name == "amount":
						vals[i] = featurestore.DoubleValue(e.amount)
					case fd.Name == "merchant" && e.merchant != "":
						vals[i] = featurestore.StringValue(e.merchant)
					}
				}
				byKey[ks].Events = append(byKey[ks].Events, window.Event{Time: e.time, Offset: e.offset, Fields: vals})
				hw = max(hw, e.time)
			}
			b := offline.Batch{Topic: topic, IngestTime: hw, End: offline.Position{Offset: part[len(part)-1].offset, HW: hw, HasHW: true}}
			for _, ks := range order {
				b.Entities = append(b.Entities, *byKey[ks])
			}
			if err := w.Append(ctx, s, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	card := func(e offlineEvent) featurestore.EntityKey { return featurestore.StringKey(e.card) }
	write("card_txn", "txns", f.txns, card)
	write("card_more", "txns", f.txns, card)
	write("pair_txn", "pays", f.pays, func(e offlineEvent) featurestore.EntityKey {
		k, err := featurestore.NewEntityKey(featurestore.StringPart(e.user), featurestore.Int64Part(e.mid))
		if err != nil {
			t.Fatal(err)
		}
		return k
	})
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	f.log = &storeLog{st: st, project: f.project}
	return f
}

// serve starts a Flight server of the fixture on loopback and returns its
// address; cfg's Listener, Project, Registry and Log are set here.
func (f *flightFixture) serve(t *testing.T, cfg FlightConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener, cfg.Project, cfg.ShutdownTimeout = ln, f.project, time.Second
	if cfg.Registry == nil {
		cfg.Registry = f.snaps
	}
	if cfg.Log == nil {
		cfg.Log = f.log
	}
	if cfg.Memory == 0 {
		cfg.Memory = 16 << 20
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewFlightServer(cfg).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("flight server: %v", err)
		}
	})
	return ln.Addr().String()
}

// entityTable is an entity table the tests send: rows of cards, users and
// merchants at random times, with a label.
func entityTable(t testing.TB, rows int, seed uint64) arrow.RecordBatch {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "card", Type: arrow.BinaryTypes.String},
		{Name: "user_id", Type: arrow.BinaryTypes.LargeString},
		{Name: "merchant_id", Type: arrow.PrimitiveTypes.Int32},
		{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "Europe/Paris"}},
		{Name: "label", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range rows {
		b.Field(0).(*array.StringBuilder).Append(fmt.Sprintf("c%d", rng.IntN(5))) // c4 has no events
		b.Field(1).(*array.LargeStringBuilder).Append(fmt.Sprintf("u%d", rng.IntN(3)))
		b.Field(2).(*array.Int32Builder).Append(int32(rng.IntN(3)))
		b.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(at(time.Duration(rng.IntN(200*60_000)-10*60_000)*time.Millisecond)*1000 + int64(rng.IntN(1000))))
		if i%7 == 3 {
			b.Field(4).AppendNull()
		} else {
			b.Field(4).(*array.Float64Builder).Append(float64(i % 2))
		}
	}
	return b.NewRecordBatch()
}

// mixedCommand exports features of two entities, with renamed columns.
var mixedCommand = FlightCommand{
	Features:        []string{"card_txn:n_1h", "card_txn:last_merchant", "card_more:*", "pair_txn:n_1h", "pair_txn:last_amount"},
	TimestampColumn: "ts",
	KeyColumns:      map[string]string{"card_id": "card"},
}

func cmdDescriptor(t testing.TB, cmd FlightCommand) *flight.FlightDescriptor {
	t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: b}
}

// flightCall is one DoExchange from the client side.
type flightCall struct {
	addr  string
	creds credentials.TransportCredentials // insecure when nil
	authz string                           // the authorization header, if set
	desc  *flight.FlightDescriptor
	// schema and batches are the entity table sent; with no schema,
	// nothing is sent.
	schema  *arrow.Schema
	batches []arrow.RecordBatch
}

// do runs the call and returns what the server sent: the batches, or the
// call's status.
func (c flightCall) do(ctx context.Context, t testing.TB) ([]arrow.RecordBatch, error) {
	t.Helper()
	creds := c.creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	client, err := flight.NewClientWithMiddleware(c.addr, nil, nil, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if c.authz != "" {
		ctx = withAuthorization(ctx, c.authz)
	}
	stream, err := client.DoExchange(ctx)
	if err != nil {
		return nil, err
	}
	if c.schema != nil {
		w := flight.NewRecordWriter(stream, ipc.WithSchema(c.schema))
		w.SetFlightDescriptor(c.desc)
		for _, b := range c.batches {
			if err := w.Write(b); err != nil {
				break // the server ended the call: Recv tells why
			}
		}
		_ = w.Close() // sends the schema if no batch did
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	rdr, err := flight.NewRecordReader(stream)
	if err != nil {
		return nil, err
	}
	defer rdr.Release()
	var out []arrow.RecordBatch
	for rdr.Next() {
		rec := rdr.RecordBatch()
		rec.Retain()
		out = append(out, rec)
	}
	if err := rdr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if len(out) == 0 {
		// The schema alone: an empty training set.
		out = append(out, array.NewRecordBatch(rdr.Schema(), nil, 0))
	}
	return out, nil
}

// fileExport runs the same export to an Arrow IPC file and reads it back.
func (f *flightFixture) fileExport(t *testing.T, cmd FlightCommand, table arrow.RecordBatch) arrow.Table {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.arrow"), filepath.Join(dir, "out.arrow")
	testenv.WriteArrowFile(t, in, table.Schema(), table)
	snap := f.snaps.Current()
	_, err := export.Run(context.Background(), export.Options{
		Registry: snap.Registry, Log: f.log, Service: cmd.FeatureService, Features: cmd.Features,
		KeyColumns: cmd.KeyColumns, TimestampColumn: cmd.TimestampColumn, Entities: in, Out: out,
		Metadata: map[string]string{"featurestore.project": f.project, "featurestore.registry_version": fmt.Sprint(snap.Version)},
		Memory:   16 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := ipc.NewFileReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var recs []arrow.RecordBatch
	for i := range r.NumRecords() {
		rec, err := r.RecordBatchAt(i)
		if err != nil {
			t.Fatal(err)
		}
		rec.Retain()
		recs = append(recs, rec)
	}
	return array.NewTableFromRecords(r.Schema(), recs)
}

// TestFlightExport exports over Flight and checks the training set: equal
// to the file export of the same rows, in the table's row order, with the
// entity columns unchanged; and two features against values worked out
// from the raw events. The table goes up in batches of several sizes, one
// above the rows of a sent batch, so that the answer is cut.
func TestFlightExport(t *testing.T) {
	f := newFlightFixture(t)
	reg := prometheus.NewRegistry()
	tmp := t.TempDir()
	addr := f.serve(t, FlightConfig{Metrics: NewFlightMetrics(reg), TempDir: tmp})
	ctx := context.Background()

	table := entityTable(t, 70_000, 1)
	defer table.Release()
	got, err := flightCall{addr: addr, desc: cmdDescriptor(t, mixedCommand), schema: table.Schema(),
		batches: []arrow.RecordBatch{table.NewSlice(0, 3), table.NewSlice(3, 69_990), table.NewSlice(69_990, 70_000)}}.do(ctx, t)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 2 {
		t.Errorf("the training set came in %d batch: the answer was not cut", len(got))
	}
	gotT := array.NewTableFromRecords(got[0].Schema(), got)
	defer gotT.Release()
	want := f.fileExport(t, mixedCommand, table)
	defer want.Release()
	if !gotT.Schema().Equal(want.Schema()) || !slices.Equal(gotT.Schema().Metadata().Keys(), want.Schema().Metadata().Keys()) ||
		!slices.Equal(gotT.Schema().Metadata().Values(), want.Schema().Metadata().Values()) {
		t.Fatalf("schema over Flight:\n%s\nof the file export:\n%s", gotT.Schema(), want.Schema())
	}
	if v, _ := gotT.Schema().Metadata().GetValue("featurestore.registry_version"); v != "3" {
		t.Errorf("registry version %q in the schema metadata, want 3", v)
	}
	if !array.TableEqual(gotT, want) {
		t.Error("the training set over Flight differs from the file export")
	}

	// Brute force: card_txn:n_1h counts the card's events from the first
	// minute of the hour's tiles to t; card_txn:last_merchant is the newest
	// event's merchant, null after its TTL of 30 minutes.
	col := func(name string) arrow.Array {
		idx := gotT.Schema().FieldIndices(name)
		if len(idx) != 1 {
			t.Fatalf("no column %q", name)
		}
		a, err := array.Concatenate(gotT.Column(idx[0]).Data().Chunks(), memory.DefaultAllocator)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	cards, times := table.Column(0).(*array.String), table.Column(3).(*array.Timestamp)
	n1h, lastM := col("card_txn:n_1h").(*array.Int64), col("card_txn:last_merchant").(*array.String)
	if gotT.NumRows() != 70_000 {
		t.Fatalf("%d rows, want 70000", gotT.NumRows())
	}
	mismatches := 0
	for i := range 70_000 {
		ts := int64(times.Value(i)) / 1000
		if int64(times.Value(i))%1000 < 0 {
			ts--
		}
		from := (ts/60_000 - 59) * 60_000
		var n int64
		var newest *offlineEvent
		for j := range f.txns {
			e := &f.txns[j]
			if e.card != cards.Value(i) || e.time > ts {
				continue
			}
			if e.time >= from {
				n++
			}
			if newest == nil || cmp.Or(cmp.Compare(e.time, newest.time), cmp.Compare(e.offset, newest.offset)) > 0 {
				newest = e
			}
		}
		wantM := ""
		if newest != nil && ts-newest.time <= 30*60_000 {
			wantM = newest.merchant
		}
		gotM := ""
		if lastM.IsValid(i) {
			gotM = lastM.Value(i)
		}
		if n1h.Value(i) != n || gotM != wantM {
			if mismatches++; mismatches <= 5 {
				t.Errorf("row %d (%s at %d): n_1h %d, last_merchant %q; want %d, %q", i, cards.Value(i), ts, n1h.Value(i), gotM, n, wantM)
			}
		}
	}
	if mismatches > 0 {
		t.Errorf("%d of 70000 rows differ from the brute force", mismatches)
	}

	// An empty table gets the schema and no rows.
	got, err = flightCall{addr: addr, desc: cmdDescriptor(t, FlightCommand{FeatureService: "fraud", TimestampColumn: "ts", KeyColumns: map[string]string{"card_id": "card"}}),
		schema: table.Schema()}.do(ctx, t)
	if err != nil {
		t.Fatal(err)
	}
	if n := got[0].Schema().NumFields(); len(got) != 1 || got[0].NumRows() != 0 || n != 5+6 {
		t.Errorf("empty table: %d batches, %d rows, %d columns; want the schema with 11 columns", len(got), got[0].NumRows(), n)
	}
	if n := counter(t, reg, "featurestore_serving_flight_export_rows_total", nil); n != 70_000 {
		t.Errorf("rows exported: %v, want 70000", n)
	}
	if n := counter(t, reg, "featurestore_serving_flight_exports_total", map[string]string{"code": "OK"}); n != 2 {
		t.Errorf("exports OK: %v, want 2", n)
	}
	checkEmpty(t, tmp)
}

// checkEmpty fails unless dir is empty: every call removes its files.
func checkEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind in the temporary directory: %s", e.Name())
	}
}

// TestFlightExportEmptyLog: views whose offline log has nothing committed
// (here: the log of another project) are refused with FailedPrecondition
// naming them, unless the command says "allow_empty": then they give the
// features of no events (null last values, counts of 0) and the schema's
// metadata says why. A log with commits gives no warning (TestFlightExport
// compares the metadata with the file export's).
func TestFlightExportEmptyLog(t *testing.T) {
	f := newFlightFixture(t)
	addr := f.serve(t, FlightConfig{TempDir: t.TempDir(), Log: &storeLog{st: f.log.st, project: "elsewhere"}})
	table := entityTable(t, 100, 1)
	defer table.Release()
	what := fmt.Sprintf("feature views card_more, card_txn, pair_txn have nothing committed in the offline log of project %q", f.project)

	_, err := flightCall{addr: addr, desc: cmdDescriptor(t, mixedCommand), schema: table.Schema(),
		batches: []arrow.RecordBatch{table}}.do(context.Background(), t)
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), what) || !strings.Contains(st.Message(), `"allow_empty": true`) {
		t.Errorf("export from an empty log: %v; want FailedPrecondition naming the views and allow_empty", err)
	}

	allow := mixedCommand
	allow.AllowEmpty = true
	got, err := flightCall{addr: addr, desc: cmdDescriptor(t, allow), schema: table.Schema(),
		batches: []arrow.RecordBatch{table}}.do(context.Background(), t)
	if err != nil {
		t.Fatal(err)
	}
	want := what + ": their features are those of no events (null, counts 0)"
	if v, _ := got[0].Schema().Metadata().GetValue(MetaWarning); v != want {
		t.Errorf("schema metadata %s = %q, want %q", MetaWarning, v, want)
	}
	for _, rec := range got {
		for _, name := range []string{"card_txn:last_merchant", "pair_txn:last_amount"} {
			if c := rec.Column(rec.Schema().FieldIndices(name)[0]); c.NullN() != c.Len() {
				t.Errorf("column %s has values from an empty log", name)
			}
		}
	}
}

// TestFlightErrors checks that bad calls get a status whose code and
// message name the problem, and leave no file behind.
func TestFlightErrors(t *testing.T) {
	f := newFlightFixture(t)
	tmp := t.TempDir()
	addr := f.serve(t, FlightConfig{TempDir: tmp, MaxUploadBytes: 64 << 10})
	noRegistry := f.serve(t, FlightConfig{Registry: &staticSnapshots{}})
	table := entityTable(t, 100, 2)
	defer table.Release()
	fraud := FlightCommand{FeatureService: "fraud", TimestampColumn: "ts", KeyColumns: map[string]string{"card_id": "card"}}
	raw := func(s string) *flight.FlightDescriptor {
		return &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(s)}
	}
	with := func(fields ...arrow.Field) *arrow.Schema { return arrow.NewSchema(fields, nil) }
	strCol := func(name string) arrow.Field { return arrow.Field{Name: name, Type: arrow.BinaryTypes.String} }
	tsCol := arrow.Field{Name: "ts", Type: arrow.FixedWidthTypes.Timestamp_ms}

	// A table with a null key in its second row.
	sb := array.NewRecordBuilder(memory.DefaultAllocator, with(strCol("card"), tsCol))
	sb.Field(0).(*array.StringBuilder).AppendValues([]string{"c1", ""}, []bool{true, false})
	sb.Field(1).(*array.TimestampBuilder).AppendValues([]arrow.Timestamp{arrow.Timestamp(at(0)), arrow.Timestamp(at(0))}, nil)
	nullKey := sb.NewRecordBatch()
	sb.Release()
	defer nullKey.Release()
	big := entityTable(t, 20_000, 3)
	defer big.Release()
	// A table whose key column's offsets go back: its buffers have the
	// sizes the IPC reader checks, its values do not exist.
	badKey := array.MakeFromData(array.NewData(arrow.BinaryTypes.String, 2, []*memory.Buffer{nil,
		memory.NewBufferBytes(arrow.Int32Traits.CastToBytes([]int32{0, 5, 3})), memory.NewBufferBytes([]byte("c1c2c"))}, nil, 0, 0))
	malformed := array.NewRecordBatch(nullKey.Schema(), []arrow.Array{badKey, nullKey.Column(1)}, 2)
	defer malformed.Release()

	for _, c := range []struct {
		name    string
		addr    string
		desc    *flight.FlightDescriptor
		schema  *arrow.Schema
		batches []arrow.RecordBatch
		code    codes.Code
		msg     string
	}{
		{name: "nothing sent", code: codes.InvalidArgument, msg: "the stream ended before the entity table's schema"},
		{name: "no descriptor", schema: table.Schema(), code: codes.InvalidArgument, msg: "no flight descriptor: send a descriptor of type CMD"},
		{name: "path descriptor", desc: &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"fraud"}}, schema: table.Schema(),
			code: codes.InvalidArgument, msg: "flight descriptor of type PATH: want CMD"},
		{name: "not JSON", desc: raw("fraud"), schema: table.Schema(), code: codes.InvalidArgument, msg: "command: invalid character"},
		{name: "unknown field", desc: raw(`{"service": "fraud"}`), schema: table.Schema(), code: codes.InvalidArgument, msg: `command: json: unknown field "service"`},
		{name: "two values", desc: raw(`{"feature_service": "fraud"} {}`), schema: table.Schema(), code: codes.InvalidArgument, msg: "command: more than one JSON value"},
		{name: "nothing requested", desc: raw(`{}`), schema: table.Schema(), code: codes.InvalidArgument, msg: "no features requested"},
		{name: "service and features", desc: raw(`{"feature_service": "fraud", "features": ["card_txn:n_1h"]}`), schema: table.Schema(),
			code: codes.InvalidArgument, msg: "give a feature service or feature references, not both"},
		{name: "unknown service", desc: raw(`{"feature_service": "nope"}`), schema: table.Schema(), code: codes.InvalidArgument, msg: `unknown feature service "nope"`},
		{name: "unknown feature", desc: raw(`{"features": ["card_txn:nope"]}`), schema: table.Schema(), code: codes.InvalidArgument, msg: `"nope"`},
		{name: "unknown view", desc: raw(`{"features": ["nope:n"]}`), schema: table.Schema(), code: codes.InvalidArgument, msg: `"nope"`},
		{name: "missing key column", desc: cmdDescriptor(t, FlightCommand{FeatureService: "fraud", TimestampColumn: "ts"}), schema: table.Schema(),
			code: codes.InvalidArgument, msg: `entity table: no column "card_id" for join key "card_id" of entity "card" (columns: card, user_id, merchant_id, ts, label)`},
		{name: "missing timestamp column", desc: cmdDescriptor(t, FlightCommand{FeatureService: "fraud", KeyColumns: map[string]string{"card_id": "card"}}), schema: table.Schema(),
			code: codes.InvalidArgument, msg: `entity table: no timestamp column "event_timestamp"`},
		{name: "key of the wrong type", desc: cmdDescriptor(t, FlightCommand{Features: []string{"pair_txn:n_1h"}, TimestampColumn: "ts"}),
			schema: with(strCol("user_id"), strCol("merchant_id"), tsCol),
			code:   codes.InvalidArgument, msg: `entity table: column "merchant_id" (join key "merchant_id" of entity "user_merchant", int64) has type utf8`},
		{name: "timestamp of the wrong type", desc: cmdDescriptor(t, fraud), schema: with(strCol("card"), strCol("ts")),
			code: codes.InvalidArgument, msg: `entity table: timestamp column "ts" has type utf8`},
		{name: "null key", desc: cmdDescriptor(t, fraud), schema: nullKey.Schema(), batches: []arrow.RecordBatch{nullKey},
			code: codes.InvalidArgument, msg: `entity table: row 2: column "card" (join key "card_id" of entity "card") is null`},
		{name: "malformed batch", desc: cmdDescriptor(t, fraud), schema: malformed.Schema(), batches: []arrow.RecordBatch{malformed},
			code: codes.InvalidArgument, msg: `entity table: record batch 1 is malformed: column "card": `},
		{name: "upload too large", desc: cmdDescriptor(t, fraud), schema: big.Schema(), batches: []arrow.RecordBatch{big.NewSlice(0, 10_000), big.NewSlice(10_000, 20_000)},
			code: codes.ResourceExhausted, msg: "entity table too large: more than the 65536 bytes a call may send"},
		{name: "no registry version", addr: noRegistry, desc: cmdDescriptor(t, fraud), schema: table.Schema(),
			code: codes.Unavailable, msg: "no registry version loaded yet"},
	} {
		t.Run(c.name, func(t *testing.T) {
			call := flightCall{addr: cmp.Or(c.addr, addr), desc: c.desc, schema: c.schema, batches: c.batches}
			if c.schema != nil && c.batches == nil {
				call.batches = []arrow.RecordBatch{}
			}
			_, err := call.do(context.Background(), t)
			st := status.Convert(err)
			if st.Code() != c.code || !strings.Contains(st.Message(), c.msg) {
				t.Errorf("got %v %q\nwant %v with %q", st.Code(), st.Message(), c.code, c.msg)
			}
		})
	}
	checkEmpty(t, tmp)
}

// blockingLog is a log whose Scan waits for its context to end, to stop
// an export in the middle.
type blockingLog struct {
	scanning chan struct{} // closed when a scan starts
	stopped  chan error    // gets the context's error
}

func (l *blockingLog) Scan(ctx context.Context, _ string, _ int64, _ func(arrow.RecordBatch) error) error {
	close(l.scanning)
	<-ctx.Done()
	l.stopped <- ctx.Err()
	return ctx.Err()
}

// waitGauge waits until the gauge name in reg has value v.
func waitGauge(t *testing.T, reg *prometheus.Registry, name string, v float64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name && mf.GetMetric()[0].GetGauge().GetValue() == v {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gauge %s never reached %v", name, v)
		}
	}
}

// TestFlightLimits runs one export at a time: a second call while one
// uploads is refused at once; a client that goes away, during its upload or
// during the export, stops its export, and every file is removed.
func TestFlightLimits(t *testing.T) {
	f := newFlightFixture(t)
	tmp := t.TempDir()
	reg := prometheus.NewRegistry()
	blocking := &blockingLog{scanning: make(chan struct{}), stopped: make(chan error, 1)}
	addr := f.serve(t, FlightConfig{TempDir: tmp, MaxExports: 1, Log: blocking, Metrics: NewFlightMetrics(reg)})
	table := entityTable(t, 1000, 4)
	defer table.Release()
	desc := cmdDescriptor(t, mixedCommand)

	// A call that sends its schema and one batch, and then nothing.
	client, err := flight.NewClientWithMiddleware(addr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.DoExchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := flight.NewRecordWriter(stream, ipc.WithSchema(table.Schema()))
	w.SetFlightDescriptor(desc)
	if err := w.Write(table); err != nil {
		t.Fatal(err)
	}
	waitGauge(t, reg, "featurestore_serving_flight_exports_in_flight", 1)
	_, err = flightCall{addr: addr, desc: desc, schema: table.Schema(), batches: []arrow.RecordBatch{table}}.do(context.Background(), t)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != "1 exports are running, as many as the server runs at once; retry later" {
		t.Errorf("second call: %v", err)
	}
	cancel()
	waitGauge(t, reg, "featurestore_serving_flight_exports_in_flight", 0)
	checkEmpty(t, tmp)

	// A call that uploads its table, then goes away while the export
	// reads the log.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := flightCall{addr: addr, desc: desc, schema: table.Schema(), batches: []arrow.RecordBatch{table}}.do(ctx, t)
		errc <- err
	}()
	<-blocking.scanning
	cancel()
	if err := <-blocking.stopped; !errors.Is(err, context.Canceled) {
		t.Errorf("the export's context ended with %v, want canceled", err)
	}
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Errorf("client: %v, want canceled", err)
	}
	waitGauge(t, reg, "featurestore_serving_flight_exports_in_flight", 0)
	checkEmpty(t, tmp)
	for code, want := range map[string]float64{"ResourceExhausted": 1, "Canceled": 2} {
		if n := counter(t, reg, "featurestore_serving_flight_exports_total", map[string]string{"code": code}); n != want {
			t.Errorf("exports %s: %v, want %v", code, n, want)
		}
	}
}

// TestFlightAuth serves exports over TLS behind the access policy of the
// auth tests: a principal must be granted every view an export reads,
// whether it authenticates with a token or a client certificate.
func TestFlightAuth(t *testing.T) {
	f := newFlightFixture(t)
	dir := t.TempDir()
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	policyFile := filepath.Join(dir, "policy.yaml")
	replaceFile(t, policyFile, []byte(authPolicy(f.project)))
	reg := prometheus.NewRegistry()
	auth, err := NewAuth(AuthOptions{PolicyFile: policyFile, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := tlsFiles(t, dir, serverCA)
	caFile := filepath.Join(dir, "client-ca.pem")
	replaceFile(t, caFile, clientCA.pem)
	st, err := NewServerTLS(TLSOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	addr := f.serve(t, FlightConfig{TLS: st.Config(), Auth: auth})
	table := entityTable(t, 50, 6)
	defer table.Release()
	keyed := func(features ...string) FlightCommand {
		return FlightCommand{Features: features, TimestampColumn: "ts", KeyColumns: map[string]string{"card_id": "card"}}
	}
	for _, c := range []struct {
		name  string
		authz string
		cert  *certSpec // the client certificate; a stranger's when nil
		cmd   FlightCommand
		code  codes.Code
		msg   string
	}{
		{name: "no token, a stranger's certificate", cmd: keyed("card_txn:n_1h"), code: codes.Unauthenticated,
			msg: "the client certificate identifies no principal"},
		{name: "wrong token", authz: "Bearer tok-nobody", cmd: keyed("card_txn:n_1h"), code: codes.Unauthenticated, msg: "invalid credentials"},
		{name: "granted", authz: "Bearer tok-scorer", cmd: keyed("card_txn:n_1h", "card_txn:last_merchant"), code: codes.OK},
		{name: "one view not granted", authz: "Bearer tok-scorer", cmd: FlightCommand{FeatureService: "fraud", TimestampColumn: "ts", KeyColumns: map[string]string{"card_id": "card"}},
			code: codes.PermissionDenied, msg: `principal "scorer" may not read feature service "fraud" of project "p"`},
		{name: "unknown service", authz: "Bearer tok-scorer", cmd: FlightCommand{FeatureService: "nope", TimestampColumn: "ts", KeyColumns: map[string]string{"card_id": "card"}},
			code: codes.PermissionDenied, msg: `principal "scorer" may not read feature service "nope" of project "p"`},
		{name: "unknown service, every view granted", authz: "Bearer tok-admin", cmd: FlightCommand{FeatureService: "nope", TimestampColumn: "ts"},
			code: codes.InvalidArgument, msg: `unknown feature service "nope"`},
		{name: "unknown view", authz: "Bearer tok-scorer", cmd: keyed("nope:x"),
			code: codes.PermissionDenied, msg: `principal "scorer" may not read feature view "nope" of project "p"`},
		{name: "unknown feature of a view not granted", authz: "Bearer tok-scorer", cmd: keyed("card_more:nope"),
			code: codes.PermissionDenied, msg: `principal "scorer" may not read feature view "card_more" of project "p"`},
		{name: "no grants", authz: "Bearer tok-nogrants", cmd: keyed("card_txn:n_1h"), code: codes.PermissionDenied,
			msg: `principal "nogrants" may not read feature view "card_txn" of project "p"`},
		{name: "another project", authz: "Bearer tok-elsewhere", cmd: keyed("card_txn:n_1h"), code: codes.PermissionDenied,
			msg: `principal "elsewhere" may not read feature view "card_txn" of project "p"`},
		{name: "everything", authz: "Bearer tok-admin", cmd: mixedCommand, code: codes.OK},
		{name: "unknown feature", authz: "Bearer tok-scorer", cmd: keyed("card_txn:nope"), code: codes.InvalidArgument, msg: `"nope"`},
		{name: "a column the principal may not know of", authz: "Bearer tok-scorer", cmd: FlightCommand{Features: []string{"card_more:n_10m"}},
			code: codes.PermissionDenied, msg: `principal "scorer" may not read feature view "card_more" of project "p"`},
		{name: "by certificate", cert: &certSpec{cn: "pairs"}, cmd: FlightCommand{Features: []string{"pair_txn:*"}, TimestampColumn: "ts"}, code: codes.OK},
		{name: "by certificate, not granted", cert: &certSpec{uris: []string{"spiffe://test/pairs"}}, cmd: keyed("card_txn:n_1h"),
			code: codes.PermissionDenied, msg: `principal "pairs-by-cert" may not read feature view "card_txn" of project "p"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			cert := certSpec{cn: "stranger"}
			if c.cert != nil {
				cert = *c.cert
			}
			cfg := &tls.Config{RootCAs: serverCA.pool(), Certificates: []tls.Certificate{clientCA.clientCert(t, cert)}}
			got, err := flightCall{addr: addr, creds: credentials.NewTLS(cfg), authz: c.authz, desc: cmdDescriptor(t, c.cmd),
				schema: table.Schema(), batches: []arrow.RecordBatch{table}}.do(context.Background(), t)
			st := status.Convert(err)
			if st.Code() != c.code || (c.code != codes.OK && !strings.Contains(st.Message(), c.msg)) {
				t.Fatalf("got %v %q\nwant %v %q", st.Code(), st.Message(), c.code, c.msg)
			}
			if c.code == codes.OK {
				rows := int64(0)
				for _, b := range got {
					rows += b.NumRows()
				}
				if rows != 50 {
					t.Errorf("%d rows, want 50", rows)
				}
			}
		})
	}
	if n := counter(t, reg, "featurestore_serving_auth_denied_total", map[string]string{"protocol": "grpc", "reason": reasonNotGranted}); n != 8 {
		t.Errorf("denials for views not granted: %v, want 8", n)
	}
}

// sendStream is a server stream that records what is sent.
type sendStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent int
}

func (s *sendStream) Context() context.Context { return s.ctx }
func (s *sendStream) SendMsg(any) error        { s.sent++; return nil }

// TestAuthStreamFailsClosed checks that a streaming method that reads
// views sends nothing before the service authorized the call, and fails if
// the service never does.
func TestAuthStreamFailsClosed(t *testing.T) {
	if want := "/" + flightgen.FlightService_ServiceDesc.ServiceName + "/DoExchange"; flightExchangeMethod != want {
		t.Fatalf("flightExchangeMethod %q, want %q", flightExchangeMethod, want)
	}
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.yaml")
	replaceFile(t, policyFile, []byte(authPolicy("p")))
	auth, err := NewAuth(AuthOptions{PolicyFile: policyFile})
	if err != nil {
		t.Fatal(err)
	}
	info := &grpc.StreamServerInfo{FullMethod: flightExchangeMethod}
	for _, c := range []struct {
		name      string
		authorize bool
		send      bool
		code      codes.Code
		sent      int
	}{
		{"sends without authorizing", false, true, codes.PermissionDenied, 0},
		{"returns without authorizing", false, false, codes.PermissionDenied, 0},
		{"authorizes, then sends", true, true, codes.OK, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			ss := &sendStream{ctx: metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer tok-admin"))}
			err := auth.StreamInterceptor()(nil, ss, info, func(_ any, stream grpc.ServerStream) error {
				if c.authorize {
					if err := auth.Authorize(stream.Context(), "p", []string{"card_txn"}); err != nil {
						return err
					}
				}
				if c.send {
					return stream.SendMsg("data")
				}
				return nil
			})
			if status.Code(err) != c.code || ss.sent != c.sent {
				t.Errorf("got %v and %d messages sent; want %v and %d", err, ss.sent, c.code, c.sent)
			}
		})
	}
}

// TestFlightHealthFollowsReadiness: the Flight server's gRPC health says
// NOT_SERVING until a registry version is loaded, SERVING while the offline
// log answers its ping, NOT_SERVING while it does not.
func TestFlightHealthFollowsReadiness(t *testing.T) {
	if FlightServiceName != flightgen.FlightService_ServiceDesc.ServiceName {
		t.Fatalf("FlightServiceName %q, want %q", FlightServiceName, flightgen.FlightService_ServiceDesc.ServiceName)
	}
	snaps := &staticSnapshots{}
	var down atomic.Bool
	conn := serveBufconn(t, func(ctx context.Context, ln net.Listener) error {
		return NewFlightServer(FlightConfig{Listener: ln, Project: "p", Registry: snaps, HealthInterval: 20 * time.Millisecond,
			Ping: func(context.Context) error {
				if down.Load() {
					return errors.New("bucket unreachable")
				}
				return nil
			}}).Run(ctx)
	})
	awaitHealth(t, conn, FlightServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	snaps.p.Store(loadSnapshot(t, 1, testDefs))
	awaitHealth(t, conn, FlightServiceName, healthpb.HealthCheckResponse_SERVING)
	down.Store(true)
	awaitHealth(t, conn, FlightServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	down.Store(false)
	awaitHealth(t, conn, FlightServiceName, healthpb.HealthCheckResponse_SERVING)
}

// panickingLog is a committed log whose Scan panics: a bug in the export's
// reading, as far as the server can tell.
type panickingLog struct{}

func (panickingLog) Scan(context.Context, string, int64, func(arrow.RecordBatch) error) error {
	panic("the log scan blew up")
}

func (panickingLog) Committed(context.Context, string) (bool, error) { return true, nil }

// TestFlightExportPanic checks that an export that panics fails its call
// alone, INTERNAL naming the panic, logged with its stack, and that the
// server goes on serving calls.
func TestFlightExportPanic(t *testing.T) {
	f := newFlightFixture(t)
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	addr := f.serve(t, FlightConfig{TempDir: t.TempDir(), Log: panickingLog{}, Metrics: NewFlightMetrics(reg),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	table := entityTable(t, 100, 5)
	defer table.Release()
	for range 2 {
		_, err := flightCall{addr: addr, desc: cmdDescriptor(t, mixedCommand), schema: table.Schema(), batches: []arrow.RecordBatch{table}}.do(context.Background(), t)
		st := status.Convert(err)
		if st.Code() != codes.Internal || !strings.Contains(st.Message(), "export failed: panic (a bug; please report it): the log scan blew up at ") {
			t.Fatalf("export that panicked: %v", err)
		}
	}
	if n := counter(t, reg, "featurestore_serving_flight_exports_total", map[string]string{"code": "Internal"}); n != 2 {
		t.Errorf("exports counted INTERNAL: %v, want 2", n)
	}
	for _, s := range []string{"flight export failed", "the log scan blew up", "stack=", "flight_test.go"} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("log lacks %q:\n%s", s, logs.String())
		}
	}
}

// hugeFieldsSchema returns the metadata of a schema message (the Message
// flatbuffer a FlightData's data header holds) of schema, with the length
// of its fields vector made 2^31-1: arrow-go would make a slice of that
// many fields, about 200 GB.
func hugeFieldsSchema(t *testing.T, schema *arrow.Schema) []byte {
	t.Helper()
	msg := flight.SerializeSchema(schema, memory.DefaultAllocator)
	if binary.LittleEndian.Uint32(msg) == 0xffffffff {
		msg = msg[4:]
	}
	meta := bytes.Clone(msg[4 : 4+binary.LittleEndian.Uint32(msg)])
	m := flatbuffers.Table{Bytes: meta, Pos: flatbuffers.GetUOffsetT(meta)}
	o := flatbuffers.UOffsetT(m.Offset(8)) + m.Pos // the header: the Schema table
	s := flatbuffers.Table{Bytes: meta, Pos: m.Indirect(o)}
	fields := s.Vector(flatbuffers.UOffsetT(s.Offset(6))) - 4 // the fields vector's length
	binary.LittleEndian.PutUint32(meta[fields:], math.MaxInt32)
	return meta
}

// TestFlightMalformedMetadata sends a schema message whose fields vector
// claims 2^31-1 fields: the call fails with INVALID_ARGUMENT before arrow-go
// reads it (it would have tried to allocate about 200 GB, a fatal error of
// the whole server), and the server goes on.
func TestFlightMalformedMetadata(t *testing.T) {
	f := newFlightFixture(t)
	addr := f.serve(t, FlightConfig{TempDir: t.TempDir()})
	table := entityTable(t, 10, 6)
	defer table.Release()
	client, err := flight.NewClientWithMiddleware(addr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	stream, err := client.DoExchange(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&flight.FlightData{FlightDescriptor: cmdDescriptor(t, mixedCommand), DataHeader: hugeFieldsSchema(t, table.Schema())}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "malformed Arrow IPC data: message: a vector of 2147483647 elements") {
		t.Fatalf("malformed schema: %v", err)
	}
	if _, err := (flightCall{addr: addr, desc: cmdDescriptor(t, mixedCommand), schema: table.Schema(), batches: []arrow.RecordBatch{table}}).do(context.Background(), t); err != nil {
		t.Fatalf("the next export: %v", err)
	}
}
