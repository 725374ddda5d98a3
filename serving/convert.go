package serving

import (
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/featurestore/featurestore/featurestore"
	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// setValue sets the cell's value to v, using the cell's own variant for
// scalars. Lists are copied, so that the response does not alias state that
// a later read could reuse.
func (c *cell) setValue(v featurestore.Value) {
	dst := &c.value
	switch v.Kind() {
	case featurestore.KindString:
		c.str.StringVal = v.Str()
		dst.Kind = &c.str
	case featurestore.KindInt64:
		c.i64.Int64Val = v.Int64()
		dst.Kind = &c.i64
	case featurestore.KindDouble:
		c.dbl.DoubleVal = v.Double()
		dst.Kind = &c.dbl
	case featurestore.KindBool:
		c.boolean.BoolVal = v.Bool()
		dst.Kind = &c.boolean
	case featurestore.KindStringList:
		dst.Kind = &pb.Value_StringListVal{StringListVal: &pb.StringList{Val: append([]string{}, v.StringList()...)}}
	case featurestore.KindInt64List:
		dst.Kind = &pb.Value_Int64ListVal{Int64ListVal: &pb.Int64List{Val: append([]int64{}, v.Int64List()...)}}
	case featurestore.KindDoubleList:
		dst.Kind = &pb.Value_DoubleListVal{DoubleListVal: &pb.DoubleList{Val: append([]float64{}, v.DoubleList()...)}}
	case featurestore.KindBoolList:
		dst.Kind = &pb.Value_BoolListVal{BoolListVal: &pb.BoolList{Val: append([]bool{}, v.BoolList()...)}}
	}
}

// keyPart converts one join-key value to a key part of the declared kind.
func keyPart(v *pb.Value, want featurestore.KeyKind) (featurestore.KeyPart, error) {
	switch k := v.GetKind().(type) {
	case *pb.Value_StringVal:
		if want == featurestore.KeyString {
			if len(k.StringVal) > featurestore.MaxKeyValueBytes {
				return featurestore.KeyPart{}, fmt.Errorf("a string of %d bytes, more than the %d a join key value may have", len(k.StringVal), featurestore.MaxKeyValueBytes)
			}
			return featurestore.StringPart(k.StringVal), nil
		}
	case *pb.Value_Int64Val:
		if want == featurestore.KeyInt64 {
			return featurestore.Int64Part(k.Int64Val), nil
		}
	}
	return featurestore.KeyPart{}, fmt.Errorf("want a %s value, got %s", want, valueKindName(v))
}

func valueKindName(v *pb.Value) string {
	switch v.GetKind().(type) {
	case nil:
		return "no value"
	case *pb.Value_StringVal:
		return "string"
	case *pb.Value_Int64Val:
		return "int64"
	case *pb.Value_DoubleVal:
		return "double"
	case *pb.Value_BoolVal:
		return "bool"
	}
	return "a list"
}

// setTime sets dst to the Unix millisecond ms.
func setTime(dst *timestamppb.Timestamp, ms int64) {
	s, m := ms/1000, ms%1000
	if m < 0 {
		s, m = s-1, m+1000
	}
	dst.Seconds, dst.Nanos = s, int32(m)*1e6
}

// valueType is the API's type of values of kind k.
func valueType(k featurestore.Kind) pb.ValueType {
	switch k {
	case featurestore.KindString:
		return pb.ValueType_VALUE_TYPE_STRING
	case featurestore.KindInt64:
		return pb.ValueType_VALUE_TYPE_INT64
	case featurestore.KindDouble:
		return pb.ValueType_VALUE_TYPE_DOUBLE
	case featurestore.KindBool:
		return pb.ValueType_VALUE_TYPE_BOOL
	case featurestore.KindStringList:
		return pb.ValueType_VALUE_TYPE_STRING_LIST
	case featurestore.KindInt64List:
		return pb.ValueType_VALUE_TYPE_INT64_LIST
	case featurestore.KindDoubleList:
		return pb.ValueType_VALUE_TYPE_DOUBLE_LIST
	case featurestore.KindBoolList:
		return pb.ValueType_VALUE_TYPE_BOOL_LIST
	}
	return pb.ValueType_VALUE_TYPE_UNSPECIFIED
}
