package offline

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestStorageConformance runs the same checks on every Storage.
func TestStorageConformance(t *testing.T) {
	for name, mk := range storages(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := mk(t)
			read := func(name string) (string, error) {
				b, err := readAll(ctx, st, name)
				return string(b), err
			}
			put(t, st, "p/v/date=2024-01-01/a.arrow", "one")
			put(t, st, "p/v/date=2024-01-01/a.arrow", "two") // replaces
			if got, err := read("p/v/date=2024-01-01/a.arrow"); err != nil || got != "two" {
				t.Fatalf("read after replace: %q %v", got, err)
			}
			// A write that fails leaves the old object, and nothing else.
			err := st.Put(ctx, "p/v/date=2024-01-01/a.arrow", func(w io.Writer) error {
				_, _ = w.Write([]byte("partial"))
				return errors.New("boom")
			})
			if err == nil {
				t.Fatal("failed write reported success")
			}
			if got, err := read("p/v/date=2024-01-01/a.arrow"); err != nil || got != "two" {
				t.Fatalf("after a failed write: %q %v", got, err)
			}
			if err := st.Put(ctx, "p/v/new.arrow", func(w io.Writer) error { return errors.New("boom") }); err == nil {
				t.Fatal("failed write reported success")
			}
			if _, err := st.Open(ctx, "p/v/new.arrow"); !errors.Is(err, ErrNotExist) {
				t.Fatalf("open after a failed first write: %v, want ErrNotExist", err)
			}
			// Create is exclusive.
			if err := st.Create(ctx, "p/v/_manifest/1.json", []byte("first")); err != nil {
				t.Fatal(err)
			}
			if err := st.Create(ctx, "p/v/_manifest/1.json", []byte("second")); !errors.Is(err, ErrExist) {
				t.Fatalf("second create: %v, want ErrExist", err)
			}
			if got, _ := read("p/v/_manifest/1.json"); got != "first" {
				t.Fatalf("create overwrote: %q", got)
			}
			// CreateFrom is exclusive too, streams objects larger than a
			// driver's part or block, and a write that fails leaves nothing.
			big := strings.Repeat("0123456789abcdef", 17<<20/16) // S3 and GCS: past 16 MiB, parts or chunks
			createFrom := func(name, data string) error {
				return st.CreateFrom(ctx, name, func(w io.Writer) error { _, err := io.WriteString(w, data); return err })
			}
			if err := createFrom("p/v/date=2024-01-02/b.arrow", big); err != nil {
				t.Fatal(err)
			}
			if err := createFrom("p/v/date=2024-01-02/b.arrow", "other"); !errors.Is(err, ErrExist) {
				t.Fatalf("second CreateFrom: %v, want ErrExist", err)
			}
			if err := createFrom("p/v/date=2024-01-02/c.arrow", "other"); err != nil {
				t.Fatal(err)
			}
			if err := createFrom("p/v/date=2024-01-02/c.arrow", big); !errors.Is(err, ErrExist) {
				t.Fatalf("CreateFrom of a large object over a small one: %v, want ErrExist", err)
			}
			if got, err := read("p/v/date=2024-01-02/b.arrow"); err != nil || got != big {
				t.Fatalf("CreateFrom wrote %d bytes (%v), want %d", len(got), err, len(big))
			}
			if got, _ := read("p/v/date=2024-01-02/c.arrow"); got != "other" {
				t.Fatalf("CreateFrom overwrote: %d bytes", len(got))
			}
			err = st.CreateFrom(ctx, "p/v/date=2024-01-02/d.arrow", func(w io.Writer) error {
				_, _ = w.Write([]byte("partial"))
				return errors.New("boom")
			})
			if err == nil || errors.Is(err, ErrExist) {
				t.Fatalf("failed CreateFrom: %v", err)
			}
			if _, err := st.Open(ctx, "p/v/date=2024-01-02/d.arrow"); !errors.Is(err, ErrNotExist) {
				t.Fatalf("open after a failed CreateFrom: %v, want ErrNotExist", err)
			}
			for _, n := range []string{"b", "c"} {
				if err := st.Delete(ctx, "p/v/date=2024-01-02/"+n+".arrow"); err != nil {
					t.Fatal(err)
				}
			}
			// ReadAt past the end.
			o, err := st.Open(ctx, "p/v/_manifest/1.json")
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 10)
			if n, err := o.ReadAt(buf, 2); n != 3 || err != io.EOF || string(buf[:n]) != "rst" || o.Size() != 5 {
				t.Fatalf("ReadAt: %d %v %q size %d", n, err, buf[:n], o.Size())
			}
			o.Close()
			put(t, st, "p2/v/x", "other project")
			objs, err := st.List(ctx, "p")
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, o := range objs {
				if !o.Temp {
					names = append(names, o.Name)
				}
				if o.ModTime.IsZero() {
					t.Errorf("%s: no modification time", o.Name)
				}
			}
			slices.Sort(names)
			if want := []string{"p/v/_manifest/1.json", "p/v/date=2024-01-01/a.arrow"}; !slices.Equal(names, want) {
				t.Fatalf("list: %v, want %v", names, want)
			}
			if objs, err := st.List(ctx, "nothing"); err != nil || len(objs) != 0 {
				t.Fatalf("list of nothing: %v %v", objs, err)
			}
			if err := st.Delete(ctx, "p/v/date=2024-01-01/a.arrow"); err != nil {
				t.Fatal(err)
			}
			if err := st.Delete(ctx, "p/v/date=2024-01-01/a.arrow"); err != nil {
				t.Fatalf("deleting a missing object: %v", err)
			}
			if _, err := st.Open(ctx, "p/v/date=2024-01-01/a.arrow"); !errors.Is(err, ErrNotExist) {
				t.Fatalf("open after delete: %v", err)
			}
			for _, bad := range []string{"", "/abs", "a/../b", "a//b", "a/", "./a"} {
				if err := st.Put(ctx, bad, func(io.Writer) error { return nil }); err == nil {
					t.Errorf("Put(%q) accepted", bad)
				}
				if _, err := st.Open(ctx, bad); err == nil {
					t.Errorf("Open(%q) accepted", bad)
				}
			}
		})
	}
}

