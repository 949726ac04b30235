"""Every pool the benchmarks run, behind one calling convention, and the plain references.

A run takes a workload (plots.workloads), a job count n and a worker count, runs jobs 1..n as the
pool's users would, and returns what the jobs returned, in any order; the caller checks them. Each
function here is one way to run jobs; plots.contenders names them, colours them and says in which
figures they appear.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import math
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial

import beyond
import errors_channel.pool
import naive.pool
from beyond.backends.event_loop import Asyncio
from plots.dask_child import DaskChild
from plots.start_method import preload_into_the_forkserver, process_context
from plots.workloads import Workload, WrongResults, quiet, results_of
from robust import Pool, Task

# The loop the asyncio backend runs on by default: uvloop when it is installed.
DEFAULT_LOOP = Asyncio().loop


# --- The references (no pool at all), then the pools. ---


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


def run_static_coroutines(loop: str, work: Workload, job_count: int, workers: int) -> list[int]:
    """The same for an event loop: one coroutine per worker, each with its own slice of the jobs,
    on the loop named ("uvloop" or "standard"). No pool, no Task objects: the loop's own cost per
    sleep (a future, a timer, a task step) and nothing more."""
    call = work.call_async
    slices: list[list[int]] = [[] for _ in range(workers)]

    async def run_slice(number: int) -> None:
        slices[number] = [await call(job) for job in range(number + 1, job_count + 1, workers)]

    async def main() -> None:
        await asyncio.gather(*(run_slice(number) for number in range(workers)))

    with asyncio.Runner(loop_factory=Asyncio(loop).loop_factory) as runner:
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


def run_robust(work: Workload, job_count: int, workers: int) -> list[int]:
    call = work.call
    pool = Pool([Task(partial(call, job)) for job in range(1, job_count + 1)], workers)
    pool.run()
    return results_of("robust", pool.tasks)


def run_beyond(work: Workload, job_count: int, workers: int) -> list[int]:
    """Stage 4 as a stage-3 user would call it: a list of tasks, run(), then walk them."""
    call = work.call
    pool = beyond.Pool([beyond.Task(call, job) for job in range(1, job_count + 1)], workers)
    pool.run()
    return results_of("beyond", pool.tasks)


def run_beyond_asyncio(loop: str, work: Workload, job_count: int, workers: int) -> list[int]:
    """Stage 4 on asyncio as its user calls it: coroutine functions, a list, run(), then walk."""
    call = work.call_async
    pool = beyond.Pool(
        [beyond.Task(call, job) for job in range(1, job_count + 1)],
        workers,
        backend=Asyncio(loop),
    )
    pool.run()
    return results_of("beyond on asyncio", pool.tasks)


def run_beyond_processes(work: Workload, job_count: int, workers: int) -> list[int]:
    """Stage 4 on processes as its user calls it: picklable tasks, a list, run(), then walk."""
    preload_into_the_forkserver()
    call = work.call
    pool = beyond.Pool(
        [beyond.Task(call, job) for job in range(1, job_count + 1)],
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


def four_chunks_a_worker(job_count: int, workers: int) -> int:
    """Jobs per chunk for four chunks a worker: multiprocessing's own default for Pool.map, and
    the size every chunked contender uses, so that they differ only in how they send them."""
    return max(1, math.ceil(job_count / (4 * workers)))


def run_beyond_processes_batched(work: Workload, job_count: int, workers: int) -> list[int]:
    """Stage 4 on processes with the jobs batched, as issue 11 allows for small tasks: four tasks
    per worker, each running a slice of the jobs, so that a child is woken and sent a message
    once per slice, not once per job. The price: one error per batch (a job that fails ends its
    batch's task), as with multiprocessing's chunks."""
    preload_into_the_forkserver()
    call = work.call
    per_batch = four_chunks_a_worker(job_count, workers)
    batches = [
        range(first, min(first + per_batch, job_count + 1))
        for first in range(1, job_count + 1, per_batch)
    ]
    pool = beyond.Pool(
        [beyond.Task(run_batch, call, jobs) for jobs in batches],
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
    """multiprocessing's Pool.map, its processes started as stage 4's are (plots.start_method)."""
    with process_context().Pool(processes=workers) as pool:
        return pool.map(work.call, range(1, job_count + 1), chunksize=chunksize)


def run_processes_chunk_1(work: Workload, job_count: int, workers: int) -> list[int]:
    """One job per message: the most even spread, the most messages."""
    return run_processes(work, job_count, workers, 1)


def run_processes_chunked(work: Workload, job_count: int, workers: int) -> list[int]:
    """Four chunks per worker: few messages, as multiprocessing's own default aims for."""
    return run_processes(work, job_count, workers, four_chunks_a_worker(job_count, workers))


def run_process_pool_chunked(work: Workload, job_count: int, workers: int) -> list[int]:
    """ProcessPoolExecutor.map with multiprocessing's default chunks (four a worker): its own
    default, one job a message, would only repeat "multiprocessing map, chunksize 1"."""
    chunksize = four_chunks_a_worker(job_count, workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=process_context()) as executor:
        return list(executor.map(work.call, range(1, job_count + 1), chunksize=chunksize))


def loky_installed() -> bool:
    return importlib.util.find_spec("loky") is not None


def run_loky_chunked(work: Workload, job_count: int, workers: int) -> list[int]:
    """loky's ProcessPoolExecutor (joblib's process pool) in the same chunks, a new executor per
    run as for the other peers (not loky's reusable one, which would skip its start), on the
    same start method (loky's own, fork and exec, is slower to start here): loky takes
    multiprocessing's context for it, the very object the stdlib peers are given."""
    from loky import ProcessPoolExecutor as LokyExecutor

    chunksize = four_chunks_a_worker(job_count, workers)
    executor = LokyExecutor(max_workers=workers, context=process_context())
    try:
        return list(executor.map(work.call, range(1, job_count + 1), chunksize=chunksize))
    finally:
        executor.shutdown(wait=True)


# --- Memory: how much a run of n tasks holds at its peak. Each consumes results as it can. ---
# Run by plots.child, in a process of its own per point.


def memory_robust(call: Callable[[int], int], job_count: int, workers: int) -> int:
    """Stage 3: every task exists before the run, and stays in pool.tasks."""
    pool = Pool([Task(partial(call, job)) for job in range(1, job_count + 1)], workers)
    pool.run()
    return sum(task.result or 0 for task in pool.tasks)


def memory_beyond_streamed(call: Callable[[int], int], job_count: int, workers: int) -> int:
    """Stage 4: tasks made by a generator as workers take them, read as they finish."""
    tasks = (beyond.Task(call, job) for job in range(1, job_count + 1))
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


def has_map_buffersize() -> bool:
    """Executor.map takes buffersize from Python 3.14 on."""
    return "buffersize" in inspect.signature(ThreadPoolExecutor.map).parameters
