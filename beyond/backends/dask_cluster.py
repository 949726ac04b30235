"""Stage 4 on a Dask cluster: `Pool(tasks, concurrency, backend=client)`, client a dask Client.

What it shows: the stage-4 pool, unchanged, running its tasks on a `dask.distributed` cluster: one
machine (a `LocalCluster`) or many (a scheduler address), with the same code. Each of the pool's
worker threads sends its task to the cluster and waits for the outcome, so at most `concurrency`
tasks are in flight, and everything else (what to take next, max_errors, cancel(), deadlines,
streaming, the stop reason) is the pool's own (beyond/scheduler.py, worker_threads.py). Only how
one task runs changes: this module's runner replaces the threads backend's.

    from dask.distributed import Client, LocalCluster

    if __name__ == "__main__":  # the cluster's worker processes import this module again
        with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
            pool = Pool(tasks, concurrency=2, backend=client)  # or Client("tcp://scheduler:8786")
            for task in pool:
                print(task.err or task.result)

What a task keeps: its result, or its error with the traceback from the worker that raised it
(distributed rebuilds the remote frames on the exception). A task that cannot be sent (fn does not
pickle) fails alone, with that error.

Stopping (no task of the pool starts on the cluster after a stop; running tasks are told of a
cancel, and checkpoint() and current_token() work on the worker as in a thread of the pool),
deadlines (cooperative, counted on the worker's clock from the task's start there) and what Dask
retries: docs/stage4-dask.md, and dask_workers.py and dask_lost_workers.py for how.

When the client is closed, or loses its scheduler (killed, or its machine gone): distributed
cancels the futures in flight, but not always all of them (one sent as the client closes, or while
it reconnects, is never resolved: `future.result()` waits for ever, 3 of 3 probes with the
scheduler killed), and a result being fetched then fails with CommClosedError. So a worker thread
waits on its future in slices of CLIENT_CHECK_SECONDS, looking at the client's status between them,
and treats any status but "running", and any outcome but the task's own, as the cluster lost: the
tasks in flight fail with `ClusterLost`, no other task starts (those never sent stay `finished ==
False`, as after any stop: an endless generator would fail for ever), the pool stops with
`StopReason.BACKEND_FAILED`, and run() raises `ClusterLost`. The bound: run() returns within
CLIENT_CHECK_SECONDS of the client's status leaving "running", plus the end of the calls in
progress: at once when the client is closed or the scheduler's process dies (a scheduler cut off by
the network is seen when distributed's heartbeats and timeouts say so). The pool makes no call to a
cluster it has lost, nor waits for distributed's reconnect timeout.

What a task costs: a round trip through the scheduler, as Dask's own submit + result (about 13
ms with one task in flight on a 2-CPU machine here; `python -m plots.dask_overhead`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from typing import Any

try:
    from distributed import Client, Future
except ImportError:
    # One line, naming what to install; the ImportError's own text would name only the module.
    raise ImportError(
        "the Dask backend needs dask and distributed: pip install 'go-worker-pool-py[backends]' "
        "(or: pip install dask distributed)"
    ) from None

from beyond.backends.dask_lost_workers import (
    LostWorkerWatch,
    client_gone,
    outcome_lost,
    runs_at_most,
)
from beyond.backends.dask_workers import (
    NotStarted,
    Panicked,
    PoolStopped,
    not_sent_yet,
    run_on_worker,
)
from beyond.backends.protocol import Runner, SchedulerSeam, StopReason
from beyond.backends.worker_threads import OneThreadPerWorker
from beyond.task import Task, quoted_name

# How often a worker thread waiting on its task's future looks at the client: a future whose
# client has closed or lost its scheduler may never be resolved, and nothing wakes that wait.
# Also the bound on how long run() takes to notice (see the module's docstring).
CLIENT_CHECK_SECONDS = 0.25


class RerunWarning(UserWarning):
    """A task may have run more than once: the worker it was assigned to was lost, and Dask ran it
    again on another worker. The task keeps the outcome of its last run."""


class ClusterLost(Exception):
    """The pool's Dask client was closed, or lost its scheduler, while the task was in flight: it
    may or may not have run. The pool stops, and run() raises a ClusterLost of its own."""


class WorkerLost(Exception):
    """The worker a task was assigned to was lost, and the pool had stopped before Dask could run
    the task again: it may have started on the lost worker and been cut off."""


class _Raised:
    """An exception that came back for a task, kept until the task takes it as its outcome."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class DaskBackend(OneThreadPerWorker):
    """The backend for `Pool(..., backend=client)`: one per Pool.

    `rerun`: the tasks that may have run more than once (see RerunWarning), in report order.
    """

    name = "dask"

    def __init__(self, client: Client) -> None:
        # Any: distributed's Client is mostly untyped, and mypy --strict refuses its calls.
        self.client: Any = client
        self.rerun: list[Task[Any]] = []
        # Names the pool's tasks on the cluster and its stop mark in the worker processes.
        self.pool_id = uuid.uuid4().hex
        # Numbers the tasks' keys; next() on a count is one C call, atomic under the GIL.
        self._serial = itertools.count(1)
        # Guards every field below.
        self._lock = threading.Lock()
        # Runners made and not yet closed: the first begins the run's watch, the last ends it.
        self._runners = 0
        # The tasks sent and not yet back, by key (None: about to be sent), and the workers lost
        # while each was assigned to them (written by the client's event loop thread).
        self._in_flight: dict[str, Future[Any] | None] = {}
        self._lost: dict[str, list[str]] = {}
        # The marks sent to the cluster (or being sent): "stopped", then maybe "cancelled"; the
        # names of those registered, to remove at the end; the keys the stop cancelled.
        self._marks_sent: set[str] = set()
        self._marks_registered: list[str] = []
        self._dropped: set[str] = set()
        # A thread that passes a cancel (cancel(), the run's timeout, Ctrl-C) on to the cluster
        # at once: the worker threads are all waiting on their tasks then, and may go on waiting.
        self._watcher: threading.Thread | None = None
        self._wake = threading.Lock()
        self._watch: LostWorkerWatch | None = None

    def runner(self, scheduler: SchedulerSeam[Any], number: int) -> Runner:
        with self._lock:
            self._runners += 1
            if self._runners == 1:
                self._begin(scheduler)
        return DaskRunner(self, scheduler, number)

    def _begin(self, scheduler: SchedulerSeam[Any]) -> None:
        """Lock held, by the first runner: watch for lost workers and for a cancel."""
        # Subscribed before any task is sent: the subscription and the tasks go down the same
        # ordered stream to the scheduler, so no worker can be lost unseen while a task is out.
        # Never raises (this runs as a worker thread begins, before it can say it ended): a
        # client closed since the Pool was made refuses it, and the first task then finds the
        # client gone and stops the run.
        try:
            self._watch = LostWorkerWatch.on(self.client, self)
        except Exception:
            self._watch = None
        # The watcher sleeps as Token.sleep does: on a lock the pool's cancel releases (at once if
        # it is cancelled already), or, if no cancel comes, the last runner does.
        self._wake = threading.Lock()
        self._wake.acquire()
        scheduler.add_sleeper(self._wake)
        self._watcher = threading.Thread(
            target=self._pass_on_a_cancel, args=(scheduler,), name="dask-stop-watcher"
        )
        self._watcher.start()

    def _pass_on_a_cancel(self, scheduler: SchedulerSeam[Any]) -> None:
        self._wake.acquire()
        if scheduler.cancelled:
            self._stop_on_cluster(cancel=True)

    def runner_closed(self, scheduler: SchedulerSeam[Any]) -> None:
        """A runner's worker thread has ended. Never raises: its worker must still say it ended."""
        if scheduler.stopped is not None and not isinstance(scheduler.error, ClusterLost):
            # max_errors, a panic or a bad tasks iterable (a lost cluster has no one to tell): a
            # stop the thread that ends here made (no cancel: running tasks finish), so it passes
            # it on itself, before anything of the run is undone. A cancel is the watcher's.
            self._stop_on_cluster(cancel=False)
        with self._lock:
            self._runners -= 1
            if self._runners > 0:
                return
            watcher, self._watcher = self._watcher, None
            watch, self._watch = self._watch, None
        # The last runner: nothing of the pool is in flight any more. No cancel released the
        # watcher (and none will, once it is discarded): release it here.
        if scheduler.discard_sleeper(self._wake):
            self._wake.release()
        if watcher is not None:
            watcher.join()
        if watch is not None:
            watch.forget(self)
        if client_gone(self.client) is not None:
            # The marks went with the cluster (or stay on a scheduler this client cannot reach).
            return
        for name in self._marks_registered:
            # Every task is back, so no task of this pool can start any more: the marks can go.
            self._quietly(
                "remove the pool's stop mark from the workers",
                functools.partial(self.client.unregister_worker_plugin, name),
            )

    def _stop_on_cluster(self, *, cancel: bool) -> None:
        """No task of this pool starts on the cluster from now on; with `cancel`, the running ones
        are told too (their checkpoint() raises Cancelled). Once each; never raises."""
        mark = "cancelled" if cancel else "stopped"
        if client_gone(self.client) is not None:
            # Nothing to tell, and a call to a client that tries to reconnect could wait for its
            # whole reconnect timeout.
            return
        with self._lock:
            if mark in self._marks_sent:
                return
            self._marks_sent.add(mark)
        # 1. Mark the pool stopped in every worker process, now and as workers join. Registering
        # waits for every worker's setup, so from here on a task that begins does not call fn.
        # A name per mark: registering a name again would tear the old mark down first, and a
        # task could start in between.
        name = f"beyond-{mark}-{self.pool_id}"
        if not self._quietly(
            "mark the pool stopped on the workers",
            lambda: self.client.register_plugin(PoolStopped(self.pool_id, cancel), name=name),
        ):
            # Without the mark, a task we cancel below might still start: cancel nothing.
            return
        with self._lock:
            self._marks_registered.append(name)
        # 2. Cancel what the scheduler has not sent to a worker yet. Should it send one between
        # the question and the cancel, the worker finds the mark and does not call fn: a task we
        # cancel never runs.
        with self._lock:
            keys = [key for key, future in self._in_flight.items() if future is not None]
        if not keys:
            return
        unsent: list[str] = []
        self._quietly(
            "find the tasks not yet sent to a worker",
            lambda: unsent.extend(self.client.run_on_scheduler(not_sent_yet, keys)),
        )
        with self._lock:
            dropped = [key for key in unsent if self._in_flight.get(key) is not None]
            futures = [self._in_flight[key] for key in dropped]
            self._dropped.update(dropped)
        if futures:
            self._quietly("cancel the tasks not yet sent", lambda: self.client.cancel(futures))

    def _quietly(self, what: str, call: Callable[[], object]) -> bool:
        """call(); on failure (the scheduler unreachable, say) warn and go on: this runs where a
        worker thread ends, which must not raise. True if it worked."""
        try:
            call()
        except Exception as error:
            # -W error: the warning itself raises; there is nowhere left to say it.
            with contextlib.suppress(Exception):
                warnings.warn(f"could not {what}: {error!r}", RuntimeWarning, stacklevel=2)
            return False
        return True

    def worker_removed(self, worker: str, keys: Iterable[str]) -> None:
        """The client's event loop thread: the scheduler removed `worker`, which held `keys`."""
        with self._lock:
            for key in keys:
                if key in self._in_flight:
                    self._lost.setdefault(key, []).append(worker)

    # --- What a runner tells the backend of each task's trip to the cluster. ---

    def new_key(self, task: Task[Any]) -> str:
        """A key for the task on the cluster, watched from now on: a worker lost while the task
        is assigned to it is reported for it from before the task is sent."""
        key = f"{_prefix(task.fn)}-{self.pool_id}-{next(self._serial)}"
        with self._lock:
            self._in_flight[key] = None
        return key

    def sent(self, key: str, future: Any) -> None:
        with self._lock:
            self._in_flight[key] = future

    def back(self, key: str) -> tuple[list[str] | None, bool]:
        """The task is back: the workers lost while it was assigned to them (None: none), and
        whether the pool's stop cancelled it before the scheduler sent it to any worker."""
        with self._lock:
            del self._in_flight[key]
            lost = self._lost.pop(key, None)
            dropped = key in self._dropped
            self._dropped.discard(key)
        return lost, dropped

    def may_have_rerun(self, task: Task[Any]) -> None:
        with self._lock:
            self.rerun.append(task)


