"""Stage 2: the errors queue deadlocks exactly when the post says; the fixes beside it do not."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from errors_channel.fixes import run_draining_while_waiting, run_with_room_for_every_error
from errors_channel.go_primitives import drain
from errors_channel.pool import JobFailed, Outcome, Work, double_evens_fail_odds, run
from tests.conftest import REPO_ROOT, finish_within, run_module
from tests.thread_probes import exits_held_back, parked_frame

# Part of the lesson: `pytest -m lesson` runs these with tests/test_the_lesson.py.
pytestmark = pytest.mark.lesson

TRACE_LINE = re.compile(r"worker (\d+) processing job (\d+)")
POSTS_FAILING_RUN = ("--error-capacity", "1", "--work-seconds", "0.01")
POOL_SOURCE = (REPO_ROOT / "errors_channel" / "pool.py").read_text().splitlines()


def line_of(code: str) -> int:
    """The line number of the one line in errors_channel/pool.py that holds `code`."""
    (number,) = [n for n, line in enumerate(POOL_SOURCE, start=1) if line.strip() == code]
    return number


def processed_jobs(stdout: str) -> list[int]:
    return sorted(int(m[2]) for line in stdout.splitlines() if (m := TRACE_LINE.fullmatch(line)))


def failing(jobs: frozenset[int]) -> Work:
    """Work that fails exactly the given jobs and doubles the others."""

    def work(job: int) -> int:
        if job in jobs:
            raise JobFailed(f"error on job {job}")
        return job * 2

    return work


def ignore(line: str) -> None:
    pass


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


# --- The boundary: deadlock exactly when failures > error_capacity or successes > results_capacity


@dataclass(frozen=True)
class Configuration:
    job_count: int
    worker_count: int
    failing: frozenset[int]
    results_capacity: int
    error_capacity: int

    @property
    def deadlocks_in_theory(self) -> bool:
        successes = self.job_count - len(self.failing)
        return len(self.failing) > self.error_capacity or successes > self.results_capacity


@st.composite
def configurations(draw: st.DrawFn) -> Configuration:
    job_count = draw(st.integers(0, 10))
    jobs = st.integers(1, job_count) if job_count else st.nothing()
    failing = frozenset(draw(st.sets(jobs, max_size=job_count)))
    successes = job_count - len(failing)

    # Most capacities within a few items of what the run puts, where the boundary lies; some far.
    def near(count: int) -> int:
        return max(0, count + draw(st.integers(-2, 2) | st.just(100)))

    return Configuration(
        job_count=job_count,
        worker_count=draw(st.integers(1, 5)),
        failing=failing,
        results_capacity=near(successes),
        error_capacity=near(len(failing)),
    )


def run_until_finished_or_deadlocked(config: Configuration) -> Outcome | None:
    """Run errors_channel.pool.run in daemon threads: its Outcome, or None once proven deadlocked.

    Proven, not guessed from a timeout: every thread of the run is parked (tests/thread_probes.py)
    in two passes, each in the very same wait both times, and no thread came or went in between.
    The second pass starts after the first has ended, so there was a moment when all of them were
    parked at once, none notified; only they could wake each other, so none ever will. A deadlocked
    run is then torn down by draining its queues until its main returns and joins its workers.
    """
    trace: list[str] = []
    outcome: list[Outcome] = []
    failure: list[BaseException] = []

    def main() -> None:
        try:
            outcome.append(
                run(
                    config.job_count,
                    config.worker_count,
                    failing(config.failing),
                    trace.append,
                    config.results_capacity,
                    config.error_capacity,
                )
            )
        except BaseException as error:  # handed to the test's thread below
            failure.append(error)

    before = set(threading.enumerate())
    # Daemon, and so are the workers it starts (threads inherit it): a stuck run cannot keep the
    # test process alive, even if the teardown below failed.
    runner = threading.Thread(target=main, name="pool-main", daemon=True)
    runner.start()
    give_up_at = time.monotonic() + 20
    while runner.is_alive():
        run_threads = set(threading.enumerate()) - before
        first_pass = {thread: parked_frame(thread) for thread in run_threads}
        # The runner itself must be among them: if it ended just now, there is nothing to judge.
        if runner in first_pass and all(first_pass.values()):
            second_pass = {thread: parked_frame(thread) for thread in run_threads}
            if second_pass == first_pass and set(threading.enumerate()) - before == run_threads:
                tear_down(runner, first_pass[runner], run_threads)
                return None
        runner.join(0.001)
        assert time.monotonic() < give_up_at, f"{config}: neither finished nor deadlocked"
    if failure:
        raise failure[0]
    jobs_processed = sorted(int(m[2]) for line in trace if (m := TRACE_LINE.fullmatch(line)))
    assert jobs_processed == list(range(1, config.job_count + 1))
    return outcome[0]


def tear_down(
    runner: threading.Thread, parked: FrameType | None, run_threads: set[threading.Thread]
) -> None:
    """Unblock a deadlocked run by reading its queues as a main that read early would."""
    frame = parked
    while frame is not None and frame.f_code is not run.__code__:
        frame = frame.f_back
    assert frame is not None, "the run's main is not parked inside run()"
    queues = [frame.f_locals["results"], frame.f_locals["errors"]]
    del frame, parked
    give_up_at = time.monotonic() + 20
    while runner.is_alive():
        for items in queues:
            drain(items)
        runner.join(0.001)
        assert time.monotonic() < give_up_at, "could not tear the deadlocked run down"
    # run() joins its workers before it returns: nothing of the run is left.
    assert not any(thread.is_alive() for thread in run_threads)


POSTS_RUN = Configuration(9, 3, frozenset({1, 3, 5, 7, 9}), 100, 100)


@settings(max_examples=150)
@given(config=configurations())
@example(config=POSTS_RUN)
@example(config=Configuration(9, 3, frozenset({1, 3, 5, 7, 9}), 100, 1))  # the post's deadlock
@example(config=Configuration(9, 3, frozenset({1, 3, 5, 7, 9}), 100, 5))  # exactly enough room
@example(config=Configuration(9, 3, frozenset({1, 3, 5, 7, 9}), 100, 4))  # one too few
@example(config=Configuration(4, 2, frozenset({1, 2, 3, 4}), 0, 4))  # unbuffered, never used
@example(config=Configuration(4, 2, frozenset({1, 2, 3}), 0, 4))  # unbuffered, one success
@example(config=Configuration(3, 1, frozenset({2}), 2, 0))  # unbuffered errors, one failure
def test_deadlocks_exactly_when_failures_exceed_error_capacity_or_successes_results_capacity(
    config: Configuration,
) -> None:
    outcome = run_until_finished_or_deadlocked(config)

    assert (outcome is None) == config.deadlocks_in_theory, config
    if outcome is not None:
        successes = set(range(1, config.job_count + 1)) - config.failing
        assert sorted(outcome.results) == sorted(2 * job for job in successes)
        # The post's main reads at most one error, one that really happened.
        assert len(outcome.errors) == min(1, len(config.failing))
        assert {str(error) for error in outcome.errors} <= {
            f"error on job {job}" for job in config.failing
        }


@pytest.mark.parametrize(
    ("jobs", "workers", "results_capacity", "error_capacity", "deadlocks"),
    [
        (9, 3, 100, 5, False),  # five odd jobs fail: exactly enough room
        (9, 3, 100, 4, True),
        (8, 2, 3, 100, True),  # four even jobs succeed: one too many
        (0, 1, 0, 0, False),  # unbuffered both ways, and nothing ever put
        (2, 2, 0, 1, True),  # one success on an unbuffered results queue
    ],
)
def test_the_demo_deadlocks_at_the_same_boundary(
    jobs: int, workers: int, results_capacity: int, error_capacity: int, deadlocks: bool
) -> None:
    completed = run_module(
        "errors_channel",
        *("--jobs", str(jobs), "--workers", str(workers)),
        *("--results-capacity", str(results_capacity)),
        *("--error-capacity", str(error_capacity), "--work-seconds", "0"),
        timeout=15,
    )

    assert completed.returncode == (2 if deadlocks else 0), completed.stderr
    if deadlocks:
        assert "all threads are asleep - deadlock!" in completed.stderr
    else:
        assert processed_jobs(completed.stdout) == list(range(1, jobs + 1))


# --- The fixes: they finish, and report every error


def odd_job_errors(job_count: int) -> list[str]:
    """The errors the demo's work raises for jobs 1..job_count: one per odd job."""
    return [f"error on job {job}" for job in range(1, job_count + 1, 2)]


