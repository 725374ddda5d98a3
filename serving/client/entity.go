package client

import (
	"fmt"
	"math"
	"reflect"

	pb "github.com/featurestore/featurestore/protos/featurestore/v1"
)

// An Entity is one row of a lookup: a Key or a Keys, or one of them with
// request values of its own (WithRequest). Join-key values are Go
// strings for string join keys and Go integers (int, int64, uint32, ...,
// or a named integer type) for int64 join keys. Every entity has a join key, so an empty Key or Keys
// makes Lookup fail with InvalidArgument before any call.
type Entity interface {
	entityKey() (*pb.EntityKey, error)
}

// Key gives the join-key values of one entity in the order the entity
// declares its join keys, for lookups whose features all belong to that
// entity: client.Key{"card-0001"}, or client.Key{"u1", 42} for an entity
// keyed by a user and a merchant number.
type Key []any

// Keys gives join-key values by join key name. It serves any lookup, and is
// required when the features belong to several entities:
// client.Keys{"card_id": "card-0001", "merchant_id": "m-001"}.
type Keys map[string]any

func (k Key) entityKey() (*pb.EntityKey, error) {
	out := &pb.EntityKey{JoinKeyValues: make([]*pb.Value, len(k))}
	for i, v := range k {
		pv, err := keyValue(v)
		if err != nil {
			return nil, fmt.Errorf("join key value at position %d: %w", i, err)
		}
		out.JoinKeyValues[i] = pv
	}
	return out, nil
}

func (k Keys) entityKey() (*pb.EntityKey, error) {
	out := &pb.EntityKey{JoinKeys: make(map[string]*pb.Value, len(k))}
	for name, v := range k {
		pv, err := keyValue(v)
		if err != nil {
			return nil, fmt.Errorf("join key %q: %w", name, err)
		}
		out.JoinKeys[name] = pv
	}
	return out, nil
}

// keyValue converts a Go join-key value to its wire form. Integers are
// taken by their kind, not their type, so that named integer types (type
// CardNumber int64, time.Duration) are integers too.
func keyValue(v any) (*pb.Value, error) {
	var n int64
	switch x := v.(type) {
	case string:
		return &pb.Value{Kind: &pb.Value_StringVal{StringVal: x}}, nil
	case int64:
		n = x
	case int:
		n = int64(x)
	default:
		switch rv := reflect.ValueOf(v); {
		case rv.CanInt():
			n = rv.Int()
		case rv.CanUint():
			u := rv.Uint()
			if u > math.MaxInt64 {
				return nil, fmt.Errorf("%d does not fit an int64", u)
			}
			n = int64(u)
		default:
			return nil, fmt.Errorf("a %T; join keys are strings or integers", v)
		}
	}
	return &pb.Value{Kind: &pb.Value_Int64Val{Int64Val: n}}, nil
}

// requestValue converts a Go request value to its wire form: what keyValue
// takes, and doubles, bools and nil.
func requestValue(v any) (*pb.Value, error) {
	switch x := v.(type) {
	case nil:
		return &pb.Value{}, nil
	case bool:
		return &pb.Value{Kind: &pb.Value_BoolVal{BoolVal: x}}, nil
	case float64:
		return &pb.Value{Kind: &pb.Value_DoubleVal{DoubleVal: x}}, nil
	case float32:
		return &pb.Value{Kind: &pb.Value_DoubleVal{DoubleVal: float64(x)}}, nil
	case string:
		return keyValue(v)
	}
	if rv := reflect.ValueOf(v); !rv.CanInt() && !rv.CanUint() {
		return nil, fmt.Errorf("a %T; request values are strings, bools, numbers or nil", v)
	}
	return keyValue(v)
}

// WithRequest returns entity e with request values of its own, for
// on-demand features: in a lookup of many transactions at once, the amount
// of each. They take precedence over the lookup's (Selector.WithRequest).
// Values are as Selector.WithRequest takes them.
func WithRequest(e Entity, values map[string]any) Entity {
	return rowWithRequest{e: e, values: values}
}

type rowWithRequest struct {
	e      Entity
	values map[string]any
}

func (r rowWithRequest) entityKey() (*pb.EntityKey, error) {
	if r.e == nil {
		return nil, fmt.Errorf("nil")
	}
	k, err := r.e.entityKey()
	if err != nil {
		return nil, err
	}
	if k.RequestContext, err = requestContext(r.values); err != nil {
		return nil, err
	}
	return k, nil
}

// requestContext converts request values to their wire form, nil for none.
func requestContext(values map[string]any) (map[string]*pb.Value, error) {
	if len(values) == 0 {
		return nil, nil
	}
	out := make(map[string]*pb.Value, len(values))
	for name, v := range values {
		pv, err := requestValue(v)
		if err != nil {
			return nil, fmt.Errorf("request value %q: %w", name, err)
		}
		out[name] = pv
	}
	return out, nil
}
