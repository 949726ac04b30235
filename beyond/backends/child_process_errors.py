"""What can go wrong with a task in a child process of the processes backend, and how the parent
says it: the errors a task keeps (each one line naming the task), and the reply decoded into the
task's result or its error, rebuilt here with the child's traceback as its cause.
"""

from __future__ import annotations

import pickle
import signal
from typing import Any

from beyond.backends.child_process_frames import NOT_LOADED, NOT_SENT, RETURNED
from beyond.backends.child_process_loop import load
from beyond.task import Task, quoted_name


class WorkerDied(Exception):
    """The process running this task died before it could say how the task ended.

    `exitcode`: the process's exit status, or minus the signal number that killed it (as
    multiprocessing reports it). `signal`: that signal, or None if it exited.
    """

    def __init__(self, message: str, exitcode: int | None) -> None:
        super().__init__(message)
        self.exitcode = exitcode
        self.signal = signal_of(exitcode)


class WorkerStartFailed(RuntimeError):
    """A worker process could not start, or died before it was ready to take a task: the run
    stops with this error (see the module's docstring). `exitcode` as for WorkerDied; None if the
    process could not be started at all."""

    def __init__(self, message: str, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.exitcode = exitcode
        self.signal = signal_of(exitcode)


class LostReply(Exception):
    """A task's answer was lost: its child's pipe carried a frame that was not that child's answer
    to this task (a forked copy of the task writing to it, say). The child was replaced."""


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
    there or loaded here): its type, its message and why; as __cause__, its traceback text."""


def lost_reply(task: Task[Any], pid: int | None, seq: int, what: str) -> LostReply:
    """The error of a task whose answer was lost to bytes on its child's pipe that were not a
    reply of that child's (`what` says what they were)."""
    return LostReply(
        f"the answer of task {quoted_name(task)} was lost: its worker process (pid {pid}) ran it "
        f"as task number {seq}, and its pipe carried {what} instead; did the task fork and let "
        "the copy write to the pipe? A fresh process takes the next task"
    )


def start_failure(exitcode: int | None) -> str:
    """What to say about a child that died before it was ready: one line, and what to do."""
    if exitcode is None:
        # Alive, but what it sent was not its ready message: it was killed.
        return "a worker process sent something other than its ready message while starting"
    found = signal_of(exitcode)
    if found is not None:
        # Killed from outside (the out-of-memory killer, say): the main module is not to blame.
        return (
            f"a worker process was killed by {found.name} (signal {found.value}) while "
            "starting, before it could take a task"
        )
    return (
        f"a worker process exited with status {exitcode} while starting, before it could take a "
        "task: each worker process imports the main module again, so a script must run its "
        'pool only under `if __name__ == "__main__":` (if its import raised an error, that is '
        "above, on stderr)"
    )


def decode(task: Task[Any], kind: int, payload: memoryview) -> Any:
    """The task's result, or its error raised here, from the child's reply."""
    if kind == RETURNED:
        loaded, not_loaded = load(payload)
        if not_loaded is not None:
            raise NotPicklable(
                f"the result of task {quoted_name(task)} came back from its worker process but "
                f"cannot be loaded here: {not_loaded!r}"
            ) from not_loaded
        return loaded
    # Built by the child from str and bytes only (child_process_loop._error_reply): loading it
    # runs no code of the task's.
    described, not_loaded = load(payload)
    if not_loaded is not None:
        raise RemoteError(
            f"task {quoted_name(task)} failed in its worker process, but how cannot be loaded "
            f"here: {not_loaded!r}"
        ) from not_loaded
    sent_error, kind_name, message, text = described
    error: object = None
    why = ""
    if sent_error is not None:
        # Pickled there, but perhaps not to be rebuilt here (an __init__ that wants other
        # arguments, a class this process cannot import, a __reduce__ that calls sys.exit).
        error, not_loaded = load(sent_error)
        if not_loaded is not None:
            why = f" (it could not be rebuilt here: loading it raised {not_loaded!r})"
    if not isinstance(error, BaseException):
        if kind == NOT_SENT:
            error = NotPicklable(message)
        elif kind == NOT_LOADED:
            error = RemoteError(message)
        else:
            error = RemoteError(f"{kind_name}: {message}{why}")
    error.__cause__ = RemoteTraceback(text)
    raise error


def how_it_ended(exitcode: int | None) -> str:
    found = signal_of(exitcode)
    if found is not None:
        how = f"killed by {found.name} (signal {found.value})"
        if found == signal.SIGKILL:
            how += ", as the kernel's out-of-memory killer sends"
        return how
    if exitcode is None:
        return "it did not exit"
    return f"it exited with status {exitcode} without returning"


def signal_of(exitcode: int | None) -> signal.Signals | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode)
    except ValueError:
        return None


def without_this_threads_frames(error: BaseException) -> None:
    """Drop the tracebacks of a task's error raised in the dispatcher, and of the errors it chains
    to.

    Their frames are the dispatcher's (Task.run, finish, reply, the loop), and each frame holds
    the one that called it (f_back) with its locals: so a task that kept its error would keep the
    whole run alive, its shared memory (up to 16 MB of reply areas, and a descriptor), the reply
    bodies being parsed and every task the frames name, for as long as the program keeps the
    task. Nothing of the task's own is lost: its child's traceback is the RemoteTraceback text
    in __cause__, and the rest is how this thread raised it."""
    chain: list[BaseException | None] = [error]
    seen: set[int] = set()
    while chain:
        link = chain.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        link.__traceback__ = None
        chain += (link.__cause__, link.__context__)
