package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/featurestore/featurestore/featurestore"
	"github.com/featurestore/featurestore/featurestore/export"
	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/window"
	"github.com/featurestore/featurestore/registry"
)

// This file loads table files of historical events into the online store
// and the offline log: featurestore backfill.
//
// # Positions and effectively-once
//
// Each file is one partition (0) of a pseudo-topic of its own,
// "backfill.<first 32 hex digits of the SHA-256 of its bytes>", and a row's
// offset is its index among the file's data rows (row 1 is offset 0). The
// online writes carry these positions, so the per-hash fences skip rows
// applied before; the offline log keeps a committed position per
// (view, pseudo-topic, partition) and drops rows at or below it. A run that
// is interrupted at any point and run again therefore counts every row
// once; a run over a file loaded before is a no-op. A run resumes reading
// at the smallest committed offline position of the source's offline views
// (the online store is always at least as far, since each chunk is applied
// online before it is appended offline), or at the first row.
//
// Limits: the identity of a file is its content. A changed file (a row
// corrected or appended) is a new pseudo-topic, and its rows are counted
// again beside those of the old one; load corrections as a new file of only
// the new rows. Every hash a file touches keeps one fence field for the
// file's pseudo-topic for as long as the hash lives.

// BackfillConfig configures Backfill.
type BackfillConfig struct {
	Project  string
	Registry *registry.Registry
	Source   *registry.Source
	// Store is the online store; it may be nil when the source has no
	// online view.
	Store *online.Store
	// Offline is the offline log; nil writes none.
	Offline *offline.Writer
	// Format of the files, or export.FormatAuto to tell by extension.
	Format export.Format
	// ChunkRows is how many rows are applied at once. Default 16,384.
	ChunkRows int
	// DeadLetters receives every rejected row, or use of a row by a view;
	// nil counts them only.
	DeadLetters func(BackfillLetter) error
	// SyncDeadLetters, when not nil, makes the letters handed to DeadLetters
	// so far durable. It is called before the offline log may commit the
	// rows they were rejected from: a run resumed after a crash does not
	// read those rows again, so their letters would be lost.
	SyncDeadLetters func() error
	// Progress is called after each record batch of a file, and once at
	// its end with Final set.
	Progress func(BackfillProgress)
	// Now is the clock that decides which events are too old to be read
	// online; time.Now when nil.
	Now    func() time.Time
	Logger *slog.Logger
}

// BackfillLetter is a rejected row of a file (or message of a replay), or
// its use by one view.
type BackfillLetter struct {
	File string `json:"file"`          // for a replay, kafka:<topic>/<partition>
	Row  int64  `json:"row,omitempty"` // 1 is the first data row; 0 in a replay
	// Offset is the row's offset in the file's pseudo-topic (Row - 1), or
	// the message's offset in a replay.
	Offset int64  `json:"offset"`
	Reason Reason `json:"reason"`
	View   string `json:"view,omitempty"` // empty when the whole row was rejected
	Detail string `json:"detail"`
}

// BackfillProgress says how far the backfill of a file is.
type BackfillProgress struct {
	File        string
	Done, Total int64 // rows; Total is 0 when not known
	Elapsed     time.Duration
	Final       bool
}

// BackfillResult is what the backfill of one file did.
type BackfillResult struct {
	File  string
	Topic string // the file's pseudo-topic
	// Rows counts the rows read; Skipped those before the resume position,
	// committed by an earlier run and not read again.
	Rows, Skipped int64
	// Rejected counts the rows rejected as a whole, by reason.
	Rejected map[Reason]int64
	// DuplicateIDs counts the rows dropped as copies, by event id and
	// time, of one of the source's dedup_max_ids rows with an id before
	// them in the file (sources with event_id_field).
	DuplicateIDs int64
	// MissingKey counts uses of a row by a view that lacks a join key.
	MissingKey int64
	// Applied, Duplicates and Expired count uses of a row by an online
	// view: written, skipped as applied before, and not written because
	// no online read can reach them any more.
	Applied, Duplicates, Expired int64
	// Logged counts uses of a row by an offline view handed to the log
	// (which drops those it committed before).
	Logged int64
}

// backfillView is an offline view, compiled for routing rows by entity.
type backfillView struct {
	schema *offline.Schema
	keyIdx []int
	online bool
}

