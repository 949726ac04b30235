"""One cell row of the failure matrix: `python -m plots.failures_child --contender C --workload W`.

Runs one contender's caller (`plots.failures`) on one workload, in a process of its own, because
some of them hang for good and some are sent a real SIGINT. Everything it learns goes to the events
file as JSON lines, next to the lines the jobs write: what the caller got (results, errors, whether
each error was tied to its input and kept its traceback), and, at the moment the caller's code has
returned or unwound, which threads and child processes are still running.

It adds nothing to the run itself: no signal handler, no watchdog, no timeout. What the caller's
code raises is reported and then raised again, so the exit status is the one the tool gives.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import traceback
from functools import partial

from demo_args import DemoArgumentParser
from plots.contenders import BY_NAME, MATRIX, GoProgram
from plots.failures import (
    WORKERS,
    WORKLOADS_BY_NAME,
    JobFailed,
    JobSpec,
    Run,
    end_job,
    job,
    job_async,
    record,
)
from plots.start_method import start_the_forkserver

# The matrix's Python callers, by name (a Go row is a program of its own).
PYTHON_CALLERS = {
    contender.name: contender.call
    for contender in MATRIX
    if contender.call is not None and not isinstance(contender.call, GoProgram)
}


def describe(given: int | None, error: BaseException) -> dict[str, object]:
    """One error as the caller holds it: its job, the input the caller tied it to, its traceback."""
    text = "".join(traceback.format_exception(error))
    return {
        "type": type(error).__name__,
        "job": error.job if isinstance(error, JobFailed) else None,
        "given": given,
        # The frame that raised, in the error's own traceback or in the remote traceback that
        # process pools attach as its __cause__.
        "traceback": f", in {end_job.__name__}\n" in text,
    }


def report(run: Run, raised: BaseException | None) -> None:
    main = threading.main_thread()
    record(
        run.events,
        {
            "caller": "raised" if raised is not None else "returned",
            "raised": type(raised).__name__ if raised is not None else None,
            # An Exception out of the caller is a bug in the caller; tools raise only what the
            # jobs or the user did (SystemExit, KeyboardInterrupt).
            "raised_exception": isinstance(raised, Exception),
            "results": [[given, value] for given, value in run.results],
            "errors": [describe(given, error) for given, error in run.errors],
            # What is still running now that the caller's code is done with the pool.
            "threads": [thread.name for thread in threading.enumerate() if thread is not main],
            "processes": [process.pid for process in multiprocessing.active_children()],
        },
    )


def main() -> None:
    parser = DemoArgumentParser(
        prog="python -m plots.failures_child",
        description="Run one contender of the failure matrix on one workload; report to a file.",
    )
    parser.add_argument("--contender", choices=list(PYTHON_CALLERS), required=True)
    parser.add_argument("--workload", choices=list(WORKLOADS_BY_NAME), required=True)
    parser.add_argument("--events", required=True, help="the file to append JSON lines to")
    parser.add_argument("--job-seconds", type=float, required=True)
    args = parser.parse_args()
    call = PYTHON_CALLERS[args.contender]
    workload = WORKLOADS_BY_NAME[args.workload]
    spec = JobSpec(args.events, args.job_seconds, workload.odd_jobs_fail, workload.system_exit_job)
    run = Run(
        job=partial(job, spec),
        job_async=partial(job_async, spec),
        inputs=list(range(1, workload.jobs + 1)),
        workers=WORKERS,
        events=args.events,
        give_up_after=workload.give_up_after,
    )
    with contextlib.ExitStack() as resources:
        # A caller that needs something that is not its pool's (a Dask cluster, which takes
        # seconds to start) gets it before the clock starts, and lets it go after the report.
        prepare = getattr(call, "prepare", None)
        if prepare is not None:
            resources.enter_context(prepare(WORKERS))
        # So does a process pool's forkserver: one per program, started once, like the
        # interpreter, whose start is not the run's either.
        if BY_NAME[args.contender].runs_on == "processes":
            start_the_forkserver()
        record(args.events, {"caller": "started"})
        try:
            call(run)
        except BaseException as unwound:
            report(run, unwound)
            raise
        report(run, None)


if __name__ == "__main__":
    main()
