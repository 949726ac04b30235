"""The work the benchmarks run, and the check every run's results must pass.

A benchmark run takes a workload, a job count n and a worker count, runs jobs 1..n, and returns
what the jobs returned (in any order). Every workload returns job * 2, so a run is checked against
the same expected list whatever it did in between: a run with a missing, doubled or wrong result is
refused (`WrongResults`) before its time is recorded.

This module imports nothing else of plots/: the pools' runners (plots.implementations), the Dask
child and the failure matrix's callers all build on it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

Result = TypeVar("Result", covariant=True)


class WrongResults(Exception):
    """A benchmark run returned something other than job * 2 for each of its jobs."""


def check(results: Sequence[int], job_count: int, implementation: str) -> None:
    if sorted(results) != [2 * job for job in range(1, job_count + 1)]:
        raise WrongResults(
            f"{implementation}: {len(results)} results do not match jobs 1..{job_count} doubled"
        )


class Finished(Protocol[Result]):
    """A stage-3 or stage-4 Task, as read after its run."""

    @property
    def err(self) -> BaseException | None: ...

    @property
    def result(self) -> Result | None: ...


def results_of(who: str, tasks: Sequence[Finished[Result]]) -> list[Result]:
    """What a stage-3 or stage-4 user does after run(): walk the tasks, each with its own outcome.
    The results, in order; WrongResults for the first task that failed."""
    for task in tasks:
        if task.err is not None:
            raise WrongResults(f"{who}: a task failed: {task.err!r}")
    return [task.result for task in tasks if task.result is not None]


def quiet(line: str) -> None:
    """The stages' trace lines go nowhere in a benchmark."""


# --- Workloads. Module-level functions, so that multiprocessing can pickle them. ---


def no_op(job: int) -> int:
    return job * 2


def sleep_1ms(job: int) -> int:
    time.sleep(0.001)
    return job * 2


def spin(iterations: int, job: int) -> int:
    """Pure-Python work that holds the GIL throughout; the total is checked, not thrown away."""
    total = 0
    for i in range(iterations):
        total += i & 7
    # Every iteration block of 8 adds 28; a loop cut short would change the result.
    if total != 28 * (iterations // 8) + sum(range(iterations % 8)):
        return -1
    return job * 2


def iterations_for(seconds: float) -> int:
    """How many `spin` iterations take about `seconds` on this machine (best of a few tries)."""
    trial = 20_000
    fastest = math.inf
    for _ in range(5):
        start = time.perf_counter()
        spin(trial, 0)
        fastest = min(fastest, time.perf_counter() - start)
    return max(8, round(trial * seconds / fastest))


async def no_op_async(job: int) -> int:
    return job * 2


async def sleep_1ms_async(job: int) -> int:
    await asyncio.sleep(0.001)
    return job * 2


async def spin_async(iterations: int, job: int) -> int:
    # What an asyncio user gets for CPU work: it runs on the event loop's one thread.
    return spin(iterations, job)


@dataclass(frozen=True)
class Workload:
    # The same work twice: as a plain function, and as a coroutine function for asyncio.
    call: Callable[[int], int]
    call_async: Callable[[int], Awaitable[int]]


NO_OP = Workload(no_op, no_op_async)
SLEEP_1MS = Workload(sleep_1ms, sleep_1ms_async)


def cpu_workload(iterations: int) -> Workload:
    return Workload(partial(spin, iterations), partial(spin_async, iterations))
