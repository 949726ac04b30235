"""Measuring: runs every benchmark and writes one CSV row per measurement, plus its metadata.

Drawing is a separate step (`plots.draw`) that reads only these files, so figures can be redrawn
(`python -m plots --redraw`) without measuring again.

Repeats are interleaved: repeat 1 of every configuration and implementation, then repeat 2, and so
on (A B C A B C ...), so that a slow patch of the machine hits every implementation alike. Each run
is checked (every job's result, right values) before its time is recorded.
"""

from __future__ import annotations

import csv
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import beyond
from plots.contenders import (
    BENCHMARKED,
    BEYOND_DASK,
    FIGURES,
    GO_POOL,
    LOKY_CHUNKED,
    LOOP,
    MATRIX,
    STATIC_COROUTINES_STANDARD,
    STATIC_COROUTINES_UVLOOP,
    STATIC_THREADS,
    Contender,
)
from plots.failures_measure import go_packages, measure_failures
from plots.golang import GoPrograms, go_programs, pool_contender
from plots.implementations import close_dask, dask_versions, has_map_buffersize
from plots.start_method import START_METHOD, start_the_forkserver
from plots.workloads import NO_OP, SLEEP_1MS, Workload, check, cpu_workload, iterations_for
from robust import Pool, Task

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is: `quick()` for a first look, `full()` for the reference figures,
    `tiny()` for the smoke test."""

    mode: str
    repeats: int
    dispatch_tasks: int
    dispatch_workers: int
    io_workers: tuple[int, ...]
    io_tasks_per_worker: int
    # robust's goal on this benchmark: at least this efficiency at this many workers.
    io_target_workers: int
    io_target_efficiency: float
    # multiprocessing starts one process per worker; beyond this many it is left out.
    io_max_processes: int
    cpu_workers: tuple[int, ...]
    # The CPU benchmark's workloads, one panel each: (seconds of pure Python a task, tasks).
    cpu_workloads: tuple[tuple[float, int], ...]
    map_error_capacities: tuple[int, ...]
    map_failing_jobs: tuple[int, ...]
    map_parallel_cells: int
    map_workers: int
    timeline_work_seconds: float
    # The failure matrix: how long its jobs take, and how many of its child runs go at once.
    failures_job_seconds: float
    failures_sigint_job_seconds: float
    failures_parallel_runs: int
    # Tasks per run for the memory figure; each point is its own process.
    memory_tasks: tuple[int, ...] = (10_000, 100_000)
    memory_repeats: int = 2
    # The stop benchmark: tasks of this many seconds, every second one failing.
    stop_task_seconds: float = 0.05
    stop_tasks: int = 40
    stop_max_errors: int = 5
    # Stage 4 on asyncio's goals on the I/O benchmark (issue 11): (workers, efficiency) each.
    io_asyncio_targets: tuple[tuple[int, float], ...] = ((64, 0.75), (256, 0.70), (1024, 0.33))
    # The pool on a Dask LocalCluster in the dispatch and CPU benchmarks, in a child process that
    # owns the cluster. The cluster takes seconds to start, on top of whatever the sizes are: the
    # smoke test leaves it out (tests/test_beyond_dask_plots.py runs the contender on its own).
    dask: bool = True
    benchmarks: tuple[str, ...] = field(
        default=(
            "dispatch",
            "io",
            "cpu",
            "deadlock_map",
            "timeline",
            "failures",
            "memory",
            "stop",
        )
    )

    @staticmethod
    def quick() -> Sizes:
        """What `python -m plots` measures by default, and `make demo` last: every figure, with
        fewer repeats, worker counts and cells than full(): 81 s on a quiet 2-core machine and 114 s
        at a load average of 14, where the sizes before these took 128 s and 483 s. The failure
        matrix is measured as in full(): its reference table is a quick run's."""
        return Sizes(
            mode="quick",
            repeats=2,
            dispatch_tasks=20_000,
            dispatch_workers=4,
            # 1,024 workers took two thirds of the I/O benchmark's time: full() has them.
            io_workers=(1, 4, 16, 64, 256),
            io_tasks_per_worker=20,
            io_target_workers=64,
            io_target_efficiency=0.8,
            io_max_processes=16,
            cpu_workers=(1, 2, 4),
            # 1 ms tasks, where a process pool's cost per task hides; 0.1 ms ones, where it shows
            # (issue 21: the processes backend against multiprocessing's chunked map).
            cpu_workloads=((0.001, 128), (0.0001, 512)),
            # Every cell is a process of its own: 63 of them show the boundary as 121 do.
            map_error_capacities=tuple(range(7)),
            map_failing_jobs=tuple(range(9)),
            map_parallel_cells=8,
            map_workers=3,
            timeline_work_seconds=0.3,
            failures_job_seconds=0.1,
            failures_sigint_job_seconds=0.2,
            failures_parallel_runs=12,
            memory_repeats=1,
        )

    @staticmethod
    def full() -> Sizes:
        """Publication sizes: every worker count, more tasks, more repeats (about 20 minutes on 2
        cores: 19 at 447e452, load average 2 to 5)."""
        return replace(
            Sizes.quick(),
            mode="full",
            repeats=7,
            dispatch_tasks=100_000,
            io_workers=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            io_max_processes=64,
            cpu_workers=(1, 2, 3, 4, 5, 6, 7, 8),
            cpu_workloads=((0.001, 256), (0.0001, 2048)),
            map_error_capacities=tuple(range(11)),
            map_failing_jobs=tuple(range(11)),
            memory_tasks=(10_000, 30_000, 100_000, 300_000, 1_000_000),
            memory_repeats=3,
        )

    @staticmethod
    def tiny() -> Sizes:
        """For the smoke test: every code path, in seconds."""
        return replace(
            Sizes.quick(),
            mode="tiny",
            repeats=2,
            dispatch_tasks=200,
            dispatch_workers=2,
            io_workers=(1, 4),
            io_tasks_per_worker=3,
            io_max_processes=2,
            cpu_workers=(1, 2),
            cpu_workloads=((0.0005, 4), (0.0001, 8)),
            map_error_capacities=(0, 1),
            map_failing_jobs=(0, 2),
            map_parallel_cells=4,
            timeline_work_seconds=0.02,
            failures_job_seconds=0.02,
            failures_sigint_job_seconds=0.05,
            memory_tasks=(1_000,),
            memory_repeats=1,
            stop_task_seconds=0.01,
            stop_tasks=12,
            stop_max_errors=2,
            dask=False,
            # The failure matrix waits out its hangs, which takes seconds whatever the sizes:
            # tests/test_failures.py measures it on its own, so the smoke test leaves it out.
            benchmarks=(
                "dispatch",
                "io",
                "cpu",
                "deadlock_map",
                "timeline",
                "memory",
                "stop",
            ),
        )


