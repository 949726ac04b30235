"""The failure matrix's callers: each pool, called the way its users naturally call it.

Issue 9 asks the post's question of every pool a Python programmer would pick: where do the errors
go, can it hang, what happens to the other jobs? This module holds the *callers*, one short
function per tool, and the jobs they run. `plots.failures_child` runs one caller on one workload in
a process of its own; `plots.failures_measure` starts those processes and turns what they recorded
into the matrix.

A caller gets a `Run`: the job to call (`run.job`, or `run.job_async` for asyncio), its inputs and
the worker count. It tells the run what it got back, as it gets it: `run.result(value, job)` and
`run.error(error, job)`, passing the job's input only when the tool lets it know which input it was.
`run.error` returns True once the caller has as many errors as it will take (the workload that gives
up at the 10th error); where the tool raises the first error out of its loop, that first error is
all the caller gets and the loop is over anyway.

Every job appends a line to an events file when it starts and when it ends, from whichever thread or
process runs it, so the jobs that ran are counted after the run is over, not when the first error
surfaces.

The matrix's rows are the contenders in `plots.contenders` that have a caller here (or a Go program
of their own, `GoProgram`, which the harness builds once per matrix run and starts instead of
`plots.failures_child`, and which writes the same events). The process pools start their processes
as every process-based contender does (plots.start_method).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import beyond
import errors_channel.fixes
import errors_channel.pool
import naive.pool
from plots.start_method import START_METHOD, preload_into_the_forkserver, process_context
from plots.workloads import quiet
from robust import Pool, Task

# --- The jobs. Module-level, so that multiprocessing can pickle them into its workers. ---


def record(events: str, event: dict[str, object]) -> None:
    """Append one JSON line to the events file, from any thread or process.

    One os.write to a file opened with O_APPEND: the kernel moves to the end and writes in one step,
    so lines from concurrent writers never interleave, and their order in the file is the order in
    which they happened.
    """
    descriptor = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (json.dumps(event) + "\n").encode())
    finally:
        os.close(descriptor)


class JobFailed(Exception):
    """What a failing job raises. It knows its job, so the harness can check a caller's claim that
    an error belongs to an input; the callers themselves never look at it."""

    def __init__(self, job: int) -> None:
        super().__init__(f"error on job {job}")
        self.job = job

    def __reduce__(self) -> tuple[type[JobFailed], tuple[int]]:
        # Rebuilt from the job number when multiprocessing sends it back from a worker process.
        return JobFailed, (self.job,)


@dataclass(frozen=True)
class JobSpec:
    """What every job of one run does: sleep `seconds`, then fail, exit or return job * 2."""

    events: str
    seconds: float
    odd_jobs_fail: bool
    # The job that raises SystemExit(SYSTEM_EXIT_STATUS) instead of returning; 0 for none.
    system_exit_job: int = 0


SYSTEM_EXIT_STATUS = 3


def end_job(spec: JobSpec, job: int) -> int:
    """How a job ends. Its name is what the harness looks for in an error's traceback."""
    if job == spec.system_exit_job:
        record(spec.events, {"end": job, "outcome": "SystemExit"})
        raise SystemExit(SYSTEM_EXIT_STATUS)
    if spec.odd_jobs_fail and job % 2 == 1:
        record(spec.events, {"end": job, "outcome": "failed"})
        raise JobFailed(job)
    record(spec.events, {"end": job, "outcome": "ok"})
    return job * 2


def job(spec: JobSpec, number: int) -> int:
    record(spec.events, {"start": number})
    time.sleep(spec.seconds)
    return end_job(spec, number)


async def job_async(spec: JobSpec, number: int) -> int:
    record(spec.events, {"start": number})
    await asyncio.sleep(spec.seconds)
    return end_job(spec, number)


# --- What a caller gets, and tells the run. ---


