package offline

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The crash test runs the workload in a child process (this test binary,
// running TestCrashChild) that exits at the Nth failpoint, for every N
// until the workload finishes, and checks after each crash what a restart
// finds.
const (
	crashEnvDir = "FEATURESTORE_OFFLINE_CRASH_DIR"
	crashEnvAt  = "FEATURESTORE_OFFLINE_CRASH_AT"
)

// crashWorkload is what the child runs: batches of two partitions, a
// compaction half-way, and a final flush. ack is called with each
// partition's committed position after every step.
func crashWorkload(t *testing.T, st Storage, ack func(p int32, off int64)) {
	ctx := context.Background()
	s := testSchema(t, "account_stats")
	w, err := OpenWriter(ctx, st, testProject, Options{FlushRows: 30, BatchRows: 8})
	if err != nil {
		t.Fatal(err)
	}
	acks := func() {
		for p := range int32(2) {
			if pos, ok, err := w.Position(ctx, "account_stats", testTopic, p); err != nil {
				t.Fatal(err)
			} else if ok {
				ack(p, pos.Offset)
			}
		}
	}
	batches := crashBatches()
	for i, b := range batches {
		if err := w.Append(ctx, s, b); err != nil {
			t.Fatal(err)
		}
		acks()
		if i == len(batches)/2 {
			if _, err := Compact(ctx, st, testProject, "account_stats", CompactOptions{TargetBytes: 1 << 30, BatchRows: 16}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	acks()
}

// crashEvents are the workload's events of partitions 0 and 1.
func crashEvents() [2][]genEvent {
	rng := rand.New(rand.NewPCG(21, 22))
	return [2][]genEvent{genEvents(rng, 100, 0, 0, t0), genEvents(rng, 70, 1, 40, t0)}
}

func crashBatches() []Batch {
	evs := crashEvents()
	var out []Batch
	for i := 0; i < 100; i += 13 {
		for p, pe := range evs {
			if i < len(pe) {
				c := pe[i:min(i+13, len(pe))]
				out = append(out, batchOf(c, testTopic, int32(p), c[len(c)-1].ev.Offset, c[len(c)-1].ev.Time))
			}
		}
	}
	return out
}

// crashWant returns the rows the workload logs.
func crashWant() []row {
	var want []row
	for _, b := range crashBatches() {
		for _, g := range b.Entities {
			for _, ev := range g.Events {
				want = append(want, row{EventTime: ev.Time, IngestTime: b.IngestTime, Topic: b.Topic, Partition: b.Partition, Offset: ev.Offset})
			}
		}
	}
	// The other columns come from the generated events.
	evs := crashEvents()
	byOff := map[[2]int64]genEvent{}
	for _, pe := range evs {
		for _, g := range pe {
			byOff[[2]int64{int64(g.ev.Partition), g.ev.Offset}] = g
		}
	}
	for i, r := range want {
		want[i] = wantRow(byOff[[2]int64{int64(r.Partition), r.Offset}], r.Topic, r.IngestTime)
	}
	sortRows(want)
	return want
}

func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("the child process of TestCrashRecovery")
	}
	at, err := strconv.Atoi(os.Getenv(crashEnvAt))
	if err != nil {
		t.Fatal(err)
	}
	checkpointEvery = 4 // so that checkpoints and their hint are crashed in too
	hits := 0
	failpoint = func(name string) {
		if hits++; hits == at {
			fmt.Printf("crash at %s\n", name)
			os.Exit(3)
		}
	}
	st, err := NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	crashWorkload(t, st, func(p int32, off int64) { fmt.Printf("ack %d %d\n", p, off) })
	fmt.Printf("hits %d\n", hits)
}

func TestCrashRecovery(t *testing.T) {
	if os.Getenv(crashEnvDir) != "" {
		t.Skip("in the child")
	}
	if testing.Short() {
		t.Skip("starts a process per failpoint")
	}
	want := crashWant()
	// A run without a crash counts the failpoints.
	out, _ := runCrashChild(t, 0)
	total := 0
	for _, l := range strings.Split(string(out), "\n") {
		if n, ok := strings.CutPrefix(l, "hits "); ok {
			total, _ = strconv.Atoi(n)
		}
	}
	if total == 0 {
		t.Fatalf("the workload passed no failpoint:\n%s", out)
	}
	for n := 1; n <= total; n++ {
		t.Run(fmt.Sprintf("crash%03d", n), func(t *testing.T) {
			t.Parallel()
			out, dir := runCrashChild(t, n)
			acked := map[int32]int64{}
			crashed := false
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				switch {
				case len(f) == 3 && f[0] == "ack":
					p, _ := strconv.Atoi(f[1])
					off, _ := strconv.ParseInt(f[2], 10, 64)
					acked[int32(p)] = off
				case len(f) == 3 && f[0] == "crash":
					crashed = true
				}
			}
			if !crashed {
				t.Fatalf("the child did not crash at failpoint %d:\n%s", n, out)
			}
			checkAfterCrash(t, dir, acked, want)
		})
	}
}

// runCrashChild runs the workload in a child that exits at failpoint at
// (never for 0), and returns its output and directory.
func runCrashChild(t *testing.T, at int) ([]byte, string) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), crashEnvDir+"="+dir, crashEnvAt+"="+strconv.Itoa(at))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 3) {
		t.Fatalf("child at failpoint %d: %v\n%s%s", at, err, out, stderr.Bytes())
	}
	return out, dir
}

// checkAfterCrash restarts on the crashed directory and checks that every
// visible file opens, that the committed events are exactly those up to the
// committed positions (at or past what was acknowledged), with no
// duplicate and no leftover file, and that replaying the workload from there
// completes the log exactly.
func checkAfterCrash(t *testing.T, dir string, acked map[int32]int64, want []row) {
	ctx := context.Background()
	st, err := NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, err := OpenWriter(ctx, st, testProject, Options{FlushRows: 30, BatchRows: 8})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, st)
	got := readRows(t, st)
	checkUnique(t, got)
	snap, err := ReadSnapshot(ctx, st, testProject, "account_stats")
	if err != nil {
		t.Fatal(err)
	}
	var committed []row
	for _, r := range want {
		if pos, ok := snap.Position(r.Topic, r.Partition); ok && r.Offset <= pos.Offset {
			committed = append(committed, r)
		}
	}
	if !reflect.DeepEqual(got, committed) {
		t.Fatalf("committed %d rows, the positions say %d: %v", len(got), len(committed), firstDiff(got, committed))
	}
	for p, off := range acked {
		if pos, ok := snap.Position(testTopic, p); !ok || pos.Offset < off {
			t.Fatalf("partition %d: committed position %v %v, %d was acknowledged", p, pos, ok, off)
		}
	}
	// Ingest resumes and replays the workload; the fences drop what is
	// already there.
	s := testSchema(t, "account_stats")
	for _, b := range crashBatches() {
		if err := w.Append(ctx, s, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readRows(t, st); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the replay %d rows, want %d: %v", len(got), len(want), firstDiff(got, want))
	}
	checkClean(t, st)
}
