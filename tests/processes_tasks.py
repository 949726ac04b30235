"""Tasks for the process backend's tests: module-level, so that they pickle by reference and the
worker processes import them from here. Each one that matters returns or records its pid, so a
test can tell which process ran it and whether that process is still there."""

from __future__ import annotations

import ctypes
import os
import signal
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
