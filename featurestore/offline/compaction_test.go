package offline

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
)

// TestCompact: small files merge into fewer, larger ones per date and
// partition; the events, positions and every file's consistency with its
// manifest entry are unchanged, and the replaced files are gone.
func TestCompact(t *testing.T) {
	for name, mk := range storages(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := mk(t)
			s := testSchema(t, "account_stats")
			w, _ := OpenWriter(ctx, st, testProject, Options{FlushRows: 9, BatchRows: 4})
			rng := rand.New(rand.NewPCG(31, 32))
			want := appendAll(t, w, s, genEvents(rng, 300, 0, 0, t0), 9)
			want = append(want, appendAll(t, w, s, genEvents(rng, 200, 5, 70, t0), 9)...)
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			sortRows(want)
			before, _ := ReadSnapshot(ctx, st, testProject, "account_stats")
			dry, err := Compact(ctx, st, testProject, "account_stats", CompactOptions{TargetBytes: 1 << 30, DryRun: true})
			if err != nil || dry.Merges == 0 || dry.FilesIn != len(before.Files) {
				t.Fatalf("dry run: %+v %v; %d files", dry, err, len(before.Files))
			}
			stats, err := Compact(ctx, st, testProject, "account_stats", CompactOptions{TargetBytes: 1 << 30, BatchRows: 50})
			if err != nil {
				t.Fatal(err)
			}
			after, _ := ReadSnapshot(ctx, st, testProject, "account_stats")
			// Everything is small: one file per (date, partition) is left.
			groups := map[[2]int64]bool{}
			for _, f := range before.Files {
				groups[[2]int64{f.Day(), int64(f.Partition)}] = true
			}
			if len(after.Files) != len(groups) || stats.FilesIn != len(before.Files) || stats.Merges != len(groups) || stats.Rows != int64(len(want)) {
				t.Fatalf("compaction %+v left %d files of %d, want %d", stats, len(after.Files), len(before.Files), len(groups))
			}
			if !reflect.DeepEqual(after.positions, before.positions) {
				t.Fatalf("positions changed: %v, were %v", after.positions, before.positions)
			}
			if got := readRows(t, st); !reflect.DeepEqual(got, want) {
				t.Fatalf("rows differ after compaction: %v", firstDiff(got, want))
			}
			checkClean(t, st)
			// Again: nothing left to do.
			if again, err := Compact(ctx, st, testProject, "account_stats", CompactOptions{TargetBytes: 1 << 30}); err != nil || again.Merges != 0 {
				t.Fatalf("second compaction: %+v %v", again, err)
			}
		})
	}
}

// TestCompactTarget: merges stop at TargetBytes, and files of that size
// are left alone.
func TestCompactTarget(t *testing.T) {
	files := []FileInfo{
		{Topic: "t", Partition: 0, First: 0, Last: 9, MinTime: 0, Bytes: 40, Schema: "a"},
		{Topic: "t", Partition: 0, First: 10, Last: 19, MinTime: 0, Bytes: 40, Schema: "a"},
		{Topic: "t", Partition: 0, First: 20, Last: 29, MinTime: 0, Bytes: 40, Schema: "a"},
		{Topic: "t", Partition: 0, First: 30, Last: 39, MinTime: 0, Bytes: 100, Schema: "a"},
		{Topic: "t", Partition: 0, First: 40, Last: 49, MinTime: 0, Bytes: 10, Schema: "a"},
		{Topic: "t", Partition: 0, First: 50, Last: 59, MinTime: 0, Bytes: 10, Schema: "b"},
		{Topic: "t", Partition: 0, First: 60, Last: 69, MinTime: 0, Bytes: 10, Schema: "b"},
		{Topic: "t", Partition: 1, First: 70, Last: 79, MinTime: 0, Bytes: 10, Schema: "b"},
		{Topic: "t", Partition: 1, First: 80, Last: 89, MinTime: dayMs, Bytes: 10, Schema: "b"},
	}
	var got [][2]int64
	for _, run := range planRuns(files, 100) {
		got = append(got, [2]int64{run[0].First, run[len(run)-1].Last})
	}
	// 0..19 (80 bytes; adding 20..29 would pass 100), 30..39 is full size,
	// 40..49 alone before the schema changes, 50..69, and the last two
	// differ in partition and date.
	if want := [][2]int64{{0, 19}, {50, 69}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("runs %v, want %v", got, want)
	}
}

// TestCompactWhileWriting: a compaction beside a writer committing to the
// same view loses nothing and duplicates nothing.
func TestCompactWhileWriting(t *testing.T) {
	ctx := context.Background()
	st, _ := NewDir(t.TempDir())
	s := testSchema(t, "account_stats")
	w, _ := OpenWriter(ctx, st, testProject, Options{FlushRows: 5})
	evs := genEvents(rand.New(rand.NewPCG(33, 34)), 400, 0, 0, t0)
	var want []row
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := Compact(ctx, st, testProject, "account_stats", CompactOptions{TargetBytes: 1 << 30}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	want = appendAll(t, w, s, evs, 5)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if _, err := Compact(ctx, st, testProject, "account_stats", CompactOptions{TargetBytes: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	if _, err := RemoveOrphans(ctx, st, testProject, 0, w.opts.Now(), nil); err != nil {
		t.Fatal(err)
	}
	sortRows(want)
	got := readRows(t, st)
	checkUnique(t, got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read %d rows, want %d: %v", len(got), len(want), firstDiff(got, want))
	}
	checkClean(t, st)
}

// TestCompactCommitThatLanded: a compaction whose manifest entry landed
// though its create reported an error (a timeout, or ErrExist from the
// storage client's retry) merged: it must say so, and delete the files it
// replaced, not fail or report the run as taken by another compaction.
func TestCompactCommitThatLanded(t *testing.T) {
	for _, retried := range []bool{false, true} {
		t.Run(fmt.Sprintf("retried=%v", retried), func(t *testing.T) {
			ctx := context.Background()
			dir, _ := NewDir(t.TempDir())
			st := &lyingCreate{Storage: dir, retried: retried}
			s := testSchema(t, "account_stats")
			w, _ := OpenWriter(ctx, st, testProject, Options{FlushRows: 9, BatchRows: 4})
			want := appendAll(t, w, s, genEvents(rand.New(rand.NewPCG(31, 32)), 100, 0, 0, t0), 9)
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			sortRows(want)
			before, _ := ReadSnapshot(ctx, st, testProject, "account_stats")
			st.lie = true
			stats, err := Compact(ctx, st, testProject, "account_stats", CompactOptions{TargetBytes: 1 << 30, BatchRows: 50})
			st.lie = false
			if err != nil || stats.Merges == 0 || stats.SkippedRace != 0 || stats.FilesIn != len(before.Files) {
				t.Fatalf("compaction whose commits landed: %+v, %v; %d files before", stats, err, len(before.Files))
			}
			if got := readRows(t, st); !reflect.DeepEqual(got, want) {
				t.Fatalf("rows differ after compaction: %v", firstDiff(got, want))
			}
			checkClean(t, st)
		})
	}
}
