"""Stage 2, errors_channel: the naive pool plus an errors queue, and the deadlock it brings.

What it shows: real work can fail, so each worker now puts either a result or an error. Because a
job may end on either queue, main can no longer count results to know when all work is done; a
WaitGroup that every worker marks done on its way out tells it instead. Odd jobs fail.

What it builds on and changes (`diff naive/pool.py errors_channel/pool.py`): an errors queue, a
WaitGroup, results and errors queues with Go's capacities, and main waiting for the WaitGroup
before it reads anything.

What breaks: main reads nothing until every worker is done, and a worker is done only after all
its puts went through. So once more jobs fail than the errors queue holds (or more succeed than the
results queue holds), a worker blocks on a full queue that nobody will ever read, main waits for
that worker forever, and the other workers soon block the same way: a deadlock. Go's runtime
notices and stops the program; Python hangs silently. `errors_channel.watchdog` plays Go's part,
and `errors_channel.fixes` keeps two fixes beside the bug.

Sample run (`python -m errors_channel --error-capacity 1`, the post's failing run):

    worker 1 processing job 1
    worker 3 processing job 2
    worker 2 processing job 3
    worker 3 processing job 4
    worker 1 processing job 5
    worker 3 processing job 6
    worker 3 processing job 7
    fatal error: all threads are asleep - deadlock!

    thread MainThread [waitgroup wait: wait_group]:
    ...
    thread worker-1 [queue put: errors]:
    ...
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

# What a worker does with a job: return a result, or raise to fail.
Work = Callable[[int], int]
Log = Callable[[str], None]
Item = TypeVar("Item")

# Go ends `for j := range jobs` with `close(jobs)`; 3.11 queues cannot be closed (see stage 1).
NO_MORE_JOBS = None


class JobFailed(Exception):
    """The error a demo job fails with (Go: `fmt.Errorf("error on job %v", j)`)."""


def double_evens_fail_odds(seconds: float) -> Work:
    """The demo's job: wait `seconds`, then return job * 2 for an even job and fail an odd one."""

    def work(job: int) -> int:
        time.sleep(seconds)
        if job % 2 == 0:
            return job * 2
        raise JobFailed(f"error on job {job}")

    return work


class WaitGroup:
    """Go's sync.WaitGroup: wait() blocks until done() has been called once per add()ed count."""

    def __init__(self) -> None:
        self._count = 0
        # Guards _count; wait() sleeps on it until a done() brings the count to zero.
        self._all_done = threading.Condition()

    def add(self, count: int) -> None:
        with self._all_done:
            self._count += count

    def done(self) -> None:
        with self._all_done:
            if self._count == 0:
                raise ValueError("WaitGroup.done() called more often than add() counted")
            self._count -= 1
            if self._count == 0:
                self._all_done.notify_all()

    def wait(self) -> None:
        with self._all_done:
            while self._count > 0:
                self._all_done.wait()


class UnbufferedQueue(queue.Queue[Item]):
    """Go's unbuffered channel: put() returns only once a get() has taken that very item.

    queue.Queue(maxsize=0) cannot stand in for it: to queue.Queue, 0 means *unbounded*.
    """

    def __init__(self) -> None:
        # One slot, so a second sender waits in the ordinary way (not_full) for the first.
        super().__init__(maxsize=1)
        self._items_put = 0
        self._items_taken = 0
        # Shares the queue's mutex; a sender sleeps on it until a receiver has taken its item.
        self._taken = threading.Condition(self.mutex)

    def _put(self, item: Item) -> None:  # called by queue.Queue with the mutex held
        super()._put(item)
        self._items_put += 1

    def _get(self) -> Item:  # called by queue.Queue with the mutex held
        self._items_taken += 1
        self._taken.notify_all()
        return super()._get()

    def put(self, item: Item, block: bool = True, timeout: float | None = None) -> None:
        if not block or timeout is not None:
            raise NotImplementedError("an unbuffered queue here only supports blocking put()")
        with self._taken:
            while self._qsize() >= self.maxsize:
                self.not_full.wait()
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()
            # Items leave in the order they came, so ours is taken once the count reaches it.
            my_turn = self._items_put
            while self._items_taken < my_turn:
                self._taken.wait()


def channel(capacity: int) -> queue.Queue[Item]:
    """Go's make(chan T, capacity): holds `capacity` items; capacity 0 is unbuffered."""
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0, got {capacity}")
    if capacity == 0:
        return UnbufferedQueue()
    return queue.Queue(maxsize=capacity)


def worker(
    worker_id: int,
    wait_group: WaitGroup,
    jobs: queue.Queue[int | None],
    results: queue.Queue[int],
    errors: queue.Queue[Exception],
    work: Work,
    log: Log,
) -> None:
    for job in iter(jobs.get, NO_MORE_JOBS):
        log(f"worker {worker_id} processing job {job}")
        try:
            result = work(job)
        except Exception as error:
            # DEADLOCK: once the errors queue is full, this put blocks until someone reads an
            # error. Only main reads errors, and main waits for every worker (wait_group) first.
            errors.put(error)
        else:
            # DEADLOCK: the same wait as above, once the results queue is full.
            results.put(result)
    # Reached only when every put above went through: a worker stuck on a put is never done.
    wait_group.done()


def start(
    job_count: int,
    worker_count: int,
    work: Work,
    log: Log,
    results: queue.Queue[int],
    errors: queue.Queue[Exception],
) -> tuple[WaitGroup, list[threading.Thread]]:
    """Start the workers and hand them jobs 1..job_count; return what main waits on."""
    if worker_count < 1:
        raise ValueError(f"worker_count must be at least 1, got {worker_count}")
    # Unbounded, as in stage 1: main never blocks putting jobs, so it always reaches its wait.
    jobs: queue.Queue[int | None] = queue.Queue()
    wait_group = WaitGroup()
    wait_group.add(worker_count)

    workers = [
        threading.Thread(
            target=worker,
            args=(w, wait_group, jobs, results, errors, work, log),
            name=f"worker-{w}",
        )
        for w in range(1, worker_count + 1)
    ]
    for thread in workers:
        thread.start()

    for job in range(1, job_count + 1):
        jobs.put(job)
    # The "close": every job is taken before any end marker, and each worker takes exactly one.
    for _ in workers:
        jobs.put(NO_MORE_JOBS)
    return wait_group, workers


def drain(items: queue.Queue[Item]) -> list[Item]:
    """Everything waiting in `items` right now (call it only once no one puts any more)."""
    drained = []
    while True:
        try:
            drained.append(items.get_nowait())
        except queue.Empty:
            return drained


@dataclass
class Outcome:
    """What main saw: the results it read, and the errors it read (not always all there were)."""

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
    """The post's program. Deadlocks when failures > error_capacity or successes > results_capacity.

    Returns every result, but at most one error.
    """
    results: queue.Queue[int] = channel(results_capacity)
    errors: queue.Queue[Exception] = channel(error_capacity)
    wait_group, workers = start(job_count, worker_count, work, log, results, errors)

    # DEADLOCK: main sleeps here until every worker is done, while a worker blocked on a full queue
    # waits for main to read it. Neither can move: main waits on the workers, the workers on main.
    wait_group.wait()

    # Go: `select { case err := <-errors: ... default: }`, take one error if there is one. Every
    # other error is silently dropped: a second bug, and one no test of the happy path would show.
    try:
        first_error = [errors.get_nowait()]
    except queue.Empty:
        first_error = []

    # The post never reads its results; we do, for the tests and benchmarks.
    collected = drain(results)
    for thread in workers:
        thread.join()
    return Outcome(results=collected, errors=first_error)
