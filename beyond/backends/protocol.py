"""The seam between stage 4's scheduler and the backends that run its tasks.

The scheduler (beyond/scheduler.py) decides everything about a run: what to take next,
max_errors, the deadlines, when the run stops and why, the hand-over to the loop over the pool. A
backend decides only where a task runs: in the worker's own thread, in a child process, on a Dask
cluster, on an event loop. What one may ask of the other is in this module, and nothing else is:
a backend imports this module, beyond.task and beyond.cancellation, never the scheduler or the
pool (tests/test_import_circles.py checks it), and touches no private name of theirs.

Two kinds of backend:

- `WorkerThreadsBackend`: the pool starts the threads it gives (`threads(scheduler)`) and waits
  for them, Ctrl-C included. Threads, processes and Dask give one thread per worker, each running
  its tasks through a `Runner` (beyond/backends/worker_threads.py); a backend that feeds many
  workers from one thread (a dispatcher sending tasks ahead to child processes) gives that one.
- `EventLoopBackend`: the backend runs the whole run itself, on an event loop (asyncio).

docs/stage4.md ("The seam") states the contract in prose, with how to add a backend.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, Protocol, TypeGuard, TypeVar

from beyond.task import Task

Result = TypeVar("Result")


class StopReason(enum.Enum):
    """Why a pool stopped before every task had run. See `Pool.stopped`."""

    MAX_ERRORS = "max_errors"  # max_errors tasks failed
    CANCELLED = "cancelled"  # cancel(), or the loop over the pool ended early
    TIMEOUT = "timeout"  # the run's deadline passed
    INTERRUPTED = "interrupted"  # Ctrl-C (or another exception) in the thread waiting for the pool
    PANIC = "panic"  # a task raised a BaseException that is not an Exception
    BAD_SOURCE = "bad source"  # the tasks iterable raised, or gave something that is not a Task
    # The backend can run no more tasks: its worker processes cannot start, its Dask client or
    # scheduler is gone, or it could not give a worker what it runs tasks with. run() raises the
    # backend's error, as for a panic.
    BACKEND_FAILED = "backend failed"


@dataclass(frozen=True)
class Stopped:
    """A pool stopped early: why (for a program) and a sentence saying so (for a person)."""

    reason: StopReason
    message: str


class NoRoom(enum.Enum):
    """The type of NO_ROOM."""

    NO_ROOM = "no room yet"


# What SchedulerSeam.take_next() gives in iteration when the workers are as far ahead of the loop
# over the pool as they may be: wait for room (wait_for_room(), or want_room() and set_on_room()),
# then take again.
NO_ROOM: Final = NoRoom.NO_ROOM


class SchedulerSeam(Protocol[Result]):
    """What a backend may ask of the scheduler of one run. Workers are numbered from 0 to
    `worker_count - 1`; a backend that runs all of them from one thread uses number 0."""

    @property
    def concurrency(self) -> int: ...

    @property
    def worker_count(self) -> int:
        """How many workers to start: one per task for a short list, at most `concurrency`."""

    @property
    def streaming(self) -> bool:
        """The run is a loop over the pool (iteration): each finished task is handed over."""

    @property
    def tasks_are_a_list(self) -> bool:
        """The pool's tasks are a list: taking one runs none of the program's code, so a backend
        may take tasks ahead of its workers, from any thread, without blocking. Otherwise a
        task is taken only for a free worker, and next() may take as long as the iterable likes
        (see docs/stage4.md, "Tasks are taken only by a free worker")."""

    # --- A worker thread's life (WorkerThreadsBackend). ---

    def begin(self) -> None:
        """A thread that runs tasks, first of all: the waiting thread now waits for it."""

    def end(self, number: int | None) -> None:
        """The same thread, last of all, whatever happened: it has ended. None: a thread of the
        backend's that takes no task itself (a dispatcher that feeds child processes, while
        another thread reads the tasks iterable as worker 0): its end touches no worker's slot."""

    def left_at_the_source(self, number: int) -> bool:
        """The run has stopped and worker `number` is inside the tasks iterable's next() (or in
        line for it): it runs no task, will start none, and may never come back."""

    def take(self, number: int) -> Iterator[Task[Result]]:
        """Worker `number`'s tasks, one each time it is free, until none is left or the run
        stops; blocking (in iteration it waits for room). Each task it gives has started: its
        clock runs. In iteration, each task it gave goes to the loop over the pool at the next
        take, so a worker that takes with take() hands nothing over itself."""

    # --- Taking without blocking (a backend that waits its own way). ---

    def take_next(self, number: int) -> Task[Result] | NoRoom | None:
        """The next task that may start, NO_ROOM (iteration: no room yet), or None: nothing
        more (the tasks are exhausted, or the run stopped). A task given here has passed the
        last check (stop, max_errors, the run's deadline) but not started: start its clock
        (start_clock) as it starts, or say it never did (not_started)."""

    def want_room(self) -> bool:
        """After NO_ROOM: count the caller as waiting for room, then say whether there is room
        now. If not, the waiters are woken (set_on_room's callback, wait_for_room's sleepers) once
        the loop over the pool has taken enough, or as the run stops."""

    def wait_for_room(self) -> bool:
        """After NO_ROOM, in a thread that may block: sleep until there is room (True) or the run
        stops (False)."""

    def set_on_room(self, callback: Callable[[], None] | None) -> None:
        """Have `callback()` called, the scheduler's lock held, each time the waiters for room are
        woken: for a backend that waits for room elsewhere than in wait_for_room(). It may do no
        more than stop() may. None: no more calls."""

    # --- A task's start, its clock, its outcome. ---

    @property
    def current(self) -> Sequence[Task[Result] | None]:
        """What each worker that takes with take() runs now (read only)."""

    def start_clock(self, task: Task[Result]) -> None:
        """The task starts now (again: a fresh child process is ready for it): its deadline runs
        from now, and the waiting thread wakes for it."""

    def not_started(self, number: int) -> None:
        """The task worker `number` took never started after all (the backend could not start
        it): it stays not run, and the loop over the pool never sees it."""

    @property
    def failures(self) -> list[None]:
        """One item per failed task (an Exception other than Cancelled): append None at once,
        before any other call, so that no other worker starts a task in between (see
        beyond/backends/worker_threads.py); then, at `max_errors` items, reached_max_errors()."""

    @property
    def max_errors(self) -> int:
        """The pool's max_errors, or sys.maxsize when it has none."""

    def reached_max_errors(self) -> None: ...

    def panicked(self, panic: BaseException, task: Task[Result]) -> None:
        """A task raised a BaseException that is not an Exception (Go's panic): the run stops,
        and run() raises it once every worker has ended."""

    def hand_over(self, task: Task[Result]) -> None:
        """Iteration: a finished task goes to the loop over the pool (for a backend that does not
        take with take(), which hands over by itself)."""

    def handed_over(self) -> None:
        """Iteration, for a backend that keeps its finished tasks itself (an event loop): the loop
        over the pool has taken one, so there is room for one more."""

    # --- Stopping, and what a running task may know. ---

    @property
    def stopped(self) -> Stopped | None: ...

    @property
    def error(self) -> BaseException | None:
        """What run() raises once every worker has ended: a panic, the tasks iterable's error, or
        the backend's."""

    @property
    def cancelled(self) -> bool:
        """Running tasks must stop: cancel(), Ctrl-C, the run's deadline, a loop left early."""

    def stop(
        self,
        reason: StopReason,
        message: str,
        *,
        cancel: bool = False,
        error: BaseException | None = None,
    ) -> None:
        """No task starts from now on; with `cancel`, running ones are told. The first reason and
        error win. Safe from any thread and from a signal handler."""

    def set_on_stop(self, callback: Callable[[StopReason, bool], None] | None) -> None:
        """Have `callback(reason, cancel)` called, the scheduler's lock held, by every stop from
        now on: for a backend that waits elsewhere than where the scheduler wakes it. It may do
        no more than stop() may (set fields, wake a loop or a pipe). None: no more calls."""

    def end_run(self, *, completed: bool) -> None:
        """The run is over: on_stop is called no more, and if every worker ended (`completed`),
        cancel() does nothing from now on."""

    @property
    def run_deadline(self) -> float | None:
        """When the run must end by, on the time.monotonic() clock; None for no deadline."""

    @property
    def run_timeout(self) -> float | None: ...

    def add_sleeper(self, woken: threading.Lock) -> None:
        """Release `woken` once when the run is cancelled (at once if it is already)."""

    def discard_sleeper(self, woken: threading.Lock) -> bool:
        """Forget `woken`; True if no cancel released it."""

    @property
    def overdue_grace(self) -> float: ...

    def report_overdue(self, task: Task[Result]) -> bool:
        """Record a task still running past its deadline and the grace, unless it has finished or
        is recorded already; True if recorded now (then warn with OverdueWarning)."""


