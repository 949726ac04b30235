"""Two fixes for stage 2's deadlock, kept beside the bug (`errors_channel/pool.py`).

Both reuse the stage's workers unchanged; only main differs. And both report *every* error, where
the post's main reads one and drops the rest.

- `run_with_room_for_every_error`: every job puts exactly one item, on results or on errors, so
  queues that hold job_count items each can never be full when a worker puts. Simple, but the
  memory grows with the job count and main still learns nothing until every job is done.
- `run_draining_while_waiting`: keep any capacities, even unbuffered, and read both queues *while*
  the workers run. Every put then has a reader, so no worker can block for good.

Stage 3 (`robust`) removes the problem instead: no queue carries errors at all.
"""

from __future__ import annotations

import queue
import threading
from typing import cast

from errors_channel.go_primitives import Item, WaitGroup, channel, drain
from errors_channel.pool import Log, Outcome, ThreadStartFailed, Work, start


def run_with_room_for_every_error(
    job_count: int, worker_count: int, work: Work, log: Log
) -> Outcome:
    """Size both queues for the worst case, then read every item once the workers are done."""
    # Capacity 0 would mean unbuffered; with no jobs nothing is ever put, so 1 is as good.
    room = max(job_count, 1)
    results: queue.Queue[int] = channel(room)
    errors: queue.Queue[Exception] = channel(room)
    wait_group = WaitGroup()
    wait_group.add(worker_count)
    workers = start(job_count, worker_count, work, log, wait_group, results, errors)

    # No put can block: each queue has room for every job's item. So every worker gets to done().
    wait_group.wait()
    for thread in workers:
        thread.join()
    return Outcome(results=drain(results), errors=drain(errors))


def collect(items: queue.Queue[Item | None], into: list[Item]) -> None:
    """Read `items` until the None that main puts once every worker is done."""
    for item in iter(items.get, None):
        into.append(item)


# A queue that a collector reads until main puts None on it.
Collected = queue.Queue[int | None] | queue.Queue[Exception | None]


def run_draining_while_waiting(
    job_count: int,
    worker_count: int,
    work: Work,
    log: Log,
    results_capacity: int = 100,
    error_capacity: int = 100,
) -> Outcome:
    """The post's capacities, but a reader on each queue from the start."""
    results: queue.Queue[int | None] = channel(results_capacity)
    errors: queue.Queue[Exception | None] = channel(error_capacity)
    outcome = Outcome(results=[], errors=[])
    # Python has no `select` over two queues, so each queue gets a collector thread of its own.
    collectors: list[tuple[Collected, threading.Thread]] = [
        (
            results,
            threading.Thread(target=collect, args=(results, outcome.results), name="results"),
        ),
        (errors, threading.Thread(target=collect, args=(errors, outcome.errors), name="errors")),
    ]
    running: list[tuple[Collected, threading.Thread]] = []
    wait_group = WaitGroup()
    wait_group.add(worker_count)
    try:
        for items, collector in collectors:
            collector.start()
            running.append((items, collector))
        # The workers only ever put ints and Exceptions; the None markers come from main alone,
        # after the workers are done, so the narrower view the workers get is true while they run.
        workers = start(
            job_count,
            worker_count,
            work,
            log,
            wait_group,
            cast("queue.Queue[int]", results),
            cast("queue.Queue[Exception]", errors),
        )
    except RuntimeError as error:
        # A thread could not be started. start() has already stopped the workers it started, so
        # nothing puts any more: stop the collectors that run, so that no thread is left behind.
        stop(running)
        if isinstance(error, ThreadStartFailed):
            raise
        message = f"could start only {len(running)} of 2 collector threads: {error}"
        raise ThreadStartFailed(message) from error

    # Every put a worker makes has a collector to take it, so every worker reaches done().
    wait_group.wait()
    for thread in workers:
        thread.join()
    stop(running)
    return outcome


def stop(collectors: list[tuple[Collected, threading.Thread]]) -> None:
    """Tell each collector that nothing more will come, and wait until it has read everything."""
    for items, collector in collectors:
        # Call only once no worker puts any more. This put may wait for the collector to catch up
        # (or, unbuffered, to take the marker), and it will: the collector is alive and reading.
        items.put(None)
        collector.join()
