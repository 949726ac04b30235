"""`python -m naive`: run the Go-by-Example pool and print who processed what."""

from __future__ import annotations

from demo_args import DemoArgumentParser, say, seconds, whole_number
from naive.pool import double_after, run


def main(argv: list[str] | None = None) -> int:
    parser = DemoArgumentParser(
        prog="python -m naive",
        description="Stage 1: a fixed number of worker threads take jobs from a queue and put "
        "job * 2 on a results queue. There is no place for errors yet.",
    )
    parser.add_argument(
        "--workers", type=whole_number(1), default=3, help="worker threads (default: 3)"
    )
    parser.add_argument(
        "--jobs", type=whole_number(0), default=9, help="jobs 1..N to process (default: 9)"
    )
    parser.add_argument(
        "--work-seconds",
        type=seconds,
        default=0.3,
        help="simulated work per job, in seconds (default: 0.3, so each of 3 workers does about "
        "3 of the 9 jobs and the run takes about a second)",
    )
    args = parser.parse_args(argv)

    results = run(args.jobs, args.workers, double_after(args.work_seconds), say)
    say("results: " + (" ".join(str(result) for result in results) or "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
