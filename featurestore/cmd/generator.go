package cmd

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/segmentio/kafka-go"
)

// generateTransactions produces example card transactions (the shape of
// examples/sources.yaml) to topic at about rate events per second until ctx
// ends, with a few malformed ones so the dead-letter path shows too. Cards
// and merchants are drawn by Zipf's law, as real activity is skewed: the
// low numbers are busy, so that the lookups the README and the start-up
// banner suggest (card-0001, m-001) find values within seconds, while the
// many others are quiet (about 8% of the events are card-0001's, 0.01%
// card-0999's).
func generateTransactions(ctx context.Context, brokers []string, topic string, rate int, log *slog.Logger) {
	if rate <= 0 {
		return
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireOne}
	defer w.Close()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	cards := rand.NewZipf(rng, 1.1, 1, 999)
	merchants := rand.NewZipf(rng, 1.1, 1, 199)
	countries := []string{"FR", "FR", "FR", "DE", "ES", "US", "GB"}
	channels := []string{"online", "pos", "pos"}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	// Each tick owes a tenth of the rate; the fraction not sent is carried
	// to the next, so that every rate, below 10 or not a multiple of 10,
	// is kept on average.
	perTick, owed := float64(rate)/10, 0.0
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		owed += perTick
		due := int(owed)
		owed -= float64(due)
		if due == 0 {
			continue
		}
		msgs := make([]kafka.Message, 0, due)
		for range due {
			n++
			card := fmt.Sprintf("card-%04d", cards.Uint64())
			var v []byte
			if n%500 == 0 {
				v = []byte(`{"card_id": "` + card + `", "amount": "not a number"}`)
			} else {
				v = fmt.Appendf(nil, `{"txn_id":"t-%d","card_id":%q,"merchant_id":"m-%03d","amount":%.2f,"currency":"EUR","country":%q,"channel":%q,"approved":%t,"event_time":%q}`,
					n, card, merchants.Uint64(), rng.ExpFloat64()*60, countries[rng.IntN(len(countries))], channels[rng.IntN(len(channels))],
					rng.IntN(20) != 0, time.Now().UTC().Format(time.RFC3339Nano))
			}
			msgs = append(msgs, kafka.Message{Key: []byte(card), Value: v})
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil && ctx.Err() == nil {
			log.Warn("event generator: write failed", "err", err)
		}
	}
}
