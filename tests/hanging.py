"""Running a demo that should hang: in a session of its own, watched until it is stuck, then killed
together with every process it started, and checked that none is left.

"Stuck" is shown, not assumed: the program has printed how far it got, and for a whole second
after that it neither printed more, nor ended, nor used any CPU. A program that was only slow
would be working. Where Linux tells (x86_64), the system call each thread waits in is recorded
too, so a test can say *where* each process is stuck.

Linux only: it reads /proc.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO_ROOT

HAS_PROC = Path("/proc/self/stat").exists()

# The waits these tests look for, by x86_64 system call number (asm/unistd_64.h).
X86_64_SYSCALLS = {1: "write", 7: "poll", 61: "wait4", 202: "futex", 232: "epoll_wait"}


@dataclass(frozen=True)
class StuckRun:
    stdout: str
    stderr: str
    pid: int
    # (pid, system call) for every thread of every process in the session, when Linux tells us.
    waits: tuple[tuple[int, str], ...] | None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces; the fields after it are fixed.
    return text.rsplit(")", 1)[1].split()


def processes_in_session(session: int) -> list[int]:
    """The live (not zombie) processes of a session."""
    found = []
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def _cpu_ticks(pids: list[int]) -> int:
    """User + system CPU time of the processes, in clock ticks (0 for one that has gone)."""
    total = 0
    for pid in pids:
        if (fields := _stat_fields(pid)) is not None:
            total += int(fields[11]) + int(fields[12])
    return total


def _waits(pids: list[int]) -> tuple[tuple[int, str], ...] | None:
    if platform.machine() != "x86_64":
        return None
    waits = []
    for pid in pids:
        for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
            try:
                number = (task / "syscall").read_text().split()[0]
            except (OSError, IndexError):
                return None
            name = X86_64_SYSCALLS.get(int(number), number) if number.isdigit() else number
            waits.append((pid, name))
    return tuple(waits)


def kill_session(session: int) -> None:
    """SIGKILL every process of the session (its leader's pid is also its process group's id)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(session, signal.SIGKILL)


def wait_until_session_is_empty(session: int, timeout: float = 5.0) -> list[int]:
    """Wait for the session's processes to be gone; return those still there after `timeout`."""
    deadline = time.monotonic() + timeout
    while (left := processes_in_session(session)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def run_until_stuck(
    *args: str, got_there: Callable[[str], bool], settle: float = 0.2, timeout: float = 20.0
) -> StuckRun:
    """Run `python -m args...`; once got_there(stdout), prove it stuck for 1 s, then kill it all.

    `settle` is how long the program may still need, once it printed its last line, to reach its
    final wait; the watched second starts after it.
    """
    with tempfile.TemporaryDirectory() as folder:
        out_path, err_path = Path(folder, "stdout"), Path(folder, "stderr")
        # The child writes through descriptors of its own, in append mode; we read the files
        # through others, so our reading never moves the place where it writes.
        with out_path.open("a") as out, err_path.open("a") as err:
            child = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=REPO_ROOT,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + timeout
            while not got_there(out_path.read_text()):
                assert child.poll() is None, f"ended: {child.returncode}: {out_path.read_text()}"
                assert time.monotonic() < deadline, f"never got there: {out_path.read_text()}"
                time.sleep(0.02)
            time.sleep(settle)
            pids = processes_in_session(child.pid)
            before, ticks_before = out_path.read_text(), _cpu_ticks(pids)
            time.sleep(1.0)
            assert child.poll() is None, f"it finished after all: {out_path.read_text()}"
            assert out_path.read_text() == before, "it was still making progress"
            assert _cpu_ticks(pids) == ticks_before, "it was still working"
            waits = _waits(pids)
        finally:
            kill_session(child.pid)
            child.wait()
        left = wait_until_session_is_empty(child.pid)
        assert left == [], f"processes left behind after the kill: {left}"
        return StuckRun(
            stdout=out_path.read_text(), stderr=err_path.read_text(), pid=child.pid, waits=waits
        )


def run_to_the_end(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `python -m args...` in its own session; fail if anything it started outlives it."""
    child = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(child.pid)
        child.communicate()
        raise
    # The demo's own process has been reaped; anything else in its session, it left behind.
    left = processes_in_session(child.pid)
    if left:
        kill_session(child.pid)
    assert left == [], f"processes outlived the demo: {left}"
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
