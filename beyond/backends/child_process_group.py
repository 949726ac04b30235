"""The child processes of one run, as the parent sees them: each one's pipes, what it was sent and
what it still owes; starting one, sending it tasks, reading its replies (from the pipe and from
its reply areas in shared memory), and accounting for it when it is lost (dead, or killed at a
deadline or on cancel). What to send where, and when, is child_process_dispatcher.py's.

The rule a loss keeps: a child runs its tasks in the order sent, and marks the one it starts in
shared memory before it even loads it (child_process_loop.py). So when a child is lost, its
replies are first recovered (the pipe, then the reply areas), and of the tasks it still owes,
those numbered up to its mark had started: they fail (WorkerDied, TimeoutError, Cancelled,
LostReply); the others never started: they go to another child, or stay not run if the run has
stopped. No task runs twice, and none is lost.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from multiprocessing import sharedctypes
from typing import Any, NoReturn

from beyond.backends.child_process_errors import (
    NotPicklable,
    WorkerDied,
    WorkerStartFailed,
    decode,
    how_it_ended,
    lost_reply,
    start_failure,
    without_this_threads_frames,
)
from beyond.backends.child_process_frames import (
    ACK,
    AREAS,
    CALL,
    FUNCTION,
    INDEX,
    MAX_ERRORS,
    NO_LIMIT,
    NOT_STARTED,
    PANIC,
    PUBLISH_AFTER,
    PUBLISHED,
    READ_SIZE,
    READY,
    STOP,
    TASK,
    WAITING,
    NotAReply,
    current_at,
    filled_at,
    limit_at,
    shared_size,
    split_replies,
)
from beyond.backends.child_process_handle import (
    EXIT_GRACE_SECONDS,
    Child,
    RunCounts,
    TaskEncoder,
    start_child,
)
from beyond.backends.protocol import SchedulerSeam, StopReason
from beyond.cancellation import Cancelled, Token
from beyond.task import Task, quoted_name

# Weight of the newest duration in the running average of the tasks' durations.
SMOOTHING = 0.2


def _raise(error: BaseException, cause: BaseException | None = None) -> NoReturn:
    raise error from cause


# The most shared memory one run's reply areas take (4 areas of 32 KB for up to 128 children).
AREAS_BUDGET = 16 << 20


class ChildGroup:
    """The children of one run (a slot per worker, a child started in a slot when a task needs
    one) and their replies. Used only by the dispatcher's thread."""

    def __init__(
        self,
        context: Any,
        scheduler: SchedulerSeam[Any],
        counts: RunCounts,
        reply_area_bytes: int,
    ) -> None:
        self.context = context
        self.scheduler = scheduler
        self.counts = counts
        self.streaming = scheduler.streaming
        slots = scheduler.worker_count
        self.slots = slots
        self.children: list[Child | None] = [None] * slots
        self.by_fd: dict[int, Child] = {}
        # Children that died while starting since one of this run last came up (said READY);
        # None while none has (see lost_while_starting).
        self.start_deaths: int | None = None
        # Tasks to send before any new one: given back by a lost child that had not started them,
        # or refused by a child they were taken back from.
        self.ready: deque[Task[Any]] = deque()
        self.sequence = 0
        self.publish_every = 1
        self.encoder = TaskEncoder()
        # The running average of the tasks' durations, as the children measure them.
        self.average: float | None = None
        # A child said it ran out of tasks and waits (see Dispatcher.starved).
        self.ran_dry = False
        # From multiprocessing.sharedctypes, not the context: the same memory whatever the start
        # method (each child maps it from the file descriptor it is passed).
        self.shared: Any = sharedctypes.RawArray("q", shared_size(slots))
        self.shared[MAX_ERRORS] = scheduler.max_errors
        # At most AREAS_BUDGET bytes of reply areas per run, however many slots (a generator at
        # concurrency 4,096 has as many): smaller areas then, and more replies by the pipe.
        self.area_bytes = min(reply_area_bytes, AREAS_BUDGET // (AREAS * slots))
        self.areas: Any = sharedctypes.RawArray("B", max(1, AREAS * slots * self.area_bytes))
        self.area_view = memoryview(self.areas).cast("B")
        self.poller = select.poll()

    def outstanding(self) -> bool:
        return any(child is not None and child.sent for child in self.children)

    # --- Starting a child. ---

    def start(self, slot: int) -> Child:
        """Start the child of `slot` and watch it (see start_child for what it raises)."""
        child = start_child(self.context, self.scheduler, self.shared, self.areas, slot, self.slots)
        self.counts.children_started += 1
        self.children[slot] = child
        for fd, events in (
            (child.replies_fd, select.POLLIN),
            (child.sentinel, select.POLLIN),
            (child.tasks_fd, 0),
        ):
            self.by_fd[fd] = child
            self.poller.register(fd, events)
        return child

    # --- Sending. ---

    def send(self, slot: int, task: Task[Any]) -> None:
        """Queue the task in the slot's child's outbox (started first if need be); written when
        the dispatcher flushes. A task that cannot be sent fails here, alone."""
        try:
            kind, function, payload = self.encoder.encode(task.bound())
        except BaseException as error:
            # BaseException too: a __reduce__ that raises SystemExit is the task's pickling, not
            # its run (and no Ctrl-C lands in this thread).
            not_sent = NotPicklable(
                f"task {quoted_name(task)} cannot be sent to a worker process: {error!r} (tasks of "
                "backend='processes' must be picklable: a module-level function or class, or "
                "functools.partial of one, not a lambda or a nested function, and so must its "
                "arguments)"
            )
            self.finish(task, partial(_raise, not_sent, error))
            return
        child = self.children[slot]
        if child is None:
            try:
                child = self.start(slot)
            except WorkerStartFailed as failed:
                # The cause is the program's or the system's, and every start would fail the
                # same way: the run stops, and the task stays not run.
                self.scheduler.stop(
                    StopReason.BACKEND_FAILED, str(failed), error=failed.with_traceback(None)
                )
                return
            except Cancelled as cancelled:
                self.finish(task, partial(_raise, cancelled))
                return
        self.sequence += 1
        if task.timeout is not None:
            # Its clock starts now, and again when a child that is starting says it is ready.
            self.scheduler.start_clock(task)
            child.timed = task
        child.sent.append((self.sequence, task))
        outbox = child.outbox
        child.unmarked += 1
        if child.unmarked >= self.publish_every or task.timeout is not None:
            child.unmarked = 0
            kind |= PUBLISH_AFTER
        if kind & ~PUBLISH_AFTER == CALL:
            number = child.functions.get(id(function))
            if number is None:
                # The first task of this child that calls it: the function goes first, once.
                number = child.functions[id(function)] = len(child.functions)
                pickled = self.encoder.pickled(function)
                outbox += TASK.pack(len(pickled), number, FUNCTION)
                outbox += pickled
            outbox += TASK.pack(INDEX.size + len(payload), self.sequence, kind)
            outbox += INDEX.pack(number)
        else:
            outbox += TASK.pack(len(payload), self.sequence, kind)
        outbox += payload

    def flush(self, child: Child) -> None:
        """Write what the child's outbox holds, as much as its pipe takes now; the rest when
        poll() says it has room. The dispatcher never blocks on a child."""
        if not child.writable:
            return
        try:
            written = os.write(child.tasks_fd, child.outbox)
        except BlockingIOError:
            written = 0
        except OSError:
            # The child is gone (EPIPE): its sentinel says so, and lost() sends on what it never
            # started.
            child.writable = False
            child.outbox.clear()
            self.unwatch(child.tasks_fd)
            return
        del child.outbox[:written]
        self.poller.modify(child.tasks_fd, select.POLLOUT if child.outbox else 0)

    def unwatch(self, fd: int) -> None:
        # poll() reports a hung-up descriptor whatever it was registered for: stop watching it.
        if self.by_fd.pop(fd, None) is not None:
            self.poller.unregister(fd)

    # --- Receiving. ---

    def read(self, child: Child) -> None:
        """Every reply the child's pipe holds now, in one read() (or more, for a long one)."""
        try:
            data = os.read(child.replies_fd, READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            # The child's end closed: it exited, and its sentinel will say how.
            self.unwatch(child.replies_fd)
            return
        try:
            self.parse(child, data)
        except NotAReply as garbled:
            self.lost(child, "garbled", str(garbled))

    def parse(self, child: Child, data: bytes) -> None:
        inbox = child.inbox
        inbox += data
        # A read shorter than asked for took all the pipe held.
        frames, used = split_replies(inbox, child.pid, drained=len(data) < READ_SIZE)
        del inbox[:used]
        for seq, kind, seconds, body in frames:
            self.reply(child, seq, kind, seconds, body)

    def published(self, child: Child, seq: int) -> None:
        """The child says reply area (seq % AREAS) holds (seq // AREAS) bytes of replies: take
        them, and give the area back (ACK) with the next write to the child."""
        size, area = divmod(seq, AREAS)
        if size > self.area_bytes:
            raise NotAReply(f"a notice of {size} bytes in a reply area of {self.area_bytes}")
        offset = (AREAS * child.slot + area) * self.area_bytes
        frames, _ = split_replies(self.area_view[offset : offset + size], child.pid)
        if child.writable:
            child.outbox += TASK.pack(0, area, ACK)
        for frame_seq, kind, seconds, body in frames:
            self.reply(child, frame_seq, kind, seconds, body)

    def recover_areas(self, child: Child) -> None:
        """A child is gone: the replies it had put into its areas and not yet published (or
        published in a frame this process never read) are its outcomes still."""
        outstanding = {seq for seq, _ in child.sent}
        found: list[tuple[int, int, float, bytes]] = []
        for area in range(AREAS):
            size = min(self.shared[filled_at(self.slots, child.slot, area)], self.area_bytes)
            offset = (AREAS * child.slot + area) * self.area_bytes
            with contextlib.suppress(NotAReply):
                frames, _ = split_replies(self.area_view[offset : offset + size], child.pid)
                found.extend(frame for frame in frames if frame[0] in outstanding)
        for seq, kind, seconds, body in sorted(found):
            self.reply(child, seq, kind, seconds, body)

    def reply(self, child: Child, seq: int, kind: int, seconds: float, body: bytes) -> None:
        if kind == READY:
            if child.ready or seq != 0:
                raise NotAReply("a second ready message")
            child.ready = True
            self.start_deaths = 0
            if child.timed is not None:
                # A task's timeout counts from its child's start: no task pays for a start.
                self.scheduler.start_clock(child.timed)
            return
        if kind == PUBLISHED:
            self.published(child, seq)
            if seconds:
                self.ran_dry = True
            return
        if kind == WAITING:
            self.ran_dry = True
            return
        if not child.sent or child.sent[0][0] != seq:
            raise NotAReply(f"an answer to task number {seq}")
        task = child.sent.popleft()[1]
        if kind == NOT_STARTED:
            if self.scheduler.stopped is None and not self.shared[STOP] and seq >= child.limit:
                # Taken back (see Dispatcher.steal): another child runs it.
                self.counts.taken_back += 1
                self.ready.append(task)
            # Else the stop reached the child first: the task stays `finished == False`.
            self.unlimit(child)
            return
        self.unlimit(child)
        if child.timed is task:
            child.timed = None
        average = self.average
        self.average = seconds if average is None else average + SMOOTHING * (seconds - average)
        self.finish(task, partial(decode, task, kind, memoryview(body)))
        if kind == PANIC and self.scheduler.stopped is None:
            # The child has stopped every child at its panic; one that could not be rebuilt
            # here (a RemoteError in its place) stops the run all the same.
            self.scheduler.stop(StopReason.PANIC, f"a task raised {task.err!r}", error=task.err)

    def unlimit(self, child: Child) -> None:
        """Once every task taken back from the child has been answered, it may have new ones
        (numbered above its limit, which it would refuse while the limit stands)."""
        if child.limit != NO_LIMIT and (not child.sent or child.sent[-1][0] < child.limit):
            child.limit = NO_LIMIT
            self.shared[limit_at(self.slots, child.slot)] = NO_LIMIT

    # --- A task's outcome. ---

    def finish(self, task: Task[Any], call: Callable[[], Any]) -> None:
        """The task's outcome is what `call` returns or raises: keep it (Task.run), count it,
        hand it over."""
        scheduler = self.scheduler
        try:
            failed = task.run(call)
        except BaseException as panic:
            # Only a panic gets here (a rebuilt SystemExit, say); it hands the task over itself.
            without_this_threads_frames(panic)
            scheduler.panicked(panic, task)
            return
        if task.err is not None:
            without_this_threads_frames(task.err)
        if failed:
            failures = scheduler.failures
            if len(failures) + 1 >= scheduler.max_errors:
                # Before the count lands: no child starts a task after it.
                self.shared[STOP] = 1
            failures.append(None)
            if len(failures) >= scheduler.max_errors:
                scheduler.reached_max_errors()
        if self.streaming:
            scheduler.hand_over(task)

    # --- A child lost: dead, garbled, or killed at a deadline or on cancel. ---

    def lost(self, child: Child, why: str, what: str = "") -> None:
        """The child is gone ("died"), wrote what is not a reply ("garbled", `what` says what),
        or is killed now ("deadline", "cancel"): keep what it answered, fail the tasks it had
        started and not answered, and send on, once, those it never started (unless the run has
        stopped: then they stay `finished == False`)."""
        process = child.process
        if why != "died":
            process.kill()
        process.join()
        child.exitcode = process.exitcode
        if why != "garbled":
            # Its last replies may still be in the pipe: written before it ended. (A forked copy
            # may hold the pipe open: then no end of file comes, only nothing more to read.)
            try:
                while data := _read_now(child.replies_fd):
                    self.parse(child, data)
            except NotAReply as garbled:
                why, what = "garbled", str(garbled)
        self.forget(child)
        if why != "garbled":
            # After bytes that are not its replies, nothing it wrote is trusted: the tasks it
            # had started fail with LostReply, replies in its areas or not.
            self.recover_areas(child)
        owed = list(child.sent)
        child.sent.clear()
        if not owed:
            return
        if not child.ready:
            self.lost_while_starting(child, why, [task for _, task in owed])
            return
        started = self.shared[current_at(self.slots, child.slot)]
        unstarted: list[Task[Any]] = []
        for seq, task in owed:
            # Past its deadline a timed task fails whether or not it had begun: its timeout
            # includes its child's start. Nothing queues behind a timed task.
            if seq <= started or why == "deadline":
                self.blame(child, task, seq, why, what)
            else:
                unstarted.append(task)
        if unstarted and self.scheduler.stopped is None:
            self.counts.sent_on += len(unstarted)
            self.ready.extendleft(reversed(unstarted))

    def lost_while_starting(self, child: Child, why: str, owed: list[Task[Any]]) -> None:
        """A child lost before it was ready: none of its tasks started. Killed at a deadline or
        on cancel, the first task it was sent pays, as a task whose start was stopped. Dead
        after another child of this run came up, its tasks go to a fresh child. Else (dead
        before any came up, or garbled), the start failed, and the run stops (the cause is the
        program's: each child imports the main module, and would fail the same way), its tasks
        not run."""
        if why in ("deadline", "cancel") or self.scheduler.cancelled:
            # Stopped while it started (a Ctrl-C reaches a starting child too, and it does not
            # ignore it yet): the task is cancelled, not the backend broken.
            self.blame(child, owed[0], 0, "cancel" if why == "died" else why, "", starting=True)
            return
        if why == "died" and self.start_deaths is not None and self.start_deaths < self.slots:
            # A child of this run came up, so the main module imports: this death is the
            # system's (SIGKILL from the out-of-memory killer, or from a user), not the
            # program's, and stopping the run for it would leave every task not run. Only
            # `slots` such deaths in a row, none coming up between them, stop the run (a main
            # module that no longer imports: its file changed or deleted mid-run).
            self.start_deaths += 1
            if self.scheduler.stopped is None:
                self.counts.sent_on += len(owed)
                self.ready.extendleft(reversed(owed))
            return
        exitcode = None if why == "garbled" else child.exitcode
        failed = WorkerStartFailed(start_failure(exitcode), exitcode)
        self.scheduler.stop(StopReason.BACKEND_FAILED, str(failed), error=failed)

    def blame(
        self,
        child: Child,
        task: Task[Any],
        seq: int,
        why: str,
        what: str,
        *,
        starting: bool = False,
    ) -> None:
        """Fail a task its lost child had started."""
        if why == "died":
            error: BaseException = WorkerDied(
                f"the worker process running task {quoted_name(task)} died: "
                f"{how_it_ended(child.exitcode)}; a fresh process takes the next task",
                child.exitcode,
            )
            self.finish(task, partial(_raise, error))
            return
        if why == "garbled":
            self.finish(task, partial(_raise, lost_reply(task, child.pid, seq, what)))
            return
        token = Token(self.scheduler, task)

        def stopped() -> NoReturn:
            try:
                token.check()  # TimeoutError (its deadline or the run's) or Cancelled
            except TimeoutError as late:
                if starting:
                    late.add_note("its worker process was still starting (it was killed)")
                raise
            raise Cancelled("the pool was cancelled")

        self.finish(task, stopped)

    def forget(self, child: Child) -> None:
        for fd in (child.replies_fd, child.sentinel, child.tasks_fd):
            self.unwatch(fd)
        os.close(child.tasks_fd)
        os.close(child.replies_fd)
        child.process.close()
        self.children[child.slot] = None

    # --- The end. ---

    def close_children(self) -> None:
        """Close every child's pipe (it exits at the end of it), wait, kill any that lingers."""
        alive = [child for child in self.children if child is not None]
        for child in alive:
            if child.sent:
                # Only after a failure of the dispatcher itself: nothing may run on.
                child.process.kill()
            with contextlib.suppress(OSError):
                os.close(child.tasks_fd)
        end = time.monotonic() + EXIT_GRACE_SECONDS
        for child in alive:
            child.process.join(max(0.0, end - time.monotonic()))
            if child.process.exitcode is None:
                child.process.kill()
                child.process.join()
            with contextlib.suppress(OSError):
                os.close(child.replies_fd)
            child.process.close()
            self.children[child.slot] = None


def _read_now(fd: int) -> bytes:
    """What the pipe holds now, without waiting: b"" if nothing (or its end)."""
    try:
        return os.read(fd, READ_SIZE)
    except BlockingIOError:
        return b""
