package cmd

import (
	"context"
	"strings"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

func TestCompactCommand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, err := registry.LoadDir("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	s, err := offline.NewSchema("default", r, "card_txn")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := offline.NewDir(dir)
	w, err := offline.OpenWriter(ctx, st, "default", offline.Options{FlushRows: 2})
	if err != nil {
		t.Fatal(err)
	}
	for off := range int64(10) {
		b := offline.Batch{Topic: "txns", Partition: 0, IngestTime: 1, End: offline.Position{Offset: off},
			Entities: []offline.EntityEvents{{Key: featurestore.StringKey("c1"), Events: []window.Event{{Time: 1_700_000_000_000, Offset: off}}}}}
		if err := w.Append(ctx, s, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, nil, "compact", "--offline-dir", dir, "--dry-run")
	if code != 0 || !strings.Contains(out, "card_txn: would merge 5 files") {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, map[string]string{"FEATURESTORE_OFFLINE_DIR": dir}, "compact")
	if code != 0 || !strings.Contains(out, "card_txn: merged 5 files") || !strings.Contains(out, "into 1, 10 rows") {
		t.Fatalf("compact: exit %d\n%s%s", code, out, errOut)
	}
	snap, err := offline.ReadSnapshot(ctx, st, "default", "card_txn")
	if err != nil || len(snap.Files) != 1 || snap.Files[0].Path != "date=2023-11-14/txns-0-0-9.arrow" {
		t.Fatalf("after compact: %+v %v", snap, err)
	}
	if code, _, errOut := runCLI(t, nil, "compact"); code != 2 || !strings.Contains(errOut, "--offline-dir is required") {
		t.Fatalf("without --offline-dir: exit %d: %s", code, errOut)
	}
	// A grace shorter than a writer's write-to-commit could delete the
	// files of a commit in progress.
	for _, grace := range []string{"0s", "-1h0m0s", "9m59s"} {
		if code, _, errOut := runCLI(t, nil, "compact", "--offline-dir", dir, "--orphan-grace", grace); code != 2 || !strings.Contains(errOut, "--orphan-grace "+grace+" is below 10m0s") {
			t.Errorf("--orphan-grace %s: exit %d: %s", grace, code, errOut)
		}
	}
}
