"""`python -m beyond`, run as a user would: the post's demo, with the limit inside the pool."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, run_module

TRACE_LINE = re.compile(r"worker (\d+) processing job (\d+)")
SUMMARY = re.compile(r"finished: (\d+) results, (\d+) errors(?:; (\d+) tasks never started)?")


def trace(lines: list[str]) -> list[int]:
    return sorted(int(m[2]) for line in lines if (m := TRACE_LINE.fullmatch(line)))


def test_demo_logs_each_error_and_exits_1_when_a_task_failed() -> None:
    completed = run_module("beyond", "--work-seconds", "0.01")

    assert completed.returncode == 1, completed.stderr
    lines = completed.stdout.splitlines()
    assert trace(lines) == list(range(1, 10))
    assert lines[9:] == [
        *(f"error: error on job {n}" for n in (1, 3, 5, 7, 9)),
        "results: 4 8 12 16",
        "finished: 4 results, 5 errors",
    ]


def test_demo_stops_itself_after_the_tenth_error_and_says_how_many_never_started() -> None:
    completed = run_module("beyond", "--jobs", "30", "--work-seconds", "0.01")

    assert completed.returncode == 1
    lines = completed.stdout.splitlines()
    started = trace(lines)
    # Jobs start in order. Ten failures need jobs 1..19 at least. When the tenth lands, at most
    # two other jobs run beside it (up to 19, 20, 21, with 21 failing first), and the two other
    # workers may each start one more: 23 at most.
    assert started == list(range(1, len(started) + 1))
    assert 19 <= len(started) <= 23
    assert "stopped early: 10 tasks failed (max_errors=10)" in lines
    match = SUMMARY.fullmatch(lines[-1])
    assert match is not None, lines[-1]
    results, errors, never_started = (int(group or 0) for group in match.groups())
    assert (results + errors, never_started) == (len(started), 30 - len(started))
    assert errors >= 10


def test_demo_streams_each_job_as_it_finishes_exactly_once() -> None:
    completed = run_module("beyond", "--stream", "--work-seconds", "0.01", "--jobs", "12")

    assert completed.returncode == 1
    lines = completed.stdout.splitlines()
    finished = [line for line in lines if line.startswith("job ")]
    assert sorted(finished) == sorted(
        f"job {n} result: {2 * n}" if n % 2 == 0 else f"job {n} error: error on job {n}"
        for n in range(1, 13)
    )
    assert lines[-1] == "finished: 6 results, 6 errors"


def test_demo_run_timeout_stops_the_jobs_at_their_checkpoint() -> None:
    # Jobs of 30 s each, a run of 0.2 s: the jobs stop at their checkpoint (the sleep).
    completed = run_module("beyond", "--work-seconds", "30", "--timeout", "0.2")

    assert completed.returncode == 1
    lines = completed.stdout.splitlines()
    assert trace(lines) == [1, 2, 3]
    assert "stopped early: the run's timeout of 0.2 s passed" in lines
    assert lines.count("error: the run's timeout of 0.2 s passed") == 3
    assert lines[-1] == "finished: 0 results, 3 errors; 6 tasks never started"


def test_demo_task_timeout_fails_each_slow_job_alone() -> None:
    completed = run_module(
        "beyond", "--work-seconds", "30", "--task-timeout", "0.05", "--jobs", "4"
    )

    assert completed.returncode == 1
    lines = completed.stdout.splitlines()
    assert lines.count("error: the task's timeout of 0.05 s passed") == 4
    assert lines[-1] == "finished: 0 results, 4 errors"


def test_demo_exits_0_when_no_task_failed() -> None:
    completed = run_module("beyond", "--jobs", "0")
    assert completed.returncode == 0
    assert completed.stdout.splitlines()[-1] == "finished: 0 results, 0 errors"


@pytest.mark.parametrize(
    "bad_args",
    [["--workers", "0"], ["--max-errors", "0"], ["--timeout", "-1"], ["--task-timeout", "x"]],
)
def test_demo_refuses_bad_input_with_one_line_and_status_2(bad_args: list[str]) -> None:
    completed = run_module("beyond", *bad_args)
    assert completed.returncode == 2
    assert len(completed.stderr.splitlines()) == 1
    assert "Traceback" not in completed.stderr


def test_demo_has_help_and_refuses_an_unknown_flag_on_one_line() -> None:
    helped = run_module("beyond", "--help")
    assert helped.returncode == 0
    assert helped.stdout.startswith("usage: python -m beyond")
    unknown = run_module("beyond", "--frobnicate")
    assert unknown.returncode == 2
    assert len(unknown.stderr.splitlines()) == 1
    assert "unrecognized arguments: --frobnicate" in unknown.stderr


@pytest.mark.parametrize("stream", [False, True], ids=["run", "stream"])
def test_ctrl_c_stops_the_demos_jobs_at_their_checkpoint_and_says_how_far_it_got(
    stream: bool,
) -> None:
    # Jobs of 30 s each: only a checkpoint can end them in time.
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beyond",
            *("--jobs", "100", "--workers", "2", "--work-seconds", "30"),
            *(["--stream"] if stream else []),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        for _ in range(2):
            assert TRACE_LINE.fullmatch(child.stdout.readline().strip())
        child.send_signal(signal.SIGINT)
        rest, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait()

    assert child.returncode == 130
    assert "Traceback" not in stderr
    assert rest.splitlines()[-1] == "interrupted: 2 of 100 tasks finished (2 cancelled)"
