"""Stage 3, robust: a pool of tasks that each keep their own error.

What it shows: the post's answer to stage 2. A Task wraps a call; the pool runs every task with at
most `concurrency` running at once; whatever a task returns or raises is stored *on the task*. After
`run()` the caller walks the tasks and decides what the errors mean (the demo gives up after ten).

What it builds on and changes: stage 2's workers put errors on a queue that main only read at the
end, and a full queue deadlocked them. Here no queue carries results or errors: a worker writes
each outcome to the task it holds and takes the next task from a deque filled before the run.
Neither step can block (the two `# NEVER BLOCKS:` lines), so a worker blocks only where a task it
runs blocks. A task that hangs holds its worker (Python cannot stop a thread); failures cannot.

What it fixes: the deadlock and the dropped errors. Every failing task keeps its own exception.

Beside it: how main waits so that Ctrl-C loses no running task (ctrl_c_safe_wait.py), and what
keeps a careless caller from running a task twice (task_guards.py).

Sample run (`python -m robust`):

    worker 1 processing job 1
    ...
    error: error on job 3
    finished: 4 results, 5 errors
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from robust.ctrl_c_safe_wait import Workers, raise_what_stopped
from robust.task_guards import claim, describe

Result = TypeVar("Result")


class Task(Generic[Result]):
    """One call to make, run at most once. Once it has run, `err` is what fn raised, else None
    and `result` is what fn returned."""

    # Slots: the pool touches these once per task, and slot access is the cheapest there is.
    __slots__ = ("_owner", "err", "finished", "fn", "result")

    def __init__(self, fn: Callable[[], Result]) -> None:
        if not callable(fn):
            raise TypeError(f"Task needs a callable with no arguments, got {type(fn).__name__}")
        self.fn = fn
        self.err: BaseException | None = None  # what fn raised, traceback and all (Go: `Err error`)
        self.result: Result | None = None  # what fn returned; meaningful only when err is None
        self.finished = False  # stays False for a task whose turn never came (a stopped run)
        self._owner: object | None = None  # the mark of the Pool that holds it (task_guards.py)

    def run(self) -> None:
        """Call fn once and keep its outcome. The pool's workers call this; a task runs once."""
        if self.finished:
            raise RuntimeError(f"{self!r} has already run; a task runs at most once")
        try:
            self.result = self.fn()
        except Exception as error:
            # NEVER BLOCKS: a field of the task this worker holds, which no one waits to read.
            self.err = error  # Go: `t.Err = t.f()`
        except BaseException as panic:
            # KeyboardInterrupt, SystemExit...: Go's panic. Record it; the worker stops the pool.
            self.err = panic
            raise
        finally:
            self.finished = True

    def __repr__(self) -> str:
        return describe(self.fn, self.finished, self.err)  # never raises, whatever fn and err are


def _work(pending: deque[Task[Result]], panics: list[BaseException], workers: Workers) -> None:
    """One worker: run tasks from `pending` until it is empty. Go: `for task := range tasksChan`."""
    workers.begin()
    try:
        while True:
            try:
                # NEVER BLOCKS: popleft() never waits; an empty deque means no task is left.
                task = pending.popleft()
            except IndexError:
                return  # as `range` ends on a closed channel
            try:
                task.run()
            except BaseException as panic:
                # Only a panic gets here (Task.run keeps every Exception): stop every other worker.
                pending.clear()
                panics.append(panic)
                return
    finally:
        workers.end()


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
        # A task runs at most once: refused if another pool holds it. The tasks hold a mark, not
        # the Pool, so that no cycle keeps a finished run's tasks alive (task_guards.py).
        self._mark = object()
        claim(self.tasks, self._mark)
        self.concurrency = concurrency
        self._started = False
        self._start_once = threading.Lock()

    def run(self) -> None:
        """Run every task; return when all have finished. Never raises for a task's Exception.

        After a panic (a task's KeyboardInterrupt, SystemExit...) or a Ctrl-C no task starts; the
        running ones finish, then run() re-raises it (tests/test_robust_interrupts.py says more).
        """
        with self._start_once:
            if self._started:
                raise RuntimeError("this Pool has already run; make a new one to run again")
            self._started = True
        # Go's tasks channel, as a deque: popleft() is atomic, so each task goes to one worker only.
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
            workers.wait_until_ended(started)  # Go: `p.wg.Wait()`
        except BaseException as raised:
            # Ctrl-C, or a thread the system refused. No task starts from here on; every started
            # task has a worker that has begun, so waiting for those waits for every such task.
            pending.clear()
            stop = workers.wait_until_none_running(raised)
            workers.join_ended()
            raise_what_stopped(stop, started, len(threads))
        workers.join_ended()
        if panics:
            raise panics[0]
