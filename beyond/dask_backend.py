"""Stage 4 on a Dask cluster: `Pool(tasks, concurrency, backend=client)`, client a dask Client.

What it shows: the stage-4 pool, unchanged, running its tasks on a `dask.distributed` cluster: one
machine (a `LocalCluster`) or many (a scheduler address), with the same code. Each of the pool's
worker threads sends its task to the cluster and waits for the outcome, so at most `concurrency`
tasks are in flight, and everything else (what to take next, max_errors, cancel(), deadlines,
streaming, the stop reason) is the pool's own, in beyond/pool.py. Only how one task runs changes:
this module's runner replaces `InThisThread`.

    from dask.distributed import Client, LocalCluster

    if __name__ == "__main__":  # the cluster's worker processes import this module again
        with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
            pool = Pool(tasks, concurrency=2, backend=client)  # or Client("tcp://scheduler:8786")
            for task in pool:
                print(task.err or task.result)

What a task keeps: its result, or its error with the traceback from the worker that raised it
(distributed rebuilds the remote frames on the exception). A task that cannot be sent (fn does not
pickle) fails alone, with that error.

What a stop does on the cluster (max_errors, cancel(), the run's timeout, Ctrl-C, a panic, a bad
tasks iterable): no task of the pool starts on the cluster after it. The pool registers a small
worker plugin that marks the pool stopped in every worker process (and in every worker that joins
later); a task that reaches a worker after that returns without calling fn, and comes back not run
(`finished == False`, not yielded by iteration), as a task the thread pool never started. The
tasks the scheduler has not yet sent to any worker are cancelled outright. Tasks already running
are treated as the thread pool treats its own: Dask cannot interrupt a task in a worker thread any
more than Python can stop a thread, so a cancel (cancel(), the run's timeout, Ctrl-C, leaving the
loop) is passed on to them and `beyond.checkpoint()` / `current_token()` work on the worker as in
a thread of the pool (Cancelled at the next checkpoint; a token's sleep wakes at once); a task that
never checks runs to its end. The pool waits for them and keeps their outcomes.

Deadlines, then, as cooperative as on threads: a task's timeout (and the run's) is sent with the
task as the seconds left, and counts from the task's start on its worker, on that worker's clock
(so time queued on a busy cluster is not counted there); checkpoint() raises TimeoutError past it.
On this side the pool's own clock counts from the moment it sends the task, and reports a task
still running past its deadline and the grace as overdue (OverdueWarning, `pool.overdue`).

What Dask retries, and what the pool says about it. A task that raises is never run again: the
pool asks for `retries=0` (Dask's default). But a task whose *worker* dies (killed, out of memory,
the machine gone) is sent by the scheduler to another worker, up to
`distributed.scheduler.allowed-failures` times (3 by default), then failed with KilledWorker; so it
may run more than once, each earlier run cut off with its process. The pool watches the
scheduler's remove-worker events: a task that was assigned to a lost worker and then ran again is
reported with a `RerunWarning` and listed in `pool.backend.rerun` (the task keeps the outcome of
its last run); one the pool's stop kept from running again fails with `WorkerLost`; one Dask gave
up on keeps KilledWorker as its error. For tasks that must never run twice, set
`allowed-failures` to 0 on the scheduler: Dask then fails them with KilledWorker at the first death.

When the client is closed, or loses its scheduler (killed, or its machine gone): distributed
cancels the futures in flight, but not always all of them (one sent as the client closes, or
while it tries to reconnect, is never resolved: `future.result()` then waits for ever, as a probe
here saw in 3 of 3 runs with the scheduler killed). So a worker thread waits on its task's future
in slices of CLIENT_CHECK_SECONDS, looking at the client's status between them, and treats any
status but "running" as the cluster lost. Then the tasks in flight fail with `ClusterLost`, no
other task starts (those never sent stay `finished == False`, as after any stop, rather than each
failing: an endless generator would fail for ever), the pool stops with
`StopReason.BACKEND_FAILED`, and run() raises `ClusterLost`. The bound: run() returns within
CLIENT_CHECK_SECONDS of the client's status leaving "running", plus the end of the calls already
in progress. That happens the moment the client is closed, and as soon as the client sees its
connection to the scheduler close (at once when the scheduler's process dies; a scheduler cut
off by the network is seen only when distributed's own heartbeats and timeouts say so). The pool
makes no call to a cluster it has lost, so nothing of its own waits for distributed's reconnect
timeout either.

What a task costs: a round trip through the scheduler, the same as Dask's own submit + result (on
a 2-CPU machine here, about 13 ms with one task in flight and 6 to 9 ms with 4 to 16; measured by
`python -m plots.dask_overhead`). It is CPU work in the client, the scheduler and the worker, not
the wait of distributed's message batching, whose intervals are fixed in its code (no setting
changes them). Worth it for tasks long against that cost; docs/stage4-dask.md says when a
cluster pays off.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError
from typing import Any

try:
    from distributed import Client, Future
    from distributed.diagnostics.plugin import WorkerPlugin
    from distributed.scheduler import KilledWorker
except ImportError:
    # One line, naming what to install; the ImportError's own text would name only the module.
    raise ImportError(
        "the Dask backend needs dask and distributed: pip install 'go-worker-pool-py[backends]' "
        "(or: pip install dask distributed)"
    ) from None

import beyond.pool
from beyond.pool import Runner, StopReason, Task, Workers

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


# --- What runs in the cluster's worker processes. ---

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


class _Panicked:
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
    """What Token reads of a task (beyond.pool.Token.check): its deadline, on this process's
    clock, and its timeout, for the message."""

    __slots__ = ("deadline", "timeout")

    def __init__(self, deadline: float | None, timeout: float | None) -> None:
        self.deadline = deadline
        self.timeout = timeout


class _PoolOnWorker:
    """What Token reads of a pool (beyond.pool.Token): cancelled, the run's deadline, and the
    sleepers a cancel wakes. One per task running on a worker, told by its pool's cancel mark."""

    __slots__ = ("_lock", "_sleepers", "cancelled", "run_deadline", "run_timeout")

    def __init__(self, run_deadline: float | None, run_timeout: float | None) -> None:
        self._lock = threading.Lock()
        self._sleepers: set[threading.Lock] = set()
        self.cancelled = False
        self.run_deadline = run_deadline
        self.run_timeout = run_timeout

    def cancel(self) -> None:
        # As Workers.stop does: each sleeper released once, under the lock it registers under.
        with self._lock:
            if not self.cancelled:
                self.cancelled = True
                for sleeper in self._sleepers:
                    sleeper.release()


