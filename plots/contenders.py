"""Every contender of the benchmarks and of the failure matrix, each defined once, here.

A contender is one way to run jobs, ours or one a Python programmer would pick, called as its
users call it. Its entry holds everything the rest of plots/ knows about it:
- `name`: its label in the figures, in the CSV files and in the failure matrix;
- `colour` (the same in every figure), `runs_on` (threads, processes, an event loop...), and
  `kind` (ours, the standard library's, Go's, or a reference with no pool), by which the failure
  matrix groups its rows;
- `figures`, the benchmark figures it appears in, and how it runs their workloads: `run` for
  "dispatch", "io" and "cpu" (a workload, a job count and a worker count in; the results out),
  `memory` for "memory";
- `call`, how the failure matrix calls it, if it has a row there.

plots.measure, plots.failures_measure, plots.draw and the two child programs read this table and
know no contender by anything else. The order of CONTENDERS is the order of the figures' legends
and of the matrix's rows. To add a contender: one entry below, with its `run` or `call` (written
here beside the entry when it is used nowhere else), and a test that runs it
(tests/test_contenders.py has one for the last one added).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import KW_ONLY, dataclass
from functools import partial

from plots import failures, implementations
from plots.failures import Run
from plots.workloads import Workload

# The kinds of contender. The failure matrix draws a line between kinds.
REFERENCE, STAGE, STDLIB, GO = "reference", "stage", "standard library", "Go"
# A pool from PyPI (loky), optional: left out of a run where it is not installed.
LIBRARY = "library"
# The benchmark figures a contender can appear in.
FIGURES = ("dispatch", "io", "cpu", "memory")

Implementation = Callable[[Workload, int, int], list[int]]
# The results, and the seconds the run took as measured by the implementation itself.
TimedImplementation = Callable[[Workload, int, int], tuple[list[int], float]]
# A memory run: the job, a job count and a worker count in; the sum of the results out.
MemoryRun = Callable[[Callable[[int], int], int, int], int]
Caller = Callable[[Run], None]


@dataclass(frozen=True)
class GoProgram:
    """A contender that is a Go program: go/<package>, built once per measurement (plots.golang).

    The failure matrix runs it with `args`, then the workload's own flags (--jobs, --workers,
    --odd-jobs-fail, --exit-job, --give-up-after, --events, --work-seconds), and reads the events
    it appends, which are the ones `plots.failures_child` writes for a Python caller. go/failures
    is the one such program; its comment says how each Go caller maps onto the Python workloads.
    """

    package: str
    args: tuple[str, ...] = ()


def always() -> bool:
    return True


@dataclass(frozen=True)
class Contender:
    """One contender, as the module's docstring describes it."""

    name: str
    _: KW_ONLY
    kind: str
    # "threads", "processes", "event loop", "cluster", "goroutines", or "none" for the plain loop.
    runs_on: str
    # None: matplotlib picks one (a contender that is in no figure needs none).
    colour: str | None = None
    # --- The benchmarks: which figures, and how it runs their workloads. ---
    figures: tuple[str, ...] = ()
    run: Implementation | None = None
    # Set for a contender that times its own run (the Go pool in its own program, Dask in the
    # child that owns the cluster): timing it from here would add a process's start or a round
    # trip to every run. None: timed around `run`.
    run_timed: TimedImplementation | None = None
    # At most this many tasks in the dispatch benchmark, for a contender whose per-task cost
    # would make the benchmark's full count take minutes (Dask: 10 ms and more a task here).
    max_tasks: int | None = None
    # Left out of the CPU figure's workloads of shorter tasks than this: where a task costs a
    # cluster milliseconds, 0.1 ms tasks would only repeat what the dispatch figure shows, slowly.
    cpu_min_task_seconds: float = 0.0
    memory: MemoryRun | None = None
    # Whether this machine has what it needs (uvloop, Python 3.14's map(buffersize=)). Checked
    # when measuring; a contender it cannot run keeps its name and colour for data measured
    # elsewhere.
    runs_here: Callable[[], bool] = always
    # --- The failure matrix: a row there if `call` is set. ---
    call: Caller | GoProgram | None = None
    # Executor.map submits every job before it returns its iterator, and a Ctrl-C that lands
    # in that loop (seen on a loaded machine: the workers had started jobs while the caller was
    # still submitting) leaves the iterator unmade, so nothing cancels the jobs submitted and the
    # with block's shutdown(wait=True) runs them all: 62 started after the SIGINT in one run,
    # where 0 to 8 do once map has returned. The SIGINT run waits for Run.waiting() to measure
    # one thing, Ctrl-C while the caller waits for results, whatever the machine's load.
    says_when_it_waits: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.figures) - set(FIGURES)
        if unknown:
            raise ValueError(f"{self.name}: no such figure {sorted(unknown)}")
        # The Go pool's run is made from its program once that is built (plots.golang).
        timed = {"dispatch", "io", "cpu"} & set(self.figures)
        if self.kind != GO and bool(timed) != (self.run is not None):
            raise ValueError(f"{self.name}: a run for the figures {sorted(timed)}, or neither")
        if ("memory" in self.figures) != (self.memory is not None):
            raise ValueError(f"{self.name}: a memory run and the memory figure, or neither")


