// Package reload keeps values parsed from files that may be replaced while
// a process runs (certificates, keys, passwords, policies), and parses them
// again when their content changes.
package reload

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often the files are looked at for changes when no
// other interval is set.
const DefaultInterval = time.Second

// Value keeps the value parsed from a few files and parses them again when
// their content changes. It looks at the files at most once per interval, from
// the goroutine that asks for the value while the others keep using the
// current one, so that hot paths (each request, each TLS handshake) can ask
// every time and no goroutine has to be started or stopped.
//
// Changes are found by content, not by modification time or inode: a
// certificate copied over with its old timestamp, or a Kubernetes secret
// swapped through a symbolic link, is seen all the same. Changed content is
// parsed only once it has settled: the files were last modified an interval
// ago or more, or two looks an interval apart read the same bytes. A file
// written in place can be read cut short, and cut short it may still parse
// (a policy list cut just before "_sandbox" grants another view), so content
// still being written is not put in force. Content that fails to parse
// leaves the current value in place and is reported once, until the content
// changes again; content that will parse later (ErrNotYet) is parsed again
// at every look.
type Value[T any] struct {
	paths    []string
	interval time.Duration
	parse    func(data [][]byte) (*T, error)
	// reloaded is called after each attempt to parse changed content, with
	// the new value or the error.
	reloaded func(*T, error)

	cur  atomic.Pointer[T]
	next atomic.Int64 // Unix nanoseconds of the next look

	mu      sync.Mutex // one look at a time
	last    string     // digest of the content, or the read error, last acted on
	pending string     // digest of changed content seen once, not yet acted on
	notYet  string     // digest of content that parsed with ErrNotYet, reported
}

// New reads and parses the files once; an error there is returned, not
// retried. reloaded, if not nil, is called after each attempt to parse
// changed content, with the new value or the error.
func New[T any](paths []string, interval time.Duration, parse func([][]byte) (*T, error), reloaded func(*T, error)) (*Value[T], error) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if reloaded == nil {
		reloaded = func(*T, error) {}
	}
	r := &Value[T]{paths: paths, interval: interval, parse: parse, reloaded: reloaded}
	data, digest, _, err := r.read()
	if err != nil {
		return nil, err
	}
	v, err := parse(data)
	if err != nil {
		return nil, err
	}
	r.cur.Store(v)
	r.last = digest
	r.next.Store(time.Now().UnixNano() + int64(interval))
	return r, nil
}

// Get returns the current value, first looking at the files if the
// interval has passed.
func (r *Value[T]) Get() *T {
	now := time.Now().UnixNano()
	if n := r.next.Load(); now >= n && r.next.CompareAndSwap(n, now+int64(r.interval)) {
		r.check()
	}
	return r.cur.Load()
}

// Current returns the current value without looking at the files.
func (r *Value[T]) Current() *T { return r.cur.Load() }

// ErrNotYet, wrapped in a parse error, says that the content will parse
// later (a certificate not valid yet): it is parsed again at every look,
// and reported once, instead of being set aside until it changes.
var ErrNotYet = errors.New("not yet usable")

// check reads the files and parses them if their content changed and has
// settled: it read the same on the previous look, or the files were last
// modified an interval ago or more (looks happen only on use, so after a
// quiet spell a change made long ago is applied at the first look).
func (r *Value[T]) check() {
	r.mu.Lock()
	defer r.mu.Unlock()
	// At most two reads, so that files rewritten without pause cannot keep
	// a look going.
	for range 2 {
		start := time.Now()
		data, digest, modified, err := r.read()
		if err != nil {
			r.pending = ""
			if msg := "error: " + err.Error(); msg != r.last {
				r.last = msg
				r.reloaded(nil, err)
			}
			return
		}
		if digest == r.last {
			r.pending = ""
			return
		}
		if digest != r.pending && start.Sub(modified) < r.interval {
			r.pending = digest
			// The next look confirms it. An interval shorter than a read
			// (tests look at every use) has passed already: look again now.
			if time.Since(start) < r.interval {
				return
			}
			continue
		}
		r.pending = ""
		v, err := r.parse(data)
		if errors.Is(err, ErrNotYet) {
			if r.notYet != digest {
				r.notYet = digest
				r.reloaded(nil, err)
			}
			return
		}
		r.last, r.notYet = digest, ""
		if err != nil {
			r.reloaded(nil, err)
			return
		}
		r.cur.Store(v)
		r.reloaded(v, nil)
		return
	}
}

// read returns the content of every file, one digest of them all, and the
// latest modification time of the files.
func (r *Value[T]) read() (data [][]byte, digest string, modified time.Time, err error) {
	data = make([][]byte, len(r.paths))
	h := sha256.New()
	for i, p := range r.paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, "", time.Time{}, err
		}
		data[i] = b
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
		// After the read: a file written meanwhile counts as modified now.
		fi, err := os.Stat(p)
		if err != nil {
			return nil, "", time.Time{}, err
		}
		if fi.ModTime().After(modified) {
			modified = fi.ModTime()
		}
	}
	return data, fmt.Sprintf("%x", h.Sum(nil)), modified, nil
}
