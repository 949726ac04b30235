"""Stage 3, robust: a pool of tasks that each keep their own error.

What it shows: the post's answer to stage 2. A Task wraps a call; the pool runs every task with at
most `concurrency` running at once; whatever a task returns or raises is stored *on the task*. After
`run()` the caller walks the tasks and decides what the errors mean (the demo gives up after ten).

What it builds on and changes: stage 2's workers put errors on a queue that main only read at the
end, and a full queue deadlocked them. Here no queue carries results or errors at all: a worker
writes to the task it holds, which can never block, so no number of failures can stop a worker.
The jobs queue is gone too: the tasks are all known before the run, so the workers take them
straight from a shared deque, and a worker that finds it empty is done.

What it fixes: the deadlock (nothing a worker does after taking a task can block), and the dropped
errors (every failing task holds its own exception, traceback included).

Sample run (`python -m robust`):

    worker-1 processing job 1
    worker-2 processing job 2
    ...
    task 1: error: error on job 1
    task 2: result 4
    ...
    finished: 4 results, 5 errors
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

Result = TypeVar("Result")


class Task(Generic[Result]):
    """One call to make. After the pool has run it, `err` or `result` says how it went."""

    # Slots: the pool touches these once per task, and slot access is the cheapest there is.
    __slots__ = ("err", "finished", "fn", "result")

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

    def run(self) -> None:
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
        state = "not run" if not self.finished else f"err={self.err!r}" if self.err else "ok"
        return f"<Task {getattr(self.fn, '__name__', self.fn)!r} {state}>"


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
        self.concurrency = concurrency
        self._started = False
        self._start_once = threading.Lock()

    def run(self) -> None:
        """Run every task; return when all have finished. Never raises for a task's Exception.

        Panics: if a task raises a BaseException that is not an Exception (KeyboardInterrupt,
        SystemExit, ...), no further task starts, the tasks already running finish, and then run()
        re-raises it (the first one, if several). The same goes for Ctrl-C while run() waits. Tasks
        that never started keep `finished == False`.
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
        workers = [
            threading.Thread(target=_work, args=(pending, panics), name=f"worker-{number}")
            for number in range(1, min(self.concurrency, len(self.tasks)) + 1)
        ]
        try:
            for worker in workers:
                worker.start()
            # Each worker ends once the deque is empty and its last task has returned.
            for worker in workers:
                worker.join()
        except BaseException:
            # Ctrl-C (KeyboardInterrupt) lands in the main thread, here. Start no more tasks, let
            # the running ones finish (a thread cannot be stopped from outside), then pass it on.
            pending.clear()
            for worker in workers:
                if worker.ident is not None:
                    worker.join()
            raise
        if panics:
            raise panics[0]


def _work(pending: deque[Task[Result]], panics: list[BaseException]) -> None:
    """One worker: run tasks from `pending` until it is empty. Go: `for task := range tasksChan`."""
    while True:
        try:
            task = pending.popleft()
        except IndexError:
            return
        try:
            task.run()
        except BaseException as panic:
            # Only a panic gets here (Task.run keeps every Exception). Empty the deque so that no
            # worker starts another task; the others finish what they hold and find it empty.
            pending.clear()
            panics.append(panic)
            return