// Backfill loads files into the online views and the offline log of
// cfg.Source, in order, and returns what it did per file. A file with a
// missing column or a column of a type that cannot hold its declared kind
// fails before any of its rows is loaded.
func Backfill(ctx context.Context, cfg BackfillConfig, files []string) ([]BackfillResult, error) {
	if cfg.ChunkRows <= 0 {
		cfg.ChunkRows = 16 << 10
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a, err := NewApplier(cfg.Project, cfg.Registry, cfg.Source, cfg.Store, nil, nil, cfg.Logger)
	if err != nil {
		return nil, err
	}
	if len(a.views) > 0 && cfg.Store == nil {
		return nil, fmt.Errorf("backfill of source %q: it has online views and no online store was given", cfg.Source.Name)
	}
	var views []backfillView
	if cfg.Offline != nil {
		for _, v := range cfg.Registry.ViewsOfSource(cfg.Source.Name) {
			if !v.IsOffline() {
				continue
			}
			s, err := offline.NewSchema(cfg.Project, cfg.Registry, v.Name)
			if err != nil {
				return nil, err
			}
			bv := backfillView{schema: s, online: v.IsOnline()}
			for _, k := range cfg.Registry.Entity(v.Entity).JoinKeys {
				i := a.layout.KeyIndex(k.Name)
				if i < 0 {
					return nil, fmt.Errorf("feature view %q: source %q has no key %q", v.Name, cfg.Source.Name, k.Name)
				}
				bv.keyIdx = append(bv.keyIdx, i)
			}
			views = append(views, bv)
		}
	}
	bf := a.NewBackfiller(cfg.Now)
	var out []BackfillResult
	for _, f := range files {
		res, err := backfillFile(ctx, &cfg, a, bf, views, f)
		out = append(out, res)
		if err != nil {
			return out, err
		}
		cfg.Logger.Info("backfilled file", "file", f, "topic", res.Topic, "rows", res.Rows, "skipped", res.Skipped,
			"applied", res.Applied, "duplicates", res.Duplicates, "expired", res.Expired, "logged", res.Logged,
			"rejected", res.Rejected, "missing_key", res.MissingKey, "duplicate_ids", res.DuplicateIDs)
	}
	return out, nil
}

func (cfg *BackfillConfig) syncDeadLetters() error {
	if cfg.SyncDeadLetters == nil {
		return nil
	}
	if err := cfg.SyncDeadLetters(); err != nil {
		return fmt.Errorf("dead letters: %w", err)
	}
	return nil
}

// BackfillTopic returns the pseudo-topic of a file: its rows' positions.
func BackfillTopic(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return "backfill." + hex.EncodeToString(h.Sum(nil)[:16]), nil
}

func backfillFile(ctx context.Context, cfg *BackfillConfig, a *Applier, bf *Backfiller, views []backfillView, path string) (BackfillResult, error) {
	start := time.Now()
	res := BackfillResult{File: path, Rejected: map[Reason]int64{}}
	topic, err := BackfillTopic(path)
	if err != nil {
		return res, err
	}
	res.Topic = topic
	// CSV columns of declared paths are read as text and parsed row by
	// row, so that a bad value rejects its row, not the file.
	text := map[string]arrow.DataType{cfg.Source.Timestamp.Field: arrow.BinaryTypes.String}
	for _, k := range a.layout.Keys {
		text[k.Path] = arrow.BinaryTypes.String
	}
	for _, f := range a.layout.Fields {
		text[f.Path] = arrow.BinaryTypes.String
	}
	if id := cfg.Source.EventIDField; id != "" {
		text[id] = arrow.BinaryTypes.String
	}
	tf, err := export.OpenTableFile(path, cfg.Format, text, nil)
	if err != nil {
		return res, err
	}
	dec, err := newTableDecoder(path, tf.Schema(), cfg.Source, a.layout)
	if err != nil {
		return res, err
	}

	// Resume after what every offline view committed.
	// Resume after what every offline view committed; a view without a
	// position (or no offline view) means from the first row.
	from, all := int64(-1), len(views) > 0
	for _, v := range views {
		pos, ok, err := cfg.Offline.Resume(ctx, v.schema, topic, 0)
		if err != nil {
			return res, fmt.Errorf("%s: offline log of %s: %w", path, v.schema.View, err)
		}
		all = all && ok
		if ok && (from < 0 || pos.Offset+1 < from) {
			from = pos.Offset + 1
		}
	}
	if !all || from < 0 {
		from = 0
	}

	// An event further ahead of the clock than the source allows is
	// rejected, as ingest rejects one ahead of its Kafka timestamp: a row
	// from a wrong clock would otherwise be served before its time, and
	// differ from every export before it.
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	clock := now().UnixMilli()
	// Dedup by event id, as ingest's (dedup.go) but without a lateness:
	// a row with the id and time of one of the source's dedup_max_ids
	// rows with an id before it in the file is dropped. A resume rebuilds
	// them from the rows it skips (with this run's clock for the future
	// check: a row rejected as future by an earlier run's clock and not by
	// this one's is remembered here, not there).
	var ids *dedupSet
	if a.dedup {
		ids = &dedupSet{}
		ids.reset(a.src.MaxDedupIDs())
	}
	remember := func(ev *Event, off int64) (dup bool) {
		if ids == nil || !ev.HasID {
			return false
		}
		k := dedupKey{ev.ID, ev.Time}
		dup = ids.has(k)
		ids.add(k, off)
		ids.commit(math.MinInt64)
		return dup
	}
	total := max(tf.Rows(), 0)
	c := &backfillChunk{cfg: cfg, bf: bf, views: views, res: &res, path: path, topic: topic, end: from - 1, flushed: from - 1}
	var row int64 // offset of the next row
	err = tf.Read(ctx, func(rec arrow.RecordBatch) error {
		n := rec.NumRows()
		if row+n <= from && ids == nil {
			row += n
			res.Skipped += n
			return nil
		}
		dec.bind(rec)
		for i := range int(n) {
			off := row
			row++
			if off < from {
				res.Skipped++
				if ids != nil {
					if ev := c.next(); dec.decode(i, ev) == nil && ev.Time <= clock+a.skew {
						remember(ev, off)
					}
				}
				continue
			}
			res.Rows++
			ev := c.next()
			de := dec.decode(i, ev)
			if de == nil && ev.Time > clock+a.skew {
				de = &DecodeError{Reason: ReasonFuture, Detail: fmt.Sprintf("event time %s is more than %s ahead of the backfill's clock %s",
					fmtMs(ev.Time), registry.Duration(a.src.FutureSkew()), fmtMs(clock))}
			}
			switch {
			case de != nil:
				// Not kept: next hands out the same Event again.
				res.Rejected[de.Reason]++
				if err := c.letter(off, de.Reason, "", de.Detail); err != nil {
					return err
				}
			case remember(ev, off):
				res.DuplicateIDs++ // not kept either
			default:
				c.offsets = append(c.offsets, off)
				if !c.hasHW || ev.Time > c.hw {
					c.hw, c.hasHW = ev.Time, true
				}
			}
			c.end = off
			if len(c.offsets) >= cfg.ChunkRows {
				if err := c.flush(ctx); err != nil {
					return err
				}
			}
		}
		if cfg.Progress != nil {
			cfg.Progress(BackfillProgress{File: path, Done: row, Total: total, Elapsed: time.Since(start)})
		}
		return nil
	})
	if err == nil && c.end > c.flushed {
		err = c.flush(ctx)
	}
	if err == nil && cfg.Offline != nil {
		if err = cfg.syncDeadLetters(); err == nil {
			err = cfg.Offline.Flush(ctx)
		}
		if err == nil && c.flushed >= from {
			names := make([]string, len(views))
			for i, v := range views {
				names[i] = v.schema.View
			}
			if err = checkLogged(ctx, cfg.Offline, names, topic, 0, c.flushed, "another run of the same backfill"); err != nil {
				err = fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	if err != nil {
		return res, err
	}
	if cfg.Progress != nil {
		cfg.Progress(BackfillProgress{File: path, Done: row, Total: max(total, row), Elapsed: time.Since(start), Final: true})
	}
	return res, nil
}

// checkLogged checks, after the final flush of a backfill, that the offline
// log of each of views holds topic/partition up to offset end. A flush that
// finds the partition committed by another writer since this one's last
// commit (a second run of the same backfill, ingest during a replay) drops
// the rows it buffered, as a writer that lost the partition to a rebalance
// does, and succeeds: ingest reads the partition again from the new
// position, while a backfill has nothing more to append, so it fails here,
// unless the other writer committed the rows itself. Every commit is made
// on top of the position its writer last saw, so a position at or past end
// means that every row up to it is logged.
//
// who names the other writer, as a hint.
func checkLogged(ctx context.Context, w *offline.Writer, views []string, topic string, partition int32, end int64, who string) error {
	for _, view := range views {
		pos, ok, err := w.Position(ctx, view, topic, partition)
		if err != nil {
			return fmt.Errorf("offline log of %s: %w", view, err)
		}
		if ok && pos.Offset >= end {
			continue
		}
		holds := fmt.Sprintf("nothing of %s/%d", topic, partition)
		if ok {
			holds = fmt.Sprintf("%s/%d up to offset %d", topic, partition, pos.Offset)
		}
		return fmt.Errorf("offline log of %s: %w (%s?), and the rows this run buffered were dropped: it holds %s, not up to %d; run the backfill again",
			view, offline.ErrStreamLost, who, holds, end)
	}
	return nil
}

// backfillChunk gathers the decoded rows of a file until they are applied.
type backfillChunk struct {
	cfg     *BackfillConfig
	bf      *Backfiller
	views   []backfillView
	res     *BackfillResult
	path    string
	topic   string
	events  []Event // reused: events[:len(offsets)] are the chunk's
	offsets []int64
	end     int64 // the offset of the last row read, rejected or not
	flushed int64 // end at the last flush
	hw      int64 // the newest event time so far
	hasHW   bool
	key     []byte
	groups  map[string]int
	ents    []offline.EntityEvents
}

// next returns the Event to decode the next row into.
func (c *backfillChunk) next() *Event {
	n := len(c.offsets)
	if n == len(c.events) {
		c.events = append(c.events, Event{})
	}
	return &c.events[n]
}

func (c *backfillChunk) letter(off int64, r Reason, view, detail string) error {
	if c.cfg.DeadLetters == nil {
		return nil
	}
	return c.cfg.DeadLetters(BackfillLetter{File: c.path, Row: off + 1, Offset: off, Reason: r, View: view, Detail: detail})
}

// flush applies the chunk online, then appends it to the offline log with
// the position of its last row, as ingest does with a batch.
func (c *backfillChunk) flush(ctx context.Context) error {
	evs := c.events[:len(c.offsets)]
	res, err := c.bf.Apply(ctx, c.topic, 0, evs, c.offsets)
	if err != nil {
		return fmt.Errorf("%s: %w", c.path, err)
	}
	c.res.Applied += res.Applied
	c.res.Duplicates += res.Duplicates
	c.res.Expired += res.Expired
	c.res.MissingKey += int64(len(res.Letters))
	for _, l := range res.Letters {
		if err := c.letter(l.Message.Offset, l.Reason, l.View, l.Detail); err != nil {
			return err
		}
	}
	if c.cfg.Offline != nil {
		b := offline.Batch{Topic: c.topic, Partition: 0, IngestTime: c.cfg.Now().UnixMilli(),
			End: offline.Position{Offset: c.end, HW: c.hw, HasHW: c.hasHW}}
		for _, v := range c.views {
			ents, err := c.route(v, evs)
			if err != nil {
				return err
			}
			b.Entities = ents
			if err := c.cfg.syncDeadLetters(); err != nil {
				return err
			}
			if err := c.cfg.Offline.Append(ctx, v.schema, b); err != nil {
				if errors.Is(err, offline.ErrStreamLost) {
					return fmt.Errorf("%s: %w (another run of the same backfill?), and this run's buffered rows were dropped: run the backfill again", c.path, err)
				}
				return fmt.Errorf("%s: offline log of %s: %w", c.path, v.schema.View, err)
			}
		}
	}
	c.offsets = c.offsets[:0]
	c.flushed = c.end
	return nil
}

// route groups the chunk's events by the entity of view v. A row without a
// join key of a view that is not online is rejected here (an online view's
// routing reported it).
func (c *backfillChunk) route(v backfillView, evs []Event) ([]offline.EntityEvents, error) {
	if c.groups == nil {
		c.groups = map[string]int{}
	}
	clear(c.groups)
	for i := range c.ents {
		c.ents[i] = offline.EntityEvents{Events: c.ents[i].Events[:0]}
	}
	c.ents = c.ents[:0]
	for i := range evs {
		ev := &evs[i]
		k, missing := c.bf.a.layout.appendEntityKey(c.key[:0], ev, v.keyIdx)
		c.key = k
		if missing != "" {
			if !v.online {
				c.res.MissingKey++
				if err := c.letter(c.offsets[i], ReasonMissingKey, v.schema.View,
					fmt.Sprintf("no value for join key %q of feature view %q", missing, v.schema.View)); err != nil {
					return nil, err
				}
			}
			continue
		}
		gi, ok := c.groups[string(k)]
		if !ok {
			var ek featurestore.EntityKey
			if err := ek.UnmarshalBinary(k); err != nil {
				return nil, fmt.Errorf("%s: row %d: %w", c.path, c.offsets[i]+1, err)
			}
			gi = len(c.ents)
			c.groups[string(k)] = gi
			if gi < cap(c.ents) {
				c.ents = c.ents[:gi+1]
				c.ents[gi].Key = ek
			} else {
				c.ents = append(c.ents, offline.EntityEvents{Key: ek})
			}
		}
		c.ents[gi].Events = append(c.ents[gi].Events, window.Event{Time: ev.Time, Offset: c.offsets[i], Fields: ev.Fields})
		c.res.Logged++
	}
	return c.ents, nil
}
