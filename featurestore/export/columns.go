package export

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

// A feature column holds a feature's value where the online lookup at the
// row's time would give one (status present), and null where it would not
// (not found, expired, or null).

// appendFeature appends a feature value to a builder of the feature's
// kind.
func appendFeature(b array.Builder, k featurestore.Kind, fv *window.FeatureValue) {
	if fv.Status != window.StatusPresent {
		b.AppendNull()
		return
	}
	v := fv.Value
	switch k {
	case featurestore.KindString:
		b.(*array.StringBuilder).Append(v.Str())
	case featurestore.KindInt64:
		b.(*array.Int64Builder).Append(v.Int64())
	case featurestore.KindDouble:
		b.(*array.Float64Builder).Append(v.Double())
	case featurestore.KindBool:
		b.(*array.BooleanBuilder).Append(v.Bool())
	case featurestore.KindStringList:
		lb := b.(*array.ListBuilder)
		lb.Append(true)
		vb := lb.ValueBuilder().(*array.StringBuilder)
		for _, x := range v.StringList() {
			vb.Append(x)
		}
	case featurestore.KindInt64List:
		lb := b.(*array.ListBuilder)
		lb.Append(true)
		lb.ValueBuilder().(*array.Int64Builder).AppendValues(v.Int64List(), nil)
	case featurestore.KindDoubleList:
		lb := b.(*array.ListBuilder)
		lb.Append(true)
		lb.ValueBuilder().(*array.Float64Builder).AppendValues(v.DoubleList(), nil)
	case featurestore.KindBoolList:
		lb := b.(*array.ListBuilder)
		lb.Append(true)
		lb.ValueBuilder().(*array.BooleanBuilder).AppendValues(v.BoolList(), nil)
	default:
		panic(fmt.Sprintf("export: feature of kind %s", k))
	}
}

// appendFrom appends value i of a, a feature column of kind k, to b.
func appendFrom(b array.Builder, k featurestore.Kind, a arrow.Array, i int) {
	if a.IsNull(i) {
		b.AppendNull()
		return
	}
	switch k {
	case featurestore.KindString:
		b.(*array.StringBuilder).Append(a.(*array.String).Value(i))
	case featurestore.KindInt64:
		b.(*array.Int64Builder).Append(a.(*array.Int64).Value(i))
	case featurestore.KindDouble:
		b.(*array.Float64Builder).Append(a.(*array.Float64).Value(i))
	case featurestore.KindBool:
		b.(*array.BooleanBuilder).Append(a.(*array.Boolean).Value(i))
	default:
		la := a.(*array.List)
		lb := b.(*array.ListBuilder)
		lb.Append(true)
		start, end := la.ValueOffsets(i)
		switch vs := la.ListValues().(type) {
		case *array.String:
			vb := lb.ValueBuilder().(*array.StringBuilder)
			for j := start; j < end; j++ {
				vb.Append(vs.Value(int(j)))
			}
		case *array.Int64:
			lb.ValueBuilder().(*array.Int64Builder).AppendValues(vs.Int64Values()[start:end], nil)
		case *array.Float64:
			lb.ValueBuilder().(*array.Float64Builder).AppendValues(vs.Float64Values()[start:end], nil)
		case *array.Boolean:
			vb := lb.ValueBuilder().(*array.BooleanBuilder)
			for j := start; j < end; j++ {
				vb.Append(vs.Value(int(j)))
			}
		default:
			panic(fmt.Sprintf("export: list of %s", vs.DataType()))
		}
	}
}

// valueAt returns value i of an event field column as the aggregations
// take it: null when the column is absent (nil) or the value is null.
func valueAt(a arrow.Array, k featurestore.Kind, i int) featurestore.Value {
	if a == nil || a.IsNull(i) {
		return featurestore.Value{}
	}
	switch k {
	case featurestore.KindString:
		return featurestore.StringValue(a.(*array.String).Value(i))
	case featurestore.KindInt64:
		return featurestore.Int64Value(a.(*array.Int64).Value(i))
	case featurestore.KindDouble:
		return featurestore.DoubleValue(a.(*array.Float64).Value(i))
	case featurestore.KindBool:
		return featurestore.BoolValue(a.(*array.Boolean).Value(i))
	}
	return featurestore.Value{}
}

// sizeOfKind is about how many bytes a value of kind k takes in a column.
func sizeOfKind(k featurestore.Kind) int {
	switch k {
	case featurestore.KindString:
		return 24
	case featurestore.KindBool:
		return 1
	case featurestore.KindStringList, featurestore.KindInt64List, featurestore.KindDoubleList, featurestore.KindBoolList:
		return 64
	}
	return 8
}
