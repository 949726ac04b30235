"""`pytest --deadlock` (deadlock_watch/pytest_plugin.py): a deadlocked test fails with Go's report.

Each test writes test files and runs pytest on them in a process of its own (pytester's
runpytest_subprocess): the deadlocks they contain are real, their threads stay stuck, and what
the run does at its end (exit status, no hang) is part of what is checked. pytest-timeout backs
each run (`--timeout=20`), so a plugin that never fires makes these tests fail, not hang.
"""

from __future__ import annotations

import re

import pytest

pytest_plugins = ("pytester",)

# pytest-timeout's limit for each test of the runs below: the backstop, never reached when the
# plugin works (it fails a deadlocked test within about a second). Far enough above that, under
# a loaded machine, for its firing to mean that the plugin did not.
BACKSTOP = "--timeout=20"
# The limit for a whole run; pytester kills it then.
RUN_SECONDS = 120.0

DEADLOCKS = """
import asyncio
import queue
import threading
import time
from functools import partial

import errors_channel.pool
import robust


def work(job):
    if job % 2:
        raise ValueError(f"error on job {job}")
    return job * 2


def test_a_passing_test_before():
    time.sleep(0.1)


def test_the_posts_stage_2_with_room_for_one_error():
    errors_channel.pool.run(9, 3, work, lambda line: None, error_capacity=1)


def test_an_event_loop_waits_on_a_queue_nobody_feeds():
    async def consume(jobs):
        await jobs.get()

    async def main():
        jobs = asyncio.Queue()
        await asyncio.create_task(consume(jobs), name="consumer")

    asyncio.run(main())


def test_two_threads_take_two_locks_in_opposite_orders():
    # Each queue holds its lock's one token: get() takes the lock.
    lock_a, lock_b = queue.Queue(maxsize=1), queue.Queue(maxsize=1)
    lock_a.put("a")
    lock_b.put("b")
    both_hold_one = threading.Barrier(2)

    def take(first, second):
        first.get()
        both_hold_one.wait()
        second.get()

    threads = [
        threading.Thread(target=take, args=(lock_a, lock_b), name="a-then-b"),
        threading.Thread(target=take, args=(lock_b, lock_a), name="b-then-a"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_stage_3s_pool_whose_tasks_wait_on_a_queue_nobody_feeds():
    nobody_feeds = queue.Queue()
    robust.Pool([robust.Task(nobody_feeds.get) for _ in range(2)], 2).run()


def test_main_waits_in_c_on_a_simple_queue_nobody_feeds():
    nobody_feeds = queue.SimpleQueue()
    nobody_feeds.get()


def test_a_passing_test_after():
    time.sleep(0.1)
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", *args, timeout=RUN_SECONDS
    )


def failures(output: pytest.RunResult | list[str]) -> dict[str, list[str]]:
    """Each failure's (or error's) text in pytest's output, by its heading, captured output cut."""
    found: dict[str, list[str]] = {}
    heading: str | None = None
    for line in output.outlines if isinstance(output, pytest.RunResult) else output:
        if match := re.fullmatch(r"_{3,} (.+?) _{3,}", line):
            heading = match[1]
            found[heading] = []
        elif re.fullmatch(r"(=|-){3,}.*", line):
            heading = None
        elif heading is not None:
            found[heading].append(line)
    return found


def blocks(text: list[str]) -> list[str]:
    """The report's heading lines, one for each thread or task, in order."""
    return [line for line in text if line.startswith(("thread ", "task "))]


def test_each_deadlocked_test_fails_with_the_report_and_the_run_goes_on(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_deadlocks=DEADLOCKS)
    result = run(pytester, "--deadlock", BACKSTOP)

    result.assert_outcomes(passed=2, failed=5)
    assert result.ret == 1
    assert "Timeout" not in result.stdout.str()
    failed = failures(result)

    stage_2 = failed["test_the_posts_stage_2_with_room_for_one_error"]
    assert stage_2[0] == "fatal error: all threads are asleep - deadlock!"
    assert blocks(stage_2) == [
        "thread MainThread [waitgroup wait: wait_group]:",
        "thread worker-1 [queue put: errors]:",
        "thread worker-2 [queue put: errors]:",
        "thread worker-3 [queue put: errors]:",
    ]
    assert "(worker-1, worker-2, worker-3 stay asleep: Python cannot stop a thread." in "\n".join(
        stage_2
    )

    loop = failed["test_an_event_loop_waits_on_a_queue_nobody_feeds"]
    assert loop[0] == "fatal error: all tasks are asleep - deadlock!"
    assert blocks(loop) == [
        "task Task-1 [await task: consumer]:",
        "task consumer [queue get: jobs]:",
    ]

    locks = failed["test_two_threads_take_two_locks_in_opposite_orders"]
    assert blocks(locks) == [
        "thread MainThread [thread join: a-then-b]:",
        "thread a-then-b [queue get: second]:",
        "thread b-then-a [queue get: second]:",
    ]

    # Stage 3's pool takes the failure for a Ctrl-C and waits for its stuck workers: a second
    # deadlock, reported and raised the same way, which gets the failure through.
    pool = failed["test_stage_3s_pool_whose_tasks_wait_on_a_queue_nobody_feeds"]
    once = [
        "thread MainThread [pool wait: workers]:",
        "thread worker-1 [queue get]:",
        "thread worker-2 [queue get]:",
    ]
    assert blocks(pool) == once + once
    assert "It deadlocked again, unwinding from the failure above:" in pool

    simple = failed["test_main_waits_in_c_on_a_simple_queue_nobody_feeds"]
    assert blocks(simple) == ["thread MainThread [simplequeue get: nobody_feeds]:"]

    # Seven threads never end; the run does, with pytest's exit status, and says why.
    assert result.stderr.lines == [
        "--deadlock: not waiting at exit for threads asleep for good: worker-1, worker-2, "
        "worker-3, a-then-b, b-then-a, worker-1, worker-2"
    ]