@dataclass
class Run:
    job: Callable[[int], int]
    job_async: Callable[[int], Awaitable[int]]
    inputs: list[int]
    workers: int
    events: str
    # The caller stops reading at this many errors; None: it takes every error it can get.
    give_up_after: int | None = None
    # (input, value): the input is None where the tool did not say which input it was.
    results: list[tuple[int | None, object]] = field(default_factory=list)
    errors: list[tuple[int | None, BaseException]] = field(default_factory=list)

    def result(self, value: object, job: int | None = None) -> None:
        self.results.append((job, value))

    def error(self, error: BaseException, job: int | None = None) -> bool:
        """Take one error; True when the caller has all it wants and stops reading."""
        self.errors.append((job, error))
        # The caller's last error line in the events file marks its give-up point: jobs that start
        # after it were started for a caller that had stopped listening.
        record(self.events, {"caller_error": job})
        return self.give_up_after is not None and len(self.errors) >= self.give_up_after

    def waiting(self) -> None:
        """The caller has handed every job over and now waits for results: the SIGINT run of a
        contender that says so (Contender.says_when_it_waits) is interrupted only after this."""
        record(self.events, {"caller": "waiting"})


Caller = Callable[[Run], None]


# --- Our stages. Their APIs take a job count and run jobs 1..n. ---


def call_naive(run: Run) -> None:
    # Stage 1 has no place for an error: a failing job ends its worker thread.
    for value in naive.pool.run(len(run.inputs), run.workers, run.job, quiet):
        run.result(value)


def read_outcome(run: Run, outcome: errors_channel.pool.Outcome) -> None:
    """What stage 2's callers do with what run() returns: every result, then its errors."""
    for value in outcome.results:
        run.result(value)
    for error in outcome.errors:
        if run.error(error):
            break


def call_errors_channel(error_capacity: int, run: Run) -> None:
    read_outcome(
        run,
        errors_channel.pool.run(
            len(run.inputs), run.workers, run.job, quiet, error_capacity=error_capacity
        ),
    )


def call_room_for_every_error(run: Run) -> None:
    read_outcome(
        run,
        errors_channel.fixes.run_with_room_for_every_error(
            len(run.inputs), run.workers, run.job, quiet
        ),
    )


def call_draining_while_waiting(run: Run) -> None:
    # The fix's point: it holds at the capacity that deadlocks the stage.
    read_outcome(
        run,
        errors_channel.fixes.run_draining_while_waiting(
            len(run.inputs), run.workers, run.job, quiet, error_capacity=1
        ),
    )


def call_robust(run: Run) -> None:
    pool = Pool([Task(partial(run.job, n)) for n in run.inputs], concurrency=run.workers)
    pool.run()
    for n, task in zip(run.inputs, pool.tasks, strict=True):
        if task.err is None:
            run.result(task.result, n)
        elif run.error(task.err, n):
            break  # the post's "Too many errors."


def call_beyond(run: Run) -> None:
    """Stage 4 on its threads as its users call it: each task handed over as it finishes, and the
    pool itself stops at the caller's limit (max_errors) rather than the caller walking on after
    the run."""
    tasks = [beyond.Task(run.job, n) for n in run.inputs]
    inputs = dict(zip(tasks, run.inputs, strict=True))
    pool = beyond.Pool(tasks, run.workers, max_errors=run.give_up_after)
    for task in pool:
        if task.err is None:
            run.result(task.result, inputs[task])
        elif run.error(task.err, inputs[task]):
            break  # leaving the loop cancels the pool: no task starts after it


def call_beyond_asyncio(run: Run) -> None:
    """Stage 4 on asyncio as its users call it: coroutine functions, each task handed over as it
    finishes, and the pool itself stops at the caller's limit (max_errors) rather than the caller
    walking on after the run."""
    tasks = [beyond.Task(run.job_async, n) for n in run.inputs]
    inputs = dict(zip(tasks, run.inputs, strict=True))
    pool = beyond.Pool(tasks, run.workers, max_errors=run.give_up_after, backend="asyncio")
    for task in pool:
        if task.err is None:
            run.result(task.result, inputs[task])
        elif run.error(task.err, inputs[task]):
            break  # leaving the loop cancels the running tasks and waits for them


