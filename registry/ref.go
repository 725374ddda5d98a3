package registry

import (
	"fmt"
	"regexp"
	"strings"
)

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid name %q: use letters, digits and _, starting with a letter or _, at most 63 characters", name)
	}
	return nil
}

// ParseFeatureRef parses "view:feature" (or "view:*").
func ParseFeatureRef(s string) (FeatureRef, error) {
	view, feature, ok := strings.Cut(s, ":")
	if !ok || view == "" || feature == "" || strings.Contains(feature, ":") {
		return FeatureRef{}, fmt.Errorf("invalid feature reference %q: expected view:feature", s)
	}
	if err := checkName(view); err != nil {
		return FeatureRef{}, fmt.Errorf("invalid feature reference %q: view: %w", s, err)
	}
	if feature != "*" {
		if err := checkName(feature); err != nil {
			return FeatureRef{}, fmt.Errorf("invalid feature reference %q: feature: %w", s, err)
		}
	}
	return FeatureRef{View: view, Feature: feature}, nil
}
