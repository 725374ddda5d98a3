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
// the output then takes each batch's values from it, with no gather and
// no merge. Groups write disjoint rows, so they need no lock.
//
// The direct columns of an entity share a directBlock, row by row, so that
// setting a row's values touches one or two cache lines, not two per
// column; the output turns a batch's rows into columns in one pass.
type directColumn struct {
	block *directBlock
	pos   int // in the block's rows
	kind  featurestore.Kind
}

// directBlock holds the direct columns of an entity, row-major.
type directBlock struct {
	width int
	vals  []int64 // the int64, or the bits of the double, of row r at r*width
	valid []bool

	// The columns of the batch last asked for (array), from row first.
	first int64
	cols  [][]int64
	nulls [][]byte // validity bitmaps; nil for a column without nulls
	has   bool
}

// directKind reports whether columns of kind k can be direct.
func directKind(k featurestore.Kind) bool {
	return k == featurestore.KindInt64 || k == featurestore.KindDouble
}

// directBytes is the memory of a direct column of n rows.
func directBytes(n int64) int64 { return n * 9 }

// newDirectColumns returns the direct columns of an entity's feature
// columns, nil for those that are not direct.
func newDirectColumns(cols []*column, rows int64) []*directColumn {
	b := &directBlock{}
	out := make([]*directColumn, len(cols))
	for i, c := range cols {
		if directKind(c.kind) {
			out[i] = &directColumn{block: b, pos: b.width, kind: c.kind}
			b.width++
		}
	}
	b.vals = make([]int64, rows*int64(b.width))
	b.valid = make([]bool, rows*int64(b.width))
	return out
}

// set stores row's value, null unless the feature is present.
func (d *directColumn) set(row int64, fv *window.FeatureValue) {
	if fv.Status != window.StatusPresent {
		return
	}
	i := row*int64(d.block.width) + int64(d.pos)
	if d.kind == featurestore.KindDouble {
		d.block.vals[i] = int64(math.Float64bits(fv.Value.Double()))
	} else {
		d.block.vals[i] = fv.Value.Int64()
	}
	d.block.valid[i] = true
}

// array returns rows first..first+n-1 of the column as an array.
func (d *directColumn) array(first int64, n int) arrow.Array {
	b := d.block
	if !b.has || b.first != first || len(b.cols[0]) != n {
		b.transpose(first, n)
	}
	vals := memory.NewBufferBytes(sliceBytes(b.cols[d.pos]))
	var bitmap *memory.Buffer
	nulls := 0
	if bits := b.nulls[d.pos]; bits != nil {
		bitmap = memory.NewBufferBytes(bits)
		for i := range n {
			if bits[i>>3]&(1<<(i&7)) == 0 {
				nulls++
			}
		}
	}
	typ := arrow.DataType(arrow.PrimitiveTypes.Int64)
	if d.kind == featurestore.KindDouble {
		typ = arrow.PrimitiveTypes.Float64
	}
	data := array.NewData(typ, n, []*memory.Buffer{bitmap, vals}, nil, nulls, 0)
	defer data.Release()
	return array.MakeFromData(data)
}

// transpose turns rows first..first+n-1 into columns, in new slices: the
// arrays made of them outlive the next batch.
func (b *directBlock) transpose(first int64, n int) {
	b.first, b.has = first, true
	b.cols = make([][]int64, b.width)
	b.nulls = make([][]byte, b.width)
	for c := range b.cols {
		b.cols[c] = make([]int64, n)
	}
	w := b.width
	base := first * int64(w)
	for i := range n {
		row := b.vals[base+int64(i*w) : base+int64(i*w+w)]
		ok := b.valid[base+int64(i*w) : base+int64(i*w+w)]
		for c := range w {
			b.cols[c][i] = row[c]
			if !ok[c] {
				if b.nulls[c] == nil {
					b.nulls[c] = make([]byte, (n+7)/8)
					for j := range i { // the rows before were valid
						b.nulls[c][j>>3] |= 1 << (j & 7)
					}
				}
				continue
			}
			if b.nulls[c] != nil {
				b.nulls[c][i>>3] |= 1 << (i & 7)
			}
		}
	}
}