class _RunnerOnWorker:
    """What checkpoint() and current_token() find in beyond.pool._here: as InThisThread."""

    __slots__ = ("task", "workers")

    def __init__(self, task: _TaskOnWorker, workers: _PoolOnWorker) -> None:
        self.task = task
        self.workers = workers


def _deadline_here(seconds_left: float | None) -> float | None:
    # The pool's deadlines are on its own machine's monotonic clock, which means nothing here: it
    # sends the seconds left as it sends the task, and they run from the task's start here. Time
    # the task spent in the scheduler's queue is not counted (the pool's clock still counts it).
    return None if seconds_left is None else time.monotonic() + seconds_left


def _run_on_worker(
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
    beyond.pool._here.runner = _RunnerOnWorker(
        _TaskOnWorker(_deadline_here(task_seconds_left), task_timeout), pool
    )
    try:
        return fn()
    except Exception:
        raise  # distributed sends it back with its traceback
    except BaseException as panic:
        # Its traceback does not travel with it: its text does, as a note.
        where = "".join(traceback.format_tb(panic.__traceback__))
        panic.add_note(f"raised on a Dask worker (pid {os.getpid()}):\n{where}")
        return _Panicked(panic)
    finally:
        beyond.pool._here.runner = None
        with _marks_lock:
            running = _RUNNING_HERE.get(pool_id)
            if running is not None:
                running.discard(pool)
                if not running:
                    del _RUNNING_HERE[pool_id]


class _PoolStopped(WorkerPlugin):
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


# The scheduler's states for a task it has not sent to any worker yet.
_NOT_SENT = frozenset({"released", "waiting", "queued", "no-worker"})


def _not_sent(keys: list[str], dask_scheduler: Any) -> list[str]:
    """Run on the scheduler: which of `keys` it has not sent to any worker."""
    tasks = dask_scheduler.tasks
    return [key for key in keys if key in tasks and tasks[key].state in _NOT_SENT]


# --- This process: the backend, one per Pool, and a runner per worker thread. ---


class _Raised:
    """An exception that came back for a task, kept until the task takes it as its outcome."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class DaskBackend:
    """The backend for `Pool(..., backend=client)`: one per Pool.

    `rerun`: the tasks that may have run more than once (see RerunWarning), in report order.
    """

    name = "dask"

    def __init__(self, client: Client) -> None:
        # Any: distributed's Client is mostly untyped, and mypy --strict refuses its calls.
        self.client: Any = client
        self.rerun: list[Task[Any]] = []
        # Names the pool's tasks on the cluster and its stop mark in the worker processes.
        self._id = uuid.uuid4().hex
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
        self._watch: _Watch | None = None

    def runner(self, workers: Workers[Any], number: int) -> Runner:
        with self._lock:
            self._runners += 1
            if self._runners == 1:
                self._begin(workers)
        return DaskRunner(self, workers, number)

    def _begin(self, workers: Workers[Any]) -> None:
        """Lock held, by the first runner: watch for lost workers and for a cancel."""
        # Subscribed before any task is sent: the subscription and the tasks go down the same
        # ordered stream to the scheduler, so no worker can be lost unseen while a task is out.
        # Never raises (this runs as a worker thread begins, before it can say it ended): a
        # client closed since the Pool was made refuses it, and the first task then finds the
        # client gone and stops the run.
        try:
            self._watch = _Watch.on(self.client, self)
        except Exception:
            self._watch = None
        # The watcher sleeps as Token.sleep does: on a lock the pool's cancel releases (every
        # sleeper, once, under the pool's lock), or, if no cancel comes, the last runner does.
        self._wake = threading.Lock()
        self._wake.acquire()
        with workers._lock:
            if workers.cancelled:
                self._wake.release()
            else:
                workers._sleepers.add(self._wake)
        self._watcher = threading.Thread(
            target=self._pass_on_a_cancel, args=(workers,), name="dask-stop-watcher"
        )
        self._watcher.start()

    def _pass_on_a_cancel(self, workers: Workers[Any]) -> None:
        self._wake.acquire()
        if workers.cancelled:
            self._stop_on_cluster(cancel=True)

    def _closed(self, workers: Workers[Any]) -> None:
        """A runner's worker thread has ended. Never raises: its worker must still say it ended."""
        if workers.stopped is not None:
            # max_errors, a panic or a bad tasks iterable: a stop the thread that ends here made
            # (and no cancel: running tasks finish), so it passes it on itself, before anything of
            # the run is undone. A cancel is the watcher's to pass on.
            self._stop_on_cluster(cancel=False)
        with self._lock:
            self._runners -= 1
            if self._runners > 0:
                return
            watcher, self._watcher = self._watcher, None
            watch, self._watch = self._watch, None
        # The last runner: nothing of the pool is in flight any more.
        with workers._lock:
            if not workers.cancelled:
                # No cancel released the watcher (it would have, under this same lock): do it.
                workers._sleepers.discard(self._wake)
                self._wake.release()
        if watcher is not None:
            watcher.join()
        if watch is not None:
            watch.forget(self)
        if _gone(self.client) is not None:
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
        if _gone(self.client) is not None:
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
        name = f"beyond-{mark}-{self._id}"
        if not self._quietly(
            "mark the pool stopped on the workers",
            lambda: self.client.register_plugin(_PoolStopped(self._id, cancel), name=name),
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
            lambda: unsent.extend(self.client.run_on_scheduler(_not_sent, keys)),
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

    def _worker_removed(self, worker: str, keys: Iterable[str]) -> None:
        """The client's event loop thread: the scheduler removed `worker`, which held `keys`."""
        with self._lock:
            for key in keys:
                if key in self._in_flight:
                    self._lost.setdefault(key, []).append(worker)


class DaskRunner:
    """How a worker thread runs a task on the cluster: send it, wait for it, keep its outcome."""

    __slots__ = ("backend", "number", "workers")

    def __init__(self, backend: DaskBackend, workers: Workers[Any], number: int) -> None:
        self.backend = backend
        self.workers = workers
        self.number = number

    @property
    def task(self) -> Task[Any] | None:
        return self.workers.current[self.number]

    def run(self, task: Task[Any]) -> bool:
        backend = self.backend
        key = f"{_prefix(task.fn)}-{backend._id}-{next(backend._serial)}"
        with backend._lock:
            # Watched from before it is sent: a lost worker is reported for it from then on.
            backend._in_flight[key] = None
        outcome = self._send_and_wait(key, task)
        with backend._lock:
            del backend._in_flight[key]
            lost = backend._lost.pop(key, None)
            dropped = key in backend._dropped
            backend._dropped.discard(key)
        if isinstance(outcome, _NeverSent):
            # The cluster was gone before the task could be sent: it never ran, and the pool has
            # stopped (as for NotStarted below).
            self.workers.current[self.number] = None
            return False
        if dropped or isinstance(outcome, NotStarted):
            if not lost:
                # The stop came first: fn never ran. The task stays `finished == False`, and the
                # pool does not hand it to the loop, as a task the thread pool never started.
                self.workers.current[self.number] = None
                return False
            outcome = _Raised(
                WorkerLost(
                    f"worker {', '.join(lost)} was lost while task {task._name()} was assigned to "
                    "it: it may have started there and been cut off; the pool had stopped, so "
                    "Dask did not run it again"
                )
            )
        elif isinstance(outcome, _Panicked):
            # Task.run records it and raises it on: the worker thread stops the pool (_work).
            outcome = _Raised(outcome.error)
        elif (attempts := _attempts(outcome, lost)) > 1:
            outcome = self._rerun(task, attempts, lost or [], outcome)

        def kept() -> Any:
            if isinstance(outcome, _Raised):
                raise outcome.error
            return outcome

        return task.run(kept)

    def _send_and_wait(self, key: str, task: Task[Any]) -> Any:
        """fn's result, run on the cluster; a _Raised if it (or sending it) failed; _NeverSent
        if the cluster was gone before it could be sent (the pool is stopped then)."""
        backend, workers = self.backend, self.workers
        now = time.monotonic()
        task_left = None if task.deadline is None else task.deadline - now
        run_left = None if workers.run_deadline is None else workers.run_deadline - now
        client = backend.client
        if (gone := _gone(client)) is not None:
            self._stop_the_run(gone)
            return _NeverSent()
        # retries=0: a task that raises is not run again. A caller's `dask.annotate(retries=...)`
        # does not reach here: annotations live in a ContextVar, and a new thread (this worker's)
        # starts with an empty context.
        try:
            future = backend.client.submit(
                _run_on_worker,
                backend._id,
                task.fn,
                task.timeout,
                task_left,
                workers.run_timeout,
                run_left,
                key=key,
                pure=False,
                retries=0,
            )
        except Exception as not_sent:
            if (gone := _gone(client)) is not None:
                # Closed as the task was being sent: it never reached the cluster.
                self._stop_the_run(gone)
                return _NeverSent()
            # fn does not pickle: this task fails, the others run on.
            not_sent.add_note(f"the pool could not send task {key} to the cluster")
            return _Raised(not_sent)
        with backend._lock:
            backend._in_flight[key] = future
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
            return self._lost(task, _gone(client) or "has no event loop running", refused)
        while True:
            finished = outcome.done()
            try:
                return outcome.result(timeout=CLIENT_CHECK_SECONDS)
            except Exception as raised:
                if finished:
                    # The task's outcome (TimeoutError included: a checkpoint past its deadline).
                    if isinstance(raised, CancelledError) and (gone := _gone(client)):
                        # distributed cancels the futures in flight when the client goes.
                        return self._lost(task, gone, raised)
                    return _Raised(raised)
                # The slice passed (or the outcome came just after it: the next call answers at
                # once).
                if not outcome.done() and (gone := _gone(client)) is not None:
                    outcome.cancel()
                    return self._lost(task, gone, raised)

    def _lost(self, task: Task[Any], gone: str, cause: BaseException | None) -> _Raised:
        """The task's outcome once the cluster is gone with it in flight; the pool stops."""
        self._stop_the_run(gone)
        error = ClusterLost(
            f"the Dask client {gone} while task {task._name()} was in flight: it may or may not "
            "have run on the cluster"
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
        self.workers.stop(StopReason.BACKEND_FAILED, str(stopped), error=stopped)

    def _rerun(self, task: Task[Any], attempts: int, lost: list[str], outcome: Any) -> Any:
        """Say that `task` may have run more than once; the outcome to keep."""
        where = f"worker {', '.join(lost)}" if lost else "each worker it was assigned to"
        message = (
            f"task {task._name()} may have started up to {attempts} times: {where} was lost "
            "while the task was assigned to it, and Dask sent it to another worker "
            "(distributed.scheduler.allowed-failures); the task keeps the outcome of its last run"
        )
        with self.backend._lock:
            self.backend.rerun.append(task)
        if isinstance(outcome, _Raised):
            outcome.error.add_note(message)
        try:
            warnings.warn(RerunWarning(message), stacklevel=2)
        except Exception as raised:
            # -W error turned the warning into an exception: then it is the task's outcome.
            return _Raised(raised)
        return outcome

    def close(self) -> None:
        self.backend._closed(self.workers)


class _NeverSent:
    """What _send_and_wait returns for a task it did not send because the cluster was gone."""

    __slots__ = ()


def _gone(client: Any) -> str | None:
    """None while the client is connected to its scheduler; else what happened, for messages.
    A client that lost its connection says "connecting" while it tries to reconnect: the futures
    in flight are lost already then (distributed cancels them), whether it succeeds or not."""
    status = client.status
    if status == "running":
        return None
    if status in ("closing", "closed"):
        return f"was closed (status {status!r})"
    return f"lost its scheduler (status {status!r})"


def _attempts(outcome: Any, lost: list[str] | None) -> int:
    """How many workers a task was sent to, at most: one per worker lost while it held the task,
    plus the one that ran it to its outcome. KilledWorker is Dask giving up after the task's
    worker died allowed-failures + 1 times (once, with allowed-failures 0): no run after those."""
    if isinstance(outcome, _Raised) and isinstance(outcome.error, KilledWorker):
        return max(int(getattr(outcome.error, "allowed_failures", 0)) + 1, len(lost or ()))
    return len(lost or ()) + 1


def _prefix(fn: Callable[[], Any]) -> str:
    """A task key's first part: fn's name, so that the dashboard groups the pool's tasks by it."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "".join(c if c.isalnum() or c == "_" else "_" for c in str(name)) or "task"


class _Watch:
    """The handler of a client's "all" event topic: passes each remove-worker event to every
    backend running on the client, and every event to the handler that was there before (a client
    has one handler per topic).

    Subscribed while pools run on the client, unsubscribed when the last one ends (a client still
    subscribed to "all" as it closes makes the scheduler log a CRITICAL error: it sends that very
    client the event of its own removal). Unsubscribing leaves the handler in the client's table
    (distributed's Client.unsubscribe_topic only tells the scheduler), so a watch found there is
    subscribed again, not taken as live: taking it as live lost every event of the next pool (seen
    here: a killed worker unseen in a run right after another pool's).
    """

    # Guards (un)subscribing on any client, and every watch's fields: the messages it sends go out
    # in the order they are made (the client's event loop runs its callbacks in order).
    _lock = threading.Lock()

    def __init__(self, previous: Callable[[Any], Any] | None) -> None:
        self.previous = previous
        self.backends: set[DaskBackend] = set()
        self.subscribed = False

    @classmethod
    def on(cls, client: Any, backend: DaskBackend) -> _Watch:
        with cls._lock:
            # distributed keeps the handlers in a private dict; read only to keep the one there.
            handlers: dict[str, Any] = getattr(client, "_event_handlers", {})
            current = handlers.get("all")
            watch = current if isinstance(current, _Watch) else _Watch(current)
            if not watch.subscribed:
                client.subscribe_topic("all", watch)
                watch.subscribed = True
            watch.backends.add(backend)
            return watch

    def forget(self, backend: DaskBackend) -> None:
        with _Watch._lock:
            self.backends.discard(backend)
            if self.backends or self.previous is not None:
                # Pools still run, or the user subscribed first: stay subscribed.
                return
            self.subscribed = False
            with contextlib.suppress(Exception):  # the client has closed: nothing to undo
                backend.client.unsubscribe_topic("all")

    def __call__(self, event: tuple[float, Any]) -> Any:
        message = event[1]
        if isinstance(message, dict) and message.get("action") == "remove-worker":
            keys = {*message.get("processing-tasks", ()), *message.get("lost-computed-tasks", ())}
            with _Watch._lock:
                backends = list(self.backends)
            for backend in backends:
                backend._worker_removed(str(message.get("worker")), keys)
        if self.previous is not None:
            return self.previous(event)
        return None


def make_backend(argument: object) -> DaskBackend:
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