class DaskRunner:
    """How a worker thread runs a task on the cluster: send it, wait for it, keep its outcome."""

    __slots__ = ("backend", "number", "scheduler")

    def __init__(self, backend: DaskBackend, scheduler: SchedulerSeam[Any], number: int) -> None:
        self.backend = backend
        self.scheduler = scheduler
        self.number = number

    def run(self, task: Task[Any]) -> bool:
        key = self.backend.new_key(task)
        outcome = self._send_and_wait(key, task)
        lost, dropped = self.backend.back(key)
        if isinstance(outcome, _NeverSent):
            # The cluster was gone before the task could be sent: it never ran, and the pool has
            # stopped (as for NotStarted below).
            self.scheduler.not_started(self.number)
            return False
        if dropped or isinstance(outcome, NotStarted):
            if not lost:
                # The stop came first: fn never ran. The task stays `finished == False`, and the
                # pool does not hand it to the loop, as a task the thread pool never started.
                self.scheduler.not_started(self.number)
                return False
            outcome = _Raised(
                WorkerLost(
                    f"worker {', '.join(lost)} was lost while task {quoted_name(task)} was "
                    "assigned to it: it may have started there and been cut off; the pool had "
                    "stopped, so Dask did not run it again"
                )
            )
        elif isinstance(outcome, Panicked):
            # Task.run records it and raises it on: the worker thread stops the pool.
            outcome = _Raised(outcome.error)
        elif (attempts := runs_at_most(_error_of(outcome), lost)) > 1:
            outcome = self._rerun(task, attempts, lost or [], outcome)

        def kept() -> Any:
            if isinstance(outcome, _Raised):
                raise outcome.error
            return outcome

        return task.run(kept)

    def _send_and_wait(self, key: str, task: Task[Any]) -> Any:
        """fn's result, run on the cluster; a _Raised if it (or sending it) failed; _NeverSent
        if the cluster was gone before it could be sent (the pool is stopped then)."""
        backend, scheduler = self.backend, self.scheduler
        now = time.monotonic()
        task_left = None if task.deadline is None else task.deadline - now
        run_left = None if scheduler.run_deadline is None else scheduler.run_deadline - now
        client = backend.client
        if (gone := client_gone(client)) is not None:
            self._stop_the_run(gone)
            return _NeverSent()
        # retries=0: a task that raises is not run again. A caller's `dask.annotate(retries=...)`
        # does not reach here: annotations live in a ContextVar, and a new thread (this worker's)
        # starts with an empty context.
        try:
            future = backend.client.submit(
                run_on_worker,
                backend.pool_id,
                task.bound(),
                task.timeout,
                task_left,
                scheduler.run_timeout,
                run_left,
                key=key,
                pure=False,
                retries=0,
            )
        except Exception as not_sent:
            if (gone := client_gone(client)) is not None:
                # Closed as the task was being sent: it never reached the cluster.
                self._stop_the_run(gone)
                return _NeverSent()
            # fn does not pickle: this task fails, the others run on.
            not_sent.add_note(f"the pool could not send task {key} to the cluster")
            return _Raised(not_sent)
        backend.sent(key, future)
        try:
            return self._wait(future, task)
        finally:
            # Let the scheduler forget it (and the worker drop the result): held on, it would be
            # computed again should that worker be lost. Never raises: a closed client's loop
            # refuses the callback, and there is nothing left to forget then.
            with contextlib.suppress(Exception):
                future.release()

    def _wait(self, future: Any, task: Task[Any]) -> Any:
        """The future's outcome (fn's result, or a _Raised), waiting in slices and looking at the
        client between them: ClusterLost once it is gone (see the module's docstring).

        Why not future.result(timeout=...) in a loop: its timeout runs on the client's event loop
        (asyncio.timeout), and on CPython 3.11 a timeout that fires as the result arrives leaves
        the call a bare CancelledError, which distributed's sync() turns into UnboundLocalError
        for a task that succeeded (seen here under load, 1 task in about 50). So the outcome is
        fetched by one coroutine on the client's loop for the whole wait, the one result() runs
        (Future._result: it waits for the task, then raises its error or fetches its result), and
        this thread waits on its concurrent.futures handle, whose timeout never touches it.
        (client.gather(..., asynchronous=True) would do too, but a gather cancelled as it waits
        leaves a task of its own behind, logged as "Task exception was never retrieved".)
        """
        client = self.backend.client
        fetching = future._result()
        try:
            outcome = asyncio.run_coroutine_threadsafe(fetching, client.loop.asyncio_loop)
        except Exception as refused:
            # The client's loop has closed.
            fetching.close()
            return self._lost(task, client_gone(client) or "has no event loop running", refused)
        while True:
            finished = outcome.done()
            try:
                return outcome.result(timeout=CLIENT_CHECK_SECONDS)
            except Exception as raised:
                if finished:
                    # The task's own outcome, unless the cluster went with it (outcome_lost).
                    if (gone := outcome_lost(client, future, raised)) is not None:
                        return self._lost(task, gone, raised)
                    return _Raised(raised)
                # The slice passed (or the outcome just came: the next call answers at once).
                if not outcome.done() and (gone := client_gone(client)) is not None:
                    outcome.cancel()
                    return self._lost(task, gone, raised)

    def _lost(self, task: Task[Any], gone: str, cause: BaseException | None) -> _Raised:
        """The task's outcome once the cluster is gone with it in flight; the pool stops."""
        self._stop_the_run(gone)
        error = ClusterLost(
            f"the Dask client {gone} while task {quoted_name(task)} was in flight: it may or may "
            "not have run on the cluster"
        )
        error.__cause__ = cause
        return _Raised(error)

    def _stop_the_run(self, gone: str) -> None:
        # Made, not raised, here: run() raises it in the caller's thread. The first stop wins,
        # so only the first worker to see the loss words the run's error.
        stopped = ClusterLost(
            f"the Dask client {gone}: no other task of the pool starts, and those in flight "
            "failed with ClusterLost"
        )
        self.scheduler.stop(StopReason.BACKEND_FAILED, str(stopped), error=stopped)

    def _rerun(self, task: Task[Any], attempts: int, lost: list[str], outcome: Any) -> Any:
        """Say that `task` may have run more than once; the outcome to keep."""
        where = f"worker {', '.join(lost)}" if lost else "each worker it was assigned to"
        message = (
            f"task {quoted_name(task)} may have started up to {attempts} times: {where} was lost "
            "while the task was assigned to it, and Dask sent it to another worker "
            "(distributed.scheduler.allowed-failures); the task keeps the outcome of its last run"
        )
        self.backend.may_have_rerun(task)
        if isinstance(outcome, _Raised):
            outcome.error.add_note(message)
        try:
            warnings.warn(RerunWarning(message), stacklevel=2)
        except Exception as raised:
            # -W error turned the warning into an exception: then it is the task's outcome.
            return _Raised(raised)
        return outcome

    def close(self) -> None:
        self.backend.runner_closed(self.scheduler)


def _error_of(outcome: Any) -> BaseException | None:
    return outcome.error if isinstance(outcome, _Raised) else None


class _NeverSent:
    """What _send_and_wait returns for a task it did not send because the cluster was gone."""

    __slots__ = ()


def _prefix(fn: Callable[[], Any]) -> str:
    """A task key's first part: fn's name, so that the dashboard groups the pool's tasks by it."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "".join(c if c.isalnum() or c == "_" else "_" for c in str(name)) or "task"


def dask_backend(argument: object) -> DaskBackend:
    """The backend for `Pool(..., backend=argument)`, argument a connected, synchronous Client."""
    if not isinstance(argument, Client):
        raise TypeError(f"backend must be a dask.distributed.Client, got {type(argument).__name__}")
    if argument.asynchronous:
        raise ValueError(
            "the Dask backend needs a synchronous Client: its worker threads wait on futures "
            "(make it with Client(...), not Client(..., asynchronous=True))"
        )
    if argument.status != "running":
        raise ValueError(f"the dask Client is not connected (its status is {argument.status!r})")
    return DaskBackend(argument)