class Progress:
    """Progress on stderr: which benchmark, how far, time elapsed, and about how long is left."""

    def __init__(self, benchmark: str, steps: int, total_cost: float | None = None) -> None:
        self.benchmark = benchmark
        self.steps = steps
        self.done = 0
        # Steps can differ in cost (1024 workers take far longer than 1); the estimate of what is
        # left goes by cost done so far, in whatever unit the caller gives (default: steps).
        self.total_cost = total_cost if total_cost is not None else float(steps)
        self.cost_done = 0.0
        self.started = time.monotonic()
        self._last_shown = -math.inf

    def step(self, what: str, cost: float = 1.0) -> None:
        self.done += 1
        self.cost_done += cost
        now = time.monotonic()
        # At most about once a second, plus the last step, so a CI log stays readable.
        if now - self._last_shown < 1.0 and self.done < self.steps:
            return
        self._last_shown = now
        elapsed = now - self.started
        left = elapsed / max(self.cost_done, 1e-9) * (self.total_cost - self.cost_done)
        print(
            f"[{self.benchmark}] {self.done}/{self.steps} {what}: "
            f"{elapsed:.0f} s elapsed, about {max(left, 0):.0f} s left",
            file=sys.stderr,
            flush=True,
        )


def timed_run(contender: Contender, work: Workload, job_count: int, workers: int) -> float:
    """Seconds for one checked run; raises WrongResults instead of returning a bad run's time.

    Each run pays for its own garbage, and for no one else's. Objects in a reference cycle (a task
    that refers to its pool, in a pool that holds its tasks) are freed only by the cyclic garbage
    collector, which runs once enough new objects have been made: left alone, in the next run, as
    it makes its own tasks. Measured here before the stages lost their cycles: the pool run second
    in a dispatch repeat paid about 1.5 us a task more than the first, whichever pool it was. So
    every object made before the run, garbage or not, is frozen (a collection skips frozen
    objects), and the collection that frees the run's own cyclic garbage is timed with the run.

    Before the freeze only the young generations are collected (what the harness made since the
    last run): a full collection there would look at every object of the program, every run,
    though the last run's garbage went with it and anything older stays frozen through this one
    (130,000 objects in a test process: 0.3 s a collection at a load average of 16, a third of
    the smoke test's time). After unfreeze() every object is in the oldest generation, whose own
    collections come, untimed, between runs.
    """
    run, run_timed = contender.run, contender.run_timed
    if run is None and run_timed is None:
        raise ValueError(f"{contender.name} is in no benchmark figure: it has nothing to run")
    gc.collect(1)
    gc.freeze()
    try:
        if run_timed is not None:
            # A contender that times itself: the Go pool, Dask (its cluster's start is not in it).
            results, seconds = run_timed(work, job_count, workers)
        else:
            assert run is not None
            start = time.perf_counter()
            results = run(work, job_count, workers)
            gc.collect()
            seconds = time.perf_counter() - start
    finally:
        gc.unfreeze()
    check(results, job_count, contender.name)
    return seconds


