"""Which threads are a test's, for `pytest --deadlock` (pytest_plugin.py).

The thread running the test (the main thread) and every thread alive while it runs, except:

- the runner's: threads alive when the session started (under pytest-xdist, execnet's reader,
  which sits in a read, awake, for ever; other plugins' threads) and pytest-timeout's timer
  thread (its `thread` method), whose only act is to end the process;
- threads that an earlier deadlocked test left asleep, for as long as they stay in the very wait
  its report showed, not woken (the watchdog's own test of sameness). An asleep thread can wake
  nobody, so leaving it out cannot make a report false, and a later test's report does not list
  it. Once woken it counts again: it may be doing work that a later test waits for.

A thread that a session or module fixture starts later counts: awake, it keeps a test that waits
on it from being reported; asleep, it is named in the report of a test that deadlocks with it.
docs/pytest-deadlock.md says why, and what this cannot see.

A runner's thread is known by the outermost frame of its stack, which lives as long as the thread
and is kept alive here: the idents of ended threads are reused, frames still held are not.
"""

from __future__ import annotations

import threading
from types import FrameType

from deadlock_watch.frames import current_frames, voluntary_context_switches
from deadlock_watch.threads import Wait
from deadlock_watch.watchdog import classify


class ThreadsOfTheTest:
    """Which threads the running test owns; `watches` is the Watchdog's thread filter."""

    def __init__(self) -> None:
        self._main = threading.main_thread().ident
        self._counts_switches = voluntary_context_switches(threading.get_native_id()) is not None
        # The outermost frames of the runner's threads.
        self._runners: set[FrameType] = set()
        # Whether each thread seen in this phase is the test's, by its outermost frame; emptied
        # at each phase, so that no ended thread's frames are held for long.
        self._verdicts: dict[FrameType, bool] = {}
        # By ident, the wait in which a deadlocked test left a thread: earlier tests' threads,
        # and this test's, which count until it is over.
        self._left_by_earlier_tests: dict[int, Wait] = {}
        self._left_by_this_test: dict[int, Wait] = {}

    def the_runners_are_alive_now(self) -> None:
        for ident, frame in current_frames().items():
            if ident != self._main:
                self._runners.add(outermost(frame))

    def a_phase_starts(self) -> None:
        self._verdicts.clear()

    def watches(self, ident: int, frame: FrameType) -> bool:
        """Whether the thread with this ident, standing at `frame`, is the test's."""
        if ident == self._main:
            return True
        left = self._left_by_earlier_tests.get(ident)
        if left is not None and self._still_in(left, frame):
            return False
        bottom = outermost(frame)
        verdict = self._verdicts.get(bottom)
        if verdict is None:
            verdict = bottom not in self._runners and not is_pytest_timeouts_timer(bottom)
            self._verdicts[bottom] = verdict
        return verdict

    def left_asleep(self, idents: tuple[int, ...]) -> list[str]:
        """Note where the report's threads sleep (from the watchdog's thread, at the report).

        Returns their names, the main thread's left out: it is the one the failure wakes.
        """
        frames = current_frames()
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        left = []
        for ident in idents:
            frame = frames.get(ident)
            wait = classify(frame, self._counts_switches) if frame is not None else None
            if ident == self._main or wait is None:
                continue
            name = names.get(ident, f"thread-{ident}")
            self._left_by_this_test[ident] = wait
            left.append(name)
        return left

    def the_test_is_over(self) -> None:
        """From the next test on, the threads this test left, still asleep in the same waits,
        are not counted; those that earlier tests left and have moved since count again."""
        left = {**self._left_by_earlier_tests, **self._left_by_this_test}
        self._left_by_this_test.clear()
        frames = current_frames()
        self._left_by_earlier_tests = {
            ident: wait
            for ident, wait in left.items()
            if ident in frames and self._still_in(wait, frames[ident])
        }

    def _still_in(self, wait: Wait, frame: FrameType) -> bool:
        """True while the thread standing at `frame` sleeps in the very same wait, not woken.

        The watchdog's own test of sameness (the wait's object, kept alive in `wait`): a waiter
        that has been notified, or a queue that now holds an item, already makes it awake.
        """
        now = classify(frame, self._counts_switches)
        return now is not None and now.same_as(wait)


def outermost(frame: FrameType) -> FrameType:
    while frame.f_back is not None:
        frame = frame.f_back
    return frame


def is_pytest_timeouts_timer(bottom: FrameType) -> bool:
    """A threading.Timer that pytest-timeout started: Thread._bootstrap's `self` is the Timer."""
    timer = bottom.f_locals.get("self")
    function = getattr(timer, "function", None)
    from_pytest_timeout = getattr(function, "__module__", None) == "pytest_timeout"
    return isinstance(timer, threading.Timer) and from_pytest_timeout
