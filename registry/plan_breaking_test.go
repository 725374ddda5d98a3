package registry

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// planLines renders the plan from before to after without its summary
// lines. The old side goes through the canonical JSON, as plan reads it
// from the store.
func planLines(t *testing.T, before, after *Registry) ([]string, []string) {
	t.Helper()
	old, err := FromJSON(before.CanonicalJSON())
	if err != nil {
		t.Fatal(err)
	}
	p := Diff(old, after)
	var b bytes.Buffer
	p.Render(&b)
	var got []string
	for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		if !strings.HasPrefix(l, "Plan:") && !strings.Contains(l, "breaking change(s)") {
			got = append(got, l)
		}
	}
	return got, p.Breaking()
}

func checkPlan(t *testing.T, got, gotBreaking, want, wantBreaking []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !slices.Equal(gotBreaking, wantBreaking) {
		t.Errorf("breaking = %q, want %q", gotBreaking, wantBreaking)
	}
}

// breakingBase is the definitions TestDiffBreaking's cases edit.
const breakingBase = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: txns
kafka: {topic: txns}
timestamp: {field: ts}
keys: {card_id: card_id}
fields: {amount: double}
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: card
source: txns
features:
  - {name: sum_1h, aggregation: sum, field: amount, window: 1h}
  - {name: n_1h, aggregation: count, window: 1h}
