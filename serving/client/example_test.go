package client_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/featurestore/featurestore/serving/client"
)

// Look up the features of the fraud model for one transaction: the
// feature service spans the card's and the merchant's features, so the
// join keys are named.
func Example() {
	c, err := client.Dial(serverAddr) // e.g. "127.0.0.1:6566"
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res, err := c.Lookup(ctx, client.Service("fraud_detection_v1"),
		client.Keys{"card_id": "card-0001", "merchant_id": "m-001"})
	if err != nil {
		log.Fatal(err)
	}
	for j, name := range res.Features() {
		fmt.Printf("%-32s %v\n", name, res.At(0, j))
	}
	// Output:
	// card_txn:txn_count_10m           1
	// card_txn:txn_count_1h            3
	// card_txn:amount_sum_1h           99.75
	// card_txn:amount_sum_1d           99.75
	// card_txn:distinct_merchants_1h   2
	// card_txn:declined_count_1h       1
	// card_txn:last_country            "DE"
	// merchant_txn:txn_count_1h        3
	// merchant_txn:distinct_cards_1h   2
	// merchant_txn:amount_mean_1d      16.916666666666668
}

// Rows come back in request order, one per entity given, duplicates
// included; a card never seen has counts of 0 and no last value.
func ExampleClient_Lookup() {
	c, err := client.Dial(serverAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	cards := []client.Entity{client.Key{"card-0002"}, client.Key{"card-9999"}, client.Key{"card-0002"}}
	res, err := c.Lookup(context.Background(), client.Features("card_txn:txn_count_1h", "card_txn:last_country"), cards...)
	if err != nil {
		log.Fatal(err)
	}
	for i := range res.Len() {
		n, _ := res.Get(i, "card_txn:txn_count_1h").Int64Val()
		country := res.Get(i, "card_txn:last_country")
		fmt.Printf("%v: %d transactions in the last hour, last country %v\n", cards[i], n, country)
	}
	// Output:
	// [card-0002]: 1 transactions in the last hour, last country "DE"
	// [card-9999]: 0 transactions in the last hour, last country not found
	// [card-0002]: 1 transactions in the last hour, last country "DE"
}

// A value's status says why it is missing; its event time and window say
// which events it reflects.
func ExampleValue() {
	c, err := client.Dial(serverAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	res, err := c.Lookup(context.Background(), client.Features("card_txn:amount_sum_10m", "card_txn:amount_max_1d", "card_txn:last_amounts"),
		client.Key{"card-0001"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("read at", res.ReadTime().Format(time.TimeOnly))
	sum := res.Get(0, "card_txn:amount_sum_10m")
	x, _ := sum.DoubleVal()
	start, end, _ := sum.Window()
	last, _ := sum.EventTime()
	fmt.Printf("sum over [%s, %s): %g, newest event at %s\n", start.Format(time.TimeOnly), end.Format("15:04:05.000"), x, last.Format(time.TimeOnly))
	amounts, _ := res.Get(0, "card_txn:last_amounts").DoubleListVal() // newest first
	fmt.Println("last amounts:", amounts, "max over a day:", res.Get(0, "card_txn:amount_max_1d"))
	// Output:
	// read at 10:30:00
	// sum over [10:21:00, 10:30:00.001): 7.25, newest event at 10:26:00
	// last amounts: [7.25 80 12.5] max over a day: 80
}

// Errors carry gRPC codes; an unknown name is InvalidArgument, and the
// message names it.
func ExampleClient_Lookup_errors() {
	c, err := client.Dial(serverAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	_, err = c.Lookup(context.Background(), client.Features("card_txn:txn_count_1w"), client.Key{"card-0001"})
	fmt.Println(status.Code(err), status.Convert(err).Message())
	_, err = c.Lookup(context.Background(), client.Features("card_txn:txn_count_1h"), client.Key{42})
	fmt.Println(status.Code(err) == codes.InvalidArgument, status.Convert(err).Message())
	// Output:
	// InvalidArgument unknown feature "txn_count_1w" in feature view "card_txn" (did you mean "txn_count_1d"?)
	// true entity 0: join key "card_id" (position 0) of entity "card": want a string value, got int64
}

// Connect over TLS with a bearer token, and tune the connection with gRPC
// dial options.
func ExampleDial() {
	c, err := client.Dial("featurestore.internal:6566",
		client.WithTLS(&tls.Config{MinVersion: tls.VersionTLS12}),
		client.WithBearerToken(os.Getenv("FEATURESTORE_TOKEN")),
		client.WithDialOptions(grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: time.Minute})),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}
