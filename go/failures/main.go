// Command failures runs one Go caller on one workload of the failure matrix and appends what
// happened to an events file. It is the Go side of plots/failures_child.py: python -m plots builds
// it, starts it once per workload, and reads the same JSON lines from it as from the Python runs,
// so the Go rows of the matrix are measured exactly as the Python ones are.
//
//	$ failures --caller group --jobs 9 --odd-jobs-fail --events run.jsonl --work-seconds 0.1
//
// The two callers are what a Go programmer writes:
//
//   - robust: the post's pool (package pool, go/robust/pool) and the post's caller, which walks
//     the tasks after Run and gives up at the limit ("Too many errors.");
//   - group: an errgroup-style group (package errgroup) with SetLimit(workers) and the context
//     that the first error cancels; each job takes that context, as Go functions that can be
//     stopped do, and the caller returns Wait's error, as Go callers do.
//
// Each job is the Python harness's job (plots/failures.py): it appends {"start": n}, sleeps
// --work-seconds, then appends {"end": n, "outcome": ...} and fails (odd jobs, with
// --odd-jobs-fail), exits (--exit-job) or returns n * 2. The group's job waits on its context as
// well as the clock, so the cancel cuts it off; cut off, it appends no end line, like an asyncio
// job that is cancelled.
//
// A Python job "exits" by raising SystemExit, which unwinds through the pool; the pool could catch
// it. Go's os.Exit is not that: it ends the process on the spot, like Python's os._exit. What
// unwinds through a Go pool, and what a pool could recover, is a panic, so the exiting job panics.
// Neither caller recovers it (neither does x/sync's errgroup), so it ends the program with status
// 2, cutting off the jobs that are running.
//
// Like the Python child, this program adds nothing to the run: no signal handler (so SIGINT ends
// it as it ends any Go program that does not ask for signals), no recover, no timeout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"workerpool/errgroup"
	"workerpool/internal/demoflags"
	"workerpool/robust/pool"
)

// --- The events file ---

// events appends JSON lines to the file the harness reads. Jobs on several goroutines write to it
// at once, and so does the harness, from another process.
type events struct {
	file *os.File
}

// openEvents opens the file for appending. With O_APPEND each write moves to the end of the file
// and writes in one step, so lines from concurrent writers, in this process or another, never
// interleave, and their order in the file is the order in which they happened.
func openEvents(path string) (*events, error) {
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &events{file: file}, nil
}

// record appends one event as one line, in one write.
func (e *events) record(event any) {
	compact, err := json.Marshal(event)
	if err == nil {
		_, err = e.file.Write(append(pythonSpacing(compact), '\n'))
	}
	if err != nil {
		// Without its events the run measures nothing; the harness sees the exit and the message.
		fmt.Fprintln(os.Stderr, "failures: cannot record an event:", err)
		os.Exit(1)
	}
}

// pythonSpacing spaces compact JSON as Python's json.dumps does (", " and ": "), so that every
// line is byte for byte what a Python run writes: the harness looks for `{"caller": "started"}`
// and `{"start": ` in the file's text while a run goes on, without parsing it.
func pythonSpacing(compact []byte) []byte {
	spaced := make([]byte, 0, len(compact)+len(compact)/4)
	inString, escaped := false, false
	for _, b := range compact {
		spaced = append(spaced, b)
		switch {
		case escaped:
			escaped = false
		case inString && b == '\\':
			escaped = true
		case b == '"':
			inString = !inString
		case !inString && (b == ',' || b == ':'):
			spaced = append(spaced, ' ')
		}
	}
	return spaced
}

// The lines, each with its keys in the order the Python harness writes them.
type (
	callerStarted struct {
		Caller string `json:"caller"`
	}
	jobStarted struct {
		Start int `json:"start"`
	}
	jobEnded struct {
		End     int    `json:"end"`
		Outcome string `json:"outcome"`
	}
	// The caller has taken an error: its last such line is its give-up point. Job is null where
	// the caller does not know which input the error came from.
	callerError struct {
		Job *int `json:"caller_error"`
	}
)

// --- The jobs ---

// jobFailed is what a failing job returns. It knows its job, so the harness can check a caller's
// claim that an error belongs to an input; the callers themselves never look inside it.
type jobFailed struct {
	job int
}

