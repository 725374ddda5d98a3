package ingest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Readiness tells whether the ingest service does its work: a registry
// version is running, and each source it ingests is in its consumer group
// (entered a generation, with or without partitions, and has not failed to
// join one since). RunService keeps it up to date when ServiceConfig
// names it; a readiness probe reads it. The zero value is not ready.
type Readiness struct {
	mu      sync.Mutex
	running bool // the sources of a version are starting or running
	started bool // and all of them were started (see started)
	version int64
	runs    int                 // counts start calls
	inGroup map[string]bool     // per source started
	missing map[string][]string // per source: the topics it waits for
}

// start records that the sources of a registry version start.
func (r *Readiness) start(version int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running, r.started, r.version, r.inGroup, r.missing = true, false, version, map[string]bool{}, map[string][]string{}
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
	r.running, r.started, r.inGroup, r.missing = false, false, nil, nil
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
	return true, fmt.Sprintf("registry version %d: every source in its consumer group (%d)", r.version, len(r.inGroup))
}
