"""Which threads are a test's, for `pytest --deadlock` (pytest_plugin.py).

The thread running the test (the main thread) and every thread alive while it runs, except:

- the runner's: threads alive when the session started (under pytest-xdist, execnet's reader,
  which sits in a read, awake, for ever; other plugins' threads) and pytest-timeout's timer
  thread (its `thread` method), whose only act is to end the process;
- threads that an earlier deadlocked test left asleep, for as long as they stay in the very wait
  its report showed. An asleep thread can wake nobody, so leaving it out cannot make a report
  false, and a later test's report does not list it. Once it moves it counts again: awake, it may
  be doing work a later test waits for.

A thread that a session or module fixture starts later counts: awake, it keeps a test that waits
on it from being reported; asleep, it is named in the report of a test that deadlocks with it.
docs/pytest-deadlock.md says why, and what this cannot see.

A thread is known by the outermost frame of its stack, which lives as long as the thread does
and which is kept alive here: the idents of ended threads are reused, frames still held are not.
"""

from __future__ import annotations

import threading
from types import FrameType

from deadlock_watch.frames import current_frames


class ThreadsOfTheTest:
    """Which threads the running test owns; `watches` is the Watchdog's thread filter."""

    def __init__(self) -> None:
        self._main = threading.main_thread().ident
        # The outermost frames of the runner's threads.
        self._runners: set[FrameType] = set()
        # Whether each thread seen in this phase is the test's, by its outermost frame; emptied
        # at each phase, so that no ended thread's frames are held for long.
        self._verdicts: dict[FrameType, bool] = {}
        # By ident: the innermost frame, and the instruction in it, where a thread was left
        # asleep; earlier tests' threads, and this test's (counted until it is over).
        self._left_by_earlier_tests: dict[int, tuple[FrameType, int]] = {}
        self._left_by_this_test: dict[int, tuple[FrameType, int, str]] = {}

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
        if left is not None and left[0] is frame and left[1] == frame.f_lasti:
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
            if ident == self._main or frame is None:
                continue
            name = names.get(ident, f"thread-{ident}")
            self._left_by_this_test[ident] = (frame, frame.f_lasti, name)
            left.append(name)
        return left

    def the_test_is_over(self) -> list[str]:
        """From the next test on, this test's threads still asleep where they were are not
        counted. Returns their names."""
        frames = current_frames()
        still = {
            ident: (frame, lasti, name)
            for ident, (frame, lasti, name) in self._left_by_this_test.items()
            if frames.get(ident) is frame and frame.f_lasti == lasti
        }
        self._left_by_this_test.clear()
        # Forget earlier ones that have moved or ended: they count again, for good.
        self._left_by_earlier_tests = {
            ident: (frame, lasti)
            for ident, (frame, lasti) in self._left_by_earlier_tests.items()
            if frames.get(ident) is frame and frame.f_lasti == lasti
        }
        self._left_by_earlier_tests.update(
            (ident, (frame, lasti)) for ident, (frame, lasti, _) in still.items()
        )
        return [name for _, _, name in still.values()]


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
