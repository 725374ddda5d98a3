package window

import (
	"fmt"
	"maps"
	"slices"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// Event is one accepted event as the aggregations see it: its event time,
// its position in Kafka (which orders events of equal time, see OrderKey)
// and the values of the source's fields, indexed as SourceFields orders
// them. A missing trailing field reads as null.
type Event struct {
	Time      int64 // event time, Unix ms
	Partition int32
	Offset    int64
	Fields    []featurestore.Value
}

// Key returns the event's order key.
func (e *Event) Key() OrderKey {
	return OrderKey{Time: e.Time, Partition: e.Partition, Offset: e.Offset}
}

// Field returns the value of field i, null when the event has none.
func (e *Event) Field(i int) featurestore.Value {
	if i < 0 || i >= len(e.Fields) {
		return featurestore.Value{}
	}
	return e.Fields[i]
}

// Field is a declared event field of a source.
type Field struct {
	Name string // field path, as the source declares it
	Kind featurestore.Kind
}

// SourceFields returns the declared fields of a source, sorted by name: the
// order of Event.Fields for every view of the source, so that one decoded
// event serves them all.
func SourceFields(src *registry.Source) ([]Field, error) {
	fields := make([]Field, 0, len(src.Fields))
	for _, name := range slices.Sorted(maps.Keys(src.Fields)) {
		k := src.Fields[name].Kind()
		if k == featurestore.KindNull || k.IsList() {
			return nil, fmt.Errorf("source %q: field %q: unsupported type %q", src.Name, name, src.Fields[name])
		}
		fields = append(fields, Field{Name: name, Kind: k})
	}
	return fields, nil
}

func fieldIndex(fields []Field, name string) int {
	i, ok := slices.BinarySearchFunc(fields, name, func(f Field, n string) int {
		switch {
		case f.Name < n:
			return -1
		case f.Name > n:
			return 1
		}
		return 0
	})
	if !ok {
		return -1
	}
	return i
}
