package offline

import (
	"errors"
	"fmt"
	"sync"
)

// ErrMappedFault is wrapped by the error CatchMappedFault makes of a fault
// reading a mapped log file.
var ErrMappedFault = errors.New("fault reading a memory-mapped offline log file: was it truncated or rewritten in place? (the log's writers never do that; committed files only ever appear and disappear whole)")

// liveMaps is the address ranges of the live mappings, by start.
var liveMaps = mappedSpans{spans: map[uintptr]mappedSpan{}}

type mappedSpan struct {
	end  uintptr
	name string
}

type mappedSpans struct {
	mu    sync.Mutex
	spans map[uintptr]mappedSpan
}

func (m *mappedSpans) add(start, end uintptr, name string) {
	m.mu.Lock()
	m.spans[start] = mappedSpan{end, name}
	m.mu.Unlock()
}

func (m *mappedSpans) remove(start uintptr) {
	m.mu.Lock()
	delete(m.spans, start)
	m.mu.Unlock()
}

// find returns the name of the mapped file holding addr.
func (m *mappedSpans) find(addr uintptr) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for start, sp := range m.spans {
		if addr >= start && addr < sp.end {
			return sp.name, true
		}
	}
	return "", false
}

// CatchMappedFault, deferred by a goroutine that reads record batches of
// ScanMapped with debug.SetPanicOnFault(true) in effect, turns the fault of
// reading a page of a mapped log file that was truncated since (SIGBUS)
// into an error wrapping ErrMappedFault in *err, instead of a crash of the
// whole process. Any other panic, including faults at other addresses,
// goes on.
func CatchMappedFault(err *error) {
	r := recover()
	if r == nil {
		return
	}
	if f, ok := r.(interface{ Addr() uintptr }); ok {
		if name, ok := liveMaps.find(f.Addr()); ok {
			*err = fmt.Errorf("read %s: %w (%v)", name, ErrMappedFault, r)
			return
		}
	}
	panic(r)
}

var _ Mapper = (*Dir)(nil)
