package registry_test

import (
	"sync"
	"testing"

	"github.com/featurestore/featurestore/registry"
	"github.com/featurestore/featurestore/registry/storetest"
)

func TestFileStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) registry.Store {
		// Every store opened within one subtest shares a directory, as
		// processes on one machine would.
		dir := sharedDir(t)
		s, err := registry.OpenFileStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

var (
	dirsMu sync.Mutex
	dirs   = map[*testing.T]string{}
)

func sharedDir(t *testing.T) string {
	dirsMu.Lock()
	defer dirsMu.Unlock()
	if d, ok := dirs[t]; ok {
		return d
	}
	d := t.TempDir()
	dirs[t] = d
	return d
}
