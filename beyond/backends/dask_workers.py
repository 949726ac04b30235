"""What runs in the Dask cluster's worker processes for the Dask backend (dask_cluster.py): each
task, unless its pool's stop has reached the worker, with checkpoint() and current_token() working
there as in a thread of the pool; and the worker plugin that carries a pool's stop to every worker.

Imported by the worker processes themselves (distributed sends run_on_worker and PoolStopped by
reference), so it imports nothing of the pool's own process but beyond.cancellation.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from beyond.cancellation import WakesSleepersOnCancel, run_here

# The pools stopped (no task of theirs may start) and cancelled (running ones are told too), by
# id, in this worker process, and the tasks of each pool running here now. Process-wide by nature:
# a mark must outlive the call that sets it (a worker plugin's setup) until the tasks that read it
# arrive. Guarded by _marks_lock, so that a task either sees a mark as it starts or is registered
# before the mark is set, and then told by it.
_marks_lock = threading.Lock()
_STOPPED_HERE: set[str] = set()
_RUNNING_HERE: dict[str, set[_PoolOnWorker]] = {}


class NotStarted:
    """What a task sends back when its pool's stop reached its worker before it began."""

    __slots__ = ()


class Panicked:
    """What a task sends back when fn raised a BaseException that is not an Exception (SystemExit,
    KeyboardInterrupt): the pool's panic, as in a thread. Raised in the worker's task thread, it
    would shut the whole worker process down (distributed lets those two through, to stop the
    worker), Dask would send the task to the next worker to do the same, up to allowed-failures
    times, and the task would end as a KilledWorker error instead of stopping the pool. Sent back as
    a value, it stops the pool, and Pool.run() raises it, as with threads; the worker lives on."""

    __slots__ = ("args", "kind", "notes")

    def __init__(self, error: BaseException) -> None:
        # Sent as its type, arguments and notes, rebuilt by calling the type: pickling it whole
        # goes through tblib, which distributed installs for every exception and which rebuilds it
        # without calling its constructor (a SystemExit(3) came back with code None).
        self.kind = type(error)
        self.args = error.args
        self.notes = list(getattr(error, "__notes__", ()))

    @property
    def error(self) -> BaseException:
        try:
            error = self.kind(*self.args)
        except Exception as odd:
            error = RuntimeError(f"a task raised {self.kind.__name__}{self.args!r}: {odd!r}")
        for note in self.notes:
            error.add_note(note)
        return error


class _TaskOnWorker:
    """What a token reads of a task (beyond.cancellation.TaskClock): its deadline, on this
    process's clock, and its timeout, for the message."""

    __slots__ = ("deadline", "timeout")

    def __init__(self, deadline: float | None, timeout: float | None) -> None:
        self.deadline = deadline
        self.timeout = timeout


class _PoolOnWorker(WakesSleepersOnCancel):
    """What a token reads of a pool (beyond.cancellation.RunSignals): cancelled, the run's
    deadline, and the sleepers a cancel wakes. One per task running on a worker, told by its
    pool's cancel mark."""

    __slots__ = ("_lock", "_sleepers", "cancelled", "run_deadline", "run_timeout")

    def __init__(self, run_deadline: float | None, run_timeout: float | None) -> None:
        self._lock = threading.Lock()
        self._sleepers: set[threading.Lock] = set()
        self.cancelled = False
        self.run_deadline = run_deadline
        self.run_timeout = run_timeout

    def cancel(self) -> None:
        with self._lock:
            self.cancel_and_wake_sleepers()


class _RunningOnWorker:
    """What checkpoint() and current_token() find for a task on a worker
    (beyond.cancellation.TaskRunningHere), as for a task in a thread of the pool."""

    __slots__ = ("signals", "task")

    def __init__(self, task: _TaskOnWorker, signals: _PoolOnWorker) -> None:
        self.task = task
        self.signals = signals


def _deadline_here(seconds_left: float | None) -> float | None:
    # The pool's deadlines are on its own machine's monotonic clock, which means nothing here: it
    # sends the seconds left as it sends the task, and they run from the task's start here. Time
    # the task spent in the scheduler's queue is not counted (the pool's clock still counts it).
    return None if seconds_left is None else time.monotonic() + seconds_left


def run_on_worker(
    pool_id: str,
    fn: Callable[[], Any],
    task_timeout: float | None,
    task_seconds_left: float | None,
    run_timeout: float | None,
    run_seconds_left: float | None,
) -> Any:
    """A task, as the cluster runs it: fn, unless its pool has stopped. The check and the
    registration that a cancel mark looks for are made under one lock, so a task either sees the
    stop and never calls fn, or began before it (and runs on, told of a cancel: beyond.checkpoint()
    in fn raises Cancelled, or TimeoutError past its deadline, as in a thread of the pool)."""
    pool = _PoolOnWorker(_deadline_here(run_seconds_left), run_timeout)
    with _marks_lock:
        if pool_id in _STOPPED_HERE:
            return NotStarted()
        _RUNNING_HERE.setdefault(pool_id, set()).add(pool)
    run_here(_RunningOnWorker(_TaskOnWorker(_deadline_here(task_seconds_left), task_timeout), pool))
    try:
        return fn()
    except Exception:
        raise  # distributed sends it back with its traceback
    except BaseException as panic:
        # Its traceback does not travel with it: its text does, as a note.
        where = "".join(traceback.format_tb(panic.__traceback__))
        panic.add_note(f"raised on a Dask worker (pid {os.getpid()}):\n{where}")
        return Panicked(panic)
    finally:
        run_here(None)
        with _marks_lock:
            running = _RUNNING_HERE.get(pool_id)
            if running is not None:
                running.discard(pool)
                if not running:
                    del _RUNNING_HERE[pool_id]


class PoolStopped(WorkerPlugin):
    """Marks a pool stopped (and, with `cancel`, cancelled) in each worker process: those running
    now, and any that joins later (a worker the nanny restarts has a new process, which must not
    start the pool's tasks)."""

    def __init__(self, pool_id: str, cancel: bool) -> None:
        self.pool_id = pool_id
        self.cancel = cancel

    def setup(self, worker: object) -> None:
        with _marks_lock:
            _STOPPED_HERE.add(self.pool_id)
            if not self.cancel:
                return
            running = list(_RUNNING_HERE.get(self.pool_id, ()))
        for pool in running:
            pool.cancel()

    def teardown(self, worker: object) -> None:
        with _marks_lock:
            _STOPPED_HERE.discard(self.pool_id)


# The Dask scheduler's states for a task it has not sent to any worker yet.
_NOT_SENT = frozenset({"released", "waiting", "queued", "no-worker"})


def not_sent_yet(keys: list[str], dask_scheduler: Any) -> list[str]:
    """Run on the Dask scheduler: which of `keys` it has not sent to any worker."""
    tasks = dask_scheduler.tasks
    return [key for key in keys if key in tasks and tasks[key].state in _NOT_SENT]
