"""Stage 1, naive: the Go-by-Example worker pool, in Python threads.

What it shows: a fixed number of workers take jobs from one queue and put results on another. Main
fills the jobs queue, says that no more jobs will come, and collects exactly one result per job.

What it builds on: nothing; this is where the post starts.

What breaks: nothing, as long as the work cannot fail. There is no place for an error to go: a job
that raises ends its worker thread, its result never arrives, and main waits for it forever. Stage 2
(`errors_channel`) adds a place for errors, and with it a deadlock.

Sample run (`python -m naive`; which worker gets which job varies from run to run):

    worker 1 processing job 1
    worker 2 processing job 2
    worker 3 processing job 3
    worker 3 processing job 5
    worker 2 processing job 6
    worker 1 processing job 4
    worker 2 processing job 7
    worker 1 processing job 8
    worker 3 processing job 9
    results: 2 6 4 12 8 10 14 16 18
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

# What a worker does with a job. The demo's work sleeps (standing in for I/O) and doubles the job;
# the benchmarks pass their own.
Work = Callable[[int], int]
# Where the trace lines go (`print` in the demo, a list's append in the tests).
Log = Callable[[str], None]

# Go ends `for j := range jobs` with `close(jobs)`. Python 3.11's queue.Queue cannot be closed
# (Queue.shutdown arrives in 3.13), so main puts one of these after the last job for every worker.
NO_MORE_JOBS = None


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
        # Unbounded queue: this put never blocks, whatever main is doing.
        results.put(work(job))


def run(job_count: int, worker_count: int, work: Work, log: Log) -> list[int]:
    """Run jobs 1..job_count on worker_count threads; return the results in arrival order."""
    if worker_count < 1:
        raise ValueError(f"worker_count must be at least 1, got {worker_count}")
    # Go's example gives both channels capacity 100, enough for its 9 jobs. Here both are unbounded
    # (maxsize=0 means *no limit* to queue.Queue, the opposite of Go's unbuffered channel), so any
    # job count works: main never blocks putting a job, and a worker never blocks putting a result.
    jobs: queue.Queue[int | None] = queue.Queue()
    results: queue.Queue[int] = queue.Queue()

    workers = [
        threading.Thread(target=worker, args=(w, jobs, results, work, log), name=f"worker-{w}")
        for w in range(1, worker_count + 1)
    ]
    for thread in workers:
        thread.start()

    for job in range(1, job_count + 1):
        jobs.put(job)
    # The "close": the queue is FIFO, so every job is taken before any end marker, and no job is
    # lost. There is one marker per worker, and a worker stops at the first it takes, so every
    # worker ends and no marker is left for a worker that is already gone.
    for _ in workers:
        jobs.put(NO_MORE_JOBS)

    # One result per job. get() blocks until a worker puts one; each job puts exactly one result,
    # so main wakes exactly job_count times and never waits for a result that cannot come.
    collected = [results.get() for _ in range(job_count)]

    # Go's main just returns and takes its goroutines with it. Python would keep the process alive
    # for any thread still running, so wait for every worker to reach its end marker: when run()
    # returns, no thread it started is left.
    for thread in workers:
        thread.join()
    return collected