def interleaved(
    repeats: int, configurations: Sequence[tuple[Contender, int]]
) -> Iterator[tuple[int, Contender, int]]:
    """(repeat, contender, workers) in the order A B C A B C ...: every repeat of all, in turn."""
    for repeat in range(1, repeats + 1):
        for contender, workers in configurations:
            yield repeat, contender, workers


def measure_dispatch(sizes: Sizes, contenders: Sequence[Contender]) -> list[dict[str, object]]:
    """1. No-op tasks: what each pool costs per task, beside a plain loop's floor."""
    workers = sizes.dispatch_workers
    tasks = sizes.dispatch_tasks
    plan = list(interleaved(sizes.repeats, [(c, workers) for c in (LOOP, *contenders)]))
    progress = Progress("dispatch", len(plan))
    rows: list[dict[str, object]] = []
    for repeat, contender, w in plan:
        # Fewer tasks for a contender that asks (Dask): the figure is per task.
        count = min(tasks, contender.max_tasks or tasks)
        seconds = timed_run(contender, NO_OP, count, w)
        rows.append(
            {
                "implementation": contender.name,
                "runs_on": contender.runs_on,
                "workers": w,
                "tasks": count,
                "repeat": repeat,
                "seconds": seconds,
                "us_per_task": seconds / count * 1e6,
            }
        )
        progress.step(contender.name)
    return rows


def measure_io(sizes: Sizes, contenders: Sequence[Contender]) -> list[dict[str, object]]:
    """2. Tasks that sleep 1 ms: how close each pool gets to the ideal as workers grow.

    Hand-written threads with a static split stand beside them as a reference: no pool, no
    sharing, just the threads and the sleeps, which is what the GIL and this machine allow. And
    hand-written coroutines, the same for an event loop (one for each loop), when an asyncio pool
    is measured.
    """
    references = [STATIC_THREADS]
    if any(contender.runs_on == "event loop" for contender in contenders):
        # The ceiling of each loop this machine has, for the pools on that loop.
        ceilings = (STATIC_COROUTINES_UVLOOP, STATIC_COROUTINES_STANDARD)
        references += [ceiling for ceiling in ceilings if ceiling.runs_here()]
    configurations = [
        (contender, workers)
        for workers in sizes.io_workers
        for contender in (*references, *contenders)
        if contender.runs_on != "processes" or workers <= sizes.io_max_processes
    ]
    plan = list(interleaved(sizes.repeats, configurations))
    # A run's cost grows with its worker count: threads to start, tasks to run.
    progress = Progress("io", len(plan), sum(sizes.io_tasks_per_worker * w for _, _, w in plan))
    rows: list[dict[str, object]] = []
    for repeat, contender, workers in plan:
        tasks = sizes.io_tasks_per_worker * workers
        seconds = timed_run(contender, SLEEP_1MS, tasks, workers)
        ideal = math.ceil(tasks / workers) * 0.001
        rows.append(
            {
                "implementation": contender.name,
                "runs_on": contender.runs_on,
                "workers": workers,
                "tasks": tasks,
                "repeat": repeat,
                "seconds": seconds,
                "ideal_seconds": ideal,
                "efficiency": ideal / seconds,
            }
        )
        progress.step(f"{contender.name} x{workers}", tasks)
    return rows


