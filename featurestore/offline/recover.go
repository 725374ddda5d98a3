package offline

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"
)

// RemoveOrphans deletes what interrupted writes left in project's log:
// temporary files, data files that no manifest references, and manifest
// entries that a checkpoint superseded more than a day ago. Files younger than grace are
// spared, as they may belong to a write in progress elsewhere. It lists
// before it reads the manifests, so a file committed in between is young
// and spared. A view whose manifest cannot be read keeps all its files.
// It returns the number of files removed.
func RemoveOrphans(ctx context.Context, st Storage, project string, grace time.Duration, now time.Time) (int, error) {
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
			return removed, fmt.Errorf("clean up %s/%s: %w", project, view, err)
		}
		prefix := viewDir(project, view) + "/"
		for _, o := range list {
			if now.Sub(o.ModTime) < grace {
				continue
			}
			sub := strings.TrimPrefix(o.Name, prefix)
			remove := o.Temp
			if !remove && path.Dir(sub) == manifestDirName {
				seq, ok := parseManifestEntry(path.Base(sub))
				remove = ok && seq < m.base && now.Sub(o.ModTime) >= manifestRetention
			} else if !remove {
				_, _, _, _, _, isData := parseFilePath(sub)
				_, referenced := m.files[sub]
				remove = isData && !referenced
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
