"""How stage 3's main waits for its workers, so that a Ctrl-C never loses a running task.

Not the lesson (that is pool.py): the machinery that keeps `Pool.run()`'s promise under Ctrl-C on
CPython 3.11 to 3.13. Main never waits in Thread.join() or Condition.wait() while a worker runs: a
Ctrl-C landing inside either can cut a running task off or turn the KeyboardInterrupt into a
RuntimeError. It sleeps in SimpleQueue.get() instead, one call in C that a Ctrl-C ends cleanly,
for at most SIGNAL_CHECK_SECONDS at a time. docs/ctrl-c-and-cpython-waits.md tells why, with
CPython's code; tests/test_robust_interrupts.py proves each rule with real SIGINTs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import ClassVar, NoReturn

# The longest main sleeps before it looks again: the kernel may hand a Ctrl-C to a worker, and
# then only main's next bytecode raises it
# (test_a_ctrl_c_that_another_thread_receives_still_stops_the_pool).
SIGNAL_CHECK_SECONDS = 0.05


class Workers:
    """Which workers run and which have ended; main waits here (Go: the pool's WaitGroup)."""

    # Read by the deadlock watchdog (deadlock_watch), which this stage never imports: main wakes
    # in _sleep_until only to let a Ctrl-C in, so it sleeps for good while _looked_at == _changes
    # (tests/test_watchdog_pools.py).
    __deadlock_watch__: ClassVar[dict[str, str]] = {
        "kind": "pool",
        "polls": "_sleep_until",
        "changes": "_changes",
        "looked_at": "_looked_at",
    }

    def __init__(self) -> None:
        # Guards every field below but _wakeups.
        self._lock = threading.Lock()
        # Workers that have begun and not yet ended; those that have ended.
        self._running = 0
        self._ended: list[threading.Thread] = []
        # One more at each begin() and end(); the count main saw when it last found nothing to do.
        self._changes = 0
        self._looked_at = -1
        # One token per worker that has ended; main sleeps on it.
        self._wakeups: queue.SimpleQueue[None] = queue.SimpleQueue()

    def begin(self) -> None:
        """A worker, before it takes its first task."""
        with self._lock:
            self._running += 1
            self._changes += 1

    def end(self) -> None:
        """A worker, after its last task, as the last thing it does."""
        with self._lock:
            self._running -= 1
            self._ended.append(threading.current_thread())
            self._changes += 1
        # After the counts, which main reads before each sleep: this wake-up is never lost.
        self._wakeups.put(None)

    def wait_until_ended(self, count: int) -> None:
        """Main: wait until `count` workers have ended."""
        self._sleep_until(lambda: len(self._ended) >= count)

    def wait_until_none_running(self, stopped_by: BaseException) -> BaseException:
        """Main, once `stopped_by` has stopped the run: wait until every worker that has begun
        has ended; return what stopped the run.

        A worker started but not yet begun is not waited for: main calls this only once no task
        is left to take, so such a worker will take none and end by itself.

        The rule for Ctrl-C holds here too: the first one waits for the running tasks, only a
        second one ends the wait (raised from here). So if `stopped_by` was no Ctrl-C (a thread
        the system refused), a Ctrl-C during this wait is the first: the wait goes on, and that
        Ctrl-C is what stopped the run (the refusal its __context__).
        """
        ctrl_c_seen = isinstance(ctrl_c_behind(stopped_by), KeyboardInterrupt)
        while True:
            try:
                self._sleep_until(lambda: self._running == 0)
                return stopped_by
            except KeyboardInterrupt as ctrl_c:
                if ctrl_c_seen:
                    raise
                ctrl_c_seen, stopped_by = True, ctrl_c

    def join_ended(self) -> None:
        """Main: join the workers that have ended (they have no task left to lose), so that none
        outlives run(). A join() that a Ctrl-C interrupts can mark a running thread stopped."""
        with self._lock:
            ended = list(self._ended)
        for thread in ended:
            thread.join()

    def _sleep_until(self, ready: Callable[[], bool]) -> None:
        """Main: sleep until ready() holds, looking again at least every SIGNAL_CHECK_SECONDS."""
        while True:
            with self._lock:
                # Read before ready(): what main has seen is never newer than what it tested.
                seen = self._changes
                if ready():
                    return
                self._looked_at = seen
            try:
                self._wakeups.get(timeout=SIGNAL_CHECK_SECONDS)
            except queue.Empty:
                continue  # back in bytecode, where a Ctrl-C that another thread took is raised


def raise_what_stopped(raised: BaseException, started: int, wanted: int) -> NoReturn:
    """Main, once the workers have ended after `raised` stopped the run: raise what stopped it.

    The Ctrl-C behind a RuntimeError (see ctrl_c_behind), a RuntimeError saying how many worker
    threads started if the system refused one, else `raised` itself.
    """
    stop = ctrl_c_behind(raised)
    if stop is not raised:
        raise stop from None
    if isinstance(stop, RuntimeError) and started < wanted:
        message = f"could start only {started} of {wanted} worker threads: {stop}"
        raise RuntimeError(message) from stop
    raise raised


def ctrl_c_behind(error: BaseException) -> BaseException:
    """The Ctrl-C that `error` replaced, if it did; else `error` itself.

    A Ctrl-C inside Thread.start() (which waits on an Event) can land where Condition.wait() takes
    its lock back, and the `with` around it then raises "RuntimeError: release unlocked lock",
    the KeyboardInterrupt only its context (test_a_ctrl_c_inside_thread_start_is_a_ctrl_c_not_a_
    refused_thread). That is a Ctrl-C, not a thread the system refused.
    """
    if isinstance(error, RuntimeError):
        context = error.__context__
        while context is not None:
            if isinstance(context, KeyboardInterrupt):
                return context
            context = context.__context__
    return error
