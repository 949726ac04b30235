"""Stage 4 on processes: `Pool(tasks, concurrency, backend="processes")`.

What it adds to the thread pool: CPU-bound tasks run in parallel (each in a process of its own,
so the GIL is not shared), a crash costs one task and not the pool, and deadlines and cancels are
enforced for real, because a process, unlike a thread, can be killed.

How: the scheduling stays in beyond/pool.py (its worker threads, what they take next, max_errors,
streaming, the stop reasons). Only the Runner seam changes: each worker thread owns one child
process and runs its tasks there, one at a time. Per task, the thread pickles `task.fn`, sends it
down a pipe, and waits for the outcome while watching the task's deadline and the pool's cancel.

- An exception comes back rebuilt in the parent, its remote traceback text attached as
  `__cause__` (a `RemoteTraceback`, as concurrent.futures does); one that cannot be unpickled
  comes back as a `RemoteError` with its type, message and traceback text.
- A child that dies (os._exit, a segfault, SIGKILL from the OOM killer) gives its task a
  `WorkerDied` saying how: exit status or signal name. The next task gets a fresh child, and the
  other workers never notice. ProcessPoolExecutor instead marks the whole executor broken
  (`BrokenProcessPool`) and fails every pending future with it.
- A task that cannot be pickled (a lambda, a closure), or whose result cannot, fails alone with
  `NotPicklable`; nothing is sent, or the child goes on to its next task.
- Past its deadline (its own, or the run's) a task's child is killed with SIGKILL and the task
  gets TimeoutError; on cancel() (and Ctrl-C, and a loop left early) the running children are
  killed the same way and their tasks get Cancelled. max_errors does not kill: as with threads, the
  tasks already running finish (they may well succeed, and their work is paid for).

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
children never outlive run() or the loop over the pool. Each child imports the main module again
(as spawn's do): CPython 3.11 to 3.13 never preload __main__ into the server (forkserver.py asks
for a 'main_path' key that spawn.get_preparation_data does not produce), so a program whose main
module imports heavy modules should name them in multiprocessing.set_forkserver_preload().
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import select
import signal
import threading
import time
import traceback
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from beyond.pool import Cancelled, Task, Token, Workers

# How often a worker waiting on its child looks at the pool's cancel flag: the pool cannot wake a
# thread blocked in poll() on a pipe, so the wait is cut into slices this long. A finished task
# wakes it at once; only a cancel waits for the end of a slice.
CANCEL_CHECK_SECONDS = 0.05

# How long close() waits for an idle child to exit after its pipe is closed, before killing it.
EXIT_GRACE_SECONDS = 2.0

# Message kinds, child to parent.
_RETURNED, _RAISED, _NOT_SENT, _NOT_LOADED = range(4)

# Process.start() from several worker threads at once: multiprocessing keeps process-wide state
# (the list of children it reaps, the forkserver's connection) that it does not document as safe
# for concurrent starts. Serialising the starts costs a few milliseconds once per worker.
_starting = threading.Lock()


class WorkerDied(Exception):
    """The process running this task died before it could say how the task ended.

    `exitcode`: the process's exit status, or minus the signal number that killed it (as
    multiprocessing reports it). `signal`: that signal, or None if it exited.
    """

    def __init__(self, message: str, exitcode: int | None) -> None:
        super().__init__(message)
        self.exitcode = exitcode
        self.signal = _signal_of(exitcode)


class NotPicklable(pickle.PicklingError):
    """A task, or its result, could not be sent between processes."""


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker process: its error's __cause__."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class RemoteError(Exception):
    """An exception from a worker process that could not be rebuilt here (it could not be pickled
    or unpickled): its type, its message and, as __cause__, its traceback text."""


class Processes:
    """The backend: each worker thread runs its tasks in a child process of its own."""

    name = "processes"

    def __init__(self, start_method: str | None = None) -> None:
        if not hasattr(select, "poll"):
            raise RuntimeError(
                "backend='processes' needs select.poll(), which this platform lacks (it is "
                "POSIX-only: Linux, macOS, the BSDs)"
            )
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

    def runner(self, workers: Workers[Any], number: int) -> InAChildProcess:
        return InAChildProcess(self, workers, number)


def make_backend(argument: object) -> Processes:
    """What beyond/backends.py calls for `Pool(backend="processes")`."""
    return Processes()


class InAChildProcess:
    """How a worker runs a task here: in its child process.

    The child is started as the worker begins, before it takes a task, so that a task's timeout
    (which runs from the take) does not pay for it; after a death or a kill, the next task starts
    a fresh one, and its timeout does include that start. A start that fails is not raised here,
    where it would end the worker thread without a word to the pool: the next task tries again,
    and the error lands on that task.
    """

    __slots__ = ("_connection", "_context", "_process", "_watched", "number", "workers")

    def __init__(self, backend: Processes, workers: Workers[Any], number: int) -> None:
        self.workers = workers
        self.number = number
        self._context: Any = backend.context
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None
        # poll() on the child's pipe and its sentinel (readable once it has exited): one system
        # call per wake-up, with nothing built per call as multiprocessing.connection.wait does.
        self._watched = select.poll()
        if workers.stopped is None:
            # A failed start is tried again, and raised on its task, by the first task.
            with contextlib.suppress(Exception):
                self._start()

    @property
    def task(self) -> Task[Any] | None:
        return self.workers.current[self.number]

    def run(self, task: Task[Any]) -> bool:
        return task.run(partial(self._call, task))

    def close(self) -> None:
        """Stop the child: close its pipe (it exits at the end of it), wait, kill if need be."""
        self._stop_child(EXIT_GRACE_SECONDS)

    # --- One task. ---

    def _call(self, task: Task[Any]) -> Any:
        """Run task.fn in the child and return its result or raise its error, here."""
        token = Token(self.workers, task)
        # The pool may have been cancelled between the take and now: as a thread's first
        # checkpoint would, stop before starting anything.
        token.check()
        try:
            sent = pickle.dumps(task.fn, pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            raise NotPicklable(
                f"task {task._name()} cannot be sent to a worker process: {error} (tasks of "
                "backend='processes' must be picklable: a module-level function or class, or "
                "functools.partial of one, not a lambda or a nested function)"
            ) from error
        connection = self._send(sent)
        reply = self._wait_for_reply(task, token, connection)
        return _outcome(task, reply)

    def _send(self, sent: bytes) -> Connection:
        connection = self._connection or self._start()
        try:
            connection.send_bytes(sent)
        except OSError:
            # The child died while idle (killed from outside): the task never reached it, so it
            # may go to a fresh one. Only once: a fresh child that cannot read is a real error.
            self._discard()
            connection = self._start()
            connection.send_bytes(sent)
        return connection

    def _wait_for_reply(self, task: Task[Any], token: Token, connection: Connection) -> bytes:
        pipe, watched, workers = connection.fileno(), self._watched, self.workers
        while True:
            deadline = token.deadline
            wait = CANCEL_CHECK_SECONDS
            if deadline is not None:
                wait = min(wait, max(deadline - time.monotonic(), 0.0))
            ready = watched.poll(wait * 1000)
            if ready:
                # The reply, or the child's end: EOF on the pipe and its sentinel once it died. The
                # reply wins when both are there: it was sent before the child ended.
                if any(fd == pipe for fd, _ in ready):
                    try:
                        return connection.recv_bytes()
                    except (EOFError, OSError):
                        pass
                raise self._died(task)
            if workers.cancelled or (deadline is not None and time.monotonic() >= deadline):
                # Past the deadline or cancelled: a process can be stopped, so it is. SIGKILL,
                # which the task cannot catch or ignore; a fresh child takes the next task.
                self._discard()
                token.check()  # raises TimeoutError or Cancelled, as a thread's checkpoint would
                raise Cancelled("the pool was cancelled")

    def _died(self, task: Task[Any]) -> WorkerDied:
        process = self._process
        assert process is not None
        process.join(EXIT_GRACE_SECONDS)
        exitcode = process.exitcode
        self._discard()
        return WorkerDied(
            f"the worker process running task {task._name()} died: {_how_it_ended(exitcode)}; "
            "a fresh process takes the next task",
            exitcode,
        )

    def _start(self) -> Connection:
        here, there = multiprocessing.Pipe(duplex=True)
        process = self._context.Process(
            target=_serve, args=(there,), name=f"beyond-processes-{self.number + 1}"
        )
        try:
            with _starting:
                process.start()
        except BaseException:
            here.close()
            raise
        finally:
            # The child has its own copy now; ours must go, or the child's death would never
            # show as the end of the pipe here.
            there.close()
        self._process, self._connection = process, here
        self._watched.register(here.fileno(), select.POLLIN)
        self._watched.register(process.sentinel, select.POLLIN)
        return here

    def _discard(self) -> None:
        """Kill the child (if it still runs) and forget it; the next task starts a fresh one."""
        self._stop_child(0.0)

    def _stop_child(self, grace: float) -> None:
        """Forget the child and end it: close its pipe (it exits at the end of it), give it
        `grace` seconds to do so, then kill it if it still runs."""
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


def _outcome(task: Task[Any], reply: bytes) -> Any:
    """The task's result, or its error raised here, from the child's reply."""
    try:
        kind, *rest = pickle.loads(reply)
    except Exception as not_loaded:
        raise NotPicklable(
            f"the result of task {task._name()} came back from its worker process but cannot be "
            f"unpickled here: {not_loaded!r}"
        ) from not_loaded
    if kind == _RETURNED:
        return rest[0]
    sent_error, kind_name, message, text = rest
    error: object = None
    if sent_error is not None:
        try:
            error = pickle.loads(sent_error)
        except Exception:
            # Pickled there, but not to be rebuilt here (an __init__ that wants other arguments,
            # a class this process cannot import): say what it was instead.
            error = None
    if not isinstance(error, BaseException):
        if kind == _NOT_SENT:
            error = NotPicklable(message)
        elif kind == _NOT_LOADED:
            error = RemoteError(message)
        else:
            error = RemoteError(f"{kind_name}: {message}")
    error.__cause__ = RemoteTraceback(text)
    raise error


def _how_it_ended(exitcode: int | None) -> str:
    found = _signal_of(exitcode)
    if found is not None:
        how = f"killed by {found.name} (signal {found.value})"
        if found == signal.SIGKILL:
            how += ", as the kernel's out-of-memory killer sends"
        return how
    if exitcode is None:
        return "it did not exit"
    return f"it exited with status {exitcode} without returning"


def _signal_of(exitcode: int | None) -> signal.Signals | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode)
    except ValueError:
        return None


# --- The child. ---


def _serve(connection: Connection) -> None:
    """A worker process: run each task sent until the parent closes the pipe.

    SIGINT is ignored: Ctrl-C in a terminal goes to the whole foreground process group, children
    too, and it is the parent that decides what a Ctrl-C does to running tasks (it kills them).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            sent = connection.recv_bytes()
        except (EOFError, OSError):
            return  # the parent closed the pipe (close()), or is gone
        try:
            connection.send_bytes(_run_one(sent))
        except (EOFError, OSError):
            return


