"""The work the benchmarks run, and every pool they run it on, behind one calling convention.

An implementation takes a workload, a job count n and a worker count, runs jobs 1..n, and returns
what the jobs returned (in any order). Every workload returns job * 2, so a run is checked against
the same expected list whatever it did in between: a run with a missing, doubled or wrong result is
refused (`WrongResults`) before its time is recorded.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import multiprocessing
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

import beyond
import errors_channel.pool
import naive.pool
from beyond.backends.event_loop import Asyncio
from plots.dask_child import DaskChild
from robust import Pool, Task

Result = TypeVar("Result", covariant=True)


class Finished(Protocol[Result]):
    """A stage-3 or stage-4 Task, as read after its run."""

    @property
    def err(self) -> BaseException | None: ...

    @property
    def result(self) -> Result | None: ...


class WrongResults(Exception):
    """A benchmark run returned something other than job * 2 for each of its jobs."""


def check(results: Sequence[int], job_count: int, implementation: str) -> None:
    if sorted(results) != [2 * job for job in range(1, job_count + 1)]:
        raise WrongResults(
            f"{implementation}: {len(results)} results do not match jobs 1..{job_count} doubled"
        )


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


# --- Implementations ---


def quiet(line: str) -> None:
    """The stages' trace lines go nowhere in a benchmark."""


def run_loop(work: Workload, job_count: int, workers: int) -> list[int]:
    """The floor: no pool at all, one call after another."""
    call = work.call
    return [call(job) for job in range(1, job_count + 1)]


