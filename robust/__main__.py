"""`python -m robust`: run tasks that keep their own errors, then walk them as the post's caller."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from demo_args import DemoArgumentParser, add_pool_arguments, say, whole_number
from robust.pool import Pool, Task


class JobFailed(Exception):
    """The error a demo job fails with."""


def job(number: int, work_seconds: float) -> Callable[[], int]:
    """The demo's task for job `number`: as in stage 2, odd jobs fail and even ones double."""

    def run_job() -> int:
        # A task does not know its worker; the pool names its threads worker-1, worker-2, ...,
        # and the trace reads as in stages 1 and 2: "worker 1 processing job 1".
        worker = threading.current_thread().name.replace("worker-", "worker ", 1)
        say(f"{worker} processing job {number}")
        time.sleep(work_seconds)
        if number % 2 == 0:
            return number * 2
        raise JobFailed(f"error on job {number}")

    return run_job


def main(argv: list[str] | None = None) -> int:
    parser = DemoArgumentParser(
        prog="python -m robust",
        description="Stage 3: a pool of tasks, each keeping its own error, so failures can never "
        "fill a queue. Odd jobs fail. Exit status 0 if no task failed, 1 otherwise, 130 after "
        "Ctrl-C (the running tasks finish first), 2 for bad input or when threads cannot be "
        "started.",
    )
    add_pool_arguments(parser, workers="tasks run at once", jobs="run jobs 1..N; odd ones fail")
    parser.add_argument(
        "--max-errors",
        type=whole_number(1),
        default=10,
        help="the caller gives up with 'Too many errors.' once it has met this many failed "
        "tasks (default: 10; try --jobs 30)",
    )
    args = parser.parse_args(argv)

    pool = Pool([Task(job(n, args.work_seconds)) for n in range(1, args.jobs + 1)], args.workers)
    try:
        pool.run()
    except KeyboardInterrupt:
        # run() let the running tasks finish and started no more; say how far it got.
        finished = sum(task.finished for task in pool.tasks)
        say(f"interrupted: {finished} of {len(pool.tasks)} tasks finished")
        return 130
    except RuntimeError as cannot_start:
        # The system refused another thread: a limit of this machine, not a bug to trace back.
        parser.exit(2, f"{parser.prog}: error: {cannot_start}\n")

    # The post's caller: walk the tasks, log each error as it is met, give up once there are too
    # many. Every task ran all the same: the pool does not know the caller's limit.
    error_count = 0
    for task in pool.tasks:
        if task.err is not None:
            say(f"error: {task.err}")
            error_count += 1
        if error_count >= args.max_errors:
            say("Too many errors.")
            return 1
    results = [str(task.result) for task in pool.tasks if task.err is None]
    say("results: " + (" ".join(results) or "none"))
    say(f"finished: {len(results)} results, {error_count} errors")
    return 1 if error_count else 0


if __name__ == "__main__":
    raise SystemExit(main())
