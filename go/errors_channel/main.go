// Command errors_channel is stage 2 in Go: the naive pool plus an errors channel and a
// sync.WaitGroup, and the deadlock they bring. errors_channel/pool.py is the same program in
// Python threads, with the same flags.
//
// Odd jobs fail. A job now ends on one of two channels, so main cannot count results to know the
// work is done; it waits for a WaitGroup that each worker marks done on its way out, and then
// looks for one error. Once more jobs fail than the errors channel holds, a worker blocks on a
// send that only main could unblock, main waits for that worker, and the runtime ends the program:
//
//	$ go run ./go/errors_channel --error-capacity 1
//	worker 3 processing job 1
//	...
//	worker 1 processing job 7
//	fatal error: all goroutines are asleep - deadlock!
//
//	goroutine 1 [semacquire]:
//	...
//
// followed by each worker's goroutine, [chan send] at the line marked DEADLOCK below; exit status 2.
// Python has no such check: errors_channel/watchdog.py plays the runtime's part there.
package main

import (
	"fmt"
	"sync"
	"time"

	"workerpool/internal/demoflags"
)

func worker(id int, wg *sync.WaitGroup, work time.Duration,
	jobs <-chan int, results chan<- int, errs chan<- error) {
	// Done runs only when the function returns, that is, after every send below went through: a
	// worker stuck on a send is never done.
	defer wg.Done()
	for job := range jobs {
		fmt.Println("worker", id, "processing job", job)
		time.Sleep(work)
		if job%2 == 0 {
			// DEADLOCK: the same wait as below, once results is full.
			results <- job * 2
		} else {
			// DEADLOCK: once errs is full this send blocks until someone receives an error. Only
			// main does, and main first waits for every worker (wg.Wait).
			errs <- fmt.Errorf("error on job %d", job)
		}
	}
}

func main() {
	command := demoflags.New("Stage 2 in Go: workers send job * 2 on a results channel and odd " +
		"jobs' errors on an errors channel; main waits for every worker, then reads one error. " +
		"When more jobs fail than the errors channel holds, it deadlocks and the runtime says so.")
	workers := command.Workers("worker goroutines")
	jobCount := command.Jobs("process jobs 1..N; odd ones fail")
	work := command.WorkSeconds()
	resultsCapacity := command.Capacity("results-capacity",
		"results the channel holds; 0 is unbuffered")
	errorCapacity := command.Capacity("error-capacity",
		"errors the channel holds; 0 is unbuffered (1 reproduces the post's deadlock)")
	command.Parse()

	// Room for every job: main never waits to send one, so it always reaches wg.Wait, as with
	// the post's 100 slots for 9 jobs (and as with the Python stage's unbounded jobs queue).
	jobs := make(chan int, *jobCount)
	results := make(chan int, *resultsCapacity)
	errs := make(chan error, *errorCapacity)

	var wg sync.WaitGroup
	// Counted before any worker starts, so a worker that finishes at once cannot bring the count
	// to zero while others are still to come.
	wg.Add(*workers)
	for w := 1; w <= *workers; w++ {
		go worker(w, &wg, *work, jobs, results, errs)
	}
	for job := 1; job <= *jobCount; job++ {
		jobs <- job
	}
	close(jobs)

	// DEADLOCK: main sleeps here until every worker is done, while a worker blocked on a full
	// channel waits for main to receive from it. When no goroutine can run, the runtime notices,
	// prints every goroutine's stack and exits with status 2.
	wg.Wait()

	// Take one error if there is one, without waiting. The other errors are dropped silently:
	// the post's second bug.
	select {
	case err := <-errs:
		fmt.Println("finished with error:", err)
	default:
	}
}
