// Command naive is stage 1 in Go: the Go-by-Example worker pool that naive/pool.py rebuilds in
// Python threads.
//
// Workers are goroutines that take jobs from one channel and send job * 2 on another. Main sends
// every job, closes the jobs channel to say no more will come, and receives exactly one result per
// job. Nothing here can fail, so there is nowhere for an error to go: that is stage 2.
//
//	$ go run ./go/naive
//	worker 3 processing job 1
//	worker 1 processing job 2
//	...
//	results: 4 2 6 8 12 10 14 16 18
package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"workerpool/internal/demoflags"
)

// worker takes jobs until the channel is closed and empty. It only receives from jobs and only
// sends on results; the arrow types make the compiler hold it to that.
func worker(id int, work time.Duration, jobs <-chan int, results chan<- int) {
	// range over a channel ends once main has closed it and every job sent before the close has
	// been taken, so no job is lost and every worker returns.
	for job := range jobs {
		// One Println is one write to stdout, so lines from different goroutines never mix.
		fmt.Println("worker", id, "processing job", job)
		time.Sleep(work)
		// Never blocks: results has room for every job (see main).
		results <- job * 2
	}
}

func main() {
	command := demoflags.New("Stage 1 in Go: worker goroutines take jobs from a channel and " +
		"send job * 2 on a results channel. There is no place for errors yet.")
	workers := command.Workers("worker goroutines")
	jobCount := command.Jobs("process jobs 1..N")
	work := command.WorkSeconds()
	command.Parse()

	// Go by Example gives both channels room for 100, enough for its 9 jobs; room for every job
	// keeps that true for any --jobs: main never waits to send a job, a worker never waits to
	// send a result.
	jobs := make(chan int, *jobCount)
	results := make(chan int, *jobCount)

	for w := 1; w <= *workers; w++ {
		go worker(w, *work, jobs, results)
	}
	for job := 1; job <= *jobCount; job++ {
		jobs <- job
	}
	// The workers' range loops end on this, once the jobs are all taken. Python 3.11's queue has
	// no close; naive/pool.py puts an end marker per worker instead.
	close(jobs)

	// Every job sends exactly one result, so main wakes exactly jobCount times and never waits
	// for a result that cannot come. When main returns, the program ends and takes any goroutine
	// still running with it; here every worker has already left its loop or is about to.
	collected := make([]string, 0, *jobCount)
	for received := 0; received < *jobCount; received++ {
		collected = append(collected, strconv.Itoa(<-results))
	}
	if len(collected) == 0 {
		collected = append(collected, "none")
	}
	fmt.Println("results:", strings.Join(collected, " "))
}
