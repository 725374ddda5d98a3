package serving

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/featurestore/featurestore/featurestore/window"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// TestCorruptLogBounded: a key is logged at most once per interval, at most
// logLimitKeys keys per interval, and the first line logged after lines
// were left out says how many.
func TestCorruptLogBounded(t *testing.T) {
	var l logLimiter
	t0 := time.Unix(1e9, 0)
	type step struct {
		key        string
		at         time.Duration
		ok         bool
		suppressed int
	}
	steps := []step{
		{"a", 0, true, 0},
		{"a", time.Second, false, 0},
		{"a", logLimitInterval - 1, false, 0},
		{"b", time.Second, true, 2},
		{"a", logLimitInterval, true, 0},
	}
	for i, s := range steps {
		ok, n := l.allow(s.key, t0.Add(s.at))
		if ok != s.ok || n != s.suppressed {
			t.Fatalf("step %d, %s at %v: allowed %v, suppressed %d; want %v, %d", i, s.key, s.at, ok, n, s.ok, s.suppressed)
		}
	}
	// Up to logLimitKeys keys within an interval, then one more is left
	// out until the interval passes.
	l = logLimiter{}
	at := t0
	for k := range logLimitKeys {
		if ok, _ := l.allow(fmt.Sprint("k", k), at); !ok {
			t.Fatalf("key %d of %d left out", k, logLimitKeys)
		}
	}
	if ok, _ := l.allow("one too many", at); ok {
		t.Fatalf("key %d logged within the interval", logLimitKeys+1)
	}
	if ok, n := l.allow("one too many", at.Add(logLimitInterval)); !ok || n != 1 {
		t.Errorf("after the interval: allowed %v, suppressed %d; want true, 1", ok, n)
	}
	if len(l.last) > logLimitKeys {
		t.Errorf("%d keys remembered, more than %d", len(l.last), logLimitKeys)
	}
}

// TestStatusesMatchTheProto: a window.Status is sent as the FeatureStatus of
// the same number, and each has a label in featurestore_serving_values_total.
func TestStatusesMatchTheProto(t *testing.T) {
	for st, want := range map[window.Status]string{
		window.StatusPresent:  "PRESENT",
		window.StatusNotFound: "NOT_FOUND",
		window.StatusExpired:  "EXPIRED",
		window.StatusNull:     "NULL_VALUE",
		window.StatusError:    "ERROR",
	} {
		if got := strings.TrimPrefix(pb.FeatureStatus(st).String(), "FEATURE_STATUS_"); got != want {
			t.Errorf("%v is sent as %s, want %s", st, got, want)
		}
		if int(st) >= len(statusLabels) || statusLabels[st] == "" {
			t.Errorf("%v has no label in featurestore_serving_values_total", st)
		}
	}
}
