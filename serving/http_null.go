package serving

import (
	"bytes"
	"encoding/json"
)

// valueHolders are the JSON names, both spellings, of the request fields
// whose elements are Values: maps (request_context, join_keys) and lists
// (join_key_values).
var valueHolders = map[string]bool{
	"request_context": true, "requestContext": true,
	"join_keys": true, "joinKeys": true,
	"join_key_values": true, "joinKeyValues": true,
}

// nullValues rewrites in place each JSON null of a lookup request that
// stands for a Value (an element of a field of valueHolders) into an empty
// object, "{}  " (the same length, so that no byte moves), and reports
// whether there was one.
//
// Over gRPC such a Value is sent empty: a request value with no kind is a
// null request value, a join-key value with none is refused. In JSON, {} is
// that empty Value, and null is what a client writes for a null; protojson
// refuses null there (only google.protobuf.Value takes it), so HTTP makes it
// the empty Value, as gRPC has it. Only decode's error path calls this:
// requests without such a null pay nothing.
func nullValues(b []byte) bool {
	type frame struct {
		object  bool
		name    string // of the field the object or array is the value of
		key     string // in an object, the key of the value to come
		wantKey bool
	}
	stack := []frame{{name: ""}} // the document, as an array of one
	rewrote := false
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.Token()
		if err != nil {
			return rewrote // the end, or JSON protojson refused anyway
		}
		top := &stack[len(stack)-1]
		if top.object && top.wantKey {
			if key, ok := tok.(string); ok {
				top.key, top.wantKey = key, false
				continue
			}
		}
		// tok is a value of top, or the end of top.
		name := top.name
		if top.object {
			name = top.key
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			// An object or array in a holder is one of its Values, whose
			// own fields hold no Values: its nulls are protojson's.
			if valueHolders[top.name] {
				name = ""
			}
			stack = append(stack, frame{object: tok == json.Delim('{'), name: name, wantKey: true})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return rewrote
			}
		case nil:
			// In a map, top is the map's object, named by its field; in a
			// list, top is the list.
			if valueHolders[top.name] {
				end := int(dec.InputOffset())
				copy(b[end-len("null"):end], "{}  ")
				rewrote = true
			}
		}
		if t := &stack[len(stack)-1]; t.object {
			t.wantKey = true
		}
	}
}
