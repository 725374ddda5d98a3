package ingest

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/fetch"
)

// fakeFetches answers the reader's fetches with the responses given, in
// order, and records the offset and bytes of each request.
type fakeFetches struct {
	responses []func() *fetch.Response
	offsets   []int64
	bytes     []int32
}

func (f *fakeFetches) RoundTrip(_ context.Context, _ net.Addr, req kafka.Request) (kafka.Response, error) {
	p := req.(*fetch.Request).Topics[0].Partitions[0]
	f.offsets, f.bytes = append(f.offsets, p.FetchOffset), append(f.bytes, p.PartitionMaxBytes)
	if len(f.responses) == 0 {
		return &fetch.Response{Topics: []fetch.ResponseTopic{{Topic: "t", Partitions: []fetch.ResponsePartition{{}}}}}, nil
	}
	r := f.responses[0]()
	f.responses = f.responses[1:]
	return r, nil
}

// response is a fetch response of partition 0 of topic t with the last
// stable offset lso, the aborted transactions (producer id, first offset)
// and the batches.
func response(lso int64, aborted [][2]int64, batches ...protocol.RecordReader) func() *fetch.Response {
	return func() *fetch.Response {
		var txns []fetch.ResponseTransaction
		for _, a := range aborted {
			txns = append(txns, fetch.ResponseTransaction{ProducerID: a[0], FirstOffset: a[1]})
		}
		return &fetch.Response{Topics: []fetch.ResponseTopic{{Topic: "t", Partitions: []fetch.ResponsePartition{{
			HighWatermark: lso, LastStableOffset: lso, AbortedTransactions: txns,
			RecordSet: protocol.RecordSet{Version: 2, Records: &protocol.RecordStream{Records: batches}},
		}}}}}
	}
}

// data is a batch of producer pid (transactional if txn) holding records
// at the offsets, from base.
func data(pid int64, txn bool, base int64, offsets ...int64) *protocol.RecordBatch {
	var recs []protocol.Record
	for _, o := range offsets {
		recs = append(recs, protocol.Record{Offset: o, Value: protocol.NewBytes([]byte("v"))})
	}
	var attrs protocol.Attributes
	if txn {
		attrs = protocol.Transactional
	}
	return &protocol.RecordBatch{Attributes: attrs, BaseOffset: base, ProducerID: pid, Records: protocol.NewRecordReader(recs...)}
}

// marker is producer pid's commit or abort marker at offset.
func marker(pid, offset int64, commit bool) *protocol.ControlBatch {
	typ := byte(0)
	if commit {
		typ = 1
	}
	rec := protocol.Record{Offset: offset, Key: protocol.NewBytes([]byte{0, 0, 0, typ}), Value: protocol.NewBytes([]byte{0, 0, 0, 0, 0, 0})}
	return &protocol.ControlBatch{Attributes: protocol.Transactional | protocol.Control, BaseOffset: offset, ProducerID: pid,
		Records: protocol.NewRecordReader(rec)}
}

// lookalike is a batch of one plain record at offset with the key and
// value of a commit marker.
func lookalike(offset int64) *protocol.RecordBatch {
	rec := protocol.Record{Offset: offset, Key: protocol.NewBytes([]byte{0, 0, 0, 1}), Value: protocol.NewBytes([]byte{0, 0, 0, 0, 0, 0})}
	return &protocol.RecordBatch{BaseOffset: offset, ProducerID: 1, Records: protocol.NewRecordReader(rec)}
}

