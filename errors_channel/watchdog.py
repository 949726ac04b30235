"""A deadlock watchdog for Python threads and asyncio tasks, after Go's runtime.

When every goroutine is blocked on something only another goroutine could end, Go stops the program
with `fatal error: all goroutines are asleep - deadlock!` and a stack for each one. Python has no
such check: a deadlocked program just hangs. `Watchdog` is a daemon thread that does what Go's
runtime does:

    with Watchdog():
        run_something_that_might_deadlock()

**Asleep.** Every `interval` (50 ms) it looks at each thread's innermost frame
(`sys._current_frames()`) and asks whether the thread is *asleep*: parked, with no timeout, in a
wait that only another thread can end, and not woken yet. It can read these waits:

- `threading.Condition.wait()` with no timeout whose waiter lock is still on the condition's list
  of waiters: notify() takes it off before the sleeper can run again. Queue put/get, Event.wait,
  Barrier.wait, Semaphore.acquire and the stage's WaitGroup.wait all sleep there;
- `Thread.join()` with no timeout on a thread that is still running (its lock held, or on 3.13
  its handle not done);
- the interpreter's exit, where main waits for the non-daemon threads;
- on Linux only (see "moved" below), `queue.SimpleQueue.get()` with no timeout on an empty queue,
  where the bytecode proves it: the frame stopped (f_lasti) at the call of `.get` on a local
  variable that holds a SimpleQueue, with constant arguments, block true and no timeout. An idle
  `ThreadPoolExecutor` worker waits just so (`work_queue.get(block=True)`); the report calls it
  `executor worker idle`. An item in the queue means the getter has been woken;
- an idle asyncio event loop: a thread in a `selectors` selector's `select()`, stopped at the system
  call, called from `BaseEventLoop._run_once` with timeout None (no ready callbacks, no timers, not
  stopping), with nothing in the loop's ready queue (call_soon_threadsafe() puts a callback there
  before it wakes the loop) and nothing registered with the selector but the loop's own self-pipe.
  It does not need pending tasks: an idle loop with none is stuck just the same.

A thread anywhere else is awake: computing, sleeping (`time.sleep`), doing I/O, waiting with a
timeout (Go likewise treats a pending timer as a way out), or waiting where the watchdog cannot
read. Another watchdog's thread is no part of the program and is left out.

**Signals and timers are ways out.** A process can be woken from outside by a signal it handles,
and a pending interval timer is a timer: Go does not report a program that waits for a signal it
asked for, and neither does this. So it does not report while the program has a Python signal
handler of its own for any signal, that is, anything but SIG_DFL, SIG_IGN,
`signal.default_int_handler` and asyncio's Ctrl-C handler (`asyncio.runners.Runner._on_sigint`,
which `asyncio.run` installs over the default one in the main thread and which does the default's
job); nor while the real-time interval timer (ITIMER_REAL: `signal.setitimer`, `signal.alarm`) is
armed, unless SIGALRM is ignored: when it fires, a handler runs or the process ends. ITIMER_VIRTUAL
and ITIMER_PROF do not count: they advance only while the process runs, and it does not. Loop
signal handlers (`loop.add_signal_handler`) install a Python handler, so they count. The handlers
are read afresh at every sample. A handler set from C (`signal.getsignal()` says None) does not
count: C code cannot run Python, and a wake-up it writes to a file descriptor must be read by a
thread, which is then awake in I/O. pytest-timeout (signal method) installs a SIGALRM handler and
arms ITIMER_REAL for every test, and its thread method runs a timer thread: inside such a test an
in-process watchdog never reports, rightly.

**Deadlock.** When every thread but the watchdog is asleep, no signal or timer can wake one, and
every thread stays asleep in the very same wait for `grace` seconds (300 ms), the watchdog takes
one more look, builds the report from it, and calls `on_deadlock`. The default prints the report to
stderr like Go and ends the process with exit status 2; a plain `sys.exit` could not, as it would
end only the watchdog's own thread. The report starts `fatal error: all threads are asleep -
deadlock!` and lists each thread with what it waits on and its stack (library frames left out),
main first. When an idle loop has pending tasks it starts `fatal error: all tasks are asleep -
deadlock!` and lists each task first: what it awaits (an asyncio primitive's method, a gather,
another task, a future) and its coroutines' frames from the innermost outward (walking `cr_await`),
the first shown being the line that awaits; then the other threads.

**Moved, or stuck?** A thread can wake up and come back to the same line between two samples, and a
thread that has been woken may not have run yet when the watchdog looks. Woken Condition waiters,
loops with a callback to run, and (before 3.13, which hands the item straight to the sleeper)
SimpleQueue getters with an item are seen as awake at once. For the rest, "the very same wait" is
checked two ways:
- the same object: each wait holds one that the next wait cannot share (a Condition's waiter lock,
  a `select()` call's `ready` list). The sample keeps it alive, so its identity cannot be reused by
  the next wait while the two are compared (id() alone was reused, wake-up after wake-up);
- on Linux, the same count of voluntary context switches (/proc/self/task/<tid>/status): a thread
  that ran in between has given up the CPU, or waited for the GIL, at least once since. The grace
  period starts when the counts are first read.
A `SimpleQueue.get()` has no object of its own, and a getter that has just taken an item looks just
like one still waiting: it is read only where the counts can be read (Linux), and not proven asleep
if its count cannot be read.

**Cost.** A sample looks first at the thread found awake the time before, then at the signal
handlers, then at the other threads, and stops at the first awake one; the stack walk, names and
paths are built only for a report. Most of what is left is waking up 20 times a second and
`sys._current_frames()`. Measured on a 2-CPU x86_64 Linux machine shared with other work, CPython
3.11.7, 100 threads parked in Event().wait() and main sleeping, process CPU time over 10 s with the
watchdog minus without: 0.36% to 0.57% of one core in three runs (the previous watchdog, which built
every report in full: 0.60% to 0.73% in the same runs); with a SIGUSR1 handler installed and every
thread asleep, so that each sample reads every signal's handler: 0.52% and 0.53% in two runs.

**Limits**, what it cannot see:
- a bare `Lock.acquire()`/`RLock.acquire()` outside a Condition, `select`/socket waits on another
  thread's pipe, `multiprocessing` queues, a `SimpleQueue` reached through an attribute
  (`self.q.get()`) or off Linux: it counts those threads as awake, so it misses such deadlocks. It
  never reports a thread it cannot prove asleep.
- asyncio loops other than the standard selector loops: uvloop (its loop runs in C, with no Python
  frame to read), the Windows proactor, a loop whose `_run_once` is overridden. A task that waits on
  a socket or pipe (registered with the selector) keeps the loop from being idle even when nothing
  will ever arrive, and so does any timer.
- threads without Python frames (started from C) are invisible to it, and so are signal handlers
  and timers set from C.
- it relies on CPython internals (`sys._current_frames`, local names in threading.py's
  `Condition.wait`, `Thread.join` and `_shutdown`, in `selectors` and `asyncio.base_events`, and the
  bytecode of a method call), checked against CPython 3.11, 3.12 and 3.13. Where a Python differs,
  it counts the thread as awake: it goes blind rather than cry wolf.
- it needs the GIL now and then: a thread that holds the GIL forever starves it (but is not
  deadlocked in Go's sense either).
"""