def measure_cpu(sizes: Sizes, contenders: Sequence[Contender]) -> list[dict[str, object]]:
    """3. Pure-Python work, for each workload (about 1 ms a task, and 0.1 ms): speedup over a
    plain loop, threads vs processes. Every workload's runs are interleaved with the others'.

    Each run's speedup is over a plain loop run just before it (`loop_seconds`), not over the
    loop's median across the benchmark: this virtual machine's speed drifts over minutes (the
    loop's median was 139, 264 and 416 ms in three full runs of the same code), and a speedup over
    a loop timed minutes away moved with it (threads read 0.60 and 1.25 at 2 workers, where the
    GIL allows 1).
    """
    configurations: list[tuple[float, int, int, Contender, int]] = []
    for task_seconds, tasks in sizes.cpu_workloads:
        iterations = iterations_for(task_seconds)
        configurations.append((task_seconds, tasks, iterations, LOOP, 1))
        configurations += [
            (task_seconds, tasks, iterations, contender, workers)
            for workers in sizes.cpu_workers
            for contender in contenders
            if task_seconds >= contender.cpu_min_task_seconds
        ]
    plan = [
        (repeat, *configuration)
        for repeat in range(1, sizes.repeats + 1)
        for configuration in configurations
    ]
    progress = Progress("cpu", len(plan))
    rows: list[dict[str, object]] = []
    for repeat, task_seconds, tasks, iterations, contender, workers in plan:
        work = cpu_workload(iterations)
        loop_seconds = None if contender is LOOP else timed_run(LOOP, work, tasks, 1)
        seconds = timed_run(contender, work, tasks, workers)
        rows.append(
            {
                "implementation": contender.name,
                "runs_on": contender.runs_on,
                "workers": workers,
                "task_seconds": task_seconds,
                "tasks": tasks,
                "iterations_per_task": iterations,
                "repeat": repeat,
                "seconds": seconds,
                "loop_seconds": seconds if loop_seconds is None else loop_seconds,
            }
        )
        progress.step(f"{contender.name} x{workers}, {task_seconds * 1000:g} ms tasks")
    return rows


def child_records(
    args: Sequence[str], timeout: float
) -> tuple[int | None, list[dict[str, object]]]:
    """Run `python -m plots.child args`; its exit status (None after a timeout) and its records."""
    command = [sys.executable, "-m", "plots.child", *args]
    try:
        completed = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as expired:
        # The timeout, the first detector: the child was killed; keep what it had said.
        stdout = expired.stdout or b""
        text = stdout.decode() if isinstance(stdout, bytes) else stdout
        return None, [json.loads(line) for line in text.splitlines() if line.strip()]
    records = [json.loads(line) for line in completed.stdout.splitlines()]
    # Exit status 2 counts as a deadlock only with the watchdog's record to show for it (argparse,
    # for one, also exits with 2).
    reported = any("deadlock" in record for record in records)
    if completed.returncode not in (0, 2) or (completed.returncode == 2) != reported:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr}")
    return completed.returncode, records


MAP_JOBS = 10
MAP_CELL_TIMEOUT = 20.0


def measure_deadlock_map(sizes: Sizes) -> list[dict[str, object]]:
    """4. Stage 2 over (error capacity, failing jobs): finished or deadlocked, as observed."""
    cells = [
        (capacity, failing)
        for capacity in sizes.map_error_capacities
        for failing in sizes.map_failing_jobs
    ]
    progress = Progress("deadlock_map", len(cells))
    jobs = max(MAP_JOBS, *sizes.map_failing_jobs)

    def observe(cell: tuple[int, int]) -> dict[str, object]:
        capacity, failing = cell
        started = time.monotonic()
        status, records = child_records(
            [
                "deadlock-cell",
                *("--jobs", str(jobs), "--failing", str(failing)),
                *("--error-capacity", str(capacity), "--results-capacity", str(jobs)),
                *("--workers", str(sizes.map_workers)),
            ],
            MAP_CELL_TIMEOUT,
        )
        outcome = {0: "finished", 2: "deadlock (watchdog)", None: "deadlock (timeout)"}[status]
        processed = sum(1 for record in records if "job" in record)
        if status == 0 and processed != jobs:
            raise RuntimeError(f"cell {cell} finished with {processed} of {jobs} jobs processed")
        progress.step(f"capacity {capacity}, {failing} failing: {outcome}")
        return {
            "error_capacity": capacity,
            "failing_jobs": failing,
            "jobs": jobs,
            "results_capacity": jobs,
            "outcome": outcome,
            "jobs_processed": processed,
            "seconds": time.monotonic() - started,
        }

    # The cells are independent processes that mostly wait (for the watchdog's grace period), so
    # several at a time are fine even on 2 cores.
    with ThreadPoolExecutor(max_workers=sizes.map_parallel_cells) as executor:
        return list(executor.map(observe, cells))


