package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad registry settings are wrong usage (exit 2), found before anything is
// read or opened: plan must not get as far as the definitions.
func TestRegistryUsageErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-defs")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // in stderr
	}{
		{"unknown registry", nil, []string{"plan", "--registry", "bogus", missing}, `"bogus"`},
		{"file without a directory", nil, []string{"plan", "--registry", "file:", missing}, "file:"},
		{"file:// without a directory", nil, []string{"versions", "--registry", "file://"}, "file:"},
		{"unknown registry in the environment", map[string]string{"FEATURESTORE_REGISTRY": "bogus"}, []string{"versions"}, "FEATURESTORE_REGISTRY"},
		{"invalid project", nil, []string{"versions", "--registry", "file:" + t.TempDir(), "--project", "a:b"}, `"a:b"`},
		{"empty project", nil, []string{"plan", "--project", "", missing}, "project"},
		{"invalid project in the environment", map[string]string{"FEATURESTORE_PROJECT": "x y"}, []string{"show"}, "FEATURESTORE_PROJECT"},
		{"negative version", nil, []string{"show", "--registry", "file:" + t.TempDir(), "--version", "-1"}, "--version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.env, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.want) || strings.Contains(errOut, "no-such-defs") {
				t.Fatalf("exit %d, want 2 with %q before reading anything\nstdout:\n%s\nstderr:\n%s", code, tc.want, out, errOut)
			}
		})
	}
}

// Projects sharing one file registry directory are as independent as
// projects sharing one Redis; the default project keeps the directory's
// top level, where registries made before projects had their own live.
func TestFileRegistryProjects(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"FEATURESTORE_REGISTRY": "file:" + dir}
	if code, out, errOut := runCLI(t, env, "apply", "--message", "default's", "../../examples"); code != 0 {
		t.Fatalf("apply to the default project: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "versions", "0000000001.json")); err != nil {
		t.Fatalf("the default project's registry moved: %v", err)
	}
	code, out, errOut := runCLI(t, env, "versions", "--project", "other")
	if code != 0 || !strings.Contains(out, "No versions") {
		t.Fatalf("versions of another project: exit %d, want none listed\n%s%s", code, out, errOut)
	}
	if code, _, _ := runCLI(t, env, "show", "--project", "other"); code != 1 {
		t.Fatalf("show of a project with nothing applied: exit %d, want 1", code)
	}
	if code, out, errOut := runCLI(t, env, "apply", "--project", "other", "--message", "other's", "../../examples"); code != 0 || !strings.Contains(out, "Applied registry version 1") {
		t.Fatalf("apply to another project: exit %d\n%s%s", code, out, errOut)
	}
	if _, out, _ := runCLI(t, env, "versions", "--project", "other"); !strings.Contains(out, "other's") || strings.Contains(out, "default's") {
		t.Fatalf("versions of project other:\n%s", out)
	}
	if _, out, _ := runCLI(t, env, "versions"); !strings.Contains(out, "default's") || strings.Contains(out, "other's") {
		t.Fatalf("versions of the default project:\n%s", out)
	}
}
