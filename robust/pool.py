"""Stage 3, robust: a pool of tasks that each keep their own error.

What it shows: the post's answer to stage 2. A Task wraps a call; the pool runs every task with at
most `concurrency` running at once; whatever a task returns or raises is stored *on the task*. After
`run()` the caller walks the tasks and decides what the errors mean (the demo gives up after ten).

What it builds on and changes: stage 2's workers put errors on a queue that main only read at the
end, and a full queue deadlocked them. Here no queue carries results or errors at all: a worker
writes to the task it holds, which can never block, so no number of failures can stop a worker.
The jobs queue is gone too: the tasks are all known before the run, so the workers take them
straight from a shared deque, and a worker that finds it empty is done.

What it fixes: the deadlock and the dropped errors. Every failing task holds its own exception,
traceback included. The pool itself never waits on a queue: between two tasks a worker only pops
from a deque, which never blocks, so a worker blocks only where a task it runs blocks. A task that
hangs holds its worker (Python cannot stop a thread), but no number of failures can hold one.

Sample run (`python -m robust`):

    worker 1 processing job 1
    worker 2 processing job 2
    worker 3 processing job 3
    ...
    error: error on job 1
    error: error on job 3
    ...
    finished: 4 results, 5 errors
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

Result = TypeVar("Result")

# Guards Task._owner while a Pool claims its tasks, so that two pools built at the same moment from
# the same task cannot both claim it. Held once per Pool, never while a task runs.
_claiming = threading.Lock()

# The longest main sleeps before it looks again. A Ctrl-C normally wakes it at once, but the
# kernel may hand the process's SIGINT to any thread that does not block it (seen here: about one
# Ctrl-C in eight under load went to another thread), and CPython then only sets a flag that main
# acts on when it next runs bytecode. Main asleep for good would never notice the Ctrl-C.
SIGNAL_CHECK_SECONDS = 0.05


class Task(Generic[Result]):
    """One call to make. After the pool has run it, `err` or `result` says how it went.

    A task runs at most once: it belongs to the first Pool it is given to, and a second Pool (or the
    same task listed twice in one Pool) is refused before any task runs. Exactly one of `err` and
    `result` is set once it has run: `err` if fn raised, else `result` (which may be None).
    """

    # Slots: the pool touches these once per task, and slot access is the cheapest there is.
    __slots__ = ("_owner", "err", "finished", "fn", "result")

    def __init__(self, fn: Callable[[], Result]) -> None:
        if not callable(fn):
            raise TypeError(f"Task needs a callable with no arguments, got {type(fn).__name__}")
        self.fn = fn
        # What fn raised (traceback included), or None. Go: `Err error`.
        self.err: BaseException | None = None
        # What fn returned; meaningful only when err is None.
        self.result: Result | None = None
        # False for a task that never ran (the run was stopped before its turn).
        self.finished = False
        # The mark of the Pool that holds this task, once one does (see Pool.__init__).
        self._owner: object | None = None

    def run(self) -> None:
        """Call fn once and keep its outcome. The pool's workers call this; a task runs once."""
        if self.finished:
            raise RuntimeError(f"{self!r} has already run; a task runs at most once")
        try:
            self.result = self.fn()
        except Exception as error:
            # Go: `t.Err = t.f()`. The error stays with its task, where it cannot block anyone.
            self.err = error
        except BaseException as panic:
            # KeyboardInterrupt, SystemExit...: Go's panic. Record it, and let the worker stop
            # the pool (see Pool.run).
            self.err = panic
            raise
        finally:
            self.finished = True

    def __repr__(self) -> str:
        # Never raises, whatever fn and err are: a repr is what a failing program prints.
        try:
            name = repr(getattr(self.fn, "__qualname__", None) or type(self.fn).__name__)
        except Exception:
            name = "?"
        if not self.finished:
            state = "not run"
        elif self.err is None:
            state = "ok"
        else:
            # `is None`, not truthiness: an exception may define __bool__, and it still failed.
            try:
                state = f"failed: {self.err!r}"
            except Exception:
                state = f"failed: {type(self.err).__name__}"
        return f"<Task {name} {state}>"


