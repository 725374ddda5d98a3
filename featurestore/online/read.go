package online

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// Lookup names the fields to read of one hash.
type Lookup struct {
	Key    Key
	Fields []string
}

// Read returns the values of the fields of each lookup: out[i][j] is field
// lookups[i].Fields[j] of lookups[i].Key, nil when the field or the hash does
// not exist. The values share memory with the reply and must not be modified.
//
// Read makes one pipeline of HMGET, one per lookup: one round trip whatever
// the number of keys and views. On Redis Cluster the pipeline is split by
// node and sent to the nodes in parallel: one round trip per node, at the same
// time. Any error fails the whole Read.
func (s *Store) Read(ctx context.Context, lookups []Lookup) ([][][]byte, error) {
	if len(lookups) == 0 {
		return nil, nil
	}
	total, nargs := 0, 0
	for i, l := range lookups {
		if err := l.Key.validate(); err != nil {
			return nil, fmt.Errorf("read online state: lookup %d: %w", i, err)
		}
		if len(l.Fields) > 0 {
			total += len(l.Fields)
			nargs += 2 + len(l.Fields)
		}
	}
	if total == 0 {
		return make([][][]byte, len(lookups)), nil
	}
	// HMGET as go-redis builds it, but with the arguments of all commands in
	// one allocation and each field list boxed once: lookups share their
	// lists (one per view and request time), and boxing every field of every
	// command was a third of a lookup's allocations.
	cmds := make([]*redis.SliceCmd, len(lookups))
	args := make([]any, 0, nargs)
	boxed := make(map[fieldList][]any)
	pipe := s.c.Pipeline()
	for i, l := range lookups {
		if len(l.Fields) == 0 {
			continue
		}
		fl := fieldList{unsafe.SliceData(l.Fields), len(l.Fields)}
		fields, ok := boxed[fl]
		if !ok {
			fields = make([]any, len(l.Fields))
			for j, f := range l.Fields {
				fields[j] = f
			}
			boxed[fl] = fields
		}
		n := len(args)
		args = append(args, "hmget", l.Key.Name())
		args = append(args, fields...)
		cmds[i] = redis.NewSliceCmd(ctx, args[n:len(args):len(args)]...)
		_ = pipe.Process(ctx, cmds[i])
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read online state of %d keys from redis: %w", len(lookups), err)
	}
	flat := make([][]byte, total)
	out := make([][][]byte, len(lookups))
	for i, cmd := range cmds {
		if cmd == nil {
			continue
		}
		vals := cmd.Val()
		row := flat[:len(vals):len(vals)]
		flat = flat[len(vals):]
		for j, v := range vals {
			if str, ok := v.(string); ok {
				row[j] = bytesOf(str)
			}
		}
		out[i] = row
	}
	return out, nil
}

// fieldList identifies a slice of field names.
type fieldList struct {
	first *string
	n     int
}