def uvloop_installed() -> bool:
    return implementations.DEFAULT_LOOP == "uvloop"


def static_coroutines(loop: str, label: str, colour: str) -> Contender:
    return Contender(
        f"hand-written coroutines, static split ({label})",
        kind=REFERENCE,
        runs_on="event loop",
        colour=colour,
        figures=("io",),
        run=partial(implementations.run_static_coroutines, loop),
        runs_here=uvloop_installed if loop == "uvloop" else always,
    )


# --- The references: no pool at all. The dispatch figure's floor and the CPU figure's baseline
# (the plain loop), and what hand-written threads and coroutines reach on the I/O figure. ---

LOOP = Contender(
    "plain loop",
    kind=REFERENCE,
    runs_on="none",
    colour="#555555",
    figures=("dispatch", "cpu"),
    run=implementations.run_loop,
)
STATIC_THREADS = Contender(
    "hand-written threads, static split",
    kind=REFERENCE,
    runs_on="threads",
    colour="#000000",
    figures=("io",),
    run=implementations.run_static_threads,
)
# One for each loop, so that stage 4 on each loop has its own ceiling (issue 21, target 3).
STATIC_COROUTINES_UVLOOP = static_coroutines("uvloop", "uvloop", "#000000")
STATIC_COROUTINES_STANDARD = static_coroutines("standard", "standard loop", "#888888")

# --- Our stages, in blues; stage 4 in pinks. ---

NAIVE = Contender(
    "naive",
    kind=STAGE,
    runs_on="threads",
    colour="#9ecae1",
    figures=("dispatch", "io"),
    run=implementations.run_naive,
)
# Stage 1 in the matrix: its work fails, and it has no place for an error.
NAIVE_FAILING = Contender(
    "naive (work that fails)", kind=STAGE, runs_on="threads", call=failures.call_naive
)
ERRORS_CHANNEL = Contender(
    "errors_channel",
    kind=STAGE,
    runs_on="threads",
    colour="#4292c6",
    figures=("dispatch", "io"),
    run=implementations.run_errors_channel,
)
ERRORS_CHANNEL_ROOM = Contender(
    "errors_channel, error capacity 100",
    kind=STAGE,
    runs_on="threads",
    call=partial(failures.call_errors_channel, 100),
)
ERRORS_CHANNEL_CAPACITY_1 = Contender(
    "errors_channel, error capacity 1",
    kind=STAGE,
    runs_on="threads",
    call=partial(failures.call_errors_channel, 1),
)
FIX_ROOM = Contender(
    "fix: room for every error",
    kind=STAGE,
    runs_on="threads",
    call=failures.call_room_for_every_error,
)
FIX_DRAIN = Contender(
    "fix: drain while waiting (capacity 1)",
    kind=STAGE,
    runs_on="threads",
    call=failures.call_draining_while_waiting,
)
# In every figure. On CPU-bound work it and ThreadPoolExecutor.map, one thread pool of each kind,
# are enough to show the GIL beside the process pools.
ROBUST = Contender(
    "robust",
    kind=STAGE,
    runs_on="threads",
    colour="#08306b",
    figures=("dispatch", "io", "cpu", "memory"),
    run=implementations.run_robust,
    memory=implementations.memory_robust,
    call=failures.call_robust,
)
BEYOND = Contender(
    "beyond",
    kind=STAGE,
    runs_on="threads",
    colour="#e7298a",
    figures=("dispatch", "io"),
    run=implementations.run_beyond,
    call=failures.call_beyond,
)
BEYOND_STREAMED = Contender(
    "beyond, streamed",
    kind=STAGE,
    runs_on="threads",
    colour="#e7298a",
    figures=("memory",),
    memory=implementations.memory_beyond_streamed,
)

# --- Stage 4's other backends. ---

