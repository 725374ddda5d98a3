package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/registry"
)

// TestKeyHoldingNoHashIsCorruptState: a key of the online store that
// something else wrote as another type (Redis replies WRONGTYPE to the
// write's script) fails the batch as a hash that does not decode does: a
// fault to repair, logged at error level, not an outage to ride out.
func TestKeyHoldingNoHashIsCorruptState(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), ContextTimeoutEnabled: true})
	defer rc.Close()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(futureDefs(""))})
	if err != nil {
		t.Fatal(err)
	}
	project := testenv.UniqueName(t, "p")
	a, err := NewApplier(project, r, r.Source("txns"), online.New(rc, online.Options{}), NewPositions(rc, project), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := online.Key{Project: project, View: "n", Entity: featurestore.StringKey("c1")}.Name()
	if err := rc.Set(ctx, key, "not a hash", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	err = a.Apply(ctx, "txns", 0, []kafka.Message{{Topic: "txns", Offset: 0, Value: fmt.Appendf(nil, `{"card":"c1","ts":%d}`, now)}})
	if err == nil {
		t.Fatal("a batch writing to a key that holds a string was applied")
	}
	if !corruptState(err) {
		t.Errorf("%v: not taken for corrupt state", err)
	}
}
