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
        # A task does not know its worker; the pool names its threads worker-1, worker-2, ...
        say(f"{threading.current_thread().name} processing job {number}")
        time.sleep(work_seconds)
        if number % 2 == 0:
            return number * 2
        raise JobFailed(f"error on job {number}")

    return run_job


def main(argv: list[str] | None = None) -> int:
    parser = DemoArgumentParser(
        prog="python -m robust",
        description="Stage 3: a pool of tasks, each keeping its own error, so failures can never "
        "fill a queue. Odd jobs fail. Exit status 0 if no task failed, 1 otherwise.",
    )
    add_pool_arguments(parser, workers="tasks run at once", jobs="run jobs 1..N; odd ones fail")
    parser.add_argument(
        "--max-errors",
        type=whole_number(1),
        default=10,
        help="give up with 'Too many errors.' once this many tasks have failed (default: 10; "
        "try --jobs 30)",
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

    for number, task in enumerate(pool.tasks, start=1):
        say(
            f"task {number}: error: {task.err}"
            if task.err
            else f"task {number}: result {task.result}"
        )

    # The post's caller: walk the tasks, count the errors, give up once there are too many.
    error_count = 0
    for task in pool.tasks:
        if task.err is not None:
            error_count += 1
        if error_count >= args.max_errors:
            say("Too many errors.")
            return 1
    say(f"finished: {len(pool.tasks) - error_count} results, {error_count} errors")
    return 1 if error_count else 0


if __name__ == "__main__":
    raise SystemExit(main())
