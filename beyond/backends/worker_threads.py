"""The pool's worker threads, shared by every backend that runs a task per worker thread.

Threads, processes and Dask differ only in how one task runs: in the worker's own thread, in its
child process, on the cluster. Each gives each worker a `Runner` for that; everything else is
here, once: the thread, its loop (take a task, run it, record a failure before anything else,
stop on a panic), and the interpreter's exit, which waits for the threads that run a task.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

from beyond.backends.protocol import Runner, SchedulerSeam, StopReason
from beyond.cancellation import run_here
from beyond.task import Task


class OneThreadPerWorker(ABC):
    """A backend whose workers are the pool's threads, one per worker, each running its tasks
    through a Runner of the backend's (made in that thread, as it begins)."""

    name: str
    runs_on: ClassVar[Literal["worker threads"]] = "worker threads"

    @abstractmethod
    def runner(self, scheduler: SchedulerSeam[Any], number: int) -> Runner:
        """How worker `number` runs its tasks. Called in the worker's thread, before its first
        task; if it raises, the run stops with BACKEND_FAILED and run() raises its error."""

    def threads(self, scheduler: SchedulerSeam[Any]) -> list[WorkerThread]:
        """One per worker: as many as tasks for a list (at most concurrency), else concurrency."""
        return [WorkerThread(scheduler, number, self) for number in range(scheduler.worker_count)]


class WorkerThread(threading.Thread):
    """A worker's thread: a daemon, which the interpreter's exit waits for as for the thread that
    started the run (stage 3's workers inherit that thread's daemon flag), but not while it is at
    the source of a stopped pool (see _wait_for_workers_at_exit).

    Not simply a non-daemon thread, as in stage 3: the interpreter waits for those at exit
    whatever they do, and a worker inside the tasks iterable's next() may never come back (a
    generator blocked on a queue or a socket): the process could then never end, even after a
    second Ctrl-C. A task that has started still finishes before the interpreter exits.
    """

    def __init__(
        self, scheduler: SchedulerSeam[Any], number: int, backend: OneThreadPerWorker
    ) -> None:
        super().__init__(
            target=work, args=(scheduler, number, backend), name=f"worker-{number + 1}", daemon=True
        )
        self.number = number
        # A run started by a daemon thread is not waited for, as a daemon thread is not.
        self.waited_for_at_exit = not threading.current_thread().daemon
        # Weak: a thread's scheduler would make a reference cycle (the scheduler keeps the threads
        # that ended), and the run's tasks would wait for the cyclic garbage collector to be
        # freed. While the thread runs, its target's arguments hold the scheduler alive.
        self._scheduler = weakref.ref(scheduler)

    def wait_at_exit(self) -> bool:
        """Join this thread unless it is at the source of a stopped pool; say if it waited."""
        scheduler = self._scheduler()
        if scheduler is None or not self.waited_for_at_exit or not self.is_alive():
            return False
        if scheduler.left_at_the_source(self.number):
            # It runs no task and will start none, and may never come back.
            return False
        self.join()
        return True


def _wait_for_workers_at_exit() -> None:
    """At interpreter exit: wait for the worker threads as for non-daemon threads, except those
    at the source of a stopped pool (see WorkerThread.wait_at_exit). Again until a round waits
    for none, in case a pool started more workers meanwhile. A Ctrl-C here (the third) ends the
    wait, and the process exits without the tasks still running."""
    while sum(
        thread.wait_at_exit()
        for thread in threading.enumerate()
        if isinstance(thread, WorkerThread)
    ):
        pass


# threading's own hook, run at interpreter exit before it joins the non-daemon threads
# (Lib/threading.py, _shutdown): concurrent.futures.thread registers its exit there too. Private,
# hence atexit as the fallback, which runs later, daemon threads still running.
getattr(threading, "_register_atexit", atexit.register)(_wait_for_workers_at_exit)


def work(scheduler: SchedulerSeam[Any], number: int, backend: OneThreadPerWorker) -> None:
    """One worker: run tasks until there is none to take. Go: `for task := range tasksChan`.

    Whatever happens here, the worker says it ended (scheduler.end), last: the waiting thread
    waits for exactly that, and a worker that never said so would keep run() waiting for ever.
    """
    scheduler.begin()
    # checkpoint() and current_token() in this thread find the task this worker runs, for every
    # backend: a task whose fn runs here (the threads backend, one made by hand) can always check
    # for a cancel or its deadline. Where fn runs elsewhere, the backend tells that place itself
    # (child_process_loop.py, dask_workers.py).
    run_here(TaskOfThisWorker(scheduler, number))
    try:
        try:
            runner = backend.runner(scheduler, number)
        except BaseException as error:
            # No way to run a task here (a child process that cannot be made, a cluster gone):
            # the run cannot go on as asked. This worker took no task.
            _backend_failed(scheduler, backend, f"could not start worker {number + 1}", error)
            return
        try:
            _run_tasks(scheduler, number, runner, backend)
        finally:
            try:
                runner.close()
            except BaseException as error:
                _backend_failed(scheduler, backend, f"could not close worker {number + 1}", error)
    finally:
        run_here(None)
        scheduler.end(number)


class TaskOfThisWorker:
    """What checkpoint() finds in a worker thread (beyond.cancellation.run_here): the task the
    worker runs now, and the signals of its run."""

    __slots__ = ("number", "signals")

    def __init__(self, scheduler: SchedulerSeam[Any], number: int) -> None:
        self.signals = scheduler
        self.number = number

    @property
    def task(self) -> Task[Any] | None:
        return self.signals.current[self.number]


def _run_tasks(
    scheduler: SchedulerSeam[Any], number: int, runner: Runner, backend: OneThreadPerWorker
) -> None:
    # Looked up once: this loop runs once per task.
    run, failures = runner.run, scheduler.failures
    for task in scheduler.take(number):
        try:
            failed = run(task)
        except BaseException as panic:
            # Only a panic gets here (Task.run keeps every Exception). Stop the pool so that no
            # worker starts another task; the others finish what they hold.
            scheduler.panicked(panic, task)
            return
        if failed is False:
            continue
        if failed is not True:
            # Not Task.run's answer (a runner made by hand that forgot to return it, say):
            # max_errors cannot count this task, so the run cannot go on as promised.
            error = TypeError(f"its runner's run() returned {failed!r}, not Task.run's bool")
            _backend_failed(scheduler, backend, "broke the seam", error)
            return
        # Recorded first, with one atomic append, before any call that could let another thread
        # run: CPython switches threads only at its eval breaker (a function's start, a loop's
        # jump back, the return of a call into C), and there is none between fn's exception
        # reaching Task.run and this append. So no other worker can start a task between this
        # failure and its record (see Scheduler.take_next).
        failures.append(None)
        if len(failures) >= scheduler.max_errors:
            scheduler.reached_max_errors()


def _backend_failed(
    scheduler: SchedulerSeam[Any], backend: OneThreadPerWorker, what: str, error: BaseException
) -> None:
    # run() raises the error once every worker has ended, as for a panic.
    scheduler.stop(
        StopReason.BACKEND_FAILED, f"the {backend.name} backend {what}: {error!r}", error=error
    )