def _run_one(sent: bytes) -> bytes:
    try:
        fn: Callable[[], Any] = pickle.loads(sent)
    except BaseException as error:
        return _error_reply(
            _NOT_LOADED, error, "the task could not be unpickled in its worker process: "
        )
    try:
        result = fn()
    except BaseException as error:
        # BaseException too: SystemExit or KeyboardInterrupt raised by the task goes back to the
        # parent, where it is a panic as in the thread pool, rather than ending this process.
        return _error_reply(_RAISED, error)
    try:
        return pickle.dumps((_RETURNED, result), pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        return _error_reply(
            _NOT_SENT,
            error,
            f"the result of task {_name_of(fn)} ({type(result).__name__}) cannot be sent back "
            "from its worker process: ",
        )


def _error_reply(kind: int, error: BaseException, prefix: str = "") -> bytes:
    text = "".join(traceback.format_exception(error))
    try:
        message = prefix + str(error)
    except Exception:
        message = prefix + type(error).__name__
    try:
        sent_error: bytes | None = pickle.dumps(error, pickle.HIGHEST_PROTOCOL)
    except Exception:
        sent_error = None
    if kind != _RAISED:
        # The parent builds its own error from the message; the original is in the traceback.
        sent_error = None
    return pickle.dumps(
        (kind, sent_error, type(error).__qualname__, message, text), pickle.HIGHEST_PROTOCOL
    )


def _name_of(fn: object) -> str:
    try:
        return repr(getattr(fn, "__qualname__", None) or type(fn).__name__)
    except Exception:
        return "?"
