"""Stage 4 on processes: `Pool(tasks, concurrency, backend="processes")`.

What it adds to the thread pool: CPU-bound tasks run in parallel (each in a process of its own,
so the GIL is not shared), a crash costs one task and not the pool, and deadlines and cancels are
enforced for real, because a process, unlike a thread, can be killed.

How: the scheduling stays in the scheduler (beyond/scheduler.py): what is taken next, max_errors,
streaming, the stop reasons. This backend gives the pool one thread, the dispatcher
(child_process_dispatcher.py), which feeds every child process: small tasks are sent ahead, so
that a child never idles for a round trip between two tasks, and replies come back in bulk
through shared memory. Its parts, from the bottom: the frames and the shared layout
(child_process_frames.py), the child's loop (child_process_loop.py), the errors a task may keep
(child_process_errors.py), the children of one run as the parent sees them
(child_process_group.py), the dispatcher.

- An exception comes back rebuilt in the parent, its remote traceback text attached as
  `__cause__` (a `RemoteTraceback`, as concurrent.futures does); one that cannot be rebuilt here
  comes back as a `RemoteError` with its type, message, traceback text and why.
- A child that dies (os._exit, a segfault, SIGKILL from the OOM killer) gives the task it had
  started a `WorkerDied` saying how: exit status or signal name. Every task sent ahead to it runs
  in another child, once; the next task gets a fresh child.
- A task that cannot be pickled (a lambda, a closure), or whose result cannot be pickled there or
  loaded here, fails alone with `NotPicklable`.
- Past its deadline (its own, or the run's) a task's child is killed with SIGKILL and the task
  gets TimeoutError; on cancel() (and Ctrl-C, and a loop left early) the children with tasks are
  killed the same way: the task each had started gets Cancelled, those queued behind it never
  start. max_errors does not kill: the tasks already running finish, the queued ones never start.

docs/stage4-processes.md says what is sent ahead, how a death is accounted, and the bounds.

Start method: forkserver where the platform has it, else spawn; never fork. The pool starts its
children from a thread while other threads run, and fork() copies only the calling thread: a lock
another thread held at that moment (malloc's, stdio's, logging's, the import lock) stays locked
for ever in the child, which can then hang at its first use of it. CPython 3.12 warns
(DeprecationWarning from os.fork() when other threads run) and 3.14 made forkserver the default
on Linux for this reason. A forkserver child is forked from a single-threaded server process.
Each child imports the main module again (as spawn's do): CPython 3.11 to 3.13 never preload
__main__ into the server, so a program whose main module imports heavy modules should name them
in multiprocessing.set_forkserver_preload().
"""

from __future__ import annotations

import multiprocessing
import select
import threading
from typing import Any, ClassVar, Literal

from beyond.backends.child_process_dispatcher import Dispatcher
from beyond.backends.child_process_errors import (
    LostReply,
    NotPicklable,
    RemoteError,
    RemoteTraceback,
    WorkerDied,
    WorkerStartFailed,
)
from beyond.backends.child_process_handle import CHILD_NAME, RunCounts
from beyond.backends.protocol import SchedulerSeam

# The errors a task of this backend may keep, importable from here.
__all__ = [
    "LostReply",
    "NotPicklable",
    "Processes",
    "RemoteError",
    "RemoteTraceback",
    "WorkerDied",
    "WorkerStartFailed",
]

# How much work (seconds, by the tasks' measured durations) each child should have waiting in its
# pipe beside the task it runs, to begin with. A child publishes its replies twice per that much
# work, so this sets how often the parent wakes as well as how slow a reaction it covers. Each
# time a child runs out of tasks while there were more to give, the amount doubles, up to
# MAX_AHEAD_SECONDS. What waits in a child at the end of a list is not stuck there: an idle child
# takes back the later half of the longest queue.
AHEAD_SECONDS = 0.01
MAX_AHEAD_SECONDS = 0.05
# At most this many tasks wait in one child's pipe (for tasks of a few microseconds).
MAX_AHEAD = 512
# Tasks longer than this (by the running average) are not sent ahead at all: a round trip then
# costs nothing worth saving.
LONG_TASK_SECONDS = 0.05
# Bytes of each of a child's four reply areas in shared memory (0: every reply goes down the
# pipe, one write each).
REPLY_AREA_BYTES = 1 << 15