`

// edit returns breakingBase with each pair of old and new strings replaced.
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	return editDefs(t, breakingBase, pairs...)
}

// editDefs returns s with each pair of old and new strings replaced.
func editDefs(t *testing.T, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("%q is not in the definitions", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

// TestDiffBreaking checks which changes a plan calls breaking, on pairs of
// definitions that differ by the edits given.
func TestDiffBreaking(t *testing.T) {
	typed := []string{
		"window: 1h}\n  - {name: n_1h", "window: 1h, type: double}\n  - {name: n_1h",
		"{name: n_1h, aggregation: count, window: 1h}", "{name: n_1h, aggregation: count, window: 1h, type: int64}",
	}
	merchant := []string{
		"---\nkind: Source", "---\nkind: Entity\nname: merchant\njoin_keys: [{name: merchant_id, type: string}]\n---\nkind: Source",
		"keys: {card_id: card_id}", "keys: {card_id: card_id, merchant_id: merchant}",
	}
	// A view with a last value and a ttl of a day.
	lastValue := []string{
		"source: txns\nfeatures:", "source: txns\nttl: 1d\nfeatures:",
		"{name: n_1h, aggregation: count, window: 1h}", "{name: n_1h, aggregation: count, window: 1h}\n  - {name: last_amount, field: amount, type: double}",
	}
	ttl := func(edits []string, ttl string) []string {
		edits = slices.Clone(edits)
		edits[1] = strings.Replace(edits[1], "ttl: 1d\n", ttl, 1)
		return edits
	}
	tests := []struct {
		name          string
		before, after []string // edits of breakingBase
		want          []string
		breaking      []string
	}{
		{
			// Rollup tiles change how the online store lays windows out,
			// not what they mean: ingest lays each hash out again.
			name:   "adding rollup tiles",
			before: []string{"{name: n_1h, aggregation: count, window: 1h}", "{name: n_1h, aggregation: count, window: 1h}\n  - {name: n_1d, aggregation: count, window: 1d}"},
			after:  []string{"{name: n_1h, aggregation: count, window: 1h}", "{name: n_1h, aggregation: count, window: 1h}\n  - {name: n_1d, aggregation: count, window: 1d}", "source: txns\nfeatures:", "source: txns\nrollup: 1h\nfeatures:"},
			want: []string{
				`  ~ feature view "v"`,
				`      + rollup: 1h`,
			},
		},
		{
			name:  "declaring an aggregation's output type",
			after: typed,
			want: []string{
				`  ~ feature view "v"`,
				`      + features.n_1h.type: int64`,
				`      + features.sum_1h.type: double`,
			},
		},
		{
			name:   "leaving out an aggregation's output type",
			before: []string{"fields: {amount: double}", "fields: {amount: int64}", "{name: sum_1h, aggregation: sum, field: amount, window: 1h}", "{name: mean_1h, aggregation: mean, field: amount, window: 1h, type: double}"},
			after:  []string{"fields: {amount: double}", "fields: {amount: int64}", "{name: sum_1h, aggregation: sum, field: amount, window: 1h}", "{name: mean_1h, aggregation: mean, field: amount, window: 1h}"},
			want: []string{
				`  ~ feature view "v"`,
				`      - features.mean_1h.type: double`,
			},
		},
		{
			name:   "a declared type that differs from the old output type",
			before: []string{"fields: {amount: double}", "fields: {amount: int64}", "{name: sum_1h, aggregation: sum,", "{name: x_1h, aggregation: sum,"},
			after:  []string{"fields: {amount: double}", "fields: {amount: int64}", "{name: sum_1h, aggregation: sum, field: amount, window: 1h}", "{name: x_1h, aggregation: mean, field: amount, window: 1h, type: double}"},
			want: []string{
				`  ~ feature view "v"`,
				`      ~ features.x_1h.aggregation: sum -> mean   [BREAKING]`,
				`      + features.x_1h.type: double   [BREAKING]`,
			},
			breaking: []string{`feature view "v": features.x_1h.aggregation`, `feature view "v": features.x_1h.type`},
		},
		{
			name: "a key mapping for a new entity",
			after: append(slices.Clone(merchant), "{name: n_1h, aggregation: count, window: 1h}\n",
				"{name: n_1h, aggregation: count, window: 1h}\n---\nkind: FeatureView\nname: m\nentity: merchant\nsource: txns\nfeatures:\n  - {name: sum_1h, aggregation: sum, field: amount, window: 1h}\n"),
			want: []string{
				`  + entity "merchant"`,
				`  ~ source "txns"`,
				`      + keys.merchant_id: merchant`,
				`  + feature view "m"`,
			},
		},
		{
			name:   "an unused key mapping removed",
			before: merchant[2:],
			want: []string{
				`  ~ source "txns"`,
				`      - keys.merchant_id: merchant`,
			},
		},
		{
			name:  "a key read from another field",
			after: []string{"keys: {card_id: card_id}", "keys: {card_id: card.id}"},
			want: []string{
				`  ~ source "txns"`,
				`      ~ keys.card_id: card_id -> card.id   [BREAKING]`,
			},
			breaking: []string{`source "txns": keys.card_id`},
		},
		{
			name:   "a larger ttl",
			before: lastValue,
			after:  ttl(lastValue, "ttl: 30d\n"),
			want: []string{
				`  ~ feature view "v"`,
				`      ~ ttl: 1d -> 30d   [BREAKING: a last value whose Redis key expired under the old ttl is missing online, not in exports, until written again]`,
			},
			breaking: []string{`feature view "v": ttl`},
		},
		{
			name:   "no ttl any more",
			before: lastValue,
			after:  ttl(lastValue, ""),
			want: []string{
				`  ~ feature view "v"`,
				`      - ttl: 1d   [BREAKING: a last value whose Redis key expired under the old ttl is missing online, not in exports, until written again]`,
			},
			breaking: []string{`feature view "v": ttl`},
		},
		{
			name:   "a smaller ttl",
			before: lastValue,
			after:  ttl(lastValue, "ttl: 1h\n"),
			want: []string{
				`  ~ feature view "v"`,
				`      ~ ttl: 1d -> 1h`,
			},
		},
		{
			name:   "a ttl where there was none",
			before: ttl(lastValue, ""),
			after:  lastValue,
			want: []string{
				`  ~ feature view "v"`,
				`      + ttl: 1d`,
			},
		},
		{
			// The ttl bounds last values only; windows end with their
			// length.
			name:   "a larger ttl of a view without last values",
			before: lastValue[:2],
			after:  ttl(lastValue[:2], "ttl: 30d\n"),
			want: []string{
				`  ~ feature view "v"`,
				`      ~ ttl: 1d -> 30d`,
			},
		},
		{
			name:  "a source moved to another topic",
			after: []string{"kafka: {topic: txns}", "kafka: {topic: eu.txns}"},
			want: []string{
				`  ~ source "txns"`,
				`      ~ kafka.topic: txns -> eu.txns   [BREAKING]`,
			},
			breaking: []string{`source "txns": kafka.topic`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, breaking := planLines(t, mustLoad(t, edit(t, tt.before...)), mustLoad(t, edit(t, tt.after...)))
			checkPlan(t, got, breaking, tt.want, tt.breaking)
		})
	}
}

// onDemandBase is the definitions TestDiffOnDemandBreaking's cases edit:
// an on-demand view over features of a card view.
const onDemandBase = breakingBase + `  - {name: max_1h, aggregation: max, field: amount, window: 1h}
---
kind: Entity
name: merchant
join_keys: [{name: merchant_id, type: string}]
---
kind: FeatureView
name: m
entity: merchant
source: txns
features:
  - {name: sum_1h, aggregation: sum, field: amount, window: 1h}