TIMELINE_RUNS = (
    ("naive", ["--stage", "naive"]),
    ("errors_channel", ["--stage", "errors_channel"]),
    ("errors_channel, error capacity 1", ["--stage", "errors_channel", "--error-capacity", "1"]),
    ("robust", ["--stage", "robust"]),
    ("beyond", ["--stage", "beyond"]),
    ("beyond, max_errors 3", ["--stage", "beyond", "--max-errors", "3"]),
)


def measure_timelines(sizes: Sizes) -> list[dict[str, object]]:
    """5. Every job of each stage's default demo, on its worker, in time; and where it blocked."""
    progress = Progress("timeline", len(TIMELINE_RUNS))

    def observe(run_and_args: tuple[str, list[str]]) -> list[dict[str, object]]:
        run, args = run_and_args
        status, records = child_records(
            [*("timeline", *args), "--seconds", str(sizes.timeline_work_seconds)], 30.0
        )
        if status is None:
            raise RuntimeError(f"timeline {run}: neither finished nor reported a deadlock")
        progress.step(run)
        return records

    # Each run is a process of its own whose jobs sleep, and each times itself from its own
    # start: they run side by side, as the deadlock map's cells do.
    with ThreadPoolExecutor(max_workers=len(TIMELINE_RUNS)) as executor:
        recorded = list(executor.map(observe, TIMELINE_RUNS))
    rows: list[dict[str, object]] = []
    for (run, _), records in zip(TIMELINE_RUNS, recorded, strict=True):
        last_end: dict[str, float] = {}
        for record in records:
            if "job" in record:
                worker, end = str(record["worker"]), float(str(record["end"]))
                rows.append(
                    {
                        "run": run,
                        "worker": worker,
                        "job": record["job"],
                        "start": record["start"],
                        "end": end,
                        "kind": "success" if record["ok"] else "error",
                    }
                )
                last_end[worker] = max(end, last_end.get(worker, 0.0))
            elif "deadlock" in record:
                reported = float(str(record["deadlock"]))
                blocked = record["blocked"]
                assert isinstance(blocked, dict)
                # A worker the report names has sat blocked since its last job ended.
                for worker, waiting_on in blocked.items():
                    if worker in last_end:
                        rows.append(
                            {
                                "run": run,
                                "worker": worker,
                                "job": "",
                                "start": last_end[worker],
                                "end": reported,
                                "kind": f"blocked: {waiting_on}",
                            }
                        )
                rows.append(
                    {
                        "run": run,
                        "worker": "",
                        "job": "",
                        "start": reported,
                        "end": reported,
                        "kind": "deadlock reported",
                    }
                )
    return rows


MEMORY_WORKERS = 4


def measure_memory(sizes: Sizes, contenders: Sequence[Contender]) -> list[dict[str, object]]:
    """6. Peak resident memory a run of n no-op tasks adds, n from 1e4 up; a fresh process each.

    map(buffersize=...) exists from Python 3.14 on; on an older Python it is left out (its
    contender does not run here, and the figure says so).
    """
    names = [contender.name for contender in contenders]
    plan = [
        (repeat, name, tasks)
        for repeat in range(1, sizes.memory_repeats + 1)
        for tasks in sizes.memory_tasks
        for name in names
    ]
    progress = Progress("memory", len(plan), sum(tasks for _, _, tasks in plan))
    rows: list[dict[str, object]] = []
    for repeat, name, tasks in plan:
        arguments = ["memory", "--implementation", name, "--tasks", str(tasks)]
        status, records = child_records(
            [*arguments, "--workers", str(MEMORY_WORKERS)], timeout=600.0
        )
        if status != 0 or len(records) != 1:
            raise RuntimeError(f"memory run {name} x{tasks} failed: {records}")
        (record,) = records
        rows.append(
            {
                "implementation": name,
                "tasks": tasks,
                "workers": MEMORY_WORKERS,
                "repeat": repeat,
                "peak_rss_growth_mib": int(str(record["peak_rss_growth"])) / 2**20,
                "seconds": record["seconds"],
            }
        )
        progress.step(f"{name} x{tasks}", tasks)
    return rows


