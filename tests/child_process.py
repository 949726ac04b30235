"""A test's child process that speaks in lines: what it has said, what to tell it, and a backstop.

Used by the interrupt tests of stages 3 and 4, whose children run a pool, say where their tasks are
and take orders on stdin, while the test sends them real signals.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from tests.conftest import REPO_ROOT

# A child that hangs is killed after this long: its output then ends, so every read returns and
# the test fails on what the child said (or did not).
BACKSTOP_SECONDS = 30.0


class Child:
    """A running child, and a line-by-line view of what it says."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.said: list[str] = []

    def read_until(self, *lines: str) -> None:
        """Read what the child says until it has said every one of `lines`."""
        assert self.process.stdout is not None
        while not set(lines) <= set(self.said):
            said = self.process.stdout.readline()
            if not said:
                raise AssertionError(f"the child ended before saying {lines}: {self.said}")
            self.said.append(said.rstrip("\n"))

    def tell(self, *lines: str) -> None:
        assert self.process.stdin is not None
        for line in lines:
            self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self) -> int:
        """Read everything else the child says until it exits; its exit status.

        Through the same file object as read_until: communicate() would read the raw pipe and
        lose the lines that readline() had already buffered.
        """
        assert self.process.stdout is not None
        self.said += [line.rstrip("\n") for line in self.process.stdout]
        return self.process.wait()

    def started(self) -> list[int]:
        """The numbers of the tasks the child said it started ("start N")."""
        return sorted(int(line.split()[1]) for line in self.said if line.startswith("start "))


Spoken = TypeVar("Spoken", bound=Child)


@contextmanager
def spawn(kind: type[Spoken], script: str, *arguments: str, stdin: bool = True) -> Iterator[Spoken]:
    """Run `script` with `arguments` in a fresh Python; kill it on the way out, and at the latest
    after BACKSTOP_SECONDS."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *arguments],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        text=True,
    )
    backstop = threading.Timer(BACKSTOP_SECONDS, process.kill)
    backstop.start()
    try:
        yield kind(process)
    finally:
        backstop.cancel()
        process.kill()
        process.wait()
