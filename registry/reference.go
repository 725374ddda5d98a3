package registry

import (
	"bytes"
	"fmt"
	"github.com/featurestore/featurestore/featurestore/derive"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The reference page is generated from the same struct tags as the decoder
// and the JSON Schema (see schema.go); only the prose below is written by
// hand, and the tests check that every type and aggregation has some.

// typeTitles names the nested object types in headings; kinds are titled
// by their kind.
var typeTitles = map[string]string{
	"JoinKey":         "Join key",
	"Kafka":           "Kafka",
	"Protobuf":        "Protobuf",
	"Timestamp":       "Timestamp",
	"Feature":         "Feature",
	"Condition":       "Filter condition",
	"OnDemandFeature": "On-demand feature",
}

// typeIntros says what each kind and nested object is for.
var typeIntros = map[string]string{
	"Entity": "An entity is the thing features describe: a card, a merchant, a user. " +
		"Its join keys identify one of them: lookups pass the join key values of the entities they ask about, " +
		"training exports join on them, and every source that feeds a feature view of the entity says in its `keys` " +
		"which event field carries each join key. Two or more join keys make a composite key, in the order given.",
	"Source": "A source is a Kafka topic of events. It says where the events are read from and how they are encoded, " +
		"which field holds each event's event time, which fields carry the join keys, and which fields features may read, " +
		"with their types. Events that cannot be used (for example an event that does not decode, or one later than " +
		"`allowed_lateness` allows) are rejected, and sent to `dead_letter_topic` when it is set.",
	"FeatureView": "A feature view is a group of features of one entity, computed from the events of one source. " +
		"A feature is either the last value of an event field, or an aggregation of the events in a sliding window or " +
		"over the entity's lifetime. Windows are built from tiles, epoch-aligned intervals of the view's `tile` length, " +
		"so every window is a multiple of the tile. Features are referenced as `view:feature`, like `card_txn:amount_sum_1d`.",
	"FeatureService": "A feature service is the named set of features a model uses, so that lookups and training exports " +
		"name one set instead of listing features. Features are listed as `view:feature`, or `view:*` for every feature " +
		"of a view in the view's order. The list keeps its order, and no feature may appear in it twice, " +
		"not even through `view:*`. Lookups and exports of a service take one value per join key name, so " +
		"entities of one service whose join keys have the same name share that key's value, and must give it the same type.",
	"OnDemandFeatureView": "An on-demand feature view is a group of features computed when they are asked for, by " +
		"expressions over stored features of feature views (its `inputs`) and values the request supplies (its " +
		"`request_fields`): the amount of the transaction being scored against the card's mean amount, say. Nothing " +
		"of it is stored. A lookup reads the inputs with the features it asks for, in the same Redis round trip, and " +
		"computes the expressions; an export computes them at each row from the inputs as they were at the row's " +
		"timestamp and the row's own columns, with the same code, so an exported value is the one a lookup at that " +
		"time was served. Its features are referenced as `view:feature` like those of feature views, and may be " +
		"listed in feature services. A lookup of them names the join keys of every entity its inputs come from, and " +
		"gives each request field in its `request_context`; see [On-demand expressions](#on-demand-expressions).",
	"OnDemandFeature": "One feature of an on-demand view: an expression and the type of its value.",
	"JoinKey":         "One component of an entity's key.",
	"Kafka": "Where a source's events are read from. Set `brokers`, or name a `connection` whose brokers the process " +
		"is given when it starts, not both; with neither, the connection named `default` is used.",
	"Protobuf": "How to decode the events of a source with `format: protobuf`: required for that format, and not " +
		"allowed for `json`. The descriptor set is read when the definitions are loaded, and must contain the message.",
	"Timestamp": "Where a source's events carry their event time, which windows, lateness and last values go by. " +
		"`rfc3339` is a timestamp string like `2026-11-26T10:00:00.123Z`; `epoch_s`, `epoch_ms` and `epoch_us` are " +
		"seconds, milliseconds and microseconds since the Unix epoch.",
	"Feature": "One feature of a view. Without `aggregation` it is a last value: the field's value in the event with " +
		"the greatest event time, served until it is older than the view's `ttl` when one is set; it needs `field` and `type`, and " +
		"takes no `window`. With `aggregation` it combines the events of its `window`; [Aggregations](#aggregations) " +
		"lists what each aggregation accepts and produces.",
	"Condition": "One condition of a feature's `filter`. An event counts towards the feature only when it meets every " +
		"condition of the filter; see [Filters](#filters).",
}

// kindExamples are small definitions of each kind. Together they load
// without error, which the tests check.
var kindExamples = map[string]string{
	KindEntity: `kind: Entity
name: card
description: A payment card, identified by its tokenised number.
join_keys:
  - name: card_id
    type: string
`,
	KindSource: `kind: Source
name: card_transactions
description: One event per card authorisation, as JSON.
kafka:
  topic: card_transactions
  dead_letter_topic: card_transactions.dlq
format: json
timestamp:
  field: event_time
  encoding: rfc3339
keys:
  card_id: card.id
fields:
  amount: double
  merchant_id: string
  country: string
  approved: bool
event_id_field: txn_id
allowed_lateness: 5m
`,
	KindFeatureView: `kind: FeatureView
name: card_txn
entity: card
source: card_transactions
tile: 1m
ttl: 30d
features:
  - name: txn_count_1h
    aggregation: count
    window: 1h
  - name: amount_sum_1d
    aggregation: sum
    field: amount
    window: 1d
  - name: distinct_merchants_1h
    aggregation: count_distinct
    field: merchant_id
    window: 1h
  - name: declined_count_1h
    aggregation: count
    window: 1h
    filter:
      - field: approved
        op: eq
        value: false
  - name: last_country
    field: country
    type: string
`,
	KindOnDemandFeatureView: `kind: OnDemandFeatureView
name: txn_risk
description: The transaction being scored, against the card's history.
inputs:
  count_1h: card_txn:txn_count_1h
  sum_1d: card_txn:amount_sum_1d
request_fields:
  amount: double
features:
  - name: amount_share_1d
    type: double
    expression: amount / (sum_1d + amount)
  - name: burst
    type: bool
    expression: count_1h >= 10 && amount > 500
`,
	KindFeatureService: `kind: FeatureService
name: fraud_detection_v1
description: Features of the card-not-present fraud model.
features:
  - card_txn:txn_count_1h
  - card_txn:amount_sum_1d
  - card_txn:declined_count_1h
  - card_txn:last_country
  - txn_risk:amount_share_1d
`,
}

// aggMeanings says what each aggregation computes; the empty key is the
// last-value feature.
var aggMeanings = map[Aggregation]string{
	AggNone:          "Last value (no `aggregation`): the field's value in the event with the greatest event time, until it is older than the view's `ttl` when one is set. Takes no `window`.",
	AggCount:         "Number of events (that meet the filter).",
	AggSum:           "Sum of the field.",
	AggMean:          "Arithmetic mean of the field.",
	AggMin:           "Smallest value of the field.",
	AggMax:           "Largest value of the field.",
	AggLast:          "The field's value in the event of the window with the greatest event time.",
	AggLastN:         "The field's values in the `n` events of the window with the greatest event times.",
	AggCountDistinct: "Estimated number of distinct values of the field, by HyperLogLog (see below).",
	AggStddev:        "Standard deviation of the field.",
}

// opMeanings says when an event meets a condition with each operator.
var opMeanings = map[Op]string{
	OpEq:    "The field equals the value.",
	OpNe:    "The field differs from the value.",
	OpGt:    "The field is greater than the value.",
	OpGe:    "The field is greater than or equal to the value.",
	OpLt:    "The field is less than the value.",
	OpLe:    "The field is less than or equal to the value.",
	OpIn:    "The field equals one of the values.",
	OpNotIn: "The field equals none of the values.",
}

func isKindType(t reflect.Type) bool {
	for _, k := range kindOrder {
		if kindTypes[k] == t {
			return true
		}
	}
	return false
}

func typeTitle(t reflect.Type) string {
	if s, ok := typeTitles[t.Name()]; ok {
		return s
	}
	return t.Name()
}

var anchorDropRE = regexp.MustCompile(`[^a-z0-9 _-]`)

// anchor is the id GitHub gives a heading.
func anchor(heading string) string {
	return strings.ReplaceAll(anchorDropRE.ReplaceAllString(strings.ToLower(heading), ""), " ", "-")
}

func typeLink(t reflect.Type) string {
	return "[" + typeTitle(t) + "](#" + anchor(typeTitle(t)) + ")"
}

// code renders values as inline code, joined by ", ".
func code[S ~string](vals ...S) string {
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = "`" + string(v) + "`"
	}
	return strings.Join(out, ", ")
}

