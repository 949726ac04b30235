package errgroup

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestWaitReturnsTheFirstErrorAndDropsTheRest(t *testing.T) {
	first, second := errors.New("first"), errors.New("second")
	g, ctx := WithContext(context.Background())
	g.Go(func() error { return first })
	// Returns its error only once the first error has cancelled the context: it is second for sure.
	g.Go(func() error {
		<-ctx.Done()
		return second
	})
	if err := g.Wait(); err != first {
		t.Fatalf("Wait returned %v, want the first error", err)
	}
}

func TestTheFirstErrorCancelsTheContextBeforeWait(t *testing.T) {
	g, ctx := WithContext(context.Background())
	cancelled := make(chan struct{})
	// Ends only when the context is cancelled: without the cancel, this test hangs (go test's
	// -timeout ends it).
	g.Go(func() error {
		<-ctx.Done()
		close(cancelled)
		return nil
	})
	g.Go(func() error { return errors.New("fail") })
	<-cancelled
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("context error %v, want context.Canceled", ctx.Err())
	}
	if err := g.Wait(); err == nil || err.Error() != "fail" {
		t.Fatalf("Wait returned %v, want the failure", err)
	}
}

func TestWaitCancelsTheContextWhenNothingFailed(t *testing.T) {
	g, ctx := WithContext(context.Background())
	g.Go(func() error { return nil })
	if err := g.Wait(); err != nil {
		t.Fatalf("Wait returned %v, want nil", err)
	}
	if ctx.Err() == nil {
		t.Fatal("the context is still live after Wait")
	}
}

func TestAZeroGroupRunsEveryFunctionOnceAndReturnsNil(t *testing.T) {
	var g Group
	var runs [100]int32
	for i := range runs {
		i := i
		g.Go(func() error {
			atomic.AddInt32(&runs[i], 1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("Wait returned %v", err)
	}
	for i, count := range runs {
		if count != 1 {
			t.Errorf("function %d ran %d times", i, count)
		}
	}
}

func TestGoStillCallsEveryFunctionAfterTheFirstError(t *testing.T) {
	// The group stops nothing itself: the functions given after the failure still run; only the
	// context tells them the group has failed.
	g, ctx := WithContext(context.Background())
	g.SetLimit(1)
	g.Go(func() error { return errors.New("fail") })
	var ran, sawCancel int32
	for i := 0; i < 10; i++ {
		g.Go(func() error {
			atomic.AddInt32(&ran, 1)
			// With a limit of 1 this function starts only after the failing one has returned,
			// and so after the cancel.
			if ctx.Err() != nil {
				atomic.AddInt32(&sawCancel, 1)
			}
			return nil
		})
	}
	if err := g.Wait(); err == nil {
		t.Fatal("Wait lost the error")
	}
	if ran != 10 || sawCancel != 10 {
		t.Fatalf("%d functions ran after the failure, %d saw the cancel; want 10 and 10", ran, sawCancel)
	}
}

func TestSetLimitRunsThatManyAtOnceAndNeverMore(t *testing.T) {
	const limit = 3
	var running, peak int32
	// The first functions wait here until limit of them run together: if the group ran fewer at
	// once, they would wait forever and the test would time out.
	together := make(chan struct{})
	var once sync.Once
	var g Group
	g.SetLimit(limit)
	for i := 0; i < 30; i++ {
		g.Go(func() error {
			now := atomic.AddInt32(&running, 1)
			storeMax(&peak, now)
			if now == limit {
				once.Do(func() { close(together) })
			}
			<-together
			atomic.AddInt32(&running, -1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("Wait returned %v", err)
	}
	if peak != limit {
		t.Fatalf("at most %d functions ran at once, want %d", peak, limit)
	}
}

func TestANegativeLimitMeansNoLimit(t *testing.T) {
	const count = 50
	var g Group
	g.SetLimit(2)
	g.SetLimit(-1)
	// Every function waits until all of them have started: with any limit below count, Go would
	// block before the last one and the test would time out.
	var started sync.WaitGroup
	started.Add(count)
	for i := 0; i < count; i++ {
		g.Go(func() error {
			started.Done()
			started.Wait()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("Wait returned %v", err)
	}
}

func TestALimitOfZeroIsRefused(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("SetLimit accepted 0")
		}
	}()
	var g Group
	g.SetLimit(0)
}

func TestChangingTheLimitWhileItsGoroutinesRunIsRefused(t *testing.T) {
	var g Group
	g.SetLimit(2)
	release := make(chan struct{})
	g.Go(func() error {
		<-release
		return nil
	})
	func() {
		defer func() {
			if recover() == nil {
				t.Error("SetLimit changed the limit under a running goroutine")
			}
		}()
		g.SetLimit(5)
	}()
	close(release)
	if err := g.Wait(); err != nil {
		t.Fatalf("Wait returned %v", err)
	}
	// Once they have all returned, it may change.
	g.SetLimit(5)
}

// storeMax raises *highest to value if value is higher, safely among goroutines.
func storeMax(highest *int32, value int32) {
	for {
		seen := atomic.LoadInt32(highest)
		if value <= seen || atomic.CompareAndSwapInt32(highest, seen, value) {
			return
		}
	}
}
