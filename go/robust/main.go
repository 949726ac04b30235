// Command robust runs stage 3 in Go: a pool of tasks that keep their own errors (package pool),
// then walks the tasks as the post's caller does, stopping with "Too many errors." at the limit.
// python -m robust is the same demo in Python.
//
// Odd jobs fail, as in stage 2, but no failure can block a worker, so every task runs and every
// error is kept. Exit status 0 if no task failed, 1 otherwise.
//
//	$ go run ./go/robust
//	processing job 1
//	...
//	task 1: error on job 1
//	task 3: error on job 3
//	...
//	finished: 4 results [4 8 12 16], 5 errors
package main

import (
	"fmt"
	"os"
	"time"

	"workerpool/internal/demoflags"
	"workerpool/robust/pool"
)

func main() {
	command := demoflags.New("Stage 3 in Go: a pool of tasks, each keeping its own error, so " +
		"failures can never fill a channel. Odd jobs fail. Exit status 0 if no task failed, 1 " +
		"otherwise.")
	workers := command.Workers("tasks run at once")
	jobCount := command.Jobs("run jobs 1..N; odd ones fail")
	work := command.WorkSeconds()
	maxErrors := command.Int("max-errors", 10, 1, 1_000_000,
		"give up with 'Too many errors.' once this many tasks have failed (try --jobs 30)")
	command.Parse()

	// Each task writes only its own slot, and the caller reads them only after Run, so the slice
	// needs no lock.
	results := make([]int, *jobCount)
	tasks := make([]*pool.Task, *jobCount)
	for i := range tasks {
		// A copy per task: before Go 1.22 the loop variable is one variable shared by every
		// iteration, and all the closures would see its last value.
		i, job := i, i+1
		tasks[i] = pool.NewTask(func() error {
			// A task does not know which goroutine runs it: the pool's workers have no names.
			fmt.Println("processing job", job)
			time.Sleep(*work)
			if job%2 == 1 {
				return fmt.Errorf("error on job %d", job)
			}
			results[i] = job * 2
			return nil
		})
	}

	p := pool.NewPool(tasks, *workers)
	// Returns when every task has run; never fails for a task.
	p.Run()

	// The post's caller: meet each error in task order, log it, give up once there are too many.
	// Every task has run by now; giving up only stops the reading.
	errorCount := 0
	for i, task := range p.Tasks {
		if task.Err != nil {
			errorCount++
			fmt.Printf("task %d: %v\n", i+1, task.Err)
		}
		if errorCount >= *maxErrors {
			fmt.Println("Too many errors.")
			os.Exit(1)
		}
	}
	var succeeded []int
	for i, task := range p.Tasks {
		if task.Err == nil {
			succeeded = append(succeeded, results[i])
		}
	}
	fmt.Printf("finished: %d results %v, %d errors\n", len(succeeded), succeeded, errorCount)
	if errorCount > 0 {
		os.Exit(1)
	}
}
