package export

import (
	"errors"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
)

// Check resolves the features of opts (Service or Features) against
// opts.Registry and, when schema is not nil, checks an entity table of that
// schema against them, with KeyColumns and TimestampColumn, as Run does
// before it reads anything. It returns the names of the feature views the
// export reads, in request order (and those the requested on-demand
// features read), then those of the on-demand feature views requested, or
// the error Run would give: an unknown
// feature service, view or feature, a view not kept offline, a missing join
// key or timestamp column, a column of the wrong type.
//
// A server calls it to authorize an export by the views it reads, and to
// refuse a bad request before it receives the entity table's rows.
// Messages name the table by opts.Entities, or "entity table" when empty.
func Check(opts Options, schema *arrow.Schema) ([]string, error) {
	if opts.Registry == nil {
		return nil, errors.New("no registry")
	}
	p, err := newPlan(opts.Registry, opts.Service, opts.Features)
	if err != nil {
		return nil, err
	}
	if schema != nil {
		name, ts := opts.Entities, opts.TimestampColumn
		if name == "" {
			name = "entity table"
		}
		if ts == "" {
			ts = DefaultTimestampColumn
		}
		if _, err := findEntityColumns(name, schema, p, opts.KeyColumns, ts); err != nil {
			return nil, err
		}
	}
	views := make([]string, 0, len(p.views))
	for _, vp := range p.views {
		views = append(views, vp.name)
	}
	for _, o := range p.outputs {
		if o.od != nil && !slices.Contains(views, o.od.view) {
			views = append(views, o.od.view)
		}
	}
	return views, nil
}
