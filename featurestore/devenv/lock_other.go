//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package devenv

import (
	"fmt"
	"os"
)

// lockDir creates dir if needed. On this platform the directory is not
// locked: two processes sharing a data directory would corrupt it.
func lockDir(dir string) (unlock func() error, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	return func() error { return nil }, nil
}
