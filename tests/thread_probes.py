"""Look at real threads without sleeping: is one parked for good, is one still alive after run()?

`is_parked` reads what a thread is doing right now from its Python frame. It relies on CPython
internals, as the watchdog (deadlock_watch/) does: `sys._current_frames()`, and the local names of
`threading.Condition.wait` (`waiter`, `gotit`, `timeout`), the same in 3.11, 3.12 and 3.13.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest

from deadlock_watch import current_frames

_CONDITION_WAIT = threading.Condition.wait.__code__


def parked_frame(thread: threading.Thread) -> FrameType | None:
    """The `Condition.wait` frame `thread` sleeps in, if no one has woken it; else None.

    Parked means: in an untimed `Condition.wait` (every queue put/get, Event and WaitGroup wait
    sleeps there), past the point where it registered its waiter lock, and that lock still held.
    `notify()` releases the waiter lock, and a waiter lock is never locked again once released, so
    a held lock seen now was held, by this very wait, at every moment since the frame was taken.
    """
    frame = current_frames().get(thread.ident or -1)
    if frame is None or frame.f_code is not _CONDITION_WAIT:
        return None
    local = frame.f_locals
    waiter = local.get("waiter")
    untimed = local.get("timeout") is None and local.get("gotit") is False
    return frame if untimed and waiter is not None and waiter.locked() else None


def is_parked(thread: threading.Thread) -> bool:
    return parked_frame(thread) is not None


def caller_of_wait(frame: FrameType) -> tuple[str, Any]:
    """For a parked frame: the method that called Condition.wait, and the object it belongs to."""
    caller = frame.f_back
    assert caller is not None
    return caller.f_code.co_name, caller.f_locals.get("self")


@contextmanager
def exits_held_back(*function_names: str, seconds: float = 0.3) -> Iterator[None]:
    """Threads started inside the block pause as a function of theirs named so returns.

    A pool that joins its threads waits out the pause; one that forgets to join returns while its
    threads are still alive, and a test can see them. The pause ends when the block does, or after
    `seconds` at the latest, so a correct pool is only slowed down, never stuck.
    """
    block_over = threading.Event()

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "return" and frame.f_code.co_name in function_names:
            block_over.wait(seconds)

    # threading.setprofile applies to threads started from now on (each installs it at start).
    threading.setprofile(profile)
    try:
        yield
    finally:
        threading.setprofile(None)
        block_over.set()


def interrupt_thread_start(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make Thread.start() of the thread called `name` fail as a Ctrl-C landing inside it does.

    Thread.start() waits in Condition.wait(); a Ctrl-C landing as that wait takes its lock back
    leaves the lock released, the `with` around it raises RuntimeError("release unlocked lock"),
    and the KeyboardInterrupt is only its __context__. Here it happens on purpose, after that
    thread has really started.
    """
    start = threading.Thread.start

    def start_then_interrupted(thread: threading.Thread) -> None:
        start(thread)
        if thread.name == name:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise RuntimeError("release unlocked lock") from None

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupted)
