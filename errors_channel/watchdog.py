"""A deadlock watchdog for Python threads, after Go's runtime.

When every goroutine is blocked on something only another goroutine could end, Go stops the program
with `fatal error: all goroutines are asleep - deadlock!` and a stack for each one. Python has no
such check: a deadlocked program just hangs. `Watchdog` is a daemon thread that does what Go's
runtime does:

    with Watchdog():
        run_something_that_might_deadlock()

Every `interval` it samples each thread's stack (`sys._current_frames()`) and asks whether the
thread is *asleep*: parked, with no timeout, in a wait that only another thread can end. Those are

- `threading.Condition.wait()` with no timeout whose waiter lock is still held, that is, nobody has
  notified it yet. Queue put/get, Event.wait, Barrier.wait, Semaphore.acquire and the stage's
  WaitGroup.wait all sleep there;
- `Thread.join()` with no timeout on a thread that is still running;
- the interpreter's exit, where main waits for the non-daemon threads that are still running.

A thread anywhere else is awake: computing, sleeping (`time.sleep`), doing I/O, or waiting with a
timeout (Go likewise treats a pending timer as a way out). When every thread but the watchdog is
asleep, and stays asleep in the very same waits for `grace` seconds, the watchdog calls
`on_deadlock` with a report. The default prints the report to stderr like Go and ends the process
with exit status 2; a plain `sys.exit` could not, as it would end only the watchdog's own thread.

"The very same waits" is checked three ways, so that a thread that wakes up and comes back to the
same line between two samples is not taken for a stuck one: the same wait site, the same waiter
lock (each `Condition.wait` makes a new one), and, on Linux, the same count of voluntary context
switches in /proc/self/task/<tid>/status (a thread that ran in between has slept again since).

Limits, what it cannot see:
- a bare `Lock.acquire()`/`RLock.acquire()` outside a Condition, `select`/socket waits on another
  thread's pipe, or an `asyncio` loop waiting on a future: it counts those threads as awake, so it
  misses such deadlocks. It never reports a thread it cannot prove asleep.
- threads without Python frames (started from C) are invisible to it.
- it relies on CPython internals (`sys._current_frames`, the local names in threading.py's
  `Condition.wait`, `Thread.join` and `_shutdown`), checked against CPython 3.11, 3.12 and 3.13.
- it needs the GIL now and then: a thread that holds the GIL forever starves it (but is not
  deadlocked in Go's sense either).
"""

from __future__ import annotations

import os
import queue
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType
from typing import Any


def _code_of(owner: object, name: str) -> CodeType | None:
    """The code of owner.name, or None where this Python has no such function."""
    return getattr(getattr(owner, name, None), "__code__", None)


# The places a thread can sleep that the watchdog knows how to read.
_CONDITION_WAIT = _code_of(threading.Condition, "wait")
_JOIN_WAIT = _code_of(threading.Thread, "_wait_for_tstate_lock")
_EXIT_WAIT = _code_of(threading, "_shutdown")
# Only where join() has no Python-level wait below it is join() itself the place it sleeps.
_JOIN_IN_C = _code_of(threading.Thread, "join") if _JOIN_WAIT is None else None
_KNOWN_WAITS = tuple(
    code for code in (_CONDITION_WAIT, _JOIN_WAIT, _JOIN_IN_C, _EXIT_WAIT) if code is not None
)

_THREAD_WAITS = ("join", "_wait_for_tstate_lock")
# Objects whose methods are *part of* a wait; the first frame outside them is the wait's site.
_PRIMITIVES: tuple[tuple[type[Any], str], ...] = (
    (queue.Queue, "queue"),
    (threading.Event, "event"),
    (threading.Barrier, "barrier"),
    (threading.Semaphore, "semaphore"),
    (threading.Thread, "thread"),
    (threading.Condition, "condition"),
)
# Frames from these are left out of a report's stacks: the standard library and installed packages.
_LIBRARIES = tuple(
    Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "purelib", "platlib")
)


