"""The thread that feeds every child process of a run, reads every reply and enforces every
deadline: what is sent where and when, for the processes backend (child_processes.py).

One thread, not one per child: it waits in one poll() on every child's reply pipe and exit
sentinel, the task pipes with bytes waiting to be written, and a wake-up pipe (written by a stop,
by the loop over the pool making room, and by the source reader). So no GIL hand-off between
worker threads, and a stop wakes it at once. It is not the main thread on purpose: no Ctrl-C ever
lands in it, so a BaseException raised while loading an outcome is the outcome's own doing.

What is sent ahead: each child holds, beside the task it runs, about `ahead` seconds of work by
the durations the children report (10 ms to begin with, doubling up to 50 ms each time a child
runs out while there were more to give), at most `max_ahead` tasks, none for tasks over 50 ms,
none for a task with a timeout (it goes only to an idle child, and nothing queues behind it),
and only from a list: a generator is read only for an idle child, by a thread of its own (the
SourceReader), so that its own code never holds up the replies, deadlines and cancels of the
children already running. At the end of a list an idle child gets the later half of the longest
queue (steal()).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import threading
import time
from collections import deque
from typing import Any

from beyond.backends.child_process_frames import NO_LIMIT, STOP, limit_at
from beyond.backends.child_process_group import ChildGroup
from beyond.backends.child_process_handle import RunCounts
from beyond.backends.protocol import NO_ROOM, SchedulerSeam, StopReason
from beyond.cancellation import Token
from beyond.task import Task

# How long a wait in poll() may last while children run tasks, between looks at whether each has
# exited: a forked copy of a task left running holds the child's pipe (and, with spawn, its
# sentinel) open, so neither may ever say that the child died.
EXIT_CHECK_SECONDS = 0.05


class SourceReader:
    """Takes tasks from a tasks iterable that is not a list, in a thread of its own, one each time
    the dispatcher asks (for an idle child): so a generator is read only when a child is free, and
    its next(), however long, keeps nothing else waiting. Worker 0 to the scheduler: if the run
    stops while this thread is inside next(), the thread that waits for the run leaves it there
    (a daemon), as it leaves a worker of the threads backend."""

    def __init__(self, scheduler: SchedulerSeam[Any], wake: Any) -> None:
        self.scheduler = scheduler
        self.wake = wake
        self.asked = threading.Semaphore(0)
        self.taken: deque[Task[Any]] = deque()
        self.exhausted = False
        self.closing = False
        # The dispatcher's request not yet answered (only the dispatcher writes it).
        self.waiting_for_it = False
        self.thread = threading.Thread(target=self.run, name="worker-source", daemon=True)

    def ask(self) -> None:
        if not self.waiting_for_it and not self.exhausted:
            self.waiting_for_it = True
            self.asked.release()

    def close(self) -> None:
        self.closing = True
        self.asked.release()

    def run(self) -> None:
        scheduler = self.scheduler
        scheduler.begin()
        try:
            while True:
                self.asked.acquire()
                if self.closing:
                    return
                taken = scheduler.take_next(0)
                while taken is NO_ROOM:
                    taken = scheduler.take_next(0) if scheduler.wait_for_room() else None
                if taken is None:
                    self.exhausted = True
                else:
                    self.taken.append(taken)
                # Read by the dispatcher after the wake-up: the append (or the flag) is seen.
                self.waiting_for_it = False
                self.wake()
                if taken is None:
                    return
        finally:
            scheduler.end(0)


class Dispatcher(ChildGroup):
    """The one thread's work for one run (see the module's docstring)."""

    def __init__(
        self,
        context: Any,
        scheduler: SchedulerSeam[Any],
        counts: RunCounts,
        *,
        ahead_seconds: float,
        max_ahead_seconds: float,
        max_ahead: int,
        long_task_seconds: float,
        reply_area_bytes: int,
    ) -> None:
        super().__init__(context, scheduler, counts, reply_area_bytes)
        self.ahead = ahead_seconds
        self.max_ahead_seconds = max_ahead_seconds
        self.max_ahead = max_ahead
        self.long_task_seconds = long_task_seconds
        self.exhausted = False
        # A list's tasks are taken here, ahead; any other iterable's by the source reader.
        self.reader: SourceReader | None = None
        if not scheduler.tasks_are_a_list:
            self.reader = SourceReader(scheduler, self.wake)
        self.waiting_for_room = False
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.poller.register(self.wake_read, select.POLLIN)
        # Taken by wake() and close_wake(): so no wake-up writes to the pipe once it is closed
        # (its number may by then be another file's). Re-entrant: a stop from a signal handler
        # may call wake() in the main thread while that thread is inside wake() already.
        self.wake_lock = threading.RLock()
        self.wake_closed = False
        scheduler.set_on_stop(self.on_stop)
        if self.streaming:
            scheduler.set_on_room(self.wake)
        if scheduler.stopped is not None:
            self.shared[STOP] = 1

    def threads(self) -> list[threading.Thread]:
        dispatcher = threading.Thread(
            target=self.run,
            name="worker-dispatcher",
            # As stage 3's workers: the interpreter's exit waits for a run started by a thread it
            # waits for.
            daemon=threading.current_thread().daemon,
        )
        return [dispatcher] if self.reader is None else [dispatcher, self.reader.thread]

    # --- Wake-ups, from any thread and from a signal handler. ---

    def on_stop(self, reason: StopReason, cancel: bool) -> None:
        # Called by the scheduler's stop() with its lock held: set the flag every child checks
        # before a task, and wake the dispatcher to act on the stop.
        self.shared[STOP] = 1
        self.wake()

    def wake(self) -> None:
        with self.wake_lock:
            if self.wake_closed:
                return
            with contextlib.suppress(BlockingIOError):
                # Full: a wake-up is already pending, which is all this one would add.
                os.write(self.wake_write, b"!")

    def close_wake(self) -> None:
        # Unset under the scheduler's lock, which its callbacks hold: none runs after these.
        self.scheduler.set_on_stop(None)
        self.scheduler.set_on_room(None)
        with self.wake_lock:
            self.wake_closed = True
            os.close(self.wake_read)
            os.close(self.wake_write)

    # --- The loop. ---

    def run(self) -> None:
        scheduler = self.scheduler
        scheduler.begin()
        try:
            self.loop()
        except BaseException as bug:
            # Not a task's failure (those stay on their tasks): the dispatcher itself broke. Stop
            # the run and have run() raise it, once the children are gone.
            scheduler.stop(StopReason.BACKEND_FAILED, f"the dispatcher failed: {bug!r}", error=bug)
        finally:
            try:
                self.close_children()
            finally:
                if self.reader is not None:
                    self.reader.close()
                self.close_wake()
                scheduler.end(None)

    def loop(self) -> None:
        scheduler, poller, by_fd = self.scheduler, self.poller, self.by_fd
        while True:
            if scheduler.stopped is not None:
                if scheduler.cancelled:
                    for child in self.children:
                        if child is not None and child.sent:
                            self.lost(child, "cancel")
            else:
                self.fill()
                if self.exhausted and not self.ready:
                    self.steal()
            outstanding = self.outstanding()
            if not outstanding and (
                scheduler.stopped is not None or (self.exhausted and not self.ready)
            ):
                return
            if not outstanding and self.shared[STOP] and scheduler.stopped is None:
                # A child saw max_errors reached, so every failure it counted has reached this
                # process (each is a reply, or a death this process counts): it must have
                # stopped. Raised rather than waited on for ever, should that ever not hold.
                raise RuntimeError("the children stopped at max_errors but the pool did not")
            timeout = self.milliseconds_to_next_deadline(outstanding)
            events = poller.poll(timeout)
            for fd, happened in events:
                if fd == self.wake_read:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_read, 512):
                            pass
                    continue
                child = by_fd.get(fd)
                if child is None:
                    continue  # lost earlier in this batch of events
                if fd == child.replies_fd:
                    self.read(child)
                elif fd == child.sentinel:
                    self.lost(child, "died")
                elif happened & select.POLLOUT:
                    self.flush(child)
                else:
                    self.unwatch(fd)  # its reader is gone: the sentinel will say so
            if self.ran_dry:
                self.ran_dry = False
                self.starved()
            if timeout >= 0:
                self.enforce_deadlines()
                if not events:
                    self.look_for_exits()
            for child in self.children:
                if child is not None and child.outbox:
                    self.flush(child)

    # --- Sending. ---

    def depth(self) -> int:
        """How many tasks a child should hold: the one it runs and those waiting behind it."""
        if self.reader is not None:
            return 1  # a generator is read only for an idle child
        average = self.average
        if average is None:
            return 1 + min(1, self.max_ahead)
        if average >= self.long_task_seconds:
            return 1
        ahead = math.ceil(self.ahead / max(average, 1e-7))
        return 1 + min(self.max_ahead, max(1, ahead))

    def starved(self) -> None:
        """A child ran out of tasks and waits. If there were more to give, the refill came too
        late (on a loaded machine the parent can wait a time slice or more for a CPU): keep more
        waiting in each child from now on. Not for the end of the tasks, a timed task, or the
        loop over the pool holding the workers back."""
        if (
            self.scheduler.stopped is not None
            or (self.exhausted and not self.ready)
            or self.waiting_for_room
            or any(child is not None and child.timed is not None for child in self.children)
        ):
            return
        self.ahead = min(self.ahead * 2, self.max_ahead_seconds)

    def fill(self) -> None:
        """Give every idle child (and empty slot: a child starts when a task needs it) a task,
        then top each child up to depth(), one task per child per round."""
        children = self.children
        try:
            for slot in range(self.slots):
                # A loop: a task that fails here (it does not pickle, say) leaves the slot idle.
                while (child := children[slot]) is None or (
                    child.writable and not child.sent and child.limit == NO_LIMIT
                ):
                    task = self.take()
                    if task is None:
                        return
                    self.send(slot, task)
            depth = self.depth()
            # A child publishes its replies after every depth // 2 tasks: then about half of what
            # it holds is still ahead of it, time for the refill to arrive.
            self.publish_every = max(1, depth // 2)
            topped_up = depth > 1
            while topped_up:
                topped_up = False
                for child in children:
                    if (
                        child is None
                        or not child.writable
                        or child.timed is not None
                        or child.limit != NO_LIMIT
                        or len(child.sent) >= depth
                    ):
                        continue
                    task = self.take()
                    if task is None:
                        return
                    if task.timeout is not None:
                        # Only to an idle child, where nothing waits before it.
                        self.ready.appendleft(task)
                        return
                    self.send(child.slot, task)
                    topped_up = True
        finally:
            for child in children:
                if child is not None and child.outbox:
                    self.flush(child)

    def take(self) -> Task[Any] | None:
        """The next task to send, or None: stopped, nothing left, no room yet (iteration), or
        (a generator) not read yet."""
        scheduler = self.scheduler
        if scheduler.stopped is not None or self.shared[STOP]:
            return None
        if self.ready:
            return self.ready.popleft()
        if self.exhausted:
            return None
        reader = self.reader
        if reader is not None:
            if reader.taken:
                return reader.taken.popleft()
            if reader.exhausted:
                self.exhausted = True
            else:
                reader.ask()
            return None
        taken = scheduler.take_next(0)
        if taken is NO_ROOM:
            if not scheduler.want_room():
                # The loop over the pool wakes this thread once it has taken enough (on_room).
                self.waiting_for_room = True
                return None
            taken = scheduler.take_next(0)
            if taken is NO_ROOM:
                self.waiting_for_room = True
                return None
        self.waiting_for_room = False
        if taken is None:
            self.exhausted = True
        return taken

    def steal(self) -> None:
        """No task is left to take, and a child is idle: take back the later half of the longest
        queue, for it. So the run does not end on one child working through a queue while the
        others wait (the tail a fixed chunk size leaves, as multiprocessing.Pool.map's does).

        Taking back is asking: this lowers that child's limit in the shared array, and it answers
        NOT_STARTED to each task at or above it when it gets there, or starts one it had already
        passed its check for; only a NOT_STARTED answer sends a task elsewhere (see reply()), so
        no task runs twice, and none is lost if the child dies meanwhile (lost() sends on what it
        never answered).
        """
        children = [child for child in self.children if child is not None and child.writable]
        if not any(not child.sent and child.timed is None for child in children):
            return
        longest = max(children, key=lambda child: len(child.sent), default=None)
        if longest is None or len(longest.sent) < 3:
            return  # the task it runs and one behind it: nothing worth a round trip
        # The first of the later half of what waits behind the task it runs.
        waiting = len(longest.sent) - 1
        limit = longest.sent[len(longest.sent) - waiting // 2][0]
        if limit >= longest.limit:
            return  # taken back already, and not answered yet
        longest.limit = limit
        self.shared[limit_at(self.slots, longest.slot)] = limit
        self.counts.asked_back += waiting // 2

    # --- Deadlines, and children whose death nothing reports. ---

    def milliseconds_to_next_deadline(self, outstanding: bool) -> int:
        wake = math.inf
        for child in self.children:
            if child is not None and child.timed is not None:
                deadline = Token(self.scheduler, child.timed).deadline
                if deadline is not None:
                    wake = min(wake, deadline)
        if outstanding:
            wake = min(wake, time.monotonic() + EXIT_CHECK_SECONDS)
        if wake == math.inf:
            return -1
        return max(0, math.ceil((wake - time.monotonic()) * 1000))

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child is not None and child.timed is not None:
                deadline = Token(self.scheduler, child.timed).deadline
                if deadline is not None and now >= deadline:
                    self.lost(child, "deadline")

    def look_for_exits(self) -> None:
        """A quiet wait: ask the system whether each child with tasks has exited (see
        EXIT_CHECK_SECONDS)."""
        for child in self.children:
            if child is not None and child.sent and child.process.exitcode is not None:
                self.lost(child, "died")
