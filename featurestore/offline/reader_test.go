package offline

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore/window"
)

// TestBetween: time pruning keeps exactly the files whose event time range
// meets the asked one, compared with a scan of every file's rows.
func TestBetween(t *testing.T) {
	ctx := context.Background()
	st, _ := NewDir(t.TempDir())
	s := testSchema(t, "account_stats")
	w, _ := OpenWriter(ctx, st, testProject, Options{FlushRows: 20})
	appendAll(t, w, s, genEvents(rand.New(rand.NewPCG(51, 52)), 200, 0, 0, t0), 20)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := ReadSnapshot(ctx, st, testProject, "account_stats")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int64{{t0, t0 + 3600_000}, {t0 - dayMs, t0 - dayMs + 1}, {0, 1}, {t0 + 3*dayMs, t0 + 4*dayMs}} {
		keep := map[string]bool{}
		for _, f := range snap.Between(r[0], r[1]) {
			keep[f.Path] = true
		}
		for _, f := range snap.Files {
			has := false
			_ = Scan(ctx, st, snap, []FileInfo{f}, func(_ FileInfo, rec arrow.RecordBatch) error {
				for _, v := range rec.Column(0).(*array.Timestamp).TimestampValues() {
					has = has || int64(v) >= r[0] && int64(v) <= r[1]
				}
				return nil
			})
			if has && !keep[f.Path] {
				t.Errorf("range %v: %s has events in it but was pruned", r, f.Path)
			}
		}
	}
}

// TestEventDecoderRejects: a batch whose columns do not fit the source is
// an error naming the column.
func TestEventDecoderRejects(t *testing.T) {
	fields := []window.Field{{Name: "amount", Kind: 3}}
	mem := memory.NewGoAllocator()
	ts := arrow.FixedWidthTypes.Timestamp_ms
	mk := func(amount arrow.DataType) arrow.RecordBatch {
		sc := arrow.NewSchema([]arrow.Field{{Name: ColEventTime, Type: ts}, {Name: ColIngestTime, Type: ts}, {Name: ColTopic, Type: arrow.BinaryTypes.String},
			{Name: ColPartition, Type: arrow.PrimitiveTypes.Int32}, {Name: ColOffset, Type: arrow.PrimitiveTypes.Int64},
			{Name: "k", Type: arrow.BinaryTypes.String}, {Name: "amount", Type: amount, Nullable: true}}, nil)
		b := array.NewRecordBuilder(mem, sc)
		defer b.Release()
		return b.NewRecordBatch()
	}
	d := NewEventDecoder(fields, []string{"k"})
	if err := d.Bind(mk(arrow.PrimitiveTypes.Float64)); err != nil {
		t.Fatal(err)
	}
	if err := d.Bind(mk(arrow.BinaryTypes.String)); err == nil || err.Error() != `log batch: column "amount" is utf8, the source declares double` {
		t.Fatalf("wrong type: %v", err)
	}
	if err := NewEventDecoder(fields, []string{"nokey"}).Bind(mk(arrow.PrimitiveTypes.Float64)); err == nil || err.Error() != `log batch: 0 columns named "nokey"` {
		t.Fatalf("missing key: %v", err)
	}
}