@dataclass(frozen=True)
class BlockedThread:
    """One asleep thread, as the report shows it."""

    name: str
    # What it waits on, Go-style: "queue put: errors", "waitgroup wait: wait_group".
    waiting_on: str
    # (function, "file:line") pairs, the wait's site first, outward; library frames left out.
    stack: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DeadlockReport:
    threads: tuple[BlockedThread, ...]

    def format(self) -> str:
        lines = ["fatal error: all threads are asleep - deadlock!"]
        for thread in self.threads:
            lines += ["", f"thread {thread.name} [{thread.waiting_on}]:"]
            for function, location in thread.stack:
                lines += [f"{function}(...)", f"\t{location}"]
        return "\n".join(lines) + "\n"


def exit_like_go(report: DeadlockReport) -> None:
    """The default reaction: print the report to stderr and end the whole process with status 2."""
    sys.stdout.flush()
    sys.stderr.write(report.format())
    sys.stderr.flush()
    # Not sys.exit(): that raises SystemExit in this thread only, and the deadlocked ones stay.
    os._exit(2)


@dataclass(frozen=True)
class _Asleep:
    """A thread seen asleep in one sample. Equal across samples = it did not move in between."""

    ident: int
    waiter_id: int
    site: tuple[str, int]
    context_switches: int | None
    report: BlockedThread


class Watchdog:
    """Go's "all goroutines are asleep" check, as a daemon thread. See the module docstring."""

    def __init__(
        self,
        on_deadlock: Callable[[DeadlockReport], None] = exit_like_go,
        *,
        interval: float = 0.05,
        grace: float = 0.3,
    ) -> None:
        self._on_deadlock = on_deadlock
        self._interval = interval
        self._grace = grace
        # Set by stop(); the watchdog's loop sleeps on it (with a timeout, so it stays awake).
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="deadlock-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _watch(self) -> None:
        unchanged_since = time.monotonic()
        previous: tuple[_Asleep, ...] | None = None
        while not self._stopping.wait(self._interval):
            current = self._everyone_asleep()
            now = time.monotonic()
            if current is None or current != previous:
                previous, unchanged_since = current, now
            elif now - unchanged_since >= self._grace:
                self._on_deadlock(DeadlockReport(tuple(a.report for a in current)))
                return

    def _everyone_asleep(self) -> tuple[_Asleep, ...] | None:
        """Every other thread's sleep, or None as soon as one thread is awake."""
        frames = sys._current_frames()
        threads = {thread.ident: thread for thread in threading.enumerate()}
        # Report in the order the threads started (main first, as Go lists goroutine 1 first);
        # threads that the threading module does not know about go last.
        known_first = [ident for ident in threads if ident in frames]
        others = sorted(frames.keys() - threads.keys())
        me = threading.get_ident()
        asleep = []
        for ident in known_first + others:
            if ident == me:
                continue
            seen = _asleep(ident, frames[ident], threads.get(ident))
            if seen is None:
                return None
            asleep.append(seen)
        return tuple(asleep) or None


def _sleeping_on(frame: FrameType) -> Any | None:
    """The lock `frame` sleeps on, without a timeout, in a wait we know how to read; else None."""
    # Read locals only of the frames we know: other threads are paused mid-code, not asleep.
    code = frame.f_code
    if not any(code is known for known in _KNOWN_WAITS):
        return None
    local = frame.f_locals
    if code is _CONDITION_WAIT:
        # Untimed, inside `waiter.acquire()` (gotit is set just after it returns), and the waiter
        # lock still held: no notify() has released it.
        lock = local.get("waiter")
        untimed = local.get("timeout") is None and local.get("gotit") is False
        return lock if untimed and lock is not None and lock.locked() else None
    if code is _JOIN_WAIT:
        # Untimed join (block=True, timeout=-1); the lock is held for as long as the thread runs.
        lock = local.get("lock")
        untimed = local.get("block") is True and local.get("timeout") == -1
        return lock if untimed and lock is not None and lock.locked() else None
    if code is _JOIN_IN_C:
        # Python 3.13+: join() waits in C on the thread's handle, done once the thread ends.
        handle = getattr(local.get("self"), "_handle", None)
        untimed = local.get("timeout") is None
        return handle if untimed and handle is not None and not handle.is_done() else None
    # Interpreter exit. Up to 3.12 it joins each non-daemon thread's lock, held while it runs;
    # from 3.13 it waits in C, and only the grace period tells that wait from a passing moment.
    lock = local.get("lock")
    if lock is None:
        return frame
    return lock if lock.locked() else None


