package export

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/featurestore/featurestore/featurestore"
)

// PanicError is an export that failed because its code panicked: a bug,
// turned into an error so that an export running in a server (over Arrow
// Flight) does not take the process and its lookups down.
type PanicError struct {
	Value any    // what the code panicked with
	Site  string // the function, file and line that panicked
	Stack []byte // the goroutine's stack when it panicked
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("export failed: panic (a bug; please report it): %v at %s", e.Value, e.Site)
}

// Recovered calls fn, turning its panic into a *PanicError.
func Recovered(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Site: featurestore.PanicSite(), Stack: debug.Stack()}
		}
	}()
	return fn()
}

// workGroup runs functions in goroutines and keeps the first error; the
// first error cancels the group's context. A function's panic is its
// error, a *PanicError.
type workGroup struct {
	wg     sync.WaitGroup
	cancel context.CancelFunc
	once   sync.Once
	err    error
}

func newWorkGroup(ctx context.Context) (*workGroup, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	return &workGroup{cancel: cancel}, ctx
}

func (g *workGroup) Go(fn func() error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := Recovered(fn); err != nil {
			g.once.Do(func() {
				g.err = err
				g.cancel()
			})
		}
	}()
}

// Wait waits for every function and returns the first error.
func (g *workGroup) Wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}

// forEach calls fn for each index below n on up to workers goroutines, and
// returns the first error.
func forEach(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	g, ctx := newWorkGroup(ctx)
	next := make(chan int)
	for range min(workers, n) {
		g.Go(func() error {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-ctx.Done():
				return nil
			}
		}
		return nil
	})
	return g.Wait()
}