from __future__ import annotations

import contextlib
import dis
import functools
import gc
import importlib
import os
import queue
import re
import selectors
import signal
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType
from typing import Any


def current_frames() -> dict[int, FrameType]:
    """sys._current_frames(), on 3.11 with the cyclic garbage collector held off while it runs.

    On CPython 3.11, sys._current_frames() holds the runtime's thread-list lock while it makes
    the dict it returns; an allocation there can start a collection, and freeing a
    threading.local in it takes that same lock (local_dealloc): the calling thread then waits on
    itself for ever (CPython gh-106883, fixed in 3.12). Seen here: a test's main thread stuck in
    _PyThread_CurrentFrames -> gc_collect_main -> PyThread_acquire_lock_timed, where no timeout
    could reach it. With the collector disabled, no collection starts there.

    Only on 3.11, because the cure has a cost: the collector's on/off flag is one for the whole
    process, and Python code that turns it off and back on in another thread at the same moment
    (timeit does, around its timing) can interleave with this: it may find the collector off,
    and leave it off for good, as this turns it back on before it ends; or turn it on while this
    runs. A Ctrl-C that lands in the `finally` below can leave it off too. 3.12 and later need
    none of it.
    """
    if sys.version_info >= (3, 12):
        return sys._current_frames()
    # One caller of ours at a time, so that ours at least never interleave as above. Re-entrant:
    # a signal handler may look while the main thread it interrupted holds the lock.
    with _LOOKING:
        enabled = gc.isenabled()
        try:
            gc.disable()
            return sys._current_frames()
        finally:
            if enabled:
                gc.enable()


