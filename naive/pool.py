"""Stage 1, naive: the Go-by-Example worker pool, in Python threads.

What it shows: a few worker threads take jobs from one queue and put results on another. Main
hands out the jobs, then one end marker per worker, and reads exactly one result per job.

What it builds on: nothing; the post starts here.

What breaks: nothing while the work cannot fail. But an error has nowhere to go: a job that raises
ends its worker, its result never comes, and main waits for it forever.

Sample run (`python -m naive`; which worker takes which job varies from run to run):

    worker 1 processing job 1
    worker 2 processing job 2
    worker 3 processing job 3
    ...
    worker 1 processing job 9
    results: 2 6 4 12 10 8 16 18 14
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

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


def double_after(seconds: float) -> Work:
    """The demo's job: wait `seconds` (a stand-in for real work), then return the job times two."""

    def work(job: int) -> int:
        time.sleep(seconds)
        return job * 2

    return work


def worker(
    worker_id: int,
    jobs: queue.Queue[int | None],
    results: queue.Queue[int],
    work: Work,
    log: Log,
) -> None:
    # `iter(jobs.get, NO_MORE_JOBS)` is Go's `for j := range jobs`: get() blocks while the queue is
    # empty, and the loop ends at the first end marker. Each worker consumes exactly one marker.
    for job in iter(jobs.get, NO_MORE_JOBS):
        log(f"worker {worker_id} processing job {job}")
        result = work(job)
        # Unbounded queue: this put never blocks, whatever main is doing.
        results.put(result)


def start(
    job_count: int,
    worker_count: int,
    work: Work,
    log: Log,
    results: queue.Queue[int],
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
            args=(w, jobs, results, work, log),
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


def run(
    job_count: int,
    worker_count: int,
    work: Work,
    log: Log,
) -> list[int]:
    """Run jobs 1..job_count on worker_count threads; return the results in arrival order."""
    # Go's example gives its channels room for 100 items, enough for its 9 jobs.
    # Unbounded here, so any job count works: a worker never blocks putting a result.
    results: queue.Queue[int] = queue.Queue()
    workers = start(job_count, worker_count, work, log, results)

    # Each job puts exactly one result, so main wakes job_count times and never waits in vain.
    collected = [results.get() for _ in range(job_count)]

    # Go's main just returns and takes its goroutines with it. Python would keep the process alive
    # for any thread still running, so wait for every worker to reach its end marker: when run()
    # returns, no thread it started is left.
    for thread in workers:
        thread.join()
    return collected
