package testenv

import (
	"context"
	"encoding/base64"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
)

func TestRequireServices(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want bool
	}{
		{name: "nothing set", env: nil, want: false},
		{name: "CI=true", env: map[string]string{"CI": "true"}, want: true},
		{name: "CI=1", env: map[string]string{"CI": "1"}, want: true},
		{name: "CI=false", env: map[string]string{"CI": "false"}, want: false},
		{name: "CI=garbage", env: map[string]string{"CI": "yes please"}, want: false},
		{name: "require=1", env: map[string]string{RequireServicesEnv: "1"}, want: true},
		{name: "require=0 outside CI", env: map[string]string{RequireServicesEnv: "0"}, want: false},
		{name: "require=0 in CI", env: map[string]string{RequireServicesEnv: "0", "CI": "true"}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := requireServices(func(k string) string { return tt.env[k] })
			if got != tt.want {
				t.Errorf("requireServices(%v) = %v, want %v", tt.env, got, tt.want)
			}
		})
	}
}

func TestSplitBrokers(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{in: "", want: nil},
		{in: " , ", want: nil},
		{in: "127.0.0.1:19092", want: []string{"127.0.0.1:19092"}},
		{in: " a:1, b:2 ,,c:3 ", want: []string{"a:1", "b:2", "c:3"}},
	}
	for _, tt := range tests {
		got := splitBrokers(tt.in)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) || len(got) != len(tt.want) {
			t.Errorf("splitBrokers(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUniqueName(t *testing.T) {
	valid := regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)
	seen := map[string]bool{}
	for _, prefix := range []string{"events", "", "bad prefix/with:chars", "events"} {
		name := UniqueName(t, prefix)
		if !valid.MatchString(name) {
			t.Errorf("UniqueName(%q) = %q: not a valid Kafka topic name", prefix, name)
		}
		if seen[name] {
			t.Errorf("UniqueName(%q) = %q: returned twice", prefix, name)
		}
		seen[name] = true
	}
	t.Run("a/very/long/subtest/name/"+strings.Repeat("x", 300), func(t *testing.T) {
		if name := UniqueName(t, "p"); !valid.MatchString(name) {
			t.Errorf("UniqueName = %q (%d bytes): not a valid Kafka topic name", name, len(name))
		}
	})
}

// TestRedis proves the Redis from `make test` works for what the online store
// needs: plain commands and Lua scripts.
func TestRedis(t *testing.T) {
	addr := RedisAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 5 * time.Second})
	defer rdb.Close()

	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING %s: %v", addr, err)
	}

	prefix := UniqueName(t, "fs")
	key, counter := prefix+":value", prefix+":counter"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		rdb.Del(ctx, key, counter)
	})

	if err := rdb.Set(ctx, key, "hello", time.Minute).Err(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
	got, err := rdb.Get(ctx, key).Result()
	if err != nil || got != "hello" {
		t.Fatalf("GET %s = %q, %v; want %q", key, got, err, "hello")
	}

	// Increment and refresh the TTL atomically, as tile updates do.
	script := redis.NewScript(`
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return v`)
	for i, want := range []int64{5, 10, 15} {
		got, err := script.Run(ctx, rdb, []string{counter}, 5, 60000).Int64()
		if err != nil {
			t.Fatalf("EVAL #%d: %v", i, err)
		}
		if got != want {
			t.Fatalf("EVAL #%d = %d, want %d", i, got, want)
		}
	}
	ttl, err := rdb.PTTL(ctx, counter).Result()
	if err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("PTTL %s = %v, %v; want in (0, 1m]", counter, ttl, err)
	}
}