class Pool(Generic[Result]):
    """Runs tasks with at most `concurrency` of them at once. Go: `NewPool(tasks, concurrency)`."""

    def __init__(self, tasks: Iterable[Task[Result]], concurrency: int) -> None:
        # Refuse bad input now, before any task runs. bool is an int to Python, but never meant.
        if not isinstance(concurrency, int) or isinstance(concurrency, bool):
            raise TypeError(f"concurrency must be an int, got {type(concurrency).__name__}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.tasks = list(tasks)
        for task in self.tasks:
            if not isinstance(task, Task):
                raise TypeError(f"Pool takes Task objects, got {type(task).__name__}")
        # What a task of this pool holds to say so. Not the Pool: a task that held its pool, in
        # a pool that holds its tasks, would make a reference cycle, and a finished run's tasks
        # would then wait for the cyclic garbage collector, which costs about as much per task as
        # the rest of the pool together when it comes. Without a cycle they are freed at once.
        self._mark = object()
        _claim(self.tasks, self._mark)
        self.concurrency = concurrency
        self._started = False
        self._start_once = threading.Lock()

    def run(self) -> None:
        """Run every task; return when all have finished. Never raises for a task's Exception.

        Panics: if a task raises a BaseException that is not an Exception (KeyboardInterrupt,
        SystemExit, ...), no further task starts, the tasks already running finish, and then run()
        re-raises it (the first one, if several). Ctrl-C while run() waits does the same: no task
        starts after it, every task already running finishes, then run() re-raises the
        KeyboardInterrupt. A second Ctrl-C during that wait stops the waiting: run() re-raises at
        once, no new task starts either, and the running tasks still finish before the interpreter
        exits (their threads are not daemons). Tasks that never started keep `finished == False`.

        If the system cannot start another thread, run() stops the workers it did start (after
        their current task) and raises RuntimeError saying how many it could start.
        """
        with self._start_once:
            if self._started:
                raise RuntimeError("this Pool has already run; make a new one to run again")
            self._started = True

        # The hand-off. Go sends each task down an unbuffered channel that the workers range over.
        # Here every task is known up front, so no sender is needed: they wait in a deque that the
        # workers pop from. popleft() is atomic (deques are documented thread-safe for appends and
        # pops at either end), so each task goes to exactly one worker, and it never blocks: a
        # worker that finds the deque empty knows every task has been handed out and ends, just as
        # `range` ends on a closed channel. No worker can wait for a task that will never come.
        pending: deque[Task[Result]] = deque(self.tasks)
        panics: list[BaseException] = []
        workers = Workers()
        threads = [
            threading.Thread(target=_work, args=(pending, panics, workers), name=f"worker-{number}")
            for number in range(1, min(self.concurrency, len(self.tasks)) + 1)
        ]
        started = 0
        try:
            for thread in threads:
                thread.start()
                started += 1
            # Go: `p.wg.Wait()`. Each worker ends once the deque is empty and its last task has
            # returned.
            workers.wait_until_ended(started)
        except BaseException as raised:
            # Ctrl-C (KeyboardInterrupt) lands in the main thread, here, or a thread could not be
            # started. Start no more tasks, let the running ones finish (a thread cannot be stopped
            # from outside), then pass the exception on. Every worker that took a task had begun
            # before it took it, and the deque is empty from here on, so waiting for the workers
            # that have begun is waiting for every task that started.
            pending.clear()
            workers.wait_until_none_running()
            workers.join_ended()
            stop = _ctrl_c_behind(raised)
            if stop is not raised:
                raise stop from None
            if isinstance(stop, RuntimeError) and started < len(threads):
                raise RuntimeError(
                    f"could start only {started} of {len(threads)} worker threads: {stop}"
                ) from stop
            raise
        workers.join_ended()
        if panics:
            raise panics[0]


class Workers:
    """Which workers are running and which have ended; main waits here (Go: the pool's WaitGroup).

    Why main never waits in Thread.join() while a worker runs: on CPython 3.11 and 3.12, a join()
    interrupted by Ctrl-C marks a thread that is still running as stopped (the except clause of
    Thread._wait_for_tstate_lock releases the running thread's lock and calls _stop()). The
    interpreter then exits without waiting for it, and the task it runs is killed mid-run.

    Why not Condition.wait() either: it releases its lock (`_release_save()`) a step before its
    `try` begins, and CPython runs a signal handler after any call returns, so a Ctrl-C landing
    there leaves the lock released with no `finally` to take it back; the `with` around the wait
    then fails to release it, and a RuntimeError replaces the KeyboardInterrupt. So main sleeps in
    SimpleQueue.get(), one call in C with no such step: a Ctrl-C either ends the get() or comes
    just after it, and either way main still knows where it is. It sleeps there for at most
    SIGNAL_CHECK_SECONDS at a time, in case the Ctrl-C went to another thread. Each worker that
    ends puts a token after updating the counts, and main reads the counts before each get(), so
    a wake-up is never lost, and a token lost to a Ctrl-C costs nothing. Main joins a thread only
    once it has said it ended (it then has no task left to lose).
    """

    def __init__(self) -> None:
        # Guards the two fields below.
        self._lock = threading.Lock()
        # Workers that have begun and not yet ended.
        self._running = 0
        self._ended: list[threading.Thread] = []
        # One token per worker that has ended; main sleeps on it.
        self._wakeups: queue.SimpleQueue[None] = queue.SimpleQueue()

    def begin(self) -> None:
        """A worker, before it takes its first task."""
        with self._lock:
            self._running += 1

    def end(self) -> None:
        """A worker, after its last task, as the last thing it does."""
        with self._lock:
            self._running -= 1
            self._ended.append(threading.current_thread())
        self._wakeups.put(None)

    def wait_until_ended(self, count: int) -> None:
        """Main: wait until `count` workers have ended."""
        wakeups = self._wakeups
        while True:
            with self._lock:
                if len(self._ended) >= count:
                    return
            _sleep_on(wakeups)

    def wait_until_none_running(self) -> None:
        """Main: wait until every worker that has begun has ended.

        A worker that has been started but not yet begun is not waited for: main calls this only
        once no task is left to take, so such a worker will take none and end by itself.
        """
        wakeups = self._wakeups
        while True:
            with self._lock:
                if not self._running:
                    return
            _sleep_on(wakeups)

    def join_ended(self) -> None:
        """Main: join the workers that have ended, so that none outlives run()."""
        with self._lock:
            ended = list(self._ended)
        for thread in ended:
            thread.join()


def _work(pending: deque[Task[Result]], panics: list[BaseException], workers: Workers) -> None:
    """One worker: run tasks from `pending` until it is empty. Go: `for task := range tasksChan`."""
    workers.begin()
    try:
        while True:
            try:
                task = pending.popleft()
            except IndexError:
                return
            try:
                task.run()
            except BaseException as panic:
                # Only a panic gets here (Task.run keeps every Exception). Empty the deque so that
                # no worker starts another task; the others finish what they hold and find it
                # empty.
                pending.clear()
                panics.append(panic)
                return
    finally:
        workers.end()


def _sleep_on(wakeups: queue.SimpleQueue[None]) -> None:
    """Main: sleep until a worker ends, or SIGNAL_CHECK_SECONDS have passed."""
    try:
        wakeups.get(timeout=SIGNAL_CHECK_SECONDS)
    except queue.Empty:
        # Nothing ended. Returning runs bytecode, where a Ctrl-C another thread took is raised.
        return


def _ctrl_c_behind(error: BaseException) -> BaseException:
    """The Ctrl-C that `error` replaced, if it did; else `error` itself.

    Thread.start() waits on an Event, and CPython's Condition.wait() can lose its lock to a Ctrl-C
    that lands as it takes the lock back (in `_acquire_restore`, before the lock is acquired). The
    `with` around the wait then fails to release it, and "RuntimeError: release unlocked lock"
    replaces the KeyboardInterrupt, which is left only as its context. That is a Ctrl-C, not a
    thread the system refused.
    """
    if isinstance(error, RuntimeError):
        context = error.__context__
        while context is not None:
            if isinstance(context, KeyboardInterrupt):
                return context
            context = context.__context__
    return error


def _claim(tasks: list[Task[Result]], mark: object) -> None:
    """Make the pool with this mark the owner of every task, or of none: a task runs once."""
    with _claiming:
        for claimed, task in enumerate(tasks):
            if task._owner is not None:
                where = "twice in this Pool" if task._owner is mark else "to another Pool already"
                # Undo this pool's claims so far: the Pool is refused as a whole.
                for earlier in tasks[:claimed]:
                    earlier._owner = None
                raise ValueError(
                    f"task {claimed} ({task!r}) was given {where}; a Task runs at most once, "
                    "so make a new Task for each run"
                )
            task._owner = mark
