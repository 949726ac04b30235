"""Stage 2 with coroutines: the same errors queue and the same deadlock, on one asyncio event loop.

What it shows: the post's bug is not Go's, and not a thread's either. Turn each worker into a
coroutine, each queue into an `asyncio.Queue` and the WaitGroup into `asyncio.gather` of the
workers, and the program deadlocks at the same place, after the same seven jobs.

How it maps (`diff errors_channel/pool.py errors_channel/asyncio_pool.py`):
- a worker thread (Go: a goroutine) is an asyncio Task running `worker()`; they all take turns on
  one thread, and a coroutine lets the others run only where it awaits;
- `make(chan T, n)` is `asyncio.Queue(maxsize=n)`: `await put()` suspends while n items wait.
  As with `queue.Queue`, `asyncio.Queue(maxsize=0)` is *unbounded*, so an unbuffered channel
  gets its own class below;
- `wg.Wait()` is `await asyncio.gather(*workers)`: a worker is done when its coroutine returns;
- `time.Sleep` is `await asyncio.sleep`: a blocking `time.sleep` would stop every worker at once.

What breaks: the same thing as with threads. Main reads nothing until every worker has returned,
and a worker returns only after all its puts went through. Once more jobs fail than the errors
queue holds, a worker suspends on `await errors.put(...)`, main awaits that worker in `gather`,
and the other workers soon suspend the same way. No task is ready to run, no timer is pending, no
I/O is awaited: the event loop calls `select()` with no timeout (epoll_wait on Linux) and waits
for something that will never come. Python does not notice (`PYTHONASYNCIODEBUG=1` prints nothing
either); the demo's watchdog (`deadlock_watch/`) does, as Go's runtime would: it sees the
loop idle in `select()` with nothing registered that could wake it, and reports every task with
the await it is stuck on. Unlike the threaded stage, Ctrl-C does end the raw hang
(`--no-watchdog`), with a traceback: `asyncio.run` cancels the main task on SIGINT, and `gather`
cancels the workers.

The fixes, kept beside the bug in `errors_channel/asyncio_fixes.py`, are the threaded ones with
tasks for threads.

Sample run (`python -m errors_channel --asyncio --error-capacity 1`, the post's failing run):

    worker 1 processing job 1
    worker 2 processing job 2
    worker 3 processing job 3
    worker 1 processing job 4
    worker 2 processing job 5
    worker 1 processing job 6
    worker 1 processing job 7

and then the watchdog's `fatal error: all tasks are asleep - deadlock!` (or, with `--no-watchdog`,
nothing, with no CPU used, until Ctrl-C). The order is the same on every run: the loop resumes
tasks in the order they became ready, where threads race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

# The threaded stage's job error and outcome record: the demo and tests treat both stages alike.
from errors_channel.pool import JobFailed, Outcome

# What a worker does with a job: return a result, or raise to fail. Awaited, so that it can wait
# (for I/O, a timer) without holding up the other workers.
Work = Callable[[int], Awaitable[int]]
Log = Callable[[str], None]
Item = TypeVar("Item")

# Go ends `for j := range jobs` with `close(jobs)`; asyncio queues cannot be closed before 3.13.
NO_MORE_JOBS = None


def double_evens_fail_odds(seconds: float) -> Work:
    """The demo's job: wait `seconds`, then return job * 2 for an even job and fail an odd one."""

    async def work(job: int) -> int:
        await asyncio.sleep(seconds)
        if job % 2 == 0:
            return job * 2
        raise JobFailed(f"error on job {job}")

    return work