def call_beyond_processes(run: Run) -> None:
    # Stage 4 on processes, called as its users would: the pool itself stops at the caller's
    # limit (max_errors), and the walk afterwards reads every task that finished. The forkserver
    # imports this program's modules once, instead of every worker process again (see
    # preload_into_the_forkserver).
    preload_into_the_forkserver()
    tasks = [beyond.Task(run.job, n) for n in run.inputs]
    pool = beyond.Pool(tasks, run.workers, max_errors=run.give_up_after, backend="processes")
    pool.run()
    for n, task in zip(run.inputs, tasks, strict=True):
        if not task.finished:
            continue  # never started: the pool stopped first
        if task.err is None:
            run.result(task.result, n)
        elif run.error(task.err, n):
            break


# A LocalCluster in a process of its own, in a session of its own: its worker processes started as
# every process-based contender's are (argv[2]), they import the jobs' module (a second or more on
# a busy machine, which is the cluster's start, not the run), then it prints its scheduler's
# address, and closes once its stdin does (the caller closes it, or dies).
CLUSTER_SCRIPT = """
import importlib
import sys
import dask
from distributed import Client, LocalCluster

if __name__ == "__main__":
    dask.config.set({"distributed.worker.multiprocessing-method": sys.argv[2]})
    with LocalCluster(
        n_workers=int(sys.argv[1]), threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with Client(cluster) as client:
            client.run(importlib.import_module, "plots.failures")
        print(cluster.scheduler_address, flush=True)
        sys.stdin.read()
"""


