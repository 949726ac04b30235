"""A pytest plugin for the mutation run (`-p tools.pytest_exit_at_once`): exit as soon as the
session ends, instead of waiting at interpreter exit for threads a mutant left stuck.

A mutant that deadlocks often leaves non-daemon threads behind, and then pytest, having reported
the failure, would hang at exit until the run's time limit. Exiting at once saves that wait. When
every test passed, the threads still alive are waited for a little: one that is still there is a
thread left behind, which counts as a failure (exit status 1), as the hang would have.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

# How long a passing run's leftover threads get to end before they count as left behind.
LEFTOVER_GRACE_SECONDS = 10.0

_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    status = _status[-1] if _status else 1
    if status == 0:
        deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
        for thread in threading.enumerate():
            if thread is threading.main_thread() or thread.daemon:
                continue
            thread.join(max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                print(f"\nFAILED: thread {thread.name!r} left behind after the tests")
                status = 1
                break
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