_LOOKING = threading.RLock()


def _code_of(owner: object, name: str) -> CodeType | None:
    """The code of owner.name, or None where this Python has no such function."""
    return getattr(getattr(owner, name, None), "__code__", None)


# The Python-level places a thread can sleep that the watchdog knows how to read.
_CONDITION_WAIT = _code_of(threading.Condition, "wait")
# Thread.start() waits (on an Event) until the new thread runs; until then that thread has no
# frame for sys._current_frames() to show, so the waiter can look like the last thread awake.
_THREAD_START = _code_of(threading.Thread, "start")
_JOIN_WAIT = _code_of(threading.Thread, "_wait_for_tstate_lock")
_EXIT_WAIT = _code_of(threading, "_shutdown")
# Only where join() has no Python-level wait below it is join() itself the place it sleeps (3.13).
_JOIN_IN_C = _code_of(threading.Thread, "join") if _JOIN_WAIT is None else None

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
# Every signal a handler can be set for, read once (the set of signals does not change).
_SIGNALS = tuple(sorted(signal.valid_signals()))
# signal.getsignal() without the wrapper that turns 0 and 1 into SIG_DFL and SIG_IGN: fifteen times
# faster, and it runs for every signal at every sample in which every thread is asleep.
_getsignal: Callable[[int], object] = getattr(
    importlib.import_module("_signal"), "getsignal", signal.getsignal
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
class BlockedTask:
    """One pending asyncio task of an idle loop, as the report shows it."""

    name: str
    # What it awaits: "queue put: errors", "await gather", "await task: Task-3".
    waiting_on: str
    # Its coroutines' (function, "file:line"), innermost first; library frames left out.
    stack: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DeadlockReport:
    threads: tuple[BlockedThread, ...]
    tasks: tuple[BlockedTask, ...] = ()

    def format(self) -> str:
        asleep = "tasks" if self.tasks else "threads"
        lines = [f"fatal error: all {asleep} are asleep - deadlock!"]
        blocks: list[tuple[str, BlockedThread | BlockedTask]] = [("task", t) for t in self.tasks]
        blocks += [("thread", thread) for thread in self.threads]
        for kind, blocked in blocks:
            lines += ["", f"{kind} {blocked.name} [{blocked.waiting_on}]:"]
            for function, location in blocked.stack:
                lines += [f"{function}(...)", f"\t{location}"]
        return "\n".join(lines) + "\n"


def exit_like_go(report: DeadlockReport) -> None:
    """The default reaction: print the report to stderr and end the whole process with status 2."""
    sys.stdout.flush()
    sys.stderr.write(report.format())
    sys.stderr.flush()
    # Not sys.exit(): that raises SystemExit in this thread only, and the deadlocked ones stay.
    os._exit(2)


@dataclass(frozen=True, eq=False)
class _Wait:
    """Where one thread sleeps, as one sample saw it: cheap to take, no stack walk, no names."""

    kind: str  # "condition", "join", "exit", "simplequeue" or "loop"
    code: CodeType
    lasti: int
    # The object this wait sleeps on (a Condition's waiter lock, a select() call's `ready` list,
    # the queue...). Holding it keeps its identity from being reused by a later wait.
    token: object

    def same_as(self, other: _Wait) -> bool:
        return self.code is other.code and self.lasti == other.lasti and self.token is other.token


def _same_waits(now: dict[int, _Wait], before: dict[int, _Wait]) -> bool:
    """True if every thread sleeps in the very same wait in both samples."""
    return now.keys() == before.keys() and all(
        wait.same_as(before[ident]) for ident, wait in now.items()
    )


class _Stillness:
    """Whether every thread has slept in the very same wait, sample after sample, for `grace` s."""

    def __init__(
        self,
        grace: float,
        count_switches: Callable[[dict[int, _Wait]], dict[int, int | None]] | None,
    ) -> None:
        self._grace = grace
        # Reads each thread's count of voluntary context switches; None where the system cannot.
        self._count_switches = count_switches
        self._waits: dict[int, _Wait] | None = None
        self._switches: dict[int, int | None] | None = None
        self._since = 0.0

    def forget(self) -> None:
        """A thread was awake: whatever comes next starts afresh."""
        self._waits = self._switches = None

    def still_for_grace(self, waits: dict[int, _Wait], now: float) -> bool:
        if self._waits is None or not _same_waits(waits, self._waits):
            # Something moved (or this is the first sample): the grace period starts now. Keeping
            # `waits` keeps its wait objects alive, so no later wait can take their identity.
            self._waits, self._switches, self._since = waits, None, now
            return False
        if self._count_switches is not None:
            # The same waits as last time; did any thread run in between? The first reading after
            # a change is the baseline, and the grace period starts from it. A SimpleQueue.get()
            # whose count cannot be read is not proven asleep.
            switches = self._count_switches(waits)
            unreadable = any(
                switches[ident] is None and wait.kind == "simplequeue"
                for ident, wait in waits.items()
            )
            if switches != self._switches or unreadable:
                self._switches, self._since = switches, now
                return False
        return now - self._since >= self._grace


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
        # Held until stop() releases it. The watchdog sleeps between samples trying to take it,
        # with a timeout (so it is awake); a bare lock is the cheapest such sleep.
        self._running = threading.Lock()
        self._running.acquire()
        self._thread = threading.Thread(target=self._watch, name="deadlock-watchdog", daemon=True)
        # The thread found awake by the last sample: the likeliest to be awake at the next one.
        self._last_awake: int | None = None
        # Whether this system tells how often a thread gave up the CPU (Linux /proc).
        self._counts_switches = _voluntary_context_switches(threading.get_native_id()) is not None

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # stopped already
            self._running.release()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _watch(self) -> None:
        count_switches = _context_switches if self._counts_switches else None
        stillness = _Stillness(self._grace, count_switches)
        while not self._running.acquire(timeout=self._interval):
            asleep = self._everyone_asleep()
            if asleep is None:
                stillness.forget()
            elif stillness.still_for_grace(asleep, time.monotonic()):
                report = self._report(asleep)
                if report is not None:
                    self._on_deadlock(report)
                    return

    def _everyone_asleep(self) -> dict[int, _Wait] | None:
        """Every other thread's wait, or None as soon as one thread is (or may be) awake."""
        frames = current_frames()
        me = threading.get_ident()
        hint = self._last_awake
        if hint in frames and hint != me and _classify(frames[hint], self._counts_switches) is None:
            return None
        if _signal_or_timer_can_wake():
            return None
        waits = {}
        for ident, frame in frames.items():
            if ident == me:
                continue
            wait = _classify(frame, self._counts_switches)
            if wait is None:
                if _is_watchdog(frame):
                    continue
                self._last_awake = ident
                return None
            waits[ident] = wait
        return waits or None

    def _report(self, expected: dict[int, _Wait]) -> DeadlockReport | None:
        """The report, built from a fresh look at every thread; None if anything has moved."""
        frames = current_frames()
        me = threading.get_ident()
        frames.pop(me, None)
        if _signal_or_timer_can_wake():
            return None
        waits = {ident: _classify(frame, self._counts_switches) for ident, frame in frames.items()}
        asleep = {ident: wait for ident, wait in waits.items() if wait is not None}
        if not _same_waits(asleep, expected):
            return None
        if any(wait is None and not _is_watchdog(frames[i]) for i, wait in waits.items()):
            return None

        threads = {thread.ident: thread for thread in threading.enumerate()}
        # Report in the order the threads started (main first, as Go lists goroutine 1 first);
        # threads that the threading module does not know about go last.
        order = [ident for ident in threads if ident in asleep]
        order += sorted(asleep.keys() - threads.keys())
        blocked_threads, blocked_tasks = [], []
        for ident in order:
            thread = threads.get(ident)
            name = thread.name if thread is not None else f"thread-{ident}"
            wait, frame = asleep[ident], frames[ident]
            if wait.kind == "loop":
                tasks = _pending_tasks(frame)
                if tasks:
                    # The loop's thread is its tasks' scheduler: the tasks say where it is stuck.
                    blocked_tasks += tasks
                    continue
            blocked_threads.append(_describe(name, wait, frame))
        return DeadlockReport(tuple(blocked_threads), tuple(blocked_tasks))


# --- Signals and timers: ways out that no thread's stack shows -----------------------------------


def _signal_or_timer_can_wake() -> bool:
    """True while a signal handler of the program's own or an armed real-time timer can wake it."""
    # An armed real-time timer raises SIGALRM, which either a handler catches or ends the process
    # (the default action); only an ignored SIGALRM makes it no way out.
    timer_armed = hasattr(signal, "getitimer") and signal.getitimer(signal.ITIMER_REAL)[0] > 0
    if timer_armed and signal.getsignal(signal.SIGALRM) is not signal.SIG_IGN:
        return True
    for signum in _SIGNALS:
        handler = _getsignal(signum)
        # None: set from C (see the module docstring); an int: SIG_DFL or SIG_IGN.
        if handler is None or isinstance(handler, int) or handler is signal.default_int_handler:
            continue
        if not _is_asyncio_sigint(handler):
            return True
    return False


def _is_asyncio_sigint(handler: object) -> bool:
    """asyncio.run's Ctrl-C handler (3.11+): partial(runner._on_sigint, main_task=...)."""
    runners = sys.modules.get("asyncio.runners")
    on_sigint = getattr(getattr(runners, "Runner", None), "_on_sigint", None)
    if on_sigint is None or not isinstance(handler, functools.partial):
        return False
    return getattr(handler.func, "__func__", None) is on_sigint


# --- Is this thread asleep? One look at its innermost frame --------------------------------------


def _classify(frame: FrameType, counts_switches: bool) -> _Wait | None:
    """How `frame`'s thread sleeps, untimed, in a wait we can read; None if it may be awake.

    Reads locals only of the frames we know: other threads are paused mid-code, not asleep.
    """
    code = frame.f_code
    if code is _CONDITION_WAIT:
        # Untimed, and the waiter lock still on the condition's list: notify() takes it off
        # (and releases it) before the sleeper can run again, so nobody has woken this one yet.
        local = frame.f_locals
        waiter, condition = local.get("waiter"), local.get("self")
        waiters = getattr(condition, "_waiters", ())
        if local.get("timeout") is None and waiter is not None and waiter in waiters:
            if _starting_a_thread(frame):
                return None  # the new thread will run and wake it (seen under load: > 0.3 s)
            return _Wait("condition", code, frame.f_lasti, waiter)
        return None
    if code is _JOIN_WAIT:
        # Up to 3.12: untimed join (block=True, timeout=-1) on the thread's lock, which is held
        # for as long as the thread runs.
        local = frame.f_locals
        lock = local.get("lock")
        untimed = local.get("block") is True and local.get("timeout") == -1
        if untimed and lock is not None and lock.locked():
            return _Wait("join", code, frame.f_lasti, lock)
        return None
    if code is _JOIN_IN_C:
        # 3.13+: join() waits in C on the thread's handle, done once the thread ends.
        local = frame.f_locals
        handle = getattr(local.get("self"), "_handle", None)
        if local.get("timeout") is None and handle is not None and not handle.is_done():
            return _Wait("join", code, frame.f_lasti, handle)
        return None
    if code is _EXIT_WAIT:
        return _exit_wait(frame)
    if code in _SELECT_CALLS:
        return _idle_loop(frame)
    if counts_switches:
        return _simple_queue_get(frame)
    return None


def _starting_a_thread(frame: FrameType) -> bool:
    """Condition.wait() inside Event.wait() inside Thread.start(): waiting for a new thread."""
    caller = frame.f_back
    outer = caller.f_back if caller is not None else None
    return outer is not None and outer.f_code is _THREAD_START


def _exit_wait(frame: FrameType) -> _Wait | None:
    """Main, at interpreter exit, waiting for the non-daemon threads."""
    call = _method_calls(frame.f_code).get(frame.f_lasti)
    if call == _MethodCall("lock", "acquire", (), ()):
        # Up to 3.12: it joins each non-daemon thread's lock, held while the thread runs.
        lock = frame.f_locals.get("lock")
        if lock is not None and lock.locked():
            return _Wait("exit", frame.f_code, frame.f_lasti, lock)
        return None
    if frame.f_lasti in _EXIT_IN_C:
        # 3.13+: it waits in C. Only the context-switch counts and the grace period tell that
        # wait from a passing moment.
        return _Wait("exit", frame.f_code, frame.f_lasti, frame.f_code)
    return None


def _simple_queue_get(frame: FrameType) -> _Wait | None:
    """`local.get()` on an empty SimpleQueue, untimed, proven from the bytecode at f_lasti."""
    call = _method_calls(frame.f_code).get(frame.f_lasti)
    if call is None or call.method != "get":
        return None
    simple_queue = frame.f_locals.get(call.receiver)
    # (A subclass's own Python get() would be the innermost frame, not this one.) An item in the
    # queue means the getter has been woken and will run; SimpleQueue's own C empty(), so that no
    # subclass's code runs in this thread.
    if not isinstance(simple_queue, queue.SimpleQueue) or not queue.SimpleQueue.empty(simple_queue):
        return None
    # SimpleQueue.get(block=True, timeout=None)
    arguments = dict(zip(("block", "timeout"), call.positional, strict=False))
    arguments.update(call.keywords)
    if not arguments.get("block", True) or arguments.get("timeout") is not None:
        return None
    return _Wait("simplequeue", frame.f_code, frame.f_lasti, simple_queue)


def _idle_loop(select: FrameType) -> _Wait | None:
    """An asyncio loop's thread in select(), with nothing that could wake it but another thread."""
    if select.f_lasti not in _SELECT_CALLS[select.f_code]:
        return None  # in select(), but not (or no longer) in the system call
    run_once = select.f_back
    if run_once is None or run_once.f_code is not _run_once_code():
        return None
    # _run_once passes timeout=None only with no ready callbacks, no timers and not stopping.
    if run_once.f_locals.get("timeout") is not None:
        return None
    loop: Any = run_once.f_locals.get("self")
    # (Timers, stop() and loop signal handlers need no look of their own: the first two make the
    # timeout not None, and add_signal_handler() installs a Python signal handler.)
    try:
        # A callback from another thread (call_soon_threadsafe) lands in _ready before it wakes
        # the loop, so a woken loop is seen as such until it has run it.
        if loop._ready:
            return None
        registered = set(loop._selector.get_map())
        if registered != {loop._ssock.fileno()}:
            return None  # a socket, pipe or child process the loop waits on: I/O can wake it
    except (AttributeError, OSError):
        return None  # not the standard selector loop
    ready = select.f_locals.get("ready")
    return _Wait("loop", select.f_code, select.f_lasti, ready)


def _run_once_code() -> CodeType | None:
    base_events = sys.modules.get("asyncio.base_events")
    return _code_of(getattr(base_events, "BaseEventLoop", None), "_run_once")


def _is_watchdog(frame: FrameType) -> bool:
    """True for a watchdog's own thread (this one or another): it is no part of the program."""
    walked: FrameType | None = frame
    while walked is not None:
        if walked.f_code is _WATCH:
            return True
        walked = walked.f_back
    return False


_WATCH = Watchdog._watch.__code__


# --- Reading the bytecode at a frame's f_lasti ---------------------------------------------------


@dataclass(frozen=True)
class _MethodCall:
    """`receiver.method(*positional, **keywords)`: a local variable's method, constant arguments."""

    receiver: str
    method: str
    positional: tuple[object, ...]
    keywords: tuple[tuple[str, object], ...]


_LOAD_LOCAL = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF"})
_LOAD_METHOD = frozenset({"LOAD_METHOD", "LOAD_ATTR"})
_CALL = frozenset({"CALL", "CALL_KW"})


@functools.lru_cache(maxsize=512)
def _method_calls(code: CodeType) -> dict[int, _MethodCall]:
    """Every `local.method(constants)` call in `code`, by the offsets a thread inside it shows.

    A thread stopped in a C function shows f_lasti at the instruction that called it: CALL, or on
    3.11 the PRECALL before it, which makes the call itself once specialised for a C method. The
    shapes read here:
    3.11 LOAD_FAST, LOAD_METHOD, LOAD_CONST..., [KW_NAMES], PRECALL, CALL;
    3.12 LOAD_FAST, LOAD_ATTR, LOAD_CONST..., [KW_NAMES], CALL;
    3.13 LOAD_FAST, LOAD_ATTR, LOAD_CONST..., [LOAD_CONST names, CALL_KW | CALL].
    Any other shape is left out, so such a call is never taken for a wait.
    """
    instructions = list(dis.get_instructions(code))
    calls = {}
    for index, call in enumerate(instructions):
        if call.opname not in _CALL or call.arg is None:
            continue
        before = index - 1
        if instructions[before].opname == "PRECALL":
            before -= 1
        names: tuple[str, ...] = ()
        if call.opname == "CALL_KW":
            if instructions[before].opname != "LOAD_CONST":
                continue
            names = instructions[before].argval
            before -= 1
        elif instructions[before].opname == "KW_NAMES":
            names = code.co_consts[instructions[before].arg or 0]
            before -= 1
        first_argument = before - call.arg + 1
        if first_argument < 2:
            continue
        arguments = instructions[first_argument : before + 1]
        method, receiver = instructions[first_argument - 1], instructions[first_argument - 2]
        if (
            any(argument.opname != "LOAD_CONST" for argument in arguments)
            or method.opname not in _LOAD_METHOD
            or receiver.opname not in _LOAD_LOCAL
            # A jump landing after the receiver's load could put something else on the stack.
            or any(i.is_jump_target for i in instructions[first_argument - 1 : index + 1])
        ):
            continue
        values = tuple(argument.argval for argument in arguments)
        split = len(values) - len(names)
        method_call = _MethodCall(
            receiver.argval,
            method.argval,
            values[:split],
            tuple(zip(names, values[split:], strict=True)),
        )
        for offset in _offsets_of_call(instructions, index):
            calls[offset] = method_call
    return calls


def _offsets_of_call(instructions: list[dis.Instruction], index: int) -> tuple[int, ...]:
    """Where f_lasti stands while the CALL at `index` runs: there, or at its PRECALL (3.11)."""
    call = instructions[index]
    if index > 0 and instructions[index - 1].opname == "PRECALL":
        return (instructions[index - 1].offset, call.offset)
    return (call.offset,)


def _calls_of_global(code: CodeType, name: str) -> frozenset[int]:
    """The offsets of the CALLs that call the global `name` with no arguments, like `f()`."""
    offsets: list[int] = []
    instructions = list(dis.get_instructions(code))
    for index, instruction in enumerate(instructions[:-2]):
        if instruction.opname == "LOAD_GLOBAL" and instruction.argval == name:
            call = index + 2 if instructions[index + 1].opname == "PRECALL" else index + 1
            if instructions[call].opname == "CALL" and instructions[call].arg == 0:
                offsets += _offsets_of_call(instructions, call)
    return frozenset(offsets)


def _system_calls_in_select() -> dict[CodeType, frozenset[int]]:
    """For each selector's select(): the offsets of the CALL that blocks (poll, control, select)."""
    blocking = {"poll", "control", "_select"}
    calls = {}
    for selector in vars(selectors).values():
        if not isinstance(selector, type):
            continue
        code = getattr(vars(selector).get("select"), "__code__", None)
        if code is None:
            continue
        instructions = list(dis.get_instructions(code))
        offsets: list[int] = []
        for index, instruction in enumerate(instructions):
            if instruction.opname in _LOAD_METHOD and instruction.argval in blocking:
                # The first call after the method's load is its call: the arguments call nothing.
                call = next(
                    i
                    for i in range(index + 1, len(instructions))
                    if instructions[i].opname in _CALL
                )
                offsets += _offsets_of_call(instructions, call)
        calls[code] = frozenset(offsets)
    return calls


_SELECT_CALLS = _system_calls_in_select()
# 3.13+: interpreter exit waits for the non-daemon threads in C, inside `_thread_shutdown()`.
_EXIT_IN_C = _calls_of_global(_EXIT_WAIT, "_thread_shutdown") if _EXIT_WAIT else frozenset()


# --- Building the report (only when reporting) ---------------------------------------------------


def _describe(name: str, wait: _Wait, frame: FrameType) -> BlockedThread:
    """The report's entry for one asleep thread."""
    if wait.kind == "loop":
        return BlockedThread(name, "asyncio loop idle, no tasks", _stack(_outward(frame)))
    if wait.kind == "simplequeue":
        executor = sys.modules.get("concurrent.futures.thread")
        if frame.f_code is _code_of(executor, "_worker"):
            return BlockedThread(name, "executor worker idle", _stack(_outward(frame)))
        named = _name_of(wait.token, frame)
        waiting_on = "simplequeue get" + (f": {named}" if named else "")
        return BlockedThread(name, waiting_on, _stack(_outward(frame)))
    if wait.kind == "exit":
        return BlockedThread(name, "exit: waiting for non-daemon threads", _stack(_outward(frame)))

    # Walk outward past the frames that belong to the primitive (Queue.put -> Condition.wait) to
    # the code that called it: that is the wait's site. The outermost primitive names the wait.
    kind, method, waited_on, site = "condition", "wait", None, frame
    while (label := _primitive(site)) is not None:
        kind, method, waited_on = label, site.f_code.co_name, site.f_locals.get("self")
        if site.f_back is None:
            break
        site = site.f_back
    waiting_on = f"{kind} {method}"
    named = _name_of(waited_on, site)
    if named:
        waiting_on += f": {named}"
    return BlockedThread(name, waiting_on, _stack(_outward(site)))


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
            return str(variable)
    owner = site.f_locals.get("self")
    for attribute, value in getattr(owner, "__dict__", {}).items():
        if value is waited_on:
            return f"self.{attribute}"
    return None


def _pending_tasks(select: FrameType) -> list[BlockedTask]:
    """The pending tasks of the idle loop whose select() frame this is, in order of their names."""
    asyncio = sys.modules.get("asyncio")
    run_once = select.f_back
    if asyncio is None or run_once is None:
        return []
    tasks = asyncio.all_tasks(run_once.f_locals.get("self"))
    return [_describe_task(task) for task in sorted(tasks, key=_natural)]


def _natural(task: Any) -> list[str | int]:
    """Sort key: Task-2 before Task-10."""
    parts = re.split(r"(\d+)", task.get_name())
    return [int(part) if part.isdigit() else part for part in parts]


def _describe_task(task: Any) -> BlockedTask:
    """A pending task: where its innermost coroutine awaits, and what."""
    # Outermost coroutine first; each one's cr_await is the next, down to a future (or nothing).
    frames: list[FrameType] = []
    awaiting = task.get_coro()
    while awaiting is not None:
        frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaiting = getattr(awaiting, "cr_await", None) or getattr(awaiting, "gi_yieldfrom", None)
    frames.reverse()
    if not frames:
        return BlockedTask(task.get_name(), "await", ())

    # As for threads: the innermost frames that belong to an asyncio primitive name the wait; the
    # first frame outside them is its site.
    kind, method, waited_on, index = None, "", None, 0
    while index < len(frames) - 1 and (label := _asyncio_primitive(frames[index])) is not None:
        kind, method = label, frames[index].f_code.co_name
        waited_on = frames[index].f_locals.get("self")
        index += 1
    site = frames[index]
    if kind is not None:
        waiting_on = f"{kind} {method if not method.startswith('_') else 'wait'}"
    else:
        waited_on = getattr(task, "_fut_waiter", None)
        waiting_on = _awaited_future(waited_on)
    named = _name_of(waited_on, site)
    if named and not waiting_on.startswith("await task"):
        waiting_on += f": {named}"
    return BlockedTask(task.get_name(), waiting_on, _stack(frames[index:]))


def _asyncio_primitive(frame: FrameType) -> str | None:
    owner = frame.f_locals.get("self")
    asyncio = sys.modules.get("asyncio")
    if owner is None or asyncio is None:
        return None
    for name in ("Queue", "Event", "Lock", "Semaphore", "Condition", "Barrier", "TaskGroup"):
        primitive = getattr(asyncio, name, None)
        if isinstance(primitive, type) and isinstance(owner, primitive):
            return name.lower()
    return None


def _awaited_future(future: object) -> str:
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None and isinstance(future, asyncio.Task):
        return f"await task: {future.get_name()}"
    if type(future).__name__ == "_GatheringFuture":
        return "await gather"
    return "await future"


def _outward(frame: FrameType | None) -> Iterable[FrameType]:
    """`frame` and its callers, innermost first."""
    while frame is not None:
        yield frame
        frame = frame.f_back


def _stack(frames: Iterable[FrameType]) -> tuple[tuple[str, str], ...]:
    """The frames outside the libraries as (function, "file:line"), in the order given."""
    frames = list(frames)
    stack = []
    for frame in frames:
        filename = frame.f_code.co_filename
        path = Path(filename).resolve()
        # "<frozen runpy>" and the like are library code too, compiled into the interpreter.
        if not filename.startswith("<") and not any(path.is_relative_to(lib) for lib in _LIBRARIES):
            module = frame.f_globals.get("__name__", "?")
            stack.append(
                (f"{module}.{frame.f_code.co_qualname}", f"{_shown(path)}:{frame.f_lineno}")
            )
    if not stack and frames:
        # All library code (a thread whose target is `queue.get` itself): show where it waits.
        site = frames[0]
        stack.append((site.f_code.co_qualname, f"{site.f_code.co_filename}:{site.f_lineno}"))
    return tuple(stack)


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- Context switches (Linux) --------------------------------------------------------------------


def _context_switches(waits: dict[int, _Wait]) -> dict[int, int | None]:
    """Each asleep thread's count of voluntary context switches (None where it cannot be read)."""
    native_ids = {thread.ident: thread.native_id for thread in threading.enumerate()}
    return {ident: _voluntary_context_switches(native_ids.get(ident)) for ident in waits}


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
