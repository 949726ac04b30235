"""Stage 4, beyond: the pool you would ship. Stage 3's tasks, plus what real use asks of them.

What it shows: stage 3's pool (every task keeps its own error) taken to real work: the caller's
"Too many errors." moves into the pool (`max_errors`), a run can be cancelled from any thread or a
signal handler, tasks and runs get deadlines, tasks can come from a generator (even an endless one)
in constant memory, and finished tasks can be read as they finish (`for task in pool`).

What it builds on and changes: robust/pool.py's Pool and Task, the same API (`Pool(tasks,
concurrency)`, `run()`, `pool.tasks`), with everything that makes it robust moved behind it. This
module is the public face, read first: the Pool, and the Task it runs (beyond/task.py). Behind it,
the rules of a run (beyond/scheduler.py: what to take next, max_errors, stopping, the hand-over to
the loop over the pool; beyond/waiting.py: how main waits, Ctrl-C and deadlines), what a task sees
of them (beyond/cancellation.py: checkpoint(), Token), and where tasks run (beyond/backends/,
behind one seam: backends/protocol.py). docs/stage4.md lists each feature with the module it
lives in and the test that proves it.

What it still cannot do: stop a thread. Python has no way to kill one from outside, so
cancellation and deadlines are cooperative, as Go's `context` is: a task that calls
`checkpoint()` (or sleeps with `current_token().sleep()`) stops there with `Cancelled` or
`TimeoutError`; one that never checks runs to its end, and the pool says it is overdue
(`OverdueWarning`, `pool.overdue`) instead of waiting for it without a word.

Sample run (`python -m beyond --jobs 30 --max-errors 10`):

    worker 1 processing job 1
    worker 2 processing job 2
    worker 3 processing job 3
    ...
    worker 1 processing job 21
    stopped early: 10 tasks failed (max_errors=10)
    error: error on job 1
    ...
    finished: 10 results, 11 errors; 9 tasks never started
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from beyond.backends import backend_for
from beyond.backends.protocol import (
    Backend,
    EventLoopBackend,
    Stopped,
    StopReason,
    WorkerThreadsBackend,
)
from beyond.cancellation import check_seconds
from beyond.scheduler import Scheduler
from beyond.task import Task, claim_all
from beyond.waiting import DEFAULT_OVERDUE_GRACE

Result = TypeVar("Result")


class Pool(Generic[Result]):
    """Runs tasks with at most `concurrency` of them at once. Go: `NewPool(tasks, concurrency)`.

    `tasks`: a list (or any Sequence) of Tasks, checked and claimed now, as in stage 3; or any
    other iterable, a generator even an endless one, from which a worker takes the next task only
    when it is free, so that tasks are made as they are needed.

    `pool.tasks`: for a Sequence, all of its tasks, as in stage 3. For another iterable, run()
    appends every task it takes, in the order taken (so it grows with the run: use iteration for
    an endless generator), and iteration keeps none, so it stays empty.

    `max_errors`: once that many tasks have failed (raised an Exception other than Cancelled), no
    new task starts; the tasks already running finish; `stopped` says so. At most
    `concurrency - 1` tasks start after the failure that reached the limit: those whose workers
    were already past their last check as it landed.

    `overdue_grace`: seconds a task may run past its deadline before it is reported overdue.

    `backend`: where the tasks run: "threads" (the default: each worker runs its tasks in its own
    thread), or another backend from beyond/backends/ ("asyncio", "processes", a
    dask.distributed Client). The scheduling rules above are the same for all of them.
    """

    def __init__(
        self,
        tasks: Iterable[Task[Result]],
        concurrency: int,
        *,
        max_errors: int | None = None,
        overdue_grace: float = DEFAULT_OVERDUE_GRACE,
        backend: object = "threads",
    ) -> None:
        # Where the tasks run (beyond/backends/). Resolved first: a backend whose extra is not
        # installed is refused with one line saying what to install, before anything else.
        self.backend: Backend = backend_for(backend)
        # Refuse bad input now, before any task runs. bool is an int to Python, but never meant.
        if not isinstance(concurrency, int) or isinstance(concurrency, bool):
            raise TypeError(f"concurrency must be an int, got {type(concurrency).__name__}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if max_errors is not None:
            if not isinstance(max_errors, int) or isinstance(max_errors, bool):
                raise TypeError(
                    f"max_errors must be an int or None, got {type(max_errors).__name__}"
                )
            if max_errors < 1:
                raise ValueError(f"max_errors must be at least 1, got {max_errors}")
        check_seconds("overdue_grace", overdue_grace)
        # What a task of this pool holds to say so. Not the Pool: a task that held its pool, in
        # a pool that holds its tasks, would make a reference cycle, and a finished run's tasks
        # would then wait for the cyclic garbage collector, which costs about as much per task as
        # the rest of the pool together when it comes. Without a cycle they are freed at once.
        self._mark = object()
        self.tasks: list[Task[Result]]
        source: Iterator[Task[Result]] | None = None
        if isinstance(tasks, Sequence):
            self.tasks = list(tasks)
            for task in self.tasks:
                if not isinstance(task, Task):
                    raise TypeError(f"Pool takes Task objects, got {type(task).__name__}")
            claim_all(self.tasks, self._mark)
        else:
            # Taken lazily: each task is checked and claimed as a worker takes it (the scheduler).
            self.tasks = []
            source = iter(tasks)
        self.concurrency = concurrency
        self.max_errors = max_errors
        # The run's shared state, made now so that cancel() works before the run starts too.
        try:
            self._scheduler: Scheduler[Result] = Scheduler(
                self.tasks, source, self._mark, concurrency, max_errors, overdue_grace
            )
        except (MemoryError, OverflowError):
            # A slot per worker, for a generator: 2**70 of them do not fit. Nothing is claimed yet.
            raise ValueError(
                f"concurrency={concurrency} is more workers than this process can keep track of"
            ) from None
        self._started = False
        self._start_once = threading.Lock()

    @property
    def stopped(self) -> Stopped | None:
        """None while the pool runs and once every task has run; else why it stopped early.

        The first reason wins: a pool stopped by max_errors and then cancelled says max_errors.
        """
        return self._scheduler.stopped

    @property
    def overdue(self) -> list[Task[Result]]:
        """Tasks reported still running past their deadline (and its grace), in report order."""
        return list(self._scheduler.overdue)

    def cancel(self) -> None:
        """Stop the pool: no new task starts, and running tasks are told (their next checkpoint()
        raises Cancelled). Returns at once; run() or the iteration returns once the running
        tasks have finished. Safe from any thread and from a signal handler; before the run, the
        run starts no task; after it, it does nothing.
        """
        self._scheduler.stop(StopReason.CANCELLED, "cancelled", cancel=True)

    def run(self, timeout: float | None = None) -> None:
        """Run every task; return when all have finished. Never raises for a task's Exception.

        Stops early (see `stopped`) at max_errors, on cancel(), or at `timeout` seconds after it
        began: then no new task starts, running tasks are told (except for max_errors, where they
        simply finish), and run() still waits for them, because a thread cannot be stopped. Tasks
        still running past the deadline (and the grace) are reported overdue.

        Panics: if a task raises a BaseException that is not an Exception (KeyboardInterrupt,
        SystemExit, ...), no further task starts, the tasks already running finish, and then run()
        re-raises it (the first one, if several). Ctrl-C while run() waits does the same: no task
        starts after it (beyond one per worker that was already taking its next task as it
        came), every task already running is told and finishes, then run() re-raises
        the KeyboardInterrupt. A second Ctrl-C during that wait stops the waiting: run() re-raises
        at once, no new task starts either, and the running tasks still finish before the
        interpreter exits (an exit hook waits for them, see WorkerThread). Tasks that never
        started keep `finished == False`.

        A worker inside the tasks iterable's next() runs no task: once the pool has stopped
        (Ctrl-C, or any other stop), run() does not wait for it beyond one check interval
        (SIGNAL_CHECK_SECONDS). It is left to come back by itself, then starts nothing and ends;
        if it never comes back (a generator blocked on a queue or a socket), its thread does
        not keep the process from exiting.

        If the tasks iterable raises, or gives something that is not a Task (or a Task given
        twice), the pool stops the same way and run() raises that error: it is the caller's bug,
        not a task's. The tasks that finished keep their outcomes.

        If the system cannot start another thread, run() stops the workers it did start (after
        their current task) and raises RuntimeError saying how many it could start.
        """
        backend = self.backend
        # A plain attribute, not an isinstance() on the backend's Protocol: see protocol.py.
        if backend.runs_on == "an event loop":
            # asyncio: the backend runs the whole pool itself, on its event loop.
            backend.run_pool(self._beginner(timeout))
            return
        scheduler = self._begin(False, timeout)
        threads = backend.threads(scheduler)
        started = 0
        try:
            for thread in threads:
                thread.start()
                started += 1
            # Go: `p.wg.Wait()`. Each worker ends once there is nothing left to take (or the pool
            # stopped) and its last task has returned.
            scheduler.wait_until_ended(started)
        except BaseException as raised:
            # Ctrl-C (KeyboardInterrupt) lands in the main thread, here, or a thread could not be
            # started. Start no more tasks, tell the running ones and let them finish (a thread
            # cannot be stopped from outside), then pass the exception on. Every worker that took
            # a task had begun before it took it, and none takes one from here on, so waiting for
            # the workers that have begun is waiting for every task that started.
            stop = _stop_and_wait(scheduler, raised)
            if isinstance(stop, RuntimeError) and started < len(threads):
                raise RuntimeError(
                    f"could start only {started} of {len(threads)} worker threads: {stop}"
                ) from stop
            if stop is raised:
                raise
            raise stop from None
        _finish(scheduler)

    def __iter__(self) -> Iterator[Task[Result]]:
        """`for task in pool`: the same as `for task in pool.stream()`."""
        return self.stream()

    def stream(self, timeout: float | None = None) -> Generator[Task[Result], None, None]:
        """Run the tasks, yielding each one as it finishes (completion order), keeping none.

        At most 16 x `concurrency` tasks (`ahead_bound(concurrency)`) are taken and not yet
        yielded: workers that find that many waiting for the consumer wait too (and go on once
        half of that room is free), so a slow loop never lets finished tasks pile up and a
        generator of a million tasks streams in constant memory. Tasks that never started are
        not yielded. Everything else is as run(): max_errors, cancel() and `timeout` stop it (the
        loop then ends once the running tasks are yielded); a panic or a bad tasks iterable is
        raised after every task that finished has been yielded; Ctrl-C while the loop waits for
        the next task tells the running tasks, waits for them and re-raises.

        Leaving the loop early (break, return, an exception in its body) stops the pool as
        cancel() does and waits for the running tasks, so that no thread outlives the loop (but
        for a worker still inside the tasks iterable's next() after a check interval: see run()).
        That happens when the generator is closed: at once in CPython when the loop drops it, or
        call its close() (`contextlib.closing`) if you keep it in a variable.
        """
        if timeout is not None:
            # Refused now, not at the loop's first step.
            check_seconds("timeout", timeout)
        backend = self.backend
        if backend.runs_on == "an event loop":
            return backend.stream_pool(self._beginner(timeout))
        return self._stream(backend, timeout)

    async def run_async(self, timeout: float | None = None) -> None:
        """run(), for code already running an event loop: `await pool.run_async()`. Only for a
        backend that runs on an event loop (backend="asyncio")."""
        await _on_a_loop(self.backend, "run_async()").run_pool_async(self._beginner(timeout))

    def stream_async(self, timeout: float | None = None) -> AsyncGenerator[Task[Result], None]:
        """stream(), for code already running an event loop: `async for task in
        pool.stream_async()`. Only for a backend that runs on an event loop (backend="asyncio")."""
        if timeout is not None:
            check_seconds("timeout", timeout)
        backend = _on_a_loop(self.backend, "stream_async()")
        return backend.stream_pool_async(self._beginner(timeout))

    def _stream(
        self, backend: WorkerThreadsBackend, timeout: float | None
    ) -> Generator[Task[Result], None, None]:
        scheduler = self._begin(True, timeout)
        threads = backend.threads(scheduler)
        started = 0
        try:
            for thread in threads:
                thread.start()
                started += 1
            yield from scheduler.finished(started)
        except BaseException as raised:
            # As in run(). GeneratorExit is the loop ending early (break, or an exception in its
            # body, which closes this generator as it unwinds): the pool is cancelled, and the
            # wait keeps any thread from outliving the loop.
            stop = _stop_and_wait(scheduler, raised)
            if isinstance(stop, RuntimeError) and started < len(threads):
                raise RuntimeError(
                    f"could start only {started} of {len(threads)} worker threads: {stop}"
                ) from stop
            if stop is raised:
                raise
            raise stop from None
        _finish(scheduler)

    def _begin(self, streaming: bool, timeout: float | None) -> Scheduler[Result]:
        """Begin the run: a Pool runs once."""
        if timeout is not None:
            check_seconds("timeout", timeout)
        with self._start_once:
            if self._started:
                raise RuntimeError("this Pool has already run; make a new one to run again")
            self._started = True
        self._scheduler.begin_run(streaming, timeout)
        return self._scheduler

    def _beginner(self, timeout: float | None) -> Callable[[bool], Scheduler[Result]]:
        """How an EventLoopBackend begins the run, when it is ready to: begin(streaming)."""
        return lambda streaming: self._begin(streaming, timeout)


def _stop_and_wait(scheduler: Scheduler[Any], raised: BaseException) -> BaseException:
    """The thread waiting for the run got an exception (Ctrl-C, a thread that could not start,
    the loop over the pool left early): stop the run, telling the running tasks, wait for them,
    and say what really stopped it."""
    stop = _what_stopped(raised)
    if isinstance(stop, GeneratorExit):
        scheduler.stop(StopReason.CANCELLED, "the loop over the pool ended early", cancel=True)
    else:
        scheduler.stop(StopReason.INTERRUPTED, f"interrupted by {stop!r}", cancel=True)
    # A Ctrl-C during this wait after a refused thread is the first (it waits); after a loop left
    # early, which may have been a Ctrl-C in its body, it is taken for a second (it ends the wait).
    first_ctrl_c_waits = not isinstance(stop, KeyboardInterrupt | GeneratorExit)
    ctrl_c = scheduler.wait_until_none_running(first_ctrl_c_waits=first_ctrl_c_waits)
    scheduler.join_ended()
    return ctrl_c or stop


def _finish(scheduler: Scheduler[Any]) -> None:
    """Every worker has ended, or is left at the source of the stopped run: join the others, and
    raise what the run must (a panic, the tasks iterable's error, the backend's)."""
    scheduler.join_ended()
    scheduler.end_run(completed=True)
    if scheduler.error is not None:
        raise scheduler.error


def _on_a_loop(backend: Backend, what: str) -> EventLoopBackend:
    if backend.runs_on != "an event loop":
        raise TypeError(
            f"{what} needs a backend that runs on an event loop (backend='asyncio'); this pool's "
            f"backend is {backend.name!r}: use run() or `for task in pool`"
        )
    return backend


def _what_stopped(raised: BaseException) -> BaseException:
    """The exception that really stopped the waiting thread.

    Ctrl-C can land inside threading's own Condition.wait() (Thread.start() waits on one) just
    after it has released its lock and before the try block that takes it back; its `with` then
    fails with RuntimeError("release unlocked lock"), the KeyboardInterrupt as its context. That is
    a Ctrl-C, not a thread the system refused.
    """
    if isinstance(raised, RuntimeError) and isinstance(raised.__context__, KeyboardInterrupt):
        return raised.__context__
    return raised
