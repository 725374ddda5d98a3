package offline

import (
	"context"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// openHook runs hook before the first Open of a data file, as another
// process could act between a compaction's planning and its reading.
type openHook struct {
	Storage
	once sync.Once
	hook func()
}

func (h *openHook) Open(ctx context.Context, name string) (Object, error) {
	if strings.HasSuffix(name, ".arrow") {
		h.once.Do(h.hook)
	}
	return h.Storage.Open(ctx, name)
}

// TestOverlappingCompactions: a compaction whose runs another compaction
// merged and deleted after it planned them (two cron runs of `featurestore
// compact` overlapping) counts each such run as skipped and goes on with
// the next, instead of failing on the missing input; the log is what the
// other compaction left. An input that is missing while its manifest
// entry still commits it is an error.
func TestOverlappingCompactions(t *testing.T) {
	for name, mk := range storages(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := mk(t)
			s := testSchema(t, "account_stats")
			w, _ := OpenWriter(ctx, st, testProject, Options{FlushRows: 9, BatchRows: 4})
			rng := rand.New(rand.NewPCG(41, 42))
			want := appendAll(t, w, s, genEvents(rng, 200, 0, 0, t0), 9)
			want = append(want, appendAll(t, w, s, genEvents(rng, 150, 3, 40, t0), 9)...)
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			sortRows(want)
			opts := CompactOptions{TargetBytes: 1 << 30}
			plan, err := Compact(ctx, st, testProject, "account_stats", CompactOptions{TargetBytes: 1 << 30, DryRun: true})
			if err != nil || plan.Merges < 2 {
				t.Fatalf("dry run: %+v %v; want two runs or more", plan, err)
			}
			var first CompactStats
			var firstErr error
			race := &openHook{Storage: st, hook: func() {
				first, firstErr = Compact(ctx, st, testProject, "account_stats", opts)
			}}
			second, err := Compact(ctx, race, testProject, "account_stats", opts)
			if firstErr != nil || first.Merges != plan.Merges {
				t.Fatalf("first compaction: %+v %v; planned %+v", first, firstErr, plan)
			}
			if err != nil {
				t.Fatalf("second compaction: %v", err)
			}
			if second.Merges != 0 || second.SkippedRace != plan.Merges {
				t.Fatalf("second compaction %+v, want all %d runs skipped", second, plan.Merges)
			}
			if got := readRows(t, st); !reflect.DeepEqual(got, want) {
				t.Fatalf("rows differ after compaction: %v", firstDiff(got, want))
			}
			checkClean(t, st)

			// A committed file deleted by hand: the merge fails, and
			// says which file.
			w, _ = OpenWriter(ctx, st, testProject, Options{FlushRows: 9, BatchRows: 4})
			appendAll(t, w, s, genEvents(rng, 30, 0, 200, t0), 9)
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			snap, err := ReadSnapshot(ctx, st, testProject, "account_stats")
			if err != nil {
				t.Fatal(err)
			}
			var lost string
			for _, f := range snap.Files {
				if f.First == 200 {
					lost = snap.Name(f)
				}
			}
			if err := st.Delete(ctx, lost); err != nil {
				t.Fatal(err)
			}
			if _, err := Compact(ctx, st, testProject, "account_stats", opts); !errors.Is(err, ErrNotExist) || !strings.Contains(err.Error(), lost) {
				t.Fatalf("compaction with a committed file missing: %v, want an error naming %s", err, lost)
			}
		})
	}
}
