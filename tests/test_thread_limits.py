"""When the OS refuses a thread, stages 1-2 stop the threads they started and say how far they got.

Each case runs in a child that has room for only a few more threads (tests/thread_limit.py), so
`Thread.start()` really fails. A stage that left its started workers waiting for jobs would hang
that child at exit (they are not daemon threads); the child's timeout turns such a hang into a
failure.
"""

from __future__ import annotations

import pytest

from tests.thread_limit import run_with_room_for_threads

SETUP = """
import runpy
import sys
import threading

import demo_args
import errors_channel.fixes
import errors_channel.pool
import deadlock_watch
import naive.pool
from tests.thread_probes import exits_held_back
"""

# Prints what the call did, then how many threads are left: only main, if nothing was left behind.
# Stopped threads linger on their way out, so a pool that did not join them leaves them counted.
REPORT = """
with exits_held_back("worker", "collect"):
    try:
        {call}
    except RuntimeError as error:
        print(f"raised {{type(error).__name__}}: {{error}}")
    else:
        print("returned")
    print(f"threads left: {{threading.active_count()}}")
"""


@pytest.mark.parametrize(
    ("room", "call", "expected"),
    [
        (3, "naive.pool.run(9, 10, int, print)", "could start only 3 of 10 worker threads"),
        (0, "naive.pool.run(9, 10, int, print)", "could start only 0 of 10 worker threads"),
        (
            3,
            "errors_channel.pool.run(9, 10, int, print)",
            "could start only 3 of 10 worker threads",
        ),
        (
            3,
            "errors_channel.fixes.run_with_room_for_every_error(9, 10, int, print)",
            "could start only 3 of 10 worker threads",
        ),
        # The drain-while-waiting fix starts a collector per queue before the workers.
        (
            0,
            "errors_channel.fixes.run_draining_while_waiting(9, 10, int, print, 0, 0)",
            "could start only 0 of 2 collector threads",
        ),
        (
            1,
            "errors_channel.fixes.run_draining_while_waiting(9, 10, int, print, 0, 0)",
            "could start only 1 of 2 collector threads",
        ),
        (
            5,
            "errors_channel.fixes.run_draining_while_waiting(9, 10, int, print, 0, 0)",
            "could start only 3 of 10 worker threads",
        ),
    ],
    ids=[
        "naive",
        "naive-no-thread-at-all",
        "errors_channel",
        "room-for-every-error",
        "drain-while-waiting-first-collector",
        "drain-while-waiting-second-collector",
        "drain-while-waiting-workers",
    ],
)
def test_run_stops_the_threads_it_started_and_says_how_many_when_the_os_refuses_one(
    room: int, call: str, expected: str
) -> None:
    completed = run_with_room_for_threads(room, SETUP, REPORT.format(call=call))

    assert completed.returncode == 0, completed.stderr
    # No job ran: the workers get their jobs only once all of them are running.
    raised, threads_left = completed.stdout.splitlines()
    assert raised.startswith(f"raised ThreadStartFailed: {expected}: "), raised
    assert threads_left == "threads left: 1"


@pytest.mark.parametrize(
    ("room", "module", "args", "expected"),
    [
        (3, "naive", [], "could start only 3 of 10 worker threads"),
        # The watchdog's thread takes one of the three.
        (3, "errors_channel", [], "could start only 2 of 10 worker threads"),
        (3, "errors_channel", ["--no-watchdog"], "could start only 3 of 10 worker threads"),
        (
            3,
            "errors_channel",
            ["--fix", "drain-while-waiting"],
            "could start only 0 of 10 worker threads",
        ),
        (
            2,
            "errors_channel",
            ["--fix", "drain-while-waiting"],
            "could start only 1 of 2 collector threads",
        ),
        (
            3,
            "errors_channel",
            ["--fix", "room-for-every-error"],
            "could start only 2 of 10 worker threads",
        ),
    ],
)
def test_demo_exits_2_with_one_line_when_the_os_refuses_a_thread(
    room: int, module: str, args: list[str], expected: str
) -> None:
    argv = [module, "--workers", "10", "--work-seconds", "0", *args]
    completed = run_with_room_for_threads(
        room,
        SETUP,
        f"sys.argv = {argv!r}\nrunpy.run_module({module!r}, run_name='__main__', alter_sys=True)",
    )

    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == ""
    (line,) = completed.stderr.splitlines()
    assert line.startswith(f"python -m {module}: error: {expected}"), line