# uvloop when it is installed, and then the standard loop beside it; the standard loop alone if not.
BEYOND_UVLOOP = Contender(
    "beyond (asyncio, uvloop)",
    kind=STAGE,
    runs_on="event loop",
    colour="#7a0177",
    figures=("dispatch", "io"),
    run=partial(implementations.run_beyond_asyncio, "uvloop"),
    runs_here=uvloop_installed,
)
BEYOND_STANDARD_LOOP = Contender(
    "beyond (asyncio, standard loop)",
    kind=STAGE,
    runs_on="event loop",
    colour="#c994c7",
    figures=("dispatch", "io"),
    run=partial(implementations.run_beyond_asyncio, "standard"),
)
BEYOND_ON_ASYNCIO = Contender(
    "beyond on asyncio", kind=STAGE, runs_on="event loop", call=failures.call_beyond_asyncio
)
BEYOND_ON_PROCESSES = Contender(
    "beyond on processes", kind=STAGE, runs_on="processes", call=failures.call_beyond_processes
)
BEYOND_ON_DASK = Contender(
    "beyond on Dask (LocalCluster)", kind=STAGE, runs_on="cluster", call=failures.BeyondOnDask()
)

# --- The standard library's pools. ---

THREAD_POOL_EXECUTOR = Contender(
    "ThreadPoolExecutor.map",
    kind=STDLIB,
    runs_on="threads",
    colour="#e6550d",
    figures=("dispatch", "io", "cpu", "memory"),
    run=implementations.run_thread_pool_executor,
    memory=implementations.memory_thread_pool_executor,
    call=failures.call_thread_pool_map,
    says_when_it_waits=True,
)


def run_thread_pool_as_completed(work: Workload, job_count: int, workers: int) -> list[int]:
    """A Future per job, submitted up front, each result read as it completes."""
    with ThreadPoolExecutor(max_workers=workers) as executor:
        futures = [executor.submit(work.call, job) for job in range(1, job_count + 1)]
        return [future.result() for future in as_completed(futures)]


THREAD_POOL_AS_COMPLETED = Contender(
    "ThreadPoolExecutor submit + as_completed",
    kind=STDLIB,
    runs_on="threads",
    colour="#a63603",
    figures=("dispatch",),
    run=run_thread_pool_as_completed,
    call=failures.call_thread_pool_as_completed,
)
THREAD_POOL_EXECUTOR_BUFFERED = Contender(
    "ThreadPoolExecutor.map, buffersize",
    kind=STDLIB,
    runs_on="threads",
    colour="#fdae6b",
    figures=("memory",),
    memory=implementations.memory_thread_pool_executor_buffered,
    runs_here=implementations.has_map_buffersize,
)
ASYNCIO = Contender(
    "asyncio (TaskGroup + Semaphore)",
    kind=STDLIB,
    runs_on="event loop",
    colour="#31a354",
    figures=("dispatch", "io"),
    run=implementations.run_asyncio,
)
PROCESSES_CHUNK_1 = Contender(
    "multiprocessing map, chunksize 1",
    kind=STDLIB,
    runs_on="processes",
    colour="#756bb1",
    figures=("dispatch", "io", "cpu"),
    run=implementations.run_processes_chunk_1,
)
PROCESSES_CHUNKED = Contender(
    "multiprocessing map, 4 chunks/worker",
    kind=STDLIB,
    runs_on="processes",
    colour="#bcbddc",
    figures=("dispatch", "io", "cpu"),
    run=implementations.run_processes_chunked,
)
PROCESS_POOL_EXECUTOR_CHUNKED = Contender(
    "ProcessPoolExecutor.map, 4 chunks/worker",
    kind=STDLIB,
    runs_on="processes",
    colour="#9e9ac8",
    figures=("cpu",),
    run=implementations.run_process_pool_chunked,
)

LOKY_CHUNKED = Contender(
    "loky ProcessPoolExecutor.map, 4 chunks/worker",
    kind=LIBRARY,
    runs_on="processes",
    colour="#54278f",
    figures=("cpu",),
    run=implementations.run_loky_chunked,
    runs_here=implementations.loky_installed,
)

# --- Stage 4 on processes and on a cluster, beside the process pools on CPU-bound work: what a
# process pool costs per task shows there, against its peers. ---

BEYOND_PROCESSES = Contender(
    "beyond (processes)",
    kind=STAGE,
    runs_on="processes",
    colour="#1b9e77",
    figures=("cpu",),
    run=implementations.run_beyond_processes,
)
BEYOND_PROCESSES_BATCHED = Contender(
    "beyond (processes), 4 batches/worker",
    kind=STAGE,
    runs_on="processes",
    colour="#66c2a5",
    figures=("cpu",),
    run=implementations.run_beyond_processes_batched,
)
# A cluster's millisecond per task would swamp the I/O figure's 1 ms sleeps: dispatch and CPU
# show it.
BEYOND_DASK = Contender(
    "beyond (Dask LocalCluster, 2 processes)",
    kind=STAGE,
    runs_on="cluster",
    colour="#a6761d",
    figures=("dispatch", "cpu"),
    run=lambda work, job_count, workers: implementations.run_beyond_dask(work, job_count, workers)[
        0
    ],
    run_timed=implementations.run_beyond_dask,
    max_tasks=200,
    cpu_min_task_seconds=0.001,
)

