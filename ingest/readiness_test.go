package ingest

import (
	"strings"
	"testing"
)

// TestReadiness: ready once every source of the running version is in its
// group; a failed join makes it not ready again; callbacks of a version
// that stopped change nothing.
func TestReadiness(t *testing.T) {
	var nilReady *Readiness
	if ok, why := nilReady.Ready(); ok || why != "ingest has not started" {
		t.Errorf("nil: %v %q", ok, why)
	}
	r := &Readiness{}
	check := func(want bool, says string) {
		t.Helper()
		if ok, why := r.Ready(); ok != want || !strings.Contains(why, says) {
			t.Errorf("Ready() = %v, %q; want %v saying %q", ok, why, want, says)
		}
	}
	check(false, "no registry version running yet")
	r.start(3)
	check(false, "registry version 3: starting its sources")
	a := r.source("a")
	a(true) // in its group before the next source started
	check(false, "registry version 3: starting its sources")
	b := r.source("b")
	r.allStarted()
	check(false, "not in their consumer group yet: b")
	b(true)
	check(true, "registry version 3: every source in its consumer group (2)")
	b(false)
	check(false, "not in their consumer group yet: b")
	r.stop()
	check(false, "no registry version running yet")
	r.start(4)
	c := r.source("a")
	r.allStarted()
	a(true) // of version 3
	check(false, "registry version 4: not in their consumer group yet: a")
	c(true)
	check(true, "registry version 4: every source in its consumer group (1)")
}