func (e *jobFailed) Error() string {
	return fmt.Sprintf("error on job %d", e.job)
}

// jobs is what every job of one run does.
type jobs struct {
	events      *events
	work        time.Duration
	oddJobsFail bool
	// The job that panics, Go's way for a job to exit (see the package comment); 0 for none.
	exitJob int
}

// run is one job, as the pool's tasks call it.
func (j *jobs) run(number int) (int, error) {
	j.events.record(jobStarted{number})
	time.Sleep(j.work)
	return j.endJob(number)
}

// runWithContext is the same job for a caller that can cancel it: its wait also ends when ctx is
// cancelled, and it returns ctx's error without ending (no end line: it was cut off mid-run).
func (j *jobs) runWithContext(ctx context.Context, number int) (int, error) {
	j.events.record(jobStarted{number})
	timer := time.NewTimer(j.work)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return j.endJob(number)
}

// endJob is how a job ends. Its name is what the traceback check looks for (describe, below).
func (j *jobs) endJob(number int) (int, error) {
	if number == j.exitJob {
		j.events.record(jobEnded{number, "panic"})
		panic(fmt.Sprintf("job %d exits", number))
	}
	if j.oddJobsFail && number%2 == 1 {
		j.events.record(jobEnded{number, "failed"})
		return 0, &jobFailed{number}
	}
	j.events.record(jobEnded{number, "ok"})
	return number * 2, nil
}

// --- What a caller gets, and tells the run ---

// noInput stands for "the caller does not know which input this was" (inputs are 1..n).
const noInput = 0

type outcome struct {
	given int
	value int
	err   error
}

// run is what a caller works with, as plots.failures.Run is for the Python callers.
type run struct {
	jobs    *jobs
	inputs  []int
	workers int
	// The caller stops reading at this many errors; 0: it takes every error it can get.
	giveUpAfter int
	results     []outcome
	errors      []outcome
}

func (r *run) result(value int, given int) {
	r.results = append(r.results, outcome{given: given, value: value})
}

// error takes one error; true when the caller has all it wants and stops reading.
func (r *run) error(err error, given int) bool {
	r.errors = append(r.errors, outcome{given: given, err: err})
	r.jobs.events.record(callerError{optional(given)})
	return r.giveUpAfter > 0 && len(r.errors) >= r.giveUpAfter
}

// --- The callers ---

// callRobust is the post's: a task per job on the pool, Run, then walk the tasks in order,
// giving up at the limit. Every task has run by the time the walk starts.
func callRobust(r *run) {
	// Each task writes only its own slot, and the walk reads them after Run: no lock needed.
	values := make([]int, len(r.inputs))
	tasks := make([]*pool.Task, len(r.inputs))
	for i, n := range r.inputs {
		// A copy per task: before Go 1.22 the loop variables are shared by every iteration.
		i, n := i, n
		tasks[i] = pool.NewTask(func() error {
			value, err := r.jobs.run(n)
			values[i] = value
			return err
		})
	}
	p := pool.NewPool(tasks, r.workers)
	p.Run()
	for i, task := range p.Tasks {
		if task.Err == nil {
			r.result(values[i], r.inputs[i])
		} else if r.error(task.Err, r.inputs[i]) {
			break // the post's "Too many errors."
		}
	}
}

// callGroup is errgroup's: at most workers jobs at once, each watching the context that the first
// error cancels; Wait returns that first error, and the caller returns it, as Go callers do, so
// the results gathered so far go with it.
func callGroup(r *run) {
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(r.workers)
	values := make([]int, len(r.inputs))
	for i, n := range r.inputs {
		i, n := i, n
		// Blocks while workers jobs run. It starts the job even after an error has cancelled
		// ctx: the group stops nothing itself, the job sees the cancel.
		g.Go(func() error {
			value, err := r.jobs.runWithContext(ctx, n)
			values[i] = value
			return err
		})
	}
	if err := g.Wait(); err != nil {
		// One error, and nothing says which input it came from.
		r.error(err, noInput)
		return
	}
	for i, value := range values {
		r.result(value, r.inputs[i])
	}
}

var callers = map[string]func(*run){
	"robust": callRobust,
	"group":  callGroup,
}

// --- The report, once the caller has returned ---

