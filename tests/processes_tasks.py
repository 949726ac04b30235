"""Tasks for the process backend's tests: module-level, so that they pickle by reference and the
worker processes import them from here. Each one that matters returns or records its pid, so a
test can tell which process ran it and whether that process is still there."""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path


class Failed(Exception):
    """A task's own error; it knows its task, to check that each error is on its own task."""

    def __init__(self, number: int) -> None:
        super().__init__(f"task {number} failed")
        self.number = number

    def __reduce__(self) -> tuple[type[Failed], tuple[int]]:
        return Failed, (self.number,)


class NeedsTwoArguments(Exception):
    """Pickles, but cannot be unpickled: its __init__ wants two arguments and args holds one."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first} and {second}")


def pid() -> int:
    return os.getpid()


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def double(number: int) -> int:
    return number * 2


def double_or_fail(number: int, fails: bool) -> int:
    if fails:
        raise Failed(number)
    return number * 2


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def raise_unpicklable_error() -> None:
    raise NeedsTwoArguments("one", "two")


def exit_now(status: int) -> None:
    os._exit(status)


def segfault() -> None:
    ctypes.string_at(0)


def kill_myself() -> None:
    # What the kernel's out-of-memory killer sends.
    os.kill(os.getpid(), signal.SIGKILL)


def system_exit(status: int) -> None:
    raise SystemExit(status)


def lingers_at_exit(seconds: float) -> int:
    """Leave a thread that keeps this process from exiting for `seconds` once its pipe ends
    (multiprocessing's bootstrap joins the non-daemon threads); return this pid."""
    threading.Thread(target=time.sleep, args=(seconds,), name="lingers").start()
    return os.getpid()


def returns_a_lock() -> threading.Lock:
    return threading.Lock()


def announce_then_sleep(folder: str, name: str, seconds: float) -> int:
    """Write this process's pid to folder/name (a sign that the task is running), then sleep."""
    marker = Path(folder) / name
    marker.with_suffix(".tmp").write_text(str(os.getpid()))
    # Renamed into place, so that a reader never sees a half-written pid.
    marker.with_suffix(".tmp").rename(marker)
    time.sleep(seconds)
    return os.getpid()


def wait_for_file(path: str, seconds: float) -> int:
    """Wait (up to `seconds`) for another task to create `path`; return this pid."""
    end = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return os.getpid()


def fail_after_file(path: str, seconds: float, number: int) -> None:
    wait_for_file(path, seconds)
    raise Failed(number)


def recorded(events: str, number: int, fails: bool) -> int:
    """double_or_fail, appending its number to `events` first (one O_APPEND write per line, so
    that lines from several processes never interleave): the test counts how often each ran."""
    descriptor = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, f"{number}\n".encode())
    finally:
        os.close(descriptor)
    return double_or_fail(number, fails)


# --- Tasks that fork. ---


def _wait_for_the_copy(copy: int) -> None:
    """Reap the forked copy; kill it if it has not ended within a few seconds (a copy that went
    on serving, as before the fix, would never end by itself)."""
    end = time.monotonic() + 5.0
    while time.monotonic() < end:
        if os.waitpid(copy, os.WNOHANG) != (0, 0):
            return
        time.sleep(0.01)
    os.kill(copy, signal.SIGKILL)
    os.waitpid(copy, 0)


def forks_and_both_return(folder: str, number: int) -> tuple[str, int]:
    """Careless code: fork, and let the copy return too (no os._exit). The copy writes its pid to
    folder/copy-<number> first; this process waits for the copy to end, so that the copy's
    return (and whatever it sends) comes before this process's."""
    copy = os.fork()
    if copy == 0:
        marker = Path(folder) / f"copy-{number}"
        marker.with_suffix(".tmp").write_text(str(os.getpid()))
        marker.with_suffix(".tmp").rename(marker)
        return ("copy", number)
    _wait_for_the_copy(copy)
    return ("worker", number)


