"""`python -m beyond`: the post's demo done right: the pool stops itself at the tenth error."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from beyond import Cancelled, Pool, Task, current_token
from demo_args import DemoArgumentParser, add_pool_arguments, say, seconds, whole_number


class JobFailed(Exception):
    """The error a demo job fails with."""


class Job:
    """The demo's task for job `number`: as in stages 2 and 3, odd jobs fail and even ones double.
    Its task is named "job N" (Task(name=...)), which every line and message about it then says.
    """

    def __init__(self, number: int, work_seconds: float) -> None:
        self.number = number
        self.work_seconds = work_seconds

    def __call__(self) -> int:
        # A task does not know its worker; the pool names its threads worker-1, worker-2, ...,
        # and the trace reads as in stages 1 to 3: "worker 1 processing job 1".
        worker = threading.current_thread().name.replace("worker-", "worker ", 1)
        say(f"{worker} processing job {self.number}")
        # The work, as a sleep that is also a checkpoint: it ends early, raising Cancelled or
        # TimeoutError, once the pool is cancelled (Ctrl-C) or the job's or run's deadline passes.
        current_token().sleep(self.work_seconds)
        if self.number % 2 == 0:
            return self.number * 2
        raise JobFailed(f"error on job {self.number}")


def outcome(task: Task[int]) -> str:
    return f"error: {task.err}" if task.err is not None else f"result: {task.result}"


def main(argv: list[str] | None = None) -> int:
    parser = DemoArgumentParser(
        prog="python -m beyond",
        description="Stage 4: the pool you would ship. Odd jobs fail; the pool itself stops "
        "after --max-errors failures (no new job starts, the running ones finish) and says how "
        "many jobs never started. Exit status 0 if no task failed, 1 otherwise (or if the pool "
        "stopped early), 130 after Ctrl-C (running tasks are told and finish first), 2 for bad "
        "input or when threads cannot be started.",
    )
    add_pool_arguments(parser, workers="tasks run at once", jobs="run jobs 1..N; odd ones fail")
    parser.add_argument(
        "--max-errors",
        type=whole_number(1),
        default=10,
        help="the pool stops once this many tasks have failed (default: 10; try --jobs 30)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        help="seconds for the whole run; then no job starts and running ones stop at their "
        "next checkpoint with TimeoutError (default: none)",
    )
    parser.add_argument(
        "--task-timeout",
        type=seconds,
        default=None,
        help="seconds each job may run before its checkpoint raises TimeoutError (default: none)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="print each job as it finishes (completion order); jobs are made only as workers "
        "take them, so memory does not grow with --jobs",
    )
    args = parser.parse_args(argv)

    # --stream: the tasks taken and not yet printed, by name (at most --workers of them, so
    # memory stays flat), so that Ctrl-C can count the ones that finished without being printed.
    not_printed: dict[str, Task[int]] = {}

    def tasks() -> Iterator[Task[int]]:
        for number in range(1, args.jobs + 1):
            task = Task(
                Job(number, args.work_seconds), timeout=args.task_timeout, name=f"job {number}"
            )
            if args.stream:
                not_printed[task.name] = task
            yield task

    # A list for run(), so that the walk afterwards sees every job, started or not; a generator
    # for --stream, which keeps none.
    pool = Pool(tasks() if args.stream else list(tasks()), args.workers, max_errors=args.max_errors)
    # --stream counts what it printed instead of keeping it; run() keeps every task anyway.
    printed = printed_errors = 0
    try:
        if args.stream:
            # closing(): the pool is stopped and its running tasks waited for even if the loop
            # body is interrupted (Ctrl-C while printing).
            with contextlib.closing(pool.stream(args.timeout)) as as_they_finish:
                for task in as_they_finish:
                    del not_printed[task.name]
                    say(f"{task.name} {outcome(task)}")
                    printed += 1
                    printed_errors += task.err is not None
        else:
            pool.run(args.timeout)
    except KeyboardInterrupt:
        # The running tasks were told and have finished (or, after a second Ctrl-C, still finish
        # before the process exits); no new one started. Say how far it got.
        unprinted = [task for task in [*not_printed.values(), *pool.tasks] if task.finished]
        cancelled = sum(isinstance(task.err, Cancelled) for task in unprinted)
        say(
            f"interrupted: {printed + len(unprinted)} of {args.jobs} tasks finished "
            f"({cancelled} cancelled)"
        )
        return 130
    except RuntimeError as cannot_start:
        # The system refused another thread: a limit of this machine, not a bug to trace back.
        parser.exit(2, f"{parser.prog}: error: {cannot_start}\n")

    if pool.stopped is not None:
        say(f"stopped early: {pool.stopped.message}")
    if args.stream:
        finished, errors = printed, printed_errors
    else:
        # The post's caller walks the tasks; the limit was the pool's job this time.
        ran = [task for task in pool.tasks if task.finished]
        for task in ran:
            if task.err is not None:
                say(f"error: {task.err}")
        results = [str(task.result) for task in ran if task.err is None]
        say("results: " + (" ".join(results) or "none"))
        finished, errors = len(ran), len(ran) - len(results)
    summary = f"finished: {finished - errors} results, {errors} errors"
    if finished < args.jobs:
        summary += f"; {args.jobs - finished} tasks never started"
    say(summary)
    return 1 if errors or pool.stopped is not None else 0


if __name__ == "__main__":
    raise SystemExit(main())