---
kind: OnDemandFeatureView
name: risk
inputs:
  card_max: v:max_1h
  card_n: v:n_1h
request_fields:
  amount: double
features:
  - {name: over_max, type: double, expression: amount / card_max, description: The amount against the largest.}
  - {name: busy, type: bool, expression: card_n > 10}
`

// TestDiffOnDemandBreaking checks which changes of an on-demand view a plan
// calls breaking.
func TestDiffOnDemandBreaking(t *testing.T) {
	base := strings.Replace(onDemandBase, "keys: {card_id: card_id}", "keys: {card_id: card_id, merchant_id: merchant}", 1)
	tests := []struct {
		name     string
		after    []string // edits of base
		want     []string
		breaking []string
	}{
		{
			name:  "a new expression",
			after: []string{"expression: amount / card_max,", "expression: amount / card_max * 100,"},
			want: []string{
				`  ~ on-demand feature view "risk"`,
				`      ~ features.over_max.expression: amount / card_max -> amount / card_max * 100   [BREAKING]`,
			},
			breaking: []string{`on-demand feature view "risk": features.over_max.expression`},
		},
		{
			name:  "a new type",
			after: []string{"{name: over_max, type: double, expression: amount / card_max,", "{name: over_max, type: int64, expression: int(amount / card_max),"},
			want: []string{
				`  ~ on-demand feature view "risk"`,
				`      ~ features.over_max.expression: amount / card_max -> int(amount / card_max)   [BREAKING]`,
				`      ~ features.over_max.type: double -> int64   [BREAKING]`,
			},
			breaking: []string{`on-demand feature view "risk": features.over_max.expression`, `on-demand feature view "risk": features.over_max.type`},
		},
		{
			name:  "a new type, the same expression",
			after: []string{"{name: busy, type: bool, expression: card_n > 10}", `{name: busy, type: string, expression: "card_n > 10 ? 'y' : 'n'"}`},
			want: []string{
				`  ~ on-demand feature view "risk"`,
				`      ~ features.busy.expression: card_n > 10 -> card_n > 10 ? 'y' : 'n'   [BREAKING]`,
				`      ~ features.busy.type: bool -> string   [BREAKING]`,
			},
			breaking: []string{`on-demand feature view "risk": features.busy.expression`, `on-demand feature view "risk": features.busy.type`},
		},
		{
			name:  "an input read from another feature",
			after: []string{"card_max: v:max_1h", "card_max: v:sum_1h"},
			want: []string{
				`  ~ on-demand feature view "risk"`,
				`      ~ inputs.card_max: v:max_1h -> v:sum_1h   [BREAKING]`,
			},
			breaking: []string{`on-demand feature view "risk": inputs.card_max`},
		},
		{
			name:  "an input removed",
			after: []string{"card_max: v:max_1h\n  card_n: v:n_1h", "card_max: v:max_1h", "{name: busy, type: bool, expression: card_n > 10}", "{name: busy, type: bool, expression: card_max > 10}"},
			want: []string{
				`  ~ on-demand feature view "risk"`,
				`      ~ features.busy.expression: card_n > 10 -> card_max > 10   [BREAKING]`,
				`      - inputs.card_n: v:n_1h   [BREAKING]`,
			},
			breaking: []string{`on-demand feature view "risk": features.busy.expression`, `on-demand feature view "risk": inputs.card_n`},
		},
		{
			// The expression is the same, its variable is not.
			name:  "an input turned into a request field",
			after: []string{"  card_n: v:n_1h\n", "", "request_fields:\n  amount: double", "request_fields:\n  amount: double\n  card_n: int64"},
			want: []string{
				`  ~ on-demand feature view "risk"`,
				`      - inputs.card_n: v:n_1h   [BREAKING]`,
				`      + request_fields.card_n: int64`,
			},
			breaking: []string{`on-demand feature view "risk": inputs.card_n`},
		},
		{
			name:  "a request field of another type",
			after: []string{"request_fields:\n  amount: double", "request_fields:\n  amount: int64"},
			want: []string{
				`  ~ on-demand feature view "risk"`,
				`      ~ request_fields.amount: double -> int64   [BREAKING]`,
			},
			breaking: []string{`on-demand feature view "risk": request_fields.amount`},
		},
		{
			name: "a request field used by an existing feature",
			after: []string{"request_fields:\n  amount: double", "request_fields:\n  amount: double\n  limit: double",
				"expression: card_n > 10}", "expression: card_n > limit}"},
			want: []string{
				`  ~ on-demand feature view "risk"`,
				`      ~ features.busy.expression: card_n > 10 -> card_n > limit   [BREAKING]`,
				`      + request_fields.limit: double`,
			},
			breaking: []string{`on-demand feature view "risk": features.busy.expression`},
		},
		{
			// Lookups and exports give only the request fields that the
			// requested features use.
			name: "a request field for a new feature",
			after: []string{"request_fields:\n  amount: double", "request_fields:\n  amount: double\n  limit: double",
				"expression: card_n > 10}", "expression: card_n > 10}\n  - {name: over_limit, type: bool, expression: amount > limit}"},
			want: []string{
				`  ~ on-demand feature view "risk"`,
				`      ~ feature order: over_max, busy -> over_max, busy, over_limit`,
				`      + features.over_limit: {"expression":"amount \u003e limit","name":"over_limit","type":"bool"}`,
				`      + request_fields.limit: double`,
			},
		},
		{
			name:  "an input of an entity the view has",
			after: []string{"card_n: v:n_1h", "card_n: v:n_1h\n  card_sum: v:sum_1h"},
			want: []string{
				`  ~ on-demand feature view "risk"`,
				`      + inputs.card_sum: v:sum_1h`,
			},
		},
		{
			// Every lookup of the view's features must then give the
			// merchant's join keys.
			name:  "an input of another entity",
			after: []string{"card_n: v:n_1h", "card_n: v:n_1h\n  merchant_sum: m:sum_1h"},
			want: []string{
				`  ~ on-demand feature view "risk"`,
				`      + inputs.merchant_sum: m:sum_1h   [BREAKING]`,
			},
			breaking: []string{`on-demand feature view "risk": inputs.merchant_sum`},
		},
		{
			// As a feature of a feature view: no existing feature means
			// something else.
			name:  "a feature removed, a description changed",
			after: []string{"\n  - {name: busy, type: bool, expression: card_n > 10}", "", "description: The amount against the largest.", "description: The amount against the largest of the hour."},
			want: []string{
				`  ~ on-demand feature view "risk"`,
				`      ~ feature order: over_max, busy -> over_max`,
				`      - features.busy: {"expression":"card_n \u003e 10","name":"busy","type":"bool"}`,
				`      ~ features.over_max.description: The amount against the largest. -> The amount against the largest of the hour.`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, breaking := planLines(t, mustLoad(t, base), mustLoad(t, editDefs(t, base, tt.after...)))
			checkPlan(t, got, breaking, tt.want, tt.breaking)
		})
	}
}

// txnProto is the file descriptor set of the Protobuf source in
// TestDiffProtobuf, in text form.
const txnProto = `
file {
  name: "fraud/v1/txn.proto"
  package: "fraud.v1"
  syntax: "proto3"
  message_type {
    name: "Card"
    field { name: "id" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "id" }
  }
  message_type {
    name: "CardTransaction"
    field { name: "txn_id" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "txnId" }
    field { name: "card" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".fraud.v1.Card" json_name: "card" }
    field { name: "amount" number: 3 label: LABEL_OPTIONAL type: TYPE_DOUBLE json_name: "amount" }
    field { name: "ts_ms" number: 4 label: LABEL_OPTIONAL type: TYPE_INT64 json_name: "tsMs" }
    field { name: "note" number: 6 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "note" }
  }
}
`

// txnDefs reads every field of fraud.v1.CardTransaction but note.
const txnDefs = `
kind: Entity
name: card
join_keys: [{name: card_id, type: string}]
---
kind: Source
name: txns
format: protobuf
protobuf: {descriptor_set: txn.binpb, message: fraud.v1.CardTransaction}
kafka: {topic: txns}
timestamp: {field: ts_ms, encoding: epoch_ms}
keys: {card_id: card.id}
fields: {amount: double}
event_id_field: txn_id
allowed_lateness: 0s
---
kind: FeatureView
name: v
entity: card
source: txns
features:
  - {name: sum_1h, aggregation: sum, field: amount, window: 1h}