def run_static_threads(work: Workload, job_count: int, workers: int) -> list[int]:
    """The best a hand-written thread version does without a pool: one thread per worker, each
    with its own slice of the jobs decided up front, so nothing is shared while they run."""
    call = work.call
    slices: list[list[int]] = [[] for _ in range(workers)]

    def run_slice(number: int) -> None:
        slices[number] = [call(job) for job in range(number + 1, job_count + 1, workers)]

    threads = [threading.Thread(target=run_slice, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [result for results in slices for result in results]


def run_static_coroutines(work: Workload, job_count: int, workers: int) -> list[int]:
    """The same for an event loop: one coroutine per worker, each with its own slice of the jobs,
    on uvloop when it is installed (as the asyncio backend is). No pool, no Task objects: the
    loop's own cost per sleep (a future, a timer, a task step) and nothing more."""
    call = work.call_async
    slices: list[list[int]] = [[] for _ in range(workers)]

    async def run_slice(number: int) -> None:
        slices[number] = [await call(job) for job in range(number + 1, job_count + 1, workers)]

    async def main() -> None:
        await asyncio.gather(*(run_slice(number) for number in range(workers)))

    with asyncio.Runner(loop_factory=Asyncio().loop_factory) as runner:
        runner.run(main())
    return [result for results in slices for result in results]


def run_naive(work: Workload, job_count: int, workers: int) -> list[int]:
    return naive.pool.run(job_count, workers, work.call, quiet)


def run_errors_channel(work: Workload, job_count: int, workers: int) -> list[int]:
    # Room for every item, so the stage cannot deadlock (capacity 0 would mean unbuffered).
    room = max(job_count, 1)
    outcome = errors_channel.pool.run(job_count, workers, work.call, quiet, room, room)
    if outcome.errors:
        raise WrongResults(f"errors_channel: a job failed: {outcome.errors[0]!r}")
    return outcome.results


def results_of(who: str, tasks: Sequence[Finished[Result]]) -> list[Result]:
    """What a stage-3 or stage-4 user does after run(): walk the tasks, each with its own outcome.
    The results, in order; WrongResults for the first task that failed."""
    for task in tasks:
        if task.err is not None:
            raise WrongResults(f"{who}: a task failed: {task.err!r}")
    return [task.result for task in tasks if task.result is not None]


def run_robust(work: Workload, job_count: int, workers: int) -> list[int]:
    call = work.call
    pool = Pool([Task(partial(call, job)) for job in range(1, job_count + 1)], workers)
    pool.run()
    return results_of("robust", pool.tasks)


def run_beyond(work: Workload, job_count: int, workers: int) -> list[int]:
    """Stage 4 as a stage-3 user would call it: a list of tasks, run(), then walk them."""
    call = work.call
    pool = beyond.Pool(
        [beyond.Task(partial(call, job)) for job in range(1, job_count + 1)], workers
    )
    pool.run()
    return results_of("beyond", pool.tasks)


def run_beyond_asyncio(loop: str, work: Workload, job_count: int, workers: int) -> list[int]:
    """Stage 4 on asyncio as its user calls it: coroutine functions, a list, run(), then walk."""
    call = work.call_async
    pool = beyond.Pool(
        [beyond.Task(partial(call, job)) for job in range(1, job_count + 1)],
        workers,
        backend=Asyncio(loop),
    )
    pool.run()
    return results_of("beyond on asyncio", pool.tasks)


def preload_into_the_forkserver() -> None:
    """Have multiprocessing's forkserver import this program's modules once, before it forks.

    A forkserver child re-imports the parent's main module, and with it everything that module
    imports: for `python -m plots`, matplotlib included, in every worker process. CPython 3.11 to
    3.13 never preload __main__ into the server themselves (the server is handed 'main_path', a
    key the preparation data does not have). set_forkserver_preload() is multiprocessing's
    documented cure; it acts only before the server starts, and does nothing after. It is given
    the project's modules this program has imported so far, less the main module itself: a child
    runs that again anyway, as __mp_main__, and runpy warns when it finds it already imported.
    """
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    main = spec.name if spec is not None else "__main__"
    ours = ("beyond", "plots", "robust", "naive", "errors_channel")
    multiprocessing.set_forkserver_preload(
        sorted(name for name in list(sys.modules) if name.split(".")[0] in ours and name != main)
    )


def run_beyond_processes(work: Workload, job_count: int, workers: int) -> list[int]:
    """Stage 4 on processes as its user calls it: picklable tasks, a list, run(), then walk."""
    preload_into_the_forkserver()
    call = work.call
    pool = beyond.Pool(
        [beyond.Task(partial(call, job)) for job in range(1, job_count + 1)],
        workers,
        backend="processes",
    )
    pool.run()
    return results_of("beyond on processes", pool.tasks)


# The Dask contender's cluster lives in a child process (plots/dask_child.py says why), started on
# first use, outside any timed region (a cluster takes seconds to start), kept for the whole
# measurement, and closed by close_dask() (measure_all does, also on Ctrl-C and on error).
_dask: list[DaskChild] = []


def dask_child() -> DaskChild:
    if not _dask:
        _dask.append(DaskChild())
    return _dask[0]


def close_dask() -> None:
    if _dask:
        _dask.pop().close()


def dask_versions() -> dict[str, str] | None:
    """What the Dask contender ran on (versions, the cluster), if it ran in this measurement."""
    return dict(_dask[0].versions) if _dask else None


def run_beyond_dask(work: Workload, job_count: int, workers: int) -> tuple[list[int], float]:
    """Stage 4 on a Dask LocalCluster, as its user calls it: a list, run(), then walk the tasks.
    Run, checked for failed tasks (WrongResults) and timed in the child that owns the cluster;
    the parent checks the results as every contender's."""
    return dask_child().run(work.call, job_count, workers)


def run_batch(call: Callable[[int], int], jobs: range) -> list[int]:
    """One task that runs several jobs, one after another, in the worker process."""
    return [call(job) for job in jobs]


def run_beyond_processes_batched(work: Workload, job_count: int, workers: int) -> list[int]:
    """Stage 4 on processes with the jobs batched, as issue 11 allows for small tasks: four tasks
    per worker, each running a slice of the jobs, so that a child is woken and sent a message
    once per slice, not once per job. The price: one error per batch (a job that fails ends its
    batch's task), as with multiprocessing's chunks."""
    preload_into_the_forkserver()
    call = work.call
    per_batch = max(1, math.ceil(job_count / (4 * workers)))
    batches = [
        range(first, min(first + per_batch, job_count + 1))
        for first in range(1, job_count + 1, per_batch)
    ]
    pool = beyond.Pool(
        [beyond.Task(partial(run_batch, call, jobs)) for jobs in batches],
        workers,
        backend="processes",
    )
    pool.run()
    return [
        result
        for batch in results_of("beyond on processes, batched", pool.tasks)
        for result in batch
    ]


def run_thread_pool_executor(work: Workload, job_count: int, workers: int) -> list[int]:
    with ThreadPoolExecutor(max_workers=workers) as executor:
        return list(executor.map(work.call, range(1, job_count + 1)))


def run_asyncio(work: Workload, job_count: int, workers: int) -> list[int]:
    async def main() -> list[int]:
        # At most `workers` jobs in flight, as with the thread pools.
        in_flight = asyncio.Semaphore(workers)

        async def one(job: int) -> int:
            async with in_flight:
                return await work.call_async(job)

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(job)) for job in range(1, job_count + 1)]
        return [task.result() for task in tasks]

    return asyncio.run(main())


def run_processes(work: Workload, job_count: int, workers: int, chunksize: int) -> list[int]:
    with multiprocessing.Pool(processes=workers) as pool:
        return pool.map(work.call, range(1, job_count + 1), chunksize=chunksize)


def run_processes_chunk_1(work: Workload, job_count: int, workers: int) -> list[int]:
    """One job per message: the most even spread, the most messages."""
    return run_processes(work, job_count, workers, 1)


def run_processes_chunked(work: Workload, job_count: int, workers: int) -> list[int]:
    """Four chunks per worker: few messages, as multiprocessing's own default aims for."""
    return run_processes(work, job_count, workers, max(1, math.ceil(job_count / (4 * workers))))


Implementation = Callable[[Workload, int, int], list[int]]
# The results, and the seconds the run took as measured by the implementation itself.
TimedImplementation = Callable[[Workload, int, int], tuple[list[int], float]]


