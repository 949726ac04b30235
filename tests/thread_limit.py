"""Make thread start fail for real, cheaply: a child process with room for exactly N more threads.

Starting threads until the operating system refuses one takes about 22,000 threads and a minute on
the development machine (see demo_args.MAX_WORKERS). Instead, the child gives every new thread a
large stack (`threading.stack_size`) and caps its address space (`RLIMIT_AS`) just above what it
uses now plus N such stacks. The (N+1)th `Thread.start()` then fails inside `pthread_create`,
exactly as it does when a process runs out of threads: CPython raises
`RuntimeError: can't start new thread`.

Why the numbers hold: the headroom left for everything else (MARGIN) is smaller than one stack,
so it can never make room for an extra thread, and larger than what the small test programs
allocate. MALLOC_ARENA_MAX=1 stops glibc from reserving a 64 MiB malloc arena per thread, which
would otherwise eat the headroom.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO_ROOT

STACK_BYTES = 128 << 20
MARGIN_BYTES = 48 << 20

_PRELUDE = """
import resource
import threading

threading.stack_size({stack})


def address_space_in_use() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def leave_room_for_threads(count: int) -> None:
    limit = address_space_in_use() + count * ({stack} + (1 << 20)) + {margin}
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
"""


def run_with_room_for_threads(
    threads: int, setup: str, body: str, *, timeout: float = 10.0
) -> subprocess.CompletedProcess[str]:
    """Run `setup` (imports), then `body` with room for `threads` more threads, in a child.

    A child that hangs (the bug this guards against: threads left waiting after a failed start)
    is killed at `timeout` and the test fails with TimeoutExpired.
    """
    program = "\n".join(
        [
            _PRELUDE.format(stack=STACK_BYTES, margin=MARGIN_BYTES),
            textwrap.dedent(setup),
            f"leave_room_for_threads({threads})",
            textwrap.dedent(body),
        ]
    )
    return subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO_ROOT,
        env={**os.environ, "MALLOC_ARENA_MAX": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