// TestOpenLocations: Open takes a directory, an s3://, gs:// or azblob://
// URL, refuses other schemes with a message saying what to give, refuses a
// gs:// URL without credentials and an azblob:// one without an account
// saying how to give them, and checks that a bucket is there.
func TestOpenLocations(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, closeSt, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := st.(*Dir); !ok || d.Root() != dir {
		t.Errorf("Open(%q) = %T %v, want the directory", dir, st, st)
	}
	if err := Ping(ctx, st); err != nil {
		t.Errorf("Ping of the directory: %v", err)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := Ping(ctx, st); err == nil {
		t.Error("Ping of a removed directory succeeded")
	}
	closeSt()
	for loc, want := range map[string]string{
		"mem://logs":          `unsupported scheme "mem": give a directory, or an s3://, gs:// or azblob:// bucket URL`,
		"file:///var/offline": "use the directory's path instead of a file:// URL",
	} {
		if _, _, err := Open(ctx, loc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q): %v, want %q", loc, err, want)
		}
	}
	t.Run("gs without credentials", func(t *testing.T) {
		t.Setenv("STORAGE_EMULATOR_HOST", "")
		t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "missing.json"))
		want := "no Google Cloud credentials"
		if _, _, err := Open(ctx, "gs://bucket?prefix=logs/"); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "GOOGLE_APPLICATION_CREDENTIALS") {
			t.Errorf("Open: %v, want %q and how to give them", err, want)
		}
	})
	t.Run("azblob without an account", func(t *testing.T) {
		for _, k := range []string{"AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGEBLOB_CONNECTIONSTRING"} {
			t.Setenv(k, "")
		}
		want := "no Azure storage account"
		if _, _, err := Open(ctx, "azblob://container?prefix=logs/"); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "AZURE_STORAGE_ACCOUNT") {
			t.Errorf("Open: %v, want %q and how to give one", err, want)
		}
	})
	for _, c := range []struct{ scheme, url, bucket string }{
		{"s3", testenv.S3URL(t), testenv.S3Bucket},
		{"gs", testenv.GCSURL(t), testenv.GCSBucket},
		{"azblob", testenv.AzureURL(t), testenv.AzureContainer},
	} {
		missing := strings.Replace(c.url, c.scheme+"://"+c.bucket+"?", c.scheme+"://no-such-bucket?", 1)
		if _, _, err := Open(ctx, missing); err == nil || !strings.Contains(err.Error(), "does not exist or is not accessible") {
			t.Errorf("Open of a missing %s bucket: %v", c.scheme, err)
		}
		st, closeSt, err := Open(ctx, c.url)
		if err != nil {
			t.Fatal(err)
		}
		defer closeSt()
		if _, ok := st.(*Bucket); !ok {
			t.Errorf("Open(%s URL) = %T, want a Bucket", c.scheme, st)
		}
		if err := Ping(ctx, st); err != nil {
			t.Errorf("Ping of the %s bucket: %v", c.scheme, err)
		}
	}
}