HEALTHY = """
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest


def test_main_waits_while_threads_sleep_wait_on_a_child_and_wait_with_a_timeout():
    results = queue.Queue()

    def sleeps():
        for _ in range(3):
            time.sleep(1)
        results.put("slept")

    def runs_a_child():
        child = [sys.executable, "-c", "import time; time.sleep(1); print('child')"]
        results.put(subprocess.run(child, capture_output=True, text=True).stdout.strip())

    def waits_with_a_timeout():
        threading.Event().wait(1.5)
        results.put("timed out")

    for target in (sleeps, runs_a_child, waits_with_a_timeout):
        threading.Thread(target=target).start()
    # Main sleeps here, untimed, for three seconds; some other thread is awake all along.
    assert sorted(results.get() for _ in range(3)) == ["child", "slept", "timed out"]


def test_main_itself_sleeps_waits_on_a_child_and_waits_with_a_timeout():
    time.sleep(1)
    subprocess.run([sys.executable, "-c", "import time; time.sleep(1)"], check=True)
    assert not threading.Event().wait(1)


def test_a_session_fixtures_busy_thread_serves_a_waiting_test(server):
    requests, replies = server
    requests.put(1.0)
    assert replies.get() == 1.0


class Woken(Exception):
    pass


def test_a_timer_the_test_arms_itself_is_a_way_out():
    def wake(signum, frame):
        raise Woken

    signal.signal(signal.SIGALRM, wake)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    with pytest.raises(Woken):
        queue.Queue().get()


def test_a_handler_the_test_installs_is_a_way_out():
    woken = queue.Queue()
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: woken.put(signum))
    try:
        tell = f"import os, time; time.sleep(1); os.kill({os.getpid()}, {int(signal.SIGUSR1)})"
        child = subprocess.Popen([sys.executable, "-c", tell])
        assert woken.get() == signal.SIGUSR1
        child.wait()
    finally:
        signal.signal(signal.SIGUSR1, previous)
"""

# A session fixture's thread: it serves requests, sleeping as long as each asks.
SERVER = """
import queue
import threading
import time

import pytest


@pytest.fixture(scope="session")
def server():
    requests, replies = queue.Queue(), queue.Queue()

    def serve():
        while True:
            seconds = requests.get()
            time.sleep(seconds)
            replies.put(seconds)

    threading.Thread(target=serve, name="server", daemon=True).start()
    return requests, replies
"""


