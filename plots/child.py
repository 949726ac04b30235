"""Runs that may deadlock, each in a process of its own: `python -m plots.child ...`.

A deadlocked run cannot be cleaned up from inside (its threads are stuck for good), so the
benchmarks run each one in a child process, which reports on stdout, one JSON object per line, and
which the watchdog ends with exit status 2 when the deadlock forms.

- `deadlock-cell`: one cell of stage 2's deadlock map: the first F of J jobs fail.
- `timeline`: one stage's default demo, with every job's start and end (and, for a deadlock, the
  moment it was reported and the threads it caught).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from functools import partial

import beyond
import errors_channel.pool
import naive.pool
from deadlock_watch import DeadlockReport, Watchdog
from demo_args import DemoArgumentParser
from plots.contenders import CONTENDERS
from plots.workloads import check, no_op, quiet
from robust import Pool, Task

START = time.perf_counter()


def emit(record: dict[str, object]) -> None:
    """One JSON line on stdout, flushed: a run the watchdog ends has still said everything."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def now() -> float:
    return time.perf_counter() - START


def report_and_exit(report: DeadlockReport) -> None:
    emit(
        {
            "deadlock": now(),
            "blocked": {thread.name: thread.waiting_on for thread in report.threads},
        }
    )
    os._exit(2)


def recorded(fails: Callable[[int], bool], work_seconds: float) -> Callable[[int], int]:
    """The demo's job (sleep, then double or fail), reporting when it ran and on which worker."""

    def work(job: int) -> int:
        started = now()
        time.sleep(work_seconds)
        ok = not fails(job)
        emit(
            {
                "worker": threading.current_thread().name,
                "job": job,
                "start": started,
                "end": now(),
                "ok": ok,
            }
        )
        if not ok:
            raise errors_channel.pool.JobFailed(f"error on job {job}")
        return job * 2

    return work


def deadlock_cell(args: argparse.Namespace) -> None:
    work = recorded(lambda job: job <= args.failing, 0.0)
    with Watchdog(report_and_exit):
        errors_channel.pool.run(
            args.jobs, args.workers, work, quiet, args.results_capacity, args.error_capacity
        )
    emit({"finished": now()})


def timeline(args: argparse.Namespace) -> None:
    def odd(job: int) -> bool:
        return job % 2 == 1

    with Watchdog(report_and_exit):
        if args.stage == "naive":
            # Stage 1 has nowhere to put an error: its demo's jobs all succeed.
            naive.pool.run(
                args.jobs, args.workers, recorded(lambda job: False, args.seconds), quiet
            )
        elif args.stage == "errors_channel":
            errors_channel.pool.run(
                args.jobs,
                args.workers,
                recorded(odd, args.seconds),
                quiet,
                error_capacity=args.error_capacity,
            )
        elif args.stage == "robust":
            work = recorded(odd, args.seconds)
            tasks = [Task(partial(work, job)) for job in range(1, args.jobs + 1)]
            Pool(tasks, args.workers).run()
        else:
            work = recorded(odd, args.seconds)
            stage_4 = [beyond.Task(work, job) for job in range(1, args.jobs + 1)]
            beyond.Pool(stage_4, args.workers, max_errors=args.max_errors).run()
    emit({"finished": now()})


def memory_status(field: str) -> int:
    """A VmRSS / VmHWM line of /proc/self/status, in bytes."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field))


# The memory figure's runs, by contender name.
MEMORY_RUNS = {c.name: c.memory for c in CONTENDERS if c.memory is not None}


def memory(args: argparse.Namespace) -> None:
    run = MEMORY_RUNS[args.implementation]
    # Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current RSS, so the peak read
    # afterwards is this run's own, not the imports'.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = memory_status("VmRSS:")
    started = time.perf_counter()
    total = run(no_op, args.tasks, args.workers)
    seconds = time.perf_counter() - started
    peak = memory_status("VmHWM:")
    # Every no-op returns job * 2: the sum of all of them says no job was lost or doubled.
    if total != args.tasks * (args.tasks + 1):
        check([], args.tasks, args.implementation)
    emit({"peak_rss_growth": peak - before, "seconds": seconds})


def main() -> None:
    parser = DemoArgumentParser(prog="python -m plots.child", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    cell = commands.add_parser("deadlock-cell", help="one cell of the deadlock map")
    cell.add_argument("--jobs", type=int, required=True)
    cell.add_argument("--failing", type=int, required=True)
    cell.add_argument("--error-capacity", type=int, required=True)
    cell.add_argument("--results-capacity", type=int, required=True)
    cell.add_argument("--workers", type=int, default=3)
    line = commands.add_parser("timeline", help="one stage's demo, timed")
    line.add_argument(
        "--stage", choices=["naive", "errors_channel", "robust", "beyond"], required=True
    )
    line.add_argument("--error-capacity", type=int, default=100)
    line.add_argument("--jobs", type=int, default=9)
    line.add_argument("--workers", type=int, default=3)
    line.add_argument("--seconds", type=float, default=0.3)
    line.add_argument("--max-errors", type=int, default=None)
    peak = commands.add_parser("memory", help="one run of no-op tasks, and its peak memory")
    peak.add_argument("--implementation", choices=MEMORY_RUNS, required=True)
    peak.add_argument("--tasks", type=int, required=True)
    peak.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    if args.command == "deadlock-cell":
        deadlock_cell(args)
    elif args.command == "memory":
        memory(args)
    else:
        timeline(args)


if __name__ == "__main__":
    main()
