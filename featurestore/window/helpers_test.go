package window_test

import (
	"cmp"
	"math"
	"math/rand"
	"os"
	"slices"
	"testing"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// loadView loads the definitions in a YAML file of testdata and compiles the
// named view.
func loadView(t testing.TB, file, name string) (*window.View, *registry.FeatureView) {
	t.Helper()
	b, err := os.ReadFile("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	return compileYAML(t, string(b), name)
}

func compileYAML(t testing.TB, yaml, name string) (*window.View, *registry.FeatureView) {
	t.Helper()
	r, err := registry.LoadFiles(map[string][]byte{"defs.yaml": []byte(yaml)})
	if err != nil {
		t.Fatalf("load definitions: %v", err)
	}
	rv := r.View(name)
	if rv == nil {
		t.Fatalf("no view %q", name)
	}
	v, err := window.Compile(rv, r.Source(rv.Source))
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return v, rv
}

// rawEvent is a generated event: the window.Event handed to the code under
// test, and the same fields as plain Go values for the reference (a field
// missing from f is absent, a nil one null).
type rawEvent struct {
	key   int
	topic int // 1 for a backfill's pseudo-topic, whose positions may equal a Kafka event's
	time  int64
	part  int32
	off   int64
	f     map[string]any
	ev    window.Event
}

func (e *rawEvent) orderKey() window.OrderKey {
	return window.OrderKey{Time: e.time, Partition: e.part, Offset: e.off}
}

// genFields draws the fields of an event of the prop view's source.
func genFields(rng *rand.Rand, specials bool) map[string]any {
	f := map[string]any{}
	maybe := func(name string, v any) {
		switch r := rng.Intn(20); {
		case r == 0: // absent
		case r == 1:
			f[name] = nil
		default:
			f[name] = v
		}
	}
	maybe("amount", genDouble(rng, specials))
	maybe("qty", genInt(rng))
	maybe("merchant", "m"+string(rune('0'+rng.Intn(10)))+string(rune('a'+rng.Intn(3))))
	maybe("country", []string{"FR", "DE", "US", "GB", ""}[rng.Intn(5)])
	maybe("approved", rng.Intn(3) > 0)
	maybe("channel", []string{"online", "pos"}[rng.Intn(2)])
	if rng.Intn(3) == 0 {
		f["opt"] = []float64{5, 0, -1, 7.5, math.Copysign(0, -1)}[rng.Intn(5)]
	} else if rng.Intn(2) == 0 {
		f["opt"] = nil
	}
	return f
}

// genDouble draws doubles that stress exact summation: decimals, large and
// tiny magnitudes, cancellation, signed zeros, and optionally NaN and
// infinities.
func genDouble(rng *rand.Rand, specials bool) float64 {
	switch rng.Intn(24) {
	case 0:
		return 1e16
	case 1:
		return -1e16
	case 2:
		return math.Copysign(0, -1)
	case 3:
		return math.SmallestNonzeroFloat64 * float64(rng.Intn(5)+1)
	case 4:
		return math.Ldexp(rng.Float64(), rng.Intn(2000)-1000)
	case 5:
		return -math.MaxFloat64 / float64(rng.Intn(3)+1)
	case 6:
		return math.MaxFloat64 / float64(rng.Intn(3)+1)
	case 7:
		if specials {
			return []float64{math.NaN(), math.Inf(1), math.Inf(-1)}[rng.Intn(3)]
		}
		return 0.1
	case 8:
		return 1 + math.Ldexp(1, -53) // a tie when added to 1
	case 9:
		return 1e154 * float64(rng.Intn(3)+1) // squares beyond the double range
	}
	return float64(rng.Intn(200000)-50000) / 100
}

func genInt(rng *rand.Rand) int64 {
	switch rng.Intn(30) {
	case 0:
		return math.MaxInt64 - int64(rng.Intn(3))
	case 1:
		return math.MinInt64 + int64(rng.Intn(3))
	case 2:
		return int64(rng.Uint64())
	}
	return int64(rng.Intn(26) - 5)
}

// toEvent builds the window.Event of raw fields for a view's field order.
func toEvent(v *window.View, e *rawEvent) {
	fields := make([]featurestore.Value, len(v.Fields()))
	for i, fd := range v.Fields() {
		x, ok := e.f[fd.Name]
		if !ok || x == nil {
			continue
		}
		fields[i] = goValue(x)
	}
	// Sometimes drop trailing nulls: a shorter slice reads as null.
	for len(fields) > 0 && fields[len(fields)-1].IsNull() && e.off%2 == 0 {
		fields = fields[:len(fields)-1]
	}
	e.ev = window.Event{Time: e.time, Partition: e.part, Offset: e.off, Fields: fields}
}

func goValue(x any) featurestore.Value {
	switch x := x.(type) {
	case string:
		return featurestore.StringValue(x)
	case int64:
		return featurestore.Int64Value(x)
	case float64:
		return featurestore.DoubleValue(x)
	case bool:
		return featurestore.BoolValue(x)
	}
	panic("unexpected field value")
}

// stream is a generated event stream: what arrived (with duplicates, out of
// order, some too late) and what ingest accepted.
type stream struct {
	arrived  []*rawEvent
	accepted []*rawEvent
	base     int64
}

// genStream draws events for keys over about span tiles of 1s after base,
// delivers them in a jittered order with duplicates and late stragglers, and
// accepts them as ingest does: each (partition, offset) once, and only events
// no more than lateness behind their partition's newest event time.
func genStream(rng *rand.Rand, v *window.View, keys, n int, base, lateness int64, specials bool) stream {
	s := stream{base: base}
	offsets := map[int32]int64{}
	var all []*rawEvent
	span := int64(20000 + rng.Intn(10000))
	for range n {
		p := int32(rng.Intn(3))
		offsets[p]++
		t := base + rng.Int63n(span)
		if rng.Intn(4) == 0 {
			t -= t % 250 // ties in event time
		}
		e := &rawEvent{key: rng.Intn(keys), time: t, part: p, off: offsets[p], f: genFields(rng, specials)}
		toEvent(v, e)
		all = append(all, e)
		if rng.Intn(12) == 0 {
			// An event of another topic with the same order key: a backfilled
			// row, whose fields may be the same or not.
			twin := &rawEvent{key: e.key, topic: 1, time: t, part: p, off: e.off, f: genFields(rng, specials)}
			if rng.Intn(3) == 0 {
				twin.f = e.f
			}
			toEvent(v, twin)
			all = append(all, twin)
		}
	}
	// Arrival: by event time with jitter, some very late, some twice.
	arrival := make([]int64, len(all))
	for i, e := range all {
		arrival[i] = e.time + rng.Int63n(3000)
		if rng.Intn(15) == 0 {
			arrival[i] += 3000 + rng.Int63n(6000)
		}
	}
	idx := make([]int, len(all))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(arrival[a], arrival[b]) })
	for _, i := range idx {
		s.arrived = append(s.arrived, all[i])
		if rng.Intn(10) == 0 {
			s.arrived = append(s.arrived, all[i]) // redelivered
		}
	}
	type pos struct {
		topic int
		p     int32
		o     int64
	}
	type partition struct {
		topic int
		p     int32
	}
	seen := map[pos]bool{}
	high := map[partition]int64{}
	for _, e := range s.arrived {
		k := pos{e.topic, e.part, e.off}
		if seen[k] {
			continue // duplicate dropped by the offset fence
		}
		seen[k] = true
		tp := partition{e.topic, e.part}
		if h, ok := high[tp]; ok && e.time < h-lateness {
			continue // rejected as late
		}
		if h, ok := high[tp]; !ok || e.time > h {
			high[tp] = e.time
		}
		s.accepted = append(s.accepted, e)
	}
	return s
}

func eventsOfKey(evs []*rawEvent, key int) []*rawEvent {
	var out []*rawEvent
	for _, e := range evs {
		if e.key == key {
			out = append(out, e)
		}
	}
	return out
}
