package export

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
)

func TestTerminalProgress(t *testing.T) {
	var b bytes.Buffer
	bar := TerminalProgress(&b)
	bar(Progress{Phase: "computing features", Done: 1500, Total: 6000, Unit: "rows", Elapsed: 2 * time.Second})
	bar(Progress{Phase: "reading events of v", Done: 1234567, Unit: "events", Elapsed: 3 * time.Second, Final: true})
	want := "\r\033[Kcomputing features           [=======                       ]  25%  1,500/6,000 rows  2s" +
		"\r\033[Kreading events of v          1,234,567 events  3s\n"
	if b.String() != want {
		t.Errorf("bar:\n%q\nwant\n%q", b.String(), want)
	}
}

// TestProgressReports checks that an export reports every phase, each
// ending with a final report that counts all its work.
func TestProgressReports(t *testing.T) {
	r := testRegistry(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "rows.arrow")
	(&testTable{fields: []arrow.Field{{Name: "user_id", Type: arrow.BinaryTypes.String}, {Name: "event_timestamp", Type: arrow.PrimitiveTypes.Int64}},
		rows: [][]any{{"u", int64(t0)}, {"v", int64(t0)}, {"u", int64(t0 + 1)}}}).writeArrow(t, in, 2)
	l := &memLog{batches: map[string][]arrow.RecordBatch{"by_user": {logBatch(t, r, "p", "by_user", []rawEvent{
		{time: t0, offset: 1, keys: map[string]any{"user_id": "u"}}, {time: t0, offset: 2, keys: map[string]any{"user_id": "w"}}})}}}
	var mu sync.Mutex
	var finals []string
	_, err := Run(context.Background(), Options{Registry: r, Log: l, Features: []string{"by_user:n_5m"}, Entities: in, Out: filepath.Join(dir, "out.arrow"), TempDir: dir,
		Progress: func(p Progress) {
			if p.Final {
				mu.Lock()
				finals = append(finals, strings.Join([]string{p.Phase, count(p.Done), count(p.Total), p.Unit}, " "))
				mu.Unlock()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"reading entity rows 3 0 rows", "reading events of by_user 2 0 events", "computing features 3 3 rows", "writing " + filepath.Join(dir, "out.arrow") + " 3 3 rows"}
	if strings.Join(finals, "\n") != strings.Join(want, "\n") {
		t.Errorf("final reports:\n%s\nwant\n%s", strings.Join(finals, "\n"), strings.Join(want, "\n"))
	}
}
