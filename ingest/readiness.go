package ingest

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Readiness tells whether the ingest service does its work: a registry
// version is running, none of its selected sources was skipped (one that
// cannot be ingested, see RunService), each source it ingests is in its
// consumer group (entered a generation, with or without partitions, and has
// not failed to join one since), and no partition it was assigned is stalled until an
// operator acts (a recreated topic) or has failed to resume or to apply its
// batch for failingUnready or longer. RunService keeps it up to date when
// ServiceConfig names it; a readiness probe reads it. The zero value is not
// ready.
type Readiness struct {
	mu      sync.Mutex
	running bool // the sources of a version are starting or running
	started bool // and all of them were started (see started)
	version int64
	runs    int                 // counts start calls
	inGroup map[string]bool     // per source started
	missing map[string][]string // per source: the topics it waits for
	skipped map[string]string   // per source not ingested: why
	// parts holds the assigned partitions that are stalled or whose batch
	// failed since the last one applied; healthy ones are deleted.
	parts map[partitionKey]*partitionProblem
	// failingAfter, if not 0, replaces failingUnready (tests).
	failingAfter time.Duration
}

// failingUnready is how long a partition's batch may keep failing (each
// attempt retried with backoff, from the start of the first failed one)
// before the service is not ready: an outage of seconds, or a single
// failure, does not make a probe flap; Redis refusing writes for good
// (full, a hash that does not decode, the dead-letter topic refusing
// letters) does not go unnoticed. It is as long as one attempt may take
// (GroupConfig.ShutdownTimeout's default).
const failingUnready = 30 * time.Second

type partitionKey struct {
	source    string
	partition int
}

// partitionProblem is what readiness knows of a partition that is not
// healthy.
type partitionProblem struct {
	topic   string
	stalled string    // why it is stalled; empty if it is not
	doing   string    // what the failed attempts do: "resuming the partition", "applying a batch"
	since   time.Time // when the first failed attempt in a row began
	fails   int       // failed attempts since the last one that succeeded
	err     string    // of the last failed attempt
}

// start records that the sources of a registry version start.
func (r *Readiness) start(version int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running, r.started, r.version, r.inGroup, r.missing = true, false, version, map[string]bool{}, map[string][]string{}
	r.skipped = map[string]string{}
	r.parts = map[partitionKey]*partitionProblem{}
	r.runs++
}

// allStarted records that every source of the version was started: until
// then, a version whose first sources are in their groups is not ready.
func (r *Readiness) allStarted() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started = r.running
}

// stop records that the running version's sources stopped.
func (r *Readiness) stop() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running, r.started, r.inGroup, r.missing, r.parts, r.skipped = false, false, nil, nil, nil, nil
}

// skip records that a source of the version starting is not ingested, and
// why (no brokers for its Kafka connection): the service is not ready
// until a version without it, or a process given its brokers, runs.
func (r *Readiness) skip(name string, err error) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		r.skipped[name] = err.Error()
	}
}

// source records a source started, not yet in its group, and returns the
// function that records whether it is (GroupConfig.OnGroup).
func (r *Readiness) source(name string) func(in bool) {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inGroup[name] = false
	run := r.runs
	return func(in bool) {
		r.mu.Lock()
		defer r.mu.Unlock()
		// A group of a version that stopped changes nothing.
		if r.running && r.runs == run {
			r.inGroup[name] = in
		}
	}
}

// topics returns the function that records which topics a started source
// waits for (GroupConfig.OnMissingTopics).
func (r *Readiness) topics(name string) func(missing []string) {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	run := r.runs
	return func(missing []string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.running && r.runs == run {
			r.missing[name] = slices.Clone(missing)
		}
	}
}

// track makes a started source's group record what readiness needs: whether
// it is in its group, the topics it waits for, and the state of its
// partitions.
func (r *Readiness) track(source, topic string, gc *GroupConfig) {
	gc.OnGroup = r.source(source)
	gc.OnMissingTopics = r.topics(source)
	gc.health = r.partitions(source, topic)
}

// partitions returns what records the state of the partitions of a
// started source's group (GroupConfig.health).
func (r *Readiness) partitions(source, topic string) *partitionHealth {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return &partitionHealth{r: r, run: r.runs, source: source, topic: topic}
}

// partitionHealth records in a Readiness the state of the partitions of one
// source's group, as its partition workers tell it. A nil one records
// nothing.
type partitionHealth struct {
	r             *Readiness
	run           int
	source, topic string
}