class Processes:
    """The backend: one dispatcher thread keeps every child process busy (see the module's
    docstring). The keywords tune what is sent ahead, for measurements and tests."""

    name = "processes"
    runs_on: ClassVar[Literal["worker threads"]] = "worker threads"

    def __init__(
        self,
        start_method: str | None = None,
        *,
        ahead_seconds: float = AHEAD_SECONDS,
        max_ahead_seconds: float = MAX_AHEAD_SECONDS,
        max_ahead: int = MAX_AHEAD,
        long_task_seconds: float = LONG_TASK_SECONDS,
        reply_area_bytes: int = REPLY_AREA_BYTES,
    ) -> None:
        if not hasattr(select, "poll"):
            raise RuntimeError(
                "backend='processes' needs select.poll(), which this platform lacks (it is "
                "POSIX-only: Linux, macOS, the BSDs)"
            )
        _leave_if_a_child_importing_main()
        available = multiprocessing.get_all_start_methods()
        if start_method is None:
            start_method = "forkserver" if "forkserver" in available else "spawn"
        elif start_method == "fork":
            raise ValueError(
                "start_method 'fork' is refused: the pool starts processes from a thread while "
                "others run, and a forked child of a multithreaded process can hang on a lock "
                "another thread held; use 'forkserver' or 'spawn'"
            )
        elif start_method not in available:
            raise ValueError(
                f"start_method must be one of {', '.join(m for m in available if m != 'fork')}, "
                f"got {start_method!r}"
            )
        if type(max_ahead) is not int or max_ahead < 0:
            raise ValueError(f"max_ahead must be an int >= 0, got {max_ahead!r}")
        for name, seconds in (
            ("ahead_seconds", ahead_seconds),
            ("max_ahead_seconds", max_ahead_seconds),
            ("long_task_seconds", long_task_seconds),
        ):
            if not isinstance(seconds, int | float) or not seconds >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {seconds!r}")
        if type(reply_area_bytes) is not int or reply_area_bytes < 0:
            raise ValueError(f"reply_area_bytes must be an int >= 0, got {reply_area_bytes!r}")
        self.start_method = start_method
        # Any: typeshed gives get_context(str) a BaseContext, which lacks the Process that every
        # real context has.
        self.context: Any = multiprocessing.get_context(start_method)
        self.ahead_seconds = float(ahead_seconds)
        self.max_ahead_seconds = float(max_ahead_seconds)
        self.max_ahead = max_ahead
        self.long_task_seconds = float(long_task_seconds)
        self.reply_area_bytes = reply_area_bytes
        self.counts = RunCounts()

    def threads(self, scheduler: SchedulerSeam[Any]) -> list[threading.Thread]:
        """The dispatcher's thread (none for no task), and for a tasks iterable that is not a
        list, the thread that reads it."""
        if scheduler.worker_count == 0:
            return []
        dispatcher = Dispatcher(
            self.context,
            scheduler,
            self.counts,
            ahead_seconds=self.ahead_seconds,
            max_ahead_seconds=self.max_ahead_seconds,
            max_ahead=self.max_ahead,
            long_task_seconds=self.long_task_seconds,
            reply_area_bytes=self.reply_area_bytes,
        )
        return dispatcher.threads()


def _leave_if_a_child_importing_main() -> None:
    """In a child of ours that is still importing the main module (a script without
    `if __name__ == "__main__":` that makes its pool again there), exit at once and quietly.

    That pool could start no process (multiprocessing refuses a start before the bootstrap is
    over) and every child would print the same traceback; the parent sees this child die before
    it is ready and says, once, what to do. SystemExit, not os._exit: the interpreter exits as it
    would at the end of the script. `_inheriting` is multiprocessing's own flag for this moment
    (spawn._check_not_importing_main reads it); the name tells our children from other users'.
    """
    process = multiprocessing.current_process()
    if getattr(process, "_inheriting", False) and process.name.startswith(CHILD_NAME):
        raise SystemExit(1)
