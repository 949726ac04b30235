"""Is this thread asleep? One look at a thread's innermost frames, for each wait the watchdog reads.

A thread is asleep when it is parked, with no timeout, in a wait that only another thread can end,
and not woken yet: a Condition.wait (queues, events, barriers, semaphores, a WaitGroup), a join,
the interpreter's exit, an untimed SimpleQueue.get or Lock.acquire on Linux, or a polling wait
declared through the hook in declared.py. Anything else counts as awake. docs/watchdog.md gives
each rule's reason.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from types import CodeType, FrameType

from deadlock_watch.declared import declaration_of
from deadlock_watch.frames import MethodCall, calls_of_global, code_of, method_calls

# The Python-level places a thread can sleep that the watchdog knows how to read.
CONDITION_WAIT = code_of(threading.Condition, "wait")
# Thread.start() waits (on an Event) until the new thread runs; until then that thread has no
# frame for sys._current_frames() to show, so the waiter can look like the last thread awake.
_THREAD_START = code_of(threading.Thread, "start")
JOIN_WAIT = code_of(threading.Thread, "_wait_for_tstate_lock")
EXIT_WAIT = code_of(threading, "_shutdown")
# Only where join() has no Python-level wait below it is join() itself the place it sleeps (3.13).
JOIN_IN_C = code_of(threading.Thread, "join") if JOIN_WAIT is None else None
# 3.13+: interpreter exit waits for the non-daemon threads in C, inside `_thread_shutdown()`.
_EXIT_IN_C = calls_of_global(EXIT_WAIT, "_thread_shutdown") if EXIT_WAIT else frozenset()


# The waits that allocate nothing per wait, so that only a thread's count of context switches
# tells one that stays from one that ended and began again at the same place (Linux only).
PROVEN_BY_SWITCHES = frozenset({"simplequeue", "lock"})


@dataclass(frozen=True, eq=False)
class Wait:
    """Where one thread sleeps, as one sample saw it: cheap to take, no stack walk, no names."""

    kind: str  # "condition", "join", "exit", "simplequeue", "lock", "loop" or "polling"
    code: CodeType
    lasti: int
    # The object this wait sleeps on (a Condition's waiter lock, a select() call's `ready` list,
    # the queue...). Holding it keeps its identity from being reused by a later wait.
    token: object
    # A polling wait's count of changes: the same wait only while nothing has changed.
    progress: int | None = None

    def same_as(self, other: Wait) -> bool:
        same_place = self.code is other.code and self.lasti == other.lasti
        return same_place and self.token is other.token and self.progress == other.progress


def same_waits(now: dict[int, Wait], before: dict[int, Wait]) -> bool:
    """True if every thread sleeps in the very same wait in both samples."""
    return now.keys() == before.keys() and all(
        wait.same_as(before[ident]) for ident, wait in now.items()
    )


def condition_wait(frame: FrameType) -> Wait | None:
    """Condition.wait() with no timeout, not yet notified."""
    # Untimed, and the waiter lock still on the condition's list: notify() takes it off
    # (and releases it) before the sleeper can run again, so nobody has woken this one yet.
    local = frame.f_locals
    waiter, condition = local.get("waiter"), local.get("self")
    waiters = getattr(condition, "_waiters", ())
    if local.get("timeout") is None and waiter is not None and waiter in waiters:
        if _starting_a_thread(frame):
            return None  # the new thread will run and wake it (seen under load: > 0.3 s)
        return Wait("condition", frame.f_code, frame.f_lasti, waiter)
    return None


def join_wait(frame: FrameType) -> Wait | None:
    """Thread.join() with no timeout, on a thread that still runs."""
    local = frame.f_locals
    if frame.f_code is JOIN_IN_C:
        # 3.13+: join() waits in C on the thread's handle, done once the thread ends.
        handle = getattr(local.get("self"), "_handle", None)
        if local.get("timeout") is None and handle is not None and not handle.is_done():
            return Wait("join", frame.f_code, frame.f_lasti, handle)
        return None
    # Up to 3.12: untimed join (block=True, timeout=-1) on the thread's lock, which is held
    # for as long as the thread runs.
    lock = local.get("lock")
    untimed = local.get("block") is True and local.get("timeout") == -1
    if untimed and lock is not None and lock.locked():
        return Wait("join", frame.f_code, frame.f_lasti, lock)
    return None


def _starting_a_thread(frame: FrameType) -> bool:
    """Condition.wait() inside Event.wait() inside Thread.start(): waiting for a new thread."""
    caller = frame.f_back
    outer = caller.f_back if caller is not None else None
    return outer is not None and outer.f_code is _THREAD_START


def exit_wait(frame: FrameType) -> Wait | None:
    """Main, at interpreter exit, waiting for the non-daemon threads."""
    call = method_calls(frame.f_code).get(frame.f_lasti)
    if call == MethodCall("lock", "acquire", (), ()):
        # Up to 3.12: it joins each non-daemon thread's lock, held while the thread runs.
        lock = frame.f_locals.get("lock")
        if lock is not None and lock.locked():
            return Wait("exit", frame.f_code, frame.f_lasti, lock)
        return None
    if frame.f_lasti in _EXIT_IN_C:
        # 3.13+: it waits in C. Only the context-switch counts and the grace period tell that
        # wait from a passing moment.
        return Wait("exit", frame.f_code, frame.f_lasti, frame.f_code)
    return None


def simple_queue_get(frame: FrameType) -> Wait | None:
    """`local.get()` on an empty SimpleQueue, untimed, proven from the bytecode at f_lasti."""
    call = method_calls(frame.f_code).get(frame.f_lasti)
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
    return Wait("simplequeue", frame.f_code, frame.f_lasti, simple_queue)


# What threading.Lock() makes (_thread.lock): a class of C, whose acquire() has no frame.
_LOCK_TYPE = type(threading.Lock())


def lock_acquire(frame: FrameType) -> Wait | None:
    """`local.acquire()` on a held threading.Lock, untimed, proven from the bytecode at f_lasti.

    A held lock is released only by another thread's call (the holder, or whoever releases it for
    it), so while every other thread sleeps, nobody will. It is read as a SimpleQueue.get is, and
    on Linux only, for the same reason: a waiter the release has just handed the lock (in C,
    before it has the GIL back) still stands here, with the lock held, now by itself. Only its
    count of context switches, which that wake-up moves, tells it from one still waiting.
    """
    call = method_calls(frame.f_code).get(frame.f_lasti)
    if call is None or call.method != "acquire":
        return None
    lock = frame.f_locals.get(call.receiver)
    # Exactly a threading.Lock, whose acquire() is C: an RLock its owner may take again, and any
    # other class's acquire() would be a frame of its own.
    if type(lock) is not _LOCK_TYPE or not lock.locked():
        return None
    # Lock.acquire(blocking=True, timeout=-1)
    arguments = dict(zip(("blocking", "timeout"), call.positional, strict=False))
    arguments.update(call.keywords)
    if not arguments.get("blocking", True) or arguments.get("timeout", -1) != -1:
        return None
    return Wait("lock", frame.f_code, frame.f_lasti, lock)


def polling_wait(frame: FrameType) -> Wait | None:
    """A polling wait that a class declares (declared.py), asleep while nothing has changed.

    Its thread wakes every few milliseconds only to let a Ctrl-C in, so neither where it stands
    nor its count of context switches can say that it sleeps: its declared counters do. Once it
    has looked at the latest change and found nothing to do, every later look finds the same until
    another thread changes something; so it is the same wait for as long as the count of changes
    (Wait.progress) stays, whatever its thread did in between.
    """
    # The declared method itself, or a function it calls (its test of the state, its sleep).
    for candidate in (frame, frame.f_back):
        if candidate is None:
            return None
        code = candidate.f_code
        if not code.co_argcount or code.co_varnames[0] != "self":
            continue
        owner = candidate.f_locals.get("self")
        declared = declaration_of(owner)
        if declared is None or declared.polls != code.co_name:
            continue
        # looked_at first: it is only ever set to a count that `changes` has had, and `changes`
        # only grows, so equal readings mean nothing changed from the thread's look to now.
        looked_at = getattr(owner, declared.looked_at, None)
        changes = getattr(owner, declared.changes, None)
        if type(changes) is not int or looked_at != changes:
            return None  # a change the thread has not looked at yet: it is about to wake
        return Wait("polling", code, -1, owner, progress=changes)
    return None
