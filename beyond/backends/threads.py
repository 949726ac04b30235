"""Stage 4's default backend: each worker runs its tasks in its own thread, `Pool(tasks, n)`.

The smallest backend there is: a worker thread (beyond/backends/worker_threads.py) runs each task
itself, with Task.run (the worker thread tells checkpoint() and current_token() which task it
runs, for every backend).
"""

from __future__ import annotations

from typing import Any

from beyond.backends.protocol import Runner, SchedulerSeam
from beyond.backends.worker_threads import OneThreadPerWorker
from beyond.task import Task


class RunInWorkerThread:
    """How a worker runs a task on the threads backend: itself, in its own thread."""

    __slots__ = ()

    def __init__(self, scheduler: SchedulerSeam[Any], number: int) -> None:
        pass

    # Here, running a task is Task.run itself: no call of our own in between, which the thread
    # backend would pay for on every task.
    run = staticmethod(Task.run)

    def close(self) -> None:
        pass


class Threads(OneThreadPerWorker):
    """The default backend (see the module's docstring)."""

    name = "threads"

    def runner(self, scheduler: SchedulerSeam[Any], number: int) -> Runner:
        return RunInWorkerThread(scheduler, number)


THREADS = Threads()
