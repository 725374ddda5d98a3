package online

import (
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/featurestore/featurestore/featurestore"
)

// TestMiniredis checks that the store works on the in-process Redis of the
// embedded dev mode (featurestore/devenv), which needs no services.
func TestMiniredis(t *testing.T) {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { c.Close() })
	s := New(c, Options{})
	ctx := testContext(t)
	k := Key{View: "card_txn", Entity: featurestore.StringKey("card:{1}")}
	events := []event{{0, 5, 9, 2}, {1, 3, 9, 3}}
	for range 2 { // the second time is a replay
		if err := s.Apply(ctx, []Update{counterUpdate(k, "t", events, nil)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Read(ctx, []Lookup{{Key: k, Fields: []string{TileField(9), VersionField, FenceField("t", 1)}}})
	if err != nil {
		t.Fatal(err)
	}
	if counter(t, got[0][0]) != 5 || string(got[0][1]) != "1" || string(got[0][2]) != "3" {
		t.Errorf("got %q", got[0])
	}
	if ttl := m.TTL(k.Name()); ttl != testTTL {
		t.Errorf("TTL %v, want %v", ttl, testTTL)
	}
	m.FastForward(testTTL + time.Second)
	if m.Exists(k.Name()) {
		t.Error("hash outlived its TTL")
	}
}
