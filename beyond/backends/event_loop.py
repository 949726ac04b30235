"""Stage 4 on asyncio: the same pool, run by `concurrency` worker coroutines on one event loop.

    Pool(tasks, concurrency, backend="asyncio")    # each Task wraps a coroutine function

What it shows: the stage-4 pool (beyond/pool.py) with its threads replaced by worker coroutines
(event_loop_workers.py): `concurrency` of them take tasks with the scheduler's own take_next(), as
threads do (a list's deque, a generator read only by a free worker, at most 16 tasks per worker
taken and not yet handed to the loop over the pool), and run each task's coroutine to its end
before they take the next. Not one asyncio Task and a Semaphore per job: a job costs one
coroutine and its awaits, and nothing waits in line.

What it changes: stopping is real. A thread cannot be stopped from outside, but a
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
CancelledError and awaits on is waited for, and reported overdue past its deadline as with
threads. Use more than one core: all the Python runs on one thread.

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
import signal
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from types import FrameType
from typing import Any, ClassVar, Literal, TypeVar

from beyond.backends.event_loop_workers import LoopRun
from beyond.backends.protocol import BeginRun, SchedulerSeam, StopReason
from beyond.task import Task

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


class Asyncio:
    """The asyncio backend. `loop`: "uvloop", "standard", or None for uvloop when installed.

    The loop is the one that run() and `for task in pool` start; run_async() and stream_async()
    run on the caller's own loop, whichever it is.
    """

    name = "asyncio"
    runs_on: ClassVar[Literal["an event loop"]] = "an event loop"

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

    # --- From synchronous code: the backend starts a loop of its own for the run. ---

    def run_pool(self, begin: BeginRun[Any]) -> None:
        """Pool.run(): a new loop runs the pool to its end in this thread, then closes.

        asyncio.Runner, as asyncio.run() uses it, with the pool's own Ctrl-C handling (see
        CtrlC): while the loop runs in the main thread, the first Ctrl-C stops the pool, which
        cancels the running tasks at their next await and starts no new one, instead of raising
        KeyboardInterrupt wherever the loop happens to be; once they have unwound, run() raises
        KeyboardInterrupt. A second Ctrl-C raises at once; closing the Runner still cancels every
        task left and runs the loop until they have ended.
        """
        _refuse_inside_a_running_loop("pool.run()", "await pool.run_async()")
        scheduler = begin(False)
        ctrl_c = CtrlC(scheduler)
        with asyncio.Runner(loop_factory=self.loop_factory) as runner:
            run = LoopRun(scheduler, runner.get_loop(), streaming=False, if_cancelled=CTRL_C)
            try:
                with ctrl_c.handled():
                    runner.run(run.run())
            finally:
                run.detach()
        ctrl_c.raise_if_pressed()
        run.raise_its_error()

    def stream_pool(self, begin: BeginRun[Result]) -> Generator[Task[Result], None, None]:
        """`for task in pool`, from synchronous code: the loop is driven step by step.

        Each step runs the loop until a finished task is there to hand over (or every worker has
        ended), then stops it and yields; no thread is started. So the tasks run only while the
        loop over the pool waits for the next one: a slow loop body pauses them (their deadlines
        run on), which is backpressure at its plainest. To let them run while the body works,
        iterate with `async for task in pool.stream_async()` on a loop of your own.
        """
        _refuse_inside_a_running_loop("iterating over the pool", "async for ... stream_async()")
        return self._stream(begin)

    def _stream(self, begin: BeginRun[Result]) -> Generator[Task[Result], None, None]:
        # Checked again at the first step, which is when the loop would start.
        _refuse_inside_a_running_loop("iterating over the pool", "async for ... stream_async()")
        scheduler = begin(True)
        ctrl_c = CtrlC(scheduler)
        with asyncio.Runner(loop_factory=self.loop_factory) as runner:
            loop = runner.get_loop()
            run = LoopRun(scheduler, loop, streaming=True, if_cancelled=CTRL_C)
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
                scheduler.stop(*_why_the_loop_ended(raised), cancel=True)
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

    async def run_pool_async(self, begin: BeginRun[Any]) -> None:
        """`await pool.run_async()`: run() on the caller's loop. If the awaiting task is
        cancelled, the pool stops (CANCELLED), cancels its running tasks and waits for them to
        unwind, then the CancelledError goes on."""
        run = LoopRun(
            begin(False),
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
        self, begin: BeginRun[Result]
    ) -> AsyncGenerator[Task[Result], None]:
        """`async for task in pool.stream_async()`: the tasks run while the body awaits.

        Leaving the loop early does not close an async generator at once (Python closes it only
        when the loop's asyncgen finalizer gets to it): wrap it in `contextlib.aclosing` so that
        the pool is stopped, and its running tasks cancelled and waited for, as the loop is left.
        """
        scheduler = begin(True)
        run = LoopRun(
            scheduler,
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
            scheduler.stop(*_why_the_loop_ended(raised), cancel=True)
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
    the first Ctrl-C stops the pool from the signal handler (the scheduler's stop() may be called
    there):
    no task starts after it, even between tasks that never await, and the running ones are
    cancelled at their next await; the KeyboardInterrupt is raised once the loop has stopped. A
    second Ctrl-C raises at once, as asyncio.Runner's does.
    """

    # Read by the deadlock watchdog (deadlock_watch): _on_sigint only interrupts the run, as
    # Python's default handler would, so it is no way out of a deadlock among the pool's tasks
    # (tests/test_watchdog_pools.py). Without it a deadlocked run() would hang unreported.
    __deadlock_watch__: ClassVar[dict[str, str]] = {"kind": "ctrl-c", "interrupts": "_on_sigint"}

    def __init__(self, scheduler: SchedulerSeam[Any]) -> None:
        self.scheduler = scheduler
        self.pressed = 0

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.pressed += 1
        if self.pressed > 1:
            raise KeyboardInterrupt
        # Wakes the loop too: the stop reaches it through call_soon_threadsafe (LoopRun._on_stop).
        self.scheduler.stop(*CTRL_C, cancel=True)

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
