"""Stage 4's waiting thread: how main (in run()) or the loop over the pool (in iteration) waits
for a run, and what it watches while it waits.

The other half of the run's scheduler: `Scheduler` (beyond/scheduler.py) is this class with the
workers' side added (what to take next, the hand-over, stopping). Here: the workers' begin and
end, the sleep that Ctrl-C can always interrupt, the deadlines the waiting thread wakes for, and
the tasks it reports overdue.

Why main never waits in Thread.join() while a worker runs: on CPython 3.11 and 3.12, a join()
interrupted by Ctrl-C marks a thread that is still running as stopped (the except clause of
Thread._wait_for_tstate_lock releases the running thread's lock and calls _stop()). The
interpreter then exits without waiting for it, and the task it runs is killed mid-run. So main
sleeps until the workers say they have ended (_sleep_until, which does not use Condition.wait()
either: Ctrl-C can break that too), and joins a thread only once it has said it ended.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

from beyond.backends.protocol import Stopped, StopReason
from beyond.cancellation import OverdueWarning
from beyond.task import Task, quoted_name

Result = TypeVar("Result")

# How long past its deadline a task may still run before it is reported overdue: long enough for a
# task that checks now and then to reach its next checkpoint, short enough to be told promptly.
DEFAULT_OVERDUE_GRACE = 0.5

# The longest main sleeps at a time. The kernel may hand a process's SIGINT to any of its threads
# that does not block it; when a worker takes it, CPython only notes it, and runs the Python
# handler (raising KeyboardInterrupt) in the main thread the next time that thread runs bytecode.
# A main thread blocked in a lock would never get there, so it wakes this often to let it.
SIGNAL_CHECK_SECONDS = 0.05


class RunWatch(ABC, Generic[Result]):
    """The waiting thread's side of a run (see the module's docstring). Its fields are the run's
    shared state that this side keeps; Scheduler adds the rest."""

    # Read by the deadlock watchdog (deadlock_watch): main wakes in _sleep_until only to let a
    # Ctrl-C in, so it sleeps for good while _looked_at == _changes (tests/test_watchdog_pools.py).
    __deadlock_watch__: ClassVar[dict[str, str]] = {
        "kind": "pool",
        "polls": "_sleep_until",
        "changes": "_changes",
        "looked_at": "_looked_at",
    }

    def __init__(self, worker_count: int, overdue_grace: float) -> None:
        # Guards every field of the run unless it says otherwise (re-entrant: see scheduler.py).
        self._lock = threading.RLock()
        # Main (or the consumer) sleeps by acquiring this lock; whoever changes what it waits for
        # releases it (_wake_main) while _main_waiting says it sleeps.
        self._wakeup = threading.Lock()
        self._wakeup.acquire()
        self._main_waiting = False
        # One more at each _wake_main(); the count main saw when it last found nothing to do.
        self._changes = 0
        self._looked_at: int | None = None
        # Workers that have begun and not yet ended; the threads that have ended.
        self._running = 0
        self._ended: list[threading.Thread] = []
        # Why the pool stopped early, and the error run() must raise (a panic or a bad source).
        self.stopped: Stopped | None = None
        self.error: BaseException | None = None
        # Running tasks have been told to stop (cancel, Ctrl-C, the run's deadline); read without
        # the lock by checkpoints, written once under it.
        self.cancelled = False
        # Deadlines. The run's, on the time.monotonic() clock; each worker's current task (a slot
        # per worker, written by that worker without the lock); the tasks reported overdue.
        self.run_deadline: float | None = None
        self.run_timeout: float | None = None
        self._watching_deadlines = False
        self.worker_count = worker_count
        self.current: list[Task[Result] | None] = [None] * worker_count
        # Per worker: inside the tasks iterable's next(), or waiting for its turn there (a slot
        # per worker, written by that worker without the lock). Such a worker runs no task, and
        # once the pool has stopped it will start none: see _only_the_source_is_left.
        self._at_source: list[bool] = [False] * worker_count
        # When the waiting thread first saw only workers at the source left (see there).
        self._only_the_source_since: float | None = None
        self.overdue: list[Task[Result]] = []
        self.overdue_grace = overdue_grace

    @abstractmethod
    def stop(
        self,
        reason: StopReason,
        message: str,
        *,
        cancel: bool = False,
        error: BaseException | None = None,
    ) -> None: ...

    # --- A worker thread's life. ---

    def begin(self) -> None:
        with self._lock:
            self._running += 1

    def end(self, number: int | None) -> None:
        with self._lock:
            self._running -= 1
            if number is not None:
                self.current[number] = None
                self._at_source[number] = False
            self._ended.append(threading.current_thread())
            self._wake_main()

    def left_at_the_source(self, number: int) -> bool:
        """The pool has stopped and worker `number` is at the source: it runs no task, will start
        none, and may never come back (a generator blocked on a socket)."""
        return self.stopped is not None and self._at_source[number]

    def _wake_main(self) -> None:
        """Lock held: wake main (or the consumer) if it sleeps, to look again at what it waits
        for. Released once per sleep: the flag is cleared with the release."""
        self._changes += 1
        if self._main_waiting:
            self._main_waiting = False
            self._wakeup.release()

    # --- What the waiting thread calls. ---

    def wait_until_ended(self, count: int) -> None:
        """Main: wait until `count` workers have ended (or only the source holds them)."""
        self._sleep_until(lambda: len(self._ended) >= count or self._only_the_source_is_left())

    def wait_until_none_running(self, *, first_ctrl_c_waits: bool = False) -> BaseException | None:
        """Main: wait until every worker that has begun has ended (or only the source holds
        them); return the Ctrl-C kept meanwhile, if any.

        A worker that has been started but not yet begun is not waited for: main calls this only
        once the pool has stopped, so such a worker will take no task and end by itself.

        `first_ctrl_c_waits`: the pool was stopped by no Ctrl-C (a thread the system refused), so
        a Ctrl-C now is the first, and the rule for a first one holds: the wait goes on, and the
        Ctrl-C is returned, to be raised once the running tasks have finished. A second one ends
        the wait (raised from here), as always.
        """
        kept: BaseException | None = None
        while True:
            try:
                self._sleep_until(lambda: self._running == 0 or self._only_the_source_is_left())
                return kept
            except KeyboardInterrupt as ctrl_c:
                if not first_ctrl_c_waits or kept is not None:
                    raise
                kept = ctrl_c

    def _only_the_source_is_left(self) -> bool:
        """The waiting thread, lock held: the pool has stopped, and every worker still running is
        at the source (in the tasks iterable's next(), or in line for it), and has been for a
        check interval. Such a worker runs no task and will start none; it may take as long as
        the iterable's own code likes (a generator blocked on a socket: for ever), and the caller,
        a Ctrl-C's included, must not wait for that. It is left to come back by itself, see the
        stop and end; its thread is a daemon (beyond/backends/worker_threads.py). The interval
        lets a quick next() come back first, so that, as a rule, no thread outlives the run.
        """
        if self.stopped is None or self._running != sum(self._at_source):
            self._only_the_source_since = None
            return False
        now = time.monotonic()
        if self._only_the_source_since is None:
            self._only_the_source_since = now
        return now - self._only_the_source_since >= SIGNAL_CHECK_SECONDS

    def join_ended(self) -> None:
        """Main: join the workers that have ended, so that none outlives run()."""
        with self._lock:
            ended = list(self._ended)
        for thread in ended:
            thread.join()

    def _sleep_until(self, ready: Callable[[], bool]) -> None:
        """Main (or the consumer): sleep until ready() holds, waking at the next deadline to
        watch and acting on the deadlines that have passed. A task that never checks is not
        waited for silently: this thread is awake at its deadline (plus the grace) to report it.

        Why not Condition.wait(): Ctrl-C can land inside it just after it has released the lock
        and before the try block that takes the lock back (Lib/threading.py), and the caller's
        `with` then releases a lock it no longer holds: RuntimeError instead of
        KeyboardInterrupt (seen here under load). So main never gives the lock up inside a call:
        it leaves its `with` block, then blocks in Lock.acquire(), which Ctrl-C interrupts
        cleanly and which _wake_main (a worker, or cancel() in a signal handler) ends; and for at
        most SIGNAL_CHECK_SECONDS, in case the Ctrl-C went to a worker thread.
        """
        while True:
            with self._lock:
                seen = self._changes  # read before ready(): never newer than what it tested
                if self._watching_deadlines:
                    self._check_deadlines()
                # A release left over from an earlier sleep (woken as it timed out) must not end
                # this one at once: take it back first. Non-blocking, so never interrupted.
                self._wakeup.acquire(blocking=False)
                # Set before ready() looks: a worker hands a finished task over without the lock,
                # and reads this flag after its append (see _wake_consumer).
                self._main_waiting = True
                if ready():
                    self._main_waiting = False
                    return
                timeout = self._seconds_to_next_deadline()
                self._looked_at = seen if timeout == math.inf else None  # a deadline wakes it
            try:
                self._wakeup.acquire(timeout=min(timeout, SIGNAL_CHECK_SECONDS))
            finally:
                self._main_waiting = False

    def _seconds_to_next_deadline(self) -> float:
        wake = math.inf
        if self._only_the_source_since is not None:
            # Only workers at the source are left: they are let go when the interval is over.
            wake = self._only_the_source_since + SIGNAL_CHECK_SECONDS
        if self._watching_deadlines:
            if self.run_deadline is not None and not self.cancelled:
                wake = min(wake, self.run_deadline)
            for task in self.current:
                deadline = self._deadline_of(task)
                if deadline is not None and task is not None and task not in self.overdue:
                    wake = min(wake, deadline + self.overdue_grace)
        if wake == math.inf:
            return math.inf
        return max(wake - time.monotonic(), 0.0)

    def _deadline_of(self, task: Task[Result] | None) -> float | None:
        """When a running task must be done by: its own deadline or the run's, the earlier."""
        if task is None or task.finished:
            return None
        if task.deadline is None:
            return self.run_deadline
        if self.run_deadline is None:
            return task.deadline
        return min(task.deadline, self.run_deadline)

    def _run_deadline_passed(self) -> bool:
        """Stop the pool (and tell its tasks) if the run's deadline has passed; say if it has."""
        if self.run_deadline is None or time.monotonic() < self.run_deadline:
            return False
        if not self.cancelled:
            self.stop(
                StopReason.TIMEOUT, f"the run's timeout of {self.run_timeout} s passed", cancel=True
            )
        return True

    def _check_deadlines(self) -> None:
        self._run_deadline_passed()
        now = time.monotonic()
        for task in self.current:
            deadline = self._deadline_of(task)
            if deadline is None or task is None:
                continue
            # Recorded before the warning, which may raise (-W error): reported once.
            if now >= deadline + self.overdue_grace and self.report_overdue(task):
                late = now - deadline
                warnings.warn(
                    OverdueWarning(
                        f"task {quoted_name(task)} is still running {late:.2f} s past its "
                        "deadline; a thread cannot be stopped from outside, so the pool waits for "
                        "it (call beyond.checkpoint() in the task to let it stop)"
                    ),
                    stacklevel=2,
                )

    # --- A task's clock. ---

    def start_clock(self, task: Task[Result]) -> None:
        """A task with a timeout starts (or starts again): its deadline runs from now, and the
        waiting thread must wake for it."""
        with self._lock:
            task.deadline = time.monotonic() + (task.timeout or 0.0)
            self._watching_deadlines = True
            self._wake_main()

    def report_overdue(self, task: Task[Result]) -> bool:
        with self._lock:
            if task.finished or task in self.overdue:
                return False
            self.overdue.append(task)
            return True