// TestKafkaConsumerGroup proves the Kafka from `make test` works for what
// ingest needs: a multi-partition topic, kafka-go's Writer, and a kafka-go
// ConsumerGroup with one reader per assigned partition that commits offsets.
func TestKafkaConsumerGroup(t *testing.T) {
	brokers := KafkaBrokers(t)
	const partitions, total = 3, 100
	topic := UniqueName(t, "events")
	groupID := UniqueName(t, "group")
	CreateTopic(t, brokers, topic, partitions)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 10 * time.Millisecond,
	}
	msgs := make([]kafka.Message, total)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: fmt.Appendf(nil, "entity-%03d", i), Value: []byte(strconv.Itoa(i))}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("write %d messages to %s: %v", total, topic, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close writer: %v", err)
	}

	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                groupID,
		Brokers:           brokers,
		Topics:            []string{topic},
		StartOffset:       kafka.FirstOffset,
		HeartbeatInterval: 500 * time.Millisecond,
		SessionTimeout:    6 * time.Second,
		RebalanceTimeout:  6 * time.Second,
		Timeout:           5 * time.Second,
		JoinGroupBackoff:  200 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("new consumer group %s: %v", groupID, err)
	}
	closed := false
	closeGroup := func() {
		if !closed {
			closed = true
			if err := group.Close(); err != nil {
				t.Errorf("close consumer group: %v", err)
			}
		}
	}
	defer closeGroup()

	// Next reports errors that the group retries by itself (such as
	// COORDINATOR_NOT_AVAILABLE), so callers keep calling it.
	var gen *kafka.Generation
	for gen == nil {
		gen, err = group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("join consumer group %s: %v", groupID, err)
			}
			t.Logf("join consumer group %s: %v (retrying)", groupID, err)
		}
	}
	assigned := gen.Assignments[topic]
	if len(assigned) != partitions {
		t.Fatalf("generation %d assigned %d partitions of %s, want %d", gen.ID, len(assigned), topic, partitions)
	}

	type record struct {
		partition int
		value     string
	}
	records := make(chan record)
	for _, a := range assigned {
		partition, offset := a.ID, a.Offset
		gen.Start(func(gctx context.Context) {
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers:   brokers,
				Topic:     topic,
				Partition: partition,
				MinBytes:  1,
				MaxBytes:  1 << 20,
				MaxWait:   100 * time.Millisecond,
			})
			defer r.Close()
			if err := r.SetOffset(offset); err != nil {
				t.Errorf("partition %d: set offset %d: %v", partition, offset, err)
				return
			}
			for {
				m, err := r.ReadMessage(gctx)
				if err != nil {
					return // the generation ended
				}
				if err := gen.CommitOffsets(map[string]map[int]int64{topic: {partition: m.Offset + 1}}); err != nil {
					t.Errorf("partition %d: commit offset %d: %v", partition, m.Offset+1, err)
					return
				}
				select {
				case records <- record{partition: m.Partition, value: string(m.Value)}:
				case <-gctx.Done():
					return
				}
			}
		})
	}

	seen := map[string]bool{}
	perPartition := map[int]int64{}
	for len(seen) < total {
		select {
		case r := <-records:
			if seen[r.value] {
				t.Errorf("message %s consumed twice", r.value)
			}
			seen[r.value] = true
			perPartition[r.partition]++
		case <-ctx.Done():
			t.Fatalf("consumed %d of %d messages before the deadline", len(seen), total)
		}
	}
	for p := range partitions {
		if perPartition[p] == 0 {
			t.Errorf("partition %d received no messages; want all %d used (per partition: %v)", p, partitions, perPartition)
		}
	}
	// Ends the generation and waits for every reader to return, so all
	// commits are done before they are checked.
	closeGroup()

	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{
		GroupID: groupID,
		Topics:  map[string][]int{topic: {0, 1, 2}},
	})
	if err != nil {
		t.Fatalf("fetch committed offsets of %s: %v", groupID, err)
	}
	if resp.Error != nil {
		t.Fatalf("fetch committed offsets of %s: %v", groupID, resp.Error)
	}
	var committed int64
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Errorf("partition %d: committed offset: %v", p.Partition, p.Error)
			continue
		}
		if p.CommittedOffset != perPartition[p.Partition] {
			t.Errorf("partition %d: committed offset %d, want %d", p.Partition, p.CommittedOffset, perPartition[p.Partition])
		}
		committed += p.CommittedOffset
	}
	if committed != total {
		t.Errorf("committed offsets add up to %d, want %d", committed, total)
	}
}

// TestKafkaClusterID: ids of 16 bytes in URL-safe base64, none starting
// with '-' (which the storage tool takes for an option).
func TestKafkaClusterID(t *testing.T) {
	for range 2000 {
		id := kafkaClusterID()
		b, err := base64.RawURLEncoding.DecodeString(id)
		if err != nil || len(b) != 16 || id[0] == '-' {
			t.Fatalf("cluster id %q: %d bytes, %v", id, len(b), err)
		}
	}
}