# What an EventLoopBackend is given to begin the run: `begin(streaming)` checks that the pool has
# not run yet and gives the run's scheduler.
BeginRun = Callable[[bool], SchedulerSeam[Result]]


class Runner(Protocol):
    """How one worker thread runs a task (a backend with one thread per worker makes one per
    thread, in that thread: beyond/backends/worker_threads.py)."""

    def run(self, task: Task[Any]) -> bool:
        """Run the task once, through Task.run, and return what Task.run returned (whether its
        failure counts toward max_errors). Only a panic may be raised."""

    def close(self) -> None:
        """The worker has taken its last task: release what the runner holds."""


class WorkerThreadsBackend(Protocol):
    """A backend whose tasks are run by threads the pool starts and waits for."""

    name: str
    # Which kind of backend this is, for the Pool to tell with a plain comparison. Not with an
    # isinstance() on a runtime_checkable Protocol: that runs Python code of typing's, on 3.11 a
    # generator expression, and a Ctrl-C landing as that generator is cleaned up is printed
    # ("Exception ignored") and dropped: the run then went on as if no Ctrl-C had come.
    runs_on: ClassVar[Literal["worker threads"]]

    def threads(self, scheduler: SchedulerSeam[Any]) -> Sequence[threading.Thread]:
        """The threads that run this run's tasks, not yet started. Each calls scheduler.begin()
        first and scheduler.end(number) last, whatever happens."""


class EventLoopBackend(Protocol):
    """A backend that runs the whole run itself, on an event loop (asyncio): the pool hands it
    the way to begin the run, and it keeps the scheduler's rules with worker coroutines."""

    name: str
    runs_on: ClassVar[Literal["an event loop"]]  # see WorkerThreadsBackend

    def run_pool(self, begin: BeginRun[Any]) -> None: ...

    def stream_pool(self, begin: BeginRun[Result]) -> Generator[Task[Result], None, None]: ...

    async def run_pool_async(self, begin: BeginRun[Any]) -> None: ...

    def stream_pool_async(self, begin: BeginRun[Result]) -> AsyncGenerator[Task[Result], None]: ...


# Where a Pool's tasks run: which of the two, `backend.runs_on` says.
Backend = WorkerThreadsBackend | EventLoopBackend


def is_a_backend(candidate: object) -> TypeGuard[Backend]:
    """A backend made by hand: it has a name and says which kind it is (no isinstance() on the
    Protocols: see WorkerThreadsBackend.runs_on)."""
    return isinstance(getattr(candidate, "name", None), str) and getattr(
        candidate, "runs_on", None
    ) in ("worker threads", "an event loop")
