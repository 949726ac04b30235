"""Stage 4's cancellation: how a running task learns that it should stop.

A thread cannot be stopped from outside (docs/stage4.md says why), so stopping is cooperative, as
with Go's `context`: the pool raises a flag or passes a deadline, and the task looks at them at
its checkpoints. This module is what a task sees of that: `checkpoint()`, `current_token()` and the
`Token` they read, `Cancelled`, and `OverdueWarning` for a task that never looked.

It knows nothing of the pool. It reads a run and a task through the two small protocols below
(`RunSignals`, `TaskClock`), which the pool's scheduler (beyond/scheduler.py) and a task running
on a Dask worker (beyond/backends/dask_workers.py) both implement; and it finds what the current
thread runs where a worker thread said so (`run_here`).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Protocol


class Cancelled(Exception):
    """Raised by checkpoint() (and Token.check() and Token.sleep()) once the pool is cancelled.

    An Exception, so that it ends up on its task like any other error (`task.err`) instead of
    stopping the pool as a panic would; it does not count toward max_errors, since it is the
    pool's stop and not the task's failure. The price: a task's own `except Exception` can swallow
    it. It then runs on, and its next checkpoint raises Cancelled again (a cancelled pool stays
    cancelled). asyncio made CancelledError a BaseException for that reason; a thread pool whose
    tasks are plain functions gains more from a task that keeps its outcome.
    """


class OverdueWarning(UserWarning):
    """A task is still running past its deadline: it did not reach a checkpoint, and no thread can
    be stopped from outside, so the pool can only say so and wait for it."""


class RunSignals(Protocol):
    """What a token reads of a run: whether it is cancelled, its deadline, and a way to sleep
    until a cancel. The pool's scheduler is one; so is a task's view of its pool on a Dask
    worker."""

    @property
    def cancelled(self) -> bool: ...

    @property
    def run_deadline(self) -> float | None:
        """When the run must end by, on the time.monotonic() clock; None for no deadline."""

    @property
    def run_timeout(self) -> float | None:
        """The run's timeout in seconds, for messages."""

    def add_sleeper(self, woken: threading.Lock) -> None:
        """Release `woken` (held by the caller) once, when the run is cancelled: at once if it is
        cancelled already. Safe from any thread."""

    def discard_sleeper(self, woken: threading.Lock) -> bool:
        """Forget `woken`. True if no cancel has released it (nor will): the caller owns it."""


class WakesSleepersOnCancel:
    """RunSignals' sleepers, for a class with a `_lock`, a `cancelled` flag and a `_sleepers` set:
    the pool's scheduler, and a task's view of its pool on a Dask worker. Each sleeper is released
    once, whether it registers before the cancel or after."""

    # Any: the scheduler's lock is an RLock (re-entrant for signal handlers), a Dask worker's a
    # Lock; both are context managers.
    _lock: Any
    _sleepers: set[threading.Lock]
    cancelled: bool

    def cancel_and_wake_sleepers(self) -> None:
        """The lock held: the run is cancelled from now on; wake every task asleep until then."""
        if not self.cancelled:
            self.cancelled = True
            for sleeper in self._sleepers:
                sleeper.release()

    def add_sleeper(self, woken: threading.Lock) -> None:
        with self._lock:
            if self.cancelled:
                woken.release()
            self._sleepers.add(woken)

    def discard_sleeper(self, woken: threading.Lock) -> bool:
        with self._lock:
            self._sleepers.discard(woken)
            return not self.cancelled


class TaskClock(Protocol):
    """What a token reads of a task: its deadline (time.monotonic() clock, set as it starts) and
    its timeout, for messages."""

    @property
    def deadline(self) -> float | None: ...

    @property
    def timeout(self) -> float | None: ...


class TaskRunningHere(Protocol):
    """What a thread that runs a pool's tasks tells checkpoint() and current_token(): the task
    it runs now (None between tasks) and the signals of its run."""

    @property
    def task(self) -> TaskClock | None: ...

    @property
    def signals(self) -> RunSignals: ...


# For each thread, what it runs (a TaskRunningHere) once it has said so with run_here(): a task
# takes no arguments, so checkpoint() finds its run here.
_running_here = threading.local()


def run_here(running: TaskRunningHere | None) -> None:
    """Tell checkpoint() and current_token() in this thread what it runs from now on: a worker
    thread says so once as it begins (its `task` then follows the task it runs), a task on a Dask
    worker once per task. None: nothing any more."""
    _running_here.now = running


def check_seconds(name: str, value: float) -> None:
    """Refuse a timeout or a sleep that is not a finite number of seconds >= 0, in one line."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


class Token:
    """What a running task may know about its stop: hand it to code that runs elsewhere.

    `current_token()` gives the running task's token; outside a pool, a token that is never
    cancelled and has no deadline, so code that takes a token runs the same outside a pool.
    """

    __slots__ = ("_signals", "_task")

    def __init__(self, signals: RunSignals | None, task: TaskClock | None) -> None:
        self._signals = signals
        self._task = task

    @property
    def cancelled(self) -> bool:
        """True once the pool has been cancelled (cancel(), Ctrl-C, its timeout, a loop left)."""
        return self._signals is not None and self._signals.cancelled

    @property
    def deadline(self) -> float | None:
        """When the task must be done by (time.monotonic() clock): its own or the run's, the
        earlier; None if neither is set."""
        if self._signals is None or self._task is None:
            return None
        if self._task.deadline is None:
            return self._signals.run_deadline
        if self._signals.run_deadline is None:
            return self._task.deadline
        return min(self._task.deadline, self._signals.run_deadline)

    def check(self) -> None:
        """Raise TimeoutError past the deadline, else Cancelled once cancelled; else nothing."""
        deadline = self.deadline
        if deadline is not None and time.monotonic() >= deadline:
            assert self._task is not None and self._signals is not None
            if deadline == self._task.deadline:
                raise TimeoutError(f"the task's timeout of {self._task.timeout} s passed")
            raise TimeoutError(f"the run's timeout of {self._signals.run_timeout} s passed")
        if self.cancelled:
            raise Cancelled("the pool was cancelled")

    def sleep(self, seconds: float) -> None:
        """time.sleep(seconds), but raising at once on a cancel or at the deadline (check())."""
        check_seconds("seconds", seconds)
        signals = self._signals
        if signals is None:
            time.sleep(seconds)
            return
        end = time.monotonic() + seconds
        # A lock of its own, released by a cancel: a plain Lock.acquire() can be interrupted
        # anywhere without harm (see Scheduler._sleep_until), should this run in the main thread.
        woken = threading.Lock()
        woken.acquire()
        signals.add_sleeper(woken)
        try:
            while True:
                self.check()
                now = time.monotonic()
                if now >= end:
                    return
                wake = end if self.deadline is None else min(end, self.deadline)
                woken.acquire(timeout=max(wake - now, 0.0))
        finally:
            signals.discard_sleeper(woken)


def current_token() -> Token:
    """The token of the task running in this thread, or a token that never stops outside a pool."""
    running = getattr(_running_here, "now", None)
    if running is None:
        return Token(None, None)
    task = running.task
    if task is None:
        return Token(None, None)
    return Token(running.signals, task)


def checkpoint() -> None:
    """Where a task may stop: raises Cancelled once its pool is cancelled, or TimeoutError once its
    deadline (or the run's) has passed. Does nothing outside a pool. Cheap: call it often."""
    running = getattr(_running_here, "now", None)
    if running is not None:
        task = running.task
        if task is not None:
            Token(running.signals, task).check()