// TestDirSyncsExistingDirectories checks that a file put into a directory
// that already exists (made by a process that may have crashed before
// syncing it into its parent) syncs that directory into its parent, and
// its parents into theirs, once per Dir.
func TestDirSyncsExistingDirectories(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "view=a", "date=2026-11-27"), 0o755); err != nil {
		t.Fatal(err)
	}
	var synced []string
	syncedDir = func(dir string) { synced = append(synced, dir) }
	defer func() { syncedDir = nil }()
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	put := func(name string) {
		t.Helper()
		if err := d.Put(context.Background(), name, func(w io.Writer) error { _, err := io.WriteString(w, "x"); return err }); err != nil {
			t.Fatal(err)
		}
	}
	put("view=a/date=2026-11-27/f1.arrow")
	dirs := func() map[string]int {
		n := map[string]int{}
		for _, s := range synced {
			n[s]++
		}
		return n
	}
	// The file's directory into the view's, the view's into the root; and
	// the file's directory again for the rename.
	got := dirs()
	if got[root] != 1 || got[filepath.Join(root, "view=a")] != 1 {
		t.Errorf("synced %v, want the root and view=a once each", synced)
	}
	before := got[filepath.Join(root, "view=a", "date=2026-11-27")]
	put("view=a/date=2026-11-27/f2.arrow")
	got = dirs()
	if got[root] != 1 || got[filepath.Join(root, "view=a")] != 1 {
		t.Errorf("after a second file, synced %v: the parents again", synced)
	}
	if got[filepath.Join(root, "view=a", "date=2026-11-27")] <= before {
		t.Errorf("the second file's rename did not sync its directory: %v", synced)
	}
}

// TestDirTempNames: List marks as Temp the temporary files Dir writes, and
// those of earlier versions (".<name>.tmp-<random>"), never a name the log
// writes, whatever its topic.
func TestDirTempNames(t *testing.T) {
	const dir = "p/v/date=2024-01-01/"
	cases := []struct {
		name string
		temp bool
	}{
		{dir + "payments.v1-0-0-49.arrow", false},
		{dir + ".orders.tmp-v2-0-4-9.arrow", false},
		{dir + ".tmp-0-0-1.arrow", false},
		{dir + ".a.tmp-1.tmp-2-0-0-1.arrow", false},
		{"p/v/_manifest/00000000000000000001.json", false},
		{"p/v/_manifest/" + checkpointHint, false},
		{dir + "plain.tmp-1", false}, // no leading dot
		// Earlier versions: os.CreateTemp's digits, then base 36.
		{dir + ".payments.v1-0-0-49.arrow.tmp-2147483647", true},
		{dir + ".payments.v1-0-0-49.arrow.tmp-3k9z0a", true},
		{dir + ".orders.tmp-v2-0-4-9.arrow.tmp-3k9z0a", true},
		{"p/v/_manifest/.00000000000000000009.json.tmp-17", true},
		{dir + ".orders.tmp-v2-0-4-9.arrow.tmp-", false},
		{dir + ".orders.tmp-v2-0-4-9.arrow.tmp-A1", false},
		// This version.
		{dir + ".orders.tmp-v2-0-4-9.arrow" + tempMarker + "3k9z0a", true},
		{"p/v/_manifest/.00000000000000000009.json" + tempMarker + "17", true},
	}
	root := t.TempDir()
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		p := filepath.Join(root, filepath.FromSlash(c.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// And what an interrupted Put leaves.
	old := failpoint
	t.Cleanup(func() { failpoint = old })
	failpoint = func(step string) {
		if step == "put:synced" {
			panic("crash")
		}
	}
	func() {
		defer func() { _ = recover() }()
		_ = d.Put(context.Background(), dir+".orders.tmp-v2-0-5-9.arrow", func(w io.Writer) error { _, err := io.WriteString(w, "x"); return err })
	}()
	failpoint = old
	objs, err := d.List(context.Background(), "p")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, c := range cases {
		want[c.name] = c.temp
	}
	left := 0
	for _, o := range objs {
		temp, ok := want[o.Name]
		if !ok {
			left++
			temp = true // the interrupted Put's
		}
		if o.Temp != temp {
			t.Errorf("%s: Temp %v, want %v", o.Name, o.Temp, temp)
		}
	}
	if left != 1 || len(objs) != len(cases)+1 {
		t.Errorf("listed %d objects, %d unknown; want %d and the interrupted Put's temporary file", len(objs), left, len(cases))
	}
}
