package ingest

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// Dead-letter header names. The original message's key and value are kept
// as they were; the headers say where it came from and why it was refused.
const (
	HeaderReason    = "featurestore-reason"
	HeaderDetail    = "featurestore-detail"
	HeaderView      = "featurestore-view"
	HeaderTopic     = "featurestore-topic"
	HeaderPartition = "featurestore-partition"
	HeaderOffset    = "featurestore-offset"
)

// KafkaDeadLetters writes rejected messages to a dead-letter topic.
type KafkaDeadLetters struct {
	w *kafka.Writer
}

// NewKafkaDeadLetters returns a sink writing to topic on brokers, waiting
// for every in-sync replica so that a letter is durable before the batch
// that produced it counts as applied.
func NewKafkaDeadLetters(brokers []string, topic string, transport kafka.RoundTripper) *KafkaDeadLetters {
	return &KafkaDeadLetters{w: &kafka.Writer{
		Addr:                   kafka.TCP(brokers...),
		Topic:                  topic,
		Transport:              transport,
		RequiredAcks:           kafka.RequireAll,
		BatchTimeout:           time.Millisecond,
		AllowAutoTopicCreation: true,
	}}
}

// Send implements DeadLetterSink.
func (d *KafkaDeadLetters) Send(ctx context.Context, letters []DeadLetter) error {
	msgs := make([]kafka.Message, len(letters))
	for i, l := range letters {
		headers := make([]kafka.Header, 0, len(l.Message.Headers)+6)
		headers = append(headers, l.Message.Headers...)
		headers = append(headers,
			kafka.Header{Key: HeaderReason, Value: []byte(l.Reason)},
			kafka.Header{Key: HeaderDetail, Value: []byte(l.Detail)},
			kafka.Header{Key: HeaderTopic, Value: []byte(l.Message.Topic)},
			kafka.Header{Key: HeaderPartition, Value: []byte(strconv.Itoa(l.Message.Partition))},
			kafka.Header{Key: HeaderOffset, Value: []byte(strconv.FormatInt(l.Message.Offset, 10))},
		)
		if l.View != "" {
			headers = append(headers, kafka.Header{Key: HeaderView, Value: []byte(l.View)})
		}
		msgs[i] = kafka.Message{Key: l.Message.Key, Value: l.Message.Value, Headers: headers}
	}
	if err := d.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("write %d dead letters to %s: %w", len(msgs), d.w.Topic, err)
	}
	return nil
}

// Close flushes and closes the writer.
func (d *KafkaDeadLetters) Close() error { return d.w.Close() }
