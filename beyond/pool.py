"""Stage 4, beyond: the pool you would ship. Stage 3's tasks, plus what real use asks of them.

What it shows: stage 3's pool (every task keeps its own error) taken to real work: the caller's
"Too many errors." moves into the pool (`max_errors`), a run can be cancelled from any thread or a
signal handler, tasks and runs get deadlines, tasks can come from a generator (even an endless one)
in constant memory, and finished tasks can be read as they finish (`for task in pool`).

What it builds on and changes: robust/pool.py, copied and extended, so that
`diff robust/pool.py beyond/pool.py` is the list of what real use adds. The hand-off is the same
for a list (a deque that workers pop from); a generator is read under a lock, one task at a time,
and only by a worker that is free. The workers and main still meet at one lock, now re-entrant so
that a signal handler may cancel the pool while main holds it, and main now sleeps on a lock the
workers release rather than in Condition.wait(), which a Ctrl-C can break. A task is still
run in its worker's own thread, through one small seam (`InThisThread`) that another backend
(processes, asyncio, a Dask cluster) can replace without touching the scheduling rules.

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

import atexit
import enum
import functools
import math
import reprlib
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, overload, runtime_checkable

Result = TypeVar("Result")

# Guards Task._owner while a Pool claims its tasks, so that two pools built at the same moment from
# the same task cannot both claim it. Held once per Pool for a list, once per task taken from a
# generator; never while a task runs.
_claiming = threading.Lock()

# What each worker thread is running, for checkpoint() and current_token(): a task cannot be handed
# its pool (fn takes no arguments), so it finds it here. Set once per worker (see InThisThread).
_here = threading.local()

# What next() gives back once a generator is exhausted: None could be a (wrong) item of its own.
_EXHAUSTED: Any = object()

# How long past its deadline a task may still run before it is reported overdue: long enough for a
# task that checks now and then to reach its next checkpoint, short enough to be told promptly.
DEFAULT_OVERDUE_GRACE = 0.5

# The longest main sleeps at a time. The kernel may hand a process's SIGINT to any of its threads
# that does not block it; when a worker takes it, CPython only notes it, and runs the Python
# handler (raising KeyboardInterrupt) in the main thread the next time that thread runs bytecode.
# A main thread blocked in a lock would never get there, so it wakes this often to let it.
SIGNAL_CHECK_SECONDS = 0.05


class Cancelled(Exception):
    """Raised by checkpoint() (and Token.check() and Token.sleep()) once the pool is cancelled.

    An Exception, so that it ends up on its task like any other error (`task.err`) instead of
    stopping the pool as a panic would; it does not count toward max_errors, since it is the
    pool's stop and not the task's failure. The price: a task's own `except Exception` can swallow
    it. It then runs on, and its next checkpoint raises Cancelled again (a cancelled pool stays
    cancelled). asyncio made CancelledError a BaseException for that reason; a thread pool whose
    tasks are plain functions gains more from a task that keeps its outcome.
    """


class OverdueWarning(UserWarning):
    """A task is still running past its deadline: it did not reach a checkpoint, and no thread can
    be stopped from outside, so the pool can only say so and wait for it."""


class StopReason(enum.Enum):
    """Why a pool stopped before every task had run. See `Pool.stopped`."""

    MAX_ERRORS = "max_errors"  # max_errors tasks failed
    CANCELLED = "cancelled"  # cancel(), or the loop over the pool ended early
    TIMEOUT = "timeout"  # the run's deadline passed
    INTERRUPTED = "interrupted"  # Ctrl-C (or another exception) in the thread waiting for the pool
    PANIC = "panic"  # a task raised a BaseException that is not an Exception
    BAD_SOURCE = "bad source"  # the tasks iterable raised, or gave something that is not a Task
    # The backend can run no more tasks: its worker processes cannot start, or its Dask client or
    # scheduler is gone. run() raises the backend's error, as for a panic.
    BACKEND_FAILED = "backend failed"


@dataclass(frozen=True)
class Stopped:
    """A pool stopped early: why (for a program) and a sentence saying so (for a person)."""

    reason: StopReason
    message: str


class Task(Generic[Result]):
    """One call to make. After the pool has run it, `err` or `result` says how it went.

    A task runs at most once: it belongs to the first Pool it is given to, and a second Pool (or the
    same task listed twice in one Pool) is refused before any task runs. Exactly one of `err` and
    `result` is set once it has run: `err` if fn raised, else `result` (which may be None).

    `timeout`: seconds the task may run. Once they have passed, checkpoint() in the task raises
    TimeoutError (which counts as the task's failure); a task that does not check runs on and is
    reported overdue.

    `name`: what every message, warning and repr calls the task (`task.name`). By default, fn's
    name, and for a functools.partial its function with its arguments, shortened:
    `Task(partial(fetch, url))` is `fetch('https://example.com/a')`, so that an error says which
    input failed.
    """

    # Slots: the pool touches these once per task, and slot access is the cheapest there is.
    __slots__ = ("_given_name", "_owner", "deadline", "err", "finished", "fn", "result", "timeout")

    # A coroutine function (backend="asyncio") makes a Task of what it returns once awaited.
    @overload
    def __init__(
        self: Task[Result],
        fn: Callable[[], Awaitable[Result]],
        *,
        timeout: float | None = None,
        name: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Task[Result],
        fn: Callable[[], Result],
        *,
        timeout: float | None = None,
        name: str | None = None,
    ) -> None: ...

    def __init__(
        self, fn: Callable[[], Any], *, timeout: float | None = None, name: str | None = None
    ) -> None:
        if not callable(fn):
            raise TypeError(f"Task needs a callable with no arguments, got {type(fn).__name__}")
        if timeout is not None:
            _check_seconds("timeout", timeout)
        if name is not None and type(name) is not str:
            # Exactly str: a subclass's own __str__ or __repr__ would run in every message.
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        # None: made from fn when a message first needs it (see `name`), not for every task.
        self._given_name = name
        self.fn = fn
        self.timeout = timeout
        # When the task must be done by, on the time.monotonic() clock: set by its worker as it
        # starts the task, and only for a task with a timeout.
        self.deadline: float | None = None
        # What fn raised (traceback included), or None. Go: `Err error`.
        self.err: BaseException | None = None
        # What fn returned; meaningful only when err is None.
        self.result: Result | None = None
        # False for a task that never ran (the run was stopped before its turn).
        self.finished = False
        # The mark of the Pool that holds this task, once one does (see Pool.__init__).
        self._owner: object | None = None

    @property
    def name(self) -> str:
        """The name given to Task(), else one made from fn (see the class docstring): printable,
        at most NAME_LIMIT characters, and never an exception, whatever fn's arguments do."""
        name = self._given_name
        if name is None:
            # Made once, when first needed: every message about the task then says the same, even
            # if an argument changes meanwhile (an Event's repr says whether it is set).
            name = self._given_name = _name_of(self.fn)
        return name

    def _name(self) -> str:
        """The name, quoted, for messages: one line whatever it holds; never raises. (The other
        backends' messages call this too.)"""
        name = self.name
        # A made name is printable already (its arguments are reprs): quoted as it is, since
        # repr() would double every backslash in it. A given one may hold anything: repr().
        if name.isprintable():
            if "'" not in name:
                return f"'{name}'"
            if '"' not in name:
                return f'"{name}"'
        return repr(name)

    def run(self, call: Callable[[], Result] | None = None) -> bool:
        """Call fn once and keep its outcome. The pool's workers call this; a task runs once.

        `call`: how to call fn, if not here and now: a backend that runs fn elsewhere (a child
        process, a cluster) passes a function that does so and returns fn's result or raises its
        error, and the outcome is kept on the task all the same.

        Returns True if fn failed in a way that counts toward max_errors: it raised an Exception
        other than Cancelled. The worker records that before it does anything else (see _work), so
        it returns straight from the except clause: between fn's exception reaching this frame
        and that record, no call, loop or new frame gives another thread a turn.
        """
        if self.finished:
            raise RuntimeError(f"{self!r} has already run; a task runs at most once")
        try:
            self.result = (call or self.fn)()
        except Cancelled as cancelled:
            # The pool's stop, seen at a checkpoint: the task's outcome, not its failure.
            self.err = cancelled
        except Exception as error:
            # Go: `t.Err = t.f()`. The error stays with its task, where it cannot block anyone.
            self.err = error
            return True
        except BaseException as panic:
            # KeyboardInterrupt, SystemExit...: Go's panic. Record it, and let the worker stop
            # the pool (see Pool.run).
            self.err = panic
            raise
        finally:
            self.finished = True
        return False

    def __repr__(self) -> str:
        # Never raises, whatever fn and err are: a repr is what a failing program prints.
        name = self._name()
        if not self.finished:
            state = "not run"
        elif self.err is None:
            state = "ok"
        else:
            # `is None`, not truthiness: an exception may define __bool__, and it still failed.
            try:
                state = f"failed: {self.err!r}"
            except KeyboardInterrupt:
                raise
            except BaseException:
                state = f"failed: {type(self.err).__name__}"
        return f"<Task {name} {state}>"


# A name made from fn is at most this long: an argument of a megabyte must not make a message of a
# megabyte. Each argument is shortened on its own first (_SHORT), so that every one shows.
NAME_LIMIT = 120
# How many of a partial's arguments a name shows, and how many nested partials it looks into.
NAME_ARGUMENTS = 4
NAME_DEPTH = 3


class _ShortRepr(reprlib.Repr):
    """reprlib's shortening, which cuts a str before it makes its repr; bytes too. (Any other
    object's repr is made whole and then cut: a megabyte only for a moment.)"""

    def repr_bytes(self, value: bytes, level: int) -> str:
        return self._cut(repr(value[: self.maxstring]), len(value) > self.maxstring)

    def repr_bytearray(self, value: bytearray, level: int) -> str:
        return self._cut(repr(value[: self.maxstring]), len(value) > self.maxstring)

    def _cut(self, text: str, cut: bool) -> str:
        return text + "..." if cut else text


_SHORT = _ShortRepr()
_SHORT.maxstring = _SHORT.maxother = 40
_SHORT.maxlong = 20
_SHORT.maxlevel = 2


def _name_of(fn: object, depth: int = 0) -> str:
    """A task's default name: fn's qualified name, and a partial's arguments, each shortened.

    Never raises, whatever fn and the arguments do in their own __repr__ or __getattr__ (see
    _short); a Ctrl-C that lands here is the caller's, and goes on.
    """
    try:
        if isinstance(fn, functools.partial) and depth < NAME_DEPTH:
            shown = [_short(argument) for argument in fn.args[:NAME_ARGUMENTS]]
            room = NAME_ARGUMENTS - len(shown)
            keywords = list(fn.keywords.items())
            shown += [f"{key}={_short(value)}" for key, value in keywords[:room]]
            if len(fn.args) + len(keywords) > len(shown):
                shown.append("...")
            name = f"{_name_of(fn.func, depth + 1)}({', '.join(shown)})"
        else:
            name = getattr(fn, "__qualname__", None) or type(fn).__name__
            if type(name) is not str:
                name = type(fn).__name__
    except KeyboardInterrupt:
        raise
    except BaseException:
        name = type(fn).__name__
    if not name.isprintable():
        # A repr of its own may hold a newline (a numpy array's does): a message is one line.
        name = name.encode("unicode_escape").decode("ascii")
    return name if len(name) <= NAME_LIMIT else name[: NAME_LIMIT - 3] + "..."


def _short(value: object) -> str:
    """One argument, shortened. reprlib already puts a placeholder for a repr that raises an
    Exception; this covers one that raises SystemExit or another BaseException."""
    try:
        return _SHORT.repr(value)
    except KeyboardInterrupt:
        raise
    except BaseException:
        return f"<{type(value).__name__}>"


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
    thread), or another backend from beyond/backends.py ("asyncio", "processes", a
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
        # Where the tasks run (beyond/backends.py). Resolved first: a backend whose extra is not
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
        _check_seconds("overdue_grace", overdue_grace)
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
            _claim(self.tasks, self._mark)
        else:
            # Taken lazily: each task is checked and claimed as a worker takes it (Workers.take).
            self.tasks = []
            source = iter(tasks)
        self.concurrency = concurrency
        self.max_errors = max_errors
        # The run's shared state, made now so that cancel() works before the run starts too.
        try:
            self._workers: Workers[Result] = Workers(
                self.tasks, source, self.backend, self._mark, concurrency, max_errors, overdue_grace
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
        return self._workers.stopped

    @property
    def overdue(self) -> list[Task[Result]]:
        """Tasks reported still running past their deadline (and its grace), in report order."""
        return list(self._workers.overdue)

    def cancel(self) -> None:
        """Stop the pool: no new task starts, and running tasks are told (their next checkpoint()
        raises Cancelled). Returns at once; run() or the iteration returns once the running
        tasks have finished. Safe from any thread and from a signal handler; before the run, the
        run starts no task; after it, it does nothing.
        """
        self._workers.stop(StopReason.CANCELLED, "cancelled", cancel=True)

    def run(self, timeout: float | None = None) -> None:
        """Run every task; return when all have finished. Never raises for a task's Exception.

        Stops early (see `stopped`) at max_errors, on cancel(), or at `timeout` seconds after it
        began: then no new task starts, running tasks are told (except for max_errors, where they
        simply finish), and run() still waits for them, because a thread cannot be stopped. Tasks
        still running past the deadline (and the grace) are reported overdue.

        Panics: if a task raises a BaseException that is not an Exception (KeyboardInterrupt,
        SystemExit, ...), no further task starts, the tasks already running finish, and then run()
        re-raises it (the first one, if several). Ctrl-C while run() waits does the same: no task
        starts after it, every task already running is told and finishes, then run() re-raises
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
        if isinstance(self.backend, DrivesItsOwnRun):
            # asyncio: the backend runs the whole pool itself, on its event loop.
            self.backend.run_pool(self, timeout)
            return
        workers = self._begin(streaming=False, timeout=timeout)
        threads = workers.threads()
        started = 0
        try:
            for thread in threads:
                thread.start()
                started += 1
            # Go: `p.wg.Wait()`. Each worker ends once there is nothing left to take (or the pool
            # stopped) and its last task has returned.
            workers.wait_until_ended(started)
        except BaseException as raised:
            # Ctrl-C (KeyboardInterrupt) lands in the main thread, here, or a thread could not be
            # started. Start no more tasks, tell the running ones and let them finish (a thread
            # cannot be stopped from outside), then pass the exception on. Every worker that took
            # a task had begun before it took it, and none takes one from here on, so waiting for
            # the workers that have begun is waiting for every task that started.
            stop = _what_stopped(raised)
            workers.stop(StopReason.INTERRUPTED, f"interrupted by {stop!r}", cancel=True)
            workers.wait_until_none_running()
            workers.join_ended()
            if isinstance(stop, RuntimeError) and started < len(threads):
                raise RuntimeError(
                    f"could start only {started} of {len(threads)} worker threads: {stop}"
                ) from stop
            if stop is raised:
                raise
            raise stop from None
        workers.join_ended()
        workers.finish_run()
        if workers.error is not None:
            raise workers.error

    def __iter__(self) -> Iterator[Task[Result]]:
        """`for task in pool`: the same as `for task in pool.stream()`."""
        return self.stream()

    def stream(self, timeout: float | None = None) -> Generator[Task[Result], None, None]:
        """Run the tasks, yielding each one as it finishes (completion order), keeping none.

        At most `concurrency` tasks are taken and not yet yielded: a worker that finds that many
        waiting for the consumer waits too, so a slow loop never lets finished tasks pile up and
        a generator of a million tasks streams in constant memory. Tasks that never started are
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
            _check_seconds("timeout", timeout)
        if isinstance(self.backend, DrivesItsOwnRun):
            return self.backend.stream_pool(self, timeout)
        return self._stream(timeout)

    async def run_async(self, timeout: float | None = None) -> None:
        """run(), for code already running an event loop: `await pool.run_async()`. Only for a
        backend that runs on an event loop (backend="asyncio")."""
        await _on_a_loop(self.backend, "run_async()").run_pool_async(self, timeout)

    def stream_async(self, timeout: float | None = None) -> AsyncGenerator[Task[Result], None]:
        """stream(), for code already running an event loop: `async for task in
        pool.stream_async()`. Only for a backend that runs on an event loop (backend="asyncio")."""
        if timeout is not None:
            _check_seconds("timeout", timeout)
        return _on_a_loop(self.backend, "stream_async()").stream_pool_async(self, timeout)

    def _stream(self, timeout: float | None) -> Generator[Task[Result], None, None]:
        workers = self._begin(streaming=True, timeout=timeout)
        threads = workers.threads()
        started = 0
        try:
            for thread in threads:
                thread.start()
                started += 1
            while (task := workers.next_finished(started)) is not None:
                yield task
        except BaseException as raised:
            # As in run(). GeneratorExit is the loop ending early (break, or an exception in its
            # body, which closes this generator as it unwinds): the pool is cancelled, and the
            # wait below keeps any thread from outliving the loop.
            stop = _what_stopped(raised)
            if isinstance(stop, GeneratorExit):
                workers.stop(
                    StopReason.CANCELLED, "the loop over the pool ended early", cancel=True
                )
            else:
                workers.stop(StopReason.INTERRUPTED, f"interrupted by {stop!r}", cancel=True)
            workers.wait_until_none_running()
            workers.join_ended()
            if isinstance(stop, RuntimeError) and started < len(threads):
                raise RuntimeError(
                    f"could start only {started} of {len(threads)} worker threads: {stop}"
                ) from stop
            if stop is raised:
                raise
            raise stop from None
        workers.join_ended()
        workers.finish_run()
        if workers.error is not None:
            raise workers.error

    def _begin(self, *, streaming: bool, timeout: float | None) -> Workers[Result]:
        if timeout is not None:
            _check_seconds("timeout", timeout)
        with self._start_once:
            if self._started:
                raise RuntimeError("this Pool has already run; make a new one to run again")
            self._started = True
        self._workers.begin_run(streaming, timeout)
        return self._workers


class Workers(Generic[Result]):
    """Which workers are running and which have ended, what they take next, and why the pool
    stopped: the scheduling rules, in one place. Main (or the loop over the pool) waits here.

    Why main never waits in Thread.join() while a worker runs: on CPython 3.11 and 3.12, a join()
    interrupted by Ctrl-C marks a thread that is still running as stopped (the except clause of
    Thread._wait_for_tstate_lock releases the running thread's lock and calls _stop()). The
    interpreter then exits without waiting for it, and the task it runs is killed mid-run. So main
    sleeps until the workers say they have ended (_sleep_until, which does not use
    Condition.wait() either: Ctrl-C can break that too), and joins a thread only once it has said
    it ended (it then has no task left to lose).

    Why the lock is re-entrant: cancel() may be called from a signal handler, and CPython runs a
    handler in the main thread between two bytecodes, possibly while main holds this lock. With a
    plain Lock the handler would wait forever for its own thread; an RLock lets it in. What the
    handler does there is safe at any point main could be: it only sets the stop (first one wins),
    releases the locks that sleepers wait on (each once, as their flags say) and notifies workers
    waiting for room (Condition.notify tolerates a notify interrupted by a handler that notifies
    too: CPython gh-92530, whose fix 3.11.7 and 3.13 have).
    """

    # Read by the deadlock watchdog (deadlock_watch): main wakes in _sleep_until only to let a
    # Ctrl-C in, so it sleeps for good while _looked_at == _changes (tests/test_watchdog_pools.py).
    __deadlock_watch__: ClassVar[dict[str, str]] = {
        "kind": "pool",
        "polls": "_sleep_until",
        "changes": "_changes",
        "looked_at": "_looked_at",
    }

    def __init__(
        self,
        tasks: list[Task[Result]],
        source: Iterator[Task[Result]] | None,
        backend: Backend,
        mark: object,
        concurrency: int,
        max_errors: int | None,
        overdue_grace: float,
    ) -> None:
        # The pool's, not the pool itself (see Pool.__init__): pool.tasks, its backend, its mark.
        self._tasks = tasks
        self.backend = backend
        self._mark = mark
        # Guards every field below unless it says otherwise.
        self._lock = threading.RLock()
        # Workers waiting for the consumer to make room (iteration only) sleep here. Only workers
        # wait on a Condition: see _sleep_until for why main does not.
        self._room_freed = threading.Condition(self._lock)
        # Main (or the consumer) sleeps by acquiring this lock; whoever changes what it waits for
        # releases it (_wake_main) while _main_waiting says it sleeps.
        self._wakeup = threading.Lock()
        self._wakeup.acquire()
        self._main_waiting = False
        # One more at each _wake_main(); the count main saw when it last found nothing to do.
        self._changes = 0
        self._looked_at: int | None = None
        # Tasks in Token.sleep(): each sleeps on a lock of its own, which a cancel releases.
        self._sleepers: set[threading.Lock] = set()
        # Workers that have begun and not yet ended.
        self._running = 0
        self._ended: list[threading.Thread] = []
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
        # Why the pool stopped early, and the error run() must raise (a panic or a bad source).
        self.stopped: Stopped | None = None
        self.error: BaseException | None = None
        # Running tasks have been told to stop (cancel, Ctrl-C, the run's deadline); read without
        # the lock by checkpoints, written once under it.
        self.cancelled = False
        # The run has ended normally: cancel() has nothing left to stop.
        self._over = False
        # Iteration only: finished tasks not yet handed to the consumer, and how many more tasks
        # may be taken before it takes one (taken and not yet handed <= concurrency).
        self._streaming = False
        self._done: deque[Task[Result]] = deque()
        self._room = concurrency
        self._waiting_for_room = 0
        # Deadlines. The run's, on the time.monotonic() clock; each worker's current task (a slot
        # per worker, written by that worker without the lock); the tasks reported overdue.
        self.run_deadline: float | None = None
        self.run_timeout: float | None = None
        self._watching_deadlines = False
        # (As many slots as workers: a list never has more workers than tasks.)
        slots = concurrency if source is not None else min(concurrency, len(tasks))
        self.current: list[Task[Result] | None] = [None] * slots
        # Per worker: inside the tasks iterable's next(), or waiting for its turn there (a slot
        # per worker, written by that worker without the lock). Such a worker runs no task, and
        # once the pool has stopped it will start none: see _only_the_source_is_left.
        self._at_source: list[bool] = [False] * slots
        # When the waiting thread first saw only workers at the source left (see there).
        self._only_the_source_since: float | None = None
        self.overdue: list[Task[Result]] = []
        self._overdue_grace = overdue_grace
        # Called (lock held) by every stop() with its reason and `cancel`, for a backend whose run
        # waits elsewhere than on _wakeup (asyncio: its loop). It may do no more than stop() may.
        self.on_stop: Callable[[StopReason, bool], None] | None = None

    # --- The run: set up by Pool, then the threads. ---

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

    def threads(self) -> list[WorkerThread]:
        """One per worker: as many as tasks for a list (at most concurrency), else concurrency."""
        count = self.concurrency
        if self._sequence is not None:
            count = min(count, len(self._sequence))
        return [WorkerThread(self, number) for number in range(count)]

    def finish_run(self) -> None:
        with self._lock:
            self._over = True

    # --- What workers call. ---

    def begin(self) -> None:
        """A worker, before it takes its first task."""
        with self._lock:
            self._running += 1

    def end(self, number: int) -> None:
        """A worker, after its last task, as the last thing it does."""
        with self._lock:
            self._running -= 1
            self.current[number] = None
            self._at_source[number] = False
            self._ended.append(threading.current_thread())
            self._wake_main()

    def take(self, number: int) -> Iterator[Task[Result]]:
        """Worker `number`'s tasks: each time it is free, the next task to run, until there is
        none or the pool has stopped. Go: `for task := range tasksChan`.

        A generator, so that the worker's loop resumes it instead of calling a function (the
        cheapest hand-off per task), with what it reads kept in local variables. In iteration,
        the task the worker ran last (current[number]) goes to the consumer before the next take.
        """
        pending, failures, max_errors, current, at_source = (
            self._pending,
            self.failures,
            self.max_errors,
            self.current,
            self._at_source,
        )
        while True:
            if pending is not None:
                # A list, in run(): stage 3's hand-off (see begin_run). An empty deque means
                # every task has been handed out, or the pool stopped and emptied it.
                try:
                    task = pending.popleft()
                except IndexError:
                    return
            else:
                if self._streaming and not self._hand_over(current[number]):
                    return
                at_source[number] = True
                taken = self._take_from_source()
                # Cleared before the check below, never after: the waiting thread, once the pool
                # has stopped, may leave without this worker while the flag is set, so the worker
                # must then see that stop before it starts a task.
                at_source[number] = False
                if taken is None:
                    return
                task = taken
            # The last check before the task starts, after the take, which may have taken long (a
            # generator's own code). It reads the failures the other workers appended without the
            # lock, so a failure that has landed stops this task; one that lands after this line
            # cannot, and each other worker has at most one task here: hence at most
            # concurrency - 1 tasks starting after the failure that reached max_errors. A task
            # taken but not started stays `finished == False` (in pool.tasks for run(); a
            # consumer never sees it).
            if self.stopped is not None or len(failures) >= max_errors:
                return
            if self.run_deadline is not None and self._run_deadline_passed():
                # The waiting thread may not have woken for it yet: no task starts after it.
                return
            current[number] = task
            if task.timeout is not None:
                self._start_clock(task)
            yield task

    def _hand_over(self, finished: Task[Result] | None) -> bool:
        """Iteration: pass `finished` to the consumer, then wait for room to take another (there is
        room again once the consumer takes a finished task). False if the pool stopped."""
        with self._lock:
            if finished is not None:
                self._done.append(finished)
                self._wake_main()
            # The consumer cannot be waiting for us here: room is 0 only while `concurrency` tasks
            # are taken and not handed, and this worker runs none, so at least one is in _done.
            while self._room == 0 and self.stopped is None:
                self._waiting_for_room += 1
                try:
                    self._room_freed.wait()
                finally:
                    self._waiting_for_room -= 1
            if self.stopped is not None:
                return False
            self._room -= 1
            return True

    def _take_from_source(self) -> Task[Result] | None:
        """The next task from the iterable, checked and claimed; None once it is exhausted, or
        after it failed (which stops the pool with its error)."""
        if self.stopped is not None:
            # Not even in line for the lock: a worker stuck in next() may hold it for good.
            return None
        with self._taking:
            if self.stopped is not None or self._source is None:
                return None
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
            if not isinstance(task, Task):
                not_a_task = TypeError(
                    f"the tasks iterable gave a {type(task).__name__}, not a Task, as item {number}"
                )
                self._source = None
                self._stop_for_source(not_a_task, str(not_a_task))
                return None
            if self._sequence is None:
                # A task from a generator is claimed as it is taken: a task runs at most once.
                try:
                    _claim([task], self._mark, numbered_from=number)
                except ValueError as given_twice:
                    self._source = None
                    self._stop_for_source(given_twice, str(given_twice))
                    return None
            if self._keep is not None:
                self._keep.append(task)
            return task

    def _stop_for_source(self, error: BaseException, message: str) -> None:
        self.stop(StopReason.BAD_SOURCE, message, error=error)

    def _start_clock(self, task: Task[Result]) -> None:
        """A task with a timeout is starting: its deadline runs from now, and the waiting thread
        must wake for it."""
        with self._lock:
            task.deadline = time.monotonic() + (task.timeout or 0.0)
            self._watching_deadlines = True
            self._wake_main()

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
                self._done.append(task)

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
        handler may call it between any two bytecodes of main (see the class docstring).
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
            if cancel and not self.cancelled:
                self.cancelled = True
                for sleeper in self._sleepers:
                    sleeper.release()
            self._room_freed.notify_all()
            self._wake_main()
            if self.on_stop is not None:
                self.on_stop(reason, cancel)

    def _wake_main(self) -> None:
        """Lock held: wake main (or the consumer) if it sleeps, to look again at what it waits
        for. Released once per sleep: the flag is cleared with the release."""
        self._changes += 1
        if self._main_waiting:
            self._main_waiting = False
            self._wakeup.release()

    # --- What the waiting thread (main in run(), the consumer in iteration) calls. ---

    def wait_until_ended(self, count: int) -> None:
        """Main: wait until `count` workers have ended (or only the source holds them)."""
        self._sleep_until(lambda: len(self._ended) >= count or self._only_the_source_is_left())

    def wait_until_none_running(self) -> None:
        """Main: wait until every worker that has begun has ended (or only the source holds
        them).

        A worker that has been started but not yet begun is not waited for: main calls this only
        once the pool has stopped, so such a worker will take no task and end by itself.
        """
        self._sleep_until(lambda: self._running == 0 or self._only_the_source_is_left())

    def _only_the_source_is_left(self) -> bool:
        """The waiting thread, lock held: the pool has stopped, and every worker still running is
        at the source (in the tasks iterable's next(), or in line for it), and has been for a
        check interval. Such a worker runs no task and will start none; it may take as long as
        the iterable's own code likes (a generator blocked on a socket: for ever), and the caller,
        a Ctrl-C's included, must not wait for that. It is left to come back by itself, see the
        stop and end; its thread is a daemon (see WorkerThread). The interval lets a quick
        next() come back first, so that, as a rule, no thread outlives the run.
        """
        if self.stopped is None or self._running != sum(self._at_source):
            self._only_the_source_since = None
            return False
        now = time.monotonic()
        if self._only_the_source_since is None:
            self._only_the_source_since = now
        return now - self._only_the_source_since >= SIGNAL_CHECK_SECONDS

    def next_finished(self, started: int) -> Task[Result] | None:
        """The consumer: the next finished task, waiting for one if need be; None once all
        `started` workers have ended and every finished task has been handed over."""
        while True:
            with self._lock:
                if self._done:
                    task = self._done.popleft()
                    self._room += 1
                    if self._waiting_for_room:
                        self._room_freed.notify()
                    return task
                if len(self._ended) >= started or self._only_the_source_is_left():
                    return None
            self._sleep_until(
                lambda: (
                    bool(self._done)
                    or len(self._ended) >= started
                    or self._only_the_source_is_left()
                )
            )

    def join_ended(self) -> None:
        """Main: join the workers that have ended, so that none outlives run()."""
        with self._lock:
            ended = list(self._ended)
        for thread in ended:
            thread.join()

    def _sleep_until(self, ready: Callable[[], bool]) -> None:
        """Main (or the consumer): sleep until ready() holds, waking at the next deadline to
        watch and acting on the deadlines that have passed. A task that never checks is not
        waited for silently: this thread is awake at its deadline (plus the grace) to report it.

        Why not Condition.wait(): Ctrl-C can land inside it just after it has released the lock
        and before the try block that takes the lock back (Lib/threading.py), and the caller's
        `with` then releases a lock it no longer holds: RuntimeError instead of
        KeyboardInterrupt (seen here under load). So main never gives the lock up inside a call:
        it leaves its `with` block, then blocks in Lock.acquire(), which Ctrl-C interrupts
        cleanly and which _wake_main (a worker, or cancel() in a signal handler) ends; and for at
        most SIGNAL_CHECK_SECONDS, in case the Ctrl-C went to a worker thread.
        """
        while True:
            with self._lock:
                seen = self._changes  # read before ready(): never newer than what it tested
                if self._watching_deadlines:
                    self._check_deadlines()
                if ready():
                    return
                timeout = self._seconds_to_next_deadline()
                self._looked_at = seen if timeout == math.inf else None  # a deadline wakes it
                # A release left over from an earlier sleep (woken as it timed out) must not end
                # this one at once: take it back first. Non-blocking, so never interrupted.
                self._wakeup.acquire(blocking=False)
                self._main_waiting = True
            try:
                self._wakeup.acquire(timeout=min(timeout, SIGNAL_CHECK_SECONDS))
            finally:
                self._main_waiting = False

    def _seconds_to_next_deadline(self) -> float:
        wake = math.inf
        if self._only_the_source_since is not None:
            # Only workers at the source are left: they are let go when the interval is over.
            wake = self._only_the_source_since + SIGNAL_CHECK_SECONDS
        if self._watching_deadlines:
            if self.run_deadline is not None and not self.cancelled:
                wake = min(wake, self.run_deadline)
            for task in self.current:
                deadline = self._deadline_of(task)
                if deadline is not None and task is not None and task not in self.overdue:
                    wake = min(wake, deadline + self._overdue_grace)
        if wake == math.inf:
            return math.inf
        return max(wake - time.monotonic(), 0.0)

    def _deadline_of(self, task: Task[Result] | None) -> float | None:
        """When a running task must be done by: its own deadline or the run's, the earlier."""
        if task is None or task.finished:
            return None
        if task.deadline is None:
            return self.run_deadline
        if self.run_deadline is None:
            return task.deadline
        return min(task.deadline, self.run_deadline)

    def _run_deadline_passed(self) -> bool:
        """Stop the pool (and tell its tasks) if the run's deadline has passed; say if it has."""
        if self.run_deadline is None or time.monotonic() < self.run_deadline:
            return False
        if not self.cancelled:
            self.stop(
                StopReason.TIMEOUT, f"the run's timeout of {self.run_timeout} s passed", cancel=True
            )
        return True

    def _check_deadlines(self) -> None:
        self._run_deadline_passed()
        now = time.monotonic()
        for task in self.current:
            deadline = self._deadline_of(task)
            if deadline is None or task is None or task in self.overdue:
                continue
            if now >= deadline + self._overdue_grace:
                # Recorded before the warning, which may raise (-W error): reported once.
                self.overdue.append(task)
                late = now - deadline
                warnings.warn(
                    OverdueWarning(
                        f"task {task._name()} is still running {late:.2f} s past its deadline; "
                        "a thread cannot be stopped from outside, so the pool waits for it (call "
                        "beyond.checkpoint() in the task to let it stop)"
                    ),
                    stacklevel=2,
                )


class Token:
    """What a running task may know about its stop: hand it to code that runs elsewhere.

    `current_token()` gives the running task's token; outside a pool, a token that is never
    cancelled and has no deadline, so code that takes a token runs the same outside a pool.
    """

    __slots__ = ("_task", "_workers")

    def __init__(self, workers: Workers[Any] | None, task: Task[Any] | None) -> None:
        self._workers = workers
        self._task = task

    @property
    def cancelled(self) -> bool:
        """True once the pool has been cancelled (cancel(), Ctrl-C, its timeout, a loop left)."""
        return self._workers is not None and self._workers.cancelled

    @property
    def deadline(self) -> float | None:
        """When the task must be done by (time.monotonic() clock): its own or the run's, the
        earlier; None if neither is set."""
        if self._workers is None or self._task is None:
            return None
        if self._task.deadline is None:
            return self._workers.run_deadline
        if self._workers.run_deadline is None:
            return self._task.deadline
        return min(self._task.deadline, self._workers.run_deadline)

    def check(self) -> None:
        """Raise TimeoutError past the deadline, else Cancelled once cancelled; else nothing."""
        deadline = self.deadline
        if deadline is not None and time.monotonic() >= deadline:
            assert self._task is not None and self._workers is not None
            if deadline == self._task.deadline:
                raise TimeoutError(f"the task's timeout of {self._task.timeout} s passed")
            raise TimeoutError(f"the run's timeout of {self._workers.run_timeout} s passed")
        if self.cancelled:
            raise Cancelled("the pool was cancelled")

    def sleep(self, seconds: float) -> None:
        """time.sleep(seconds), but raising at once on a cancel or at the deadline (check())."""
        _check_seconds("seconds", seconds)
        workers = self._workers
        if workers is None:
            time.sleep(seconds)
            return
        end = time.monotonic() + seconds
        # A lock of its own, released by a cancel: a plain Lock.acquire() can be interrupted
        # anywhere without harm (see Workers._sleep_until), should this run in the main thread.
        woken = threading.Lock()
        woken.acquire()
        with workers._lock:
            workers._sleepers.add(woken)
        try:
            while True:
                self.check()
                now = time.monotonic()
                if now >= end:
                    return
                wake = end if self.deadline is None else min(end, self.deadline)
                woken.acquire(timeout=max(wake - now, 0.0))
        finally:
            with workers._lock:
                workers._sleepers.discard(woken)


def current_token() -> Token:
    """The token of the task running in this thread, or a token that never stops outside a pool."""
    here = getattr(_here, "runner", None)
    if here is None or here.task is None:
        return Token(None, None)
    return Token(here.workers, here.task)


def checkpoint() -> None:
    """Where a task may stop: raises Cancelled once its pool is cancelled, or TimeoutError once its
    deadline (or the run's) has passed. Does nothing outside a pool. Cheap: call it often."""
    here = getattr(_here, "runner", None)
    if here is not None and here.task is not None:
        Token(here.workers, here.task).check()


class InThisThread:
    """How a worker runs a task: here, in its own thread. The seam for other backends.

    A worker makes one runner when it begins, calls run() once per task and close() when it ends.
    run() must run the task once, through Task.run, and return what Task.run returned. Another
    backend replaces only this class: a process backend would start a child process in __init__,
    and in run() call `task.run(call)` with a `call` that sends task.fn to the child and waits for
    its outcome until the task's deadline (killing and replacing the child past it), then stop the
    child in close(); a Dask backend's `call` would submit fn to its client and wait for the
    future. What to take next, max_errors, cancel, deadlines, streaming and the stop reason stay
    in Workers and _work.
    """

    __slots__ = ("number", "workers")

    def __init__(self, workers: Workers[Any], number: int) -> None:
        self.workers = workers
        self.number = number
        _here.runner = self

    # Here, running a task is Task.run itself: no call of our own in between, which the thread
    # backend would pay for on every task.
    run = staticmethod(Task.run)

    @property
    def task(self) -> Task[Any] | None:
        """The task this thread runs now: what checkpoint() and current_token() look at."""
        return self.workers.current[self.number]

    def close(self) -> None:
        _here.runner = None


class Runner(Protocol):
    """What a backend gives each worker thread: InThisThread's three members."""

    @property
    def task(self) -> Task[Any] | None: ...

    def run(self, task: Task[Any]) -> bool: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """Where a Pool's tasks run. A backend whose tasks run from worker threads (threads,
    processes, a Dask cluster) gives each worker a Runner; see beyond/backends.py."""

    name: str

    def runner(self, workers: Workers[Any], number: int) -> Runner: ...


@runtime_checkable
class DrivesItsOwnRun(Protocol):
    """A backend that runs the whole pool itself instead of giving worker threads a Runner
    (asyncio: worker coroutines on an event loop). Pool.run(), stream(), run_async() and
    stream_async() hand it the pool; it keeps the rules above with the pool's own Workers."""

    def run_pool(self, pool: Pool[Any], timeout: float | None) -> None: ...

    def stream_pool(
        self, pool: Pool[Result], timeout: float | None
    ) -> Generator[Task[Result], None, None]: ...

    async def run_pool_async(self, pool: Pool[Any], timeout: float | None) -> None: ...

    def stream_pool_async(
        self, pool: Pool[Result], timeout: float | None
    ) -> AsyncGenerator[Task[Result], None]: ...


def _on_a_loop(backend: Backend, what: str) -> DrivesItsOwnRun:
    if not isinstance(backend, DrivesItsOwnRun):
        raise TypeError(
            f"{what} needs a backend that runs on an event loop (backend='asyncio'); this pool's "
            f"backend is {backend.name!r}: use run() or `for task in pool`"
        )
    return backend


class Threads:
    """The default backend: each worker runs its tasks in its own thread (InThisThread)."""

    name = "threads"

    def runner(self, workers: Workers[Any], number: int) -> Runner:
        return InThisThread(workers, number)


THREADS = Threads()


def backend_for(backend: object) -> Backend:
    """The Backend that `Pool(backend=...)` names. The others live in beyond/backends.py, which is
    imported only when one of them is asked for."""
    if backend == "threads":
        return THREADS
    from beyond.backends import backend_for as other_backend

    return other_backend(backend)


class WorkerThread(threading.Thread):
    """A worker's thread: a daemon, which the interpreter's exit waits for as for the thread that
    started the run (stage 3's workers inherit that thread's daemon flag), but not while it is at
    the source of a stopped pool (see _wait_for_workers_at_exit).

    Not simply a non-daemon thread, as in stage 3: the interpreter waits for those at exit
    whatever they do, and a worker inside the tasks iterable's next() may never come back (a
    generator blocked on a queue or a socket): the process could then never end, even after a
    second Ctrl-C. A task that has started still finishes before the interpreter exits.
    """

    def __init__(self, workers: Workers[Any], number: int) -> None:
        super().__init__(
            target=_work, args=(workers, number), name=f"worker-{number + 1}", daemon=True
        )
        self.number = number
        # A run started by a daemon thread is not waited for, as a daemon thread is not.
        self.waited_for_at_exit = not threading.current_thread().daemon
        # Weak: a thread's Workers would make a reference cycle (Workers keeps the threads that
        # ended), and the run's tasks would wait for the cyclic garbage collector to be freed.
        # While the thread runs, its target's arguments hold the Workers alive.
        self._workers = weakref.ref(workers)

    def wait_at_exit(self) -> bool:
        """Join this thread unless it is at the source of a stopped pool; say if it waited."""
        workers = self._workers()
        if workers is None or not self.waited_for_at_exit or not self.is_alive():
            return False
        if workers.stopped is not None and workers._at_source[self.number]:
            # It runs no task and will start none, and may never come back.
            return False
        self.join()
        return True


def _wait_for_workers_at_exit() -> None:
    """At interpreter exit: wait for the worker threads as for non-daemon threads, except those
    at the source of a stopped pool (see WorkerThread.wait_at_exit). Again until a round waits
    for none, in case a pool started more workers meanwhile. A Ctrl-C here (the third) ends the
    wait, and the process exits without the tasks still running."""
    while sum(
        thread.wait_at_exit()
        for thread in threading.enumerate()
        if isinstance(thread, WorkerThread)
    ):
        pass


# threading's own hook, run at interpreter exit before it joins the non-daemon threads
# (Lib/threading.py, _shutdown): concurrent.futures.thread registers its exit there too. Private,
# hence atexit as the fallback, which runs later, daemon threads still running.
getattr(threading, "_register_atexit", atexit.register)(_wait_for_workers_at_exit)


def _work(workers: Workers[Result], number: int) -> None:
    """One worker: run tasks until there is none to take. Go: `for task := range tasksChan`."""
    workers.begin()
    runner = workers.backend.runner(workers, number)
    # Looked up once: this loop runs once per task.
    run, failures = runner.run, workers.failures
    try:
        for task in workers.take(number):
            try:
                failed = run(task)
            except BaseException as panic:
                # Only a panic gets here (Task.run keeps every Exception). Stop the pool so that
                # no worker starts another task; the others finish what they hold.
                workers.panicked(panic, task)
                return
            if failed:
                # Recorded first, with one atomic append, before any call that could let another
                # thread run: CPython switches threads only at its eval breaker (a function's
                # start, a loop's jump back, the return of a call into C), and there is none
                # between fn's exception reaching Task.run and this append. So no other worker can
                # start a task between this failure and its record (see take()).
                failures.append(None)
                if len(failures) >= workers.max_errors:
                    workers.reached_max_errors()
    finally:
        runner.close()
        workers.end(number)


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


def _check_seconds(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def _claim(tasks: list[Task[Result]], mark: object, numbered_from: int = 0) -> None:
    """Make the pool with this mark the owner of every task, or of none: a task runs once.
    `numbered_from`: the first task's place in the pool's input, for the message."""
    with _claiming:
        for claimed, task in enumerate(tasks):
            if task._owner is not None:
                where = "twice in this Pool" if task._owner is mark else "to another Pool already"
                # Undo this pool's claims so far: the Pool is refused as a whole.
                for earlier in tasks[:claimed]:
                    earlier._owner = None
                raise ValueError(
                    f"task {numbered_from + claimed} ({task!r}) was given {where}; a Task runs at "
                    "most once, so make a new Task for each run"
                )
            task._owner = mark
