"""Helpers shared by the tests: running a stage's demo as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import settings

REPO_ROOT = Path(__file__).resolve().parent.parent

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
