package registry

import (
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/featurestore/featurestore/featurestore/derive"
)

// Limits that protect the online store and lookups from definitions that
// would make them slow or huge.
const (
	// MaxTilesPerWindow bounds how many tiles one window read merges.
	MaxTilesPerWindow = 10080
	// MaxLastN bounds the values last_n keeps.
	MaxLastN = 1000
	// DefaultTile is the tile size of a view that sets none.
	DefaultTile = Duration(time.Minute)
	// MaxOfflineTopicBytes bounds the topic of a source with offline
	// views: the offline log names its files <topic>-<partition>-<first
	// offset>-<last offset>.arrow (up to 57 bytes more), written through a
	// temporary name 16 bytes longer still, and a file name has at most 255
	// bytes on common file systems. A longer name failed every flush.
	MaxOfflineTopicBytes = 180
	// DefaultMaxFutureSkew is how far ahead of its Kafka timestamp an event
	// of a source that sets no max_future_skew may be.
	DefaultMaxFutureSkew = Duration(5 * time.Minute)
	// DefaultDedupMaxIDs is how many events ingest remembers for dedup per
	// partition when a source with an event_id_field sets no dedup_max_ids;
	// MaxDedupMaxIDs bounds the setting.
	DefaultDedupMaxIDs = 1_000_000
	MaxDedupMaxIDs     = 100_000_000
	// DefaultPrecision is the HyperLogLog precision of count_distinct.
	DefaultPrecision = 14
	// MinPrecision and MaxPrecision bound the precision of count_distinct.
	MinPrecision = 4
	MaxPrecision = 16
	// MaxAllowedLateness and MaxFutureSkewLimit bound a source's
	// allowed_lateness and max_future_skew. Their sum, Source.Reach, sizes
	// each view's ring of tiles online: unbounded, it could overflow a
	// time.Duration into a negative ring.
	MaxAllowedLateness = Duration(3650 * Day)
	MaxFutureSkewLimit = Duration(3650 * Day)
)

var (
	fieldPathRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)
	topicRE     = regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)
)

// checkTopic reports a topic name Kafka would refuse.
func checkTopic(topic string) error {
	if !topicRE.MatchString(topic) {
		return fmt.Errorf("invalid topic name %q (letters, digits, '.', '_' and '-', at most 249)", topic)
	}
	if slices.Contains(reservedTopics, topic) {
		return fmt.Errorf("invalid topic name %q (Kafka refuses \".\" and \"..\")", topic)
	}
	return nil
}

// reservedTopics are the names topicRE matches that Kafka refuses.
var reservedTopics = []string{".", ".."}

// checkBroker reports a broker address that is not host:port with a host
// and a port from 1 to 65535, which ingest would fail to dial only when it
// starts.
func checkBroker(b string) error {
	host, port, err := net.SplitHostPort(b)
	switch {
	case err != nil || port == "":
		return fmt.Errorf("invalid broker %q: expected host:port", b)
	case host == "":
		return fmt.Errorf("invalid broker %q: expected host:port, with a host before the colon", b)
	}
	// ParseUint takes no sign, so "-1" and "+1" are refused with the rest.
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("invalid broker %q: port %q is not a number from 1 to 65535", b, port)
	}
	return nil
}