type errorReport struct {
	Type string `json:"type"`
	// The job the error came from, and the input the caller tied it to (null: none).
	Job   *int `json:"job"`
	Given *int `json:"given"`
	// Whether the error shows where it was made; null: it carries no stack at all.
	Traceback *bool `json:"traceback"`
}

type callerReport struct {
	Caller          string        `json:"caller"`
	Raised          *string       `json:"raised"`
	RaisedException bool          `json:"raised_exception"`
	Results         [][2]*int     `json:"results"`
	Errors          []errorReport `json:"errors"`
	// The goroutines still there now that the caller is done with the pool (this one aside). A Go
	// program has no threads of its own to list, and these callers start no processes.
	Goroutines []string `json:"goroutines"`
}

// describe is one error as the caller holds it. Python's harness looks for the frame of end_job in
// the error's traceback. A Go error value has no traceback unless its type records one (none in
// the standard library does); the types that do print it with %+v, by the convention of
// github.com/pkg/errors. So the check reads %+v: no file:line in it means no stack at all, and
// otherwise the question is whether endJob is named.
func describe(held outcome) errorReport {
	report := errorReport{Type: fmt.Sprintf("%T", held.err), Given: optional(held.given)}
	var failed *jobFailed
	if errors.As(held.err, &failed) {
		report.Job = &failed.job
	}
	text := fmt.Sprintf("%+v", held.err)
	if strings.Contains(text, ".go:") {
		named := strings.Contains(text, "endJob")
		report.Traceback = &named
	}
	return report
}

// goroutinesLeft lists every goroutine but this one by the first line of its stack (for example
// "goroutine 7 [chan send]:"). Run and Wait return once each goroutine has said it is done, which
// can be a moment before it has ended, so a goroutine gets 100 ms to finish ending before it is
// counted as left running.
func goroutinesLeft() []string {
	deadline := time.Now().Add(100 * time.Millisecond)
	for {
		buffer := make([]byte, 1<<20)
		// This goroutine's stack comes first, then every other one's, a blank line between each.
		stacks := strings.Split(string(buffer[:runtime.Stack(buffer, true)]), "\n\n")[1:]
		if len(stacks) == 0 || time.Now().After(deadline) {
			left := make([]string, 0, len(stacks))
			for _, stack := range stacks {
				left = append(left, strings.SplitN(stack, "\n", 2)[0])
			}
			return left
		}
		time.Sleep(time.Millisecond)
	}
}

func optional(input int) *int {
	if input == noInput {
		return nil
	}
	return &input
}

func report(r *run) callerReport {
	results := make([][2]*int, 0, len(r.results))
	for _, got := range r.results {
		value := got.value
		results = append(results, [2]*int{optional(got.given), &value})
	}
	described := make([]errorReport, 0, len(r.errors))
	for _, held := range r.errors {
		described = append(described, describe(held))
	}
	return callerReport{
		Caller:     "returned",
		Results:    results,
		Errors:     described,
		Goroutines: goroutinesLeft(),
	}
}

func main() {
	command := demoflags.New("Run one Go caller of the failure matrix on one workload and append " +
		"what happens (job starts and ends, the errors and results the caller gets) to --events " +
		"as JSON lines; python -m plots runs it.")
	caller := command.String("caller", []string{"robust", "group"},
		"robust: the post's pool and caller; group: errgroup-style, the first error cancels")
	jobCount := command.Jobs("run jobs 1..N")
	workers := command.Workers("jobs run at once")
	oddJobsFail := command.Bool("odd-jobs-fail", "odd jobs return an error")
	exitJob := command.Int("exit-job", 0, 0, 1_000_000, "this job panics, Go's exit (0: none)")
	giveUpAfter := command.Int("give-up-after", 0, 0, 1_000_000,
		"the caller stops reading at this many errors (0: it takes them all)")
	path := command.Path("events", "the file to append JSON lines to")
	work := command.WorkSeconds()
	command.Parse()

	out, err := openEvents(*path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "failures: error: %v\n", err)
		os.Exit(2)
	}
	r := &run{
		jobs:        &jobs{events: out, work: *work, oddJobsFail: *oddJobsFail, exitJob: *exitJob},
		workers:     *workers,
		giveUpAfter: *giveUpAfter,
	}
	for n := 1; n <= *jobCount; n++ {
		r.inputs = append(r.inputs, n)
	}
	out.record(callerStarted{"started"})
	callers[*caller](r)
	out.record(report(r))
}
