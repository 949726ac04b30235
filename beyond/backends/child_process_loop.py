"""What each child process of the processes backend runs: say it is ready, then run the tasks the
parent sends, in the order sent, until the parent closes the pipe. The parent's side is
child_process_group.py; the frames and the shared layout are child_process_frames.py.

The parent may send several tasks ahead: they wait in the pipe (and in this process's read
buffer) until their turn. For each task the child

1. looks at the shared stop flag and at its limit, and if either says so answers NOT_STARTED
   without touching the task: this is the last check before a task starts, as the scheduler's
   take_next() is for a thread;
2. writes the task's sequence number into its shared `current` slot, the mark that it started
   (before loading it: loading a task runs its code, and may kill the process);
3. loads and calls it, counts its failure itself (so that at max_errors it starts nothing more,
   and sets the shared stop flag for the others), pickles its outcome, and puts the reply where
   this process's death cannot lose it before it starts the next: into a reply area in shared
   memory (published to the parent after each task the parent marked PUBLISH_AFTER, and before
   the child waits for more tasks), or straight into the pipe.

So when a child dies, the parent knows which task it was running (the one in its `current` slot)
and that every task sent after that one never started.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from beyond.backends.child_process_frames import (
    ACK,
    AREAS,
    CALL,
    CANCELLED,
    FAILURES,
    FUNCTION,
    INDEX,
    MAX_ERRORS,
    NOT_LOADED,
    NOT_SENT,
    NOT_STARTED,
    PANIC,
    PUBLISH_AFTER,
    PUBLISHED,
    RAISED,
    READ_SIZE,
    READY,
    REPLY,
    RETURNED,
    STOP,
    TASK,
    WAITING,
    current_at,
    failures_at,
    filled_at,
    limit_at,
    write_frame,
)
from beyond.cancellation import Cancelled


def load(payload: bytes | memoryview) -> tuple[Any, BaseException | None]:
    """pickle.loads(payload), and what it raised instead, if anything.

    BaseException too: loading runs the pickle's own code (a __reduce__ can return
    `(sys.exit, (9,))`), and what that raises is the outcome's failure to load, never a reason to
    stop the pool. A real Ctrl-C cannot be among it: in the parent this runs in the dispatcher
    thread, and CPython runs Python signal handlers (the one raising KeyboardInterrupt) in the
    main thread only (the signal module's documentation, "Signals and threads"); a child ignores
    SIGINT (serve).
    """
    try:
        return pickle.loads(payload), None
    except BaseException as raised:
        return None, raised


class Replies:
    """How a child's replies reach the parent: into a reply area in shared memory, published
    with one small pipe write for many replies; straight down the pipe when no area is free.

    Each child has AREAS areas, filled in turn while the parent copies the others out. A reply
    written to an area is as safe from this process's death as one in the pipe: the parent reads
    the areas after the death (the byte counts in the shared array say how much each holds), and
    the kernel has made every store of a dead process visible by then. While the child lives, the
    parent reads an area only after its PUBLISHED frame, and the child writes into it again only
    after the parent's ACK frame: a pipe write and read between them, so no memory-ordering
    subtlety arises.
    """

    def __init__(self, fd: int, pid: int, shared: Any, areas: Any, slot: int, slots: int) -> None:
        self.fd = fd
        self.pid = pid
        self.shared = shared
        size = len(areas) // (AREAS * slots) if slots else 0
        self.size = size
        whole = memoryview(areas).cast("B")
        first = AREAS * slot
        self.areas = [whole[(first + a) * size : (first + a + 1) * size] for a in range(AREAS)]
        self.counts = [filled_at(slots, slot, a) for a in range(AREAS)]
        self.free = [size > 0] * AREAS
        # The area being filled (None: none is free, replies go down the pipe), and its bytes.
        self.filling: int | None = 0 if size > 0 else None
        self.used = 0
        for count in self.counts:
            shared[count] = 0

    def put(self, frame: bytes) -> None:
        filling = self.filling
        if filling is not None:
            end = self.used + len(frame)
            if end <= self.size:
                self.areas[filling][self.used : end] = frame
                self.used = end
                self.shared[self.counts[filling]] = end
                return
            # Full: what it holds goes first, so that replies reach the parent in order.
            self.publish()
            filling = self.filling
            if filling is not None and len(frame) <= self.size:
                self.areas[filling][: len(frame)] = frame
                self.used = len(frame)
                self.shared[self.counts[filling]] = self.used
                return
        write_frame(self.fd, frame)

    def publish(self, waiting: bool = False) -> None:
        """Tell the parent what the area holds; go on in the next area if it is free. `waiting`:
        and say that this child has run out of tasks (the parent then keeps more waiting in each
        child: it was too slow to refill)."""
        filling = self.filling
        if filling is None or not self.used:
            if waiting:
                write_frame(self.fd, REPLY.pack(0, 0, WAITING, 0.0, self.pid))
            return
        seq = self.used * AREAS + filling
        write_frame(self.fd, REPLY.pack(0, seq, PUBLISHED, 1.0 if waiting else 0.0, self.pid))
        self.free[filling] = False
        after = (filling + 1) % AREAS
        self.filling = after if self.free[after] else None
        self.used = 0
        if self.filling is not None:
            self.shared[self.counts[self.filling]] = 0

    def waiting(self) -> None:
        self.publish(waiting=True)

    def acked(self, area: int) -> None:
        """The parent has copied `area` out: it may be filled again. Areas come back in the order
        they were published, so the first to be free is the next in turn."""
        self.free[area] = True
        if self.filling is None:
            self.filling = area
            self.used = 0
            self.shared[self.counts[area]] = 0


def frames(fd: int, before_waiting: Callable[[], None]) -> Iterator[tuple[int, int, bytes]]:
    """(kind, seq, payload) of each frame the parent sends, read in bulk: one read() takes all
    that is there. Only when nothing is there does it call `before_waiting` (the replies so far
    must reach the parent, or it may wait for them as this process waits for it), then wait.
    Ends when the parent closes the pipe."""
    os.set_blocking(fd, False)
    readable = select.poll()
    readable.register(fd, select.POLLIN)
    buffer = bytearray()
    start = 0
    header = TASK.size
    unpack = TASK.unpack_from
    while True:
        if len(buffer) - start >= header:
            length, seq, kind = unpack(buffer, start)
            end = start + header + length
            if end <= len(buffer):
                payload = bytes(buffer[start + header : end])
                start = end
                yield kind, seq, payload
                continue
        del buffer[:start]
        start = 0
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            before_waiting()
            readable.poll()
            continue
        if not chunk:
            return  # the parent closed the pipe: the run is over (or the parent is gone)
        buffer += chunk


def serve(
    tasks: Connection, replies: Connection, shared: Any, areas: Any, slot: int, slots: int
) -> None:
    """A child process: say it is ready, then run each task frame read from `tasks` until the
    parent closes it (or is gone).

    SIGINT is ignored: Ctrl-C in a terminal goes to the whole foreground process group, children
    too, and it is the parent that decides what a Ctrl-C does to running tasks (it kills them).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    me = os.getpid()
    replies_fd = replies.fileno()
    # Not inherited by a program a task runs (os.fork then exec, subprocess with close_fds=False):
    # multiprocessing hands the pipes over inheritable, and such a program would hold them open.
    for fd in (tasks.fileno(), replies_fd):
        os.set_inheritable(fd, False)
    try:
        write_frame(replies_fd, REPLY.pack(0, 0, READY, 0.0, me))
        _serve(tasks.fileno(), Replies(replies_fd, me, shared, areas, slot, slots), slot, slots)
    except OSError:
        return  # the parent is gone


def _serve(tasks_fd: int, out: Replies, slot: int, slots: int) -> None:
    shared, me = out.shared, out.pid
    put, pack_reply, clock = out.put, REPLY.pack, time.perf_counter
    current, limit, failures = current_at(slots, slot), limit_at(slots, slot), failures_at(slot)
    max_errors = shared[MAX_ERRORS]
    functions = Functions()
    # After its own task panicked, this child starts nothing more (the parent stops the pool
    # when it reads the panic, and sets the shared flag for the others).
    panicked = False

    def failed(outcome: int) -> None:
        # Called by _run_one the moment a task's failure (or panic) is known, before any code of
        # its error or result runs (its __str__, its pickling, which may take long or never
        # return): from then no child starts a task past max_errors, as a worker thread counts
        # a failure the moment it is raised (Task.run).
        nonlocal panicked
        if outcome == PANIC:
            # A panic stops the pool: no child starts a task after it, as at max_errors.
            panicked = True
            shared[STOP] = 1
            return
        shared[failures] += 1
        if sum(shared[FAILURES : FAILURES + slots]) >= max_errors:
            shared[STOP] = 1

    for marked, seq, payload in frames(tasks_fd, out.waiting):
        kind = marked & ~PUBLISH_AFTER
        if kind == ACK:
            out.acked(seq)
            continue
        if kind == FUNCTION:
            functions.pickled[seq] = payload
            continue
        if panicked or shared[STOP] or seq >= shared[limit]:
            put(pack_reply(0, seq, NOT_STARTED, 0.0, me))
        else:
            shared[current] = seq
            began = clock()
            outcome, body = _run_one(kind, payload, functions, me, failed)
            seconds = clock() - began
            _end_if_a_copy(me)
            put(pack_reply(len(body), seq, outcome, seconds, me) + body)
        if marked & PUBLISH_AFTER:
            out.publish()


def _end_if_a_copy(me: int) -> None:
    """In a forked copy of this child (a task forked, and its copy came back here instead of
    ending): end now. The copy shares the child's pipes and shared memory, so it must neither
    answer (its answer would pass for the child's) nor read (it would take the child's next
    task). os._exit, as a forked child should: no atexit handlers, and no flushing of buffers it
    inherited, whose text the child will write itself."""
    if os.getpid() != me:
        os._exit(0)


class Functions:
    """The functions of CALL frames: kept pickled as sent, loaded at the first task that calls
    each one (so that a function whose loading fails or kills this process does so inside a
    task, which pays for it, and each later task that calls it tries again on its own)."""

    def __init__(self) -> None:
        self.pickled: dict[int, bytes] = {}
        self.loaded: dict[int, Callable[..., Any]] = {}

    def get(self, index: int) -> Callable[..., Any]:
        found = self.loaded.get(index)
        if found is None:
            found = self.loaded[index] = pickle.loads(self.pickled[index])
        return found


def _run_one(
    kind: int, payload: bytes, functions: Functions, me: int, failed: Callable[[int], None]
) -> tuple[int, bytes]:
    """Load and call one task; its reply's kind and body (a pickled result or error). Calls
    failed(kind) for a failure that counts toward max_errors (RAISED, NOT_SENT, NOT_LOADED: an
    Exception other than Cancelled, as Task.run counts) or a panic as soon as it
    is known: before the error is described or pickled (and, in a forked copy, never: the copy
    ends first)."""
    args: tuple[Any, ...] = ()
    keywords: dict[str, Any] | None = None
    fn: Callable[..., Any]
    try:
        if kind == CALL:
            fn = functions.get(INDEX.unpack_from(payload)[0])
            args, keywords = pickle.loads(memoryview(payload)[INDEX.size :])
        else:
            fn = pickle.loads(payload)
    except BaseException as not_loaded:
        _end_if_a_copy(me)
        failed(NOT_LOADED)
        return _error_reply(
            NOT_LOADED, not_loaded, "the task could not be unpickled in its worker process: "
        )
    try:
        result = fn(*args, **keywords) if keywords else fn(*args)
    except Cancelled as error:
        _end_if_a_copy(me)
        return _error_reply(CANCELLED, error)
    except Exception as error:
        _end_if_a_copy(me)
        failed(RAISED)
        return _error_reply(RAISED, error)
    except BaseException as error:
        # SystemExit or KeyboardInterrupt raised by the task goes back to the parent, where it is
        # a panic as in the thread pool, rather than ending this process.
        _end_if_a_copy(me)
        failed(PANIC)
        return _error_reply(PANIC, error)
    _end_if_a_copy(me)
    try:
        return RETURNED, pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
    except BaseException as error:
        # BaseException too: pickling runs the result's own code (a __reduce__ that calls
        # sys.exit), and what that raises is the result's failure to be sent, not a reason to end
        # this process (SIGINT, the one real KeyboardInterrupt, is ignored here).
        _end_if_a_copy(me)
        failed(NOT_SENT)
        return _error_reply(
            NOT_SENT,
            error,
            f"the result of task {_name_of(fn)} ({type(result).__name__}) cannot be sent back "
            "from its worker process: ",
        )


def _error_reply(kind: int, error: BaseException, prefix: str = "") -> tuple[int, bytes]:
    # Each call below runs the error's own code (__str__, __reduce__, its notes), which may raise
    # anything, SystemExit included: that is the error's failure to be described or sent, and
    # the task fails with what could be said, while this process serves on.
    try:
        text = "".join(traceback.format_exception(error))
    except BaseException as failed:
        text = f"(the traceback could not be formatted: {_described(failed)})"
    try:
        # A SystemExit's str() is its bare status ("7"), a KeyboardInterrupt's empty: after a
        # prefix of ours, only the repr says what was raised.
        told = str(error) if isinstance(error, Exception) or not prefix else _described(error)
        message = prefix + told
    except BaseException:
        message = prefix + type(error).__name__
    sent_error: bytes | None = None
    if not prefix:
        # The parent rebuilds the task's own error; for the others it builds its own from the
        # message (the original is in the traceback text).
        try:
            sent_error = pickle.dumps(error, pickle.HIGHEST_PROTOCOL)
        except BaseException as failed:
            message += f" (it could not be sent back: pickling it raised {_described(failed)})"
    # Plain str, so that the parent's loading of this tuple runs nothing of the task's: str()
    # may return a subclass, which would pickle as its class.
    described = (sent_error, str.__str__(type(error).__qualname__), str.__str__(message), text)
    return kind, pickle.dumps(described, pickle.HIGHEST_PROTOCOL)


def _described(error: BaseException) -> str:
    """repr(error), or its type's name if even that raises."""
    try:
        return str.__str__(repr(error))
    except BaseException:
        return type(error).__name__


def _name_of(fn: object) -> str:
    try:
        return repr(getattr(fn, "__qualname__", None) or type(fn).__name__)
    except Exception:
        return "?"
