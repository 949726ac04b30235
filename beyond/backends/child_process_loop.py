"""What each child process of the processes backend runs: say it is ready, then read a task,
run it, answer, until the parent closes the pipe. The parent's side is child_processes.py; the
frames both sides read are here.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

# The frames on the pipe. Parent to child: the task's number (counted per child from 1), then
# the pickled task. Child to parent: the number of the task it answers (0 for "ready"), the
# child's pid and the kind of outcome, then the pickled outcome. The parent reads the header with
# struct, not pickle, so that it knows who sent a frame before any of the frame's code can run.
TASK = struct.Struct("!Q")
REPLY = struct.Struct("!QqB")

# Kinds of reply, child to parent.
READY, RETURNED, RAISED, NOT_SENT, NOT_LOADED = range(5)


def load(payload: bytes | memoryview) -> tuple[Any, BaseException | None]:
    """pickle.loads(payload), and what it raised instead, if anything.

    BaseException too: loading runs the pickle's own code (a __reduce__ can return
    `(sys.exit, (9,))`), and what that raises is the outcome's failure to load, never a reason to
    stop the pool. A real Ctrl-C cannot be among it: in the parent this runs in a worker thread,
    and CPython runs Python signal handlers (the one raising KeyboardInterrupt) in the main
    thread only (the signal module's documentation, "Signals and threads"); a child ignores
    SIGINT (serve).
    """
    try:
        return pickle.loads(payload), None
    except BaseException as raised:
        return None, raised


def serve(connection: Connection) -> None:
    """A worker process: say it is ready, then run each task sent until the parent closes the
    pipe. Only the process the parent started ever sends or reads: a forked copy of a task that
    gets back here ends at once (_end_if_a_copy).

    SIGINT is ignored: Ctrl-C in a terminal goes to the whole foreground process group, children
    too, and it is the parent that decides what a Ctrl-C does to running tasks (it kills them).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    me = os.getpid()
    # Not inherited by a program a task runs (os.fork then exec, subprocess with close_fds=False):
    # multiprocessing hands the pipe over inheritable, and such a program would hold it open.
    os.set_inheritable(connection.fileno(), False)
    try:
        connection.send_bytes(REPLY.pack(0, me, READY))
    except OSError:
        return
    while True:
        try:
            sent = connection.recv_bytes()
        except (EOFError, OSError):
            return  # the parent closed the pipe (close()), or is gone
        (number,) = TASK.unpack_from(sent)
        kind, outcome = _run_one(memoryview(sent)[TASK.size :], me)
        _end_if_a_copy(me)
        try:
            connection.send_bytes(REPLY.pack(number, me, kind) + outcome)
        except (EOFError, OSError):
            return


def _end_if_a_copy(me: int) -> None:
    """In a forked copy of this worker (a task forked, and its copy came back here instead of
    ending): end now. The copy shares the worker's pipe, so it must neither answer (its answer
    would pass for the worker's) nor read (it would take the worker's next task). os._exit, as a
    forked child should: no atexit handlers, and no flushing of buffers it inherited, whose text
    the worker will write itself."""
    if os.getpid() != me:
        os._exit(0)


def _run_one(sent: memoryview, me: int) -> tuple[int, bytes]:
    fn: Callable[[], Any]
    fn, not_loaded = load(sent)
    if not_loaded is not None:
        return _error_reply(
            NOT_LOADED, not_loaded, "the task could not be unpickled in its worker process: "
        )
    try:
        result = fn()
    except BaseException as error:
        # BaseException too: SystemExit or KeyboardInterrupt raised by the task goes back to the
        # parent, where it is a panic as in the thread pool, rather than ending this process.
        _end_if_a_copy(me)
        return _error_reply(RAISED, error)
    _end_if_a_copy(me)
    try:
        return RETURNED, pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        return _error_reply(
            NOT_SENT,
            error,
            f"the result of task {_name_of(fn)} ({type(result).__name__}) cannot be sent back "
            "from its worker process: ",
        )


def _error_reply(kind: int, error: BaseException, prefix: str = "") -> tuple[int, bytes]:
    text = "".join(traceback.format_exception(error))
    try:
        message = prefix + str(error)
    except Exception:
        message = prefix + type(error).__name__
    sent_error: bytes | None = None
    if kind == RAISED:
        # The parent rebuilds the task's own error; for the others it builds its own from the
        # message (the original is in the traceback text).
        try:
            sent_error = pickle.dumps(error, pickle.HIGHEST_PROTOCOL)
        except Exception:
            sent_error = None
    # Plain str, so that the parent's loading of this tuple runs nothing of the task's: str()
    # may return a subclass, which would pickle as its class.
    described = (sent_error, str.__str__(type(error).__qualname__), str.__str__(message), text)
    return kind, pickle.dumps(described, pickle.HIGHEST_PROTOCOL)


def _name_of(fn: object) -> str:
    try:
        return repr(getattr(fn, "__qualname__", None) or type(fn).__name__)
    except Exception:
        return "?"
