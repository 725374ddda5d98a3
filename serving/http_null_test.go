package serving

import "testing"

// TestNullValues: only a null that is a direct element of a holder (a map's
// value, a list's element) is a Value; nulls inside a Value, or elsewhere,
// stay.
func TestNullValues(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"join_key_values":[null,{"string_val":null}]}`, `{"join_key_values":[{}  ,{"string_val":null}]}`},
		{`{"joinKeyValues":[{"string_val":null},null]}`, `{"joinKeyValues":[{"string_val":null},{}  ]}`},
		{`{"join_keys":{"k":null,"v":{"string_val":null}}}`, `{"join_keys":{"k":{}  ,"v":{"string_val":null}}}`},
		// A Value's field named like a holder is no holder.
		{`{"request_context":{"join_keys":{"a":null},"b":null}}`, `{"request_context":{"join_keys":{"a":null},"b":{}  }}`},
		{`{"requestContext":{"a":null},"entities":[{"join_keys":{"a":null}}]}`, `{"requestContext":{"a":{}  },"entities":[{"join_keys":{"a":{}  }}]}`},
		{`{"features":{"refs":[null]},"request_context":null}`, `{"features":{"refs":[null]},"request_context":null}`},
	} {
		b := []byte(c.in)
		rewrote := nullValues(b)
		if string(b) != c.want || rewrote != (c.in != c.want) {
			t.Errorf("%s: got %s (rewrote %v), want %s", c.in, b, rewrote, c.want)
		}
	}
}
