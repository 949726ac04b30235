package pool

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func TestAnEmptyPoolRunsAndReturns(t *testing.T) {
	p := NewPool(nil, 3)
	p.Run()
	if len(p.Tasks) != 0 {
		t.Fatalf("an empty pool grew %d tasks", len(p.Tasks))
	}
}

func TestSucceedingTasksLeaveNoError(t *testing.T) {
	tasks := []*Task{
		NewTask(func() error { return nil }),
		NewTask(func() error { return nil }),
		NewTask(func() error { return nil }),
	}
	NewPool(tasks, 2).Run()
	for i, task := range tasks {
		if task.Err != nil {
			t.Errorf("task %d: unexpected error %v", i+1, task.Err)
		}
	}
}

func TestEveryFailingTaskKeepsItsOwnError(t *testing.T) {
	// More failures than workers, and more than any channel in stage 2 held: all are kept, each on
	// the task that returned it.
	const taskCount = 101
	tasks := make([]*Task, taskCount)
	want := make([]error, taskCount)
	for i := range tasks {
		if i%2 == 1 {
			want[i] = fmt.Errorf("error on job %d", i+1)
		}
		err := want[i]
		tasks[i] = NewTask(func() error { return err })
	}
	NewPool(tasks, 3).Run()
	for i, task := range tasks {
		// The very error value the task returned, not a copy or another task's.
		if task.Err != want[i] {
			t.Errorf("task %d: error %v, want %v", i+1, task.Err, want[i])
		}
	}
}

func TestEveryTaskRunsExactlyOnce(t *testing.T) {
	const taskCount = 1000
	runs := make([]int32, taskCount)
	tasks := make([]*Task, taskCount)
	for i := range tasks {
		i := i
		tasks[i] = NewTask(func() error {
			atomic.AddInt32(&runs[i], 1)
			return nil
		})
	}
	NewPool(tasks, 7).Run()
	// Run has returned, so every task has finished: no task runs after Run.
	for i, count := range runs {
		if count != 1 {
			t.Errorf("task %d ran %d times", i+1, count)
		}
	}
}

func TestConcurrencyTasksRunAtOnceAndNeverMore(t *testing.T) {
	const concurrency = 3
	var running, peak, extraGoroutines int32
	// The first tasks wait here until concurrency of them are running together: if the pool ran
	// fewer at once, they would wait forever and the test would time out.
	together := make(chan struct{})
	var once sync.Once
	// Goroutines that exist before Run (some left over from earlier tests may still be exiting,
	// which can only make the count below smaller, never larger).
	before := runtime.NumGoroutine()
	tasks := make([]*Task, 30)
	for i := range tasks {
		tasks[i] = NewTask(func() error {
			// More goroutines than workers would mean more tasks could run at once than asked.
			// Every worker is started before the first task is handed out, so this is exact.
			storeMax(&extraGoroutines, int32(runtime.NumGoroutine()-before))
			now := atomic.AddInt32(&running, 1)
			storeMax(&peak, now)
			if now == concurrency {
				once.Do(func() { close(together) })
			}
			<-together
			atomic.AddInt32(&running, -1)
			return nil
		})
	}
	NewPool(tasks, concurrency).Run()
	if got := atomic.LoadInt32(&peak); got != concurrency {
		t.Errorf("at most %d tasks ran at once, want %d", got, concurrency)
	}
	if got := atomic.LoadInt32(&extraGoroutines); got > concurrency {
		t.Errorf("Run had %d goroutines while tasks ran, want at most %d", got, concurrency)
	}
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

func TestAConcurrencyBelowOneIsRefused(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NewPool accepted concurrency 0")
		}
	}()
	NewPool(nil, 0)
}