// TestScanMapped reads a log with ScanMapped, keeping every batch past the
// end of the scan, and checks that the batches read after the scan equal
// what Scan reads, that the files stay mapped while a batch is held (on
// Linux, in /proc/self/maps; the read would fault otherwise), and that no
// mapping is left once the batches are released.
func TestScanMapped(t *testing.T) {
	for name, mk := range storages(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := mk(t)
			w, err := OpenWriter(ctx, st, testProject, Options{FlushRows: 40, BatchRows: 9})
			if err != nil {
				t.Fatal(err)
			}
			s := testSchema(t, "account_stats")
			rng := rand.New(rand.NewPCG(5, 6))
			appendAll(t, w, s, genEvents(rng, 300, 2, 0, t0), 23)
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			want := readRows(t, st)
			snap, err := ReadSnapshot(ctx, st, testProject, "account_stats")
			if err != nil {
				t.Fatal(err)
			}
			var held []arrow.RecordBatch
			err = ScanMapped(ctx, st, snap, snap.Files, func(_ FileInfo, rec arrow.RecordBatch) error {
				rec.Retain()
				held = append(held, rec)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			_, mapped := st.(Mapper)
			if mapped && runtime.GOOS == "linux" && mappedLogFiles(t) == 0 {
				t.Errorf("no log file mapped while %d batches are held", len(held))
			}
			schema := s.Arrow()
			var got []row
			for _, rec := range held {
				rs, err := recordRows(rec, schema)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, rs...)
				rec.Release()
			}
			sortRows(got)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("read %d rows mapped, %d with Scan; first difference: %v", len(got), len(want), firstDiff(got, want))
			}
			if n := mappedLogFiles(t); runtime.GOOS == "linux" && n != 0 {
				t.Errorf("%d log files still mapped after every batch was released", n)
			}
		})
	}
}

// mappedLogFiles counts the mappings of log files of this process.
func mappedLogFiles(t *testing.T) int {
	t.Helper()
	if runtime.GOOS != "linux" {
		return 0
	}
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "/"+testProject+"/") && strings.HasSuffix(l, ".arrow") {
			n++
		}
	}
	return n
}

// TestMappedFaultIsAnError: a log file truncated while its batches are
// mapped makes reading them fault (SIGBUS); a goroutine that defers
// CatchMappedFault under debug.SetPanicOnFault gets an error wrapping
// ErrMappedFault naming the file instead of crashing the process, and a
// fault elsewhere (a nil pointer) still panics.
func TestMappedFaultIsAnError(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("mappings are checked on Linux")
	}
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, err := OpenWriter(ctx, st, testProject, Options{FlushRows: 1000, BatchRows: 100})
	if err != nil {
		t.Fatal(err)
	}
	s := testSchema(t, "account_stats")
	appendAll(t, w, s, genEvents(rand.New(rand.NewPCG(7, 8)), 3000, 1, 0, t0), 50)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := ReadSnapshot(ctx, st, testProject, "account_stats")
	if err != nil {
		t.Fatal(err)
	}
	var held []arrow.RecordBatch
	var names []string
	err = ScanMapped(ctx, st, snap, snap.Files, func(fi FileInfo, rec arrow.RecordBatch) error {
		rec.Retain()
		held = append(held, rec)
		names = append(names, snap.Name(fi))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, r := range held {
			r.Release()
		}
	}()
	last := held[len(held)-1]
	if err := os.Truncate(filepath.Join(dir, filepath.FromSlash(names[len(names)-1])), 0); err != nil {
		t.Fatal(err)
	}
	read := func(f func()) (panicked any, err error) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer func() { panicked = recover() }()
			func() {
				defer CatchMappedFault(&err)
				defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
				f()
			}()
		}()
		<-done
		return panicked, err
	}
	p, err := read(func() {
		var sum int64
		for _, c := range last.Columns() {
			for _, b := range c.Data().Buffers() {
				if b != nil {
					for _, x := range b.Bytes() {
						sum += int64(x)
					}
				}
			}
		}
		t.Logf("read a truncated file's batch without a fault (sum %d)", sum)
	})
	if !errors.Is(err, ErrMappedFault) || p != nil || !strings.Contains(err.Error(), names[len(names)-1]) {
		t.Fatalf("reading a truncated mapped file: err %v, panic %v; want ErrMappedFault naming %s", err, p, names[len(names)-1])
	}
	var nilRec *struct{ x [1 << 10]int64 }
	p, err = read(func() { _ = nilRec.x[100] })
	if err != nil || p == nil {
		t.Fatalf("a nil pointer read: err %v, panic %v; want the panic to go on", err, p)
	}
}