class BeyondOnDask:
    """Stage 4 on a Dask cluster, one worker process per pool worker, called as its users call it:
    a Client connected to the scheduler's address, each task handed over as it finishes, and the
    pool itself stopping at the caller's limit (max_errors).

    The cluster is the user's, not the pool's: `prepare()` starts it and connects the client (many
    seconds on a busy machine, importing distributed included) before the run's clock starts
    (plots.failures_child), the cluster in a session of its own, as a cluster on other machines
    would be. The caller closes the client when it is done, and the cluster is killed after the
    report of what the caller left running.
    """

    def __init__(self) -> None:
        self.client: Any = None

    @contextlib.contextmanager
    def prepare(self, workers: int) -> Iterator[None]:
        # The cluster's log: shown if it fails to start, and gone with the cluster.
        with tempfile.TemporaryFile(mode="w+") as log:
            cluster = subprocess.Popen(
                [sys.executable, "-c", CLUSTER_SCRIPT, str(workers), START_METHOD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
            try:
                assert cluster.stdout is not None
                address = cluster.stdout.readline().strip()
                if not address:
                    status = cluster.wait()
                    log.seek(0)
                    tail = log.read()[-3000:]
                    raise RuntimeError(f"the Dask cluster did not start (exit {status}):\n{tail}")
                # Any: distributed is mostly untyped, and mypy --strict refuses calls into it.
                distributed: Any = importlib.import_module("distributed")
                self.client = distributed.Client(address)
                yield
            finally:
                if self.client is not None:
                    self.client.close()  # closed by the caller already, unless it never ran
                # At once, workers and all (its group): how it closes is no part of this run.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(cluster.pid, signal.SIGKILL)
                cluster.wait()

    def __call__(self, run: Run) -> None:
        with self.client as client:
            tasks = [beyond.Task(run.job, n) for n in run.inputs]
            inputs = dict(zip(tasks, run.inputs, strict=True))
            pool = beyond.Pool(tasks, run.workers, max_errors=run.give_up_after, backend=client)
            for task in pool:
                if task.err is None:
                    run.result(task.result, inputs[task])
                elif run.error(task.err, inputs[task]):
                    break  # leaving the loop cancels the pool: no task starts after it


# --- concurrent.futures ---


def call_thread_pool_map(run: Run) -> None:
    with ThreadPoolExecutor(max_workers=run.workers) as executor:
        try:
            results = executor.map(run.job, run.inputs)
            run.waiting()
            for value in results:
                run.result(value)
        except Exception as error:
            run.error(error)  # map raises the first error (in input order); its loop is over


def call_thread_pool_as_completed(run: Run) -> None:
    with ThreadPoolExecutor(max_workers=run.workers) as executor:
        futures = {executor.submit(run.job, n): n for n in run.inputs}
        for future in as_completed(futures):
            try:
                run.result(future.result(), futures[future])
            except Exception as error:
                if run.error(error, futures[future]):
                    break  # leaves the loop; the with block still waits for every job


def call_process_pool_map(run: Run) -> None:
    with ProcessPoolExecutor(max_workers=run.workers, mp_context=process_context()) as executor:
        try:
            results = executor.map(run.job, run.inputs)
            run.waiting()
            for value in results:
                run.result(value)
        except Exception as error:
            run.error(error)


# --- multiprocessing ---


def call_multiprocessing_map(run: Run) -> None:
    with process_context().Pool(processes=run.workers) as pool:
        try:
            for value in pool.map(run.job, run.inputs):
                run.result(value)
        except Exception as error:
            run.error(error)  # leaving the with block calls pool.terminate()


def call_multiprocessing_imap_unordered(run: Run) -> None:
    with process_context().Pool(processes=run.workers) as pool:
        try:
            for value in pool.imap_unordered(run.job, run.inputs):
                run.result(value)
        except Exception as error:
            run.error(error)


# --- asyncio: a Semaphore keeps at most `workers` jobs running, as the pools do. ---


def limited(run: Run) -> Callable[[int], Coroutine[None, None, int]]:
    in_flight = asyncio.Semaphore(run.workers)

    async def one(n: int) -> int:
        async with in_flight:
            return await run.job_async(n)

    return one


def call_gather(run: Run) -> None:
    async def main() -> None:
        one = limited(run)
        try:
            for value in await asyncio.gather(*(one(n) for n in run.inputs)):
                run.result(value)
        except Exception as error:
            run.error(error)  # the first error; the other jobs are not cancelled by gather

    asyncio.run(main())


def call_gather_return_exceptions(run: Run) -> None:
    async def main() -> None:
        one = limited(run)
        outcomes = await asyncio.gather(*(one(n) for n in run.inputs), return_exceptions=True)
        for n, outcome in zip(run.inputs, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if run.error(outcome, n):
                    break
            else:
                run.result(outcome, n)

    asyncio.run(main())


def call_task_group(run: Run) -> None:
    async def main() -> None:
        one = limited(run)
        tasks: dict[int, asyncio.Task[int]] = {}
        try:
            async with asyncio.TaskGroup() as group:
                for n in run.inputs:
                    tasks[n] = group.create_task(one(n))
        except* Exception as failed:
            for error in failed.exceptions:
                if run.error(error):
                    break
        # The tasks that finished before the group gave up still hold their results.
        for n, task in tasks.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                run.result(task.result(), n)

    asyncio.run(main())


@dataclass(frozen=True)
class Workload:
    name: str
    # What it is, for the figure and the CSV.
    summary: str
    jobs: int
    odd_jobs_fail: bool
    system_exit_job: int = 0
    give_up_after: int | None = None


WORKERS = 3
# The post's: 9 jobs on 3 workers, odd jobs fail; the caller takes every error it can get.
POST = Workload("post", "the post's run: 9 jobs, odd ones fail", jobs=9, odd_jobs_fail=True)
# The post's robust demo with --jobs 30: the caller stops at the 10th error.
GIVE_UP = Workload(
    "give-up",
    "30 jobs, odd ones fail; the caller gives up at the 10th error",
    jobs=30,
    odd_jobs_fail=True,
    give_up_after=10,
)
# One job, in the first round, calls sys.exit(3); the others succeed.
SYSTEM_EXIT = Workload(
    "system-exit",
    f"9 jobs; job 2 calls sys.exit({SYSTEM_EXIT_STATUS})",
    jobs=9,
    odd_jobs_fail=False,
    system_exit_job=2,
)
# 100 jobs that all succeed; the parent sends SIGINT while they run.
SIGINT = Workload("sigint", "SIGINT during 100 jobs", jobs=100, odd_jobs_fail=False)
WORKLOADS = (POST, GIVE_UP, SYSTEM_EXIT, SIGINT)
WORKLOADS_BY_NAME = {workload.name: workload for workload in WORKLOADS}
