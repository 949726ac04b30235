"""`python -m families FAMILY`: the post's deadlock in multiprocessing and concurrent.futures."""

from __future__ import annotations

import os
from collections import Counter

from deadlock_watch import Watchdog
from demo_args import DemoArgumentParser, add_pool_arguments, say, whole_number
from families import futures_nested, multiprocessing_join

# Bounds for the multiprocessing demo, so that a typo cannot exhaust the machine.
MEMORY_LIMIT = 256 * 1024 * 1024
PROCESS_LIMIT = 64


def pipe_capacity() -> int | None:
    """How many bytes a new pipe holds here (Linux: F_GETPIPE_SZ), or None where we cannot ask."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    get_size = getattr(fcntl, "F_GETPIPE_SZ", None)
    if get_size is None:
        return None
    reader, writer = os.pipe()
    try:
        return fcntl.fcntl(writer, get_size)
    finally:
        os.close(reader)
        os.close(writer)


def multiprocessing_join_demo(
    worker_count: int, item_count: int, item_bytes: int, fix: bool
) -> int:
    # Items differ only in their indices, whose pickles grow at 256 and 65,536: first and last.
    sizes = sorted(
        {
            multiprocessing_join.bytes_on_the_pipe(item_bytes, index)
            for index in (0, max(item_count - 1, 0))
        }
    )
    capacity = pipe_capacity()
    say(
        f"main: {worker_count} workers, {item_count} items each, "
        + " to ".join(f"{size:,}" for size in sizes)
        + " bytes apiece on the pipe"
        + (f"; a new pipe holds {capacity:,} bytes" if capacity is not None else "")
    )
    run = multiprocessing_join.run_reading_first if fix else multiprocessing_join.run_joining_first
    items = run(worker_count, item_count, item_bytes, say)

    # Every worker's every item, exactly once and whole.
    expected = {(w, i) for w in range(1, worker_count + 1) for i in range(item_count)}
    received = Counter((worker, index) for worker, index, _ in items)
    if set(received) != expected or max(received.values(), default=1) != 1:
        say("error: the items read are not the items put")
        return 1
    if any(len(payload) != item_bytes for _, _, payload in items):
        say("error: an item arrived with the wrong size")
        return 1
    say(f"finished: {len(items)} items, {item_count} from each worker")
    return 0


def futures_nested_demo(
    job_count: int, worker_count: int, seconds: float, fix: bool, watch: bool
) -> int:
    watchdog = Watchdog().start() if watch else None
    if fix:
        results = futures_nested.run_with_an_executor_per_step(
            job_count, worker_count, seconds, say
        )
    else:
        results = futures_nested.run_nested(job_count, worker_count, seconds, say)
    if watchdog is not None:
        watchdog.stop()
    say("results: " + " ".join(str(result) for result in results))
    say(f"finished: {len(results)} results")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = DemoArgumentParser(
        prog="python -m families",
        description="The post's deadlock is not Go's alone: the classic hang of multiprocessing "
        "and of concurrent.futures, each beside its fix. (asyncio's is stage 2 itself: "
        "python -m errors_channel --asyncio.)",
    )
    families = parser.add_subparsers(dest="family", required=True, metavar="FAMILY")

    joining = families.add_parser(
        "multiprocessing-join",
        help="join worker processes before reading the multiprocessing.Queue they filled",
        description="Worker processes put items on a multiprocessing.Queue; main joins them, "
        "then reads. Once the items outgrow the pipe under the queue, the workers cannot end and "
        "main waits forever (Ctrl-C ends it). The defaults hang on Linux.",
    )
    joining.add_argument(
        "--workers",
        type=whole_number(1),
        default=2,
        help=f"worker processes (default: 2, at most {PROCESS_LIMIT})",
    )
    joining.add_argument(
        "--items", type=whole_number(0), default=50, help="items each worker puts (default: 50)"
    )
    joining.add_argument(
        "--item-bytes",
        type=whole_number(0),
        default=1000,
        help="payload bytes per item (default: 1000)",
    )
    joining.add_argument(
        "--fix", action="store_true", help="read every item first, then join: never hangs"
    )

    nested = families.add_parser(
        "futures-nested",
        help="a task that waits for another task on its own, saturated, ThreadPoolExecutor",
        description="Each job's first step runs on a ThreadPoolExecutor, submits its second step "
        "to the same executor and waits for it. With at least as many jobs as workers, every "
        "worker waits for a step that no worker is free to run.",
    )
    add_pool_arguments(nested, workers="executor threads", jobs="jobs 1..N, each in two steps")
    nested.add_argument(
        "--fix", action="store_true", help="give the second steps an executor of their own"
    )
    nested.add_argument(
        "--no-watchdog",
        action="store_true",
        help="do not watch for the deadlock: see the raw hang (use Ctrl-\\ or kill to end it)",
    )
    args = parser.parse_args(argv)

    if args.family == "multiprocessing-join":
        # Stuck workers hold every unwritten item, and the fix holds them all in main at the end.
        if args.workers * args.items * args.item_bytes > MEMORY_LIMIT:
            joining.error(
                f"workers x items x item-bytes must be at most {MEMORY_LIMIT:,} bytes: "
                "every item is held in memory"
            )
        if args.workers > PROCESS_LIMIT:
            joining.error(f"at most {PROCESS_LIMIT} worker processes, got {args.workers}")
        return multiprocessing_join_demo(args.workers, args.items, args.item_bytes, args.fix)
    return futures_nested_demo(
        args.jobs, args.workers, args.work_seconds, args.fix, not args.no_watchdog
    )


if __name__ == "__main__":
    raise SystemExit(main())
