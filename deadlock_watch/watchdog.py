"""The watchdog's thread: sample every thread, and report once all have slept still for `grace`.

Every `interval` it classifies each thread (threads.py, loops.py), gives up at the first awake
one, and checks the ways out (ways_out.py). When every thread has slept in the very same wait for
`grace` seconds, it takes one more look, builds the report from it (report.py) and calls
`on_deadlock`. docs/watchdog.md says why each step is there, what it costs and what it cannot see.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from types import FrameType

from deadlock_watch.frames import SELECT_CALLS, current_frames, voluntary_context_switches
from deadlock_watch.loops import idle_loop, pending_tasks
from deadlock_watch.report import BlockedTask, BlockedThread, DeadlockReport, describe, exit_like_go
from deadlock_watch.threads import (
    CONDITION_WAIT,
    EXIT_WAIT,
    JOIN_IN_C,
    JOIN_WAIT,
    PROVEN_BY_SWITCHES,
    Wait,
    condition_wait,
    exit_wait,
    join_wait,
    lock_acquire,
    polling_wait,
    same_waits,
    simple_queue_get,
)
from deadlock_watch.ways_out import IgnoreHandler, signal_or_timer_can_wake

# Which threads a watchdog watches: watches(ident, innermost frame). The others neither keep it
# from reporting nor appear in a report.
WatchesThread = Callable[[int, FrameType], bool]


class Stillness:
    """Whether every thread has slept in the very same wait, sample after sample, for `grace` s."""

    def __init__(
        self,
        grace: float,
        count_switches: Callable[[dict[int, Wait]], dict[int, int | None]] | None,
    ) -> None:
        self._grace = grace
        # Reads each thread's count of voluntary context switches; None where the system cannot.
        self._count_switches = count_switches
        self._waits: dict[int, Wait] | None = None
        self._switches: dict[int, int | None] | None = None
        self._since = 0.0

    def forget(self) -> None:
        """A thread was awake: whatever comes next starts afresh."""
        self._waits = self._switches = None

    def still_for_grace(self, waits: dict[int, Wait], now: float) -> bool:
        if self._waits is None or not same_waits(waits, self._waits):
            # Something moved (or this is the first sample): the grace period starts now. Keeping
            # `waits` keeps its wait objects alive, so no later wait can take their identity.
            self._waits, self._switches, self._since = waits, None, now
            return False
        if self._count_switches is not None:
            # The same waits as last time; did any thread run in between? The first reading after
            # a change is the baseline, and the grace period starts from it. A SimpleQueue.get()
            # or a Lock.acquire() whose count cannot be read is not proven asleep.
            switches = self._count_switches(waits)
            unreadable = any(
                switches[ident] is None and wait.kind in PROVEN_BY_SWITCHES
                for ident, wait in waits.items()
            )
            if switches != self._switches or unreadable:
                self._switches, self._since = switches, now
                return False
        return now - self._since >= self._grace


class Watchdog:
    """Go's "all goroutines are asleep" check, as a daemon thread. See docs/watchdog.md.

    By default it watches every thread and counts every signal handler of the program's own as a
    way out. `watches` narrows the threads it watches, and `ignore_handler` names handlers that
    are no way out; the pytest plugin (pytest_plugin.py) uses both.
    """

    def __init__(
        self,
        on_deadlock: Callable[[DeadlockReport], None] = exit_like_go,
        *,
        interval: float = 0.05,
        grace: float = 0.3,
        watches: WatchesThread | None = None,
        ignore_handler: IgnoreHandler | None = None,
    ) -> None:
        self._on_deadlock = on_deadlock
        self._interval = interval
        self._grace = grace
        self._watches = watches
        self._ignore_handler = ignore_handler
        # Held until stop() releases it. The watchdog sleeps between samples trying to take it,
        # with a timeout (so it is awake); a bare lock is the cheapest such sleep.
        self._running = threading.Lock()
        self._running.acquire()
        self._thread = threading.Thread(target=self._watch, name="deadlock-watchdog", daemon=True)
        # The thread found awake by the last sample: the likeliest to be awake at the next one.
        self._last_awake: int | None = None
        # Whether this system tells how often a thread gave up the CPU (Linux /proc).
        self._counts_switches = voluntary_context_switches(threading.get_native_id()) is not None

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def run(self) -> None:
        """Watch from the calling thread instead, until stop() or a report; start() not called.

        For a long-lived thread that watches one thing after another (the pytest plugin's).
        """
        self._watch()

    def stop(self) -> None:
        """End the watch; wait for its thread if start() started one (run() ends by itself)."""
        with contextlib.suppress(RuntimeError):  # stopped already
            self._running.release()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _watch(self) -> None:
        count_switches = context_switches if self._counts_switches else None
        stillness = Stillness(self._grace, count_switches)
        while not self._running.acquire(timeout=self._interval):
            asleep = self._everyone_asleep()
            if asleep is None:
                stillness.forget()
            elif stillness.still_for_grace(asleep, time.monotonic()):
                report = self._report(asleep)
                if report is not None:
                    self._on_deadlock(report)
                    return

    def _watched_frames(self) -> dict[int, FrameType]:
        """The innermost frame of every thread this watchdog watches, itself left out."""
        frames = current_frames()
        frames.pop(threading.get_ident(), None)
        if self._watches is None:
            return frames
        return {ident: frame for ident, frame in frames.items() if self._watches(ident, frame)}

    def _everyone_asleep(self) -> dict[int, Wait] | None:
        """Every other thread's wait, or None as soon as one thread is (or may be) awake."""
        frames = self._watched_frames()
        hint = self._last_awake
        if hint in frames and classify(frames[hint], self._counts_switches) is None:
            return None
        if signal_or_timer_can_wake(self._ignore_handler):
            return None
        waits = {}
        for ident, frame in frames.items():
            wait = classify(frame, self._counts_switches)
            if wait is None:
                if _is_watchdog(frame):
                    continue
                self._last_awake = ident
                return None
            waits[ident] = wait
        return waits or None

    def _report(self, expected: dict[int, Wait]) -> DeadlockReport | None:
        """The report, built from a fresh look at every thread; None if anything has moved."""
        frames = self._watched_frames()
        if signal_or_timer_can_wake(self._ignore_handler):
            return None
        waits = {ident: classify(frame, self._counts_switches) for ident, frame in frames.items()}
        asleep = {ident: wait for ident, wait in waits.items() if wait is not None}
        if not same_waits(asleep, expected):
            return None
        if any(wait is None and not _is_watchdog(frames[i]) for i, wait in waits.items()):
            return None

        threads = {thread.ident: thread for thread in threading.enumerate()}
        # Report in the order the threads started (main first, as Go lists goroutine 1 first);
        # threads that the threading module does not know about go last.
        order = [ident for ident in threads if ident in asleep]
        order += sorted(asleep.keys() - threads.keys())
        blocked_threads: list[BlockedThread] = []
        blocked_tasks: list[BlockedTask] = []
        for ident in order:
            thread = threads.get(ident)
            name = thread.name if thread is not None else f"thread-{ident}"
            wait, frame = asleep[ident], frames[ident]
            if wait.kind == "loop":
                tasks = pending_tasks(frame)
                if tasks:
                    # The loop's thread is its tasks' scheduler: the tasks say where it is stuck.
                    blocked_tasks += tasks
                    continue
            blocked_threads.append(describe(name, wait, frame))
        return DeadlockReport(tuple(blocked_threads), tuple(blocked_tasks), tuple(order))


def classify(frame: FrameType, counts_switches: bool) -> Wait | None:
    """How `frame`'s thread sleeps, untimed, in a wait we can read; None if it may be awake.

    Reads the locals of the frames we know, and of a method's frame that may be a declared
    polling wait: other threads are paused mid-code, not asleep.
    """
    code = frame.f_code
    if code is CONDITION_WAIT:
        return condition_wait(frame)
    if code is JOIN_WAIT or code is JOIN_IN_C:
        return join_wait(frame)
    if code is EXIT_WAIT:
        return exit_wait(frame)
    if code in SELECT_CALLS:
        return idle_loop(frame)
    if counts_switches and (simple_queue := simple_queue_get(frame)) is not None:
        return simple_queue
    if counts_switches and (lock := lock_acquire(frame)) is not None:
        return lock
    return polling_wait(frame)


def context_switches(waits: dict[int, Wait]) -> dict[int, int | None]:
    """Each asleep thread's count of voluntary context switches (None where it cannot be read).

    None too for a polling wait: its thread wakes to look for signals, and its count of changes
    (Wait.progress) is what says whether it moved.
    """
    native_ids = {thread.ident: thread.native_id for thread in threading.enumerate()}
    return {
        ident: None if wait.kind == "polling" else voluntary_context_switches(native_ids.get(ident))
        for ident, wait in waits.items()
    }


def _is_watchdog(frame: FrameType) -> bool:
    """True for a watchdog's own thread (this one or another): it is no part of the program."""
    walked: FrameType | None = frame
    while walked is not None:
        if walked.f_code is _WATCH:
            return True
        walked = walked.f_back
    return False


_WATCH = Watchdog._watch.__code__