@dataclass(frozen=True)
class Contender:
    name: str
    run: Implementation
    # "threads", "processes", "event loop", "goroutines", or "none" for the plain loop.
    runs_on: str
    # Set for a contender in another program that times its own run (the Go pool, plots.golang):
    # timing it from here would add a process start to every run. None: timed around `run`.
    run_timed: TimedImplementation | None = None
    # At most this many tasks in the dispatch benchmark, for a contender whose per-task cost
    # would make the benchmark's full count take minutes (Dask: 10 ms and more a task here).
    max_tasks: int | None = None


LOOP = Contender("plain loop", run_loop, "none")
STATIC_THREADS = Contender("hand-written threads, static split", run_static_threads, "threads")
# The event loop's reference, on the loop the asyncio backend uses by default.
STATIC_COROUTINES = Contender(
    "hand-written coroutines, static split"
    + (" (uvloop)" if Asyncio().loop == "uvloop" else " (standard loop)"),
    run_static_coroutines,
    "event loop",
)
NAIVE = Contender("naive", run_naive, "threads")
ERRORS_CHANNEL = Contender("errors_channel", run_errors_channel, "threads")
ROBUST = Contender("robust", run_robust, "threads")
BEYOND = Contender("beyond", run_beyond, "threads")
THREAD_POOL_EXECUTOR = Contender("ThreadPoolExecutor.map", run_thread_pool_executor, "threads")
ASYNCIO = Contender("asyncio (TaskGroup + Semaphore)", run_asyncio, "event loop")
PROCESSES_CHUNK_1 = Contender(
    "multiprocessing map, chunksize 1", run_processes_chunk_1, "processes"
)
PROCESSES_CHUNKED = Contender(
    "multiprocessing map, 4 chunks/worker", run_processes_chunked, "processes"
)

BEYOND_PROCESSES = Contender("beyond (processes)", run_beyond_processes, "processes")
BEYOND_PROCESSES_BATCHED = Contender(
    "beyond (processes), 4 batches/worker", run_beyond_processes_batched, "processes"
)
BEYOND_DASK = Contender(
    "beyond (Dask LocalCluster, 2 processes)",
    lambda work, job_count, workers: run_beyond_dask(work, job_count, workers)[0],
    "cluster",
    run_timed=run_beyond_dask,
    max_tasks=200,
)

STAGES = (NAIVE, ERRORS_CHANNEL, ROBUST, BEYOND)


def beyond_asyncio(loop: str | None = None) -> Contender:
    """Stage 4 on asyncio, named after the loop that runs it: uvloop when installed by default."""
    backend = Asyncio(loop)
    name = "uvloop" if backend.loop == "uvloop" else "standard loop"
    return Contender(
        f"beyond (asyncio, {name})", partial(run_beyond_asyncio, backend.loop), "event loop"
    )


# uvloop when it is installed, and then the standard loop beside it; the standard loop alone if not.
BEYOND_ASYNCIO = (
    beyond_asyncio(),
    *([beyond_asyncio("standard")] if Asyncio().loop == "uvloop" else []),
)


# --- Memory: how much a run of n tasks holds at its peak. Each consumes results as it can. ---


def memory_robust(call: Callable[[int], int], job_count: int, workers: int) -> int:
    """Stage 3: every task exists before the run, and stays in pool.tasks."""
    pool = Pool([Task(partial(call, job)) for job in range(1, job_count + 1)], workers)
    pool.run()
    return sum(task.result or 0 for task in pool.tasks)


def memory_beyond_streamed(call: Callable[[int], int], job_count: int, workers: int) -> int:
    """Stage 4: tasks made by a generator as workers take them, read as they finish."""
    tasks = (beyond.Task(partial(call, job)) for job in range(1, job_count + 1))
    return sum(task.result or 0 for task in beyond.Pool(tasks, workers))


def memory_thread_pool_executor(call: Callable[[int], int], job_count: int, workers: int) -> int:
    """map() submits every job before it yields the first result: a Future per job."""
    with ThreadPoolExecutor(max_workers=workers) as executor:
        return sum(executor.map(call, range(1, job_count + 1)))


def memory_thread_pool_executor_buffered(
    call: Callable[[int], int], job_count: int, workers: int
) -> int:
    """map(buffersize=...), Python 3.14+: at most that many jobs submitted ahead."""
    with ThreadPoolExecutor(max_workers=workers) as executor:
        mapped = executor.map(call, range(1, job_count + 1), buffersize=workers)  # type: ignore[call-arg,unused-ignore]
        return sum(mapped)


MEMORY_RUNS = {
    "robust": memory_robust,
    "beyond, streamed": memory_beyond_streamed,
    "ThreadPoolExecutor.map": memory_thread_pool_executor,
    "ThreadPoolExecutor.map, buffersize": memory_thread_pool_executor_buffered,
}


def has_map_buffersize() -> bool:
    """Executor.map takes buffersize from Python 3.14 on."""
    return "buffersize" in inspect.signature(ThreadPoolExecutor.map).parameters


def memory_run(name: str) -> Callable[[Callable[[int], int], int, int], int]:
    return MEMORY_RUNS[name]


PEERS = (THREAD_POOL_EXECUTOR, ASYNCIO, PROCESSES_CHUNK_1, PROCESSES_CHUNKED)