# --- The failure matrix's other standard-library rows. ---

PROCESS_POOL_EXECUTOR = Contender(
    "ProcessPoolExecutor.map",
    kind=STDLIB,
    runs_on="processes",
    call=failures.call_process_pool_map,
    says_when_it_waits=True,
)
MULTIPROCESSING_MAP = Contender(
    "multiprocessing Pool.map",
    kind=STDLIB,
    runs_on="processes",
    call=failures.call_multiprocessing_map,
)
MULTIPROCESSING_IMAP_UNORDERED = Contender(
    "multiprocessing Pool.imap_unordered",
    kind=STDLIB,
    runs_on="processes",
    call=failures.call_multiprocessing_imap_unordered,
)
GATHER = Contender(
    "asyncio gather + Semaphore", kind=STDLIB, runs_on="event loop", call=failures.call_gather
)
GATHER_RETURN_EXCEPTIONS = Contender(
    "asyncio gather(return_exceptions=True)",
    kind=STDLIB,
    runs_on="event loop",
    call=failures.call_gather_return_exceptions,
)
TASK_GROUP = Contender(
    "asyncio TaskGroup + Semaphore",
    kind=STDLIB,
    runs_on="event loop",
    call=failures.call_task_group,
)

# --- Go, in Go's own blue. ---

# The post's Go pool (go/robust/pool) and the post's caller, walking the tasks after Run.
GO_ROBUST = Contender(
    "Go robust pool, the post's caller",
    kind=GO,
    runs_on="goroutines",
    call=GoProgram("failures", ("--caller", "robust")),
)
# What a Go programmer reaches for instead: an errgroup (go/errgroup, x/sync's shape written with
# the standard library) with SetLimit, whose first error cancels the jobs' context.
GO_GROUP = Contender(
    "Go errgroup-style group + SetLimit",
    kind=GO,
    runs_on="goroutines",
    call=GoProgram("failures", ("--caller", "group")),
)
# The Go pool in the benchmarks: go/bench, built and run by plots.golang, which names it after
# the Go release that built it ("Go 1.19 pool (goroutines)"). Not in the CPU figure: CPU-bound
# work there would measure Go, not the pool.
GO_POOL = Contender(
    "Go pool (goroutines)",
    kind=GO,
    runs_on="goroutines",
    colour="#00add8",
    figures=("dispatch", "io"),
)

CONTENDERS = (
    LOOP,
    STATIC_THREADS,
    STATIC_COROUTINES_UVLOOP,
    STATIC_COROUTINES_STANDARD,
    NAIVE,
    NAIVE_FAILING,
    ERRORS_CHANNEL,
    ERRORS_CHANNEL_ROOM,
    ERRORS_CHANNEL_CAPACITY_1,
    FIX_ROOM,
    FIX_DRAIN,
    ROBUST,
    BEYOND,
    BEYOND_STREAMED,
    BEYOND_UVLOOP,
    BEYOND_STANDARD_LOOP,
    BEYOND_ON_ASYNCIO,
    BEYOND_ON_PROCESSES,
    BEYOND_ON_DASK,
    THREAD_POOL_EXECUTOR,
    THREAD_POOL_AS_COMPLETED,
    THREAD_POOL_EXECUTOR_BUFFERED,
    ASYNCIO,
    PROCESSES_CHUNK_1,
    PROCESSES_CHUNKED,
    PROCESS_POOL_EXECUTOR_CHUNKED,
    LOKY_CHUNKED,
    BEYOND_PROCESSES,
    BEYOND_PROCESSES_BATCHED,
    BEYOND_DASK,
    PROCESS_POOL_EXECUTOR,
    MULTIPROCESSING_MAP,
    MULTIPROCESSING_IMAP_UNORDERED,
    GATHER,
    GATHER_RETURN_EXCEPTIONS,
    TASK_GROUP,
    GO_ROBUST,
    GO_GROUP,
    GO_POOL,
)

BY_NAME = {contender.name: contender for contender in CONTENDERS}
# What the benchmarks measure unless told otherwise: every contender in a figure but the
# references (each benchmark adds those it draws against) and the Go pool (plots.measure adds it
# once its program is built).
BENCHMARKED = tuple(c for c in CONTENDERS if c.figures and c.kind not in (REFERENCE, GO))
# The failure matrix's rows, in order.
MATRIX = tuple(contender for contender in CONTENDERS if contender.call is not None)


def colour(name: str) -> str | None:
    """A contender's colour in every figure, by its name (None: matplotlib picks one). The Go
    pool's name carries its Go release, so it goes by its first word."""
    if name in BY_NAME:
        return BY_NAME[name].colour
    return GO_POOL.colour if name.startswith("Go ") else None
