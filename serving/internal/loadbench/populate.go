package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/ingest"
	"github.com/featurestore/featurestore/registry"
)

// defs are the benchmark's definitions: card transactions feeding two views
// of the card, one of windowed aggregations over 5-minute tiles (its 2h
// windows read 24 tiles), one of last values.
const defs = `kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: txns
kafka: {topic: loadbench_txns}
timestamp: {field: ts, encoding: epoch_ms}
keys: {card_id: card}
fields: {amount: double, merchant: string, country: string, channel: string, approved: bool}
allowed_lateness: 1h
---
kind: FeatureView
name: card_windows
entity: card
source: txns
tile: 5m
features:
  - {name: txn_count_30m, aggregation: count, window: 30m}
  - {name: txn_count_2h, aggregation: count, window: 2h}
  - {name: amount_sum_2h, aggregation: sum, field: amount, window: 2h}
  - {name: amount_max_2h, aggregation: max, field: amount, window: 2h}
  - {name: amount_mean_2h, aggregation: mean, field: amount, window: 2h}
---
kind: FeatureView
name: card_last
entity: card
source: txns
ttl: 6h
features:
  - {name: last_amount, field: amount, type: double}
  - {name: last_merchant, field: merchant, type: string}
  - {name: last_country, field: country, type: string}
  - {name: last_channel, field: channel, type: string}
  - {name: last_approved, field: approved, type: bool}
---
kind: FeatureService
name: loadbench_lookup
features: [card_windows:*, card_last:*]
`

// features are the 10 features of a lookup, in response order.
var features = []string{
	"card_windows:txn_count_30m", "card_windows:txn_count_2h", "card_windows:amount_sum_2h",
	"card_windows:amount_max_2h", "card_windows:amount_mean_2h",
	"card_last:last_amount", "card_last:last_merchant", "card_last:last_country",
	"card_last:last_channel", "card_last:last_approved",
}

const (
	eventsPerEntity = 4
	// eventSpacing spaces an entity's events; the newest is at most
	// jitter old. All of them stay in the 2h windows for an hour, the
	// time a population is reused.
	eventSpacing = 15 * time.Minute
	jitter       = 5 * time.Minute
	reuseFor     = time.Hour
	partitions   = 4
	batchEnts    = 500
)

// entityID returns the join key of entity i.
func entityID(i int) string { return fmt.Sprintf("card_%07d", i) }

// markerKey holds what was populated and when; it lies outside the store's
// namespace (fs:).
func markerKey(project string) string { return "featurestore-loadbench:" + project }

func defsHash() string {
	h := sha256.Sum256([]byte(defs))
	return hex.EncodeToString(h[:8])
}

// applyDefs commits the definitions to the project's registry with the
// binary, as an operator would; applying them unchanged changes nothing.
func applyDefs(ctx context.Context, binary, redisAddr, project, dir string) (*registry.Registry, error) {
	defsDir := filepath.Join(dir, "defs")
	if err := os.MkdirAll(defsDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(defsDir, "loadbench.yaml"), []byte(defs), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, binary, "apply", "--project", project, "--redis-addr", redisAddr, "--message", "loadbench", defsDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("featurestore apply: %w\n%s", err, out)
	}
	return registry.LoadDir(defsDir)
}

// marker is what the marker key records.
type marker struct {
	entities int
	defs     string
	at       time.Time
}

func (m marker) String() string {
	return fmt.Sprintf("entities=%d defs=%s at=%d", m.entities, m.defs, m.at.UnixMilli())
}

func parseMarker(s string) (marker, bool) {
	var m marker
	var at int64
	if _, err := fmt.Sscanf(s, "entities=%d defs=%s at=%d", &m.entities, &m.defs, &at); err != nil {
		return marker{}, false
	}
	m.at = time.UnixMilli(at)
	return m, true
}

// ensureData makes sure the project holds n entities written less than
// reuseFor ago with the current definitions, populating them if not, and
// returns the time of the population.
//
// With save, the population is saved to Redis's snapshot file (SAVE), for
// a Redis that loads it when it starts again.
func ensureData(ctx context.Context, rc *redis.Client, reg *registry.Registry, project string, n int, save bool, logf func(string, ...any)) (time.Time, error) {
	prev, ok := parseMarker(rc.Get(ctx, markerKey(project)).Val())
	if ok && prev.entities == n && prev.defs == defsHash() && time.Since(prev.at) < reuseFor {
		logf("reusing the %d entities written %s ago", n, time.Since(prev.at).Round(time.Second))
		return prev.at, nil
	}
	// Start from empty hashes: a population over an older one would leave
	// more events in the windows than the benchmark means to read.
	if err := rc.Del(ctx, markerKey(project)).Err(); err != nil {
		return time.Time{}, err
	}
	drop := max(n, prev.entities)
	start := time.Now()
	if err := dropEntities(ctx, rc, project, reg, drop); err != nil {
		return time.Time{}, err
	}
	logf("dropped the hashes of %d entities in %s", drop, time.Since(start).Round(time.Millisecond))
	at := time.Now()
	if err := populate(ctx, rc, reg, project, n, at, logf); err != nil {
		return time.Time{}, err
	}
	m := marker{entities: n, defs: defsHash(), at: at}
	if err := rc.Set(ctx, markerKey(project), m.String(), 0).Err(); err != nil {
		return time.Time{}, err
	}
	if save {
		start := time.Now()
		if err := saveSnapshot(ctx, rc); err != nil {
			return time.Time{}, fmt.Errorf("save the population: %w", err)
		}
		logf("saved the population for the next runs in %s", time.Since(start).Round(time.Millisecond))
	}
	return at, nil
}