def assert_every_error_and_every_result(
    outcome: Outcome, job_count: int, failing_jobs: frozenset[int] | None = None
) -> None:
    """Each failed job's error and each other job's result: there exactly once.

    The failing jobs default to the odd ones, as with the demo's work.
    """
    if failing_jobs is None:
        failing_jobs = frozenset(range(1, job_count + 1, 2))
    assert sorted(str(error) for error in outcome.errors) == sorted(
        f"error on job {job}" for job in failing_jobs
    )
    assert all(isinstance(error, JobFailed) for error in outcome.errors)
    successes = set(range(1, job_count + 1)) - failing_jobs
    assert sorted(outcome.results) == sorted(2 * job for job in successes)


job_counts_and_failures = st.integers(0, 40).flatmap(
    lambda n: st.tuples(
        st.just(n), st.frozensets(st.integers(1, n), max_size=n) if n else st.just(frozenset())
    )
)


@given(case=job_counts_and_failures, worker_count=st.integers(1, 6))
@example(case=(12, frozenset(range(1, 13))), worker_count=3)  # every job fails
@example(case=(12, frozenset()), worker_count=3)  # none does
def test_room_for_every_error_finishes_and_reports_every_error(
    case: tuple[int, frozenset[int]], worker_count: int
) -> None:
    job_count, failing_jobs = case
    outcome = finish_within(
        10,
        lambda: run_with_room_for_every_error(
            job_count, worker_count, failing(failing_jobs), ignore
        ),
    )

    assert_every_error_and_every_result(outcome, job_count, failing_jobs)


