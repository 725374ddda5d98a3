package serving

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/featurestore/featurestore/registry"
)

// authorizeFunc is OnlineOptions.Authorize: nil when auth is off.
type authorizeFunc func(ctx context.Context, project string, views []string) error

// unresolved returns the error of a request whose features did not
// resolve (err, which names the problem): INVALID_ARGUMENT with err's
// message when auth is off, and with auth on only if the caller could read
// what the request names anyway. Names could otherwise be probed: an
// unknown name would be INVALID_ARGUMENT and a known one not granted
// PERMISSION_DENIED. So the views the references name must all be granted
// (an unknown view not granted is denied as a known one is), and for a
// feature service, whose views are known only once it resolves, every view
// of the project; otherwise the refusal is the PERMISSION_DENIED a name not
// granted gets, the same whether it exists or not.
func unresolved(ctx context.Context, authorize authorizeFunc, project string, reg *registry.Registry, service string, refs []string, err error) error {
	if authorize != nil {
		views := refViews(refs)
		if service != "" {
			views = make([]string, 0, len(reg.Views)+len(reg.OnDemandViews))
			for _, v := range reg.Views {
				views = append(views, v.Name)
			}
			for _, v := range reg.OnDemandViews {
				views = append(views, v.Name)
			}
		}
		if aerr := authorizeViews(ctx, authorize, project, service, views); aerr != nil {
			return aerr
		}
	}
	return status.Error(codes.InvalidArgument, err.Error())
}

// authorizeViews authorizes the views a request reads (nothing to do when
// authorize is nil). For a feature service (service set), a refusal names
// the service, not a view: which views a service spans is as private as
// the views, and an unknown service is refused the same way (unresolved).
func authorizeViews(ctx context.Context, authorize authorizeFunc, project, service string, views []string) error {
	if authorize == nil {
		return nil
	}
	err := authorize(ctx, project, views)
	if service == "" || status.Code(err) != codes.PermissionDenied {
		return err
	}
	principal, _ := PrincipalFromContext(ctx)
	return status.Errorf(codes.PermissionDenied, "principal %q may not read feature service %q of project %q", principal, service, project)
}

// refViews returns the view names of feature references (view:feature),
// once each, whether the views exist or not.
func refViews(refs []string) []string {
	var out []string
	for _, r := range refs {
		if v, _, _ := strings.Cut(r, ":"); v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