// saveSnapshot has Redis write its snapshot file in the background
// (BGSAVE: a SAVE of 1M entities outlasts a command timeout) and waits
// until it is written.
func saveSnapshot(ctx context.Context, rc *redis.Client) error {
	if err := rc.BgSave(ctx).Err(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		info, err := rc.Info(ctx, "persistence").Result()
		if err != nil {
			return err
		}
		if strings.Contains(info, "rdb_bgsave_in_progress:0") {
			if !strings.Contains(info, "rdb_last_bgsave_status:ok") {
				return errors.New("redis reports the background save failed; see its log")
			}
			return nil
		}
	}
}

// dropEntities unlinks the hashes of entities [0, n) in every view.
func dropEntities(ctx context.Context, rc *redis.Client, project string, reg *registry.Registry, n int) error {
	const chunk = 2000
	var views []string
	for _, v := range reg.Views {
		views = append(views, v.Name)
	}
	for lo := 0; lo < n; lo += chunk {
		keys := make([]string, 0, chunk*len(views))
		for i := lo; i < min(lo+chunk, n); i++ {
			for _, v := range views {
				keys = append(keys, online.Key{Project: project, View: v, Entity: featurestore.StringKey(entityID(i))}.Name())
			}
		}
		if err := rc.Unlink(ctx, keys...).Err(); err != nil {
			return fmt.Errorf("unlink old benchmark hashes: %w", err)
		}
	}
	return nil
}

// populate writes eventsPerEntity events of each of n entities through the
// ingest applier, the write path of `featurestore ingest` after Kafka: on
// `partitions` partitions in parallel, batches of batchEnts entities, each
// entity's events in one batch. Offsets continue from the saved positions,
// so a population after an older one is not taken for a replay.
func populate(ctx context.Context, rc *redis.Client, reg *registry.Registry, project string, n int, at time.Time, logf func(string, ...any)) error {
	src := reg.Source("txns")
	store := online.New(rc, online.Options{})
	a, err := ingest.NewApplier(project, reg, src, store, ingest.NewPositions(rc, project), nil, nil)
	if err != nil {
		return err
	}
	topic := src.Kafka.Topic
	var done atomic.Int64
	start := time.Now()
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				logf("populating: %d of %d entities, %.0f entities/s", d, n, float64(d)/time.Since(start).Seconds())
			}
		}
	}()
	defer close(stop)
	var wg sync.WaitGroup
	errs := make([]error, partitions)
	for p := range partitions {
		wg.Go(func() {
			errs[p] = populatePartition(ctx, a, topic, p, n, at, &done)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	took := time.Since(start)
	logf("populated %d entities (%d events) in %s: %.0f entities/s", n, n*eventsPerEntity, took.Round(time.Millisecond), float64(n)/took.Seconds())
	return nil
}

func populatePartition(ctx context.Context, a *ingest.Applier, topic string, p, n int, at time.Time, done *atomic.Int64) error {
	offset, err := a.Resume(ctx, topic, p)
	if err != nil {
		return err
	}
	if offset < 0 { // kafka.FirstOffset: nothing applied yet
		offset = 0
	}
	rng := rand.New(rand.NewPCG(uint64(p), 42))
	merchants := []string{"m_grocery", "m_fuel", "m_travel", "m_online", "m_restaurant", "m_pharmacy"}
	countries := []string{"FR", "DE", "ES", "IT", "GB", "US"}
	channels := []string{"pos", "online", "atm"}
	var msgs []kafka.Message
	var buf []byte
	flush := func() error {
		if len(msgs) == 0 {
			return nil
		}
		if err := a.Apply(ctx, topic, p, msgs); err != nil {
			return err
		}
		done.Add(int64(len(msgs) / eventsPerEntity))
		msgs = msgs[:0]
		return nil
	}
	now := at.UnixMilli()
	for e := p; e < n; e += partitions {
		newest := now - rng.Int64N(jitter.Milliseconds())
		for j := range eventsPerEntity {
			ts := newest - int64(j)*eventSpacing.Milliseconds()
			buf = buf[:0]
			buf = append(buf, `{"card":"`...)
			buf = append(buf, entityID(e)...)
			buf = append(buf, `","ts":`...)
			buf = strconv.AppendInt(buf, ts, 10)
			buf = append(buf, `,"amount":`...)
			buf = strconv.AppendFloat(buf, float64(rng.IntN(50000))/100, 'f', 2, 64)
			buf = append(buf, `,"merchant":"`...)
			buf = append(buf, merchants[rng.IntN(len(merchants))]...)
			buf = append(buf, `","country":"`...)
			buf = append(buf, countries[rng.IntN(len(countries))]...)
			buf = append(buf, `","channel":"`...)
			buf = append(buf, channels[rng.IntN(len(channels))]...)
			buf = append(buf, `","approved":`...)
			buf = strconv.AppendBool(buf, rng.IntN(20) != 0)
			buf = append(buf, '}')
			msgs = append(msgs, kafka.Message{Topic: topic, Partition: p, Offset: offset, Value: append([]byte(nil), buf...)})
			offset++
		}
		if len(msgs) >= batchEnts*eventsPerEntity {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// joinFeatures is for messages.
func joinFeatures() string { return strings.Join(features, ",") }