`

// loadProto loads defs with the descriptor set written in text form as
// setFile next to it, and returns the registry and the set's bytes.
func loadProto(t *testing.T, defs, setFile, set string) (*Registry, []byte) {
	t.Helper()
	var fds descriptorpb.FileDescriptorSet
	if err := prototext.Unmarshal([]byte(set), &fds); err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(&fds)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, setFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := LoadFiles(map[string][]byte{filepath.Join(dir, "defs.yaml"): []byte(defs)})
	if err != nil {
		t.Fatal(err)
	}
	return r, b
}

// TestDiffProtobuf checks that a new descriptor set is breaking only where
// it changes a field the source reads, and that the plan names the field.
func TestDiffProtobuf(t *testing.T) {
	tests := []struct {
		name string
		// The definitions and descriptor set after the change; the
		// definitions default to txnDefs, the set file to txn.binpb.
		defs, setFile, set string
		// {before} and {after} stand for the sets' sizes and digests.
		want     []string
		breaking []string
	}{
		{
			name: "an unrelated field added",
			set: strings.Replace(txnProto, `    field { name: "note"`,
				`    field { name: "merchant" number: 5 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "merchant" }
    field { name: "note"`, 1),
			want: []string{
				`  ~ source "txns"`,
				`      ~ protobuf.descriptor: {before} -> {after}`,
				`      + protobuf.descriptor.merchant: optional string = 5`,
			},
		},
		{
			name: "an unused field removed",
			set:  strings.Replace(txnProto, `    field { name: "note" number: 6 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "note" }`+"\n", "", 1),
			want: []string{
				`  ~ source "txns"`,
				`      ~ protobuf.descriptor: {before} -> {after}`,
				`      - protobuf.descriptor.note: optional string = 6`,
			},
		},
		{
			name: "an unused field of another kind",
			set:  strings.Replace(txnProto, `name: "note" number: 6 label: LABEL_OPTIONAL type: TYPE_STRING`, `name: "note" number: 6 label: LABEL_OPTIONAL type: TYPE_BYTES`, 1),
			want: []string{
				`  ~ source "txns"`,
				`      ~ protobuf.descriptor: {before} -> {after}`,
				`      ~ protobuf.descriptor.note: optional string = 6 -> optional bytes = 6`,
			},
		},
		{
			name: "a field read by a feature of another kind",
			set:  strings.Replace(txnProto, `type: TYPE_DOUBLE`, `type: TYPE_FLOAT`, 1),
			want: []string{
				`  ~ source "txns"`,
				`      ~ protobuf.descriptor: {before} -> {after}`,
				`      ~ protobuf.descriptor.amount: optional double = 3 -> optional float = 3   [BREAKING]`,
			},
			breaking: []string{`source "txns": protobuf.descriptor.amount`},
		},
		{
			name: "the time field renumbered",
			set:  strings.Replace(txnProto, `name: "ts_ms" number: 4`, `name: "ts_ms" number: 7`, 1),
			want: []string{
				`  ~ source "txns"`,
				`      ~ protobuf.descriptor: {before} -> {after}`,
				`      ~ protobuf.descriptor.ts_ms: optional int64 = 4 -> optional int64 = 7   [BREAKING]`,
			},
			breaking: []string{`source "txns": protobuf.descriptor.ts_ms`},
		},
		{
			name: "the event id field of another kind",
			set:  strings.Replace(txnProto, `name: "txn_id" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING`, `name: "txn_id" number: 1 label: LABEL_OPTIONAL type: TYPE_INT64`, 1),
			want: []string{
				`  ~ source "txns"`,
				`      ~ protobuf.descriptor: {before} -> {after}`,
				`      ~ protobuf.descriptor.txn_id: optional string = 1 -> optional int64 = 1   [BREAKING]`,
			},
			breaking: []string{`source "txns": protobuf.descriptor.txn_id`},
		},
		{
			name: "the message a key is read through replaced",
			set: strings.Replace(strings.Replace(txnProto, `type_name: ".fraud.v1.Card"`, `type_name: ".fraud.v1.CardRef"`, 1),
				`  message_type {
    name: "CardTransaction"`, `  message_type {
    name: "CardRef"
    field { name: "id" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "id" }
  }
  message_type {
    name: "CardTransaction"`, 1),
			want: []string{
				`  ~ source "txns"`,
				`      ~ protobuf.descriptor: {before} -> {after}`,
				`      ~ protobuf.descriptor.card: optional fraud.v1.Card = 2 -> optional fraud.v1.CardRef = 2   [BREAKING]`,
			},
			breaking: []string{`source "txns": protobuf.descriptor.card`},
		},
		{
			name: "a nested key field renumbered",
			set:  strings.Replace(txnProto, `field { name: "id" number: 1`, `field { name: "id" number: 2`, 1),
			want: []string{
				`  ~ source "txns"`,
				`      ~ protobuf.descriptor: {before} -> {after}`,
				`      ~ protobuf.descriptor.card.id: optional string = 1 -> optional string = 2   [BREAKING]`,
			},
			breaking: []string{`source "txns": protobuf.descriptor.card.id`},
		},
		{
			name: "a field no longer read, then removed",
			defs: strings.Replace(txnDefs, "event_id_field: txn_id\n", "", 1),
			set:  strings.Replace(txnProto, `    field { name: "txn_id" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "txnId" }`+"\n", "", 1),
			want: []string{
				`  ~ source "txns"`,
				`      - event_id_field: txn_id`,
				`      ~ protobuf.descriptor: {before} -> {after}`,
				`      - protobuf.descriptor.txn_id: optional string = 1`,
			},
		},
		{
			name: "the message renamed",
			defs: strings.Replace(txnDefs, "message: fraud.v1.CardTransaction}", "message: fraud.v1.CardTxn}", 1),
			set:  strings.Replace(txnProto, `name: "CardTransaction"`, `name: "CardTxn"`, 1),
			want: []string{
				`  ~ source "txns"`,
				`      ~ protobuf.descriptor: {before} -> {after}`,
				`      ~ protobuf.message: fraud.v1.CardTransaction -> fraud.v1.CardTxn   [BREAKING]`,
			},
			breaking: []string{`source "txns": protobuf.message`},
		},
		{
			name:    "the descriptor set file moved",
			defs:    strings.Replace(txnDefs, "descriptor_set: txn.binpb", "descriptor_set: protos/txn.binpb", 1),
			setFile: "protos/txn.binpb",
			set:     txnProto,
			want: []string{
				`  ~ source "txns"`,
				`      ~ protobuf.descriptor_set: txn.binpb -> protos/txn.binpb`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, beforeSet := loadProto(t, txnDefs, "txn.binpb", txnProto)
			defs, setFile := tt.defs, tt.setFile
			if defs == "" {
				defs = txnDefs
			}
			if setFile == "" {
				setFile = "txn.binpb"
			}
			after, afterSet := loadProto(t, defs, setFile, tt.set)
			// What sha256sum prints for the set file, shortened.
			digest := func(b []byte) string {
				sum := sha256.Sum256(b)
				return fmt.Sprintf("<%d bytes, sha256:%x>", len(b), sum[:8])
			}
			var want []string
			for _, l := range tt.want {
				l = strings.ReplaceAll(l, "{before}", digest(beforeSet))
				l = strings.ReplaceAll(l, "{after}", digest(afterSet))
				want = append(want, l)
			}
			got, breaking := planLines(t, before, after)
			checkPlan(t, got, breaking, want, tt.breaking)
		})
	}
}