@given(
    case=job_counts_and_failures,
    worker_count=st.integers(1, 6),
    results_capacity=st.integers(0, 3),
    error_capacity=st.integers(0, 3),
)
def test_draining_while_waiting_finishes_and_reports_every_error_at_any_capacity(
    case: tuple[int, frozenset[int]],
    worker_count: int,
    results_capacity: int,
    error_capacity: int,
) -> None:
    job_count, failing_jobs = case
    outcome = finish_within(
        10,
        lambda: run_draining_while_waiting(
            job_count,
            worker_count,
            failing(failing_jobs),
            ignore,
            results_capacity,
            error_capacity,
        ),
    )

    assert_every_error_and_every_result(outcome, job_count, failing_jobs)


@pytest.mark.parametrize("fix", ["room-for-every-error", "drain-while-waiting"])
def test_demo_fixes_finish_the_posts_failing_run_with_every_error(fix: str) -> None:
    completed = run_module("errors_channel", *POSTS_FAILING_RUN, "--fix", fix)

    assert completed.returncode == 0, completed.stderr
    errors = sorted(line for line in completed.stdout.splitlines() if line.startswith("error:"))
    assert errors == sorted(f"error: {message}" for message in odd_job_errors(9))
    assert completed.stdout.splitlines()[-1] == "finished: 4 results, 5 errors"


@pytest.mark.parametrize(
    ("call", "held"),
    [
        (lambda: run(9, 3, double_evens_fail_odds(0), ignore), "worker"),
        (lambda: run_with_room_for_every_error(9, 3, double_evens_fail_odds(0), ignore), "worker"),
        (
            lambda: run_draining_while_waiting(9, 3, double_evens_fail_odds(0), ignore, 0, 0),
            "worker",
        ),
        (
            lambda: run_draining_while_waiting(9, 3, double_evens_fail_odds(0), ignore, 0, 0),
            "collect",
        ),
    ],
    ids=["run", "room-for-every-error", "drain-while-waiting", "drain-while-waiting-collectors"],
)
def test_no_thread_is_left_behind_after_a_finished_run(
    call: Callable[[], object], held: str
) -> None:
    threads_before = set(threading.enumerate())
    # The workers (or the collectors) linger on their way out: only a run that joins them waits
    # for that. One kind at a time, so that joining the other kind cannot cover for a missing join.
    with exits_held_back(held):
        call()
        assert set(threading.enumerate()) == threads_before


def test_the_post_reads_only_one_error_and_drops_the_rest() -> None:
    outcome = finish_within(10, lambda: run(9, 3, double_evens_fail_odds(0), ignore))

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


# Where the report of `python -m errors_channel --error-capacity 1` says the threads wait: the
# README quotes that report. A change to errors_channel/pool.py that moves either line must
# capture the report again, for the README and for these numbers.
REPORTED_LINES = {"errors.put(error)": 77, "wait_group.wait()": 158}


def test_readme_sample_report_points_at_the_lines_that_block() -> None:
    assert {code: line_of(code) for code in REPORTED_LINES} == REPORTED_LINES
    readme = (REPO_ROOT / "README.md").read_text()
    lines = {int(n) for n in re.findall(r"errors_channel/pool\.py:(\d+)", readme)}
    assert lines == set(REPORTED_LINES.values())


def test_run_refuses_zero_workers_instead_of_waiting_forever() -> None:
    with pytest.raises(ValueError, match="worker_count"):
        run(3, 0, double_evens_fail_odds(0), ignore)