// update applies f to the partition's state, unless the group is of a
// version that stopped; a state left healthy is deleted.
func (h *partitionHealth) update(p int, f func(s *partitionProblem)) {
	if h == nil {
		return
	}
	r := h.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.running || r.runs != h.run {
		return
	}
	k := partitionKey{h.source, p}
	s := r.parts[k]
	if s == nil {
		s = &partitionProblem{topic: h.topic}
	}
	if f(s); s.stalled == "" && s.fails == 0 {
		delete(r.parts, k)
	} else {
		r.parts[k] = s
	}
}

// stalled records that partition p is stalled until an operator acts, and
// why; or, with why empty, that it reads again.
func (h *partitionHealth) stalled(p int, why string) {
	h.update(p, func(s *partitionProblem) { s.stalled = why })
}

// What a partition's failed attempts were doing (partitionProblem.doing).
const (
	doingResume = "resuming the partition"
	doingApply  = "applying a batch"
)

// failed records a failed attempt of partition p (doing says at what); since
// is when the first of the attempts that failed in a row began.
func (h *partitionHealth) failed(p int, doing string, since time.Time, err error) {
	h.update(p, func(s *partitionProblem) { s.doing, s.since, s.err = doing, since, err.Error(); s.fails++ })
}

// succeeded records that partition p resumed or applied a batch after
// failed attempts.
func (h *partitionHealth) succeeded(p int) {
	h.update(p, func(s *partitionProblem) { s.doing, s.since, s.fails, s.err = "", time.Time{}, 0, "" })
}

// released records that the process let go of partition p (a rebalance,
// or its group stops): its state goes with it.
func (h *partitionHealth) released(p int) {
	h.update(p, func(s *partitionProblem) { *s = partitionProblem{} })
}

// Ready reports whether the service is ready, and says why or why not.
func (r *Readiness) Ready() (bool, string) {
	if r == nil {
		return false, "ingest has not started"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.running {
		return false, "no registry version running yet"
	}
	if !r.started {
		return false, fmt.Sprintf("registry version %d: starting its sources", r.version)
	}
	if len(r.skipped) > 0 {
		var skipped []string
		for _, name := range slices.Sorted(maps.Keys(r.skipped)) {
			skipped = append(skipped, fmt.Sprintf("%s (%s)", name, r.skipped[name]))
		}
		return false, fmt.Sprintf("registry version %d: sources not ingested: %s", r.version, strings.Join(skipped, "; "))
	}
	var out, topics []string
	for name, in := range r.inGroup {
		if !in {
			out = append(out, name)
		}
		for _, t := range r.missing[name] {
			topics = append(topics, fmt.Sprintf("%s (source %s)", t, name))
		}
	}
	if len(topics) > 0 {
		slices.Sort(topics)
		return false, fmt.Sprintf("registry version %d: waiting for topics that do not exist: %s", r.version, strings.Join(topics, ", "))
	}
	if len(out) > 0 {
		slices.Sort(out)
		return false, fmt.Sprintf("registry version %d: not in their consumer group yet: %s", r.version, strings.Join(out, ", "))
	}
	if bad := r.unhealthy(); len(bad) > 0 {
		return false, fmt.Sprintf("registry version %d: %s", r.version, strings.Join(bad, "; "))
	}
	return true, fmt.Sprintf("registry version %d: every source in its consumer group (%d)", r.version, len(r.inGroup))
}

// unhealthy says what is wrong with each partition that is stalled or has
// failed to resume or to apply its batch for failingUnready or longer, in the order of
// sources and partitions. r.mu is held.
func (r *Readiness) unhealthy() []string {
	keys := slices.SortedFunc(maps.Keys(r.parts), func(a, b partitionKey) int {
		return cmp.Or(strings.Compare(a.source, b.source), cmp.Compare(a.partition, b.partition))
	})
	var out []string
	now := time.Now()
	for _, k := range keys {
		s := r.parts[k]
		switch {
		case s.stalled != "":
			out = append(out, fmt.Sprintf("topic %s partition %d (source %s) stalled: %s", s.topic, k.partition, k.source, s.stalled))
		case s.fails > 0 && now.Sub(s.since) >= cmp.Or(r.failingAfter, failingUnready):
			times := "once"
			if s.fails > 1 {
				times = fmt.Sprintf("%d times", s.fails)
			}
			out = append(out, fmt.Sprintf("topic %s partition %d (source %s): %s has failed %s since %s: %s",
				s.topic, k.partition, k.source, s.doing, times, s.since.UTC().Format(time.RFC3339), s.err))
		}
	}
	return out
}