// cell escapes text for a table cell.
func cell(s string) string {
	return strings.NewReplacer(`\`, `\\`, "|", `\|`, "*", `\*`, "<", "&lt;").Replace(s)
}

// typeWords says in words what a field of type t holds.
func typeWords(t reflect.Type, rule fieldRule) string {
	switch t {
	case literalType:
		return "scalar, or list of scalars"
	case durationType:
		return "[duration](#durations-and-windows)"
	case windowType:
		return "[window](#durations-and-windows)"
	case featureRefType:
		return "feature reference"
	case reflect.TypeFor[Aggregation]():
		return "one of the [aggregations](#aggregations)"
	case reflect.TypeFor[Op]():
		return "one of the [operators](#filters)"
	}
	if e, ok := reflect.New(t).Elem().Interface().(enum); ok {
		vals := e.enumValues()
		if rule.enum != nil {
			vals = rule.enum
		}
		return "one of " + code(vals...)
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Pointer:
		return typeWords(t.Elem(), rule)
	case reflect.Slice:
		switch e := t.Elem(); {
		case e == featureRefType:
			return "list of feature references"
		case e.Kind() == reflect.String:
			return "list of strings"
		case objectOf(e) != nil:
			return "list of " + typeLink(objectOf(e)) + " objects"
		default:
			return "list of " + typeWords(e, fieldRule{})
		}
	case reflect.Map:
		return "map of string to " + typeWords(t.Elem(), fieldRule{})
	case reflect.Struct:
		return typeLink(t) + " object"
	}
	return t.String()
}

// andList joins items as "a, b and c".
func andList(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}

// fieldLabel names a field of t in prose, like "Source `keys`".
func fieldLabel(t reflect.Type, field string) string {
	return typeLink(t) + " `" + field + "`"
}

// ruleUsers lists, in page order, the fields whose values (keys false) or
// map keys (keys true) must match re.
func ruleUsers(re *regexp.Regexp) []string {
	var out []string
	for _, t := range objectTypes() {
		for _, f := range structFields(t) {
			rule, _ := ruleFor(t, f.name)
			if rule.pattern == re {
				out = append(out, fieldLabel(t, f.name))
			}
			if rule.keyPattern == re {
				out = append(out, "the keys of "+fieldLabel(t, f.name))
			}
		}
	}
	return out
}

// exampleError loads the kind examples with one window that is not a
// multiple of the tile, so the page shows a message as the loader writes it.
func exampleError() string {
	view := strings.Replace(kindExamples[KindFeatureView], "window: 1h", "window: 90s", 1)
	_, err := LoadFiles(map[string][]byte{
		"definitions/card.yaml":    []byte(kindExamples[KindEntity] + "---\n" + view),
		"definitions/sources.yaml": []byte(kindExamples[KindSource]),
	})
	list, ok := err.(ErrorList)
	if !ok || len(list) != 1 {
		panic(fmt.Sprintf("registry: example error: got %v", err))
	}
	return list[0].Error()
}

// ReferenceMarkdown returns the reference page of the YAML definitions, in
// Markdown, generated from the same struct tags as the decoder. It is the
// content of docs/yaml-reference.md.
func ReferenceMarkdown() []byte {
	checkRules()
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	types := objectTypes()

	p("<!-- Code generated by \"go test ./registry -run TestGenerated -update\"; DO NOT EDIT. -->\n\n")
	p("# YAML definitions reference\n\n")
	var kinds []string
	for _, k := range kindOrder {
		kinds = append(kinds, "["+k+"](#"+anchor(k)+")")
	}
	p("Features are declared in YAML documents of %d kinds: %s. ", len(kinds), andList(kinds))
	p("A definitions directory holds any number of `*.yaml` and `*.yml` files (the extension in any case: `.YAML` " +
		"too), each with one or more documents " +
		"separated by `---`. Which file a definition is in does not matter: a view may use an entity or a source " +
		"defined in another file. Subdirectories and files whose names start with `.` are ignored.\n\n")
	p("Every document is a mapping with a `kind` field. Fields not listed on this page are errors, and so are "+
		"values of the wrong YAML type: `tile: 60` is a number, not a duration. Integers are written in decimal "+
		"digits without a leading zero: YAML 1.1 reads `n: 017` as 15 and YAML 1.2 as 17, so it is an error. "+
		"A field written without a value "+
		"(`description:`) counts as not given. Anchors and aliases (`&f`, `*f`) may repeat a value within a "+
		"document: an alias cannot name an anchor of an earlier document of the file. The aliases of "+
		"one file may expand to %d nodes at most, so that a few kilobytes cannot expand to gigabytes. "+
		"The definitions are checked as a whole, and every problem is "+
		"reported at once, with its file, line and column:\n\n", maxAliasNodes)
	p("```\n%s\n```\n\n", exampleError())
	p("Editors check and complete definitions as they are typed with the JSON Schema " +
		"[`registry/featurestore.schema.json`](../registry/featurestore.schema.json), generated from the same " +
		"Go types as this page. With the YAML language server (used by the YAML extension of VS Code, among others), " +
		"start each file with a comment that points at it, relative to the file:\n\n")
	p("```yaml\n# yaml-language-server: $schema=../registry/featurestore.schema.json\n```\n\n")
	p("The schema checks each document on its own. What involves other definitions — that a view's entity and " +
		"source exist, that a window is a multiple of the view's tile, that a feature's field is declared by the " +
		"source with a type its aggregation accepts — is checked when the definitions are loaded; " +
		"see [Validation](#validation).\n\n")

	p("## Contents\n\n")
	for _, t := range types {
		if isKindType(t) {
			p("- %s\n", typeLink(t))
		} else {
			p("  - %s\n", typeLink(t))
		}
	}
	for _, s := range []string{"Names", "Durations and windows", "Aggregations", "Filters", "On-demand expressions", "Time and order", "Validation"} {
		p("- [%s](#%s)\n", s, anchor(s))
	}
	p("\n")

	parents := map[reflect.Type][]string{}
	for _, t := range types {
		for _, f := range structFields(t) {
			if o := objectOf(t.Field(f.index).Type); o != nil {
				parents[o] = append(parents[o], fieldLabel(t, f.name))
			}
		}
	}
	for _, t := range types {
		if isKindType(t) {
			p("## %s\n\n", typeTitle(t))
		} else {
			p("### %s\n\n", typeTitle(t))
			p("Appears as %s.\n\n", strings.Join(parents[t], " and "))
		}
		if intro := typeIntros[t.Name()]; intro != "" {
			p("%s\n\n", intro)
		}
		if ex := kindExamples[t.Name()]; ex != "" {
			p("```yaml\n%s```\n\n", ex)
		}
		p("| Field | Type | Required | Default | Description |\n")
		p("|-------|------|----------|---------|-------------|\n")
		if isKindType(t) {
			p("| `kind` | `%s` | yes |  | The kind of definition. |\n", t.Name())
		}
		for _, f := range structFields(t) {
			rule, _ := ruleFor(t, f.name)
			req := "no"
			if f.required {
				req = "yes"
			}
			def := ""
			if f.def != "" {
				def = "`" + f.def + "`"
			}
			p("| `%s` | %s | %s | %s | %s |\n", f.name, typeWords(t.Field(f.index).Type, rule), req, def, cell(f.doc))
		}
		p("\n")
	}

	writeNames(p)
	writeDurations(p)
	writeAggregations(p)
	writeFilters(p)
	writeExpressions(p)
	writeValidation(p)
	return append(bytes.TrimRight(b.Bytes(), "\n"), '\n')
}

type printer func(format string, args ...any)

func writeNames(p printer) {
	p("## Names\n\n")
	p("Names use letters, digits and `_`, start with a letter or `_`, and have at most 63 characters (`%s`). "+
		"They are case-sensitive. Entities, sources, feature views and feature services each have names unique "+
		"among their kind, and on-demand feature views among feature views too; feature names are unique in their view, "+
		"and join key names in their entity. The variables of an on-demand view (the names of its `inputs` and "+
		"`request_fields`) are names that are not words of the expression language, unique among the view's variables. "+
		"Names are taken by %s.\n\n", nameRE, andList(ruleUsers(nameRE)))
	p("Field paths name event fields: names of letters, digits and `_` that do not start with a digit, joined by "+
		"`.` for nested fields, like `card.id` (`%s`). Field paths are taken by %s; "+
		"the `field` of features and filter conditions must be one of the source's `fields`.\n\n",
		fieldPathRE, andList(ruleUsers(fieldPathRE)))
	p("Kafka topic names use letters, digits, `.`, `_` and `-`, and have at most 249 characters (`%s`), "+
		"but are not `.` or `..`, which Kafka refuses. "+
		"They are taken by %s.\n\n", topicRE, andList(ruleUsers(topicRE)))
}

func writeDurations(p printer) {
	shown := func(s string) string {
		d, err := ParseDuration(s)
		if err != nil {
			panic(err)
		}
		return d.String()
	}
	p("## Durations and windows\n\n")
	p("A duration is a whole number followed by a unit, or several such in a row: `250ms`, `90s`, `10m`, " +
		"`1h30m`, `30d`. The units are `ms`, `s`, `m`, `h` and `d` (24 hours). A number without a unit is an " +
		"error, so that `60` cannot mean seconds in one place and minutes in another; only `0` may be written " +
		"bare. Fractions (`1.5h`) and negative durations are errors too.\n\n")
	p("Durations are shown in the largest exact units: `90m` as `%s`, `1440m` as `%s`. The schema's pattern for "+
		"durations is `%s`.\n\n", shown("90m"), shown("1440m"), durationPattern)
	p("A window (the `window` of a feature) is a duration or `lifetime`:\n\n")
	p("- A duration is a sliding window over event time, built from tiles: epoch-aligned intervals of the " +
		"view's `tile` length. Its length must be a multiple of the tile and span at most " +
		fmt.Sprint(MaxTilesPerWindow) + " tiles.\n")
	p("- `lifetime` aggregates every event of the entity, however old.\n")
	p("- Last values take no window; the view's `ttl` bounds how old a served value may be.\n\n")
	p("The tile is a whole number of seconds, at least `1s`; it is `%s` when not given. A smaller tile makes "+
		"windows move in smaller steps, at the cost of more tiles to keep, and to merge on every read of the "+
		"longest window a lookup asks for of the view (a lookup of short windows only reads their tiles). "+
		"The longest window each tile allows:\n\n", DefaultTile)
	p("| Tile | Longest window |\n|------|----------------|\n")
	for _, tile := range []time.Duration{time.Second, 10 * time.Second, time.Minute, 5 * time.Minute, time.Hour} {
		p("| `%s` | `%s` |\n", Duration(tile), Duration(tile*MaxTilesPerWindow))
	}
	p("\n")
}

func writeAggregations(p printer) {
	p("## Aggregations\n\n")
	p("A feature with an `aggregation` combines the events of its window. The field types an aggregation " +
		"accepts, and the type of the value it produces:\n\n")
	p("| Aggregation | Field types | Value type | Meaning |\n")
	p("|-------------|-------------|------------|---------|\n")
	for _, name := range append([]string{""}, Aggregation("").enumValues()...) {
		a := Aggregation(name)
		label := "`" + name + "`"
		if a == AggNone {
			label = "(none)"
		}
		in := a.inputTypes()
		fields := code(in...)
		if a == AggCount {
			fields = "none: takes no `field`"
		}
		p("| %s | %s | %s | %s |\n", label, fields, outputWords(a, in), cell(aggMeanings[a]))
	}
	p("\n")
	p("`type` may be given for an aggregation too; it must then be the value type above. `count` takes no "+
		"`field`: to count only some events, give it a `filter`. `last_n` needs `n`, from 1 to %d.\n\n", MaxLastN)
	p("`count_distinct` estimates with HyperLogLog: `precision` p (from %d to %d, default %d) keeps 2^p "+
		"registers, and the relative standard error is 1.04/sqrt(2^p):\n\n", MinPrecision, MaxPrecision, DefaultPrecision)
	p("| Precision | Registers | Relative standard error |\n|-----------|-----------|-------------------------|\n")
	for prec := MinPrecision; prec <= MaxPrecision; prec++ {
		note := ""
		if prec == DefaultPrecision {
			note = " (default)"
		}
		p("| %d%s | %d | %.2f%% |\n", prec, note, 1<<prec, 100*1.04/math.Sqrt(float64(int(1)<<prec)))
	}
	p("\n")
}

// outputWords says what an aggregation of a field produces.
func outputWords(a Aggregation, in []ValueType) string {
	if a == AggCount {
		return code(a.OutputType(""))
	}
	same, list, fixed := true, true, true
	for _, t := range in {
		out := a.OutputType(t)
		same = same && out == t
		list = list && out == t.ListOf()
		fixed = fixed && out == a.OutputType(in[0])
	}
	switch {
	case fixed:
		return code(a.OutputType(in[0]))
	case same:
		return "the field's type"
	case list:
		outs := make([]ValueType, len(in))
		for i, t := range in {
			outs[i] = a.OutputType(t)
		}
		return "list of the field's type: " + code(outs...)
	}
	pairs := make([]string, len(in))
	for i, t := range in {
		pairs[i] = fmt.Sprintf("`%s` → `%s`", t, a.OutputType(t))
	}
	return strings.Join(pairs, ", ")
}

func writeExpressions(p printer) {
	p("## On-demand expressions\n\n")
	p("An on-demand feature's `expression` is written in the [expr language](https://expr-lang.org/docs/language-definition) " +
		"(`github.com/expr-lang/expr`), over variables named by the view's `inputs` and `request_fields`:\n\n")
	p("- arithmetic `+ - * / %% **` (`/` always divides as doubles; `**`, also written `^`, raises to a power and " +
		"gives a double, from integers too: `2 ** 3` is `8.0`), comparisons `== != < <= > >=`, `and`/`&&`, " +
		"`or`/`||`, `not`/`!`, the conditional `a ? b : c`, `in` (`country in ['FR', 'DE']`), string `+`, " +
		"`contains`, `startsWith`, `endsWith`, `matches` (with a string literal for pattern), and list indexing `xs[0]`;\n")
	p("- the functions %s.\n\n", code(derive.Functions...))
	p("Variables have the types of their features and request fields: int64, double, string, bool, and lists of " +
		"these for `last_n` inputs (`sum(last_amounts)`). The expression is checked when the definitions are loaded: " +
		"an unknown variable or function (expr's other functions, `find` and `reduce` among them, and `$env` are not " +
		"available), a type mismatch, or a value of another type than the feature's `type` (`nil` included) is " +
		"an error then, not at a lookup. An int64 expression may give a `double` feature. Nothing in an expression " +
		"can read the clock, the environment or a file: the same inputs always give the same value, online and in " +
		"exports. That holds across machines too: `exp`, `log`, `log1p` and `**` give the same bits on every " +
		"platform (they are Go's pure-Go algorithms for `math.Exp`, `math.Log`, `math.Log1p` and `math.Pow`, " +
		"written so that no compiler fuses multiply-adds, where Go's `math` package uses assembly that differs by " +
		"CPU), and `sqrt` is correctly rounded everywhere.\n\n")
	p("Nulls: when a variable the expression uses is null (an input with no value, such as a last value never " +
		"seen or expired, or a mean over no events; an export row's null request field), the feature is null and the " +
		"expression is not run; a lookup gives it the status of that input (error, not found, expired or null, in " +
		"that order of precedence; error is an input whose stored state the lookup could not read, which exports " +
		"never have). Counts and sums over no events are 0, not null. When a run fails (an integer `%%` by " +
		"zero, a string index out of range, a list too large, `int()` of a double that is NaN, infinite or outside " +
		"int64's range), the value is null (status null) and the failure is " +
		"counted (`featurestore_serving_on_demand_errors_total` in serving; a warning at the end of an export). A double " +
		"division by zero gives an infinity, not a failure: guard it (`n > 0 ? sum / n : 0.0`) when a model cannot " +
		"take one.\n\n")
	p("Bounds: an expression runs on request values, so each run is bounded, and a run over a bound fails as " +
		"above (null, and counted or warned about), online and in exports alike. Sizes are counted in units of " +
		"one list element or 16 bytes of string. Memory: the strings and lists a run makes (with string `+`, " +
		"`split`, `replace`, `join`, `map`, `filter`, `concat`, `sort` and the other functions that make them) " +
		"total at most 100,000 units, and so do ranges (`1..n`) and list literals (a run fails with `memory " +
		"budget exceeded`). Work: at most 1,000,000 units, counting what the run makes, each predicate (`all`, " +
		"`any`, `none`, `one`, `count`, `sum`, `filter` or `map` with a predicate such as `# > 0`) as the length " +
		"of its list times the number of nodes of the predicate, the strings and lists that operators and functions read inside a " +
		"predicate (`# in xs`, `indexOf(s, #)`), and a `matches` as the size of its text times a weight that grows " +
		"with its pattern (a run fails with `work budget exceeded`). That is in the order of 10 ms of CPU at most; " +
		"expressions over the values of a lookup, or over `last_n` lists of hundreds of elements, are far from it. " +
		"An expression has at most 1,000 nodes.\n\n")
}

func writeFilters(p printer) {
	p("## Filters\n\n")
	p("A feature's `filter` is a list of conditions; an event counts towards the feature only when it meets " +
		"all of them. A condition tests an event `field`, which must be declared in the source's `fields` but " +
		"need not be the feature's own field. The operators:\n\n")
	p("| Operator | Value | Field types | Meaning |\n|----------|-------|-------------|---------|\n")
	for _, name := range Op("").enumValues() {
		op := Op(name)
		value := "one value"
		if op.set() {
			value = "list of values"
		}
		var types []string
		for _, t := range ValueType("").enumValues() {
			if !op.ordered() || ValueType(t) != TypeBool {
				types = append(types, t)
			}
		}
		p("| `%s` | %s | %s | %s |\n", name, value, code(types...), cell(opMeanings[op]))
	}
	p("\n")
	p("A value must fit the type of the field it is compared with, as YAML writes it:\n\n")
	p("| Value written as | Example | Fits fields of type |\n|------------------|---------|---------------------|\n")
	for _, ex := range []struct {
		kind, example string
		v             any
	}{
		{"string", "`FR`, `\"1000\"`", "x"},
		{"integer", "`1000`", int64(1)},
		{"number with a fraction or exponent", "`12.5`, `1e3`", 1.5},
		{"boolean", "`true`, `false`", true},
	} {
		var fits []string
		for _, t := range ValueType("").enumValues() {
			if literalFits(ex.v, ValueType(t)) {
				fits = append(fits, t)
			}
		}
		p("| %s | %s | %s |\n", ex.kind, ex.example, code(fits...))
	}
	p("\n")
	p("`in` and `not_in` take a YAML list, like `value: [FR, DE]`; the other operators take one value.\n\n")
	p("An event whose field is null, absent, or NaN meets only `ne` and `not_in`: `amount ne 0` keeps " +
		"events without an amount, `amount gt 0` does not. Strings compare bytewise; an integer value " +
		"compares exactly with a `double` field; `-0` equals `0`. A filter applies to last values too: " +
		"the feature is then the value of the newest event that passes it.\n\n")
	p("## Time and order\n\n")
	p("A window of length W read at time t covers the tiles from `floor(t/tile) - W/tile + 1` to " +
		"`floor(t/tile)`, with the events of those tiles whose event time is at most t; the interval a value " +
		"covered is reported with it. Windowed values therefore fall as time passes without new events. " +
		"The newest event is the one with the greatest event time; among events of equal time, the one " +
		"with the greatest Kafka partition, then offset; and between events of two topics at the same time, " +
		"partition and offset (a backfill file's row and a Kafka event, say), the one whose field has the " +
		"greater value (null first; strings bytewise; numbers by value; false before true), so that online " +
		"lookups and exports choose the same whatever the order they were applied in. " +
		"A last-value feature (no `aggregation`) is the " +
		"field of the newest event, null if that event has none, and expired when older than the view's " +
		"`ttl`; the `last` aggregation instead skips events without the field.\n\n")
}

func writeValidation(p printer) {
	p("## Validation\n\n")
	p("Beyond the field types above, loading the definitions checks the following rules, and reports every " +
		"broken one with its position.\n\n")
	p("| Limit | Value |\n|-------|-------|\n")
	p("| Tiles one window may span (window / tile) | %d |\n", MaxTilesPerWindow)
	p("| Values `last_n` keeps (`n`) | 1 to %d |\n", MaxLastN)
	p("| `count_distinct` precision | %d to %d |\n", MinPrecision, MaxPrecision)
	p("| Tile | whole seconds, at least `1s` |\n")
	p("| Source `allowed_lateness` | at most `%s` |\n", MaxAllowedLateness)
	p("| Source `max_future_skew` | at most `%s` |\n", MaxFutureSkewLimit)
	p("| Name length | 63 characters |\n")
	p("| Kafka topic name length | 249 characters |\n\n")
	rules := []string{
		"Entities, sources, feature views and feature services have unique names in their kind, on-demand feature views among feature views too; features have unique names in their view, join keys in their entity.",
		"An on-demand feature view has at least one input, each naming one feature of a feature view; request fields and features are string, int64, double or bool; each expression compiles over the view's variables and gives a value of its feature's type.",
		"A feature view's `entity` and `source` must be defined, and the source's `keys` must name a field for every join key of the entity.",
		"A feature service's references must name defined views and features, and list no feature twice, not even through `view:*`. Join keys of the same name in the entities of one service's views have the same type.",
		"A source with `format: protobuf` needs a `protobuf` section, which `json` does not allow; the descriptor set (a path relative to the YAML file) must contain the message.",
		"A source's `kafka` has `brokers` as `host:port` (a host, and a port from 1 to 65535) or a `connection`, not both, and a `dead_letter_topic` different from its `topic`; a source read by a view logged offline has a topic of at most " + strconv.Itoa(MaxOfflineTopicBytes) + " bytes (it names the log's files).",
		"A source's `fields` have the types " + code(ValueType("").enumValues()...) + "; list types are only for `last_n` features.",
		"A feature view's `online` and `offline` are not both false.",
		"A last value needs `field` and `type`, and takes no `window`; `type` must be the type the source declares for the field.",
		"Every aggregation needs a `window`. `count` takes no `field`; every other aggregation needs one, declared in the source's `fields` with a type the aggregation accepts. A `type` given with an aggregation must be its value type.",
		"`n` is only for `last_n`, and `precision` only for `count_distinct`.",
		"A source's `max_future_skew` is positive, and its `dedup_max_ids` from 1 to " + strconv.Itoa(MaxDedupMaxIDs) + ". " +
			"Its `allowed_lateness` is at most " + MaxAllowedLateness.String() + " and its `max_future_skew` at most " + MaxFutureSkewLimit.String() +
			" (the ring of tiles each view keeps online spans both); the schema does not check these two bounds.",
		"A filter condition's `field` is declared in the source's `fields`; `in` and `not_in` take a list and the other operators one value; the value fits the field's type; `gt`, `ge`, `lt` and `le` do not apply to `bool` fields.",
	}
	for _, r := range rules {
		p("- %s\n", r)
	}
}
