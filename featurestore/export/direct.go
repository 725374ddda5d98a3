package export

import (
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
)

// directColumn is a fixed-width feature column (int64 or double) that the
// groups write in place, at each row's number, while they are computed:
// the output then takes each batch's values as a slice of it, with no
// gather and no merge. Groups write disjoint rows, so they need no lock.
type directColumn struct {
	kind  featurestore.Kind
	vals  []int64 // the int64, or the bits of the double
	valid []bool
}

// directKind reports whether columns of kind k can be direct.
func directKind(k featurestore.Kind) bool {
	return k == featurestore.KindInt64 || k == featurestore.KindDouble
}

// directBytes is the memory of a direct column of n rows.
func directBytes(n int64) int64 { return n * 9 }

func newDirectColumn(k featurestore.Kind, rows int64) *directColumn {
	return &directColumn{kind: k, vals: make([]int64, rows), valid: make([]bool, rows)}
}

// set stores row's value, null unless the feature is present.
func (d *directColumn) set(row int64, fv *window.FeatureValue) {
	if fv.Status != window.StatusPresent {
		return
	}
	if d.kind == featurestore.KindDouble {
		d.vals[row] = int64(math.Float64bits(fv.Value.Double()))
	} else {
		d.vals[row] = fv.Value.Int64()
	}
	d.valid[row] = true
}

// array returns rows first..first+n-1 as an array, sharing the values.
func (d *directColumn) array(first int64, n int) arrow.Array {
	vals := memory.NewBufferBytes(sliceBytes(d.vals[first : first+int64(n)]))
	var bitmap *memory.Buffer
	nulls := 0
	for _, ok := range d.valid[first : first+int64(n)] {
		if !ok {
			nulls++
		}
	}
	if nulls > 0 {
		bits := make([]byte, (n+7)/8)
		for i, ok := range d.valid[first : first+int64(n)] {
			if ok {
				bits[i>>3] |= 1 << (i & 7)
			}
		}
		bitmap = memory.NewBufferBytes(bits)
	}
	if d.kind == featurestore.KindDouble {
		return array.NewFloat64Data(array.NewData(arrow.PrimitiveTypes.Float64, n, []*memory.Buffer{bitmap, vals}, nil, nulls, 0))
	}
	return array.NewInt64Data(array.NewData(arrow.PrimitiveTypes.Int64, n, []*memory.Buffer{bitmap, vals}, nil, nulls, 0))
}