// nearest proposes the closest of the known names.
// Nearest returns " (did you mean "x"?)" for the known name x nearest to
// name in edit distance, if one is near enough, or "": for errors that name
// an unknown name.
func Nearest(name string, known []string) string {
	best, bestDist := "", max(2, len(name)/3)+1
	for _, k := range known {
		// Ties go to the first name in order: known often comes from a map.
		if d := editDistance(name, k); d < bestDist || (d == bestDist && best != "" && k < best) {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

func (r *Registry) checkEntity(e *errs, o *Entity) {
	ctx := fmt.Sprintf("entity %q", o.Name)
	if !o.failed("name") {
		if err := checkName(o.Name); err != nil {
			e.add(o.PosOf("name"), "%s: %v", ctx, err)
		}
	}
	seen := map[string]Pos{}
	for i := range o.JoinKeys {
		k := &o.JoinKeys[i]
		if k.failed("name") || k.Name == "" {
			continue
		}
		if err := checkName(k.Name); err != nil {
			e.add(k.PosOf("name"), "%s: join key: %v", ctx, err)
		}
		if first, dup := seen[k.Name]; dup {
			e.add(k.PosOf("name"), "%s: join key %q given twice (first at %s)", ctx, k.Name, first)
		}
		seen[k.Name] = k.PosOf("name")
	}
}

func (r *Registry) checkSource(e *errs, o *Source) {
	ctx := fmt.Sprintf("source %q", o.Name)
	if !o.failed("name") {
		if err := checkName(o.Name); err != nil {
			e.add(o.PosOf("name"), "%s: %v", ctx, err)
		}
	}
	if o.Framing == FramingNone {
		// Stored as unset, so that writing the default out changes no
		// digest (definitions from before framing existed set none).
		o.Framing = ""
	}
	if o.Format == "" {
		o.Format = FormatJSON
	}
	if o.Timestamp.Encoding == "" {
		o.Timestamp.Encoding = TimeRFC3339
	}
	k := &o.Kafka
	if !k.failed("topic") && k.Topic != "" {
		if err := checkTopic(k.Topic); err != nil {
			e.add(k.PosOf("topic"), "%s: kafka: %v", ctx, err)
		}
	}
	if k.DeadLetterTopic != "" {
		if err := checkTopic(k.DeadLetterTopic); err != nil {
			e.add(k.PosOf("dead_letter_topic"), "%s: kafka: %v", ctx, err)
		} else if k.DeadLetterTopic == k.Topic {
			e.add(k.PosOf("dead_letter_topic"), "%s: kafka: dead_letter_topic must differ from topic %q", ctx, k.Topic)
		}
	}
	for i, b := range k.Brokers {
		if err := checkBroker(b); err != nil {
			e.add(k.PosOf(fmt.Sprintf("brokers[%d]", i)), "%s: kafka: %v", ctx, err)
		}
	}
	switch {
	case len(k.Brokers) > 0 && k.Connection != "":
		e.add(k.PosOf("connection"), "%s: kafka: set brokers or connection, not both", ctx)
	case k.Connection != "":
		if err := checkName(k.Connection); err != nil {
			e.add(k.PosOf("connection"), "%s: kafka: connection: %v", ctx, err)
		}
	case len(k.Brokers) == 0:
		k.Connection = "default"
	}
	switch o.Format {
	case FormatProtobuf:
		if o.Protobuf == nil && !o.failed("protobuf") {
			e.add(o.PosOf("format"), "%s: format protobuf needs a protobuf section with descriptor_set and message", ctx)
		}
	case FormatJSON:
		if o.Protobuf != nil {
			e.add(o.PosOf("protobuf"), "%s: protobuf is only for format protobuf", ctx)
		}
	}
	if p := o.Protobuf; p != nil && p.DescriptorSet != "" && p.Message != "" {
		if p.Pos().File != "" {
			// Loaded from YAML: read the file, relative to the YAML file.
			path := p.DescriptorSet
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(p.Pos().File), path)
			}
			b, err := readDescriptorSet(path)
			if err != nil {
				e.add(p.PosOf("descriptor_set"), "%s: protobuf: %v", ctx, err)
			}
			p.Descriptor = b
		}
		if p.Descriptor != nil {
			if md, err := messageDescriptor(p.Descriptor, p.DescriptorSet, p.Message); err != nil {
				e.add(p.PosOf("descriptor_set"), "%s: protobuf: %v", ctx, err)
			} else if o.Format == FormatProtobuf {
				checkProtoSource(e, ctx, o, md)
			}
		}
	}
	checkPath := func(pos Pos, what, path string) {
		if path != "" && !fieldPathRE.MatchString(path) {
			e.add(pos, "%s: %s: invalid field path %q (names joined by '.')", ctx, what, path)
		}
	}
	if !o.failed("timestamp") {
		checkPath(o.Timestamp.PosOf("field"), "timestamp", o.Timestamp.Field)
	}
	checkPath(o.PosOf("event_id_field"), "event_id_field", o.EventIDField)
	if o.AllowedLateness > MaxAllowedLateness && !o.failed("allowed_lateness") {
		e.add(o.PosOf("allowed_lateness"), "%s: allowed_lateness %s is more than %s", ctx, o.AllowedLateness, MaxAllowedLateness)
	}
	if o.MaxFutureSkew > MaxFutureSkewLimit && !o.failed("max_future_skew") {
		e.add(o.PosOf("max_future_skew"), "%s: max_future_skew %s is more than %s", ctx, o.MaxFutureSkew, MaxFutureSkewLimit)
	}
	if _, given := o.fields["max_future_skew"]; given && o.MaxFutureSkew <= 0 && !o.failed("max_future_skew") {
		e.add(o.PosOf("max_future_skew"), "%s: max_future_skew must be positive (the default is %s)", ctx, DefaultMaxFutureSkew)
	} else if !given && o.MaxFutureSkew == 0 {
		o.MaxFutureSkew = DefaultMaxFutureSkew
	}
	if _, given := o.fields["dedup_max_ids"]; given && (o.DedupMaxIDs < 1 || o.DedupMaxIDs > MaxDedupMaxIDs) && !o.failed("dedup_max_ids") {
		e.add(o.PosOf("dedup_max_ids"), "%s: dedup_max_ids must be from 1 to %d, got %d (the default is %d)", ctx, MaxDedupMaxIDs, o.DedupMaxIDs, DefaultDedupMaxIDs)
	} else if !given && o.DedupMaxIDs == 0 {
		o.DedupMaxIDs = DefaultDedupMaxIDs
	}
	for _, key := range slices.Sorted(maps.Keys(o.Keys)) {
		if err := checkName(key); err != nil {
			e.add(o.keyPosOf("keys."+key), "%s: keys: join key: %v", ctx, err)
		}
		if o.Keys[key] == "" {
			e.add(o.PosOf("keys."+key), "%s: keys.%s: empty field path", ctx, key)
		}
		checkPath(o.PosOf("keys."+key), "keys."+key, o.Keys[key])
	}
	for _, f := range slices.Sorted(maps.Keys(o.Fields)) {
		checkPath(o.keyPosOf("fields."+f), "fields", f)
		if strings.HasSuffix(string(o.Fields[f]), "_list") {
			e.add(o.PosOf("fields."+f), "%s: fields.%s: list types are not event field types", ctx, f)
		}
	}
}

func (r *Registry) checkView(e *errs, v *FeatureView) {
	ctx := fmt.Sprintf("feature view %q", v.Name)
	if !v.failed("name") {
		if err := checkName(v.Name); err != nil {
			e.add(v.PosOf("name"), "%s: %v", ctx, err)
		}
	}
	ent := r.entities[v.Entity]
	if ent == nil && v.Entity != "" && !v.failed("entity") {
		e.add(v.PosOf("entity"), "%s: unknown entity %q%s", ctx, v.Entity, Nearest(v.Entity, slices.Collect(maps.Keys(r.entities))))
	}
	src := r.sources[v.Source]
	if src == nil && v.Source != "" && !v.failed("source") {
		e.add(v.PosOf("source"), "%s: unknown source %q%s", ctx, v.Source, Nearest(v.Source, slices.Collect(maps.Keys(r.sources))))
	}
	if ent != nil && src != nil {
		for _, k := range ent.JoinKeys {
			if _, ok := src.Keys[k.Name]; !ok && k.Name != "" {
				e.add(v.PosOf("source"), "%s: source %q has no field for join key %q of entity %q (add it to the source's keys)", ctx, src.Name, k.Name, ent.Name)
			}
		}
	}
	if src != nil && v.IsOffline() && len(src.Kafka.Topic) > MaxOfflineTopicBytes && topicRE.MatchString(src.Kafka.Topic) {
		e.add(v.PosOf("source"), "%s: the topic of source %q has %d bytes; a view logged offline takes topics of at most %d, which name its log files (set offline: false, or use a shorter topic)",
			ctx, src.Name, len(src.Kafka.Topic), MaxOfflineTopicBytes)
	}
	if _, given := v.fields["tile"]; !given && v.Tile == 0 && !v.failed("tile") {
		v.Tile = DefaultTile
	}
	tileOK := !v.failed("tile")
	if tileOK && (v.Tile < Duration(time.Second) || v.Tile.Std()%time.Second != 0) {
		e.add(v.PosOf("tile"), "%s: tile %s must be a whole number of seconds, at least 1s", ctx, v.Tile)
		tileOK = false
	}
	if tileOK && v.Rollup != 0 && !v.failed("rollup") {
		longest := Duration(0)
		for _, f := range v.Features {
			if f != nil && !f.Window.Lifetime {
				longest = max(longest, f.Window.Length)
			}
		}
		switch {
		case v.Rollup < 2*v.Tile || v.Rollup.Std()%v.Tile.Std() != 0:
			e.add(v.PosOf("rollup"), "%s: rollup %s is not a multiple of tile %s at least twice as long", ctx, v.Rollup, v.Tile)
		case v.Rollup >= longest:
			e.add(v.PosOf("rollup"), "%s: rollup %s is not shorter than the longest window (%s): no window would read a rollup tile", ctx, v.Rollup, longest)
		}
	}
	if !v.IsOnline() && !v.IsOffline() {
		e.add(v.PosOf("online"), "%s: online and offline are both false: the view would compute nothing", ctx)
	}
	on, off := v.IsOnline(), v.IsOffline()
	v.Online, v.Offline = &on, &off

	seen := map[string]Pos{}
	for _, f := range v.Features {
		if f.Name != "" && !f.failed("name") {
			if first, dup := seen[f.Name]; dup {
				e.add(f.PosOf("name"), "%s: feature %q defined twice (first at %s)", ctx, f.Name, first)
			}
			seen[f.Name] = f.PosOf("name")
		}
		r.checkFeature(e, v, f, src, tileOK)
	}
}

func (r *Registry) checkFeature(e *errs, v *FeatureView, f *Feature, src *Source, tileOK bool) {
	ctx := fmt.Sprintf("feature view %q: feature %q", v.Name, f.Name)
	if !f.failed("name") && f.Name != "" {
		if err := checkName(f.Name); err != nil {
			e.add(f.PosOf("name"), "%s: %v", ctx, err)
		}
	}
	_, windowGiven := f.fields["window"]
	windowGiven = windowGiven || !f.Window.IsZero()
	// fieldType looks a field up in the source; ok is false when it cannot
	// be checked (no source) or is undeclared (reported).
	fieldType := func(pos Pos, name string) (ValueType, bool) {
		if src == nil {
			return "", false
		}
		t, ok := src.Fields[name]
		if !ok {
			declared := slices.Sorted(maps.Keys(src.Fields))
			list := "none"
			if len(declared) > 0 {
				list = strings.Join(declared, ", ")
			}
			e.add(pos, "%s: field %q is not declared in the fields of source %q (declared: %s)", ctx, name, src.Name, list)
		}
		return t, ok
	}

	var in ValueType
	inOK := false
	switch {
	case f.failed("aggregation"):
	case f.IsLastValue():
		if f.Field == "" && !f.failed("field") {
			e.add(f.Pos(), "%s: a last-value feature needs field (or set aggregation)", ctx)
		}
		if f.Type == "" && !f.failed("type") {
			e.add(f.Pos(), "%s: a last-value feature needs type", ctx)
		}
		if windowGiven {
			e.add(f.PosOf("window"), "%s: window is only for aggregations; a last value is bounded by the view's ttl", ctx)
		}
		if f.Field != "" {
			in, inOK = fieldType(f.PosOf("field"), f.Field)
		}
	case f.Aggregation == AggCount:
		if f.Field != "" {
			e.add(f.PosOf("field"), "%s: count counts events and takes no field; use filter to count only some", ctx)
		}
		inOK = true
	default:
		if f.Field == "" && !f.failed("field") {
			e.add(f.Pos(), "%s: aggregation %s needs field", ctx, f.Aggregation)
		} else if f.Field != "" {
			in, inOK = fieldType(f.PosOf("field"), f.Field)
		}
	}
	if inOK && f.Aggregation != AggCount && !slices.Contains(f.Aggregation.inputTypes(), in) {
		what := "aggregation " + string(f.Aggregation)
		if f.IsLastValue() {
			what = "a last value"
		}
		takes := make([]string, 0, 4)
		for _, t := range f.Aggregation.inputTypes() {
			takes = append(takes, string(t))
		}
		e.add(f.PosOf("field"), "%s: %s cannot take field %q of type %s (takes %s)", ctx, what, f.Field, in, strings.Join(takes, ", "))
		inOK = false
	}
	if inOK {
		f.valueType = f.Aggregation.OutputType(in)
		if f.Type != "" && f.Type != f.valueType && !f.failed("type") {
			if f.IsLastValue() {
				e.add(f.PosOf("type"), "%s: type %s does not match the type %s of field %q in source %q", ctx, f.Type, in, f.Field, src.Name)
			} else {
				e.add(f.PosOf("type"), "%s: type %s does not match the output type %s of %s", ctx, f.Type, f.valueType, f.Aggregation)
			}
		}
	}
	if !f.IsLastValue() && !f.failed("aggregation", "window") {
		switch {
		case !windowGiven:
			e.add(f.Pos(), "%s: aggregation %s needs window (a duration or lifetime)", ctx, f.Aggregation)
		case f.Window.Lifetime:
		case !tileOK:
		case f.Window.Length < v.Tile || f.Window.Length.Std()%v.Tile.Std() != 0:
			e.add(f.PosOf("window"), "%s: window %s is not a multiple of tile %s", ctx, f.Window.Length, v.Tile)
		case int64(f.Window.Length/v.Tile) > MaxTilesPerWindow:
			e.add(f.PosOf("window"), "%s: window %s spans %d tiles of %s; at most %d are allowed (use a larger tile)", ctx, f.Window.Length, int64(f.Window.Length/v.Tile), v.Tile, MaxTilesPerWindow)
		}
	}
	if _, given := f.fields["n"]; given || f.Aggregation == AggLastN {
		switch {
		case f.failed("n"):
		case f.Aggregation != AggLastN:
			e.add(f.PosOf("n"), "%s: n is only for last_n", ctx)
		case f.N < 1 || f.N > MaxLastN:
			e.add(f.PosOf("n"), "%s: last_n needs n from 1 to %d, got %d", ctx, MaxLastN, f.N)
		}
	}
	if _, given := f.fields["precision"]; given && !f.failed("precision") {
		switch {
		case f.Aggregation != AggCountDistinct:
			e.add(f.PosOf("precision"), "%s: precision is only for count_distinct", ctx)
		case f.Precision < MinPrecision || f.Precision > MaxPrecision:
			e.add(f.PosOf("precision"), "%s: precision must be from %d to %d, got %d", ctx, MinPrecision, MaxPrecision, f.Precision)
		}
	} else if f.Aggregation == AggCountDistinct && f.Precision == 0 {
		f.Precision = DefaultPrecision
	}
	for i, c := range f.Filter {
		r.checkCondition(e, fmt.Sprintf("%s: filter[%d]", ctx, i), c, src, fieldType)
	}
}

func (r *Registry) checkCondition(e *errs, ctx string, c *Condition, src *Source, fieldType func(Pos, string) (ValueType, bool)) {
	if c.failed("field", "op", "value") || c.Field == "" {
		return
	}
	t, ok := fieldType(c.PosOf("field"), c.Field)
	if !ok {
		return
	}
	val := c.Value.Value()
	list, isList := val.([]any)
	switch {
	case c.Op.set() && !isList:
		e.add(c.PosOf("value"), "%s: operator %s needs a list of values, got %s", ctx, c.Op, literalKind(val))
		return
	case c.Op.set() && len(list) == 0:
		e.add(c.PosOf("value"), "%s: operator %s needs at least one value", ctx, c.Op)
		return
	case !c.Op.set() && isList:
		e.add(c.PosOf("value"), "%s: operator %s needs one value, got a list (use in)", ctx, c.Op)
		return
	case c.Op.ordered() && t == TypeBool:
		e.add(c.PosOf("op"), "%s: operator %s does not apply to bool field %q", ctx, c.Op, c.Field)
		return
	}
	if !isList {
		list = []any{val}
	}
	for _, x := range list {
		if !literalFits(x, t) {
			e.add(c.PosOf("value"), "%s: value %s (%s) does not fit field %q of type %s", ctx, formatLiteral(x), literalKind(x), c.Field, t)
			return
		}
	}
}

func formatLiteral(x any) string {
	if s, ok := x.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(x)
}

func (r *Registry) checkService(e *errs, s *FeatureService) {
	ctx := fmt.Sprintf("feature service %q", s.Name)
	if !s.failed("name") {
		if err := checkName(s.Name); err != nil {
			e.add(s.PosOf("name"), "%s: %v", ctx, err)
		}
	}
	seen := map[FeatureRef]Pos{}
	keys, entities := map[string]serviceKey{}, map[*Entity]bool{}
	// The feature names of each view referenced, listed and as a set, built
	// once: a service may reference thousands of features of one view.
	type viewNames struct {
		names []string
		set   map[string]bool
	}
	views := map[string]*viewNames{}
	s.resolved = s.resolved[:0]
	for i, ref := range s.Features {
		pos := s.PosOf(fmt.Sprintf("features[%d]", i))
		if ref.View == "" {
			continue // failed to decode; reported
		}
		vn := views[ref.View]
		if vn == nil {
			names, ok := r.featureNames(ref.View)
			vn = &viewNames{names: names}
			if ok {
				vn.set = make(map[string]bool, len(names))
				for _, n := range names {
					vn.set[n] = true
				}
			}
			views[ref.View] = vn
		}
		names := vn.names
		if vn.set == nil {
			known := slices.Concat(slices.Collect(maps.Keys(r.views)), slices.Collect(maps.Keys(r.onDemandViews)))
			e.add(pos, "%s: unknown feature view %q in %q%s", ctx, ref.View, ref.String(), Nearest(ref.View, known))
			continue
		}
		for _, ent := range r.refEntities(ref.View) {
			if !entities[ent] {
				entities[ent] = true
				checkServiceKeys(e, ctx, keys, ent, ref, pos)
			}
		}
		var refs []FeatureRef
		if ref.Feature == "*" {
			for _, f := range names {
				refs = append(refs, FeatureRef{View: ref.View, Feature: f})
			}
		} else if !vn.set[ref.Feature] {
			e.add(pos, "%s: feature view %q has no feature %q%s", ctx, ref.View, ref.Feature, Nearest(ref.Feature, names))
			continue
		} else {
			refs = []FeatureRef{ref}
		}
		for _, x := range refs {
			if first, dup := seen[x]; dup {
				e.add(pos, "%s: feature %q listed twice (first at %s)", ctx, x.String(), first)
				continue
			}
			seen[x] = pos
			s.resolved = append(s.resolved, x)
		}
	}
}

// serviceKey is where a feature service first met a join key name.
type serviceKey struct {
	entity *Entity
	typ    KeyType
	ref    FeatureRef
	pos    Pos
}

// checkServiceKeys reports a join key of ent that another entity of the
// service also has, with another type. A lookup or export of a service gives
// each join key name one value, which every entity with a key of that name
// takes; with two types, no value fits both, and every request would fail.
// ent is checked at the first reference to it, ref at pos.
func checkServiceKeys(e *errs, ctx string, keys map[string]serviceKey, ent *Entity, ref FeatureRef, pos Pos) {
	for _, k := range ent.JoinKeys {
		if k.Name == "" || k.Type == "" || k.failed("name", "type") {
			continue
		}
		first, ok := keys[k.Name]
		switch {
		case !ok:
			keys[k.Name] = serviceKey{entity: ent, typ: k.Type, ref: ref, pos: pos}
		case first.entity != ent && first.typ != k.Type:
			e.add(pos, "%s: join key %q is %s in entity %q of %q but %s in entity %q of %q (at %s); lookups and exports take one value per join key name, so the types must match",
				ctx, k.Name, k.Type, ent.Name, ref.String(), first.typ, first.entity.Name, first.ref.String(), first.pos)
		}
	}
}

// refEntities returns the entities a lookup of the named view's features
// is keyed by: a feature view's entity, or those of an on-demand view's
// inputs, in the order of its variables.
func (r *Registry) refEntities(view string) []*Entity {
	if v := r.views[view]; v != nil {
		if ent := r.entities[v.Entity]; ent != nil {
			return []*Entity{ent}
		}
		return nil
	}
	var out []*Entity
	if v := r.onDemandViews[view]; v != nil {
		for _, x := range v.vars {
			if x.Input == nil {
				continue
			}
			if iv := r.views[x.Input.View]; iv != nil {
				if ent := r.entities[iv.Entity]; ent != nil && !slices.Contains(out, ent) {
					out = append(out, ent)
				}
			}
		}
	}
	return out
}

// unknownNameRE finds the name in the expression compiler's error for an
// unknown variable or function.
var unknownNameRE = regexp.MustCompile(`^unknown name ([A-Za-z_][A-Za-z0-9_]*)`)

// exprKeywords are words of the expr language that cannot name variables.
var exprKeywords = []string{"in", "not", "and", "or", "matches", "contains", "startsWith", "endsWith", "let", "nil", "true", "false", "if", "else"}

// checkVarName reports a variable name of an on-demand view that is not a
// name or is a word of the expression language.
func checkVarName(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if slices.Contains(exprKeywords, name) || slices.Contains(derive.Functions, name) {
		return fmt.Errorf("%q is a word of the expression language", name)
	}
	return nil
}

// onDemandTypes are the types of request fields and on-demand features.
var onDemandTypes = []ValueType{TypeString, TypeInt64, TypeDouble, TypeBool}

func (r *Registry) checkOnDemandView(e *errs, v *OnDemandFeatureView) {
	ctx := fmt.Sprintf("on-demand feature view %q", v.Name)
	if !v.failed("name") {
		if err := checkName(v.Name); err != nil {
			e.add(v.PosOf("name"), "%s: %v", ctx, err)
		}
		if fv := r.views[v.Name]; fv != nil {
			e.add(v.PosOf("name"), "%s: a feature view has the same name (at %s); references view:feature must name one", ctx, fv.PosOf("name"))
		}
	}
	v.vars = v.vars[:0]
	varsOK := !v.failed("inputs", "request_fields")
	if len(v.Inputs) == 0 && !v.failed("inputs") {
		e.add(v.PosOf("inputs"), "%s: inputs: at least one stored feature is needed (its view's entity is what the features are looked up by)", ctx)
		varsOK = false
	}
	for _, name := range slices.Sorted(maps.Keys(v.Inputs)) {
		ref := v.Inputs[name]
		pos := v.PosOf("inputs." + name)
		if err := checkVarName(name); err != nil {
			e.add(v.keyPosOf("inputs."+name), "%s: input %q: %v", ctx, name, err)
			varsOK = false
		}
		fv := r.views[ref.View]
		var f *Feature
		switch {
		case ref.View == "":
			varsOK = false // failed to decode; reported
			continue
		case fv == nil && r.onDemandViews[ref.View] != nil:
			e.add(pos, "%s: input %q: %q is an on-demand feature view; inputs are features of feature views", ctx, name, ref.View)
		case fv == nil:
			e.add(pos, "%s: input %q: unknown feature view %q%s", ctx, name, ref.View, Nearest(ref.View, slices.Collect(maps.Keys(r.views))))
		case ref.Feature == "*":
			e.add(pos, "%s: input %q: name one feature, not %q", ctx, name, ref.String())
		default:
			if f = fv.Feature(ref.Feature); f == nil {
				names := make([]string, len(fv.Features))
				for j, g := range fv.Features {
					names[j] = g.Name
				}
				e.add(pos, "%s: input %q: feature view %q has no feature %q%s", ctx, name, ref.View, ref.Feature, Nearest(ref.Feature, names))
			}
		}
		if f == nil || f.ValueType() == "" {
			varsOK = false
			continue
		}
		v.vars = append(v.vars, OnDemandVar{Name: name, Type: f.ValueType(), Input: &ref})
	}
	for _, name := range slices.Sorted(maps.Keys(v.RequestFields)) {
		typ := v.RequestFields[name]
		pos, keyPos := v.PosOf("request_fields."+name), v.keyPosOf("request_fields."+name)
		if err := checkVarName(name); err != nil {
			e.add(keyPos, "%s: request field %q: %v", ctx, name, err)
			varsOK = false
		}
		if _, dup := v.Inputs[name]; dup {
			e.add(keyPos, "%s: request field %q: an input has the same name", ctx, name)
			varsOK = false
		}
		if !slices.Contains(onDemandTypes, typ) {
			e.add(pos, "%s: request field %q: type %s: use string, int64, double or bool", ctx, name, typ)
			varsOK = false
			continue
		}
		v.vars = append(v.vars, OnDemandVar{Name: name, Type: typ})
	}
	if len(v.Features) == 0 && !v.failed("features") {
		e.add(v.PosOf("features"), "%s: no features", ctx)
	}
	vars := make([]derive.Var, len(v.vars))
	for i, x := range v.vars {
		vars[i] = derive.Var{Name: x.Name, Kind: x.Type.Kind()}
	}
	seen := map[string]Pos{}
	for _, f := range v.Features {
		fctx := fmt.Sprintf("%s: feature %q", ctx, f.Name)
		if f.Name != "" && !f.failed("name") {
			if err := checkName(f.Name); err != nil {
				e.add(f.PosOf("name"), "%s: %v", fctx, err)
			}
			if first, dup := seen[f.Name]; dup {
				e.add(f.PosOf("name"), "%s: feature %q defined twice (first at %s)", ctx, f.Name, first)
			}
			seen[f.Name] = f.PosOf("name")
		}
		if f.failed("type", "expression") || f.Type == "" {
			continue
		}
		if !slices.Contains(onDemandTypes, f.Type) {
			e.add(f.PosOf("type"), "%s: type %s: use string, int64, double or bool", fctx, f.Type)
			continue
		}
		if !varsOK {
			continue // the variables are reported; the expression would fail for them
		}
		x, err := derive.Compile(f.Expression, vars, f.Type.Kind())
		if err != nil {
			hint := ""
			if m := unknownNameRE.FindStringSubmatch(err.Error()); m != nil && derive.IsWithheld(m[1]) {
				hint = fmt.Sprintf(" (%s is not among the functions expressions may call: the same inputs must always give the same value)", m[1])
			} else if m != nil {
				names := slices.Clone(derive.Functions)
				for _, x := range v.vars {
					names = append(names, x.Name)
				}
				hint = Nearest(m[1], names)
			}
			e.add(f.PosOf("expression"), "%s: expression: %v%s", fctx, err, hint)
			continue
		}
		f.expr = x
	}
}
