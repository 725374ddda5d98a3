// Package serving answers online feature lookups over gRPC (DESIGN.md
// section 7): featurestore.v1.OnlineService backed by the online store in
// Redis, with the gRPC health service and server reflection.
//
// A request is resolved against the registry snapshot current when it
// starts, so one response never mixes two registry versions. What a version
// needs at request time (compiled views, store layouts, the kinds of the
// entities' join keys, the features of every feature service) is computed
// once per version, in a plan; requests do no registry parsing. All the
// (entity, feature view) pairs of a request are read from Redis in one round
// trip at one read time t, and windows are merged from tiles at t, so
// windowed values decay as time passes without events.
//
// HTTPServer answers the same lookups as JSON over HTTP (POST
// /v1/features:get), through the same code; only the encoding differs. The
// Go client is package serving/client.
//
// Security is opt-in and denies by default once on: ServerTLS serves TLS
// (mutual when a client CA is set) from files that may rotate, and Auth
// authenticates calls by bearer token or client certificate and authorizes
// each lookup per project and feature view, from a policy file that may
// change while the server runs.
package serving
