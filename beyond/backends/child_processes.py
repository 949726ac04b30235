"""Stage 4 on processes: `Pool(tasks, concurrency, backend="processes")`.

What it adds to the thread pool: CPU-bound tasks run in parallel (each in a process of its own,
so the GIL is not shared), a crash costs one task and not the pool, and deadlines and cancels are
enforced for real, because a process, unlike a thread, can be killed.

How: the scheduling stays in the scheduler (beyond/scheduler.py) and the pool's worker threads
(worker_threads.py): what they take next, max_errors, streaming, the stop reasons. Only the Runner
changes: each worker thread owns one child
process and runs its tasks there, one at a time. Per task, the thread pickles `task.fn`, sends it
down a pipe, and waits for the outcome while watching the task's deadline and the pool's cancel.

- An exception comes back rebuilt in the parent, its remote traceback text attached as
  `__cause__` (a `RemoteTraceback`, as concurrent.futures does); one that cannot be rebuilt here
  comes back as a `RemoteError` with its type, message, traceback text and why.
- A child that dies (os._exit, a segfault, SIGKILL from the OOM killer) gives its task a
  `WorkerDied` saying how: exit status or signal name. The next task gets a fresh child, and the
  other workers never notice. ProcessPoolExecutor instead marks the whole executor broken
  (`BrokenProcessPool`) and fails every pending future with it.
- A task that cannot be pickled (a lambda, a closure), or whose result cannot be pickled there or
  loaded here, fails alone with `NotPicklable`; so does one whose pickling there or loading here
  raises SystemExit or KeyboardInterrupt (a `__reduce__` calling or returning `sys.exit`): that
  is not the task's run, and the child serves on.
- Past its deadline (its own, or the run's) a task's child is killed with SIGKILL and the task
  gets TimeoutError; on cancel() (and Ctrl-C, and a loop left early) the running children are
  killed the same way and their tasks get Cancelled. max_errors does not kill: as with threads, the
  tasks already running finish (they may well succeed, and their work is paid for). It counts a
  failure when the parent reads it, so a task that starts in another child between the failure
  and that read still runs: at most `concurrency - 1` start after the parent has read it.

When a child starts: when its worker takes its first task (a worker that never gets a task starts
none), and again for the next task after a death or a kill. The child says when it is ready to
take a task; a task's timeout counts from that moment, so no task pays for a start, the first or
a replacement. The start itself may take up to the task's timeout too (a main module that hangs
on import fails the task with TimeoutError instead of holding it for ever); cancel(), Ctrl-C and
the run's timeout stop a start as they stop a task.

A child that dies before it is ready is a start failure, not a task's: the run stops
(`StopReason.BACKEND_FAILED`), the task stays not run, and run() raises `WorkerStartFailed`, one
line saying what to do. The usual cause is a script that runs its pool without
`if __name__ == "__main__":`: each child imports the main module again, so each would run the
pool again. A child that gets that far (a Pool with backend="processes" made while it imports
the main module) exits at once, without a traceback, and the parent says what to do.

A task that forks: its outcome is that of the child that took it. A forked copy that returns (or
raises) from the task ends there, at once (os._exit), sends nothing and takes no other task; and
each reply carries the child's pid and the task's number, which the parent checks, so that
anything else on the pipe is refused: the child is replaced and the task fails with `LostReply`.

Start method: forkserver where the platform has it, else spawn; never fork. The pool starts its
children from worker threads while other threads run, and fork() copies only the calling thread:
a lock another thread held at that moment (malloc's, stdio's, logging's, the import lock) stays
locked for ever in the child, which can then hang at its first use of it. POSIX allows only
async-signal-safe calls between fork() and exec() in a multithreaded process; CPython 3.12 warns
(DeprecationWarning from os.fork() when other threads run) and 3.14 made forkserver the default
on Linux for this reason. A forkserver child is forked from a single-threaded server process.

What the forkserver costs: the first child of a program starts the server (one more process,
plus multiprocessing's resource tracker); both stay until the program exits, shared by every
pool and every multiprocessing user in it, and exit by themselves when it does. The pool's own
children never outlive run() or the loop over the pool, not even the idle child of a worker left
inside a generator's next() that never returns (see InAChildProcess.__init__). Each child
imports the main module again (as spawn's do): CPython 3.11 to 3.13 never preload __main__ into
the server (forkserver.py asks for a 'main_path' key that spawn.get_preparation_data does not
produce), so a program whose main module imports heavy modules should name them in
multiprocessing.set_forkserver_preload().
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import select
import threading
import time
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn

from beyond.backends.child_process_errors import (
    LostReply,
    NotPicklable,
    RemoteError,
    RemoteTraceback,
    WorkerDied,
    WorkerStartFailed,
    decode,
    describe_frame,
    how_it_ended,
    start_failure,
)
from beyond.backends.child_process_loop import READY, REPLY, TASK, serve
from beyond.backends.protocol import SchedulerSeam, StopReason
from beyond.backends.worker_threads import OneThreadPerWorker
from beyond.cancellation import Cancelled, Token
from beyond.task import Task, quoted_name

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

# How often a worker waiting on its child looks at the pool's cancel flag: the pool cannot wake a
# thread blocked in poll() on a pipe, so the wait is cut into slices this long. A finished task
# wakes it at once; only a cancel waits for the end of a slice.
CANCEL_CHECK_SECONDS = 0.05

# How long close() waits for an idle child to exit after its pipe is closed, before killing it.
EXIT_GRACE_SECONDS = 2.0

# The children's names: "beyond-processes-<worker number>". A child imports the main module
# under this name (multiprocessing sets it first), which is how it knows, there, that it is ours.
CHILD_NAME = "beyond-processes-"

# Process.start() from several worker threads at once: multiprocessing keeps process-wide state
# (the list of children it reaps, the forkserver's connection) that it does not document as safe
# for concurrent starts. Serialising the starts costs a few milliseconds once per child.
_starting = threading.Lock()


class Processes(OneThreadPerWorker):
    """The backend: each worker thread runs its tasks in a child process of its own."""

    name = "processes"

    def __init__(self, start_method: str | None = None) -> None:
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
                "start_method 'fork' is refused: the pool starts processes from worker threads, "
                "and a forked child of a multithreaded process can hang on a lock another thread "
                "held; use 'forkserver' or 'spawn'"
            )
        elif start_method not in available:
            raise ValueError(
                f"start_method must be one of {', '.join(m for m in available if m != 'fork')}, "
                f"got {start_method!r}"
            )
        self.start_method = start_method
        # Any: typeshed gives get_context(str) a BaseContext, which lacks the Process that every
        # real context has.
        self.context: Any = multiprocessing.get_context(start_method)

    def runner(self, scheduler: SchedulerSeam[Any], number: int) -> InAChildProcess:
        return InAChildProcess(self, scheduler, number)


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


class InAChildProcess:
    """How a worker runs a task here: in its child process, started for the first task.

    A task that needs a child (its worker has none yet, or its child died or was killed) starts
    one and waits for it to be ready, and its timeout then counts from that moment: see the
    module's docstring. A start that fails stops the run (the cause is the program's, and every
    task would fail the same way) rather than failing each task: with 10,000 tasks that would be
    10,000 starts, each dying the same way.
    """

    __slots__ = (
        "_connection",
        "_context",
        "_process",
        "_sent",
        "_stopping",
        "_watched",
        "number",
        "scheduler",
    )

    def __init__(self, backend: Processes, scheduler: SchedulerSeam[Any], number: int) -> None:
        self.scheduler = scheduler
        self.number = number
        self._context: Any = backend.context
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None
        # Numbers the tasks sent to the current child (from 1); its replies must carry them.
        self._sent = 0
        # poll() on the child's pipe and its sentinel (readable once it has exited): one system
        # call per wake-up, with nothing built per call as multiprocessing.connection.wait does.
        self._watched = select.poll()
        # Held while the child is taken and stopped (_stop_child): close() may run in two threads
        # at once, this worker's and the one that waited for the run (below).
        self._stopping = threading.Lock()
        # A worker left at the source of a stopped run (inside a generator's next() that may never
        # return) holds its idle child, which multiprocessing's exit hook would join for ever
        # (the child waits for a next task): the thread that waited for the run closes it then.
        scheduler.set_on_left_at_the_source(number, self.close)

    def run(self, task: Task[Any]) -> bool:
        token = Token(self.scheduler, task)
        try:
            connection, number = self._send(task, token)
        except WorkerStartFailed as failed:
            self._stop_the_run(failed)
            return False
        except Exception as not_sent:
            # Cancelled or past its deadline before it reached a child, or not picklable: the
            # task's outcome all the same, kept by Task.run (which counts it, or not, as usual).
            return task.run(partial(_reraise, not_sent))
        return task.run(partial(self._outcome, task, token, connection, number))

    def close(self) -> None:
        """Stop the child: close its pipe (it exits at the end of it), wait, kill if need be.

        Called by the worker, last, and perhaps at the same time by the thread that waited for
        the run, if the run ended with this worker left at the source: it runs no task then, and
        will start none. Whichever comes first stops the child, and the other waits until it has
        (see _stop_child): either way, once close() returns the child is gone."""
        self._stop_child(EXIT_GRACE_SECONDS)

    # --- One task. ---

    def _send(self, task: Task[Any], token: Token) -> tuple[Connection, int]:
        """Send task.fn to the child (started first if need be); return the pipe and the task's
        number there."""
        # The pool may have been cancelled between the take and now: as a thread's first
        # checkpoint would, stop before starting anything.
        token.check()
        try:
            sent = pickle.dumps(task.fn, pickle.HIGHEST_PROTOCOL)
        except BaseException as error:
            # BaseException too: a __reduce__ that raises SystemExit is the task's pickling, not
            # its run (and a real Ctrl-C never lands here: see child_process_loop.load).
            raise NotPicklable(
                f"task {quoted_name(task)} cannot be sent to a worker process: {error!r} (tasks of "
                "backend='processes' must be picklable: a module-level function or class, or "
                "functools.partial of one, not a lambda or a nested function)"
            ) from error
        for attempt in range(2):
            connection = self._connection or self._start(task, token)
            self._sent += 1
            try:
                connection.send_bytes(TASK.pack(self._sent) + sent)
            except OSError:
                if attempt:
                    raise  # a fresh child that cannot read: a real error, the task's
                # The child died while idle (killed from outside): the task never reached it,
                # so it may go to a fresh one, once.
                self._discard()
                continue
            return connection, self._sent
        raise AssertionError("unreachable")

    def _outcome(self, task: Task[Any], token: Token, connection: Connection, number: int) -> Any:
        """Wait for the child's answer to task `number`; return its result or raise its error."""
        reply = self._wait_for_reply(task, token, connection)
        assert self._process is not None
        child = self._process.pid
        header = REPLY.unpack_from(reply) if len(reply) >= REPLY.size else None
        if header is None or header[:2] != (number, child):
            # Not this child's answer to this task (a forked copy that wrote to the pipe, a
            # frame cut short): nothing after it on the pipe can be trusted either.
            self._discard()
            raise LostReply(
                f"the answer of task {quoted_name(task)} was lost: its worker process (pid "
                f"{child}) was sent it as task number {number}, and its pipe carried "
                f"{describe_frame(header)} instead; did the task fork and let the copy write to "
                "the pipe? A fresh process takes the next task"
            )
        return decode(task, header[2], memoryview(reply)[REPLY.size :])

    def _poll(self, deadline: float | None) -> list[tuple[int, int]]:
        """Wait for the child's pipe or its end, at most CANCEL_CHECK_SECONDS (to look at the
        pool's cancel between) and no later than `deadline`; what is ready."""
        wait = CANCEL_CHECK_SECONDS
        if deadline is not None:
            wait = min(wait, max(deadline - time.monotonic(), 0.0))
        return self._watched.poll(wait * 1000)

    def _wait_for_reply(self, task: Task[Any], token: Token, connection: Connection) -> bytes:
        pipe, scheduler = connection.fileno(), self.scheduler
        while True:
            deadline = token.deadline
            ready = self._poll(deadline)
            if ready:
                # The reply, or the child's end: EOF on the pipe and its sentinel once it died. The
                # reply wins when both are there: it was sent before the child ended.
                if any(fd == pipe for fd, _ in ready):
                    try:
                        return connection.recv_bytes()
                    except (EOFError, OSError):
                        pass
                raise self._died(task)
            if scheduler.cancelled or (deadline is not None and time.monotonic() >= deadline):
                # Past the deadline or cancelled: a process can be stopped, so it is. SIGKILL,
                # which the task cannot catch or ignore; a fresh child takes the next task.
                self._discard()
                token.check()  # raises TimeoutError or Cancelled, as a thread's checkpoint would
                raise Cancelled("the pool was cancelled")
            if self._ended():
                raise self._died(task)

    def _ended(self) -> bool:
        """Whether the child has exited, asked of the system, once per quiet slice. The pipe's end
        and the sentinel may never come: a copy the task forked (and left running) holds the
        child's end of the pipe, and with spawn the sentinel's too (forkserver's server writes
        the sentinel itself)."""
        assert self._process is not None
        return self._process.exitcode is not None

    def _died(self, task: Task[Any]) -> WorkerDied:
        exitcode = self._end_of_child()
        return WorkerDied(
            f"the worker process running task {quoted_name(task)} died: {how_it_ended(exitcode)}; "
            "a fresh process takes the next task",
            exitcode,
        )

    # --- The child: start, ready, stop. ---

    def _start(self, task: Task[Any], token: Token) -> Connection:
        """Start a child for `task` and wait until it is ready; the task's clock starts then."""
        here, there = multiprocessing.Pipe(duplex=True)
        process = self._context.Process(
            target=serve, args=(there,), name=f"{CHILD_NAME}{self.number + 1}"
        )
        try:
            with _starting:
                # Looked at again here, where the start really begins: the workers' starts queue
                # on this lock (tens of milliseconds each), and a worker still in line when the
                # pool is cancelled (a Ctrl-C) must start nothing. Its task is cancelled, as at
                # _send's first check: 63 of 64 children started after a Ctrl-C without it.
                token.check()
                try:
                    process.start()
                except Exception as error:
                    raise WorkerStartFailed(
                        f"could not start a worker process: {error!r}"
                    ) from error
        except BaseException:
            here.close()
            raise
        finally:
            # The child has its own copy now; ours must go, or the child's death would never
            # show as the end of the pipe here.
            there.close()
        self._process, self._connection, self._sent = process, here, 0
        self._watched.register(here.fileno(), select.POLLIN)
        self._watched.register(process.sentinel, select.POLLIN)
        self._wait_until_ready(here, process, token)
        if task.timeout is not None:
            # Later than the deadline the take set: the pool's waiting thread only ever wakes
            # early for it (it looks again at every wake), never late.
            self.scheduler.start_clock(task)
        return here

    def _wait_until_ready(self, connection: Connection, process: BaseProcess, token: Token) -> None:
        """Until the child says it is ready: it has imported the main module and serves. Watched
        like a task: the pool's cancel, and the task's deadline as the take set it."""
        pipe = connection.fileno()
        while True:
            deadline = token.deadline
            ready = self._poll(deadline)
            if ready:
                if any(fd == pipe for fd, _ in ready):
                    with contextlib.suppress(EOFError, OSError):
                        if connection.recv_bytes() == REPLY.pack(0, process.pid, READY):
                            return
                exitcode = self._end_of_child()
                if self.scheduler.cancelled:
                    # Stopped while it started (a Ctrl-C reaches a starting child too, and it
                    # does not ignore it yet): the task is cancelled, not the backend broken.
                    raise Cancelled("the pool was cancelled")
                raise WorkerStartFailed(start_failure(exitcode), exitcode) from None
            if self.scheduler.cancelled or (deadline is not None and time.monotonic() >= deadline):
                self._discard()
                try:
                    token.check()
                except TimeoutError as late:
                    late.add_note("its worker process was still starting (it was killed)")
                    raise
                raise Cancelled("the pool was cancelled")

    def _stop_the_run(self, failed: WorkerStartFailed) -> None:
        # The task never reached a child: it stays not run, and iteration does not hand it over
        # (as a task the pool never started). The first stop and error win, as always. run()
        # raises the error in the caller's thread: this thread's frames would only lengthen a
        # traceback about the user's main module, so they go.
        self.scheduler.not_started(self.number)
        self.scheduler.stop(
            StopReason.BACKEND_FAILED, str(failed), error=failed.with_traceback(None)
        )

    def _end_of_child(self) -> int | None:
        """The child has ended (or is ending): its exit status, once it is gone and forgotten."""
        process = self._process
        assert process is not None
        process.join(EXIT_GRACE_SECONDS)
        exitcode = process.exitcode
        self._discard()
        return exitcode

    def _discard(self) -> None:
        """Kill the child (if it still runs) and forget it; the next task starts a fresh one."""
        self._stop_child(0.0)

    def _stop_child(self, grace: float) -> None:
        """Forget the child and end it: close its pipe (it exits at the end of it), give it
        `grace` seconds to do so, then kill it if it still runs.

        Under the lock, the whole of it: a second caller (close() from another thread) finds no
        child, and returns only once the first has joined it, so no child is stopped, joined or
        closed twice, and none outlives either call."""
        with self._stopping:
            connection, process = self._connection, self._process
            self._connection = self._process = None
            self._unwatch(connection, process)
            if connection is not None:
                connection.close()
            if process is not None:
                process.join(grace)
                if process.exitcode is None:
                    process.kill()
                    process.join()
                process.close()

    def _unwatch(self, connection: Connection | None, process: BaseProcess | None) -> None:
        # Before the descriptors close: a number poll() still watched could be reused by the
        # next child's pipe.
        if connection is not None:
            self._watched.unregister(connection.fileno())
        if process is not None:
            self._watched.unregister(process.sentinel)


def _reraise(error: BaseException) -> NoReturn:
    raise error
