package export

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Progress says how far an export is, for a progress bar.
type Progress struct {
	// Phase is what the export is doing: reading the entity rows, reading
	// the events of a view, computing, or writing the output.
	Phase string
	// Done and Total count Unit (rows or events); Total is 0 when not known.
	Done, Total int64
	Unit        string
	// Elapsed is the time since the export started.
	Elapsed time.Duration
	// Final is set on the last report of a phase.
	Final bool
}

// phase numbers the export's phases.
type phase int

const (
	phaseRows phase = iota
	phaseEvents
	phaseCompute
	phaseWrite
)

// progress counts the work of the current phase and reports it to a
// callback every reportEvery, from its own goroutine.
type progress struct {
	fn    func(Progress)
	start time.Time

	mu    sync.Mutex
	name  string
	unit  string
	total int64
	ph    atomic.Int32 // the current phase
	done  atomic.Int64
	stop  chan struct{}
	ended chan struct{}
}

const reportEvery = 200 * time.Millisecond

func newProgress(fn func(Progress)) *progress {
	return &progress{fn: fn, start: time.Now()}
}

// begin starts a phase, ending the previous one.
func (p *progress) begin(ph phase, name, unit string, total int64) {
	p.end()
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	p.name, p.unit, p.total = name, unit, total
	p.done.Store(0)
	p.ph.Store(int32(ph))
	p.stop, p.ended = make(chan struct{}), make(chan struct{})
	stop, ended := p.stop, p.ended
	p.mu.Unlock()
	p.report(false)
	go func() {
		defer close(ended)
		t := time.NewTicker(reportEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				p.report(false)
			}
		}
	}()
}

// add counts n units of work of phase ph.
func (p *progress) add(ph phase, n int64) {
	if p.fn != nil && phase(p.ph.Load()) == ph {
		p.done.Add(n)
	}
}

func (p *progress) report(final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fn(Progress{Phase: p.name, Done: p.done.Load(), Total: p.total, Unit: p.unit, Elapsed: time.Since(p.start), Final: final})
}

// end ends the current phase with a final report.
func (p *progress) end() {
	if p.fn == nil || p.stop == nil {
		return
	}
	close(p.stop)
	<-p.ended
	p.stop = nil
	p.report(true)
}

// TerminalProgress returns a Progress callback that draws a progress bar on
// w, a terminal: one line per phase, redrawn in place.
func TerminalProgress(w io.Writer) func(Progress) {
	return func(p Progress) {
		var b strings.Builder
		b.WriteString("\r\033[K")
		fmt.Fprintf(&b, "%-28s ", p.Phase)
		if p.Total > 0 {
			frac := min(float64(p.Done)/float64(p.Total), 1)
			const width = 30
			n := int(frac * width)
			fmt.Fprintf(&b, "[%s%s] %3.0f%%  %s/%s %s", strings.Repeat("=", n), strings.Repeat(" ", width-n), 100*frac, count(p.Done), count(p.Total), p.Unit)
		} else {
			fmt.Fprintf(&b, "%s %s", count(p.Done), p.Unit)
		}
		fmt.Fprintf(&b, "  %s", p.Elapsed.Round(time.Second))
		if p.Final {
			b.WriteByte('\n')
		}
		_, _ = io.WriteString(w, b.String())
	}
}

// count renders n with thousands separators.
func count(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
