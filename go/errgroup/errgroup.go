// Package errgroup is what a Go programmer usually reaches for instead of the post's pool: a group
// of goroutines that stops at the first error. It has the shape of golang.org/x/sync/errgroup
// (WithContext, SetLimit, Go, Wait), written here with the standard library only, since this
// module downloads nothing. The failure matrix (plots/failures.py, go/failures) runs it beside the
// post's pool.
//
// Its answer to the post's question is the opposite of the pool's. The pool keeps every task's
// error and lets the caller decide afterwards; a group keeps the first error only, and tells the
// other goroutines to stop by cancelling a context. The group itself stops nothing: Go calls every
// function it is given, before or after the first error, and a function that never looks at the
// context runs to its end.
//
//	g, ctx := errgroup.WithContext(context.Background())
//	g.SetLimit(3)
//	for _, url := range urls {
//		url := url
//		g.Go(func() error { return fetch(ctx, url) })
//	}
//	err := g.Wait() // the first error of all, or nil
//
// One difference from x/sync's package: SetLimit(0) panics, where x/sync accepts it and the next Go
// then blocks forever. Left out: TryGo, and the cause of a cancellation (context.WithCancelCause
// is Go 1.20; this module is 1.19). As in x/sync, a function that panics ends the program: the
// panic is not recovered, and Wait never sees it. (x/sync's Wait re-raised such panics in a release
// of mid-2025, golang/go#53757; the change was reverted weeks later.)
package errgroup

import (
	"context"
	"fmt"
	"sync"
)

// Group runs functions in goroutines and keeps the first error any of them returns. The zero Group
// is ready to use: no limit, and no context to cancel.
type Group struct {
	// Cancels the context that WithContext returned; nil for a zero Group.
	cancel context.CancelFunc

	// Counts the goroutines Go started that have not yet returned; Wait waits for it to reach 0.
	running sync.WaitGroup

	// One slot per goroutine allowed at once; nil means no limit. Go takes a slot by sending (and
	// blocks there while every slot is taken); a goroutine gives its slot back by receiving as it
	// returns. Only those returns free a slot, so Go waits for nothing but the group's own work.
	slots chan struct{}

	// The first non-nil error a function returned, set once under firstError. Wait reads it only
	// after running has reached 0, that is, after every write to it.
	firstError sync.Once
	err        error
}

// WithContext returns a new Group and a context derived from ctx. The context is cancelled the
// first time a function given to Go returns an error, or when Wait returns, whichever comes first.
// It is the only way the group tells its functions to stop: each must watch it.
func WithContext(ctx context.Context) (*Group, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	return &Group{cancel: cancel}, ctx
}

// SetLimit lets at most n of the group's functions run at once; a negative n removes the limit.
// Set it before the first Go. Changing a limit while goroutines that it counts are running panics,
// and so does n == 0, which would leave every later Go waiting forever for a slot.
func (g *Group) SetLimit(n int) {
	if n == 0 {
		panic("errgroup: a limit of 0 would block every call to Go forever")
	}
	if g.slots != nil && len(g.slots) != 0 {
		panic(fmt.Sprintf("errgroup: SetLimit while %d goroutines are running", len(g.slots)))
	}
	if n < 0 {
		g.slots = nil
		return
	}
	g.slots = make(chan struct{}, n)
}

// Go calls f in a new goroutine, once a slot is free if there is a limit (until then Go blocks).
// It calls f whether or not an earlier function has failed: only the context says so. The first
// non-nil error any f returns is kept for Wait and cancels the context.
func (g *Group) Go(f func() error) {
	if g.slots != nil {
		// Blocks while the limit is reached; a returning goroutine frees a slot (done, below).
		g.slots <- struct{}{}
	}
	g.running.Add(1)
	go func() {
		// Deferred, so that a slot is freed even on the way out of a panic (which then ends the
		// program anyway).
		defer g.done()
		if err := f(); err != nil {
			g.firstError.Do(func() {
				g.err = err
				if g.cancel != nil {
					g.cancel()
				}
			})
		}
	}()
}

// done gives a goroutine's slot back, then counts it out. In that order, so that once Wait has
// seen every goroutine done, every slot is free again.
func (g *Group) done() {
	if g.slots != nil {
		<-g.slots
	}
	g.running.Done()
}

// Wait blocks until every function given to Go has returned, cancels the context, and returns the
// first error any of them returned (nil if none did). The other errors are gone: the group never
// kept them.
func (g *Group) Wait() error {
	g.running.Wait()
	if g.cancel != nil {
		g.cancel()
	}
	return g.err
}
