// Package cmd is the featurestore binary: its subcommands, their flags (each
// also read from a FEATURESTORE_* environment variable), and the wiring that
// picks implementations and starts and stops the long-running parts.
package cmd
