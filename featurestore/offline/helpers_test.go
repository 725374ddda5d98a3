package offline

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/memblob"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/testenv"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

const testDefs = `
kind: Entity
name: account
join_keys: [{name: region, type: string}, {name: account_id, type: int64}]
---
kind: Entity
name: device
join_keys: [{name: device_id, type: int64}]
---
kind: Source
name: payments
kafka: {topic: payments.v1}
timestamp: {field: ts}
keys: {region: region, account_id: account.id, device_id: device}
fields: {amount: double, currency: string, items: int64, approved: bool, note: string}
allowed_lateness: 0s
---
kind: FeatureView
name: account_stats
entity: account
source: payments
features:
  - {name: amount_sum_1h, aggregation: sum, field: amount, window: 1h, filter: [{field: approved, op: eq, value: true}]}
  - {name: last_currency, field: currency, type: string}
  - {name: items_max_1h, aggregation: max, field: items, window: 1h}
---
kind: FeatureView
name: device_counts
entity: device
source: payments
features:
  - {name: n_1h, aggregation: count, window: 1h}
---
kind: FeatureView
name: online_only
entity: device
source: payments
offline: false
features:
  - {name: n_1h, aggregation: count, window: 1h}
`

const (
	testProject = "proj"
	testTopic   = "payments.v1"
)

func testRegistry(t testing.TB) *registry.Registry {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(testDefs)})
	if err != nil {
		t.Fatalf("load definitions: %v", err)
	}
	return r
}

func testSchema(t testing.TB, view string) *Schema {
	t.Helper()
	s, err := NewSchema(testProject, testRegistry(t), view)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// storages returns the storages every conformance test runs on: a local
// directory, and object storage through fileblob, memblob and S3.
func storages(t *testing.T) map[string]func(t *testing.T) Storage {
	return map[string]func(t *testing.T) Storage{
		"dir": func(t *testing.T) Storage {
			d, err := NewDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
		"fileblob": func(t *testing.T) Storage {
			b, err := fileblob.OpenBucket(t.TempDir(), &fileblob.Options{Metadata: fileblob.MetadataDontWrite})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return NewBucket(b)
		},
		"memblob": func(t *testing.T) Storage {
			b := memblob.OpenBucket(nil)
			t.Cleanup(func() { b.Close() })
			return NewBucket(b)
		},
		// A real S3 protocol server (moto, from .ci/services.sh), through
		// Open and the s3blob driver the binary links.
		"s3": func(t *testing.T) Storage { return openURL(t, testenv.S3URL(t)) },
		// The Google Cloud Storage emulator (fake-gcs-server, from
		// .ci/services.sh), through Open and the gcsblob driver.
		"gcs": func(t *testing.T) Storage { return openURL(t, testenv.GCSURL(t)) },
		// The Azure Blob Storage emulator (Azurite, from .ci/services.sh),
		// through Open and the azureblob driver.
		"azure": func(t *testing.T) Storage { return openURL(t, testenv.AzureURL(t)) },
	}
}

// openURL opens the storage of a bucket URL, closed when the test ends.
func openURL(t *testing.T, u string) Storage {
	t.Helper()
	st, closeSt, err := Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeSt() })
	return st
}

// genEvent is a generated accepted event: what ingest hands to Append, and
// the same as plain values for the reference.
type genEvent struct {
	region  string
	account int64
	ev      window.Event
	ingest  int64
	// plain source fields in SourceFields order (amount, approved,
	// currency, items, note); nil for null.
	plain [5]any
}

var specialFloats = []float64{0, -1.5, math.MaxFloat64, math.SmallestNonzeroFloat64, math.Inf(1), math.Inf(-1)}
var specialInts = []int64{0, -1, math.MaxInt64, math.MinInt64}
var specialStrings = []string{"", "EUR", "ünïcödé ✓", "a/b{c}:*\n", strings.Repeat("x", 300)}
var regions = []string{"eu", "us", "", "ap/south{1}:*"}

