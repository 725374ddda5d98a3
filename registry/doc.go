// Package registry loads, validates, versions and distributes feature
// definitions.
//
// Definitions are YAML documents of four kinds — Entity, Source, FeatureView
// and FeatureService — spread over the *.yaml files of a directory. Load decodes
// them from the YAML node tree, so every error carries file:line:col, and it
// reports all errors at once; a directory with any error yields no Registry.
//
// A Registry is immutable once loaded. A Store keeps numbered versions of it;
// Diff compares two registries and marks changes that alter what an existing
// feature means as breaking; a Watcher follows a Store and hands long-running
// processes each new version whole, never half of one.
//
// The package knows nothing of Kafka, Redis or gRPC: the Redis-backed store
// lives in registry/redisstore.
package registry
