"""One child process of the processes backend as the parent holds it: starting it, its pipes
and what it owes (Child), and how a task is encoded for it (TaskEncoder). The children of a run
together, and their replies, are child_process_group.py's.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FunctionType
from typing import Any

from beyond.backends.child_process_errors import WorkerStartFailed
from beyond.backends.child_process_frames import CALL, FN, NO_LIMIT, current_at, limit_at
from beyond.backends.child_process_loop import serve
from beyond.backends.protocol import SchedulerSeam
from beyond.cancellation import Cancelled
from beyond.task import Task

# How long the end of a run waits for an idle child to exit after its pipe is closed, before
# killing it.
EXIT_GRACE_SECONDS = 2.0

# The children's names: "beyond-processes-<slot number>". A child imports the main module under
# this name (multiprocessing sets it first), which is how it knows, there, that it is ours.
CHILD_NAME = "beyond-processes-"

# Process.start() from several dispatchers at once (several pools): multiprocessing keeps
# process-wide state (the list of children it reaps, the forkserver's connection) that it does
# not document as safe for concurrent starts. Serialising the starts costs a few milliseconds
# once per child.
starting = threading.Lock()


@dataclass
class RunCounts:
    """What a backend's runs did, for tests and measurements: children started, tasks a lost child
    had not started that went to another child, tasks asked back for an idle child, and those of
    them that came back (the others had started)."""

    children_started: int = 0
    sent_on: int = 0
    asked_back: int = 0
    taken_back: int = 0


class Child:
    """One child process: its pipes, what it was sent, what it owes."""

    __slots__ = (
        "exitcode",
        "functions",
        "inbox",
        "limit",
        "outbox",
        "pid",
        "process",
        "ready",
        "replies_fd",
        "sent",
        "sentinel",
        "slot",
        "tasks_fd",
        "timed",
        "unmarked",
        "writable",
    )

    def __init__(self, slot: int, process: BaseProcess, tasks_fd: int, replies_fd: int) -> None:
        self.slot = slot
        self.process = process
        self.pid: int = process.pid or 0
        self.sentinel: int = process.sentinel
        self.tasks_fd = tasks_fd
        self.replies_fd = replies_fd
        # (sequence number, task) sent and not yet answered, in the order sent: the child answers
        # in that order.
        self.sent: deque[tuple[int, Task[Any]]] = deque()
        self.inbox = bytearray()
        self.outbox = bytearray()
        # The functions sent to it for CALL frames: id(function) -> its number there.
        self.functions: dict[int, int] = {}
        # Tasks sent since the last one marked PUBLISH_AFTER.
        self.unmarked = 0
        # Its limit in the shared array, as last set here (see Dispatcher.steal).
        self.limit = NO_LIMIT
        # It said READY: it has imported the main module and serves. Until then, its death is a
        # failed start, not a task's.
        self.ready = False
        # The task with a timeout it runs (it then holds nothing else), or None.
        self.timed: Task[Any] | None = None
        # False once a write failed: the child is gone, and its sentinel will say so.
        self.writable = True
        self.exitcode: int | None = None


def start_child(
    context: Any, scheduler: SchedulerSeam[Any], shared: Any, areas: Any, slot: int, slots: int
) -> Child:
    """Start the child of `slot`. Raises WorkerStartFailed if no process can be started, and
    Cancelled if the run was cancelled while this waited for its turn to start one."""
    tasks_read, tasks_write = os.pipe()
    replies_read, replies_write = os.pipe()
    there = (Connection(tasks_read, writable=False), Connection(replies_write, readable=False))
    shared[current_at(slots, slot)] = 0
    shared[limit_at(slots, slot)] = NO_LIMIT
    process = context.Process(
        target=serve,
        args=(*there, shared, areas, slot, slots),
        name=f"{CHILD_NAME}{slot + 1}",
    )
    try:
        with starting:
            # Looked at again here, where the start really begins: starts queue on this lock
            # (tens of milliseconds each), and none may begin after a cancel (a Ctrl-C).
            if scheduler.cancelled:
                raise Cancelled("the pool was cancelled")
            try:
                process.start()
            except Exception as error:
                raise WorkerStartFailed(f"could not start a worker process: {error!r}") from error
    except BaseException:
        os.close(tasks_write)
        os.close(replies_read)
        raise
    finally:
        # The child has its own copies now; ours must go, or its death would never show as
        # the end of its pipes here.
        for end in there:
            end.close()
    os.set_blocking(tasks_write, False)
    os.set_blocking(replies_read, False)
    return Child(slot, process, tasks_write, replies_read)


class TaskEncoder:
    """How each task of a run is pickled for a child (see encode)."""

    def __init__(self) -> None:
        # id(function) -> (function, pickled) for the CALL frames.
        self.functions: dict[int, tuple[object, bytes]] = {}

    def pickled(self, function: object) -> bytes:
        """A function encode() named, pickled (sent once per child, in a FUNCTION frame)."""
        return self.functions[id(function)][1]

    def encode(self, fn: Callable[[], Any]) -> tuple[int, object, bytes]:
        """How to send fn: (FN, None, fn pickled), or, for functools.partial of a module-level
        function or class, (CALL, that function, its (args, keywords) pickled).

        Such a function pickles by reference (module and name) and comes back as the same module
        attribute whether it is sent with each task or once: so it goes once per child, and each
        task carries only its arguments, which halves what a small task costs to pickle here and
        to load there. Anything else (a partial of a bound method or of a callable object, which
        pickle by value) is pickled whole, each time.
        """
        if type(fn) is partial and not fn.__dict__ and type(fn.func) in (FunctionType, type):
            function = fn.func
            known = self.functions.get(id(function))
            if known is None:
                try:
                    known = (function, pickle.dumps(function, pickle.HIGHEST_PROTOCOL))
                except Exception:
                    known = None
                else:
                    # Keeps the function alive, so that its id() names it for the whole run.
                    self.functions[id(function)] = known
            if known is not None:
                arguments = (fn.args, fn.keywords or None)
                return CALL, function, pickle.dumps(arguments, pickle.HIGHEST_PROTOCOL)
        return FN, None, pickle.dumps(fn, pickle.HIGHEST_PROTOCOL)
