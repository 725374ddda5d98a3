package online

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/testenv"
)

// BenchmarkRead measures a serving lookup against the real Redis: keys
// entities times views hashes, each read for tiles tile fields plus the
// lifetime and last-value blobs (32 bytes each).
func BenchmarkRead(b *testing.B) {
	c := newClient(b, testenv.RedisAddr(b))
	s := New(c, Options{})
	ctx := context.Background()
	for _, bc := range []struct{ keys, views, tiles int }{
		{1, 2, 10},
		{100, 2, 10},
		{100, 2, 60},
	} {
		b.Run(fmt.Sprintf("keys=%d/views=%d/fields=%d", bc.keys, bc.views, bc.tiles+2), func(b *testing.B) {
			prefix := testenv.UniqueName(b, "v")
			fields := []string{LifetimeField, LastField}
			for i := range bc.tiles {
				fields = append(fields, TileField(int64(1000+i)))
			}
			blob := make([]byte, 32)
			var ups []Update
			var lookups []Lookup
			for e := range bc.keys {
				entity := featurestore.StringKey(fmt.Sprintf("card_%016d", e))
				for v := range bc.views {
					k := Key{View: fmt.Sprintf("%s_%d", prefix, v), Entity: entity}
					ups = append(ups, Update{Key: k, Merge: func(State) (Write, error) {
						w := Write{TTL: time.Minute}
						for _, f := range fields {
							w.Set = append(w.Set, Field{f, blob})
						}
						return w, nil
					}})
					lookups = append(lookups, Lookup{Key: k, Fields: fields})
				}
			}
			if err := s.Apply(ctx, ups); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				out, err := s.Read(ctx, lookups)
				if err != nil {
					b.Fatal(err)
				}
				if len(out[len(out)-1][0]) != len(blob) {
					b.Fatal("missing value")
				}
			}
		})
	}
}

// BenchmarkApply measures ingest writing a batch of 500 hashes, each with one
// new event for a counter tile: read, merge and fenced write, two round trips.
func BenchmarkApply(b *testing.B) {
	c := newClient(b, testenv.RedisAddr(b))
	s := New(c, Options{})
	ctx := context.Background()
	const batch = 500
	view := testenv.UniqueName(b, "v")
	keys := make([]Key, batch)
	for i := range keys {
		keys[i] = Key{View: view, Entity: featurestore.StringKey(fmt.Sprintf("card_%016d", i))}
	}
	// A lean merge, so that the figures are the store's: one event per key,
	// a uint64 counter per tile, skipped behind the fence.
	offset := int64(0)
	ups := make([]Update, batch)
	for i, k := range keys {
		p := int32(i % 8)
		ups[i] = Update{Key: k, Topic: "t", Partitions: []int32{p}, Merge: func(st State) (Write, error) {
			if offset <= st.Fences[0] {
				return Write{}, nil
			}
			var n uint64
			if v := st.Fields[0]; v != nil {
				n = binary.LittleEndian.Uint64(v)
			}
			return Write{
				Set:    []Field{{ups[i].Fields[0], binary.LittleEndian.AppendUint64(nil, n+1)}},
				Fences: []Fence{{p, offset}},
				TTL:    time.Minute,
			}, nil
		}}
	}
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		offset++
		tile := []string{TileField(offset / 60)}
		for i := range ups {
			ups[i].Fields = tile
		}
		if err := s.Apply(ctx, ups); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(batch*b.N)/time.Since(start).Seconds(), "keys/s")
}
