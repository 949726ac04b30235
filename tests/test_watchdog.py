"""The deadlock watchdog reports threads that are all asleep, and never a slow but healthy run.

Whole programs run as processes of their own (tests/watchdog_scenarios.py says why): a test reads
one scenario's outcome. The rest look at single threads, or at the watchdog's bookkeeping, in this
process.
"""

from __future__ import annotations

import gc
import queue
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable

import pytest

from deadlock_watch import Watchdog, current_frames
from deadlock_watch.threads import Wait
from deadlock_watch.watchdog import Stillness
from tests.conftest import REPO_ROOT
from tests.watchdog_scenarios import (
    asleep_in,
    assert_healthy_then_reported,
    every_scenario,
    gil_kept,
    sampled,
)

# --- Whole programs -------------------------------------------------------------------------------


def test_reports_threads_asleep_on_queues_an_event_and_a_join() -> None:
    outcome = every_scenario().outcome("queues_an_event_and_a_join")

    assert outcome.returncode == 2
    assert outcome.stderr.startswith("fatal error: all threads are asleep - deadlock!\n")
    blocks = outcome.blocks()
    assert set(blocks) == {
        "thread MainThread [thread join: event-waiter]:",
        "thread reader-a [queue get]:",
        "thread reader-b [queue get]:",
        "thread event-waiter [event wait]:",
    }
    main_stack = blocks["thread MainThread [thread join: event-waiter]:"]
    assert main_stack[0] == "__main__.queues_an_event_and_a_join(...)"


def test_a_slow_but_healthy_run_is_never_reported() -> None:
    # Each job sleeps twice the grace period while main sits in results.get(), asleep.
    outcome = every_scenario().outcome("slow_naive_run")
    assert "results: [2, 4, 6, 8]\n" in outcome.stdout
    assert_healthy_then_reported(outcome)


def test_a_slow_run_with_an_errors_queue_that_has_room_is_never_reported() -> None:
    outcome = every_scenario().outcome("slow_errors_channel_run")
    assert "results: [4, 8]\n" in outcome.stdout
    assert_healthy_then_reported(outcome)


def test_a_computing_thread_is_awake() -> None:
    # Main joins a thread that computes for a second: main is asleep, the worker never is.
    outcome = every_scenario().outcome("computing_thread")
    assert_healthy_then_reported(outcome)


def test_reports_main_waiting_at_exit_for_a_stuck_non_daemon_thread() -> None:
    outcome = every_scenario().outcome("exit_with_a_stuck_non_daemon_thread")

    assert outcome.stdout == "main is done\n"
    assert outcome.returncode == 2
    assert set(outcome.blocks()) == {
        "thread MainThread [exit: waiting for non-daemon threads]:",
        "thread forgotten [event wait]:",
    }


def test_a_timed_event_wait_is_a_way_out() -> None:
    # A worker waits for main, and main waits with a timeout (Event().wait(1)): a timer, as in
    # Go, so nothing is stuck.
    assert_healthy_then_reported(every_scenario().outcome("timed_event_wait"))


def test_a_timed_join_is_a_way_out() -> None:
    assert_healthy_then_reported(every_scenario().outcome("timed_join"))


def test_waits_out_the_grace_period_before_reporting() -> None:
    # Not a timing assertion that a slow machine can break: the report can only come later.
    outcome = every_scenario().outcome("deadlock_with_a_long_grace_period")

    assert outcome.returncode == 2
    (line,) = outcome.stdout.splitlines()
    seconds = float(line.removeprefix("reported after ").removesuffix(" s"))
    assert seconds >= 1.0


