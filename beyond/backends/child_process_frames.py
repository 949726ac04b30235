"""What the processes backend's parent and children say to each other, and where they keep what
both must see: the frames on the pipes, and the layout of the shared memory of one run. The
parent's side is child_process_group.py, the child's child_process_loop.py.

Frames are length-prefixed, both ways, and read in bulk: one read() takes all that is in a pipe,
and every whole frame in it is parsed. Headers are struct, not pickle, so that a side knows what a
frame is (and who sent it) before any of its payload's code can run.
"""

from __future__ import annotations

import os
import select
import struct

# Parent to child: payload length, sequence number, kind; then the payload.
TASK = struct.Struct("<IQB")
# Task frame kinds. FN: the pickled task.fn. CALL: a task.fn that is functools.partial of a
# module-level function or class: that function's number (INDEX) and the pickled (args,
# keywords); the function itself goes once per child, in a FUNCTION frame (seq: its number).
# ACK: the parent has copied out the reply area that seq names (see child_process_loop.Replies).
FN, CALL, FUNCTION, ACK = range(4)
# Or'ed into a task frame's kind by the parent, every so many tasks: publish the replies once this
# task's is in, so that the parent hears of them while the child still has tasks waiting, and
# refills it before it runs out.
PUBLISH_AFTER = 0x80
INDEX = struct.Struct("<I")

# Child to parent: body length, sequence number, kind, seconds the task took, the child's pid;
# then the body. The pid lets the parent refuse a frame written by anyone else on the pipe (a
# forked copy of a task), and tell a frame cut short from a reply.
REPLY = struct.Struct("<IQBdi")

# Reply kinds. READY: the child has imported the main module and serves (seq 0). RETURNED: the
# pickled result. RAISED, CANCELLED, PANIC, NOT_SENT, NOT_LOADED: the pickled (error or None, type
# name, message, traceback text) of an Exception other than Cancelled, of a Cancelled, of a
# BaseException that is not an Exception (Go's panic), of a result that could not be pickled
# there, of a task that could not be loaded there. NOT_STARTED: the child did not start the task
# (the run stopped, or the parent took it back). PUBLISHED: seq = bytes * AREAS + area, that many
# bytes of reply frames wait in that reply area; seconds 1.0 if the child then waits for tasks.
# WAITING: the child ran out of tasks and had no reply to publish.
(
    READY,
    RETURNED,
    RAISED,
    CANCELLED,
    PANIC,
    NOT_SENT,
    NOT_LOADED,
    NOT_STARTED,
    PUBLISHED,
    WAITING,
) = range(10)
# A task's outcomes: a reply of one of these kinds finishes the task.
OUTCOMES = frozenset({RETURNED, RAISED, CANCELLED, PANIC, NOT_SENT, NOT_LOADED})

# The shared array of one run (int64 each): where things are.
STOP, MAX_ERRORS, FAILURES = 0, 1, 2
# Reply areas per child, filled in turn. The parent's ACK for an area travels behind the tasks
# already waiting in the child's pipe (a queue holds about two publishing intervals), so it
# arrives about two areas later: four leave room for a parent a little slow to answer (with two,
# most replies went down the pipe one write each: 649 reads for 4,096 tasks; with four, 40 to 80).
AREAS = 4
# A limit above any sequence number: nothing taken back.
NO_LIMIT = 1 << 62

READ_SIZE = 1 << 16


def shared_size(slots: int) -> int:
    """The shared array's length for `slots` children:
    [STOP]: 1 once no task may start (the parent on any stop; a child whose failure reached
    max_errors); [MAX_ERRORS]; then per slot i the failures its child counted, the task it
    started last, its limit, and the bytes in each of its reply areas (the *_at functions)."""
    return FAILURES + (3 + AREAS) * slots


def failures_at(slot: int) -> int:
    """Where the failures the child in `slot` counted are (only that child writes it)."""
    return FAILURES + slot


def current_at(slots: int, slot: int) -> int:
    """Where the sequence number of the task the child in `slot` started last is: its mark that
    the task started, written before the task is even loaded."""
    return FAILURES + slots + slot


def limit_at(slots: int, slot: int) -> int:
    """Where the limit of `slot` is: its child starts no task numbered at or above it (the parent
    lowers it to take back tasks waiting there, for a child that ran out)."""
    return FAILURES + 2 * slots + slot


def filled_at(slots: int, slot: int, area: int) -> int:
    """Where the count of bytes written into reply area `area` of `slot` is."""
    return FAILURES + 3 * slots + AREAS * slot + area


class NotAReply(Exception):
    """A child's pipe or reply area carried bytes that are not a reply of that child's: a frame
    from another pid, of no known kind, or cut short (what follows it cannot be trusted)."""


def split_replies(
    data: bytearray | memoryview, pid: int, *, drained: bool = False
) -> tuple[list[tuple[int, int, float, bytes]], int]:
    """The whole reply frames at the start of `data` (seq, kind, seconds, body), and how many
    bytes they take. Raises NotAReply at a header that is not one of child `pid`'s, before its
    length is trusted (a frame cut short would otherwise make the parent wait for bytes that
    never come).

    `drained`: `data` ends with all that the pipe held. A child writes each frame's first
    PIPE_BUF bytes with one write() (write_frame), which a pipe never splits (POSIX: writes of at
    most PIPE_BUF bytes are atomic), so what is left then must be the start of a frame longer than
    that: anything shorter is not the child's, and is refused at once rather than waited on."""
    frames = []
    header = REPLY.size
    unpack = REPLY.unpack_from
    start, end = 0, len(data)
    while end - start >= header:
        length, seq, kind, seconds, sender = unpack(data, start)
        if sender != pid or kind > WAITING:
            raise NotAReply(f"a frame of kind {kind} from pid {sender}, for task number {seq}")
        stop = start + header + length
        if stop > end:
            if drained and stop - start <= select.PIPE_BUF:
                raise NotAReply(f"a frame of {stop - start} bytes cut short after {end - start}")
            break
        frames.append((seq, kind, seconds, bytes(data[start + header : stop]) if length else b""))
        start = stop
    if drained and 0 < end - start < header:
        raise NotAReply(f"{end - start} bytes, too few for a reply")
    return frames, start


def write_frame(fd: int, frame: bytes) -> None:
    """Write a whole frame to a blocking pipe: its first PIPE_BUF bytes in one write(), which the
    pipe never splits nor mixes with another writer's (see split_replies), then the rest."""
    view = memoryview(frame)
    first = view[: select.PIPE_BUF]
    while first:
        first = first[os.write(fd, first) :]
    view = view[select.PIPE_BUF :]
    while view:
        view = view[os.write(fd, view) :]
