"""The report, Go-style: each asleep thread (or task), what it waits on, and its stack.

Built only once the watchdog has proven a deadlock, from a fresh look at every thread; nothing
here runs while it samples. `exit_like_go` is the default reaction. docs/watchdog.md shows a
report and reads it.
"""

from __future__ import annotations

import os
import queue
import sys
import sysconfig
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from deadlock_watch.declared import declaration_of
from deadlock_watch.frames import code_of, outward
from deadlock_watch.threads import Wait

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
# Frames from these are left out of a report's stacks: the standard library, installed packages,
# and the scripts that installers write to start them (the `pytest` command's few lines).
_LIBRARIES = tuple(
    Path(sysconfig.get_paths()[key]).resolve()
    for key in ("stdlib", "purelib", "platlib", "scripts")
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
    # The ident of every thread the report covers (an event loop's thread, for its tasks too).
    idents: tuple[int, ...] = ()

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


def describe(name: str, wait: Wait, frame: FrameType) -> BlockedThread:
    """The report's entry for one asleep thread."""
    if wait.kind == "loop":
        return BlockedThread(name, "asyncio loop idle, no tasks", stack(outward(frame)))
    if wait.kind == "simplequeue":
        executor = sys.modules.get("concurrent.futures.thread")
        if frame.f_code is code_of(executor, "_worker"):
            return BlockedThread(name, "executor worker idle", stack(outward(frame)))
        named = name_of(wait.token, frame)
        waiting_on = "simplequeue get" + (f": {named}" if named else "")
        return BlockedThread(name, waiting_on, stack(outward(frame)))
    if wait.kind == "lock":
        # The innermost frame calls acquire() itself (C): it is the wait's site.
        named = name_of(wait.token, frame)
        waiting_on = "lock acquire" + (f": {named}" if named else "")
        return BlockedThread(name, waiting_on, stack(outward(frame)))
    if wait.kind == "exit":
        return BlockedThread(name, "exit: waiting for non-daemon threads", stack(outward(frame)))

    site = frame
    if wait.kind == "polling":
        # Start from the declared method's frame: the thread may be in a function it calls.
        site = next((f for f in outward(frame) if f.f_code is wait.code), frame)
    # Walk outward past the frames that belong to the primitive (Queue.put -> Condition.wait) to
    # the code that called it: that is the wait's site. The outermost primitive names the wait.
    kind, method, waited_on = "condition", "wait", None
    while (label := _primitive(site)) is not None:
        kind, method, waited_on = label, site.f_code.co_name, site.f_locals.get("self")
        if site.f_back is None:
            break
        site = site.f_back
    if wait.kind == "polling":
        method = "wait"  # Go's word; the method names say how it waits, not on what
    waiting_on = f"{kind} {method}"
    named = name_of(waited_on, site)
    if named:
        waiting_on += f": {named}"
    return BlockedThread(name, waiting_on, stack(outward(site)))


def _primitive(frame: FrameType) -> str | None:
    """The kind of synchronisation object whose method `frame` runs, if it is one."""
    owner = frame.f_locals.get("self")
    if owner is None:
        return None
    # A thread's own run() and bootstrap frames hold it as `self` too, but only join() waits.
    if isinstance(owner, threading.Thread) and frame.f_code.co_name not in _THREAD_WAITS:
        return None
    # Go's WaitGroup has no standard-library twin; a class names its wait through the hook.
    declared = declaration_of(owner)
    if declared is not None:
        return declared.kind
    for primitive, kind in _PRIMITIVES:
        if isinstance(owner, primitive):
            return kind
    return None


def name_of(waited_on: object, site: FrameType) -> str | None:
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


def stack(frames: Iterable[FrameType]) -> tuple[tuple[str, str], ...]:
    """The frames outside the libraries as (function, "file:line"), in the order given."""
    frames = list(frames)
    shown = []
    for frame in frames:
        filename = frame.f_code.co_filename
        path = Path(filename).resolve()
        # "<frozen runpy>" and the like are library code too, compiled into the interpreter.
        if not filename.startswith("<") and not any(path.is_relative_to(lib) for lib in _LIBRARIES):
            module = frame.f_globals.get("__name__", "?")
            shown.append(
                (f"{module}.{frame.f_code.co_qualname}", f"{_shown(path)}:{frame.f_lineno}")
            )
    if not shown and frames:
        # All library code (a thread whose target is `queue.get` itself): show where it waits.
        site = frames[0]
        shown.append((site.f_code.co_qualname, f"{site.f_code.co_filename}:{site.f_lineno}"))
    return tuple(shown)


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
