package cmd

import (
	"flag"
	"io"
	"testing"
)

func TestParseFlagsEnvironment(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"default", nil, nil, "127.0.0.1:9465"},
		{"environment", nil, map[string]string{"FEATURESTORE_METRICS_ADDR": ":1"}, ":1"},
		{"set empty turns it off", nil, map[string]string{"FEATURESTORE_METRICS_ADDR": ""}, ""},
		{"flag wins", []string{"--metrics-addr", ":2"}, map[string]string{"FEATURESTORE_METRICS_ADDR": ":1"}, ":2"},
		{"empty flag wins", []string{"--metrics-addr="}, map[string]string{"FEATURESTORE_METRICS_ADDR": ":1"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			addr := fs.String("metrics-addr", "127.0.0.1:9465", "")
			if err := parseFlags(fs, c.args, envMap(c.env)); err != nil {
				t.Fatal(err)
			}
			if *addr != c.want {
				t.Errorf("--metrics-addr = %q, want %q", *addr, c.want)
			}
		})
	}
}