def test_two_watchdogs_do_not_hide_a_deadlock_from_each_other() -> None:
    outcome = every_scenario().outcome("two_watchdogs")
    assert outcome.returncode == 2
    assert set(outcome.blocks()) == {"thread MainThread [event wait]:"}


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SimpleQueue waits are read on Linux only"
)
def test_threads_taking_turns_at_simple_queue_gets_are_never_reported() -> None:
    outcome = every_scenario().outcome("simple_queue_ping_pong")
    rallies = int(outcome.stdout.splitlines()[0].removeprefix("rallies: "))
    assert rallies > 100
    assert_healthy_then_reported(outcome)


# --- Executors and SimpleQueue (read on Linux only: they need the context-switch counts) ---------

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SimpleQueue waits are read on Linux only"
)


@linux_only
def test_reports_a_deadlock_beside_an_idle_executor() -> None:
    # ThreadPoolExecutor(1) used once, then main waits forever. The idle worker used to count as
    # awake and hide the deadlock.
    outcome = every_scenario().outcome("idle_executor_beside_a_deadlock")

    assert outcome.stdout == "the executor ran once\n"
    assert outcome.returncode == 2
    assert set(outcome.blocks()) == {
        "thread MainThread [event wait]:",
        "thread ThreadPoolExecutor-0_0 [executor worker idle]:",
    }


@linux_only
def test_reports_a_thread_in_simple_queue_get_that_nobody_feeds() -> None:
    outcome = every_scenario().outcome("simple_queue_nobody_feeds")

    assert outcome.returncode == 2
    blocks = outcome.blocks()
    assert set(blocks) == {
        "thread MainThread [event wait]:",
        "thread reader [simplequeue get: inbox]:",
    }
    assert blocks["thread reader [simplequeue get: inbox]:"][0] == (
        "__main__.simple_queue_nobody_feeds.<locals>.read_one(...)"
    )


@linux_only
def test_an_executor_running_work_is_never_reported() -> None:
    # A second of tiny tasks, main waiting for each result, then one task longer than the grace
    # period; afterwards the worker is idle, and the final deadlock names it.
    outcome = every_scenario().outcome("busy_executor")
    assert_healthy_then_reported(outcome, "thread ThreadPoolExecutor-0_0 [executor worker idle]:")


# --- One thread at a time, in this process --------------------------------------------------------