STOP_STAGES = ("robust", "beyond")


def stop_run(stage: str, sizes: Sizes, workers: int) -> tuple[float, float]:
    """One run where every second task fails: (seconds from the max_errors-th failure to run()
    returning, seconds the run took). robust runs everything and the caller stops afterwards, as
    the post's caller does; beyond stops itself."""
    raised: list[float] = []
    raising = threading.Lock()

    def job(number: int) -> int:
        time.sleep(sizes.stop_task_seconds)
        if number % 2:
            with raising:
                raised.append(time.perf_counter())
            raise ValueError(f"job {number} failed")
        return number

    jobs = range(1, sizes.stop_tasks + 1)
    started = time.perf_counter()
    if stage == "robust":
        Pool([Task(partial(job, number)) for number in jobs], workers).run()
    else:
        pool = beyond.Pool(
            [beyond.Task(job, number) for number in jobs],
            workers,
            max_errors=sizes.stop_max_errors,
        )
        pool.run()
        if pool.stopped is None or pool.stopped.reason is not beyond.StopReason.MAX_ERRORS:
            raise RuntimeError(f"beyond did not stop at max_errors: {pool.stopped}")
    returned = time.perf_counter()
    if len(raised) < sizes.stop_max_errors:
        raise RuntimeError(f"{stage}: only {len(raised)} failures")
    return returned - sorted(raised)[sizes.stop_max_errors - 1], returned - started


def measure_stop(sizes: Sizes) -> list[dict[str, object]]:
    """7. From the N-th failure to run() returning, in task durations: robust (every task runs,
    the caller gives up afterwards) against beyond (max_errors stops the pool)."""
    workers = 4
    # Interleaved, as everywhere: robust, beyond, robust, beyond...
    plan = [(repeat, stage) for repeat in range(1, sizes.repeats + 1) for stage in STOP_STAGES]
    progress = Progress("stop", len(plan))
    rows: list[dict[str, object]] = []
    for repeat, stage in plan:
        after_failure, seconds = stop_run(stage, sizes, workers)
        rows.append(
            {
                "implementation": stage,
                "workers": workers,
                "tasks": sizes.stop_tasks,
                "max_errors": sizes.stop_max_errors,
                "task_seconds": sizes.stop_task_seconds,
                "repeat": repeat,
                "seconds_after_nth_failure": after_failure,
                "task_durations_after_nth_failure": after_failure / sizes.stop_task_seconds,
                "seconds": seconds,
            }
        )
        progress.step(stage)
    return rows


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    if not rows:
        raise ValueError(f"no rows for {path.name}")
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def metadata(sizes: Sizes) -> dict[str, object]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        # Measured code that differs from the commit says so.
        if git("status", "--porcelain", "--untracked-files=no"):
            commit += "+changes"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "commit": commit,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": sizes.mode,
        "sizes": asdict(sizes),
        "map_buffersize": has_map_buffersize(),
    }


def has_distributed() -> bool:
    return importlib.util.find_spec("distributed") is not None


# How a contender that starts processes (or a cluster of them) runs on.
PROCESS_BASED = ("processes", "cluster")


