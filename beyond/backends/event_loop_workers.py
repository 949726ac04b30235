"""The asyncio backend's run: `concurrency` worker coroutines on one event loop, and the one task
that waits for them (run()'s, or the loop over the pool). The backend itself, and how a run
starts from synchronous code or from a running loop, is in event_loop.py.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import warnings
from collections import deque
from collections.abc import Awaitable
from types import CoroutineType
from typing import Any, Generic, Protocol, TypeVar

from beyond.backends.protocol import NO_ROOM, SchedulerSeam, StopReason
from beyond.cancellation import Cancelled, OverdueWarning
from beyond.task import Task, quoted_name

Result = TypeVar("Result")


class LoopRun(Generic[Result]):
    """One run of a pool on an event loop: its worker coroutines and the one task that waits
    for them (run()'s, or the loop over the pool).

    Everything here runs on the loop's thread, so no lock guards it: a coroutine gives up the
    thread only at an await, and each method says where it awaits. The run's scheduler keeps what
    the rest of the pool reads (the stop reason, failures, the source, the room, overdue tasks);
    it is the same object threads use, through the same seam (SchedulerSeam), so cancel(),
    `stopped` and `overdue` work unchanged, and the workers take tasks with the threads' own
    take_next(). Its stop() may be called from any thread and from a signal handler: it tells this
    run through on_stop, which only hands the news to the loop (call_soon_threadsafe), where
    _stopped() acts on it.
    """

    def __init__(
        self,
        scheduler: SchedulerSeam[Result],
        loop: asyncio.AbstractEventLoop,
        *,
        streaming: bool,
        if_cancelled: tuple[StopReason, str],
    ) -> None:
        self.scheduler = scheduler
        self.loop = loop
        self.streaming = streaming
        # How the pool stops when the task awaiting it is cancelled.
        self.if_cancelled = if_cancelled
        # The task awaiting the pool (run()'s, the loop over the pool's), and how many cancel
        # requests it had already when it began to (asyncio.timeout compares the same way).
        # Cancelling it stops the pool, but it acts on the cancel only at its next turn, and
        # tasks that never await never give it one: Task.cancel() counts the request at once
        # (Task.cancelling()), so every worker reads the count before it starts a task. The
        # caller's own asyncio.run() cancels it so on Ctrl-C. None for the synchronous `for task
        # in pool`, whose steps are tasks of their own: there Ctrl-C stops the pool itself (CtrlC).
        self.awaiting: _Cancellable | None = None
        self._cancels_before = 0
        # One asyncio Task per worker, made by start().
        self.worker_tasks: list[asyncio.Task[None]] = []
        # Workers started and not yet ended.
        self.running = 0
        # The one task waiting for this run (run()'s, or the loop over the pool) sleeps on this
        # future; workers resolve it when there is something new for it to look at.
        self._waiter: asyncio.Future[None] | None = None
        # Streaming only: finished tasks not yet handed over, and the workers waiting for room
        # (the scheduler counts it: at most 16 per worker taken and not yet handed over, as with
        # threads; with room for one per worker, each task of a sync loop over the pool made its
        # worker wait on a future of its own). hand_over() wakes one for each task it hands over.
        self.done: deque[Task[Result]] = deque()
        self._waiting_for_room: deque[asyncio.Future[None]] = deque()
        # For each worker, the task it runs now, and the task the pool has cancelled (so that it
        # is cancelled once).
        self.current: list[Task[Result] | None] = [None] * scheduler.worker_count
        self._told: list[Task[Result] | None] = [None] * scheduler.worker_count
        # The run's deadline on the loop's clock (uvloop's is its own, in milliseconds).
        self.run_deadline: float | None = None
        if scheduler.run_deadline is not None:
            self.run_deadline = loop.time() + (scheduler.run_deadline - time.monotonic())
        self._deadline_timer: asyncio.TimerHandle | None = None

    # --- Starting and ending. ---

    def start(self) -> None:
        """Make the worker coroutines' tasks; they begin when the loop next runs."""
        # From now on every stop() reaches the loop. One that came before (a cancel() before the
        # run) needs nothing more: no worker will take a task.
        self.scheduler.set_on_stop(self._on_stop)
        if self.run_deadline is not None:
            self._deadline_timer = self.loop.call_at(self.run_deadline, self._run_deadline_passed)
        # As many workers as tasks for a short list: an idle one would only start and end.
        count = self.running = self.scheduler.worker_count
        self.worker_tasks = [
            self.loop.create_task(self._work(number), name=f"worker-{number + 1}")
            for number in range(count)
        ]
        for worker in self.worker_tasks:
            # Counted as ended by its task's end, not by a finally in _work: a worker cancelled
            # before its first step (tasks that never await keep the first worker running, and
            # the others never start) never runs its body, and closing the loop waited for it
            # for ever (tests/test_beyond_asyncio_interrupts.py, two Ctrl-Cs).
            worker.add_done_callback(self._worker_ended)

    async def run(self) -> None:
        """Run every task; return once every worker has ended. If the task running this is
        cancelled, stop the pool with `if_cancelled`, wait for the workers, and re-raise."""
        self.awaited_by(asyncio.current_task())
        self.start()
        try:
            while self.running:
                await self._sleep()
        except asyncio.CancelledError:
            self.scheduler.stop(*self.if_cancelled, cancel=True)
            await self.until_every_worker_has_ended()
            raise

    def awaited_by(self, task: _Cancellable | None) -> None:
        """From now on `task` awaits the pool: a cancel it gets stops the pool."""
        if task is None:
            # Not in an asyncio Task (a coroutine driven by hand): nothing to be cancelled.
            task = _NEVER_CANCELLED
        self.awaiting = task
        self._cancels_before = task.cancelling()

    async def until_something_to_hand_over(self) -> None:
        """The loop over the pool: wait for a finished task, or for every worker to end."""
        while not self.done and self.running:
            await self._sleep()

    async def until_every_worker_has_ended(self) -> None:
        """Wait for every worker to end, even if this task is cancelled again meanwhile: every
        running task has already been cancelled, and waiting for them is what leaves none behind
        (asyncio.TaskGroup waits for its children the same way)."""
        cancelled_again: asyncio.CancelledError | None = None
        while self.running:
            try:
                await self._sleep()
            except asyncio.CancelledError as cancelled:
                cancelled_again = cancelled
        if cancelled_again is not None:
            raise cancelled_again

    def detach(self) -> None:
        """The run is over: stop() no longer reaches the loop (which may close now), and a pool
        that ran to its end (every worker ended) stays as it ended: cancel() does nothing."""
        self.scheduler.end_run(completed=self.running == 0)
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        for worker in self.worker_tasks:
            # A worker that let a panic out of the loop holds it; the pool raises it already, so
            # asyncio need not log it as never retrieved.
            if worker.done() and not worker.cancelled():
                worker.exception()

    def raise_its_error(self) -> None:
        """A task's panic, or the tasks iterable's error, once every worker has ended."""
        if self.scheduler.error is not None:
            raise self.scheduler.error

    # --- The one waiting task sleeps; workers wake it. ---

    async def _sleep(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _worker_ended(self, worker: asyncio.Task[None]) -> None:
        self.running -= 1
        if self.running == 0:
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- What the loop over the pool calls (synchronous: it never awaits). ---

    def hand_over(self) -> Task[Result] | None:
        """The next finished task for the loop over the pool, or None if there is none yet;
        handing it over makes room for a worker to take one more."""
        if not self.done:
            return None
        task = self.done.popleft()
        self.scheduler.handed_over()
        while self._waiting_for_room:
            if _wake_one(self._waiting_for_room.popleft()):
                break
        return task

    # --- The workers. ---

    async def _work(self, number: int) -> None:
        """One worker: take a task, run its coroutine to its end, and again, until there is
        none to take or the pool has stopped. Go: `for task := range tasksChan`.

        It awaits in two places only: the task's own coroutine, and (streaming) room to take one
        more. Between taking a task and its first line, nothing awaits, so no other worker runs
        there: the scheduler's check before the start (take_next) sees every failure, stop and
        deadline so far, which makes max_errors exact here, unlike with threads.
        """
        scheduler, loop, current = self.scheduler, self.loop, self.current
        # Looked up once: this loop runs once per task.
        take_next, failures, max_errors = (
            scheduler.take_next,
            scheduler.failures,
            scheduler.max_errors,
        )
        run_deadline = self.run_deadline
        me = asyncio.current_task()
        assert me is not None
        while True:
            # The threads' take: a list's deque, or the tasks iterable (read here, on the
            # loop's thread), with the scheduler's room in iteration.
            taken = take_next(number)
            while taken is NO_ROOM:
                if not await self._room_freed():
                    return
                taken = take_next(number)
            if taken is None:
                return
            task = taken
            # A cancel of the task awaiting the pool since the last task: that task has not
            # had a turn to stop the pool if the tasks never await, so this worker does.
            awaiting = self.awaiting
            if awaiting is not None and awaiting.cancelling() > self._cancels_before:
                scheduler.stop(*self.if_cancelled, cancel=True)
                return
            # The run's deadline on the loop's own clock, which the tasks' timeouts use.
            if run_deadline is not None and loop.time() >= run_deadline:
                self._run_deadline_passed()
                return
            current[number] = task
            panic: BaseException | None = None
            try:
                if task.timeout is None and run_deadline is None:
                    # _awaitable, inlined for the common case: fn gave a coroutine.
                    awaitable = task.fn(*task.args)
                    if type(awaitable) is not CoroutineType:
                        awaitable = _checked_awaitable(task, awaitable)
                    task.result = await awaitable
                else:
                    task.result = await self._before_its_deadline(task)
            except asyncio.CancelledError as cancelled:
                task.err = self._cancelled(cancelled, me)
            except Cancelled as cancelled:
                # Raised by the task itself (another pool's stop, say): its outcome, not a
                # failure, as in Task.run.
                task.err = cancelled
            except Exception as error:
                # The task's failure, kept on it, and counted before this worker awaits
                # again: no other worker can take a task in between.
                task.err = error
                failures.append(None)
                if len(failures) >= max_errors:
                    scheduler.reached_max_errors()
            except BaseException as raised:
                # KeyboardInterrupt, SystemExit...: Go's panic. No new task starts, and the
                # running ones are cancelled (see below for where it goes next).
                task.err = panic = raised
                scheduler.stop(
                    StopReason.PANIC, f"a task raised {raised!r}", error=raised, cancel=True
                )
            finally:
                task.finished = True
                current[number] = None
            if self.streaming:
                self.done.append(task)
                self._wake()
            if panic is not None:
                if isinstance(panic, KeyboardInterrupt | SystemExit):
                    # asyncio lets these two out of the loop at once (Task.__step re-raises
                    # them), and closing the loop then cancels the tasks left and waits for
                    # them. A Ctrl-C that asyncio.Runner did not turn into a cancel (the
                    # second one) lands in whatever code runs, a task's included: it must
                    # stop the run as it does when it lands in the loop's own code.
                    raise panic
                # Any other: run() raises it once every worker has ended.
                return

    async def _room_freed(self) -> bool:
        """Streaming, after NO_ROOM: wait until the loop over the pool takes a finished task
        (hand_over wakes one waiter per task) or the pool stops (_stopped wakes them all); False
        if it stopped. The room is the scheduler's: the next take_next() looks at it again."""
        if self.scheduler.stopped is not None:
            return False
        waiter = self.loop.create_future()
        self._waiting_for_room.append(waiter)
        await waiter
        return self.scheduler.stopped is None

    async def _before_its_deadline(self, task: Task[Result]) -> Any:
        """Await the task's coroutine under asyncio.timeout_at: past its deadline (its own or the
        run's, the earlier) it is cancelled at its next await, and gets TimeoutError."""
        loop = self.loop
        task.deadline = time.monotonic() + task.timeout if task.timeout is not None else None
        own = loop.time() + task.timeout if task.timeout is not None else None
        run = self.run_deadline
        deadline = min(d for d in (own, run) if d is not None)
        scope = asyncio.timeout_at(deadline)
        # A coroutine that catches its CancelledError and awaits on is reported, not waited for
        # in silence.
        grace = self.scheduler.overdue_grace
        overdue = loop.call_at(deadline + grace, self._report_overdue, task, deadline)
        try:
            async with scope:
                return await _awaitable(task)
        except TimeoutError as timed_out:
            if not scope.expired():
                raise  # the task's own TimeoutError, not the pool's deadline
            whose = "task's" if own is not None and (run is None or own <= run) else "run's"
            seconds = task.timeout if whose == "task's" else self.scheduler.run_timeout
            raise TimeoutError(f"the {whose} timeout of {seconds} s passed") from timed_out
        finally:
            overdue.cancel()

    def _cancelled(
        self, cancelled: asyncio.CancelledError, me: asyncio.Task[None]
    ) -> BaseException:
        """What a task that was cancelled keeps as its error. The pool's cancel (or anyone's
        cancel of this worker): Cancelled, as with threads, and the pool stops if it had not.
        A CancelledError the task raised itself (it awaited something cancelled): that error."""
        if not me.cancelling():
            return cancelled
        if not self.scheduler.cancelled:
            # A worker cancelled from outside the pool (asyncio.Runner's shutdown cancels every
            # task, say): stop the pool, so that no worker takes another task.
            self.scheduler.stop(
                StopReason.CANCELLED, "a worker was cancelled from outside the pool", cancel=True
            )
        # This worker has taken its cancel; it takes no task after it (the pool has stopped).
        me.uncancel()
        stop = Cancelled("the pool was cancelled")
        stop.__cause__ = cancelled
        return stop

    # --- Stopping: news from any thread, acted on in the loop. ---

    def _on_stop(self, reason: StopReason, cancel: bool) -> None:
        """The scheduler's stop() calls this (any thread, a signal handler included; its lock held).
        call_soon_threadsafe only queues a callback and wakes the loop: asyncio.Runner's own
        Ctrl-C handler calls it from a signal handler too (Lib/asyncio/runners.py)."""
        self.loop.call_soon_threadsafe(self._stopped, reason, cancel)

    def _stopped(self, reason: StopReason, cancel: bool) -> None:
        """In the loop: the pool has stopped. Workers waiting for room look again (and end); with
        `cancel`, every running task is cancelled at its next await, once. Not for the run's
        deadline: each running task's own asyncio.timeout_at fires at that moment, and a second
        cancel would turn its TimeoutError into a CancelledError."""
        while self._waiting_for_room:
            _wake_one(self._waiting_for_room.popleft())
        if not cancel or reason is StopReason.TIMEOUT:
            return
        for number, task in enumerate(self.current):
            if task is not None and self._told[number] is not task:
                self._told[number] = task
                self.worker_tasks[number].cancel("the pool was cancelled")

    def _run_deadline_passed(self) -> None:
        self.scheduler.stop(
            StopReason.TIMEOUT,
            f"the run's timeout of {self.scheduler.run_timeout} s passed",
            cancel=True,
        )

    def _report_overdue(self, task: Task[Result], deadline: float) -> None:
        # Recorded before the warning, which may raise (-W error): reported once.
        if not self.scheduler.report_overdue(task):
            return
        late = self.loop.time() - deadline
        warnings.warn(
            OverdueWarning(
                f"task {quoted_name(task)} is still running {late:.2f} s past its deadline: it "
                "went on after the cancel it got at an await, so the pool waits for it"
            ),
            stacklevel=1,
        )


class _Cancellable(Protocol):
    """What LoopRun reads of the task awaiting the pool."""

    def cancelling(self) -> int: ...


class _NeverCancelled:
    def cancelling(self) -> int:
        return 0


_NEVER_CANCELLED = _NeverCancelled()


def _wake_one(waiter: asyncio.Future[None]) -> bool:
    """Wake a worker waiting on `waiter`, unless it was woken already; say if it was woken now."""
    if waiter.done():
        return False
    waiter.set_result(None)
    return True


def _awaitable(task: Task[Any]) -> Awaitable[Any]:
    """Call the task's coroutine function. Anything else fails the task alone, clearly: a plain
    function has already run, on the loop's thread, holding up every other task meanwhile."""
    awaitable = task.fn(*task.args)
    # The common case first: one type check, no ABC machinery.
    if type(awaitable) is CoroutineType:
        return awaitable
    return _checked_awaitable(task, awaitable)


def _checked_awaitable(task: Task[Any], awaitable: object) -> Awaitable[Any]:
    """What fn gave, if it is awaitable though not a coroutine (a Future, say); else TypeError."""
    if inspect.isawaitable(awaitable):
        return awaitable
    raise TypeError(
        f"task {quoted_name(task)} returned a value of type {type(awaitable).__name__}, not an "
        "awaitable: backend='asyncio' runs coroutine functions (async def); a plain function "
        "runs on the loop's thread and holds up every other task"
    )
