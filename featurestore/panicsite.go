package featurestore

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
)

// PanicSite returns the function, file and line that a panic being
// recovered was first raised in: when a deferred function recovered it
// and panicked again with it, the frames of the first panic are still on
// the stack, below the second's. Call it from the deferred function that
// recovers.
func PanicSite() string {
	var pcs [64]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs[:])])
	site, raised := "an unknown place", false
	for {
		f, more := frames.Next()
		switch {
		case f.Function == "runtime.gopanic":
			raised = true
		case raised && !strings.HasPrefix(f.Function, "runtime."):
			site, raised = fmt.Sprintf("%s (%s:%d)", f.Function, filepath.Base(f.File), f.Line), false
		}
		if !more {
			return site
		}
	}
}