def daemon(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_notified_condition_waiter_is_awake_before_it_has_run() -> None:
    # notify() takes the waiter off the condition's list: the sleeper will run as soon as it gets
    # the GIL, even if it has not run yet (it cannot: this thread keeps the GIL).
    wake = threading.Condition()

    def sleep_once() -> None:
        with wake:
            wake.wait()

    sleeper = daemon(sleep_once)
    assert asleep_in(sleeper).kind == "condition"
    with gil_kept():
        with wake:
            wake.notify()
        after_notify = sampled(sleeper)
    sleeper.join(10)
    assert after_notify is None


def test_a_thread_waiting_in_thread_start_for_the_new_thread_to_begin_is_awake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Thread.start() waits until the new thread has begun, and until then that thread runs no
    # Python, so sys._current_frames() does not show it: under load (seen at load 20) the starter
    # looked like the last thread awake, and a healthy run was reported. Here the new thread is
    # held before it runs any of threading's code, as a kernel slow to schedule it would.
    gate, go = threading.Event(), threading.Event()
    # What Thread.start() calls to make the OS thread: 3.13 renamed it.
    name = "_start_joinable_thread" if sys.version_info >= (3, 13) else "_start_new_thread"
    begin = getattr(threading, name)

    def begin_later(function: Callable[..., None], *args: object, **kwargs: object) -> object:
        def held(*inner: object) -> None:
            gate.wait()
            function(*inner)

        return begin(held, *args, **kwargs)

    def start_new() -> None:
        go.wait()
        new.start()

    new = threading.Thread(target=lambda: None, daemon=True)
    starter = daemon(start_new)
    monkeypatch.setattr(threading, name, begin_later)
    go.set()
    try:
        deadline = time.monotonic() + 10
        while not in_thread_start(starter) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert in_thread_start(starter)
        assert sampled(starter) is None
    finally:
        gate.set()
        starter.join(10)
        new.join(10)


def in_thread_start(thread: threading.Thread) -> bool:
    frame = current_frames().get(thread.ident or 0)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names[:3] == ["wait", "wait", "start"]


@linux_only
@pytest.mark.skipif(
    sys.version_info >= (3, 13),
    reason="3.13's put() hands the item straight to a waiting get() (a parking lot): nothing in "
    "the queue shows the wake-up, only the context-switch count does",
)
def test_a_simple_queue_getter_with_an_item_waiting_is_awake_before_it_has_run() -> None:
    letters: queue.SimpleQueue[str] = queue.SimpleQueue()

    def read_one() -> None:
        inbox = letters
        inbox.get()

    reader = daemon(read_one)
    assert asleep_in(reader).kind == "simplequeue"
    with gil_kept():
        letters.put("wake up")
        after_put = sampled(reader)
    reader.join(10)
    assert after_put is None


@linux_only
def test_only_an_untimed_get_on_a_local_simple_queue_counts_as_asleep() -> None:
    shared: queue.SimpleQueue[None] = queue.SimpleQueue()

    class Holder:
        inbox = shared

    def plain() -> None:
        inbox = shared
        inbox.get()

    def positional() -> None:
        inbox = shared
        inbox.get(True, None)

    def keywords() -> None:
        inbox = shared
        inbox.get(block=True, timeout=None)

    def timed() -> None:
        inbox = shared
        inbox.get(timeout=30)

    def through_an_attribute() -> None:
        Holder().inbox.get()

    untimed = [daemon(plain), daemon(positional), daemon(keywords)]
    others = {
        daemon(timed): timed.__code__,
        daemon(through_an_attribute): through_an_attribute.__code__,
    }
    for thread in untimed:
        assert asleep_in(thread).kind == "simplequeue"
    for thread, code in others.items():
        parked_in_a_call(thread, code)
        assert sampled(thread) is None, code.co_name
    for _ in range(len(untimed) + len(others)):
        shared.put(None)
    for thread in [*untimed, *others]:
        thread.join(10)


# --- Bare locks (read on Linux only, as SimpleQueue gets: they need the context-switch counts) ----


@linux_only
def test_reports_threads_that_each_wait_for_the_lock_the_other_holds() -> None:
    outcome = every_scenario().outcome("locks_taken_in_opposite_orders")

    assert outcome.returncode == 2, outcome.stderr
    blocks = outcome.blocks()
    assert set(blocks) == {
        "thread MainThread [thread join: first-then-second]:",
        "thread first-then-second [lock acquire: theirs]:",
        "thread second-then-first [lock acquire: theirs]:",
    }
    assert blocks["thread first-then-second [lock acquire: theirs]:"][0] == (
        "__main__.locks_taken_in_opposite_orders.<locals>.take(...)"
    )


@linux_only
def test_threads_taking_turns_through_bare_locks_are_never_reported() -> None:
    # A woken taker holds the lock (in C) before it runs again: it looks asleep at the same place
    # until its count of context switches moves.
    outcome = every_scenario().outcome("locks_handed_back_and_forth")
    turns = int(outcome.stdout.splitlines()[0].removeprefix("turns: "))
    assert turns > 100
    assert_healthy_then_reported(outcome)


@linux_only
def test_a_lock_held_by_a_thread_that_sleeps_is_never_reported() -> None:
    assert_healthy_then_reported(every_scenario().outcome("lock_held_by_a_sleeping_thread"))


@linux_only
def test_only_an_untimed_acquire_of_a_held_local_lock_counts_as_asleep() -> None:
    held = threading.Lock()
    held.acquire()
    owned = threading.RLock()
    owner_holds = threading.Event()
    release_the_rlock = threading.Event()

    class Holder:
        lock = held

    def plain() -> None:
        lock = held
        lock.acquire()

    def positional() -> None:
        lock = held
        lock.acquire(True, -1)

    def keywords() -> None:
        lock = held
        lock.acquire(blocking=True, timeout=-1)

    def timed() -> None:
        lock = held
        lock.acquire(timeout=30)

    def through_an_attribute() -> None:
        Holder().lock.acquire()

    def rlock() -> None:
        lock = owned
        lock.acquire()

    def hold_the_rlock() -> None:
        with owned:
            owner_holds.set()
            release_the_rlock.wait()

    holder = daemon(hold_the_rlock)
    owner_holds.wait(10)
    untimed = [daemon(plain), daemon(positional), daemon(keywords)]
    others = {
        daemon(timed): timed.__code__,
        daemon(through_an_attribute): through_an_attribute.__code__,
        daemon(rlock): rlock.__code__,
    }
    try:
        for thread in untimed:
            assert asleep_in(thread).kind == "lock"
        for thread, code in others.items():
            parked_in_a_call(thread, code)
            assert sampled(thread) is None, code.co_name
    finally:
        release_the_rlock.set()
        # Each release hands the lock to one taker, which keeps it: release once per taker of
        # `held`, each time once a taker has it again (a release of a free lock raises).
        for remaining in range(len(untimed) + len(others) - 1, 0, -1):
            held.release()
            deadline = time.monotonic() + 10
            while remaining > 1 and not held.locked() and time.monotonic() < deadline:
                holder.join(0.001)
    for thread in [holder, *untimed, *others]:
        thread.join(10)
        assert not thread.is_alive()


def parked_in_a_call(thread: threading.Thread, code: types.CodeType) -> None:
    """Wait until the thread runs `code`, stopped at one call (fail after 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = current_frames()[thread.ident or 0]
        if frame.f_code is code:
            lasti = frame.f_lasti
            thread.join(0.05)
            if current_frames()[thread.ident or 0].f_lasti == lasti:
                return
        thread.join(0.001)
    raise AssertionError(f"{code.co_name} never stopped in a call")


def test_a_thread_back_at_the_same_wait_has_a_new_wait_object() -> None:
    # Woken, it comes back to the very same line: only the new waiter lock tells the two waits
    # apart where context switches cannot be counted. The first sample holds its waiter lock, so
    # the second wait cannot get one at the same address (id() alone used to be reused).
    wake = threading.Condition()
    wakeups = 0

    def wait_again_and_again() -> None:
        nonlocal wakeups
        with wake:
            while True:
                wake.wait()
                wakeups += 1

    sleeper = daemon(wait_again_and_again)
    before = asleep_in(sleeper)
    with wake:
        wake.notify()
    while wakeups < 1:
        sleeper.join(0.001)
    after = asleep_in(sleeper)

    assert (after.code, after.lasti) == (before.code, before.lasti)  # what makes it hard
    assert not after.same_as(before)


def test_stopping_the_watchdog_ends_its_thread() -> None:
    watchdog = Watchdog(lambda report: None).start()
    watchdog.stop()
    assert not any(thread.name == "deadlock-watchdog" for thread in threading.enumerate())


# --- The bookkeeping: the very same waits, for the whole grace period -----------------------------

SITE = test_stopping_the_watchdog_ends_its_thread.__code__


def samples_until_deadlock(
    stillness: Stillness, make_waits: Callable[[], dict[int, Wait]], seconds: float = 2.0
) -> float | None:
    """Feed it a sample every 50 ms (on a made-up clock); when does it call it a deadlock?"""
    for step in range(int(seconds / 0.05)):
        now = step * 0.05
        if stillness.still_for_grace(make_waits(), now):
            return now
    return None


def test_the_same_waits_for_the_grace_period_are_a_deadlock() -> None:
    wait = {1: Wait("condition", SITE, 10, object())}
    assert samples_until_deadlock(Stillness(0.3, None), lambda: wait) == pytest.approx(0.3)
    # With context switches counted, the grace period starts at the first count (second sample).
    counted = Stillness(0.3, lambda waits: {1: 7})
    assert samples_until_deadlock(counted, lambda: wait) == pytest.approx(0.35)


def test_a_new_wait_object_at_the_same_place_means_the_thread_moved() -> None:
    def a_new_waiter_every_time() -> dict[int, Wait]:
        return {1: Wait("condition", SITE, 10, threading.Lock())}

    assert samples_until_deadlock(Stillness(0.3, None), a_new_waiter_every_time) is None


def test_a_grown_context_switch_count_means_the_thread_ran() -> None:
    wait = {1: Wait("simplequeue", SITE, 10, object())}
    switches = iter(range(1000))
    stillness = Stillness(0.3, lambda waits: {1: next(switches)})
    assert samples_until_deadlock(stillness, lambda: wait) is None


def test_a_simple_queue_get_whose_count_cannot_be_read_is_never_a_deadlock() -> None:
    # A Condition wait has a wait object of its own to go by; a SimpleQueue.get() has not.
    def unreadable() -> Stillness:
        return Stillness(0.3, lambda waits: dict.fromkeys(waits))

    simple_queue = {1: Wait("simplequeue", SITE, 10, object())}
    assert samples_until_deadlock(unreadable(), lambda: simple_queue) is None
    condition = {1: Wait("condition", SITE, 10, object())}
    assert samples_until_deadlock(unreadable(), lambda: condition) is not None


# Garbage that holds a threading.local, a collection at every allocation, and a look at the
# threads from a fresh frame each time (sys._current_frames() allocates the frame object of a
# frame that has none yet, while it holds the runtime's thread-list lock).
LOOK_WHILE_THE_COLLECTOR_FREES_A_THREAD_LOCAL = """
import gc, sys, threading
from deadlock_watch import current_frames
look = sys._current_frames if sys.argv[1] == "sys._current_frames" else current_frames
class Holder: pass
def make_garbage():
    holder = Holder()
    holder.local = threading.local()
    holder.me = holder
def fresh_frame():
    return look()
gc.collect()
gc.set_threshold(1)
for _ in range(200):
    make_garbage()
    fresh_frame()
print("looked 200 times")
"""


def look_at_the_threads_while_the_collector_frees_a_thread_local(
    look: str, timeout: float
) -> subprocess.CompletedProcess[str] | None:
    """The scenario in a process of its own (it may hang for good); None if it hung."""
    try:
        return subprocess.run(
            [sys.executable, "-c", LOOK_WHILE_THE_COLLECTOR_FREES_A_THREAD_LOCAL, look],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None


def test_looking_at_the_threads_never_deadlocks_with_the_garbage_collector() -> None:
    done = look_at_the_threads_while_the_collector_frees_a_thread_local("current_frames", 20)
    assert done is not None, "current_frames() hung"
    assert (done.returncode, done.stdout) == (0, "looked 200 times\n"), done.stderr


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="CPython fixed gh-106883 in 3.12")
def test_on_3_11_the_same_look_through_sys_current_frames_hangs_for_good() -> None:
    # What current_frames() is for: the scenario above is a real deadlock on this Python.
    assert (
        look_at_the_threads_while_the_collector_frees_a_thread_local("sys._current_frames", 5)
        is None
    )


@pytest.mark.parametrize("enabled", [True, False], ids=["collector on", "collector off"])
def test_current_frames_leaves_the_collector_as_it_found_it(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        assert threading.get_ident() in current_frames()
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.11 needs the collector held off")
def test_on_3_12_and_later_current_frames_leaves_the_collector_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The flag is one for the whole process: toggling it races with any other thread that does.
    touched: list[str] = []
    monkeypatch.setattr(gc, "disable", lambda: touched.append("disable"))
    monkeypatch.setattr(gc, "enable", lambda: touched.append("enable"))
    assert threading.get_ident() in current_frames()
    assert touched == []
