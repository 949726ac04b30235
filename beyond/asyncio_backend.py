"""Stage 4 on asyncio: the same pool, run by `concurrency` worker coroutines on one event loop.

    Pool(tasks, concurrency, backend="asyncio")    # each Task wraps a coroutine function

What it shows: the stage-4 pool (beyond/pool.py) with its threads replaced by worker coroutines:
`concurrency` of them take tasks from the pool by the same rules (a list's deque, a generator read
only by a free worker, at most `concurrency` tasks taken and not yet handed to the loop over the
pool), and run each task's coroutine to its end before they take the next. Not one asyncio Task
and a Semaphore per job: a job costs one coroutine and its awaits, and nothing waits in line.

What it changes: stopping is real. A thread cannot be stopped from outside (see pool.py), but a
coroutine can, at its next await: cancel(), Ctrl-C and leaving the loop over the pool cancel the
running tasks there (each keeps `Cancelled` as its error), and `Task(fn, timeout=...)` and
`run(timeout=...)` wrap the coroutine in `asyncio.timeout_at`, so a task past its deadline gets
TimeoutError at its next await whether it checks or not. And max_errors is exact: only the worker
that is running switches to another at an await, so a failure is recorded before any other worker
can take a task, and nothing starts after the N-th failure.

What it still cannot do: stop a coroutine that never awaits (a computation, a blocking call).
It holds the loop's one thread: no other task, no timer and no cancel runs until it returns or
awaits. (Between two such tasks, though, a Ctrl-C is seen, and no task starts after it: see
CtrlC, and LoopRun.awaiting for run_async() and stream_async().) A coroutine that catches its
CancelledError and awaits on is waited for, and reported overdue past its deadline as in
pool.py. Use more than one core: all the Python runs on one thread.

Which loop: uvloop when it is installed (`pip install 'go-worker-pool-py[backends]'`), asyncio's
own loop otherwise; `pool.backend.loop` says which, and `Asyncio(loop="standard")` picks it.

Sample run (tasks that sleep 10 ms, every third failing; see docs/stage4-asyncio.md):

    >>> pool = Pool((Task(partial(job, n), timeout=0.05) for n in range(100)), 4,
    ...             max_errors=3, backend="asyncio")
    >>> for task in pool: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator
from types import CoroutineType, FrameType
from typing import Any, Generic, Protocol, TypeVar

from beyond.pool import (
    Cancelled,
    OverdueWarning,
    Pool,
    Runner,
    StopReason,
    Task,
    Workers,
)

try:
    import uvloop
except ImportError:  # an optional extra: without it, asyncio's own loop runs the pool
    uvloop = None  # type: ignore[assignment]

Result = TypeVar("Result")

LOOPS = ("uvloop", "standard")
INSTALL_UVLOOP = "pip install 'go-worker-pool-py[backends]'"

# What stops the pool when the task that waits for it is cancelled: asyncio.Runner cancels it on
# Ctrl-C in run() and in the loop over the pool; in run_async() it is the caller's own cancel.
CTRL_C = (StopReason.INTERRUPTED, "interrupted by KeyboardInterrupt()")
AWAITING_TASK_CANCELLED = (StopReason.CANCELLED, "the task awaiting the pool was cancelled")


def make_backend(argument: object) -> Asyncio:
    """`Pool(backend="asyncio")`: uvloop when it is installed, the standard loop otherwise."""
    return Asyncio()


class Asyncio:
    """The asyncio backend. `loop`: "uvloop", "standard", or None for uvloop when installed.

    The loop is the one that run() and `for task in pool` start; run_async() and stream_async()
    run on the caller's own loop, whichever it is.
    """

    name = "asyncio"

    def __init__(self, loop: str | None = None) -> None:
        if loop is None:
            loop = "uvloop" if uvloop is not None else "standard"
        if loop not in LOOPS:
            raise ValueError(f"loop must be one of {', '.join(map(repr, LOOPS))}, got {loop!r}")
        if loop == "uvloop" and uvloop is None:
            raise ImportError(
                f"loop='uvloop' needs uvloop, which is not installed: {INSTALL_UVLOOP} "
                "(or use loop='standard')"
            )
        self.loop = loop
        # None: asyncio.Runner makes and sets the standard loop, exactly as asyncio.run() does.
        self.loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = (
            uvloop.new_event_loop if loop == "uvloop" else None
        )

    @property
    def description(self) -> str:
        """Which loop, with its version where it has one: for figures and their metadata."""
        if self.loop == "uvloop":
            return f"uvloop {importlib.metadata.version('uvloop')}"
        return "asyncio's standard loop"

    def runner(self, workers: Workers[Any], number: int) -> Runner:
        # Part of the Backend protocol for the thread backends; this one drives its own run.
        raise TypeError("the asyncio backend runs worker coroutines, not worker threads")

    # --- From synchronous code: the backend starts a loop of its own for the run. ---

    def run_pool(self, pool: Pool[Any], timeout: float | None) -> None:
        """Pool.run(): a new loop runs the pool to its end in this thread, then closes.

        asyncio.Runner, as asyncio.run() uses it, with the pool's own Ctrl-C handling (see
        CtrlC): while the loop runs in the main thread, the first Ctrl-C stops the pool, which
        cancels the running tasks at their next await and starts no new one, instead of raising
        KeyboardInterrupt wherever the loop happens to be; once they have unwound, run() raises
        KeyboardInterrupt. A second Ctrl-C raises at once; closing the Runner still cancels every
        task left and runs the loop until they have ended.
        """
        _refuse_inside_a_running_loop("pool.run()", "await pool.run_async()")
        workers = pool._begin(streaming=False, timeout=timeout)
        ctrl_c = CtrlC(workers)
        with asyncio.Runner(loop_factory=self.loop_factory) as runner:
            run = LoopRun(pool, workers, runner.get_loop(), streaming=False, if_cancelled=CTRL_C)
            try:
                with ctrl_c.handled():
                    runner.run(run.run())
            finally:
                run.detach()
        ctrl_c.raise_if_pressed()
        run.raise_its_error()

    def stream_pool(
        self, pool: Pool[Result], timeout: float | None
    ) -> Generator[Task[Result], None, None]:
        """`for task in pool`, from synchronous code: the loop is driven step by step.

        Each step runs the loop until a finished task is there to hand over (or every worker has
        ended), then stops it and yields; no thread is started. So the tasks run only while the
        loop over the pool waits for the next one: a slow loop body pauses them (their deadlines
        run on), which is backpressure at its plainest. To let them run while the body works,
        iterate with `async for task in pool.stream_async()` on a loop of your own.
        """
        _refuse_inside_a_running_loop("iterating over the pool", "async for ... stream_async()")
        return self._stream(pool, timeout)

    def _stream(
        self, pool: Pool[Result], timeout: float | None
    ) -> Generator[Task[Result], None, None]:
        # Checked again at the first step, which is when the loop would start.
        _refuse_inside_a_running_loop("iterating over the pool", "async for ... stream_async()")
        workers = pool._begin(streaming=True, timeout=timeout)
        ctrl_c = CtrlC(workers)
        with asyncio.Runner(loop_factory=self.loop_factory) as runner:
            loop = runner.get_loop()
            run = LoopRun(pool, workers, loop, streaming=True, if_cancelled=CTRL_C)
            run.start()
            try:
                while True:
                    task = run.hand_over()
                    if task is not None:
                        yield task
                    elif run.running:
                        # The loop runs only here, and only here is Ctrl-C the pool's to handle
                        # (in the loop's body it is raised there, and unwinds through this).
                        with ctrl_c.handled():
                            runner.run(run.until_something_to_hand_over())
                        ctrl_c.raise_if_pressed()
                    else:
                        break
            except BaseException as raised:
                # GeneratorExit: the loop over the pool was left (break, return, an exception in
                # its body, Ctrl-C included, which unwinds through it). Stop, cancel the running
                # tasks, and run the loop until they have unwound, so that none outlives it.
                workers.stop(*_why_the_loop_ended(raised), cancel=True)
                # A second Ctrl-C raised after a step's task had returned but before its loop
                # stopped leaves that step's stop still queued: the next run would end at once
                # ("Event loop stopped before Future completed"). Run what is queued first: a loop
                # stopped before run_forever() runs its ready callbacks once and returns
                # (documented at loop.stop()).
                loop.stop()
                loop.run_forever()
                with ctrl_c.handled():
                    runner.run(run.until_every_worker_has_ended())
                if ctrl_c.pressed and isinstance(raised, GeneratorExit):
                    # A Ctrl-C while the loop was left for another reason: it is still a Ctrl-C.
                    raise KeyboardInterrupt from None
                raise
            finally:
                run.detach()
        run.raise_its_error()

    # --- From code already running a loop: the pool runs on that loop. ---

    async def run_pool_async(self, pool: Pool[Any], timeout: float | None) -> None:
        """`await pool.run_async()`: run() on the caller's loop. If the awaiting task is
        cancelled, the pool stops (CANCELLED), cancels its running tasks and waits for them to
        unwind, then the CancelledError goes on."""
        workers = pool._begin(streaming=False, timeout=timeout)
        run = LoopRun(
            pool,
            workers,
            asyncio.get_running_loop(),
            streaming=False,
            if_cancelled=AWAITING_TASK_CANCELLED,
        )
        try:
            await run.run()
        finally:
            run.detach()
        run.raise_its_error()

    async def stream_pool_async(
        self, pool: Pool[Result], timeout: float | None
    ) -> AsyncGenerator[Task[Result], None]:
        """`async for task in pool.stream_async()`: the tasks run while the body awaits.

        Leaving the loop early does not close an async generator at once (Python closes it only
        when the loop's asyncgen finalizer gets to it): wrap it in `contextlib.aclosing` so that
        the pool is stopped, and its running tasks cancelled and waited for, as the loop is left.
        """
        workers = pool._begin(streaming=True, timeout=timeout)
        run = LoopRun(
            pool,
            workers,
            asyncio.get_running_loop(),
            streaming=True,
            if_cancelled=AWAITING_TASK_CANCELLED,
        )
        # The task iterating: its cancel stops the pool (see LoopRun.awaiting).
        run.awaited_by(asyncio.current_task())
        run.start()
        try:
            while True:
                task = run.hand_over()
                if task is not None:
                    yield task
                elif run.running:
                    await run.until_something_to_hand_over()
                else:
                    break
        except BaseException as raised:
            workers.stop(*_why_the_loop_ended(raised), cancel=True)
            await run.until_every_worker_has_ended()
            raise
        finally:
            run.detach()
        run.raise_its_error()


class CtrlC:
    """Ctrl-C while a synchronous run() or `for task in pool` runs the loop: the pool's own
    handling, in place of asyncio.Runner's.

    asyncio.Runner (Lib/asyncio/runners.py, Runner._on_sigint) turns the first Ctrl-C into a
    cancel of the task it runs, which a pool of tasks that never await would see only once
    they have all run, and it raises KeyboardInterrupt at once, wherever the loop is, for a
    first Ctrl-C that lands after that task has returned but before the loop has stopped: once
    per step of `for task in pool`. Landing in uvloop's own clean-up, that leaves the loop
    unusable (it still says it is running), and the pool can no longer wait for its tasks. Here
    the first Ctrl-C stops the pool from the signal handler (Workers.stop may be called there):
    no task starts after it, even between tasks that never await, and the running ones are
    cancelled at their next await; the KeyboardInterrupt is raised once the loop has stopped. A
    second Ctrl-C raises at once, as asyncio.Runner's does.
    """

    def __init__(self, workers: Workers[Any]) -> None:
        self.workers = workers
        self.pressed = 0

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.pressed += 1
        if self.pressed > 1:
            raise KeyboardInterrupt
        # Wakes the loop too: the stop reaches it through call_soon_threadsafe (LoopRun._on_stop).
        self.workers.stop(*CTRL_C, cancel=True)

    @contextlib.contextmanager
    def handled(self) -> Iterator[None]:
        """Handle Ctrl-C here while the block runs the loop, where asyncio.Runner would: in the
        main thread, and only over Python's default handler (a program's own handler stays)."""
        if (
            threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        ):
            yield
            return
        signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            # Equal, not the same object: each `self._on_sigint` makes a new bound method (kept
            # on self, one would make a reference cycle, and keep the run's tasks for the
            # cyclic garbage collector).
            if signal.getsignal(signal.SIGINT) == self._on_sigint:
                signal.signal(signal.SIGINT, signal.default_int_handler)

    def raise_if_pressed(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt


class LoopRun(Generic[Result]):
    """One run of a pool on an event loop: its worker coroutines and the one task that waits
    for them (run()'s, or the loop over the pool).

    Everything here runs on the loop's thread, so no lock guards it: a coroutine gives up the
    thread only at an await, and each method says where it awaits. The pool's Workers keeps what
    the rest of the pool reads (the stop reason, failures, the source, overdue tasks); it is the
    same object threads use, so cancel(), `stopped` and `overdue` work unchanged. Workers.stop()
    may be called from any thread and from a signal handler: it tells this run through on_stop,
    which only hands the news to the loop (call_soon_threadsafe), where _stopped() acts on it.
    """

    def __init__(
        self,
        pool: Pool[Result],
        workers: Workers[Result],
        loop: asyncio.AbstractEventLoop,
        *,
        streaming: bool,
        if_cancelled: tuple[StopReason, str],
    ) -> None:
        self.pool = pool
        self.workers = workers
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
        # Streaming only: finished tasks not yet handed over, and how many more tasks may be taken
        # before the loop over the pool takes one (taken and not yet handed over <= concurrency).
        self.done: deque[Task[Result]] = deque()
        self.room = workers.concurrency
        self._waiting_for_room: deque[asyncio.Future[None]] = deque()
        # For each worker, the task the pool has cancelled (so that it is cancelled once).
        self._told: list[Task[Result] | None] = [None] * len(workers.current)
        # The run's deadline on the loop's clock (uvloop's is its own, in milliseconds).
        self.run_deadline: float | None = None
        if workers.run_deadline is not None:
            self.run_deadline = loop.time() + (workers.run_deadline - time.monotonic())
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._overdue_grace = workers._overdue_grace

    # --- Starting and ending. ---

    def start(self) -> None:
        """Make the worker coroutines' tasks; they begin when the loop next runs."""
        workers = self.workers
        with workers._lock:
            # From now on every stop() reaches the loop. One that came before (a cancel() before
            # the run) needs nothing more: no worker will take a task.
            workers.on_stop = self._on_stop
        if self.run_deadline is not None:
            self._deadline_timer = self.loop.call_at(self.run_deadline, self._run_deadline_passed)
        count = workers.concurrency
        if workers._sequence is not None:
            # As many workers as tasks, at most: an idle one would only start and end.
            count = min(count, len(workers._sequence))
        self.running = count
        self.worker_tasks = [
            self.loop.create_task(self._work(number), name=f"worker-{number + 1}")
            for number in range(count)
        ]

    async def run(self) -> None:
        """Run every task; return once every worker has ended. If the task running this is
        cancelled, stop the pool with `if_cancelled`, wait for the workers, and re-raise."""
        self.awaited_by(asyncio.current_task())
        self.start()
        try:
            while self.running:
                await self._sleep()
        except asyncio.CancelledError:
            self.workers.stop(*self.if_cancelled, cancel=True)
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
        workers = self.workers
        with workers._lock:
            workers.on_stop = None
            if self.running == 0:
                workers.finish_run()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        for worker in self.worker_tasks:
            # A worker that let a panic out of the loop holds it; the pool raises it already, so
            # asyncio need not log it as never retrieved.
            if worker.done() and not worker.cancelled():
                worker.exception()

    def raise_its_error(self) -> None:
        """A task's panic, or the tasks iterable's error, once every worker has ended."""
        if self.workers.error is not None:
            raise self.workers.error

    # --- The one waiting task sleeps; workers wake it. ---

    async def _sleep(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

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
        self.room += 1
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
        there: the check before the start sees every failure, stop and deadline so far.
        """
        workers, loop, current = self.workers, self.loop, self.workers.current
        # Looked up once: this loop runs once per task.
        failures, max_errors, pending = workers.failures, workers.max_errors, workers._pending
        streaming, run_deadline = self.streaming, self.run_deadline
        me = asyncio.current_task()
        assert me is not None
        try:
            while True:
                if streaming and not await self._room_for_one_more():
                    return
                if pending is not None:
                    # A list in run(): stage 3's deque. Empty: all handed out, or the pool stopped.
                    try:
                        task = pending.popleft()
                    except IndexError:
                        return
                else:
                    # A generator (read here, on the loop's thread), or a list when streaming.
                    taken = workers._take_from_source()
                    if taken is None:
                        return
                    task = taken
                # The last check before the task starts. Exact here, unlike with threads: every
                # failure so far is recorded, and none can land before the task's first line.
                if workers.stopped is not None or len(failures) >= max_errors:
                    return
                # A cancel of the task awaiting the pool since the last task: that task has not
                # had a turn to stop the pool if the tasks never await, so this worker does.
                awaiting = self.awaiting
                if awaiting is not None and awaiting.cancelling() > self._cancels_before:
                    workers.stop(*self.if_cancelled, cancel=True)
                    return
                if run_deadline is not None and loop.time() >= run_deadline:
                    self._run_deadline_passed()
                    return
                current[number] = task
                panic: BaseException | None = None
                try:
                    if task.timeout is None and run_deadline is None:
                        task.result = await _awaitable(task)
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
                        workers.reached_max_errors()
                except BaseException as raised:
                    # KeyboardInterrupt, SystemExit...: Go's panic. No new task starts, and the
                    # running ones are cancelled (see below for where it goes next).
                    task.err = panic = raised
                    workers.stop(
                        StopReason.PANIC, f"a task raised {raised!r}", error=raised, cancel=True
                    )
                finally:
                    task.finished = True
                    current[number] = None
                if streaming:
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
        finally:
            self.running -= 1
            if self.running == 0:
                self._wake()

    async def _room_for_one_more(self) -> bool:
        """Streaming: wait until fewer than `concurrency` tasks are taken and not handed over;
        take that room. False if the pool has stopped."""
        while self.room == 0 and self.workers.stopped is None:
            waiter = self.loop.create_future()
            self._waiting_for_room.append(waiter)
            await waiter
        if self.workers.stopped is not None:
            return False
        self.room -= 1
        return True

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
        overdue = loop.call_at(deadline + self._overdue_grace, self._report_overdue, task, deadline)
        try:
            async with scope:
                return await _awaitable(task)
        except TimeoutError as timed_out:
            if not scope.expired():
                raise  # the task's own TimeoutError, not the pool's deadline
            whose = "task's" if own is not None and (run is None or own <= run) else "run's"
            seconds = task.timeout if whose == "task's" else self.workers.run_timeout
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
        if not self.workers.cancelled:
            # A worker cancelled from outside the pool (asyncio.Runner's shutdown cancels every
            # task, say): stop the pool, so that no worker takes another task.
            self.workers.stop(
                StopReason.CANCELLED, "a worker was cancelled from outside the pool", cancel=True
            )
        # This worker has taken its cancel; it takes no task after it (the pool has stopped).
        me.uncancel()
        stop = Cancelled("the pool was cancelled")
        stop.__cause__ = cancelled
        return stop

    # --- Stopping: news from any thread, acted on in the loop. ---

    def _on_stop(self, reason: StopReason, cancel: bool) -> None:
        """Workers.stop() calls this (any thread, a signal handler included; its lock held).
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
        for number, task in enumerate(self.workers.current):
            if task is not None and self._told[number] is not task:
                self._told[number] = task
                self.worker_tasks[number].cancel("the pool was cancelled")

    def _run_deadline_passed(self) -> None:
        self.workers.stop(
            StopReason.TIMEOUT,
            f"the run's timeout of {self.workers.run_timeout} s passed",
            cancel=True,
        )

    def _report_overdue(self, task: Task[Result], deadline: float) -> None:
        workers = self.workers
        with workers._lock:
            if task.finished or task in workers.overdue:
                return
            # Recorded before the warning, which may raise (-W error): reported once.
            workers.overdue.append(task)
        late = self.loop.time() - deadline
        warnings.warn(
            OverdueWarning(
                f"task {task._name()} is still running {late:.2f} s past its deadline: it went "
                "on after the cancel it got at an await, so the pool waits for it"
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
    awaitable = task.fn()
    # The common case first: one type check, no ABC machinery.
    if type(awaitable) is CoroutineType or inspect.isawaitable(awaitable):
        return awaitable
    raise TypeError(
        f"task {task._name()} returned a value of type {type(awaitable).__name__}, not an "
        "awaitable: backend='asyncio' runs coroutine functions (async def); a plain function "
        "runs on the loop's thread and holds up every other task"
    )


def _why_the_loop_ended(raised: BaseException) -> tuple[StopReason, str]:
    if isinstance(raised, GeneratorExit):
        return StopReason.CANCELLED, "the loop over the pool ended early"
    if isinstance(raised, asyncio.CancelledError):
        return AWAITING_TASK_CANCELLED
    return StopReason.INTERRUPTED, f"interrupted by {raised!r}"


def _refuse_inside_a_running_loop(what: str, instead: str) -> None:
    """run() and `for task in pool` start a loop of their own; inside a running one they would
    block it (and asyncio refuses a second loop in one thread). Say what to use instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{what} cannot be used inside a running event loop (it would start a loop of its own "
        f"and block this one): use `{instead}` instead"
    )
