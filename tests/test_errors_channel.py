"""Stage 2: the errors queue deadlocks exactly when the post says; the fixes beside it do not."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from errors_channel.fixes import run_draining_while_waiting, run_with_room_for_every_error
from errors_channel.pool import (
    JobFailed,
    Outcome,
    UnbufferedQueue,
    WaitGroup,
    double_evens_fail_odds,
    run,
)
from naive.pool import run as naive_run
from tests.conftest import REPO_ROOT, finish_within, run_module

TRACE_LINE = re.compile(r"worker (\d+) processing job (\d+)")
POSTS_FAILING_RUN = ("--error-capacity", "1", "--work-seconds", "0.01")
POOL_SOURCE = (REPO_ROOT / "errors_channel" / "pool.py").read_text().splitlines()


def line_of(code: str) -> int:
    """The line number of the one line in errors_channel/pool.py that holds `code`."""
    (number,) = [n for n, line in enumerate(POOL_SOURCE, start=1) if line.strip() == code]
    return number


def processed_jobs(stdout: str) -> list[int]:
    return sorted(int(m[2]) for line in stdout.splitlines() if (m := TRACE_LINE.fullmatch(line)))


def test_default_run_finishes_and_reports_one_error() -> None:
    completed = run_module("errors_channel", "--work-seconds", "0.01")

    assert completed.returncode == 0, completed.stderr
    assert processed_jobs(completed.stdout) == list(range(1, 10))
    last_line = completed.stdout.splitlines()[-1]
    # Five jobs failed; the post's main reads one error and drops the other four.
    assert re.fullmatch(r"finished with error: error on job [13579]", last_line)
    assert completed.stdout.count("finished with error") == 1


def test_bounded_error_queue_deadlocks_when_failures_exceed_capacity() -> None:
    # Without the watchdog nothing notices: the timeout is the detector. The whole run is 9 jobs of
    # 10 ms each; still running after 3 s means it is stuck, not slow.
    child = subprocess.Popen(
        [sys.executable, "-m", "errors_channel", "--no-watchdog", *POSTS_FAILING_RUN],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=3)
    finally:
        child.kill()
        stdout, _ = child.communicate()
    # As in the post: jobs 1 to 7 are processed, then every worker is stuck on an error.
    assert processed_jobs(stdout) == list(range(1, 8))


def test_watchdog_reports_the_deadlock_naming_main_and_the_three_blocked_workers() -> None:
    completed = run_module("errors_channel", *POSTS_FAILING_RUN, timeout=10)

    assert completed.returncode == 2
    assert processed_jobs(completed.stdout) == list(range(1, 8))
    report = completed.stderr
    assert report.startswith("fatal error: all threads are asleep - deadlock!\n")
    blocks = {block.splitlines()[0]: block for block in report.split("\n\n")[1:] if block.strip()}
    assert set(blocks) == {
        "thread MainThread [waitgroup wait: wait_group]:",
        "thread worker-1 [queue put: errors]:",
        "thread worker-2 [queue put: errors]:",
        "thread worker-3 [queue put: errors]:",
    }
    put_line = f"errors_channel/pool.py:{line_of('errors.put(error)')}"
    wait_line = f"errors_channel/pool.py:{line_of('wait_group.wait()')}"
    for worker in ("worker-1", "worker-2", "worker-3"):
        block = blocks[f"thread {worker} [queue put: errors]:"]
        assert block.splitlines()[1:3] == ["errors_channel.pool.worker(...)", f"\t{put_line}"]
    main_block = blocks["thread MainThread [waitgroup wait: wait_group]:"]
    assert main_block.splitlines()[1:3] == ["errors_channel.pool.run(...)", f"\t{wait_line}"]


def test_unbuffered_put_waits_for_a_receiver() -> None:
    channel: UnbufferedQueue[int] = UnbufferedQueue()
    put_returned = threading.Event()

    def send() -> None:
        channel.put(42)
        put_returned.set()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    # Once the item sits in the slot, put() has done all it can on its own: only get() lets it out.
    # (A plain queue.Queue would return from put() right here.)
    while channel.qsize() == 0:
        sender.join(0.001)
    assert not put_returned.wait(0.2)

    assert channel.get(timeout=5) == 42
    assert put_returned.wait(5)
    sender.join(5)
    assert not sender.is_alive()


@settings(max_examples=30)
@given(
    job_count=st.integers(0, 8),
    worker_count=st.integers(1, 4),
    results_capacity=st.integers(0, 5),
    error_capacity=st.integers(0, 5),
)
def test_deadlocks_exactly_when_failures_exceed_error_capacity_or_successes_results_capacity(
    job_count: int, worker_count: int, results_capacity: int, error_capacity: int
) -> None:
    failures = (job_count + 1) // 2  # the odd jobs
    successes = job_count // 2
    expect_deadlock = failures > error_capacity or successes > results_capacity

    completed = run_module(
        "errors_channel",
        *("--jobs", str(job_count), "--workers", str(worker_count)),
        *("--results-capacity", str(results_capacity)),
        *("--error-capacity", str(error_capacity), "--work-seconds", "0"),
        timeout=15,
    )

    assert completed.returncode == (2 if expect_deadlock else 0), completed.stderr
    if expect_deadlock:
        assert "all threads are asleep - deadlock!" in completed.stderr
    else:
        assert processed_jobs(completed.stdout) == list(range(1, job_count + 1))


def odd_job_errors(job_count: int) -> list[str]:
    return [f"error on job {job}" for job in range(1, job_count + 1, 2)]


def assert_every_error_and_every_result(outcome: Outcome, job_count: int) -> None:
    """Odd jobs failed and even ones doubled: each must be there exactly once."""
    assert sorted(str(error) for error in outcome.errors) == sorted(odd_job_errors(job_count))
    assert all(isinstance(error, JobFailed) for error in outcome.errors)
    assert sorted(outcome.results) == [2 * job for job in range(2, job_count + 1, 2)]


@given(job_count=st.integers(0, 40), worker_count=st.integers(1, 6))
def test_room_for_every_error_finishes_and_reports_every_error(
    job_count: int, worker_count: int
) -> None:
    outcome = finish_within(
        10,
        lambda: run_with_room_for_every_error(
            job_count, worker_count, double_evens_fail_odds(0), lambda line: None
        ),
    )

    assert_every_error_and_every_result(outcome, job_count)


@given(
    job_count=st.integers(0, 40),
    worker_count=st.integers(1, 6),
    results_capacity=st.integers(0, 3),
    error_capacity=st.integers(0, 3),
)
def test_draining_while_waiting_finishes_and_reports_every_error_at_any_capacity(
    job_count: int, worker_count: int, results_capacity: int, error_capacity: int
) -> None:
    outcome = finish_within(
        10,
        lambda: run_draining_while_waiting(
            job_count,
            worker_count,
            double_evens_fail_odds(0),
            lambda line: None,
            results_capacity,
            error_capacity,
        ),
    )

    assert_every_error_and_every_result(outcome, job_count)


@pytest.mark.parametrize("fix", ["room-for-every-error", "drain-while-waiting"])
def test_demo_fixes_finish_the_posts_failing_run_with_every_error(fix: str) -> None:
    completed = run_module("errors_channel", *POSTS_FAILING_RUN, "--fix", fix)

    assert completed.returncode == 0, completed.stderr
    errors = sorted(line for line in completed.stdout.splitlines() if line.startswith("error:"))
    assert errors == sorted(f"error: {message}" for message in odd_job_errors(9))
    assert completed.stdout.splitlines()[-1] == "finished: 4 results, 5 errors"


@pytest.mark.parametrize(
    "call",
    [
        lambda: run(9, 3, double_evens_fail_odds(0), lambda line: None),
        lambda: run_with_room_for_every_error(9, 3, double_evens_fail_odds(0), lambda line: None),
        lambda: run_draining_while_waiting(
            9, 3, double_evens_fail_odds(0), lambda line: None, 0, 0
        ),
    ],
    ids=["run", "room-for-every-error", "drain-while-waiting"],
)
def test_no_thread_is_left_behind_after_a_finished_run(call: Callable[[], object]) -> None:
    threads_before = set(threading.enumerate())
    call()
    assert set(threading.enumerate()) == threads_before


def test_the_post_reads_only_one_error_and_drops_the_rest() -> None:
    outcome = finish_within(10, lambda: run(9, 3, double_evens_fail_odds(0), lambda line: None))

    assert len(outcome.errors) == 1
    assert str(outcome.errors[0]) in odd_job_errors(9)
    assert sorted(outcome.results) == [4, 8, 12, 16]


@pytest.mark.parametrize(
    "bad_args",
    [
        ["--error-capacity", "-1"],
        ["--results-capacity", "lots"],
        ["--workers", "0"],
        ["--fix", "hope"],
    ],
)
def test_demo_refuses_bad_input_with_one_line_and_status_2(bad_args: list[str]) -> None:
    completed = run_module("errors_channel", *bad_args)

    assert completed.returncode == 2
    assert len(completed.stderr.splitlines()) == 1
    assert "Traceback" not in completed.stderr


def test_readme_sample_report_points_at_the_lines_that_block() -> None:
    # The README shows a captured report; its file:line references must still be the put and the
    # wait they were when it was captured, or the README teaches the wrong line.
    readme = (REPO_ROOT / "README.md").read_text()
    lines = {int(n) for n in re.findall(r"errors_channel/pool\.py:(\d+)", readme)}
    assert lines == {line_of("errors.put(error)"), line_of("wait_group.wait()")}


def test_wait_group_refuses_more_done_calls_than_it_counted() -> None:
    wait_group = WaitGroup()
    wait_group.add(1)
    wait_group.done()
    wait_group.wait()  # returns at once: the count is zero
    with pytest.raises(ValueError, match="more often"):
        wait_group.done()


@pytest.mark.parametrize("run_stage", [run, naive_run])
def test_run_refuses_zero_workers_instead_of_waiting_forever(
    run_stage: Callable[..., object],
) -> None:
    with pytest.raises(ValueError, match="worker_count"):
        run_stage(3, 0, double_evens_fail_odds(0), lambda line: None)
