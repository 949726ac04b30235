"""`python -m naive`: run the Go-by-Example pool and print who processed what."""

from __future__ import annotations

from demo_args import DemoArgumentParser, add_pool_arguments, say
from naive.pool import ThreadStartFailed, double_after, run


def main(argv: list[str] | None = None) -> int:
    parser = DemoArgumentParser(
        prog="python -m naive",
        description="Stage 1: a fixed number of worker threads take jobs from a queue and put "
        "job * 2 on a results queue. There is no place for errors yet.",
    )
    add_pool_arguments(parser, workers="worker threads", jobs="process jobs 1..N")
    args = parser.parse_args(argv)

    try:
        results = run(args.jobs, args.workers, double_after(args.work_seconds), say)
    except ThreadStartFailed as error:
        # The OS refused a thread: a size this machine cannot run, not a bug. run() has stopped
        # the threads it did start.
        parser.fail(f"{error} (try fewer --workers)")
    say("results: " + (" ".join(str(result) for result in results) or "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