class UnbufferedQueue(asyncio.Queue[Item]):
    """Go's unbuffered channel: `await put()` returns only once a get() has taken that very item.

    asyncio.Queue(maxsize=0) cannot stand in for it: to asyncio.Queue, 0 means *unbounded*.
    Only put() waits for the receiver; put_nowait() is not a channel operation and is not used.
    """

    def __init__(self) -> None:
        # One slot, so a second sender waits in the ordinary way (the queue's putters) for the first
        # to be taken.
        super().__init__(maxsize=1)
        # The sender of the item in the slot awaits this; get() resolves it. Never more than one,
        # since the slot holds one item.
        self._taken: asyncio.Future[None] | None = None

    async def put(self, item: Item) -> None:
        await super().put(item)
        # super().put() returned without yielding to the loop, so no get() has run since our item
        # went in: the slot holds our item, and the receipt we leave is ours.
        taken = self._taken = asyncio.get_running_loop().create_future()
        await taken

    def _get(self) -> Item:  # called by asyncio.Queue.get() and get_nowait()
        if self._taken is not None:
            # Done already only if its sender was cancelled while it waited.
            if not self._taken.done():
                self._taken.set_result(None)
            self._taken = None
        return super()._get()


def channel(capacity: int) -> asyncio.Queue[Item]:
    """Go's make(chan T, capacity): holds `capacity` items; capacity 0 is unbuffered."""
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0, got {capacity}")
    if capacity == 0:
        return UnbufferedQueue()
    return asyncio.Queue(maxsize=capacity)


async def worker(
    worker_id: int,
    jobs: asyncio.Queue[int | None],
    results: asyncio.Queue[int],
    errors: asyncio.Queue[Exception],
    work: Work,
    log: Log,
) -> None:
    while (job := await jobs.get()) is not None:
        log(f"worker {worker_id} processing job {job}")
        try:
            result = await work(job)
        except Exception as error:
            # DEADLOCK: once the errors queue is full, this await suspends the worker until someone
            # reads an error. Only main reads errors, and main awaits every worker (gather) first.
            await errors.put(error)
        else:
            # DEADLOCK: the same wait as above, once the results queue is full.
            await results.put(result)
    # Reached only when every put above went through: a worker suspended on a put never returns,
    # and gather returns only once every worker has.


def start(
    job_count: int,
    worker_count: int,
    work: Work,
    log: Log,
    results: asyncio.Queue[int],
    errors: asyncio.Queue[Exception],
) -> list[asyncio.Task[None]]:
    """Start the workers and hand them jobs 1..job_count; return the tasks main waits on.

    Call it from a coroutine: tasks need a running event loop.
    """
    if worker_count < 1:
        raise ValueError(f"worker_count must be at least 1, got {worker_count}")
    # Unbounded, as in the threaded stage: put_nowait() never finds it full.
    jobs: asyncio.Queue[int | None] = asyncio.Queue()

    # Created tasks run only once the caller awaits; by then every job and marker is queued.
    workers = [
        asyncio.create_task(worker(w, jobs, results, errors, work, log), name=f"worker-{w}")
        for w in range(1, worker_count + 1)
    ]
    for job in range(1, job_count + 1):
        jobs.put_nowait(job)
    # The "close": every job is taken before any end marker, and each worker takes exactly one.
    for _ in workers:
        jobs.put_nowait(NO_MORE_JOBS)
    return workers


def drain(items: asyncio.Queue[Item]) -> list[Item]:
    """Everything waiting in `items` right now (call it only once no one puts any more)."""
    drained = []
    while True:
        try:
            drained.append(items.get_nowait())
        except asyncio.QueueEmpty:
            return drained


async def run(
    job_count: int,
    worker_count: int,
    work: Work,
    log: Log,
    results_capacity: int = 100,
    error_capacity: int = 100,
) -> Outcome:
    """The post's program. Deadlocks when failures > error_capacity or successes > results_capacity.

    Returns every result, but at most one error. Run it with asyncio.run().
    """
    results: asyncio.Queue[int] = channel(results_capacity)
    errors: asyncio.Queue[Exception] = channel(error_capacity)
    workers = start(job_count, worker_count, work, log, results, errors)

    # DEADLOCK: main is suspended here until every worker has returned, while a worker suspended
    # on a full queue waits for main to read it. Nothing else can run, and the loop waits forever.
    await asyncio.gather(*workers)

    # Go: `select { case err := <-errors: ... default: }`, take one error if there is one. Every
    # other error is silently dropped, as in the threaded stage.
    try:
        first_error = [errors.get_nowait()]
    except asyncio.QueueEmpty:
        first_error = []

    # The post never reads its results; we do, for the tests.
    return Outcome(results=drain(results), errors=first_error)
