"""Command-line plumbing shared by the stage demos (`python -m naive` and friends).

Not part of any stage's lesson: it only makes every demo refuse bad input the same way, with exit
status 2 and a one-line message instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class DemoArgumentParser(argparse.ArgumentParser):
    """argparse, but a user's mistake is reported on one line (argparse adds the usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a base-10 integer no smaller than `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_pool_arguments(parser: argparse.ArgumentParser, *, workers: str, jobs: str) -> None:
    """The flags every stage's demo shares: --workers, --jobs and --work-seconds."""
    parser.add_argument(
        "--workers", type=whole_number(1), default=3, help=f"{workers} (default: 3)"
    )
    parser.add_argument("--jobs", type=whole_number(0), default=9, help=f"{jobs} (default: 9)")
    parser.add_argument(
        "--work-seconds",
        type=seconds,
        default=0.3,
        help="simulated work per job, in seconds (default: 0.3, so that each of 3 workers does "
        "about 3 of the 9 jobs and a run takes about a second)",
    )


def say(line: str) -> None:
    """Print one line from any thread without interleaving, and show it at once.

    `print` writes the text and the newline in two calls, between which another thread's line can
    land; one write of the whole line cannot be split that way. Flushing keeps the trace live and
    means a process that is ended abruptly (the deadlock watchdog) has shown everything it said.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