def forges_a_reply(kind: str) -> str:
    """Fork a copy that writes a frame of its own on the worker's reply pipe, before this
    process's answer: a reply from the copy's pid ("copy"), one from the worker's pid to another
    task ("number"), or a frame too short to be a reply ("short")."""
    from multiprocessing.connection import Connection

    from beyond.backends.child_process_frames import REPLY, RETURNED

    copy = os.fork()
    if copy == 0:
        try:
            pipe = next(
                o
                for o in gc.get_objects()
                if isinstance(o, Connection) and not o.closed and o.writable
            )
            body = pickle.dumps("forged")
            if kind == "copy":
                frame = REPLY.pack(len(body), 1, RETURNED, 0.0, os.getpid()) + body
            elif kind == "number":
                frame = REPLY.pack(len(body), 10**6, RETURNED, 0.0, os.getppid()) + body
            else:
                frame = b"xx"
            os.write(pipe.fileno(), frame)
        finally:
            os._exit(0)
    _wait_for_the_copy(copy)
    # The parent refuses the frame as it reads it, and kills this process: until then this task
    # is the one running, whenever the parent gets to it. Longer than the tests' RUN_LIMIT: a
    # parent that waited for a frame cut short to be completed would fail the test, not pass it
    # late.
    time.sleep(120)
    return "genuine"


def forks_and_execs(folder: str) -> int:
    """Fork a copy that execs `sleep 60`; return the copy's pid. Before the exec the copy writes
    the inode of each of this worker's pipes to its parent (multiprocessing Connections) to
    folder/pipes, one a line."""
    from multiprocessing.connection import Connection

    copy = os.fork()
    if copy == 0:
        try:
            inodes = [
                os.readlink(f"/proc/self/fd/{o.fileno()}")
                for o in gc.get_objects()
                if isinstance(o, Connection) and not o.closed
            ]
            Path(folder, "pipes").write_text("\n".join(inodes))
            os.execv("/bin/sleep", ["sleep", "60"])
        finally:
            os._exit(1)
    return copy


# --- Outcomes whose loading raises a BaseException. ---


class ExitsWhenLoaded(Exception):
    """Raised by a task; loading it calls sys.exit(9)."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return sys.exit, (9,)


class InterruptsWhenLoaded:
    """Returned by a task; loading it raises KeyboardInterrupt."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _interrupt, ()


def _interrupt() -> None:
    raise KeyboardInterrupt


def raises_an_error_that_exits_when_loaded() -> None:
    raise ExitsWhenLoaded("raised in the worker")


def returns_a_result_that_interrupts_when_loaded() -> InterruptsWhenLoaded:
    return InterruptsWhenLoaded()


def returns_bytes(size: int) -> bytes:
    return b"x" * size


def forks_a_lingering_copy_then_exits(folder: str, status: int) -> None:
    """Fork a copy that writes its pid to folder/copy and sleeps a minute (holding every descriptor
    of the worker's); once it has written, this process exits with `status`."""
    copy = os.fork()
    if copy == 0:
        try:
            marker = Path(folder) / "copy"
            marker.with_suffix(".tmp").write_text(str(os.getpid()))
            marker.with_suffix(".tmp").rename(marker)
            time.sleep(60)
        finally:
            os._exit(0)
    wait_for_file(str(Path(folder) / "copy"), 60)
    os._exit(status)


# --- Outcomes whose pickling, in the worker process, raises a BaseException. ---


class ExitsWhenPickled:
    """Returned by a task; pickling it calls sys.exit(7)."""

    def __reduce__(self) -> tuple[object, ...]:
        sys.exit(7)


class InterruptsWhenPickled:
    """Returned by a task; pickling it raises KeyboardInterrupt."""

    def __reduce__(self) -> tuple[object, ...]:
        raise KeyboardInterrupt


class ErrorThatExitsWhenPickled(Exception):
    """Raised by a task; pickling it calls sys.exit(6)."""

    def __reduce__(self) -> tuple[object, ...]:
        sys.exit(6)


class ErrorThatInterruptsWhenPrinted(Exception):
    """Raised by a task; its str() raises KeyboardInterrupt."""

    def __str__(self) -> str:
        raise KeyboardInterrupt


def returns_a_result_that_exits_when_pickled() -> ExitsWhenPickled:
    return ExitsWhenPickled()


