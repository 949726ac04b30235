"""Stage 4's scheduler: the rules of one run of a Pool, whatever backend runs its tasks.

What to take next (a list's deque, a generator read only by a free worker), the last check before
a task starts (a stop, max_errors, the run's deadline), how far workers may run ahead of a loop
over the pool, the hand-over of each finished task to that loop, why the run stopped (the first
reason wins). The thread that waits for it all (its sleep, the deadlines, overdue tasks) is the
other half of the same object: RunWatch, in beyond/waiting.py. Backends reach it only through
beyond/backends/protocol.py's SchedulerSeam, which this class is.

Why the lock is re-entrant: cancel() may be called from a signal handler, and CPython runs a
handler in the main thread between two bytecodes, possibly while main holds this lock. With a
plain Lock the handler would wait forever for its own thread; an RLock lets it in. What the
handler does there is safe at any point main could be: it only sets the stop (first one wins),
releases the locks that sleepers wait on (each once, as their flags say) and notifies workers
waiting for room (Condition.notify tolerates a notify interrupted by a handler that notifies
too: CPython gh-92530, whose fix 3.11.7 and 3.13 have).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from beyond.backends.protocol import NO_ROOM, NoRoom, Stopped, StopReason
from beyond.cancellation import WakesSleepersOnCancel
from beyond.task import Task, claim, given_twice
from beyond.waiting import RunWatch

Result = TypeVar("Result")

# What next() gives back once a generator is exhausted: None could be a (wrong) item of its own.
_EXHAUSTED: Any = object()

# Iteration: how many tasks per worker may be taken and not yet handed to the loop over the pool.
# Each time the workers run out of room, each of them sleeps and is woken again: a few thread
# switches, which cost tens of microseconds. Room for 16 tasks per worker, with the workers woken
# once half of it is free, spreads that over 8 tasks per worker; with room for 1 (the bound
# before) a no-op task cost 10-15 times a task of run() over a list, with 16 about 1.3-1.5 times
# (issue 21's measurements). Constant memory all the same.
AHEAD_PER_WORKER = 16


def ahead_bound(concurrency: int) -> int:
    """Iteration: at most this many tasks are taken and not yet handed to the loop over the pool
    (a slow loop makes the workers wait there)."""
    return AHEAD_PER_WORKER * concurrency


class Scheduler(RunWatch[Result], WakesSleepersOnCancel):
    """One run of a Pool: what each worker takes next and when the run stops; main (or the loop
    over the pool) waits here (RunWatch). Made by the Pool with its tasks."""

    def __init__(
        self,
        tasks: list[Task[Result]],
        source: Iterator[Task[Result]] | None,
        mark: object,
        concurrency: int,
        max_errors: int | None,
        overdue_grace: float,
    ) -> None:
        worker_count = concurrency if source is not None else min(concurrency, len(tasks))
        super().__init__(worker_count, overdue_grace)
        # The pool's, not the pool itself (see Pool.__init__): pool.tasks and its mark.
        self._tasks = tasks
        self._mark = mark
        # Workers waiting for room (iteration only) sleep here; _waiting_for_room counts those
        # that began to wait since the last wake-up: whoever wakes them (the consumer, stop())
        # zeroes it and notifies them all. Only workers wait on a Condition (see _sleep_until).
        self._room_freed = threading.Condition(self._lock)
        self._waiting_for_room = 0
        self._on_room: Callable[[], None] | None = None
        # Tasks in Token.sleep() (and the like): each sleeps on a lock a cancel releases.
        self._sleepers: set[threading.Lock] = set()
        # Where tasks come from. A list's tasks wait in a deque, popped without a lock (as in stage
        # 3); any other iterable is read under _taking, a lock only the workers take, so that main
        # never waits for the iterable's own code to return.
        self._sequence = tasks if source is None else None
        self._pending: deque[Task[Result]] | None = None
        self._source = source
        self._taking = threading.Lock()
        # How many items the iterable has given so far (under _taking).
        self._given = 0
        self._keep: list[Task[Result]] | None = None
        self.concurrency = concurrency
        # One item per failed task, appended by its worker without the lock (list.append is atomic
        # under the GIL), so that takers see it at once. None: nobody counts (no max_errors).
        self.max_errors = max_errors if max_errors is not None else sys.maxsize
        self.failures: list[None] = []
        # The run has ended normally: cancel() has nothing left to stop.
        self._over = False
        # Iteration only. Finished tasks not yet handed to the consumer: workers append and the
        # consumer pops without a lock (a deque's appends and pops are atomic), so that handing a
        # task over costs no lock and no wake-up while the consumer is awake.
        self._streaming = False
        self._done: deque[Task[Result]] = deque()
        # Backpressure: at most `_ahead` tasks taken and not yet handed over. `_taken` is counted
        # by the workers under _taking, `_handed` by the consumer alone (no lock: one writer, and
        # an int attribute is read whole). Workers that find no room wait; the consumer wakes them
        # once half the room is free, or before it sleeps itself.
        self._ahead = ahead_bound(concurrency)
        self._wake_room_at = self._ahead // 2
        self._taken = 0
        self._handed = 0
        # Called (lock held) by every stop() with its reason and `cancel`, for a backend whose run
        # waits elsewhere than on _wakeup (asyncio: its loop). It may do no more than stop() may.
        self._on_stop: Callable[[StopReason, bool], None] | None = None

    # --- The run: begun by the Pool, ended by it or the backend. ---

    def begin_run(self, streaming: bool, timeout: float | None) -> None:
        with self._lock:
            self._streaming = streaming
            if self._sequence is not None:
                if streaming:
                    self._source = iter(self._sequence)
                else:
                    # The hand-off, as in stage 3. Go sends each task down an unbuffered channel
                    # that the workers range over. Here every task is known up front, so no sender
                    # is needed: they wait in a deque that the workers pop from. popleft() is
                    # atomic (deques are documented thread-safe for appends and pops at either
                    # end), so each task goes to exactly one worker, and it never blocks: a worker
                    # that finds the deque empty knows every task has been handed out and ends,
                    # just as `range` ends on a closed channel.
                    self._pending = deque(self._sequence)
            elif not streaming:
                # run() keeps every task it takes from a generator in pool.tasks.
                self._keep = self._tasks
            if timeout is not None:
                self.run_timeout = timeout
                self.run_deadline = time.monotonic() + timeout
                self._watching_deadlines = True
            if self.stopped is not None and self._pending is not None:
                # Cancelled before the run: nothing to hand out.
                self._pending.clear()

    @property
    def streaming(self) -> bool:
        return self._streaming

    @property
    def tasks_are_a_list(self) -> bool:
        return self._sequence is not None

    def end_run(self, *, completed: bool) -> None:
        with self._lock:
            self._on_stop = None
            if completed:
                self._over = True

    def set_on_stop(self, callback: Callable[[StopReason, bool], None] | None) -> None:
        with self._lock:
            self._on_stop = callback

    def set_on_room(self, callback: Callable[[], None] | None) -> None:
        with self._lock:
            self._on_room = callback

    # --- What each worker takes. ---

    def take(self, number: int) -> Iterator[Task[Result]]:
        """Worker `number`'s tasks: each time it is free, the next task to run, until there is
        none or the pool has stopped. Go: `for task := range tasksChan`.

        A generator, so that the worker's loop resumes it instead of calling a function (the
        cheapest hand-off per task), with what it reads kept in local variables. In iteration,
        the task the worker ran last (current[number]) goes to the consumer before the next take.
        """
        pending, failures, max_errors, current = (
            self._pending,
            self.failures,
            self.max_errors,
            self.current,
        )
        streaming, done = self._streaming, self._done
        while True:
            if pending is not None:
                # A list, in run(): stage 3's hand-off (see begin_run). An empty deque means
                # every task has been handed out, or the pool stopped and emptied it. The last
                # check before the task starts is take_next's, made here without a call.
                try:
                    task = pending.popleft()
                except IndexError:
                    return
                if self.stopped is not None or len(failures) >= max_errors:
                    return
                if self.run_deadline is not None and self._run_deadline_passed():
                    return
            else:
                if streaming:
                    finished = current[number]
                    if finished is not None:
                        # The hand-over: no lock unless the consumer sleeps (see _wake_consumer).
                        current[number] = None
                        done.append(finished)
                        if self._main_waiting:
                            self._wake_consumer()
                taken = self.take_next(number)
                while taken is NO_ROOM:
                    if not self.wait_for_room():
                        return
                    taken = self.take_next(number)
                if taken is None:
                    return
                task = taken
            current[number] = task
            if task.timeout is not None:
                self.start_clock(task)
            yield task

    def take_next(self, number: int) -> Task[Result] | NoRoom | None:
        """The next task that may start, NO_ROOM, or None (see SchedulerSeam.take_next)."""
        pending = self._pending
        if pending is not None:
            try:
                task = pending.popleft()
            except IndexError:
                return None
        else:
            at_source = self._at_source
            at_source[number] = True
            taken = self._take_from_source()
            # Cleared before the check below, never after: the waiting thread, once the pool has
            # stopped, may leave without this worker while the flag is set, so the worker must
            # then see that stop before it starts a task. (Waiting for room is not at the source:
            # stop() wakes a worker there.)
            at_source[number] = False
            if taken is None or taken is NO_ROOM:
                return taken
            task = taken
        # The last check before the task starts, after the take, which may have taken long (a
        # generator's own code). It reads the failures the other workers appended without the
        # lock, so a failure that has landed stops this task; one that lands after this line
        # cannot, and each other worker has at most one task here: hence at most
        # concurrency - 1 tasks starting after the failure that reached max_errors. A task
        # taken but not started stays `finished == False` (in pool.tasks for run(); a
        # consumer never sees it).
        if self.stopped is not None or len(self.failures) >= self.max_errors:
            return None
        if self.run_deadline is not None and self._run_deadline_passed():
            # The waiting thread may not have woken for it yet: no task starts after it.
            return None
        return task

    def _take_from_source(self) -> Task[Result] | NoRoom | None:
        """The next task from the iterable, checked and claimed; None once it is exhausted, or
        after it failed (which stops the pool with its error). In iteration, NO_ROOM if `_ahead`
        tasks are taken and not yet handed over.

        Only workers call it: main never waits for the iterable's own code. The lock is taken
        and released by hand, not with `with`: this runs once per task, and `with` costs twice
        as much (it looks up and calls __enter__ and __exit__)."""
        if self.stopped is not None:
            # Not even in line for the lock: a worker stuck in next() may hold it for good.
            return None
        taking = self._taking
        taking.acquire()
        try:
            if self.stopped is not None or self._source is None:
                return None
            if self._streaming and self._taken - self._handed >= self._ahead:
                return NO_ROOM
            try:
                task = next(self._source, _EXHAUSTED)
            except BaseException as error:
                self._source = None
                self._stop_for_source(error, f"the tasks iterable raised {error!r}")
                return None
            if task is _EXHAUSTED:
                self._source = None
                return None
            # Its place in the iterable, from 0, for messages.
            number = self._given
            self._given += 1
            if type(task) is not Task and not isinstance(task, Task):
                not_a_task = TypeError(
                    f"the tasks iterable gave a {type(task).__name__}, not a Task, as item {number}"
                )
                self._source = None
                self._stop_for_source(not_a_task, str(not_a_task))
                return None
            # A task from a generator is claimed as it is taken, without a lock (see claim()): a
            # task runs at most once.
            if self._sequence is None and (owner := claim(task, self._mark)) is not None:
                twice = given_twice(task, number, owner is self._mark)
                self._source = None
                self._stop_for_source(twice, str(twice))
                return None
            if self._keep is not None:
                self._keep.append(task)
            self._taken += 1
            return task
        finally:
            taking.release()

    def _stop_for_source(self, error: BaseException, message: str) -> None:
        self.stop(StopReason.BAD_SOURCE, message, error=error)

    # --- Room ahead of the loop over the pool (iteration only). ---

    def want_room(self) -> bool:
        """Count the caller as waiting for room, then say whether there is room (see
        SchedulerSeam.want_room). Counted before the room is read: the consumer counts a
        hand-over (_handed) before it reads that count, so one of the two sees the other (as in
        _wake_consumer), and no waiter sleeps on room the consumer made without seeing it wait.
        A count left over (the caller found room) costs the consumer one useless wake-up."""
        with self._lock:
            self._waiting_for_room += 1
            return self._taken - self._handed < self._ahead

    def wait_for_room(self) -> bool:
        """Sleep until fewer than `_ahead` tasks are taken and not handed over (True), or the
        pool stops (False)."""
        with self._lock:
            while True:
                if self.stopped is not None:
                    return False
                if self.want_room():
                    return True
                self._room_freed.wait()

    def _wake_room_waiters(self) -> None:
        """Lock held: wake every waiter for room (each looks at the room again).

        The count is zeroed first: a Ctrl-C between the two lines leaves the waiters to stop()
        (the consumer's except clause calls it), which notifies them whatever the count; a Ctrl-C
        inside notify_all() leaves the rest to that notify_all(), which tolerates it (CPython
        gh-92530, in 3.11.7 and 3.13)."""
        self._waiting_for_room = 0
        self._room_freed.notify_all()
        if self._on_room is not None:
            self._on_room()

    def handed_over(self) -> None:
        self._handed += 1

    def hand_over(self, task: Task[Result]) -> None:
        self._done.append(task)
        if self._main_waiting:
            self._wake_consumer()

    def _wake_consumer(self) -> None:
        """A worker that has just appended to _done and seen _main_waiting set: wake the consumer.

        The hint was read without the lock; it cannot miss a consumer going to sleep. The consumer
        sets _main_waiting (under the lock) before it looks at _done, and the worker appends to
        _done before it reads _main_waiting: under the GIL one of the two runs first, so either
        the worker sees the flag, or the consumer sees the task. _wake_main checks the flag again
        under the lock, so a stale hint costs a lock and nothing else."""
        with self._lock:
            self._wake_main()

    # --- A task's outcome. ---

    def not_started(self, number: int) -> None:
        self.current[number] = None

    def reached_max_errors(self) -> None:
        """A worker whose failed task made max_errors failures (or more): stop the pool."""
        self.stop(
            StopReason.MAX_ERRORS, f"{self.max_errors} tasks failed (max_errors={self.max_errors})"
        )

    def panicked(self, panic: BaseException, task: Task[Result]) -> None:
        """A worker whose task panicked: stop the pool, to raise the panic once all have ended."""
        with self._lock:
            self.stop(StopReason.PANIC, f"a task raised {panic!r}", error=panic)
            if self._streaming:
                # It finished, if badly: the consumer sees it before the panic is raised.
                self.hand_over(task)

    # --- Stopping: from any thread, and from a signal handler. ---

    def stop(
        self,
        reason: StopReason,
        message: str,
        *,
        cancel: bool = False,
        error: BaseException | None = None,
    ) -> None:
        """No new task starts from now on; with `cancel`, running tasks are told too.

        The first reason and the first error win. Only sets fields and notifies, so that a signal
        handler may call it between any two bytecodes of main (see the module's docstring).
        """
        with self._lock:
            if self._over:
                return
            if self.stopped is None:
                self.stopped = Stopped(reason, message)
            if error is not None and self.error is None:
                self.error = error
            if self._pending is not None:
                self._pending.clear()
            if cancel:
                self.cancel_and_wake_sleepers()
            self._wake_room_waiters()
            self._wake_main()
            if self._on_stop is not None:
                self._on_stop(reason, cancel)

    # --- The loop over the pool, which takes each finished task (iteration only). ---

    def finished(self, started: int) -> Iterator[Task[Result]]:
        """The consumer: every finished task, in the order handed over, until all `started`
        workers have ended. A generator, so that the loop over the pool resumes it (the cheapest
        hand-off per task) and the common case takes no lock: pop, count, yield."""
        done = self._done
        while True:
            try:
                task = done.popleft()
            except IndexError:
                found = self._next_finished_or_sleep(started)
                if found is None:
                    return
                task = found
            else:
                self._handed += 1
                # Wake workers waiting for room once half of it is free, not at every hand-over:
                # one wake-up then lets them run several tasks each. The count is read without
                # the lock: see want_room.
                if self._waiting_for_room and self._taken - self._handed <= self._wake_room_at:
                    with self._lock:
                        self._wake_room_waiters()
            yield task

    def _next_finished_or_sleep(self, started: int) -> Task[Result] | None:
        """finished() found nothing: sleep until a worker hands a task over (then take it) or
        every worker has ended (then None)."""
        done = self._done

        def ready() -> bool:
            # Whatever the room, workers waiting for it must not wait for a consumer that sleeps.
            self._wake_room_waiters()
            # _ended read after _done, under the lock: a worker appends its last task to _done
            # before it ends, and it ends under this lock.
            # Or only workers at the tasks iterable are left, once the pool has stopped: they
            # run no task, and the consumer does not wait for them (see _only_the_source_is_left).
            return bool(done) or len(self._ended) >= started or self._only_the_source_is_left()

        self._sleep_until(ready)
        # Only this thread pops: if ready() saw a task, it is still there.
        try:
            task = done.popleft()
        except IndexError:
            return None
        self._handed += 1
        return task
