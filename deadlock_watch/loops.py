"""asyncio: an event loop that only another thread could wake, and what its tasks await.

An idle loop is a thread in a selector's select(), stopped at the system call, called from
`BaseEventLoop._run_once` with no timeout, nothing ready to run and nothing registered but the
loop's own self-pipe. When such a loop has pending tasks, the report lists each task's wait
instead of the loop's thread. docs/watchdog.md says what it cannot see (uvloop, the proactor).
"""

from __future__ import annotations

import re
import sys
from types import CodeType, FrameType
from typing import Any

from deadlock_watch.frames import SELECT_CALLS, code_of
from deadlock_watch.report import BlockedTask, name_of, stack
from deadlock_watch.threads import Wait


def idle_loop(select: FrameType) -> Wait | None:
    """An asyncio loop's thread in select(), with nothing that could wake it but another thread."""
    if select.f_lasti not in SELECT_CALLS[select.f_code]:
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
    return Wait("loop", select.f_code, select.f_lasti, ready)


def _run_once_code() -> CodeType | None:
    base_events = sys.modules.get("asyncio.base_events")
    return code_of(getattr(base_events, "BaseEventLoop", None), "_run_once")


def pending_tasks(select: FrameType) -> list[BlockedTask]:
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
    named = name_of(waited_on, site)
    if named and not waiting_on.startswith("await task"):
        waiting_on += f": {named}"
    return BlockedTask(task.get_name(), waiting_on, stack(frames[index:]))


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
