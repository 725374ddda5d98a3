//go:build unix

package offline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"unsafe"
)

// Map implements Mapper: the file is mapped read-only and shared, so that
// reading it takes its pages from the page cache as they are touched,
// without copying them.
func (d *Dir) Map(_ context.Context, name string) ([]byte, func() error, error) {
	if err := checkName(name); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(d.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("map %s: %w", name, ErrNotExist)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", name, err)
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", name, err)
	}
	if st.Size() == 0 {
		return nil, nil, fmt.Errorf("map %s: empty file", name)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", name, err)
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
	liveMaps.add(start, start+uintptr(len(data)), name)
	return data, func() error {
		liveMaps.remove(start)
		return syscall.Munmap(data)
	}, nil
}
