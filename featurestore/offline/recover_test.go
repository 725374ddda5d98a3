package offline

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"path"
	"reflect"
	"strings"
	"testing"
)

// TestOrphansUnreadableManifest: a view whose manifest cannot be read (a
// view dropped from the registry, a hand-edited checkpoint hint) keeps all
// its files, and is logged, while the other views are cleaned: the writer
// and the clean-up of `featurestore compact` start for the project. The
// writer fails, naming the manifest, when it later logs to that view.
func TestOrphansUnreadableManifest(t *testing.T) {
	for name, mk := range storages(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := mk(t)
			s := testSchema(t, "account_stats")
			w, _ := OpenWriter(ctx, st, testProject, Options{})
			rng := rand.New(rand.NewPCG(43, 44))
			want := appendAll(t, w, s, genEvents(rng, 30, 0, 0, t0), 30)
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			orphan := viewDir(testProject, "account_stats") + "/" + filePath(dayOf(t0), testTopic, 0, 100, 200)
			put(t, st, orphan, "not committed")
			var kept []string
			for _, view := range []string{"old_view", "device_counts"} {
				hint := viewDir(testProject, view) + "/" + manifestDirName + "/" + checkpointHint
				data := viewDir(testProject, view) + "/" + filePath(dayOf(t0), testTopic, 0, 1, 2)
				put(t, st, hint, "garbage\n")
				put(t, st, data, "committed or not, nobody can tell")
				kept = append(kept, hint, data)
			}

			var logged bytes.Buffer
			n, err := RemoveOrphans(ctx, st, testProject, 0, w.opts.Now(), slog.New(slog.NewTextHandler(&logged, nil)))
			if err != nil || n != 1 {
				t.Fatalf("clean-up removed %d files, %v; want the one orphan", n, err)
			}
			for _, view := range []string{"old_view", "device_counts"} {
				if !strings.Contains(logged.String(), "proj/"+view) || !strings.Contains(logged.String(), "bad checkpoint hint") {
					t.Errorf("log %q does not say why %s was skipped", logged.String(), view)
				}
			}
			put(t, st, orphan, "not committed")
			w, err = OpenWriter(ctx, st, testProject, Options{})
			if err != nil {
				t.Fatalf("writer refused to start: %v", err)
			}
			if _, err := st.Open(ctx, orphan); !errors.Is(err, ErrNotExist) {
				t.Errorf("orphan of a readable view kept: %v", err)
			}
			for _, name := range kept {
				if _, err := st.Open(ctx, name); err != nil {
					t.Errorf("file of the view with an unreadable manifest removed: %v", err)
				}
			}

			// The readable view logs on; the other fails, naming its
			// manifest, and commits nothing.
			want = append(want, appendAll(t, w, s, genEvents(rng, 20, 0, 30, t0), 10)...)
			dc := testSchema(t, "device_counts")
			err = w.Append(ctx, dc, Batch{Topic: testTopic, Partition: 0, End: Position{Offset: 9}})
			if err == nil || !strings.Contains(err.Error(), "proj/device_counts/_manifest/CHECKPOINT: bad checkpoint hint") {
				t.Fatalf("append to the view with an unreadable manifest: %v", err)
			}
			if _, _, err := w.Resume(ctx, dc, testTopic, 0); err == nil {
				t.Fatal("resume of the view with an unreadable manifest succeeded")
			}
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			sortRows(want)
			if got := readRows(t, st); !reflect.DeepEqual(got, want) {
				t.Fatalf("rows differ: %v", firstDiff(got, want))
			}
		})
	}
}

// TestOrphansTopicLikeTempName: a Kafka topic may start with a dot and
// contain ".tmp-" (Kafka allows [a-zA-Z0-9._-]), as Dir's temporary files
// of earlier versions did: its committed files stay at the next start,
// while the temporary files of its writes, of this version and earlier
// ones, go.
func TestOrphansTopicLikeTempName(t *testing.T) {
	for name, mk := range storages(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := mk(t)
			s := testSchema(t, "account_stats")
			const topic = ".orders.tmp-v2"
			w, err := OpenWriter(ctx, st, testProject, Options{})
			if err != nil {
				t.Fatal(err)
			}
			evs := genEvents(rand.New(rand.NewPCG(31, 32)), 10, 0, 0, t0)
			b := batchOf(evs, topic, 0, 9, t0)
			if err := w.Append(ctx, s, b); err != nil {
				t.Fatal(err)
			}
			var want []row
			for _, g := range evs {
				want = append(want, wantRow(g, topic, b.IngestTime))
			}
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if _, ok := st.(*Dir); ok {
				data := filePath(dayOf(t0), topic, 0, 10, 19)
				for _, marker := range []string{tempMarker, oldTempMarker} {
					dir, base := path.Split(viewDir(testProject, "account_stats") + "/" + data)
					put(t, st, dir+"."+base+marker+"3k9z", "temp")
				}
			}
			if _, err := OpenWriter(ctx, st, testProject, Options{}); err != nil {
				t.Fatal(err)
			}
			checkClean(t, st)
			sortRows(want)
			if got := readRows(t, st); !reflect.DeepEqual(got, want) {
				t.Fatalf("rows of topic %q after a restart: %v", topic, firstDiff(got, want))
			}
		})
	}
}