def _asleep(ident: int, frame: FrameType, thread: threading.Thread | None) -> _Asleep | None:
    """How `frame`'s thread sleeps, or None if it is (or may be) awake."""
    waiter = _sleeping_on(frame)
    if waiter is None:
        return None

    # Walk outward past the frames that belong to the primitive (Queue.put -> Condition.wait) to
    # the code that called it: that is the wait's site. The outermost primitive names the wait.
    kind, method, waited_on, site = "condition", "wait", None, frame
    while (label := _primitive(site)) is not None:
        kind, method, waited_on = label, site.f_code.co_name, site.f_locals.get("self")
        if site.f_back is None:
            break
        site = site.f_back
    waiting_on = f"{kind} {method}"
    name = _name_of(waited_on, site)
    if name:
        waiting_on += f": {name}"
    if frame.f_code is _EXIT_WAIT:
        waiting_on = "exit: waiting for non-daemon threads"
    name_of_thread = thread.name if thread is not None else f"thread-{ident}"
    report = BlockedThread(name=name_of_thread, waiting_on=waiting_on, stack=_stack(site))
    native_id = thread.native_id if thread is not None else None
    return _Asleep(
        ident=ident,
        waiter_id=id(waiter),
        site=(site.f_code.co_filename, site.f_lineno),
        context_switches=_voluntary_context_switches(native_id),
        report=report,
    )


def _primitive(frame: FrameType) -> str | None:
    """The kind of synchronisation object whose method `frame` runs, if it is one."""
    owner = frame.f_locals.get("self")
    if owner is None:
        return None
    # A thread's own run() and bootstrap frames hold it as `self` too, but only join() waits.
    if isinstance(owner, threading.Thread) and frame.f_code.co_name not in _THREAD_WAITS:
        return None
    # Go's WaitGroup has no standard-library twin; the stages write their own, under that name.
    if type(owner).__name__ == "WaitGroup":
        return "waitgroup"
    for primitive, kind in _PRIMITIVES:
        if isinstance(owner, primitive):
            return kind
    return None


def _name_of(waited_on: object, site: FrameType) -> str | None:
    """What the waiting code calls the object it waits on: `errors`, `self.tasks`, a thread name."""
    if isinstance(waited_on, threading.Thread):
        return waited_on.name
    if waited_on is None:
        return None
    for variable, value in site.f_locals.items():
        if value is waited_on:
            return variable
    owner = site.f_locals.get("self")
    for attribute, value in getattr(owner, "__dict__", {}).items():
        if value is waited_on:
            return f"self.{attribute}"
    return None


def _stack(site: FrameType) -> tuple[tuple[str, str], ...]:
    """The wait's site and its callers, outside the libraries, innermost first."""
    stack = []
    frame: FrameType | None = site
    while frame is not None:
        filename = frame.f_code.co_filename
        path = Path(filename).resolve()
        # "<frozen runpy>" and the like are library code too, compiled into the interpreter.
        if not filename.startswith("<") and not any(path.is_relative_to(lib) for lib in _LIBRARIES):
            module = frame.f_globals.get("__name__", "?")
            stack.append(
                (f"{module}.{frame.f_code.co_qualname}", f"{_shown(path)}:{frame.f_lineno}")
            )
        frame = frame.f_back
    if not stack:
        # All library code (a thread whose target is `queue.get` itself): show where it waits.
        stack.append((site.f_code.co_qualname, f"{site.f_code.co_filename}:{site.f_lineno}"))
    return tuple(stack)


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _voluntary_context_switches(native_id: int | None) -> int | None:
    """How often the thread has given up the CPU of its own accord (Linux only, else None)."""
    if native_id is None:
        return None
    try:
        with open(f"/proc/self/task/{native_id}/status") as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
