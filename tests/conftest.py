"""Helpers shared by the tests: running a stage's demo as a real subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hypothesis import settings

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent

# What a test module that needs an optional extra says when it skips for want of it: with only the
# `test` extra installed, every module still collects, and those skip with this one line.
NEEDS_PLOTS = "needs matplotlib, which the plots extra installs: pip install -e '.[plots]'"
NEEDS_UVLOOP = "needs uvloop, which the backends extra installs: pip install -e '.[backends]'"
NEEDS_DASK = (
    "needs dask and distributed, which the backends extra installs: pip install -e '.[backends]'"
)

# Many tests send a real SIGINT (to a child, or in-process) and expect a KeyboardInterrupt. A shell
# without job control starts a background command (`make test &`, `nohup make test &`) with SIGINT
# ignored (POSIX, "Asynchronous Lists"), exec keeps an ignored signal ignored, and Python then
# leaves it ignored instead of installing its KeyboardInterrupt handler (the signal module's docs:
# "if the parent process has not changed it"). Those tests then failed (seen here: 16 in
# `nohup make test &`, an in-process one taking its pytest worker down). Give this process
# Python's usual handler: a child started from here then begins with SIGINT at its default, as
# from an interactive shell, and installs its own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Thread scheduling makes single examples slow now and then; a deadline would only add flakiness.
settings.register_profile("threads", deadline=None)
settings.load_profile("threads")


def run_module(module: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args...` from the repository root and capture its output.

    The timeout is the first line of defence against a run that hangs: subprocess.run kills the
    child and raises TimeoutExpired, so a hang fails the test instead of stalling the suite.
    """
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def finish_within(seconds: float, call: Callable[[], T]) -> T:
    """Return call(), made in a daemon thread, or fail the test if it takes longer than `seconds`.

    Threads inherit daemon status from the thread that creates them, so every thread the call
    starts is a daemon too: if the call deadlocks, the test fails instead of hanging, and the stuck
    threads cannot keep the test process from exiting.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # handed to the test's thread below
            failure.append(error)

    runner = threading.Thread(target=target, name="finish-within", daemon=True)
    runner.start()
    runner.join(seconds)
    if runner.is_alive():
        raise AssertionError(f"still running after {seconds} s: deadlocked?")
    if failure:
        raise failure[0]
    return outcome[0]


def wait_for(
    condition: Callable[[], bool], what: str, seconds: float = 30.0, poll: float = 0.01
) -> None:
    """Poll until `condition` holds; the limit is only a backstop for a hang."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(poll)
