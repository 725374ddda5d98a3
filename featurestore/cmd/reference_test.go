package cmd

import (
	"bytes"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite generated documentation")

func TestConfigurationReference(t *testing.T) {
	const path = "../../docs/configuration.md"
	got := configurationMarkdown()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is out of date: run go test ./featurestore/cmd -run TestConfigurationReference -update", path)
	}
}
