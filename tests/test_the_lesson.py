"""The post's lesson, in order; read this first. `pytest -m lesson` runs it and the stages' tests.

One workload for all three stages: jobs 1 to 9 on 3 workers, each even job doubled, each odd job
failing, so five of the nine fail. The deadlocks run in processes of their own, under the
deadlock watchdog (deadlock_watch), which proves them and exits with status 2 as Go does.
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import pytest

import errors_channel.pool
import robust
from tests.conftest import REPO_ROOT, run_module

pytestmark = pytest.mark.lesson

JOBS, WORKERS = 9, 3
FAILING = [1, 3, 5, 7, 9]


class JobFailed(Exception):
    pass


def work(job: int) -> int:
    if job % 2:
        raise JobFailed(f"error on job {job}")
    return job * 2


def ignore(line: str) -> None:
    pass


def reported_waits(stderr: str) -> list[str]:
    """Each thread the watchdog's report names, with what it waits on, in the report's order."""
    return [line for line in stderr.splitlines() if line.startswith("thread ")]


# Stage 1 on that workload, in a process of its own: main waits for nine results, forever.
STAGE_1 = f"""
from deadlock_watch import Watchdog
from naive.pool import run
from tests.test_the_lesson import work
Watchdog().start()
run({JOBS}, {WORKERS}, work, print)
"""


def test_stage_1_has_nowhere_to_put_an_error_so_a_failing_job_kills_its_worker() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", STAGE_1], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )
    # Each worker dies at its first failing job, its error printed (by threading.excepthook) and
    # lost; main then waits for results that no one is left to send.
    assert completed.stderr.count("Exception in thread ") == WORKERS
    assert completed.returncode == 2
    assert reported_waits(completed.stderr) == ["thread MainThread [queue get: results]:"]


def test_stage_2_with_room_for_every_error_reads_one_and_loses_the_other_four() -> None:
    outcome = errors_channel.pool.run(JOBS, WORKERS, work, ignore)
    assert sorted(outcome.results) == [4, 8, 12, 16]
    (error,) = outcome.errors
    assert str(error) in {f"error on job {job}" for job in FAILING}


def test_stage_2_with_room_for_one_error_deadlocks() -> None:
    # The post's run: the demo runs this same workload. The second failure finds the queue full.
    completed = run_module("errors_channel", "--error-capacity", "1", "--work-seconds", "0.01")
    assert completed.returncode == 2
    assert reported_waits(completed.stderr) == [
        "thread MainThread [waitgroup wait: wait_group]:",
        "thread worker-1 [queue put: errors]:",
        "thread worker-2 [queue put: errors]:",
        "thread worker-3 [queue put: errors]:",
    ]


@pytest.mark.parametrize("concurrency", [1, WORKERS, JOBS])
def test_stage_3_keeps_all_five_errors_on_their_tasks_at_any_concurrency(concurrency: int) -> None:
    tasks = [robust.Task(partial(work, job)) for job in range(1, JOBS + 1)]
    robust.Pool(tasks, concurrency).run()
    failed = {job: task.err for job, task in enumerate(tasks, start=1) if task.err is not None}
    assert sorted(failed) == FAILING
    assert all(str(error) == f"error on job {job}" for job, error in failed.items())
    assert [task.result for task in tasks if task.err is None] == [4, 8, 12, 16]
