"""Stage 1: the naive pool delivers every result exactly once and leaves no thread behind."""

from __future__ import annotations

import re
import threading
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from naive.pool import run
from tests.conftest import run_module
from tests.thread_probes import exits_held_back

# Part of the lesson: `pytest -m lesson` runs these with tests/test_the_lesson.py.
pytestmark = pytest.mark.lesson

TRACE_LINE = re.compile(r"worker (\d+) processing job (\d+)")


def double(job: int) -> int:
    return job * 2


@given(job_count=st.integers(0, 60), worker_count=st.integers(1, 12))
def test_every_job_result_arrives_exactly_once(job_count: int, worker_count: int) -> None:
    trace: list[str] = []
    results = run(job_count, worker_count, double, trace.append)

    assert sorted(results) == [2 * job for job in range(1, job_count + 1)]
    processed = Counter(int(TRACE_LINE.fullmatch(line)[2]) for line in trace)  # type: ignore[index]
    assert processed == Counter(range(1, job_count + 1))


@given(job_count=st.integers(0, 30), worker_count=st.integers(1, 8))
def test_no_thread_the_stage_started_outlives_run(job_count: int, worker_count: int) -> None:
    threads_before = set(threading.enumerate())
    workers_seen: set[threading.Thread] = set()

    def remember_worker(job: int) -> int:
        workers_seen.add(threading.current_thread())
        return job

    run(job_count, worker_count, remember_worker, lambda line: None)

    assert not any(thread.is_alive() for thread in workers_seen)
    assert set(threading.enumerate()) == threads_before


def test_run_returns_only_once_every_worker_has_ended() -> None:
    threads_before = set(threading.enumerate())
    # Each worker lingers on its way out: only a run() that joins its workers waits for that.
    with exits_held_back("worker"):
        assert sorted(run(9, 3, double, lambda line: None)) == list(range(2, 19, 2))
        assert set(threading.enumerate()) == threads_before


def test_workers_really_run_at_the_same_time() -> None:
    # Each job waits at a barrier for as many parties as there are workers: it can only pass if
    # that many jobs are in progress at once. A pool that ran jobs one by one would break the
    # barrier (timeout) instead.
    worker_count = 4
    all_busy = threading.Barrier(worker_count, timeout=10)

    def meet_the_others(job: int) -> int:
        all_busy.wait()
        return job

    results = run(2 * worker_count, worker_count, meet_the_others, lambda line: None)
    assert sorted(results) == list(range(1, 2 * worker_count + 1))


def test_demo_prints_one_trace_line_per_job_then_the_results() -> None:
    completed = run_module("naive", "--work-seconds", "0.01")

    assert completed.returncode == 0, completed.stderr
    *trace, results_line = completed.stdout.splitlines()
    matches = [TRACE_LINE.fullmatch(line) for line in trace]
    assert all(matches), trace
    assert sorted(int(m[2]) for m in matches if m) == list(range(1, 10))
    assert {int(m[1]) for m in matches if m} <= {1, 2, 3}
    assert sorted(map(int, results_line.removeprefix("results: ").split())) == list(range(2, 19, 2))


def test_demo_with_its_defaults_spreads_the_jobs_over_all_three_workers() -> None:
    completed = run_module("naive")

    assert completed.returncode == 0, completed.stderr
    workers = Counter(
        m[1] for line in completed.stdout.splitlines() if (m := TRACE_LINE.fullmatch(line))
    )
    assert sum(workers.values()) == 9
    # 0.3 s per job keeps every worker busy long enough that all three take jobs.
    assert set(workers) == {"1", "2", "3"}


@pytest.mark.parametrize(
    "bad_args",
    [
        ["--workers", "0"],
        ["--workers", "three"],
        ["--jobs", "-1"],
        ["--work-seconds", "-1"],
        ["--work-seconds", "nan"],
        ["--no-such-flag"],
    ],
)
def test_demo_refuses_bad_input_with_one_line_and_status_2(bad_args: list[str]) -> None:
    completed = run_module("naive", *bad_args)

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert len(completed.stderr.splitlines()) == 1
    assert "error:" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_demo_help_describes_every_flag() -> None:
    completed = run_module("naive", "--help")

    assert completed.returncode == 0
    for flag in ("--workers", "--jobs", "--work-seconds"):
        assert flag in completed.stdout
