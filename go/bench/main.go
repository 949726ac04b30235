// Command bench runs one benchmark workload on the Go pool (package pool) and prints, as one JSON
// object, every job's result and the seconds the run took. python -m plots runs it as its Go
// contender, checks the results like every other contender's, and records the seconds.
//
// The workloads are the Python benchmarks' (plots/implementations.py): "no-op" returns job * 2 at
// once, to measure what the pool costs per task; "sleep-1ms" sleeps 1 ms first, as an I/O-bound
// task would wait.
//
//	$ go run ./go/bench --workload no-op --jobs 5 --workers 2
//	{"go":"go1.19.8","workload":"no-op","jobs":5,"workers":2,"seconds":0.000012,"results":[2,4,6,8,10]}
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"time"

	"workerpool/internal/demoflags"
	"workerpool/robust/pool"
)

// report is what the Python harness reads.
type report struct {
	Go       string  `json:"go"`
	Workload string  `json:"workload"`
	Jobs     int     `json:"jobs"`
	Workers  int     `json:"workers"`
	Seconds  float64 `json:"seconds"`
	Results  []int   `json:"results"`
}

// run builds one task per job and runs them on the pool, as plots' run_robust does in Python:
// the timed part is the same (making the tasks, the run, collecting the results).
func run(workload string, jobCount, workers int) ([]int, time.Duration) {
	start := time.Now()
	results := make([]int, jobCount)
	tasks := make([]*pool.Task, jobCount)
	for i := range tasks {
		// A copy per task (before Go 1.22 the loop variable is shared by every iteration).
		i, job := i, i+1
		if workload == "sleep-1ms" {
			tasks[i] = pool.NewTask(func() error {
				time.Sleep(time.Millisecond)
				results[i] = job * 2
				return nil
			})
		} else {
			tasks[i] = pool.NewTask(func() error {
				results[i] = job * 2
				return nil
			})
		}
	}
	p := pool.NewPool(tasks, workers)
	p.Run()
	// Each task wrote only its own slot, and Run returned after every write, so reading needs no
	// lock. No task here fails, but the walk is part of using the pool, so it is timed too.
	for _, task := range p.Tasks {
		if task.Err != nil {
			fmt.Fprintln(os.Stderr, "bench: a task failed:", task.Err)
			os.Exit(1)
		}
	}
	return results, time.Since(start)
}

func main() {
	command := demoflags.New("Run one benchmark workload on the Go pool and print every result " +
		"(job * 2 for jobs 1..N) and the seconds the run took, as JSON. The timed run follows one " +
		"untimed run of the same size.")
	workload := command.String("workload", []string{"no-op", "sleep-1ms"}, "what each task does")
	jobCount := command.Jobs("run jobs 1..N")
	workers := command.Workers("tasks run at once")
	command.Parse()

	// Python times its repeats in one long-lived interpreter; this process is new for every repeat.
	// One untimed run first lets the runtime grow its heap and its goroutine stacks, so the timed
	// run measures the pool rather than the process's first allocations.
	run(*workload, *jobCount, *workers)
	results, elapsed := run(*workload, *jobCount, *workers)

	out := json.NewEncoder(os.Stdout)
	err := out.Encode(report{
		Go:       runtime.Version(),
		Workload: *workload,
		Jobs:     *jobCount,
		Workers:  *workers,
		Seconds:  elapsed.Seconds(),
		Results:  results,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