// genEvents draws n events of one partition with offsets from first,
// spread over days around t0, with every type and nulls.
func genEvents(rng *rand.Rand, n int, partition int32, first, t0 int64) []genEvent {
	out := make([]genEvent, n)
	for i := range out {
		g := &out[i]
		g.region = regions[rng.IntN(len(regions))]
		g.account = specialInts[rng.IntN(len(specialInts))] + int64(rng.IntN(5))
		g.ev.Time = t0 + rng.Int64N(3*dayMs) - dayMs
		g.ev.Partition = partition
		g.ev.Offset = first + int64(i)
		g.ingest = t0 + 5000 + int64(i)
		vals := make([]featurestore.Value, 5)
		if rng.IntN(4) > 0 {
			f := specialFloats[rng.IntN(len(specialFloats))] + float64(rng.IntN(100))
			vals[0], g.plain[0] = featurestore.DoubleValue(f), f
		}
		if rng.IntN(4) > 0 {
			b := rng.IntN(2) == 0
			vals[1], g.plain[1] = featurestore.BoolValue(b), b
		}
		if rng.IntN(4) > 0 {
			s := specialStrings[rng.IntN(len(specialStrings))]
			vals[2], g.plain[2] = featurestore.StringValue(s), s
		}
		if rng.IntN(4) > 0 {
			v := specialInts[rng.IntN(len(specialInts))]
			vals[3], g.plain[3] = featurestore.Int64Value(v), v
		}
		if rng.IntN(4) > 0 {
			vals[4], g.plain[4] = featurestore.StringValue("note"), "note"
		}
		// Trailing nulls may be left out, as window.Event allows.
		for len(vals) > 0 && vals[len(vals)-1].IsNull() && rng.IntN(2) == 0 {
			vals = vals[:len(vals)-1]
		}
		g.ev.Fields = vals
	}
	return out
}

func (g *genEvent) key() featurestore.EntityKey {
	k, err := featurestore.NewEntityKey(featurestore.StringPart(g.region), featurestore.Int64Part(g.account))
	if err != nil {
		panic(err)
	}
	return k
}

// batchOf groups events as the applier does: by entity, in first-seen order.
func batchOf(evs []genEvent, topic string, partition int32, end int64, hw int64) Batch {
	b := Batch{Topic: topic, Partition: partition, End: Position{Offset: end, HW: hw, HasHW: true}}
	idx := map[featurestore.EntityKey]int{}
	for i := range evs {
		k := evs[i].key()
		j, ok := idx[k]
		if !ok {
			j = len(b.Entities)
			idx[k] = j
			b.Entities = append(b.Entities, EntityEvents{Key: k})
		}
		b.Entities[j].Events = append(b.Entities[j].Events, evs[i].ev)
		b.IngestTime = evs[i].ingest
	}
	return b
}

// row is a logged row as plain values in the account_stats schema order.
type row struct {
	EventTime, IngestTime int64
	Topic                 string
	Partition             int32
	Offset                int64
	Region                string
	Account               int64
	Amount, Approved      any
	Currency, Items       any
}

// wantRow is the row the reference expects for an event appended with
// ingest time ingest.
func wantRow(g genEvent, topic string, ingest int64) row {
	return row{g.ev.Time, ingest, topic, g.ev.Partition, g.ev.Offset, g.region, g.account, g.plain[0], g.plain[1], g.plain[2], g.plain[3]}
}