def test_slow_healthy_tests_and_tests_that_arm_their_own_way_out_pass(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(SERVER)
    pytester.makepyfile(test_healthy=HEALTHY)
    result = run(pytester, "--deadlock", BACKSTOP)
    result.assert_outcomes(passed=5)
    assert "deadlock!" not in result.stdout.str()


AFTER_A_DEADLOCK = """
import queue
import threading
import time

import pytest

# Shared by the tests below: the first leaves a thread stuck on it, the third frees it.
shared = queue.Queue(maxsize=1)
done = queue.Queue()


def test_1_main_joins_a_thread_stuck_on_a_full_queue():
    shared.put("fill")

    def put_then_work():
        shared.put("more")  # waits until someone takes "fill"
        time.sleep(1)  # then works for a second, awake
        done.put("worked")

    left_behind = threading.Thread(target=put_then_work, name="left-behind")
    left_behind.start()
    left_behind.join()


def test_2_main_alone_waits_on_a_queue_nobody_feeds():
    queue.Queue().get()


def test_3_frees_the_thread_left_behind_and_waits_for_its_work():
    assert shared.get() == "fill"
    assert done.get() == "worked"


def test_4_main_waits_on_the_session_fixtures_idle_thread(server):
    requests, replies = server
    replies.get()


def test_5_catches_the_failure_and_goes_on():
    try:
        queue.Queue().get()
    except BaseException:
        pass


@pytest.fixture
def never_ready():
    threading.Event().wait()


def test_6_setup_deadlocks(never_ready):
    pass


@pytest.fixture
def joins_a_stuck_thread():
    stuck = threading.Thread(target=threading.Event().wait, name="stuck-in-teardown", daemon=True)
    stuck.start()
    yield
    stuck.join()


def test_7_teardown_deadlocks(joins_a_stuck_thread):
    pass
"""


def test_what_a_deadlocked_test_leaves_behind_is_no_later_tests(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(SERVER)
    pytester.makepyfile(test_after=AFTER_A_DEADLOCK)
    result = run(pytester, "--deadlock", BACKSTOP)
    failed = failures(result)

    result.assert_outcomes(passed=2, failed=4, errors=2)
    assert result.ret == 1
    assert blocks(failed["test_1_main_joins_a_thread_stuck_on_a_full_queue"]) == [
        "thread MainThread [thread join: left-behind]:",
        "thread left-behind [queue put]:",
    ]
    # Not counted once its test is over: the next report does not name it.
    assert blocks(failed["test_2_main_alone_waits_on_a_queue_nobody_feeds"]) == [
        "thread MainThread [queue get]:"
    ]
    # Woken, it counts again: main waits on it while it works, and that is no deadlock.
    assert "test_3_frees_the_thread_left_behind_and_waits_for_its_work" not in failed
    # A session fixture's thread is the test's while it runs (test_healthy: busy, it serves).
    assert blocks(failed["test_4_main_waits_on_the_session_fixtures_idle_thread"]) == [
        "thread MainThread [queue get: replies]:",
        "thread server [queue get: requests]:",
    ]
    # Caught and swallowed, the failure still fails the test.
    caught = failed["test_5_catches_the_failure_and_goes_on"]
    assert caught[0] == "fatal error: all threads are asleep - deadlock!"
    assert blocks(failed["ERROR at setup of test_6_setup_deadlocks"]) == [
        "thread MainThread [event wait]:"
    ]
    assert blocks(failed["ERROR at teardown of test_7_teardown_deadlocks"]) == [
        "thread MainThread [thread join: stuck-in-teardown]:",
        "thread stuck-in-teardown [event wait]:",
    ]


TIMEOUT_FIRST = """
import queue
import threading
import time

import pytest


@pytest.mark.timeout(0.1)
def test_pytest_timeout_fires_first():
    threading.Thread(target=threading.Event().wait, name="stuck").start()
    queue.Queue().get()


def test_the_next_test_is_not_hit_by_a_late_report():
    # Long enough for a late report of the test above to arrive, if one were on its way.
    time.sleep(1)


@pytest.mark.timeout(20, method="thread")
def test_pytest_timeouts_timer_thread_is_the_runners():
    queue.Queue().get()
"""


def test_beside_pytest_timeout_whichever_fires_first_fails_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_timeout=TIMEOUT_FIRST)
    result = run(pytester, "--deadlock", BACKSTOP)
    failed = failures(result)

    result.assert_outcomes(passed=1, failed=2)
    timed_out = "\n".join(failed["test_pytest_timeout_fires_first"])
    assert "Timeout (>0.1s) from pytest-timeout." in timed_out
    assert "deadlock!" not in timed_out
    # pytest-timeout's timer thread, awake in a timed wait, is left out (else no report would
    # come, and it would end the run at 20 s). "stuck", left behind by the first test and never
    # reported, is not known to be stuck for good: it counts, asleep.
    assert blocks(failed["test_pytest_timeouts_timer_thread_is_the_runners"]) == [
        "thread MainThread [queue get]:",
        "thread stuck [event wait]:",
    ]
    # pytest-timeout left "stuck" behind, unreported, a non-daemon thread: the exit does not
    # wait for it either.
    assert result.ret == 1
    assert "not waiting at exit for threads asleep for good: stuck" in result.stderr.str()


def test_under_xdist_each_worker_watches_its_own_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_deadlocks=DEADLOCKS)
    result = run(pytester, "--deadlock", BACKSTOP, "-n", "2")

    result.assert_outcomes(passed=2, failed=5)
    assert result.ret == 1
    assert "Timeout" not in result.stdout.str()
    failed = failures(result)
    assert blocks(failed["test_two_threads_take_two_locks_in_opposite_orders"]) == [
        "thread MainThread [thread join: a-then-b]:",
        "thread a-then-b [queue get: second]:",
        "thread b-then-a [queue get: second]:",
    ]
