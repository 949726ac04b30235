// Package pool is stage 3 in Go: a pool of tasks that each keep their own error, in the style of
// the post's Pool and Task. robust/pool.py is the Python counterpart.
//
// No channel carries results or errors: a task's function returns its error and the worker that
// ran it stores it on the task. Storing never blocks, so no number of failures can stop a worker,
// and the deadlock of stage 2 has nowhere to happen. After Run the caller walks Pool.Tasks and
// decides what the errors mean.
package pool

import (
	"fmt"
	"sync"
)

// Task is one piece of work for a Pool.
type Task struct {
	// Err is what the task's function returned. Read it only after the Pool's Run has returned:
	// until then a worker goroutine may be writing it.
	Err error

	f func() error
}

// NewTask wraps f, which the pool calls exactly once. Results, if any, are f's business: a
// closure writes them where its caller will look (see the bench and robust commands).
func NewTask(f func() error) *Task {
	return &Task{f: f}
}

// Pool runs its Tasks, at most concurrency of them at a time.
type Pool struct {
	Tasks []*Task

	concurrency int
}

// NewPool prepares tasks to run on concurrency goroutines. A concurrency below 1 would leave Run
// waiting forever to hand out the first task, so it is refused here, as make refuses a negative
// size.
func NewPool(tasks []*Task, concurrency int) *Pool {
	if concurrency < 1 {
		panic(fmt.Sprintf("pool: concurrency must be at least 1, got %d", concurrency))
	}
	return &Pool{Tasks: tasks, concurrency: concurrency}
}

// Run runs every task and returns once all of them have finished and every worker goroutine has
// ended. It never fails: each task's error stays on the task. A task that panics is not an error;
// as any unrecovered panic in a goroutine does, it ends the program.
func (p *Pool) Run() {
	// Unbuffered, as in the post: a send completes only when a free worker receives, so Run hands
	// out a task exactly when a worker is ready for it, and tasks wait in p.Tasks, not here.
	tasks := make(chan *Task)

	// The WaitGroup counts workers, not tasks (the post counts tasks): once Wait returns, no
	// goroutine this Run started is left, and every write to a task's Err happened before it.
	var workers sync.WaitGroup
	workers.Add(p.concurrency)
	for i := 0; i < p.concurrency; i++ {
		go p.work(tasks, &workers)
	}

	// Main blocks here only until some worker receives, and a worker always comes back to receive:
	// nothing a worker does between two receives waits on main.
	for _, task := range p.Tasks {
		tasks <- task
	}
	// Ends each worker's range loop; they are all waiting to receive by now, or soon will be.
	close(tasks)
	workers.Wait()
}

// work runs tasks until Run closes the channel.
func (p *Pool) work(tasks <-chan *Task, workers *sync.WaitGroup) {
	defer workers.Done()
	for task := range tasks {
		// No lock: this goroutine is the only one to touch this task until Run returns.
		task.Err = task.f()
	}
}
