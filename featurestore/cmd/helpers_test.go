package cmd

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func edit(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// examplesOnNewTopic creates a topic of partitions partitions in Kafka at
// brokers, and one for its dead letters, and returns a copy of the examples
// whose source reads them.
func examplesOnNewTopic(t *testing.T, brokers []string, partitions int) string {
	t.Helper()
	topic := testenv.UniqueName(t, "txns")
	testenv.CreateTopic(t, brokers, topic, partitions)
	testenv.CreateTopic(t, brokers, topic+".dlq", 1)
	defs := copyDir(t, "../../examples")
	edit(t, filepath.Join(defs, "sources.yaml"), "topic: card_transactions", "topic: "+topic)
	edit(t, filepath.Join(defs, "sources.yaml"), "dead_letter_topic: card_transactions.dlq", "dead_letter_topic: "+topic+".dlq")
	return defs
}

// offlineLocation returns where a test keeps its offline log: a directory
// under dir (where is "dir"), or a prefix of its own in the bucket of the
// test S3 server ("s3"), of the GCS emulator ("gs") or of the Azure
// emulator ("azblob"), as --offline-dir takes it.
func offlineLocation(t *testing.T, where, dir string) string {
	t.Helper()
	switch where {
	case "s3":
		return testenv.S3URL(t)
	case "gs":
		return testenv.GCSURL(t)
	case "azblob":
		return testenv.AzureURL(t)
	}
	return filepath.Join(dir, "offline")
}

// nextTestPort is the next port testAddr tries.
var nextTestPort = 17700

// testAddr returns a free loopback address in 17700-17999, a different one
// at each call.
func testAddr(t *testing.T) string {
	t.Helper()
	for ; nextTestPort < 18000; nextTestPort++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", nextTestPort))
		if err == nil {
			addr := ln.Addr().String()
			ln.Close()
			nextTestPort++
			return addr
		}
	}
	t.Fatal("no free port in 17700-17999")
	return ""
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