// TestPartitionReaderFetches reads crafted fetch responses: which records
// of aborted transactions are dropped (Kafka's rules, with fetches that
// start inside or after a transaction), and how the reader gets past
// batches whose records compaction removed.
func TestPartitionReaderFetches(t *testing.T) {
	tests := []struct {
		name      string
		start     int64
		responses []func() *fetch.Response
		end       int64   // read offsets before end
		want      []int64 // offsets handed over
		markers   []int64 // those of them handed over as transaction markers
		aborted   int
		fetchedAt []int64 // offsets of the fetches
		bytes     []int32 // their bytes, if checked
	}{
		{
			name: "aborted within the fetch, then a committed transaction of the same producer", start: 10,
			responses: []func() *fetch.Response{response(16, [][2]int64{{8, 10}},
				data(8, true, 10, 10, 11), data(13, false, 12, 12), marker(8, 13, false), data(8, true, 14, 14), marker(8, 15, true))},
			end: 16, want: []int64{12, 13, 14, 15}, markers: []int64{13, 15}, aborted: 2,
		},
		{
			// A plain record with a marker's bytes, key 0 1 and value six
			// bytes from 0 0, is a record, not a marker.
			name: "a record that looks like a marker", start: 3,
			responses: []func() *fetch.Response{response(5, nil, lookalike(3), marker(7, 4, true))},
			end:       5, want: []int64{3, 4}, markers: []int64{4},
		},
		{
			name: "the fetch starts after the aborted records, before their marker", start: 16,
			responses: []func() *fetch.Response{response(28, [][2]int64{{8, 0}},
				data(13, false, 16, 16, 17), marker(8, 22, false), data(8, true, 23, 23, 24, 25), marker(8, 26, true), data(13, false, 27, 27))},
			end: 28, want: []int64{16, 17, 22, 23, 24, 25, 26, 27}, markers: []int64{22, 26},
		},
		{
			name: "two producers interleaved, one aborts", start: 10,
			responses: []func() *fetch.Response{response(15, [][2]int64{{8, 10}},
				data(8, true, 10, 10), data(9, true, 11, 11), data(8, true, 12, 12), marker(9, 13, true), marker(8, 14, false))},
			end: 15, want: []int64{11, 13, 14}, markers: []int64{13, 14}, aborted: 2,
		},
		{
			name: "only aborted records, then the marker in the next fetch", start: 10,
			responses: []func() *fetch.Response{
				response(13, [][2]int64{{8, 10}}, data(8, true, 10, 10, 11)),
				response(13, [][2]int64{{8, 10}}, marker(8, 12, false)),
			},
			end: 13, want: []int64{12}, markers: []int64{12}, aborted: 2, fetchedAt: []int64{10, 12},
		},
		{
			name: "a compacted batch, the next one in the same fetch", start: 5,
			responses: []func() *fetch.Response{response(11, nil, data(1, false, 0, 2, 3), data(1, false, 9, 9, 10))},
			end:       11, want: []int64{9, 10},
		},
		{
			name: "a compacted batch alone: fetch more bytes to reach the next", start: 5,
			responses: []func() *fetch.Response{
				response(11, nil, data(1, false, 0, 2, 3)),
				response(11, nil, data(1, false, 0, 2, 3), data(1, false, 9, 9, 10)),
			},
			end: 11, want: []int64{9, 10}, fetchedAt: []int64{5, 5}, bytes: []int32{16 << 20, 32 << 20},
		},
		{
			name: "a compacted batch last in the log: on at the last stable offset", start: 5,
			responses: []func() *fetch.Response{
				response(8, nil, data(1, false, 0, 2, 3)),
				response(8, nil, data(1, false, 0, 2, 3)),
				response(8, nil, data(1, false, 0, 2, 3)),
			},
			end: 8, want: nil, fetchedAt: []int64{5, 5, 5}, bytes: []int32{16 << 20, 32 << 20, 64 << 20},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeFetches{responses: tt.responses}
			aborted := 0
			r := &partitionReader{tr: f, topic: "t", maxBytes: 16 << 20, maxWait: time.Millisecond, log: slog.New(slog.DiscardHandler),
				onAborted: func(n int) { aborted += n }}
			r.setOffset(tt.start)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var got, markers []int64
			for {
				m, ok, err := r.readBefore(ctx, tt.end)
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				got = append(got, m.Offset)
				if isTransactionMarker(m) {
					markers = append(markers, m.Offset)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("offsets %v, want %v", got, tt.want)
			}
			if !slices.Equal(markers, tt.markers) {
				t.Errorf("markers at %v, want %v", markers, tt.markers)
			}
			if aborted != tt.aborted {
				t.Errorf("%d aborted records, want %d", aborted, tt.aborted)
			}
			if tt.fetchedAt != nil && !slices.Equal(f.offsets, tt.fetchedAt) {
				t.Errorf("fetched at %v, want %v", f.offsets, tt.fetchedAt)
			}
			if tt.bytes != nil && !slices.Equal(f.bytes, tt.bytes) {
				t.Errorf("fetched %v bytes, want %v", f.bytes, tt.bytes)
			}
			if len(f.responses) != 0 {
				t.Errorf("%d responses left", len(f.responses))
			}
		})
	}
}

// TestRecordWithMarkerBytesIsDeadLettered: the applier takes for a
// transaction marker what the partition reader says is one (a control
// record), not a message that has a marker's bytes: a plain record with
// them does not decode and is dead-lettered, not counted and skipped.
func TestRecordWithMarkerBytesIsDeadLettered(t *testing.T) {
	sink := &memSink{}
	a, _, _ := dedupApplier(t, sink)
	a.SetMetrics(NewMetrics(prometheus.NewRegistry()))
	f := &fakeFetches{responses: []func() *fetch.Response{response(2, nil, lookalike(0), marker(7, 1, true))}}
	pr := &partitionReader{tr: f, topic: "t", maxBytes: 1 << 20, maxWait: time.Millisecond, log: slog.New(slog.DiscardHandler)}
	pr.setOffset(0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var msgs []kafka.Message
	for {
		m, ok, err := pr.readBefore(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		msgs = append(msgs, m)
	}
	if err := a.Apply(ctx, "t", 0, msgs); err != nil {
		t.Fatal(err)
	}
	if len(sink.letters) != 1 || sink.letters[0].Message.Offset != 0 || sink.letters[0].Reason != ReasonInvalidPayload {
		t.Errorf("dead letters %+v, want offset 0 as %s", sink.letters, ReasonInvalidPayload)
	}
	if got := testutil.ToFloat64(a.metrics.events.WithLabelValues("txns", "", ResultTransactionMarker)); got != 1 {
		t.Errorf("%v transaction markers counted, want 1 (offset 1)", got)
	}
}
