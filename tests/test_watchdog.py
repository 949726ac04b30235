"""The deadlock watchdog reports threads that are all asleep, and never a slow but healthy run."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time

import pytest

from errors_channel.pool import double_evens_fail_odds
from errors_channel.pool import run as run_errors_channel
from errors_channel.watchdog import DeadlockReport, Watchdog, _Asleep, _asleep
from naive.pool import double_after
from naive.pool import run as run_naive
from tests.conftest import REPO_ROOT


@pytest.mark.timeout(30)
def test_reports_threads_asleep_on_queues_an_event_and_a_join() -> None:
    # Two daemon threads wait on queues nobody fills, a third waits on an Event; main joins the
    # third without a timeout. Every thread is asleep: the watchdog must say so, naming each wait.
    # Its callback then unblocks everything, so the test tears its own deadlock down.
    inbox_a: queue.Queue[str] = queue.Queue()
    inbox_b: queue.Queue[str] = queue.Queue()
    go_on = threading.Event()
    reports: list[DeadlockReport] = []

    def on_deadlock(report: DeadlockReport) -> None:
        reports.append(report)
        inbox_a.put("wake up")
        inbox_b.put("wake up")
        go_on.set()

    stuck = [
        threading.Thread(target=inbox_a.get, name="reader-a", daemon=True),
        threading.Thread(target=inbox_b.get, name="reader-b", daemon=True),
        threading.Thread(target=go_on.wait, name="event-waiter", daemon=True),
    ]
    with Watchdog(on_deadlock):
        for thread in stuck:
            thread.start()
        stuck[2].join()  # untimed: only the watchdog's callback can end this
    for thread in stuck:
        thread.join(10)
        assert not thread.is_alive()

    (report,) = reports
    waits = {thread.name: thread.waiting_on for thread in report.threads}
    assert waits == {
        "MainThread": "thread join: event-waiter",
        "reader-a": "queue get",
        "reader-b": "queue get",
        "event-waiter": "event wait",
    }
    text = report.format()
    assert text.startswith("fatal error: all threads are asleep - deadlock!\n")
    assert "thread MainThread [thread join: event-waiter]:" in text
    assert "tests.test_watchdog.test_reports_threads_asleep_on_queues_an_event_and_a_join" in text


def test_a_slow_but_healthy_run_is_never_reported() -> None:
    # Each job sleeps twice the watchdog's grace period. Main sits in results.get() (asleep) all
    # along, but a sleeping worker is awake: it will come back by itself.
    reports: list[DeadlockReport] = []
    with Watchdog(reports.append, grace=0.3):
        results = run_naive(4, 2, double_after(0.6), lambda line: None)
    assert sorted(results) == [2, 4, 6, 8]
    assert reports == []


def test_a_slow_run_with_an_errors_queue_that_has_room_is_never_reported() -> None:
    reports: list[DeadlockReport] = []
    with Watchdog(reports.append, grace=0.3):
        outcome = run_errors_channel(4, 2, double_evens_fail_odds(0.6), lambda line: None)
    assert sorted(outcome.results) == [4, 8]
    assert reports == []


def test_a_computing_thread_is_awake() -> None:
    reports: list[DeadlockReport] = []
    iterations = 0

    def compute() -> None:
        nonlocal iterations
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            iterations += 1

    with Watchdog(reports.append, grace=0.2):
        worker = threading.Thread(target=compute)
        worker.start()
        worker.join()  # main asleep for a second; the worker never is
    assert iterations > 0
    assert reports == []


def test_threads_that_keep_coming_back_to_the_same_wait_are_not_stuck() -> None:
    # Two threads play ping-pong through one-slot queues for a second, five times the grace
    # period, while main waits for them. At any instant most of the program sits in a get(), and
    # often at the same line as the sample before; the watchdog must see that they move.
    ping: queue.Queue[int] = queue.Queue(maxsize=1)
    pong: queue.Queue[int] = queue.Queue(maxsize=1)
    rallies = 0
    deadline = time.monotonic() + 1.0

    def server() -> None:
        nonlocal rallies
        while time.monotonic() < deadline:
            ping.put(rallies)
            pong.get()
            rallies += 1
        ping.put(-1)

    def returner() -> None:
        while ping.get() >= 0:
            pong.put(0)

    reports: list[DeadlockReport] = []
    with Watchdog(reports.append, grace=0.2):
        players = [threading.Thread(target=server), threading.Thread(target=returner)]
        for player in players:
            player.start()
        for player in players:
            player.join()
    assert rallies > 100
    assert reports == []


def test_stopping_the_watchdog_ends_its_thread() -> None:
    watchdog = Watchdog(lambda report: None).start()
    watchdog.stop()
    assert not any(thread.name == "deadlock-watchdog" for thread in threading.enumerate())


def test_reports_main_waiting_at_exit_for_a_stuck_non_daemon_thread() -> None:
    # Main returns, but a non-daemon thread waits for an Event nobody will set: Python would hang
    # at exit, joining it. The watchdog sees main's exit wait and ends the process like Go.
    program = """
import threading
from errors_channel.watchdog import Watchdog
never_set = threading.Event()
threading.Thread(target=never_set.wait, name="forgotten").start()
Watchdog().start()
print("main is done")
"""
    completed = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )

    assert completed.stdout == "main is done\n"
    assert completed.returncode == 2
    assert "thread MainThread [exit: waiting for non-daemon threads]:" in completed.stderr
    assert "thread forgotten [event wait]:" in completed.stderr


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads context switches from /proc (Linux)"
)
def test_a_thread_that_comes_back_to_the_same_wait_is_seen_to_have_moved() -> None:
    # A thread woken between two samples that waits again at the very same line looks, frame for
    # frame, exactly as it did. The watchdog must still see that it moved (its context-switch count
    # and its new waiter lock), or a busy program would pass for a stuck one.
    wake = threading.Condition()
    wakeups = 0
    stopping = False

    def wait_again_and_again() -> None:
        nonlocal wakeups
        with wake:
            while not stopping:
                wake.wait()
                wakeups += 1

    thread = threading.Thread(target=wait_again_and_again, daemon=True)
    thread.start()
    ident = thread.ident
    assert ident is not None

    def seen_asleep() -> _Asleep:
        while True:
            seen = _asleep(ident, sys._current_frames()[ident], thread)
            if seen is not None:
                return seen
            thread.join(0.001)

    before = seen_asleep()
    with wake:
        wake.notify()
    while wakeups < 1:
        thread.join(0.001)
    after = seen_asleep()

    assert after.site == before.site  # the same line: that is what makes it hard
    assert after != before
    stopping = True
    with wake:
        wake.notify()
    thread.join(10)
    assert not thread.is_alive()
