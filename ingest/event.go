package ingest

import (
	"fmt"
	"maps"
	"slices"
	"unicode/utf8"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/registry"
)

// Reason says why an event, or its use by one feature view, was rejected.
// Reasons label metrics and dead-letter headers, so the set is fixed.
type Reason string

// The rejection reasons.
const (
	ReasonInvalidPayload Reason = "invalid_payload"
	ReasonMissingTime    Reason = "missing_time"
	ReasonBadTime        Reason = "bad_time"
	ReasonMissingKey     Reason = "missing_key"
	ReasonWrongType      Reason = "wrong_type"
	// ReasonKeyTooLong: a string join key value longer than
	// featurestore.MaxKeyValueBytes.
	ReasonKeyTooLong Reason = "key_too_long"
)

// checkKey rejects a string join key value too long for a key.
func checkKey(l *Layout, i int, v featurestore.Value) *DecodeError {
	if l.Keys[i].Kind == featurestore.KindString && len(v.Str()) > featurestore.MaxKeyValueBytes {
		return reject(ReasonKeyTooLong, "key %q at %q: a string of %d bytes, more than the %d a join key value may have", l.Keys[i].Name, l.Keys[i].Path, len(v.Str()), featurestore.MaxKeyValueBytes)
	}
	return nil
}

// DecodeError is a rejected event: the reason and, in words, what was wrong.
type DecodeError struct {
	Reason Reason
	Detail string
}

func (e *DecodeError) Error() string { return string(e.Reason) + ": " + e.Detail }

func reject(r Reason, format string, args ...any) *DecodeError {
	return &DecodeError{Reason: r, Detail: capDetail(fmt.Sprintf(format, args...))}
}

// maxDetailBytes bounds the detail of a rejection. It goes into a dead
// letter's header, which is never cut: a detail quoting a field of a large
// message whole made the letter larger than the topic takes even without
// its key and value, and its batch failed on every retry, stopping the
// partition.
const maxDetailBytes = 1024

// capDetail cuts a detail longer than maxDetailBytes at a character
// boundary, saying how long it was.
func capDetail(s string) string {
	if len(s) <= maxDetailBytes {
		return s
	}
	cut := maxDetailBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("... (%d bytes)", len(s))
}

// KeySpec is one entity key field a source provides.
type KeySpec struct {
	Name string            // the join key name
	Path string            // where the event carries it
	Kind featurestore.Kind // KindString or KindInt64
}

// FieldSpec is one event field the features of a source read.
type FieldSpec struct {
	Path string
	Kind featurestore.Kind
}

// Layout fixes where a decoded Event keeps each key and field: Keys and
// Fields are sorted by name and path, and Event.Keys and Event.Fields follow
// that order.
type Layout struct {
	Keys   []KeySpec
	Fields []FieldSpec
}

// KeyIndex returns the position of the named join key, or -1.
func (l *Layout) KeyIndex(name string) int {
	return slices.IndexFunc(l.Keys, func(k KeySpec) bool { return k.Name == name })
}

// FieldIndex returns the position of the field at path, or -1.
func (l *Layout) FieldIndex(path string) int {
	return slices.IndexFunc(l.Fields, func(f FieldSpec) bool { return f.Path == path })
}

// NewLayout computes the layout of a source's events. A join key takes its
// type from the entities of the views that read the source; a key no view
// uses is not decoded. Entities that disagree on a key's type are an error.
func NewLayout(r *registry.Registry, src *registry.Source) (Layout, error) {
	kinds := map[string]featurestore.Kind{}
	for _, v := range r.ViewsOfSource(src.Name) {
		ent := r.Entity(v.Entity)
		for _, k := range ent.JoinKeys {
			kind := featurestore.KindString
			if k.Type == registry.KeyInt64 {
				kind = featurestore.KindInt64
			}
			if prev, ok := kinds[k.Name]; ok && prev != kind {
				return Layout{}, fmt.Errorf("source %q: join key %q is %s in one entity and %s in another", src.Name, k.Name, prev, kind)
			}
			kinds[k.Name] = kind
		}
	}
	var l Layout
	for _, name := range slices.Sorted(maps.Keys(src.Keys)) {
		if kind, used := kinds[name]; used {
			l.Keys = append(l.Keys, KeySpec{Name: name, Path: src.Keys[name], Kind: kind})
		}
	}
	for _, path := range slices.Sorted(maps.Keys(src.Fields)) {
		l.Fields = append(l.Fields, FieldSpec{Path: path, Kind: src.Fields[path].Kind()})
	}
	return l, nil
}

// Event is a decoded event. Keys and Fields follow the source's Layout; a
// key or field the event does not carry (or carries as null) is the null
// Value. An Event is reused from one message to the next.
type Event struct {
	// Time is the event time in Unix milliseconds.
	Time   int64
	Keys   []featurestore.Value
	Fields []featurestore.Value
	// ID is the event id, when the source declares an id field and the
	// event carries one.
	ID    string
	HasID bool
}

func (e *Event) reset(l *Layout) {
	e.Time, e.ID, e.HasID = 0, "", false
	e.Keys = resize(e.Keys, len(l.Keys))
	e.Fields = resize(e.Fields, len(l.Fields))
}

func resize(s []featurestore.Value, n int) []featurestore.Value {
	if cap(s) < n {
		return make([]featurestore.Value, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// Decoder decodes the payload of one source's messages. A Decoder is not
// safe for concurrent use: give each partition worker its own.
type Decoder interface {
	// Decode fills ev from payload, or returns a *DecodeError.
	Decode(payload []byte, ev *Event) error
}

// NewDecoder returns a decoder for the source's format. Relative descriptor
// set paths are resolved against baseDir.
func NewDecoder(src *registry.Source, l Layout, baseDir string) (Decoder, error) {
	var d Decoder
	switch src.Format {
	case registry.FormatJSON, "":
		d = newJSONDecoder(src, l)
	case registry.FormatProtobuf:
		pd, err := newProtoDecoder(src, l, baseDir)
		if err != nil {
			return nil, err
		}
		d = pd
	default:
		return nil, fmt.Errorf("source %q: unknown format %q", src.Name, src.Format)
	}
	switch src.Framing {
	case "", registry.FramingNone:
	case registry.FramingConfluent:
		cd, err := newConfluentDecoder(src, d)
		if err != nil {
			return nil, err
		}
		d = cd
	default:
		return nil, fmt.Errorf("source %q: unknown framing %q", src.Name, src.Framing)
	}
	return guardedDecoder{d}, nil
}

// guardedDecoder rejects, as invalid_payload, a payload its decoder panics
// on: a bug, but one a message could otherwise turn into a crash at every
// restart, since the partition would resume at that message. The detail
// names the panic and where it happened, to report.
type guardedDecoder struct{ inner Decoder }

// Decode implements Decoder.
func (g guardedDecoder) Decode(payload []byte, ev *Event) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = reject(ReasonInvalidPayload, "the decoder panicked on this payload (a bug; please report it): %v at %s", r, featurestore.PanicSite())
		}
	}()
	return g.inner.Decode(payload, ev)
}