def measure_all(
    out_dir: Path,
    sizes: Sizes,
    contenders: Sequence[Contender] = BENCHMARKED,
    with_go: bool = True,
) -> None:
    """Run every benchmark named in `sizes.benchmarks`; write NAME.csv and NAME.json for each.

    Each benchmark runs the contenders that have its figure (`Contender.figures`). Each has its
    own metadata file, so that a figure redrawn later always names the machine, versions and date
    of the data it shows, even after `--only` re-measured another one; where a contender started
    processes, the metadata say how (plots.start_method). With `with_go`, the Go pool joins the
    benchmarks of its figures and the Go rows join the failure matrix when Go is on PATH (their
    programs built once for the whole run); those benchmarks' metadata record its version, or why
    it is missing.
    """
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    if "cpu" in sizes.benchmarks and any(
        c.name == LOKY_CHUNKED.name and not c.runs_here() for c in contenders
    ):
        # A peer from PyPI, installed by make: without it, the rest of the run goes on.
        print(
            "loky left out of the CPU benchmark: pip install 'go-worker-pool-py[plots]' "
            "(or: pip install loky)",
            file=sys.stderr,
            flush=True,
        )
    # What this machine cannot run (uvloop, loky, Python 3.14's map(buffersize=)) is left out.
    contenders = [c for c in contenders if c.runs_here()]
    contenders = [c for c in contenders if sizes.dask or c.runs_on != "cluster"]
    if any(c.runs_on == "cluster" for c in contenders) and not has_distributed():
        # The backends extra is optional: without it, the rest of the run goes on.
        print(
            "Dask left out of the dispatch and CPU benchmarks: "
            "pip install 'go-worker-pool-py[backends]' (or: pip install dask distributed)",
            file=sys.stderr,
            flush=True,
        )
        contenders = [c for c in contenders if c.runs_on != "cluster"]
    with ExitStack() as stack:
        # The Dask contender's cluster, if a benchmark started one: closed with the run.
        stack.callback(close_dask)
        wanted = {
            "Go pool": ["bench"] if set(GO_POOL.figures) & set(sizes.benchmarks) else [],
            "Go rows of the failure matrix": (
                go_packages(MATRIX) if "failures" in sizes.benchmarks else []
            ),
        }
        programs = list(dict.fromkeys(p for needed in wanted.values() for p in needed))
        what = " and ".join(name for name, needed in wanted.items() if needed)
        go = stack.enter_context(go_programs(programs, what)) if with_go and programs else None
        go_pool = pool_contender(go) if go is not None else None
        if go_pool is not None and go_pool.contender is not None:
            contenders = [*contenders, go_pool.contender]
        in_figure = {figure: [c for c in contenders if figure in c.figures] for figure in FIGURES}
        benchmarks = {
            "dispatch": lambda: measure_dispatch(sizes, in_figure["dispatch"]),
            "io": lambda: measure_io(sizes, in_figure["io"]),
            "cpu": lambda: measure_cpu(sizes, in_figure["cpu"]),
            "deadlock_map": lambda: measure_deadlock_map(sizes),
            "timeline": lambda: measure_timelines(sizes),
            "failures": lambda: measure_failures(
                sizes.failures_job_seconds,
                sizes.failures_sigint_job_seconds,
                sizes.failures_parallel_runs,
                lambda steps: Progress("failures", steps),
                go=go or GoPrograms(None, {}, {}, "Go left out of this run"),
            ),
            "memory": lambda: measure_memory(sizes, in_figure["memory"]),
            "stop": lambda: measure_stop(sizes),
        }
        starts_processes = {
            name: any(c.runs_on in PROCESS_BASED for c in members)
            for name, members in [*in_figure.items(), ("failures", list(MATRIX))]
        }
        measured = [c for name in sizes.benchmarks for c in in_figure.get(name, [])]
        if any(c.runs_on == "processes" for c in measured):
            # Before any timing: the first run that needed it would pay for its start. (A
            # cluster starts its processes in a child of its own, plots.dask_child.)
            start_the_forkserver()
        for number, name in enumerate(sizes.benchmarks, 1):
            # Which of the benchmarks, and since when: each one's own progress follows.
            print(
                f"benchmark {number} of {len(sizes.benchmarks)}: {name}, "
                f"{time.monotonic() - started:.0f} s into the run",
                file=sys.stderr,
                flush=True,
            )
            about = metadata(sizes)
            if starts_processes.get(name):
                about["start_method"] = START_METHOD
            if go is not None and name in (*GO_POOL.figures, "failures"):
                about |= go.metadata
            rows = benchmarks[name]()
            if name in BEYOND_DASK.figures and (dask := dask_versions()) is not None:
                # What the Dask contender ran on: versions, and the cluster, all settings default.
                about |= {"dask": dask}
                # A cluster for each benchmark, gone before the next one runs.
                close_dask()
            write_csv(out_dir / f"{name}.csv", rows)
            (out_dir / f"{name}.json").write_text(json.dumps(about, indent=2) + "\n")
