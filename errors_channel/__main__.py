"""`python -m errors_channel`: the pool with an errors queue; `--error-capacity 1` deadlocks it."""

from __future__ import annotations

import argparse
import asyncio

from deadlock_watch import Watchdog
from demo_args import DemoArgumentParser, add_pool_arguments, say, whole_number
from errors_channel import asyncio_fixes, asyncio_pool
from errors_channel.fixes import run_draining_while_waiting, run_with_room_for_every_error
from errors_channel.pool import ThreadStartFailed, double_evens_fail_odds, run


def main(argv: list[str] | None = None) -> int:
    parser = DemoArgumentParser(
        prog="python -m errors_channel",
        description="Stage 2: workers put job * 2 on a results queue and odd jobs' errors on an "
        "errors queue; main waits for every worker, then reads one error. When more jobs fail "
        "than the errors queue holds, it deadlocks.",
    )
    add_pool_arguments(parser, workers="worker threads", jobs="process jobs 1..N; odd ones fail")
    parser.add_argument(
        "--results-capacity",
        type=whole_number(0),
        default=100,
        help="items the results queue holds, as in Go: 0 is unbuffered (default: 100)",
    )
    parser.add_argument(
        "--error-capacity",
        type=whole_number(0),
        default=100,
        help="items the errors queue holds, as in Go: 0 is unbuffered (default: 100; "
        "1 reproduces the post's deadlock)",
    )
    parser.add_argument(
        "--fix",
        choices=["room-for-every-error", "drain-while-waiting"],
        help="run a fixed main instead of the post's: queues sized for every job, or collectors "
        "that read both queues while the workers run; either one reports every error",
    )
    parser.add_argument(
        "--asyncio",
        action="store_true",
        help="the same program with coroutines on one asyncio event loop instead of threads "
        "(errors_channel/asyncio_pool.py); it deadlocks the same way",
    )
    parser.add_argument(
        "--no-watchdog",
        action="store_true",
        help="do not watch for the deadlock: see the raw hang (with threads Ctrl-C does not end "
        "it, use Ctrl-\\ or kill; with --asyncio Ctrl-C does)",
    )
    args = parser.parse_args(argv)
    try:
        return run_demo(args)
    except ThreadStartFailed as error:
        # The OS refused a thread: a size this machine cannot run, not a bug. The pool has
        # stopped the threads it did start (the watchdog, a daemon thread, ends with the process).
        parser.fail(f"{error} (try fewer --workers)")


def run_demo(args: argparse.Namespace) -> int:
    """Run the pool, or a fix, as the flags say, and print what its main saw."""
    work = double_evens_fail_odds(args.work_seconds)
    watchdog = None if args.no_watchdog else Watchdog().start()
    if args.asyncio:
        # The same program, its workers coroutines: errors_channel/asyncio_pool.py.
        coroutine_work = asyncio_pool.double_evens_fail_odds(args.work_seconds)
        pool = (args.jobs, args.workers, coroutine_work, say)
        capacities = (args.results_capacity, args.error_capacity)
        if args.fix == "room-for-every-error":
            program = asyncio_fixes.run_with_room_for_every_error(*pool)
        elif args.fix == "drain-while-waiting":
            program = asyncio_fixes.run_draining_while_waiting(*pool, *capacities)
        else:
            program = asyncio_pool.run(*pool, *capacities)
        outcome = asyncio.run(program)
    elif args.fix == "room-for-every-error":
        outcome = run_with_room_for_every_error(args.jobs, args.workers, work, say)
    elif args.fix == "drain-while-waiting":
        outcome = run_draining_while_waiting(
            args.jobs, args.workers, work, say, args.results_capacity, args.error_capacity
        )
    else:
        outcome = run(
            args.jobs, args.workers, work, say, args.results_capacity, args.error_capacity
        )
    if watchdog is not None:
        watchdog.stop()

    if args.fix is None:
        # The post's main: it read at most one error and knows of no other.
        for error in outcome.errors:
            say(f"finished with error: {error}")
        return 0
    for error in outcome.errors:
        say(f"error: {error}")
    say(f"finished: {len(outcome.results)} results, {len(outcome.errors)} errors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
