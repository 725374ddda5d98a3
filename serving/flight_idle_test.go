package serving

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// testIdleTimeout is the upload idle timeout of these tests: short, so
// that they run in about a second, and long enough that a loopback call
// that does send is never cut off.
const testIdleTimeout = 300 * time.Millisecond

// openExchange opens a DoExchange call that sends nothing yet, as a
// pyarrow client does between do_exchange and writer.begin. The call ends
// with the test.
func openExchange(t *testing.T, addr string) flight.FlightService_DoExchangeClient {
	t.Helper()
	client, err := flight.NewClientWithMiddleware(addr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	// The client's own deadline keeps a server that never ends the call
	// from hanging the test; it is far above testIdleTimeout, and its
	// status's message is not the server's.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	stream, err := client.DoExchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// checkIdleEnd waits for the server to end the call and checks that it
// did so for the upload idle timeout, about testIdleTimeout after since.
func checkIdleEnd(t *testing.T, stream flight.FlightService_DoExchangeClient, since time.Time) {
	t.Helper()
	_, err := stream.Recv()
	took := time.Since(since)
	st := status.Convert(err)
	if st.Code() != codes.DeadlineExceeded || !strings.Contains(st.Message(), testIdleTimeout.String()) ||
		!strings.Contains(st.Message(), "--flight-upload-idle-timeout") {
		t.Errorf("idle call ended with %v %q, want DeadlineExceeded naming the timeout of %v and its flag", st.Code(), st.Message(), testIdleTimeout)
	}
	if took < testIdleTimeout || took > testIdleTimeout+2*time.Second {
		t.Errorf("idle call ended after %v, want about %v", took, testIdleTimeout)
	}
}

// TestFlightIdleCallsHoldNoSlot: calls that opened DoExchange and sent
// nothing do not keep an export from running, even as many of them as
// MaxExports, and end at the upload idle timeout.
func TestFlightIdleCallsHoldNoSlot(t *testing.T) {
	f := newFlightFixture(t)
	reg := prometheus.NewRegistry()
	addr := f.serve(t, FlightConfig{MaxExports: 2, UploadIdleTimeout: testIdleTimeout, Metrics: NewFlightMetrics(reg)})
	start := time.Now()
	idle := []flight.FlightService_DoExchangeClient{openExchange(t, addr), openExchange(t, addr)}
	// Nothing on the server shows a call that sent nothing: give the two
	// calls' headers time to arrive, well within the idle timeout, so that
	// the export below comes after them.
	time.Sleep(testIdleTimeout / 3)

	table := entityTable(t, 200, 11)
	defer table.Release()
	got, err := flightCall{addr: addr, desc: cmdDescriptor(t, mixedCommand), schema: table.Schema(),
		batches: []arrow.RecordBatch{table}}.do(context.Background(), t)
	if err != nil {
		t.Fatalf("export while two calls are idle: %v", err)
	}
	gotT := array.NewTableFromRecords(got[0].Schema(), got)
	defer gotT.Release()
	want := f.fileExport(t, mixedCommand, table)
	defer want.Release()
	if !array.TableEqual(gotT, want) {
		t.Error("the training set over Flight differs from the file export")
	}

	for _, stream := range idle {
		checkIdleEnd(t, stream, start)
	}
	waitGauge(t, reg, "featurestore_serving_flight_exports_in_flight", 0)
	if n := counter(t, reg, "featurestore_serving_flight_exports_total", map[string]string{"code": "DeadlineExceeded"}); n != 2 {
		t.Errorf("exports DeadlineExceeded: %v, want 2", n)
	}
}

// TestFlightIdleUploadTimesOut: a call that sends nothing, and one that
// stalls after its schema and part of its table, end with
// DEADLINE_EXCEEDED at the upload idle timeout, and leave no export
// running and no file behind.
func TestFlightIdleUploadTimesOut(t *testing.T) {
	f := newFlightFixture(t)
	reg := prometheus.NewRegistry()
	tmp := t.TempDir()
	addr := f.serve(t, FlightConfig{MaxExports: 1, UploadIdleTimeout: testIdleTimeout, TempDir: tmp, Metrics: NewFlightMetrics(reg)})
	table := entityTable(t, 1000, 12)
	defer table.Release()

	t.Run("nothing sent", func(t *testing.T) {
		start := time.Now()
		checkIdleEnd(t, openExchange(t, addr), start)
		waitGauge(t, reg, "featurestore_serving_flight_exports_in_flight", 0)
	})

	t.Run("stalled mid-upload", func(t *testing.T) {
		stream := openExchange(t, addr)
		w := flight.NewRecordWriter(stream, ipc.WithSchema(table.Schema()))
		w.SetFlightDescriptor(cmdDescriptor(t, mixedCommand))
		part := table.NewSlice(0, 400)
		defer part.Release()
		start := time.Now()
		if err := w.Write(part); err != nil {
			t.Fatal(err)
		}
		// The call is an export now, holding the only slot, until the
		// timeout frees it.
		waitGauge(t, reg, "featurestore_serving_flight_exports_in_flight", 1)
		checkIdleEnd(t, stream, start)
		waitGauge(t, reg, "featurestore_serving_flight_exports_in_flight", 0)
		checkEmpty(t, tmp)
		if _, err := (flightCall{addr: addr, desc: cmdDescriptor(t, mixedCommand), schema: table.Schema(),
			batches: []arrow.RecordBatch{table}}).do(context.Background(), t); err != nil {
			t.Errorf("export after the stalled call ended: %v", err)
		}
	})

	if n := counter(t, reg, "featurestore_serving_flight_exports_total", map[string]string{"code": "DeadlineExceeded"}); n != 2 {
		t.Errorf("exports DeadlineExceeded: %v, want 2", n)
	}
}

// TestFlightCallsPerPrincipal: a principal may have twice MaxExports calls
// open, idle ones included, so that it cannot make the server hold a
// message of up to 256 MiB in as many calls as it opens; once calls end,
// more are taken.
func TestFlightCallsPerPrincipal(t *testing.T) {
	f := newFlightFixture(t)
	reg := prometheus.NewRegistry()
	addr := f.serve(t, FlightConfig{MaxExports: 1, UploadIdleTimeout: testIdleTimeout, Metrics: NewFlightMetrics(reg)})
	start := time.Now()
	idle := []flight.FlightService_DoExchangeClient{openExchange(t, addr), openExchange(t, addr)}
	time.Sleep(testIdleTimeout / 3) // for the calls' headers to arrive

	table := entityTable(t, 100, 13)
	defer table.Release()
	call := flightCall{addr: addr, desc: cmdDescriptor(t, mixedCommand), schema: table.Schema(), batches: []arrow.RecordBatch{table}}
	_, err := call.do(context.Background(), t)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted ||
		st.Message() != "2 calls are open, as many as one principal may have (twice --flight-max-exports); retry once one ends" {
		t.Errorf("a third call: %v, want ResourceExhausted", err)
	}
	for _, stream := range idle {
		checkIdleEnd(t, stream, start)
	}
	if _, err := call.do(context.Background(), t); err != nil {
		t.Errorf("a call once the idle ones ended: %v", err)
	}
}

// TestFlightCallsCountedPerPrincipal: the calls of one principal do not
// count against another's.
func TestFlightCallsCountedPerPrincipal(t *testing.T) {
	s := NewFlightServer(FlightConfig{MaxExports: 1})
	var closers []func()
	for range 2 {
		c, err := s.openCall("a")
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, c)
	}
	if _, err := s.openCall("a"); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), `principal "a"`) {
		t.Errorf("a third call of a: %v", err)
	}
	c, err := s.openCall("b")
	if err != nil {
		t.Fatalf("a call of b: %v", err)
	}
	c()
	closers[0]()
	if c, err = s.openCall("a"); err != nil {
		t.Fatalf("a call of a once one ended: %v", err)
	}
	c()
	closers[1]()
	if len(s.calls) != 0 {
		t.Errorf("calls left counted: %v", s.calls)
	}
}