def returns_a_result_that_interrupts_when_pickled() -> InterruptsWhenPickled:
    return InterruptsWhenPickled()


def raises_an_error_that_exits_when_pickled() -> None:
    raise ErrorThatExitsWhenPickled("raised in the worker")


def raises_an_error_that_interrupts_when_printed() -> None:
    raise ErrorThatInterruptsWhenPrinted()


# --- For the pipelined backend (tests/test_processes_pipelined.py). ---


def recorded_sleep(events: str, number: int, seconds: float) -> int:
    """recorded(), then a sleep: a task long enough that a stop lands while it runs."""
    recorded(events, number, False)
    time.sleep(seconds)
    return number * 2


def recorded_exit(events: str, number: int, status: int) -> None:
    """Record, then die: os._exit, no reply."""
    recorded(events, number, False)
    os._exit(status)


def recorded_after_file(events: str, number: int, path: str, seconds: float) -> int:
    """Record, then wait for `path` (made by another task), then return."""
    recorded(events, number, False)
    wait_for_file(path, seconds)
    return number * 2


def recorded_fail_after_file(events: str, number: int, path: str, seconds: float) -> None:
    recorded(events, number, False)
    wait_for_file(path, seconds)
    raise Failed(number)


class SlowToDescribe(Exception):
    """Its first str() (the child runs it to describe the error) records -1 in `events`, then
    waits until `more` lines follow it there, or `seconds` pass: until the other children have
    started that many tasks while this error was being described."""

    def __init__(self, events: str, more: int, seconds: float) -> None:
        super().__init__(events, more, seconds)
        self.described = False

    def __str__(self) -> str:
        if not self.described:
            self.described = True
            events, more, seconds = self.args
            recorded(events, -1, False)
            lines = len(Path(events).read_text().split()) + more
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and len(Path(events).read_text().split()) < lines:
                time.sleep(0.005)
        return "slow to describe"


def recorded_fail_slow_to_describe(events: str, number: int, more: int, seconds: float) -> None:
    """Record, then fail with an error slow to describe (SlowToDescribe)."""
    recorded(events, number, False)
    raise SlowToDescribe(events, more, seconds)


def recorded_system_exit(events: str, number: int) -> None:
    recorded(events, number, False)
    raise SystemExit(3)


def forks_and_returns(number: int) -> int:
    """fork(), and both copies return (careless code does): only the task's own process may
    answer for it."""
    os.fork()
    return number * 2


class KillsItsLoader:
    """A task whose unpickling ends the process that loads it (os._exit(5)): in the child."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return os._exit, (5,)

    def __call__(self) -> None:  # never reached: loading it ends the process
        return None


def recorded_kill(events: str, number: int) -> None:
    """Record, then SIGKILL this process, as the out-of-memory killer would."""
    recorded(events, number, False)
    kill_myself()


def recorded_outcome(events: str, number: int, outcome: str) -> int:
    """Record, then return (ok), raise Failed (fail) or die with status 7 (exit)."""
    recorded(events, number, False)
    if outcome == "fail":
        raise Failed(number)
    if outcome == "exit":
        os._exit(7)
    return number * 2


def scaled(number: int, *, factor: int = 1) -> int:
    return number * factor


class Tally:
    """State that pickles by value: each task that calls a bound method gets its own copy."""

    def __init__(self) -> None:
        self.count = 0

    def bump(self, by: int) -> int:
        self.count += by
        return self.count


def gate(folder: str, name: str, path: str, seconds: float) -> int:
    """Write this process's pid to folder/name, then wait for `path`; return the pid."""
    announce_then_sleep(folder, name, 0)
    wait_for_file(path, seconds)
    return os.getpid()


def recorded_pid(events: str, number: int) -> int:
    """recorded(), returning the pid of the process that ran it."""
    recorded(events, number, False)
    return os.getpid()


def echo_size(payload: bytes, size: int) -> bytes:
    """Return `size` bytes, after checking the argument arrived whole."""
    if payload != bytes(len(payload)):
        raise ValueError("the argument arrived damaged")
    return bytes(size)
