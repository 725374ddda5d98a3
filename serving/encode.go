package serving

import (
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/window"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// A gRPC lookup's response is written in the protobuf wire format here,
// straight from the values read, rather than built as messages (several per
// value) for the protobuf runtime to walk and encode: that was a third of
// the server's CPU for a lookup of 100 entities. The bytes go to gRPC as the
// unknown fields of an empty GetOnlineFeaturesResponse, which proto.Marshal
// writes out as they are; a client decodes the very message that fill
// builds (fillColumns for a response by columns; encode_test.go checks that
// they agree). The JSON endpoint, whose encoder does not write unknown
// fields, uses fill and fillColumns.

// Field numbers of serving.proto and types.proto.
const (
	respFeatureNames    = 1
	respResults         = 2
	respReadTime        = 3
	respRegistryVersion = 4
	respColumns         = 5

	resultValues = 1

	fvValue     = 1
	fvStatus    = 2
	fvEventTime = 3
	fvWindow    = 4

	ivStart = 1
	ivEnd   = 2

	tsSeconds = 1
	tsNanos   = 2

	valString     = 1
	valInt64      = 2
	valDouble     = 3
	valBool       = 4
	valStringList = 10
	valInt64List  = 11
	valDoubleList = 12
	valBoolList   = 13

	listVal = 1

	colType         = 1
	colStatuses     = 2
	colStrings      = 3
	colInt64s       = 4
	colDoubles      = 5
	colBools        = 6
	colLists        = 7
	colHasEventTime = 8
	colEventTimes   = 9
	colWindow       = 10
)

// encodedResponse returns an empty response message that marshals to b.
func encodedResponse(b []byte) *pb.GetOnlineFeaturesResponse {
	resp := &pb.GetOnlineFeaturesResponse{}
	resp.ProtoReflect().SetUnknown(b)
	return resp
}

// appendWireNames appends field 1 of the response: the selection's feature
// names. Selections compute it once.
func appendWireNames(b []byte, names []string) []byte {
	for _, n := range names {
		b = protowire.AppendTag(b, respFeatureNames, protowire.BytesType)
		b = protowire.AppendString(b, n)
	}
	return b
}

// encoder writes one response. Its buffers come from the request's scratch.
type encoder struct {
	meta  bool
	sel   *selection
	vals  [][]window.FeatureValue
	sizes []int // per value, the size of its FeatureValue
}

// encodeResponse returns the response of fill, encodedResponse. sc holds the
// buffers it reuses.
func encodeResponse(sc *scratch, req *pb.GetOnlineFeaturesRequest, sel *selection, vals [][]window.FeatureValue, version int64, now time.Time) *pb.GetOnlineFeaturesResponse {
	e := encoder{meta: req.IncludeMetadata == nil || *req.IncludeMetadata, sel: sel, vals: vals}
	ne, nc := len(req.GetEntities()), len(sel.cols)
	e.sizes = growInts(sc.sizes, ne*nc)
	sc.sizes = e.sizes

	// Sizes first, so that the response is written into one buffer of the
	// right length, with no length to patch.
	total := len(sel.namesWire)
	rowSizes := growInts(sc.rows, ne)
	sc.rows = rowSizes
	for i := range ne {
		row := 0
		for c := range sel.cols {
			n := e.cellSize(i, c)
			e.sizes[i*nc+c] = n
			row += 1 + protowire.SizeBytes(n)
		}
		rowSizes[i] = row
		total += 1 + protowire.SizeBytes(row)
	}
	sec, nanos := now.Unix(), int32(now.Nanosecond())
	total += wireTailSize(sec, nanos, version)

	b := make([]byte, 0, total)
	b = append(b, sel.namesWire...)
	for i := range ne {
		b = protowire.AppendTag(b, respResults, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(rowSizes[i]))
		for c := range sel.cols {
			b = e.appendCell(b, i, c)
		}
	}
	b = appendWireTail(b, sec, nanos, version)
	return encodedResponse(b)
}

// wireTailSize is the size of the fields appendWireTail writes.
func wireTailSize(sec int64, nanos int32, version int64) int {
	n := 1 + protowire.SizeBytes(wireTSSize(sec, nanos))
	if version != 0 {
		n += 1 + protowire.SizeVarint(uint64(version))
	}
	return n
}

// appendWireTail appends the response's read time and registry version.
func appendWireTail(b []byte, sec int64, nanos int32, version int64) []byte {
	b = protowire.AppendTag(b, respReadTime, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(wireTSSize(sec, nanos)))
	b = appendWireTS(b, sec, nanos)
	if version != 0 {
		b = protowire.AppendTag(b, respRegistryVersion, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(version))
	}
	return b
}

// encodeColumns is encodeResponse for RESPONSE_LAYOUT_COLUMNS: one
// FeatureColumn per feature, each field one packed run over the entities
// (strings and lists, which protobuf does not pack, one element each).
func encodeColumns(sc *scratch, req *pb.GetOnlineFeaturesRequest, sel *selection, vals [][]window.FeatureValue, version int64, now time.Time) *pb.GetOnlineFeaturesResponse {
	e := encoder{meta: req.IncludeMetadata == nil || *req.IncludeMetadata, sel: sel, vals: vals}
	ne, nc := len(req.GetEntities()), len(sel.cols)
	// Per column: the column's size, its values' packed size, its event
	// times' packed size.
	e.sizes = growInts(sc.sizes, 3*nc)
	sc.sizes = e.sizes
	sec, nanos := now.Unix(), int32(now.Nanosecond())
	total := len(sel.namesWire) + wireTailSize(sec, nanos, version)
	for c := range sel.cols {
		n, packed, times := e.columnSize(ne, c)
		e.sizes[3*c], e.sizes[3*c+1], e.sizes[3*c+2] = n, packed, times
		total += 1 + protowire.SizeBytes(n)
	}
	b := make([]byte, 0, total)
	b = append(b, sel.namesWire...)
	b = appendWireTail(b, sec, nanos, version)
	for c := range sel.cols {
		b = e.appendColumn(b, ne, c)
	}
	return encodedResponse(b)
}

// columnValue returns the value of entity i in column c when it is present
// and of the column's kind (it always is), and false otherwise: the column
// then holds its kind's zero value.
func (e *encoder) columnValue(i, c int) (featurestore.Value, bool) {
	fv := e.value(i, c)
	if fv.Status != window.StatusPresent || fv.Value.Kind() != e.sel.cols[c].kind {
		return featurestore.Value{}, false
	}
	return fv.Value, true
}

// columnSize returns the size of the FeatureColumn of column c, the size of
// its packed values (scalar numbers and bools) and that of its packed event
// times.
func (e *encoder) columnSize(ne, c int) (n, packed, times int) {
	col := &e.sel.cols[c]
	n = 1 + protowire.SizeVarint(uint64(valueType(col.kind)))
	n += 1 + protowire.SizeBytes(ne) // statuses: each below 128
	switch col.kind {
	case featurestore.KindString:
		for i := range ne {
			v, ok := e.columnValue(i, c)
			l := 0
			if ok {
				l = len(v.Str())
			}
			n += 1 + protowire.SizeBytes(l)
		}
	case featurestore.KindInt64:
		for i := range ne {
			v, ok := e.columnValue(i, c)
			if ok {
				packed += protowire.SizeVarint(uint64(v.Int64()))
			} else {
				packed++
			}
		}
	case featurestore.KindDouble:
		packed = ne * protowire.SizeFixed64()
	case featurestore.KindBool:
		packed = ne
	default: // lists
		for i := range ne {
			l := 0
			if v, ok := e.columnValue(i, c); ok {
				l = wireValueSize(v)
			}
			n += 1 + protowire.SizeBytes(l)
		}
	}
	if packed > 0 {
		n += 1 + protowire.SizeBytes(packed)
	}
	if e.meta {
		n += 1 + protowire.SizeBytes(ne) // has_event_time
		for i := range ne {
			fv := e.value(i, c)
			if fv.HasEventTime {
				times += protowire.SizeVarint(uint64(fv.EventTime))
			} else {
				times++
			}
		}
		n += 1 + protowire.SizeBytes(times)
		if col.windowed {
			n += 1 + protowire.SizeBytes(wireIntervalSize(e.value(0, c).Covered))
		}
	}
	return n, packed, times
}

// appendColumn appends column c as a FeatureColumn, field 5 of the
// response, with the sizes columnSize gave.
func (e *encoder) appendColumn(b []byte, ne, c int) []byte {
	col := &e.sel.cols[c]
	b = protowire.AppendTag(b, respColumns, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(e.sizes[3*c]))
	b = protowire.AppendTag(b, colType, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(valueType(col.kind)))
	b = protowire.AppendTag(b, colStatuses, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(ne))
	for i := range ne {
		b = append(b, byte(e.value(i, c).Status))
	}
	packed := e.sizes[3*c+1]
	switch col.kind {
	case featurestore.KindString:
		for i := range ne {
			v, ok := e.columnValue(i, c)
			s := ""
			if ok {
				s = v.Str()
			}
			b = protowire.AppendTag(b, colStrings, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	case featurestore.KindInt64:
		b = protowire.AppendTag(b, colInt64s, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(packed))
		for i := range ne {
			var x int64
			if v, ok := e.columnValue(i, c); ok {
				x = v.Int64()
			}
			b = protowire.AppendVarint(b, uint64(x))
		}
	case featurestore.KindDouble:
		b = protowire.AppendTag(b, colDoubles, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(packed))
		for i := range ne {
			var x float64
			if v, ok := e.columnValue(i, c); ok {
				x = v.Double()
			}
			b = protowire.AppendFixed64(b, math.Float64bits(x))
		}
	case featurestore.KindBool:
		b = protowire.AppendTag(b, colBools, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(packed))
		for i := range ne {
			v, ok := e.columnValue(i, c)
			b = append(b, byte(protowire.EncodeBool(ok && v.Bool())))
		}
	default:
		for i := range ne {
			b = protowire.AppendTag(b, colLists, protowire.BytesType)
			v, ok := e.columnValue(i, c)
			if !ok {
				b = protowire.AppendVarint(b, 0)
				continue
			}
			b = protowire.AppendVarint(b, uint64(wireValueSize(v)))
			b = appendWireValue(b, v)
		}
	}
	if e.meta {
		b = protowire.AppendTag(b, colHasEventTime, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(ne))
		for i := range ne {
			b = append(b, byte(protowire.EncodeBool(e.value(i, c).HasEventTime)))
		}
		b = protowire.AppendTag(b, colEventTimes, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(e.sizes[3*c+2]))
		for i := range ne {
			var t int64
			if fv := e.value(i, c); fv.HasEventTime {
				t = fv.EventTime
			}
			b = protowire.AppendVarint(b, uint64(t))
		}
		if col.windowed {
			cov := e.value(0, c).Covered
			b = protowire.AppendTag(b, colWindow, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(wireIntervalSize(cov)))
			b = appendWireInterval(b, cov)
		}
	}
	return b
}

func (e *encoder) value(i, c int) *window.FeatureValue {
	col := &e.sel.cols[c]
	return &e.vals[i*e.sel.width+col.vidx][col.index]
}

// cellSize returns the size of the FeatureValue of entity i, column c.
func (e *encoder) cellSize(i, c int) int {
	fv := e.value(i, c)
	n := 0
	if fv.Status == window.StatusPresent {
		n += 1 + protowire.SizeBytes(wireValueSize(fv.Value))
	}
	n += 1 + protowire.SizeVarint(uint64(fv.Status))
	if e.meta {
		if fv.HasEventTime {
			n += 1 + protowire.SizeBytes(wireTSSize(wireTime(fv.EventTime)))
		}
		if e.sel.cols[c].windowed {
			n += 1 + protowire.SizeBytes(wireIntervalSize(fv.Covered))
		}
	}
	return n
}

// appendCell appends the FeatureValue of entity i, column c, as an element
// of EntityResult.values.
func (e *encoder) appendCell(b []byte, i, c int) []byte {
	fv := e.value(i, c)
	b = protowire.AppendTag(b, resultValues, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(e.sizes[i*len(e.sel.cols)+c]))
	if fv.Status == window.StatusPresent {
		b = protowire.AppendTag(b, fvValue, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(wireValueSize(fv.Value)))
		b = appendWireValue(b, fv.Value)
	}
	b = protowire.AppendTag(b, fvStatus, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(fv.Status))
	if e.meta {
		if fv.HasEventTime {
			sec, nanos := wireTime(fv.EventTime)
			b = protowire.AppendTag(b, fvEventTime, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(wireTSSize(sec, nanos)))
			b = appendWireTS(b, sec, nanos)
		}
		if e.sel.cols[c].windowed {
			b = protowire.AppendTag(b, fvWindow, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(wireIntervalSize(fv.Covered)))
			b = appendWireInterval(b, fv.Covered)
		}
	}
	return b
}

// wireTime splits a Unix millisecond as setTime does.
func wireTime(ms int64) (sec int64, nanos int32) {
	s, m := ms/1000, ms%1000
	if m < 0 {
		s, m = s-1, m+1000
	}
	return s, int32(m) * 1e6
}

// wireTSSize returns the size of a google.protobuf.Timestamp; zero fields take
// no bytes.
func wireTSSize(sec int64, nanos int32) int {
	n := 0
	if sec != 0 {
		n += 1 + protowire.SizeVarint(uint64(sec))
	}
	if nanos != 0 {
		n += 1 + protowire.SizeVarint(uint64(int64(nanos)))
	}
	return n
}

func appendWireTS(b []byte, sec int64, nanos int32) []byte {
	if sec != 0 {
		b = protowire.AppendTag(b, tsSeconds, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(sec))
	}
	if nanos != 0 {
		b = protowire.AppendTag(b, tsNanos, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(nanos)))
	}
	return b
}

func wireIntervalSize(iv window.Interval) int {
	return 1 + protowire.SizeBytes(wireTSSize(wireTime(iv.Start))) + 1 + protowire.SizeBytes(wireTSSize(wireTime(iv.End)))
}

func appendWireInterval(b []byte, iv window.Interval) []byte {
	for _, f := range [2]struct {
		num protowire.Number
		ms  int64
	}{{ivStart, iv.Start}, {ivEnd, iv.End}} {
		sec, nanos := wireTime(f.ms)
		b = protowire.AppendTag(b, f.num, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(wireTSSize(sec, nanos)))
		b = appendWireTS(b, sec, nanos)
	}
	return b
}

// wireValueSize returns the size of the Value message of v. A oneof member is
// written even when it holds its type's zero value.
func wireValueSize(v featurestore.Value) int {
	switch v.Kind() {
	case featurestore.KindString:
		return 1 + protowire.SizeBytes(len(v.Str()))
	case featurestore.KindInt64:
		return 1 + protowire.SizeVarint(uint64(v.Int64()))
	case featurestore.KindDouble:
		return 1 + protowire.SizeFixed64()
	case featurestore.KindBool:
		return 1 + 1
	case featurestore.KindStringList, featurestore.KindInt64List, featurestore.KindDoubleList, featurestore.KindBoolList:
		return 1 + protowire.SizeBytes(wireListSize(v))
	}
	return 0
}

// wireListSize returns the size of the list message of v: repeated strings, or
// one packed run of numbers, which an empty list omits.
func wireListSize(v featurestore.Value) int {
	if v.Kind() == featurestore.KindStringList {
		n := 0
		for _, s := range v.StringList() {
			n += 1 + protowire.SizeBytes(len(s))
		}
		return n
	}
	if p := wirePackedSize(v); p > 0 {
		return 1 + protowire.SizeBytes(p)
	}
	return 0
}

// wirePackedSize returns the length of the packed run of a list of numbers.
func wirePackedSize(v featurestore.Value) int {
	n := 0
	switch v.Kind() {
	case featurestore.KindInt64List:
		for _, x := range v.Int64List() {
			n += protowire.SizeVarint(uint64(x))
		}
	case featurestore.KindDoubleList:
		n = len(v.DoubleList()) * protowire.SizeFixed64()
	case featurestore.KindBoolList:
		n = len(v.BoolList())
	}
	return n
}

func appendWireValue(b []byte, v featurestore.Value) []byte {
	switch v.Kind() {
	case featurestore.KindString:
		b = protowire.AppendTag(b, valString, protowire.BytesType)
		return protowire.AppendString(b, v.Str())
	case featurestore.KindInt64:
		b = protowire.AppendTag(b, valInt64, protowire.VarintType)
		return protowire.AppendVarint(b, uint64(v.Int64()))
	case featurestore.KindDouble:
		b = protowire.AppendTag(b, valDouble, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, math.Float64bits(v.Double()))
	case featurestore.KindBool:
		b = protowire.AppendTag(b, valBool, protowire.VarintType)
		return protowire.AppendVarint(b, protowire.EncodeBool(v.Bool()))
	}
	var num protowire.Number
	switch v.Kind() {
	case featurestore.KindStringList:
		num = valStringList
	case featurestore.KindInt64List:
		num = valInt64List
	case featurestore.KindDoubleList:
		num = valDoubleList
	case featurestore.KindBoolList:
		num = valBoolList
	default:
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(wireListSize(v)))
	if v.Kind() == featurestore.KindStringList {
		for _, s := range v.StringList() {
			b = protowire.AppendTag(b, listVal, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
		return b
	}
	packed := wirePackedSize(v)
	if packed == 0 {
		return b
	}
	b = protowire.AppendTag(b, listVal, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(packed))
	switch v.Kind() {
	case featurestore.KindInt64List:
		for _, x := range v.Int64List() {
			b = protowire.AppendVarint(b, uint64(x))
		}
	case featurestore.KindDoubleList:
		for _, x := range v.DoubleList() {
			b = protowire.AppendFixed64(b, math.Float64bits(x))
		}
	case featurestore.KindBoolList:
		for _, x := range v.BoolList() {
			b = protowire.AppendVarint(b, protowire.EncodeBool(x))
		}
	}
	return b
}

func growInts(s []int, n int) []int {
	if cap(s) < n {
		return make([]int, n)
	}
	return s[:n]
}
