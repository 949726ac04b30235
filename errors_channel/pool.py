"""Stage 2, errors_channel: stage 1 plus an errors queue, and the deadlock it brings.

What it shows: each worker puts a result or an error (odd jobs fail). Main can no longer count
results to know that the work is done: it waits for a WaitGroup that every worker marks done.

What it builds on: stage 1; both queues get Go's capacities (go_primitives.py).

What breaks: when more jobs fail than the errors queue holds, the workers block on it, and main
reads it only once they are done: a deadlock. And main reads one error. fixes.py fixes both.

Sample run (`python -m errors_channel --error-capacity 1`, the post's failing run):

    worker 1 processing job 1
    worker 2 processing job 2
    worker 3 processing job 3
    ...
    fatal error: all threads are asleep - deadlock!
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from errors_channel.go_primitives import WaitGroup, channel, drain, receive_if_ready

# What a worker does with a job: the demo's work sleeps (standing in for I/O); the benchmarks and
# the tests pass their own.
Work = Callable[[int], int]
# Where the trace lines go (`print` in the demo, a list's append in the tests).
Log = Callable[[str], None]

# Go ends `for j := range jobs` with `close(jobs)`. Python 3.11's queue.Queue cannot be closed
# (Queue.shutdown arrives in 3.13), so main puts one of these after the last job for every worker.
NO_MORE_JOBS = None


class ThreadStartFailed(RuntimeError):
    """The OS refused to start a worker thread; the ones already started have been stopped."""


class JobFailed(Exception): ...  # a demo job's error (Go: `fmt.Errorf("error on job %v", j)`)


def double_evens_fail_odds(seconds: float) -> Work:
    """The demo's job: wait `seconds`, then fail an odd job and return an even one times two."""

    def work(job: int) -> int:
        time.sleep(seconds)
        if job % 2 == 1:
            raise JobFailed(f"error on job {job}")
        return job * 2

    return work


def worker(
    worker_id: int,
    wait_group: WaitGroup,
    jobs: queue.Queue[int | None],
    results: queue.Queue[int],
    errors: queue.Queue[Exception],
    work: Work,
    log: Log,
) -> None:
    # `iter(jobs.get, NO_MORE_JOBS)` is Go's `for j := range jobs`: get() blocks while the queue is
    # empty, and the loop ends at the first end marker. Each worker consumes exactly one marker.
    for job in iter(jobs.get, NO_MORE_JOBS):
        log(f"worker {worker_id} processing job {job}")
        try:
            result = work(job)
        except Exception as error:
            # DEADLOCK: blocks once the errors queue is full: main reads it only after wait_group.
            errors.put(error)
            continue
        # DEADLOCK: the same wait as above, once the results queue is full.
        results.put(result)
    wait_group.done()  # never reached by a worker stuck on a put above


def start(
    job_count: int,
    worker_count: int,
    work: Work,
    log: Log,
    wait_group: WaitGroup,
    results: queue.Queue[int],
    errors: queue.Queue[Exception],
) -> list[threading.Thread]:
    """Start the workers and hand them jobs 1..job_count; return what main waits on."""
    if worker_count < 1:
        raise ValueError(f"worker_count must be at least 1, got {worker_count}")
    # Unbounded (to queue.Queue, maxsize=0 means *no limit*, the opposite of Go's unbuffered
    # channel), so main never blocks putting a job, however many there are.
    jobs: queue.Queue[int | None] = queue.Queue()

    workers = [
        threading.Thread(
            target=worker,
            args=(w, wait_group, jobs, results, errors, work, log),
            name=f"worker-{w}",
        )
        for w in range(1, worker_count + 1)
    ]
    for started, thread in enumerate(workers):
        try:
            thread.start()
        except RuntimeError as error:
            # The OS refused a thread (too many threads, or no room for another stack). The
            # workers already running wait for a job that has not been queued: give each an end
            # marker and wait for it to end, so that no thread is left behind, then say so.
            for _ in range(started):
                jobs.put(NO_MORE_JOBS)
            for running in workers[:started]:
                running.join()
            message = f"could start only {started} of {worker_count} worker threads: {error}"
            raise ThreadStartFailed(message) from error

    for job in range(1, job_count + 1):
        jobs.put(job)
    # The "close": the queue is FIFO, so every job is taken before any end marker, and no job is
    # lost. There is one marker per worker, and a worker stops at the first it takes, so every
    # worker ends and no marker is left for a worker that is already gone.
    for _ in workers:
        jobs.put(NO_MORE_JOBS)
    return workers


@dataclass
class Outcome:
    """What main read: every result, and the errors it read (not always all there were)."""

    results: list[int]
    errors: list[Exception]


def run(
    job_count: int,
    worker_count: int,
    work: Work,
    log: Log,
    results_capacity: int = 100,
    error_capacity: int = 100,
) -> Outcome:
    """Run jobs 1..job_count on worker_count threads; return the results and at most one error."""
    # Go's example gives its channels room for 100 items, enough for its 9 jobs.
    results: queue.Queue[int] = channel(results_capacity)
    errors: queue.Queue[Exception] = channel(error_capacity)
    wait_group = WaitGroup()  # each worker marks itself done once, on its way out
    wait_group.add(worker_count)
    workers = start(job_count, worker_count, work, log, wait_group, results, errors)

    # DEADLOCK: main sleeps here until every worker is done, while a worker blocked on a full queue
    # waits for main to read it. Neither can move: main waits on the workers, the workers on main.
    wait_group.wait()
    # Go: `select { case err := <-errors: ... default: }`, take one error if there is one. Every
    # other error is silently dropped: a second bug, and one no test of the happy path would show.
    first_error = receive_if_ready(errors)
    collected = drain(results)  # the post never reads them; the tests and benchmarks do

    # Go's main just returns and takes its goroutines with it. Python would keep the process alive
    # for any thread still running, so wait for every worker to reach its end marker: when run()
    # returns, no thread it started is left.
    for thread in workers:
        thread.join()
    return Outcome(results=collected, errors=first_error)
