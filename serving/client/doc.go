// Package client looks features up in a featurestore serving process
// (`featurestore serve`) over gRPC.
//
// Dial once and share the Client; it is safe for concurrent use and keeps
// a connection to each address the server's name resolves to, made on the
// first call, sending lookups to each in turn:
//
//	c, err := client.Dial("featurestore.internal:6566", client.WithTLS(&tls.Config{}), client.WithBearerToken(token))
//	...
//	defer c.Close()
//	res, err := c.Lookup(ctx, client.Service("fraud_detection_v1"),
//		client.Keys{"card_id": "card-0001", "merchant_id": "m-001"})
//	n, ok := res.Get(0, "card_txn:txn_count_1h").Int64Val()
//
// A lookup names its features with Features (references "view:feature") or
// Service (a feature service), and gives one Entity per row: Key, the
// join-key values in the entity's declared order, for features of one
// entity; or Keys, the join keys by name, which also serves features of
// several entities. The Result has one row per entity, in request order,
// duplicates included, and one column per feature. Each Value carries its
// status (a missing, expired or null value is not an error, nor is an
// entity whose state the server could not read: StatusError), the event time
// it comes from and, for windowed features, the interval of event time its
// window covered.
//
// On-demand features are computed from stored features and values of the
// request: give them with Selector.WithRequest for every row, or
// WithRequest for one row (which takes precedence):
//
//	sel := client.Service("fraud_detection_v2").WithRequest(map[string]any{"country": "FR"})
//	res, err := c.Lookup(ctx, sel,
//		client.WithRequest(client.Keys{"card_id": "card-0001", "merchant_id": "m-001"}, map[string]any{"amount": 250.0}),
//		client.WithRequest(client.Keys{"card_id": "card-0002", "merchant_id": "m-007"}, map[string]any{"amount": 12.5}))
//
// Errors carry gRPC status codes (status.Code(err)): InvalidArgument for an
// unknown name or a wrongly typed, missing or superfluous key, the message
// naming it (an empty service name or an entity without join-key values is
// rejected before any call); Unavailable when the server cannot reach its
// online store (the client has tried twice more already, unless many calls
// fail); DeadlineExceeded when ctx's deadline passed; Internal when the
// response does not hold one value per entity and feature, rather than a
// Result whose rows or columns would not match the lookup's.
// Give ctx a deadline: without one, the server applies its default.
package client
