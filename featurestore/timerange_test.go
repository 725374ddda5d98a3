package featurestore

import (
	"testing"
	"time"
)

func TestTimeRange(t *testing.T) {
	if want := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(); MinTimeMs != want {
		t.Errorf("MinTimeMs %d, want %d", int64(MinTimeMs), want)
	}
	if want := time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC).UnixMilli(); MaxTimeMs != want {
		t.Errorf("MaxTimeMs %d, want %d", int64(MaxTimeMs), want)
	}
}
