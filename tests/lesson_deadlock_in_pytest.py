"""Stage 2's deadlock, let happen inside pytest. Run it with

    .venv/bin/pytest --deadlock tests/lesson_deadlock_in_pytest.py

The workload of tests/test_the_lesson.py, in this process: with room for one error, stage 2
deadlocks, and `--deadlock` fails that test within a second with Go's report; the run goes on.
Without `--deadlock` the deadlocked test would wait for pytest-timeout (120 s), so it is skipped.

Not part of the suite: plain `pytest` collects only files named test_*.py, and this one fails on
purpose. tests/test_pytest_deadlock.py runs it and checks what it shows.
"""

from __future__ import annotations

from functools import partial

import pytest

import errors_channel.pool
import robust
from tests.test_the_lesson import FAILING, JOBS, WORKERS, ignore, work


@pytest.fixture
def under_deadlock_watch(request: pytest.FixtureRequest) -> None:
    if not request.config.pluginmanager.has_plugin("deadlock-watch"):
        pytest.skip("runs only under pytest --deadlock: without it, it hangs until the timeout")


def test_stage_2_with_room_for_every_error_finishes_with_one_error() -> None:
    outcome = errors_channel.pool.run(JOBS, WORKERS, work, ignore)
    assert len(outcome.errors) == 1


@pytest.mark.usefixtures("under_deadlock_watch")
def test_stage_2_with_room_for_one_error_deadlocks() -> None:
    errors_channel.pool.run(JOBS, WORKERS, work, ignore, error_capacity=1)


def test_stage_3_keeps_all_five_errors() -> None:
    tasks = [robust.Task(partial(work, job)) for job in range(1, JOBS + 1)]
    robust.Pool(tasks, WORKERS).run()
    assert [job for job, task in enumerate(tasks, start=1) if task.err is not None] == FAILING
