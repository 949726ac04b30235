"""Command-line plumbing shared by the stage demos (`python -m naive` and friends).

Not part of any stage's lesson: it only makes every demo refuse bad input the same way, with exit
status 2 and a one-line message instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

# The most worker threads a demo will start. Measured on the development machine (2 CPUs, Linux
# 6.18, CPython 3.11.7): one process could start 22,305 threads, then `Thread.start()` failed with
# "can't start new thread": its memory mappings had reached vm.max_map_count (65,530), at about
# three per thread (the stack and its guard page are two). Starting gets slower as threads pile up,
# for two reasons: every futex wake-up walks a bucket of the kernel's per-process futex hash, which
# has 16 buckets here (4 per CPU, at least 16), so its cost grows with the number of parked threads;
# and on 3.11 every non-daemon start scans all earlier threads' shutdown locks
# (threading._maintain_shutdown_locks). Starting and stopping 2,000 workers took 1.8-1.9 s, 5,000
# took 3-13 s and 10,000 took 11-29 s (4-18 s on 3.13), the spread from other load on the machine.
# 10,000 is under half the hard limit and about the most a demo user would wait for;
# docs/limits.md has the details.
MAX_WORKERS = 10_000
# The most jobs a demo will queue. All jobs are queued up front: a million no-op jobs take about a
# minute and 130-330 MB here; much more is a typing mistake, not a demo.
MAX_JOBS = 1_000_000
# The longest a demo job may take. time.sleep() raises OverflowError past about 9.2e9 s, which
# would end the worker thread and leave main waiting for it; a job longer than an hour is a typo.
MAX_WORK_SECONDS = 3_600


class DemoArgumentParser(argparse.ArgumentParser):
    """argparse, but a user's mistake is reported on one line (argparse adds the usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # `--workers=--`: argparse takes that "--" for its end-of-options marker even after "=".
        # CPython 3.11 then drops it and hands the option an empty list, skipping type= and
        # choices= (a traceback further on, or a demo run with workers=[]); 3.13 hands it the
        # string "--". Refused on every version, in the words argparse uses for `--workers --`.
        # (_get_values is where argparse turns an option's strings into its value, and the one
        # place that sees the option together with what followed its "=".)
        if action.option_strings and arg_strings == ["--"]:
            raise argparse.ArgumentError(action, "expected one argument")
        return super()._get_values(action, arg_strings)

    def fail(self, message: str) -> NoReturn:
        """A failure the user can act on, found after the arguments were accepted: one line, 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a base-10 integer from `minimum` to `maximum` (if given)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            # Checked before anything starts: past the limit, the run would take minutes or fail.
            shown = text if len(text) <= 30 else f"{text[:12]}...({len(text)} digits)"
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {shown}")
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
    if value > MAX_WORK_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_WORK_SECONDS:,}, got {text}")
    return value


def add_pool_arguments(parser: argparse.ArgumentParser, *, workers: str, jobs: str) -> None:
    """The flags every stage's demo shares: --workers, --jobs and --work-seconds."""
    parser.add_argument(
        "--workers",
        type=whole_number(1, MAX_WORKERS),
        default=3,
        help=f"{workers} (default: 3; at most {MAX_WORKERS:,}: past a few thousand, starting "
        "threads takes seconds, and one process cannot start many more than 20,000)",
    )
    parser.add_argument(
        "--jobs",
        type=whole_number(0, MAX_JOBS),
        default=9,
        help=f"{jobs} (default: 9; at most {MAX_JOBS:,}, all queued up front)",
    )
    parser.add_argument(
        "--work-seconds",
        type=seconds,
        default=0.3,
        help="simulated work per job, in seconds (default: 0.3, so that each of 3 workers does "
        f"about 3 of the 9 jobs and a run takes about a second; at most {MAX_WORK_SECONDS:,})",
    )


def say(line: str) -> None:
    """Print one line from any thread without interleaving, and show it at once.

    `print` writes the text and the newline in two calls, between which another thread's line can
    land; one write of the whole line cannot be split that way. Flushing keeps the trace live and
    means a process that is ended abruptly (the deadlock watchdog) has shown everything it said.
    """
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader has gone (`python -m naive | head -3`). Raising would end the worker thread
        # that called us, and main would wait forever for its jobs' results. Instead send the rest
        # of the output nowhere, as the Python docs advise for SIGPIPE, and let the run finish.
        nowhere = os.open(os.devnull, os.O_WRONLY)
        os.dup2(nowhere, sys.stdout.fileno())
        os.close(nowhere)
