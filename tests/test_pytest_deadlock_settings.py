"""`pytest --deadlock`'s settings: off unless asked for, the ini option, when it cannot watch,
and the lesson file that README's "What pytest shows" runs.

As in tests/test_pytest_deadlock.py, each test runs pytest in a process of its own.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.test_pytest_deadlock import BACKSTOP, RUN_SECONDS, blocks, failures, run

pytest_plugins = ("pytester",)

ONE_DEADLOCK = """
import queue

import pytest


@pytest.mark.timeout(1)
def test_main_waits_on_a_queue_nobody_feeds():
    queue.Queue().get()
"""


def test_it_is_off_unless_asked_for(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one=ONE_DEADLOCK)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    assert "Timeout (>1.0s) from pytest-timeout." in result.stdout.str()


def test_the_ini_option_turns_it_on(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ndeadlock = true\n")
    pytester.makepyfile(test_one=ONE_DEADLOCK.replace("@pytest.mark.timeout(1)", ""))
    result = run(pytester, BACKSTOP)
    assert blocks(failures(result)["test_main_waits_on_a_queue_nobody_feeds"]) == [
        "thread MainThread [queue get]:"
    ]


def test_run_outside_the_main_thread_it_says_it_is_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="def test_passes():\n    pass\n")
    in_a_thread = (
        "import sys, threading, pytest\n"
        "codes = []\n"
        "runner = threading.Thread(target=lambda: codes.append(pytest.main(sys.argv[1:])))\n"
        "runner.start()\n"
        "runner.join()\n"
        "sys.exit(codes[0])\n"
    )
    pytester.makepyfile(run_in_a_thread=in_a_thread)
    result = pytester.run(
        sys.executable,
        "run_in_a_thread.py",
        "--deadlock",
        "-p",
        "no:cacheprovider",
        "test_one.py",
        timeout=RUN_SECONDS,
    )
    assert result.ret == 0
    assert "--deadlock is off: pytest runs outside the main thread" in result.stdout.str()


def test_the_lessons_file_shows_stage_2s_deadlock_in_pytest() -> None:
    # What README's "What pytest shows" runs and shows.
    lesson = ["-m", "pytest", "-p", "no:cacheprovider", "tests/lesson_deadlock_in_pytest.py"]
    shown = subprocess.run(
        [sys.executable, *lesson, "--deadlock"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
    )
    assert shown.returncode == 1
    assert "= 1 failed, 2 passed in " in shown.stdout
    # Only the failure's own section: where the environment variable CI is set, pytest's short
    # summary at the end repeats a failure's whole message, the report included.
    failure = failures(shown.stdout.splitlines())["test_stage_2_with_room_for_one_error_deadlocks"]
    assert blocks(failure) == [
        "thread MainThread [waitgroup wait: wait_group]:",
        "thread worker-1 [queue put: errors]:",
        "thread worker-2 [queue put: errors]:",
        "thread worker-3 [queue put: errors]:",
    ]
    # Without --deadlock, the deadlocking test is skipped rather than left to hang.
    skipped = subprocess.run(
        [sys.executable, *lesson],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
    )
    assert skipped.returncode == 0
    assert "= 2 passed, 1 skipped in " in skipped.stdout


def test_a_signal_some_other_code_handles_turns_it_off_with_a_warning(
    pytester: pytest.Pytester,
) -> None:
    # A conftest loads before the plugin is configured.
    pytester.makeconftest(
        f"import signal\nsignal.signal({int(signal.SIGRTMAX)}, lambda signum, frame: None)\n"
    )
    pytester.makepyfile(test_one="def test_passes():\n    pass\n")
    result = run(pytester, "--deadlock")
    result.assert_outcomes(passed=1, warnings=1)
    assert (
        f"--deadlock is off: signal {int(signal.SIGRTMAX)} (which it needs)" in result.stdout.str()
    )
