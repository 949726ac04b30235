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

from errors_channel.pool import Item, Log, Outcome, Work, channel, drain, start


def run_with_room_for_every_error(
    job_count: int, worker_count: int, work: Work, log: Log
) -> Outcome:
    """Size both queues for the worst case, then read every item once the workers are done."""
    # Capacity 0 would mean unbuffered; with no jobs nothing is ever put, so 1 is as good.
    room = max(job_count, 1)
    results: queue.Queue[int] = channel(room)
    errors: queue.Queue[Exception] = channel(room)
    wait_group, workers = start(job_count, worker_count, work, log, results, errors)

    # No put can block: each queue has room for every job's item. So every worker gets to done().
    wait_group.wait()
    for thread in workers:
        thread.join()
    return Outcome(results=drain(results), errors=drain(errors))


def collect(items: queue.Queue[Item | None], into: list[Item]) -> None:
    """Read `items` until the None that main puts once every worker is done."""
    for item in iter(items.get, None):
        into.append(item)


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
    collectors = [
        threading.Thread(target=collect, args=(results, outcome.results), name="collect-results"),
        threading.Thread(target=collect, args=(errors, outcome.errors), name="collect-errors"),
    ]
    for collector in collectors:
        collector.start()

    # The workers only ever put ints and Exceptions; the None markers below come from main alone,
    # after the workers are done, so the narrower view the workers get is true while they run.
    wait_group, workers = start(
        job_count,
        worker_count,
        work,
        log,
        cast("queue.Queue[int]", results),
        cast("queue.Queue[Exception]", errors),
    )
    # Every put a worker makes has a collector to take it, so every worker reaches done().
    wait_group.wait()

    # No worker puts any more; tell each collector so. These puts may wait for the collector to
    # catch up (or, unbuffered, to take the marker), and it will: it is alive and reading.
    results.put(None)
    errors.put(None)
    for thread in [*workers, *collectors]:
        thread.join()
    return outcome
