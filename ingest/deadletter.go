package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// Dead-letter header names. The original message's key and value are kept
// as they were, and its headers but those starting with featurestore- (a
// letter's own, when a letter is rejected again); the headers say where it
// came from and why it was refused.
const (
	headerPrefix = "featurestore-"

	HeaderReason    = "featurestore-reason"
	HeaderDetail    = "featurestore-detail"
	HeaderView      = "featurestore-view"
	HeaderTopic     = "featurestore-topic"
	HeaderPartition = "featurestore-partition"
	HeaderOffset    = "featurestore-offset"
	// HeaderTruncated is set on a letter whose key or value was cut, or
	// whose original headers were left out, to fit the dead-letter topic:
	// "key K value V", their sizes in the original message, in bytes, and
	// " headers H", the bytes of the original headers left out, when some
	// were. The original is still in the source topic at the letter's
	// partition and offset.
	HeaderTruncated = "featurestore-truncated"
)

// maxLetterBytes bounds the key and value of a letter: half of both Kafka's
// default max.message.bytes and kafka-go's default Writer.BatchBytes
// (1 MiB each), which leaves room for the headers. A letter larger than the
// topic takes would fail the batch that rejected it on every retry: its
// partition would stop for good.
const maxLetterBytes = 512 << 10

// maxLetterHeaderBytes bounds the original headers a letter keeps (names
// and values): those beyond are left out, so that a message whose headers
// alone exceed what the topic takes (or kafka-go's 1 MiB) still makes a
// letter. A letter the topic refuses all the same keeps none.
const maxLetterHeaderBytes = 64 << 10

// KafkaDeadLetters writes rejected messages to a dead-letter topic.
type KafkaDeadLetters struct {
	w *kafka.Writer
}

// NewKafkaDeadLetters returns a sink writing to topic on brokers, waiting
// for every in-sync replica so that a letter is durable before the batch
// that produced it counts as applied. A write of letters ends within
// about the default ShutdownTimeout (30s); see NewKafkaDeadLettersWithin.
func NewKafkaDeadLetters(brokers []string, topic string, transport kafka.RoundTripper) *KafkaDeadLetters {
	return NewKafkaDeadLettersWithin(brokers, topic, transport, defaultShutdownTimeout)
}

// NewKafkaDeadLettersWithin is NewKafkaDeadLetters whose writes of letters
// end within about d (at least a few seconds): GroupConfig.ShutdownTimeout,
// which bounds the attempt at a batch that sends them.
//
// kafka-go's Writer goes on with a write its caller gave up on (Send's
// context ended): by default 10 attempts of up to 10s each, and its Close
// waits for them, so a stop, or a new registry version, would wait minutes
// for a broker that does not answer. Here the attempts of a write, and the
// backoffs between them, fit in d: a write does not outlive the attempt
// at the batch that sent it by much. A letter not written fails its batch,
// which is retried, letters included.
func NewKafkaDeadLettersWithin(brokers []string, topic string, transport kafka.RoundTripper, d time.Duration) *KafkaDeadLetters {
	return &KafkaDeadLetters{w: &kafka.Writer{
		Addr:                   kafka.TCP(brokers...),
		Topic:                  topic,
		Transport:              transport,
		RequiredAcks:           kafka.RequireAll,
		BatchTimeout:           time.Millisecond,
		AllowAutoTopicCreation: true,
		MaxAttempts:            letterAttempts,
		WriteBackoffMax:        letterBackoffMax,
		WriteTimeout:           letterWriteTimeout(d),
	}}
}

// letterAttempts is how many times kafka-go tries a write of letters: a
// leader that moved, or a topic just created, is retried at once rather
// than by the batch's backoff.
const letterAttempts = 3

// letterBackoffMax bounds kafka-go's backoff between attempts at a write of
// letters (its default).
const letterBackoffMax = time.Second

// letterWriteTimeout is the timeout of each of letterAttempts produce
// requests, such that they and the backoffs between them take at most d,
// and at least 2s each.
func letterWriteTimeout(d time.Duration) time.Duration {
	return max((d-(letterAttempts-1)*letterBackoffMax)/letterAttempts, 2*time.Second)
}

