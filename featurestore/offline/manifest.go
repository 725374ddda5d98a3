package offline

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FileInfo describes a committed file of a view's log, as its manifest
// entry records it.
type FileInfo struct {
	// Path is the file's path relative to its view's directory:
	// date=YYYY-MM-DD/<topic>-<partition>-<first>-<last>.arrow.
	Path      string `json:"path"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	First     int64  `json:"first_offset"` // the smallest offset of a row
	Last      int64  `json:"last_offset"`  // the largest offset of a row
	Rows      int64  `json:"rows"`
	Bytes     int64  `json:"bytes"`
	MinTime   int64  `json:"min_event_time"` // Unix ms
	MaxTime   int64  `json:"max_event_time"` // Unix ms
	Schema    string `json:"schema"`         // Schema.Fingerprint of the file
}

// Day returns the UTC day number (days since the Unix epoch) the file's
// events fall on.
func (f *FileInfo) Day() int64 { return dayOf(f.MinTime) }

func (f *FileInfo) check() error {
	day, topic, p, first, last, ok := parseFilePath(f.Path)
	switch {
	case !ok:
		return fmt.Errorf("file %q: not a log file path", f.Path)
	case topic != f.Topic || p != f.Partition || first != f.First || last != f.Last:
		return fmt.Errorf("file %q: name does not match topic %q, partition %d, offsets %d..%d", f.Path, f.Topic, f.Partition, f.First, f.Last)
	case f.First > f.Last:
		return fmt.Errorf("file %q: first offset after last", f.Path)
	case f.Rows < 1 || uint64(f.Rows-1) > uint64(f.Last-f.First):
		return fmt.Errorf("file %q: %d rows do not fit offsets %d..%d", f.Path, f.Rows, f.First, f.Last)
	case f.Bytes < 1:
		return fmt.Errorf("file %q: size %d", f.Path, f.Bytes)
	case f.MinTime > f.MaxTime || dayOf(f.MinTime) != day || dayOf(f.MaxTime) != day:
		return fmt.Errorf("file %q: event times %d..%d are not all on its date", f.Path, f.MinTime, f.MaxTime)
	case f.Schema == "" || len(f.Schema) > 64:
		return fmt.Errorf("file %q: bad schema fingerprint %q", f.Path, f.Schema)
	}
	return nil
}

// Position is where one partition of a source stands in a view's log: every
// accepted event of the view at or below Offset is committed, and HW is the
// partition's high-water event time after Offset, so that ingest resuming
// at Offset+1 rejects exactly the late events it rejected before.
type Position struct {
	Offset int64
	HW     int64 // Unix ms
	HasHW  bool
	// DedupFrom is ingest's offset to rebuild its dedup by event id from,
	// kept for it (ingest.Position.DedupFrom); HasDedup says it is set.
	DedupFrom int64
	HasDedup  bool
}

type streamKey struct {
	topic     string
	partition int32
}

type positionJSON struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	HW        *int64 `json:"hw,omitempty"`
	DedupFrom *int64 `json:"dedup_from,omitempty"`
}

// entry is one manifest entry: a commit that adds and removes files and
// moves positions, or a checkpoint that holds the whole state.
type entry struct {
	Version    int            `json:"version"`
	Seq        int64          `json:"seq"`
	Checkpoint bool           `json:"checkpoint,omitempty"`
	Project    string         `json:"project"`
	View       string         `json:"view"`
	Add        []FileInfo     `json:"add,omitempty"`
	Remove     []string       `json:"remove,omitempty"`
	Positions  []positionJSON `json:"positions,omitempty"`
}

// manifestVersion is the entry format this package writes and reads.
const manifestVersion = 1

func encodeEntry(e *entry) []byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic("offline: encode manifest entry: " + err.Error()) // plain data
	}
	return append(b, '\n')
}

// decodeEntry parses and checks a manifest entry.
func decodeEntry(b []byte) (*entry, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var e entry
	if err := d.Decode(&e); err != nil {
		return nil, fmt.Errorf("decode manifest entry: %w", err)
	}
	if d.More() {
		return nil, errors.New("decode manifest entry: data after the entry")
	}
	if err := e.check(); err != nil {
		return nil, fmt.Errorf("decode manifest entry %d: %w", e.Seq, err)
	}
	// One form in memory for "[]" and an absent list.
	if len(e.Add) == 0 {
		e.Add = nil
	}
	if len(e.Remove) == 0 {
		e.Remove = nil
	}
	if len(e.Positions) == 0 {
		e.Positions = nil
	}
	return &e, nil
}

func (e *entry) check() error {
	if e.Version != manifestVersion {
		return fmt.Errorf("version %d, want %d", e.Version, manifestVersion)
	}
	if e.Seq < 1 {
		return fmt.Errorf("sequence number %d", e.Seq)
	}
	if err := checkSegment("project", e.Project); err != nil {
		return err
	}
	if err := checkSegment("feature view", e.View); err != nil {
		return err
	}
	if e.Checkpoint && len(e.Remove) > 0 {
		return errors.New("checkpoint removes files")
	}
	added := make(map[string]bool, len(e.Add))
	for i := range e.Add {
		f := &e.Add[i]
		if err := f.check(); err != nil {
			return err
		}
		if added[f.Path] {
			return fmt.Errorf("file %q added twice", f.Path)
		}
		added[f.Path] = true
	}
	removed := make(map[string]bool, len(e.Remove))
	for _, p := range e.Remove {
		if _, _, _, _, _, ok := parseFilePath(p); !ok {
			return fmt.Errorf("removed file %q: not a log file path", p)
		}
		if added[p] || removed[p] {
			return fmt.Errorf("file %q removed twice or added and removed", p)
		}
		removed[p] = true
	}
	seen := make(map[streamKey]bool, len(e.Positions))
	for _, p := range e.Positions {
		if err := checkTopic(p.Topic); err != nil {
			return fmt.Errorf("position: %w", err)
		}
		if p.Partition < 0 || p.Offset < 0 {
			return fmt.Errorf("position of %s/%d: offset %d", p.Topic, p.Partition, p.Offset)
		}
		k := streamKey{p.Topic, p.Partition}
		if seen[k] {
			return fmt.Errorf("position of %s/%d recorded twice", p.Topic, p.Partition)
		}
		seen[k] = true
	}
	return nil
}

// manifest is the committed state of one view's log. It is the only source
// of truth for what files exist: readers never list data directories.
//
// Entries are numbered from 1 and created with Storage.Create, which fails
// when the number is taken, so concurrent writers (ingest processes, a
// compaction) serialize their commits without a lock: the loser reads the
// winner's entry and tries again with the next number. Every
// checkpointEvery entries the commit is a checkpoint holding the whole
// state, and the object CHECKPOINT is then set to its number: a hint from
// which loading reads forward, entry by entry, until one is missing. The
// hint only ever names an existing checkpoint, so a stale hint costs reads,
// never correctness.
//
// Commits never delete entries: a number once used stays taken, so a
// writer with a stale state can never create an entry that loading skips.
// RemoveOrphans deletes the entries before the hinted checkpoint once they
// are older than manifestRetention, long after any writer could still read
// them.
type manifest struct {
	st            Storage
	project, view string

	mu    sync.Mutex
	seq   int64 // of the last entry applied; -1 when not loaded
	base  int64 // of the checkpoint the state was loaded from
	files map[string]FileInfo
	pos   map[streamKey]Position
	stale bool // a commit failed in a way that may have committed it

	conflicts int // commits lost to another writer, for metrics
}

// checkpointEvery is how many entries follow a checkpoint before the next.
var checkpointEvery int64 = 64

// manifestRetention is how long entries superseded by a checkpoint are kept.
const manifestRetention = 24 * time.Hour

// checkpointHint is the name of the hint object in the manifest directory.
const checkpointHint = "CHECKPOINT"

func newManifest(st Storage, project, view string) *manifest {
	return &manifest{st: st, project: project, view: view, files: map[string]FileInfo{}, pos: map[streamKey]Position{}}
}

func (m *manifest) dir() string { return viewDir(m.project, m.view) + "/" + manifestDirName }

// readEntry reads and checks entry seq.
func (m *manifest) readEntry(ctx context.Context, seq int64) (*entry, error) {
	name := manifestEntryName(m.project, m.view, seq)
	b, err := readAll(ctx, m.st, name)
	if err != nil {
		return nil, err
	}
	e, err := decodeEntry(b)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", name, err)
	}
	if e.Seq != seq || e.Project != m.project || e.View != m.view {
		return nil, fmt.Errorf("manifest %s: holds entry %d of %s/%s", name, e.Seq, e.Project, e.View)
	}
	return e, nil
}

// readHint returns the number of a recent checkpoint, 0 when there is none.
func (m *manifest) readHint(ctx context.Context) (int64, error) {
	b, err := readAll(ctx, m.st, m.dir()+"/"+checkpointHint)
	if errors.Is(err, ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	seq, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || seq < 1 {
		return 0, fmt.Errorf("manifest %s/%s: bad checkpoint hint %q", m.dir(), checkpointHint, b)
	}
	return seq, nil
}

// load reads the state from the hinted checkpoint (or entry 1) and the
// entries after it.
func (m *manifest) load(ctx context.Context) error {
	hint, err := m.readHint(ctx)
	if err != nil {
		return err
	}
	m.seq, m.base = 0, 0
	clear(m.files)
	clear(m.pos)
	if hint > 0 {
		e, err := m.readEntry(ctx, hint)
		if errors.Is(err, ErrNotExist) {
			// A hint set back by a slow writer, to a checkpoint since
			// removed: look for the newest checkpoint instead.
			e, err = m.newestCheckpoint(ctx)
		}
		if err != nil {
			return fmt.Errorf("manifest of %s/%s: hinted checkpoint: %w", m.project, m.view, err)
		}
		hint = e.Seq
		if !e.Checkpoint {
			return fmt.Errorf("manifest of %s/%s: hinted entry %d is not a checkpoint", m.project, m.view, hint)
		}
		if err := m.apply(e); err != nil {
			return err
		}
		m.base = hint
	}
	return m.readForward(ctx)
}

// newestCheckpoint finds the newest checkpoint entry by listing.
func (m *manifest) newestCheckpoint(ctx context.Context) (*entry, error) {
	objs, err := m.st.List(ctx, m.dir())
	if err != nil {
		return nil, err
	}
	var seqs []int64
	for _, o := range objs {
		if s, ok := parseManifestEntry(path.Base(o.Name)); ok && !o.Temp && path.Dir(o.Name) == m.dir() {
			seqs = append(seqs, s)
		}
	}
	slices.Sort(seqs)
	for i := len(seqs) - 1; i >= 0; i-- {
		e, err := m.readEntry(ctx, seqs[i])
		if err != nil {
			return nil, err
		}
		if e.Checkpoint {
			return e, nil
		}
	}
	return nil, fmt.Errorf("no checkpoint entry: %w", ErrNotExist)
}

// readForward applies the entries after the state's, up to the first
// missing number.
func (m *manifest) readForward(ctx context.Context) error {
	for {
		e, err := m.readEntry(ctx, m.seq+1)
		if errors.Is(err, ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := m.apply(e); err != nil {
			return err
		}
	}
}

// refresh applies the entries committed since the state was read.
func (m *manifest) refresh(ctx context.Context) error {
	hint, err := m.readHint(ctx)
	if err != nil {
		return err
	}
	if hint > m.seq {
		return m.load(ctx)
	}
	return m.readForward(ctx)
}

// checkDelta reports whether delta e applies to the state.
func (m *manifest) checkDelta(e *entry) error {
	for _, p := range e.Remove {
		if _, ok := m.files[p]; !ok {
			return fmt.Errorf("manifest of %s/%s: entry %d removes %s, which is not committed", m.project, m.view, e.Seq, p)
		}
	}
	for i := range e.Add {
		if _, ok := m.files[e.Add[i].Path]; ok {
			return fmt.Errorf("manifest of %s/%s: entry %d adds %s, which is already committed", m.project, m.view, e.Seq, e.Add[i].Path)
		}
	}
	return nil
}

func (m *manifest) apply(e *entry) error {
	if e.Checkpoint {
		clear(m.files)
		clear(m.pos)
	} else if err := m.checkDelta(e); err != nil {
		return err
	}
	for _, p := range e.Remove {
		delete(m.files, p)
	}
	for _, f := range e.Add {
		m.files[f.Path] = f
	}
	for _, p := range e.Positions {
		m.pos[streamKey{p.Topic, p.Partition}] = p.position()
	}
	m.seq = e.Seq
	return nil
}

// checkpoint returns the entry holding the state after delta e.
func (m *manifest) checkpoint(e *entry) *entry {
	files := maps.Clone(m.files)
	pos := maps.Clone(m.pos)
	for _, p := range e.Remove {
		delete(files, p)
	}
	for _, f := range e.Add {
		files[f.Path] = f
	}
	for _, p := range e.Positions {
		pos[streamKey{p.Topic, p.Partition}] = p.position()
	}
	c := &entry{Version: manifestVersion, Seq: e.Seq, Checkpoint: true, Project: m.project, View: m.view}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		c.Add = append(c.Add, files[p])
	}
	keys := slices.SortedFunc(maps.Keys(pos), func(a, b streamKey) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	for _, k := range keys {
		c.Positions = append(c.Positions, positionEntry(k, pos[k]))
	}
	return c
}

func positionEntry(k streamKey, p Position) positionJSON {
	pj := positionJSON{Topic: k.topic, Partition: k.partition, Offset: p.Offset}
	if p.HasHW {
		hw := p.HW
		pj.HW = &hw
	}
	if p.HasDedup {
		d := p.DedupFrom
		pj.DedupFrom = &d
	}
	return pj
}

// position is the Position an entry records.
func (p positionJSON) position() Position {
	pos := Position{Offset: p.Offset}
	if p.HW != nil {
		pos.HW, pos.HasHW = *p.HW, true
	}
	if p.DedupFrom != nil {
		pos.DedupFrom, pos.HasDedup = *p.DedupFrom, true
	}
	return pos
}

// errNothingToCommit is what a prepare function returns when, given the
// state, there is nothing left to commit.
var errNothingToCommit = errors.New("nothing to commit")

// maxCommitAttempts bounds the retries of a commit that keeps losing to
// other writers.
const maxCommitAttempts = 100

// commit appends the delta that prepare builds from the current state. On
// losing the race for the next number it reads the winner's entries and
// calls prepare again, so prepare must decide from the state alone (and
// may return errNothingToCommit). m.mu must be held.
func (m *manifest) commit(ctx context.Context, prepare func() (*entry, error)) (*entry, error) {
	if m.stale {
		if err := m.refresh(ctx); err != nil {
			return nil, err
		}
		m.stale = false
	}
	for range maxCommitAttempts {
		e, err := prepare()
		if err != nil {
			return nil, err
		}
		e.Version, e.Project, e.View, e.Seq = manifestVersion, m.project, m.view, m.seq+1
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("manifest of %s/%s: %w", m.project, m.view, err)
		}
		if err := m.checkDelta(e); err != nil {
			return nil, err
		}
		out := e
		if e.Seq-m.base >= checkpointEvery {
			out = m.checkpoint(e)
		}
		name, data := manifestEntryName(m.project, m.view, out.Seq), encodeEntry(out)
		err = m.st.Create(ctx, name, data)
		if err != nil && m.landed(ctx, name, data) {
			// The create landed though it reported an error: its reply was
			// lost, or the storage client retried it after it landed and the
			// retry found the object (ErrExist). The entry is this commit.
			err = nil
		}
		if errors.Is(err, ErrExist) {
			m.conflicts++
			if err := m.refresh(ctx); err != nil {
				m.stale = true
				return nil, err
			}
			continue
		}
		if err != nil {
			m.stale = true // it may have been written all the same
			return nil, err
		}
		failpoint("manifest:committed")
		if err := m.apply(out); err != nil {
			m.stale = true
			return nil, err
		}
		if out.Checkpoint && out.Seq > 1 {
			m.base = out.Seq
			// Best effort: a hint left behind only makes loading read more.
			_ = m.st.Put(ctx, m.dir()+"/"+checkpointHint, func(w io.Writer) error {
				_, err := io.WriteString(w, strconv.FormatInt(out.Seq, 10)+"\n")
				return err
			})
		}
		return e, nil
	}
	return nil, fmt.Errorf("manifest of %s/%s: gave up after %d conflicting commits", m.project, m.view, maxCommitAttempts)
}

// landed reports whether the object name holds exactly data: a create
// that reported an error went through all the same. An entry of the same
// bytes written by another writer commits the same files and positions.
func (m *manifest) landed(ctx context.Context, name string, data []byte) bool {
	got, err := readAll(ctx, m.st, name)
	return err == nil && bytes.Equal(got, data)
}

// position returns the committed position of a partition.
func (m *manifest) position(topic string, partition int32) (Position, bool) {
	p, ok := m.pos[streamKey{topic, partition}]
	return p, ok
}

// sortedFiles returns the committed files ordered by date, topic, partition
// and first offset.
func (m *manifest) sortedFiles() []FileInfo {
	out := slices.Collect(maps.Values(m.files))
	slices.SortFunc(out, compareFiles)
	return out
}

func compareFiles(a, b FileInfo) int {
	return cmp.Or(cmp.Compare(a.Day(), b.Day()), cmp.Compare(a.Topic, b.Topic),
		cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.First, b.First))
}
