package offline

import (
	"context"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"
)

// RemoveOrphans deletes what interrupted writes left in project's log:
// temporary files, data files that no manifest references, and manifest
// entries that a checkpoint superseded more than a day ago. Files younger than grace are
// spared, as they may belong to a write in progress elsewhere. It lists
// before it reads the manifests, so a file committed in between is young
// and spared. A view whose manifest cannot be read keeps all its files and
// is skipped, so that one broken view (say of a view no longer defined)
// does not stop the writer or compaction of the others; it is logged to log
// (nil discards it). It returns the number of files removed.
func RemoveOrphans(ctx context.Context, st Storage, project string, grace time.Duration, now time.Time, log *slog.Logger) (int, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := checkSegment("project", project); err != nil {
		return 0, err
	}
	objs, err := st.List(ctx, project)
	if err != nil {
		return 0, err
	}
	byView := map[string][]ObjectInfo{}
	for _, o := range objs {
		rest := strings.TrimPrefix(o.Name, project+"/")
		if view, _, ok := strings.Cut(rest, "/"); ok && checkSegment("feature view", view) == nil {
			byView[view] = append(byView[view], o)
		}
	}
	removed := 0
	for view, list := range byView {
		m := newManifest(st, project, view)
		if err := m.load(ctx); err != nil {
			// Whether its files are committed is unknown: keep them all.
			// Writing to the view fails on the same error.
			log.Warn("manifest unreadable; its files are kept", "view", viewDir(project, view), "err", err)
			continue
		}
		prefix := viewDir(project, view) + "/"
		for _, o := range list {
			if now.Sub(o.ModTime) < grace {
				continue
			}
			sub := strings.TrimPrefix(o.Name, prefix)
			// A name of the log's is never taken for a temporary file,
			// whatever the storage says.
			_, _, _, _, _, isData := parseFilePath(sub)
			seq, isEntry := int64(0), false
			if path.Dir(sub) == manifestDirName {
				seq, isEntry = parseManifestEntry(path.Base(sub))
			}
			var remove bool
			switch {
			case isData:
				_, referenced := m.files[sub]
				remove = !referenced
			case isEntry:
				remove = seq < m.base && now.Sub(o.ModTime) >= manifestRetention
			default:
				remove = o.Temp
			}
			if !remove {
				continue
			}
			if err := st.Delete(ctx, o.Name); err != nil {
				return removed, fmt.Errorf("clean up %s/%s: %w", project, view, err)
			}
			removed++
		}
	}
	return removed, nil
}
