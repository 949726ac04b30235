"""Stage 4's default backend: each worker runs its tasks in its own thread, `Pool(tasks, n)`.

The smallest backend there is: a worker thread (beyond/backends/worker_threads.py) runs each task
itself, with Task.run, and tells checkpoint() and current_token() which task it runs.
"""

from __future__ import annotations

from typing import Any

from beyond.backends.protocol import Runner, SchedulerSeam
from beyond.backends.worker_threads import OneThreadPerWorker
from beyond.cancellation import run_here
from beyond.task import Task


class RunInWorkerThread:
    """How a worker runs a task on the threads backend: itself, in its own thread.

    It is also what checkpoint() finds for this thread (beyond.cancellation.run_here): `task`
    follows the task the worker runs now, `signals` is the run's scheduler.
    """

    __slots__ = ("number", "signals")

    def __init__(self, scheduler: SchedulerSeam[Any], number: int) -> None:
        self.signals = scheduler
        self.number = number
        run_here(self)

    # Here, running a task is Task.run itself: no call of our own in between, which the thread
    # backend would pay for on every task.
    run = staticmethod(Task.run)

    @property
    def task(self) -> Task[Any] | None:
        """The task this thread runs now: what checkpoint() and current_token() look at."""
        return self.signals.current[self.number]

    def close(self) -> None:
        run_here(None)


class Threads(OneThreadPerWorker):
    """The default backend (see the module's docstring)."""

    name = "threads"

    def runner(self, scheduler: SchedulerSeam[Any], number: int) -> Runner:
        return RunInWorkerThread(scheduler, number)


THREADS = Threads()