// Send implements DeadLetterSink. A letter's key and value are cut to
// maxLetterBytes together; if the topic refuses letters as too large all
// the same (its max.message.bytes is lower), those are sent one at a time,
// and one refused alone goes without key and value. Cut letters carry
// HeaderTruncated. Any other failure fails the call, to be retried.
func (d *KafkaDeadLetters) Send(ctx context.Context, letters []DeadLetter) error {
	msgs := make([]kafka.Message, len(letters))
	for i, l := range letters {
		msgs[i] = letterMessage(l, maxLetterBytes, maxLetterHeaderBytes)
	}
	err := d.w.WriteMessages(ctx, msgs...)
	var failed []int
	var we kafka.WriteErrors
	switch {
	case err == nil:
		return nil
	case errors.As(err, &we) && len(we) == len(msgs):
		for i, e := range we {
			if e == nil {
				continue
			}
			if !errors.Is(e, kafka.MessageSizeTooLarge) {
				return fmt.Errorf("write %d dead letters to %s: %w", len(msgs), d.w.Topic, err)
			}
			failed = append(failed, i)
		}
	case errors.Is(err, kafka.MessageSizeTooLarge):
		for i := range msgs {
			failed = append(failed, i)
		}
	default:
		return fmt.Errorf("write %d dead letters to %s: %w", len(msgs), d.w.Topic, err)
	}
	for _, i := range failed {
		err := d.w.WriteMessages(ctx, msgs[i])
		if errors.Is(err, kafka.MessageSizeTooLarge) || errors.As(err, &we) && len(we) == 1 && errors.Is(we[0], kafka.MessageSizeTooLarge) {
			err = d.w.WriteMessages(ctx, letterMessage(letters[i], 0, 0))
		}
		if err != nil {
			return fmt.Errorf("write a dead letter of %s/%d@%d to %s: %w", letters[i].Message.Topic, letters[i].Message.Partition, letters[i].Message.Offset, d.w.Topic, err)
		}
	}
	return nil
}

// letterMessage is the message of a letter, with its key and value cut to
// at most limit bytes together (the key kept first), and the original
// headers kept in order while they take at most headerLimit bytes.
func letterMessage(l DeadLetter, limit, headerLimit int) kafka.Message {
	headers := make([]kafka.Header, 0, len(l.Message.Headers)+7)
	kept, dropped := 0, 0
	for _, h := range l.Message.Headers {
		// A letter re-driven into a source and rejected again: the headers
		// of its first rejection would be read for this one's.
		if strings.HasPrefix(h.Key, headerPrefix) {
			continue
		}
		if n := len(h.Key) + len(h.Value); dropped == 0 && kept+n <= headerLimit {
			headers = append(headers, h)
			kept += n
		} else {
			dropped += n
		}
	}
	headers = append(headers,
		kafka.Header{Key: HeaderReason, Value: []byte(l.Reason)},
		kafka.Header{Key: HeaderDetail, Value: []byte(capDetail(l.Detail))},
		kafka.Header{Key: HeaderTopic, Value: []byte(l.Message.Topic)},
		kafka.Header{Key: HeaderPartition, Value: []byte(strconv.Itoa(l.Message.Partition))},
		kafka.Header{Key: HeaderOffset, Value: []byte(strconv.FormatInt(l.Message.Offset, 10))},
	)
	if l.View != "" {
		headers = append(headers, kafka.Header{Key: HeaderView, Value: []byte(l.View)})
	}
	key, value := l.Message.Key, l.Message.Value
	if len(key)+len(value) > limit || dropped > 0 {
		v := fmt.Appendf(nil, "key %d value %d", len(key), len(value))
		if dropped > 0 {
			v = fmt.Appendf(v, " headers %d", dropped)
		}
		headers = append(headers, kafka.Header{Key: HeaderTruncated, Value: v})
		key = key[:min(len(key), limit)]
		value = value[:min(len(value), limit-len(key))]
	}
	return kafka.Message{Key: key, Value: value, Headers: headers}
}

// Close flushes and closes the writer, waiting for the writes in flight
// (each bounded as NewKafkaDeadLettersWithin says).
func (d *KafkaDeadLetters) Close() error { return d.w.Close() }
