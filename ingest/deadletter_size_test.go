package ingest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestDeadLettersTooLarge sends letters bigger than a real dead-letter
// topic takes: one over maxLetterBytes and one whose headers alone are
// 1.5 MB (over kafka-go's 1 MiB, which it refuses before the broker sees
// it) to a topic of Kafka's default size limit, and, to a topic with
// max.message.bytes at 4 KiB, one that fits and two that do not. Each must arrive (with its value cut to what fits, and
// HeaderTruncated), never fail the call: a failed letter fails its batch on
// every retry, which would stop the partition for good.
func TestDeadLettersTooLarge(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	big := bytes.Repeat([]byte("b"), 2<<20)
	letter := func(off int64, value []byte) DeadLetter {
		return DeadLetter{Message: kafka.Message{Topic: "src", Partition: 1, Offset: off, Key: []byte("k"), Value: value}, Reason: ReasonInvalidPayload, Detail: "d"}
	}
	type got struct {
		offset    string
		valueLen  int
		truncated string
		headers   int // the original headers kept
	}
	read := func(topic string, n int) []got {
		rd := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond, MaxBytes: 4 << 20})
		defer rd.Close()
		var out []got
		for range n {
			m, err := rd.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("read %s: %v", topic, err)
			}
			g := got{valueLen: len(m.Value)}
			for _, h := range m.Headers {
				switch h.Key {
				case HeaderOffset:
					g.offset = string(h.Value)
				case HeaderTruncated:
					g.truncated = string(h.Value)
				default:
					if !strings.HasPrefix(h.Key, headerPrefix) {
						g.headers++
					}
				}
			}
			out = append(out, g)
		}
		return out
	}

	plain := testenv.UniqueName(t, "dlq")
	testenv.CreateTopic(t, brokers, plain, 1)
	d := NewKafkaDeadLetters(brokers, plain, nil)
	defer d.Close()
	// A rejection whose detail quotes a large field whole: a bad time of
	// 300 KB, each byte quoted as four.
	payload := `{"ts":"` + strings.Repeat("\xff", 300<<10) + `"}`
	long := letter(6, []byte(payload))
	long.Detail = fmt.Sprintf("not RFC 3339: %q", strings.Repeat("\xff", 300<<10))
	// 30 headers of 50 KB: the first keep within maxLetterHeaderBytes.
	headed := letter(7, []byte("small"))
	for i := range 30 {
		headed.Message.Headers = append(headed.Message.Headers, kafka.Header{Key: fmt.Sprintf("h%02d", i), Value: bytes.Repeat([]byte("h"), 50_000)})
	}
	if err := d.Send(ctx, []DeadLetter{letter(1, []byte("small")), letter(2, big), long, headed}); err != nil {
		t.Fatal(err)
	}
	want := []got{{"1", 5, "", 0}, {"2", maxLetterBytes - 1, fmt.Sprintf("key 1 value %d", len(big)), 0}, {"6", len(payload), "", 0},
		{"7", 5, fmt.Sprintf("key 1 value 5 headers %d", 29*50_003), 1}}
	if g := read(plain, 4); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("default topic: got %v, want %v", g, want)
	}

	small := testenv.UniqueName(t, "dlq-small")
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: small, NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: "4096"}},
	}}})
	if err == nil {
		err = resp.Errors[small]
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = client.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{small}})
	})
	ds := NewKafkaDeadLetters(brokers, small, nil)
	defer ds.Close()
	letters := []DeadLetter{letter(3, bytes.Repeat([]byte("m"), 10_000)), letter(4, []byte("fits")), letter(5, big)}
	if err := ds.Send(ctx, letters); err != nil {
		t.Fatal(err)
	}
	g := read(small, 3)
	byOffset := map[string]got{}
	for _, x := range g {
		byOffset[x.offset] = x
	}
	want = []got{{"3", 0, "key 1 value 10000", 0}, {"4", 4, "", 0}, {"5", 0, fmt.Sprintf("key 1 value %d", len(big)), 0}}
	for _, w := range want {
		if byOffset[w.offset] != w {
			t.Errorf("small topic: letter of offset %s: got %+v, want %+v (all: %v)", w.offset, byOffset[w.offset], w, g)
		}
	}
}

// TestRejectionDetailCapped: a rejection quoting a large field keeps a
// detail of at most maxDetailBytes, cut at a character boundary, saying how
// long it was.
func TestRejectionDetailCapped(t *testing.T) {
	field := strings.Repeat("é", 2000) // 2 bytes each: a cut may fall inside one
	de := reject(ReasonBadTime, "not RFC 3339: %s", field)
	full := "not RFC 3339: " + field
	if len(de.Detail) > maxDetailBytes+32 || !utf8.ValidString(de.Detail) ||
		!strings.HasPrefix(full, strings.TrimSuffix(de.Detail, fmt.Sprintf("... (%d bytes)", len(full)))) ||
		!strings.HasSuffix(de.Detail, fmt.Sprintf("... (%d bytes)", len(full))) {
		t.Errorf("detail of %d bytes: %q", len(de.Detail), de.Detail)
	}
	if short := reject(ReasonBadTime, "not RFC 3339: %q", "x"); short.Detail != `not RFC 3339: "x"` {
		t.Errorf("short detail changed: %q", short.Detail)
	}
}
