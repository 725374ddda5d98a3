// Package featurestore holds the domain core shared by ingest, serving and
// export: value types, entity keys, time and tile arithmetic, and the store
// interfaces that the Redis and Arrow implementations satisfy.
package featurestore
