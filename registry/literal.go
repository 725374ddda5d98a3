package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Literal is a constant in a filter condition: a string, int64, float64 or
// bool, or a list of them.
type Literal struct {
	v any
}

// Value returns the constant: string, int64, float64, bool, or []any of those.
func (l Literal) Value() any { return l.v }

// MarshalJSON writes the constant as JSON.
func (l Literal) MarshalJSON() ([]byte, error) { return json.Marshal(l.v) }

// UnmarshalJSON reads a constant written by MarshalJSON. Whole numbers become
// int64, so that a stored snapshot compares equal to the YAML it came from.
func (l *Literal) UnmarshalJSON(b []byte) error {
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return err
	}
	conv := func(x any) (any, error) {
		switch x := x.(type) {
		case json.Number:
			if i, err := x.Int64(); err == nil {
				return i, nil
			}
			return x.Float64()
		case string, bool:
			return x, nil
		}
		return nil, fmt.Errorf("unsupported literal %v", x)
	}
	if list, ok := v.([]any); ok {
		out := make([]any, len(list))
		for i, x := range list {
			c, err := conv(x)
			if err != nil {
				return err
			}
			out[i] = c
		}
		l.v = out
		return nil
	}
	c, err := conv(v)
	l.v = c
	return err
}

func (l *Literal) unmarshalNode(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := scalarLiteral(c)
			if err != nil {
				return &nodeError{n: c, err: err}
			}
			out = append(out, v)
		}
		l.v = out
		return nil
	}
	v, err := scalarLiteral(n)
	l.v = v
	return err
}

func scalarLiteral(n *yaml.Node) (any, error) {
	if n.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("expected a string, number or boolean, got %s", describeNode(n))
	}
	switch n.ShortTag() {
	case "!!str":
		return n.Value, nil
	case "!!int":
		return yamlInt(n)
	case "!!float":
		if leadingZeroRE.MatchString(n.Value) {
			return yamlInt(n) // 08, which the parser reads as a number
		}
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("invalid number %q", n.Value)
		}
		return f, nil
	case "!!bool":
		return strconv.ParseBool(strings.ToLower(n.Value))
	case "!!null":
		return nil, errors.New("expected a value, got null")
	}
	return nil, fmt.Errorf("expected a string, number or boolean, got %s", describeNode(n))
}

// literalType returns the value type a scalar constant can be compared as.
func literalFits(v any, t ValueType) bool {
	switch v.(type) {
	case string:
		return t == TypeString
	case int64:
		return t == TypeInt64 || t == TypeDouble
	case float64:
		return t == TypeDouble
	case bool:
		return t == TypeBool
	}
	return false
}

func literalKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "list"
	}
	return "null"
}
