"""Two fixes for the coroutine stage's deadlock, beside the bug (`errors_channel/asyncio_pool.py`).

They are the threaded fixes (`errors_channel/fixes.py`) with tasks for threads: both reuse the
stage's workers unchanged, only main differs, and both report *every* error.

- `run_with_room_for_every_error`: every job puts exactly one item, on results or on errors, so
  queues that hold job_count items each are never full when a worker puts.
- `run_draining_while_waiting`: keep any capacities, even unbuffered, and read both queues *while*
  the workers run, each with a collector task. Every put then has a reader, so no worker can stay
  suspended on one. (`asyncio.wait(..., return_when=FIRST_COMPLETED)` over a get() of each queue
  could play Go's `select` here, but a collector per queue is shorter and plainly correct.)
"""

from __future__ import annotations

import asyncio
from typing import cast

from errors_channel.asyncio_pool import Item, Log, Work, channel, drain, start
from errors_channel.pool import Outcome


async def run_with_room_for_every_error(
    job_count: int, worker_count: int, work: Work, log: Log
) -> Outcome:
    """Size both queues for the worst case, then read every item once the workers are done."""
    # Capacity 0 would mean unbuffered; with no jobs nothing is ever put, so 1 is as good.
    room = max(job_count, 1)
    results: asyncio.Queue[int] = channel(room)
    errors: asyncio.Queue[Exception] = channel(room)
    workers = start(job_count, worker_count, work, log, results, errors)

    # No put can suspend for good: each queue has room for every job's item.
    await asyncio.gather(*workers)
    return Outcome(results=drain(results), errors=drain(errors))


async def collect(items: asyncio.Queue[Item | None], into: list[Item]) -> None:
    """Read `items` until the None that main puts once every worker is done."""
    while (item := await items.get()) is not None:
        into.append(item)


async def run_draining_while_waiting(
    job_count: int,
    worker_count: int,
    work: Work,
    log: Log,
    results_capacity: int = 100,
    error_capacity: int = 100,
) -> Outcome:
    """The post's capacities, but a reader on each queue from the start."""
    results: asyncio.Queue[int | None] = channel(results_capacity)
    errors: asyncio.Queue[Exception | None] = channel(error_capacity)
    outcome = Outcome(results=[], errors=[])
    collectors = [
        asyncio.create_task(collect(results, outcome.results), name="collect-results"),
        asyncio.create_task(collect(errors, outcome.errors), name="collect-errors"),
    ]

    # The workers only ever put ints and Exceptions; the None markers below come from main alone,
    # after the workers are done, so the narrower view the workers get is true while they run.
    workers = start(
        job_count,
        worker_count,
        work,
        log,
        cast("asyncio.Queue[int]", results),
        cast("asyncio.Queue[Exception]", errors),
    )
    # Every put a worker makes has a collector to take it, so every worker returns.
    await asyncio.gather(*workers)

    # No worker puts any more; tell each collector so. These puts may wait for the collector to
    # catch up (or, unbuffered, to take the marker), and it will: it is alive and reading.
    await results.put(None)
    await errors.put(None)
    await asyncio.gather(*collectors)
    return outcome