func sortRows(rs []row) {
	slices.SortFunc(rs, func(a, b row) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
}

// readRows reads every committed row of account_stats, checking each file
// against its manifest entry and the schema, by reading the Arrow columns
// directly (not through EventDecoder).
func readRows(t *testing.T, st Storage) []row {
	t.Helper()
	ctx := context.Background()
	snap, err := ReadSnapshot(ctx, st, testProject, "account_stats")
	if err != nil {
		t.Fatal(err)
	}
	want := testSchema(t, "account_stats").Arrow()
	var rows []row
	for _, fi := range snap.Files {
		var got []row
		err := Scan(ctx, st, snap, []FileInfo{fi}, func(_ FileInfo, rec arrow.RecordBatch) error {
			rs, err := recordRows(rec, want)
			got = append(got, rs...)
			return err
		})
		if err != nil {
			t.Fatalf("read %s: %v", fi.Path, err)
		}
		checkFileRows(t, fi, got)
		rows = append(rows, got...)
	}
	sortRows(rows)
	return rows
}

// recordRows returns the rows of a log batch of the test schema want.
func recordRows(rec arrow.RecordBatch, want *arrow.Schema) ([]row, error) {
	var rows []row
	if !rec.Schema().Equal(want) || !reflect.DeepEqual(rec.Schema().Metadata(), want.Metadata()) {
		return nil, fmt.Errorf("schema %s, want %s", rec.Schema(), want)
	}
	cols := rec.Columns()
	for i := range int(rec.NumRows()) {
		r := row{
			EventTime:  int64(cols[0].(*array.Timestamp).Value(i)),
			IngestTime: int64(cols[1].(*array.Timestamp).Value(i)),
			Topic:      cols[2].(*array.String).Value(i),
			Partition:  cols[3].(*array.Int32).Value(i),
			Offset:     cols[4].(*array.Int64).Value(i),
			Region:     cols[5].(*array.String).Value(i),
			Account:    cols[6].(*array.Int64).Value(i),
		}
		if a := cols[7].(*array.Float64); a.IsValid(i) {
			r.Amount = a.Value(i)
		}
		if a := cols[8].(*array.Boolean); a.IsValid(i) {
			r.Approved = a.Value(i)
		}
		if a := cols[9].(*array.String); a.IsValid(i) {
			r.Currency = strings.Clone(a.Value(i))
		}
		if a := cols[10].(*array.Int64); a.IsValid(i) {
			r.Items = a.Value(i)
		}
		r.Topic, r.Region = strings.Clone(r.Topic), strings.Clone(r.Region)
		rows = append(rows, r)
	}
	return rows, nil
}

// checkFileRows checks a file's rows against its manifest entry.
func checkFileRows(t *testing.T, fi FileInfo, rows []row) {
	t.Helper()
	if int64(len(rows)) != fi.Rows {
		t.Fatalf("%s: %d rows, manifest says %d", fi.Path, len(rows), fi.Rows)
	}
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	tlo, thi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, r := range rows {
		if r.Topic != fi.Topic || r.Partition != fi.Partition {
			t.Fatalf("%s: row of %s/%d", fi.Path, r.Topic, r.Partition)
		}
		lo, hi, tlo, thi = min(lo, r.Offset), max(hi, r.Offset), min(tlo, r.EventTime), max(thi, r.EventTime)
		if dateString(dayOf(r.EventTime)) != path.Base(path.Dir(fi.Path))[len(datePrefix):] {
			t.Fatalf("%s: row with event time %d is of another date", fi.Path, r.EventTime)
		}
	}
	if lo != fi.First || hi != fi.Last || tlo != fi.MinTime || thi != fi.MaxTime {
		t.Fatalf("%s: offsets %d..%d times %d..%d, manifest says %d..%d, %d..%d", fi.Path, lo, hi, tlo, thi, fi.First, fi.Last, fi.MinTime, fi.MaxTime)
	}
}

// checkUnique fails on a (topic, partition, offset) logged twice.
func checkUnique(t *testing.T, rows []row) {
	t.Helper()
	for i := 1; i < len(rows); i++ {
		a, b := rows[i-1], rows[i]
		if a.Topic == b.Topic && a.Partition == b.Partition && a.Offset == b.Offset {
			t.Fatalf("offset %s/%d@%d logged twice", a.Topic, a.Partition, a.Offset)
		}
	}
}

// checkClean fails on temporary or unreferenced files in the project.
func checkClean(t *testing.T, st Storage) {
	t.Helper()
	ctx := context.Background()
	objs, err := st.List(ctx, testProject)
	if err != nil {
		t.Fatal(err)
	}
	snaps := map[string]map[string]bool{}
	for _, o := range objs {
		if o.Temp {
			t.Errorf("temporary file %s left", o.Name)
			continue
		}
		parts := strings.SplitN(o.Name, "/", 3)
		if parts[2] == "" || strings.HasPrefix(parts[2], manifestDirName+"/") {
			continue
		}
		if snaps[parts[1]] == nil {
			s, err := ReadSnapshot(ctx, st, testProject, parts[1])
			if err != nil {
				t.Fatal(err)
			}
			snaps[parts[1]] = map[string]bool{}
			for _, f := range s.Files {
				snaps[parts[1]][f.Path] = true
			}
		}
		if !snaps[parts[1]][parts[2]] {
			t.Errorf("file %s is not in the manifest", o.Name)
		}
	}
}

type ioWriter = io.Writer

// atomicTime is a settable clock.
type atomicTime struct{ v atomic.Int64 }

func (a *atomicTime) Store(t time.Time) { a.v.Store(t.UnixNano()) }
func (a *atomicTime) Load() time.Time   { return time.Unix(0, a.v.Load()) }
