"""The watchdog sees through the project's own pools (issue 19, item 6).

The pools of stages 3 and 4 keep their main thread awake on purpose: it wakes every 50 ms
(SIGNAL_CHECK_SECONDS) to let in a Ctrl-C that another thread received. They declare that wait
(`__deadlock_watch__`, deadlock_watch/declared.py), and the watchdog counts it asleep only while
nothing has changed since main last looked. Whole programs run as processes of their own
(tests/watchdog_scenarios.py says why); each healthy one ends in a real deadlock, whose report
proves that the watchdog was watching all along. The rest look at one thread in this process.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any, ClassVar

import pytest

import beyond.pool
import robust.ctrl_c_safe_wait
from deadlock_watch import current_frames, declared_wait
from deadlock_watch.threads import Wait
from deadlock_watch.watchdog import Stillness, context_switches
from tests.conftest import REPO_ROOT
from tests.watchdog_scenarios import (
    HEALTHY_SECONDS,
    asleep_in,
    assert_healthy_then_reported,
    gil_kept,
    pool_scenarios,
    sampled,
)

STAGES = ["robust", "beyond"]
# What each stage's main waits on, as the report names it: the variable its pool.py waits through.
MAIN_WAITS_ON = {"robust": "workers", "beyond": "scheduler"}
WORKERS_WAITING = {f"thread worker-{n} [queue get: inbox]:" for n in (1, 2, 3)}


def line_of(stage: str, code: str) -> int:
    """The line number of the one line in the stage's pool.py that holds `code`."""
    lines = (REPO_ROOT / stage / "pool.py").read_text().splitlines()
    (number,) = [n for n, line in enumerate(lines, start=1) if code in line]
    return number


# --- Whole programs -------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_reports_a_pool_whose_tasks_all_wait_on_a_queue_nobody_feeds(stage: str) -> None:
    outcome = pool_scenarios().outcome(f"pool_tasks_wait_on_a_queue_nobody_feeds[{stage}]")

    assert outcome.returncode == 2, outcome.stderr
    assert outcome.stderr.startswith("fatal error: all threads are asleep - deadlock!\n")
    blocks = outcome.blocks()
    waits_on = MAIN_WAITS_ON[stage]
    main_header = f"thread MainThread [pool wait: {waits_on}]:"
    assert set(blocks) == {main_header, *WORKERS_WAITING}
    # Main at the pool's wait for its workers, each worker at its own task's wait, Go-style.
    wait_line = line_of(stage, f"{waits_on}.wait_until_ended(started)")
    main = blocks[main_header]
    assert main[:2] == [f"{stage}.pool.Pool.run(...)", f"\t{stage}/pool.py:{wait_line}"]
    for header in WORKERS_WAITING:
        assert blocks[header][0].endswith(".<locals>.wait_for_an_item(...)"), blocks[header]


@pytest.mark.parametrize("stage", STAGES)
def test_an_on_deadlock_callback_gets_the_report_and_can_tear_the_pool_down(stage: str) -> None:
    # The callback feeds the queue: the pool (daemon threads) finishes, and no thread is left.
    outcome = pool_scenarios().outcome(f"pool_deadlock_torn_down_by_the_callback[{stage}]")

    assert outcome.returncode == 0, outcome.stderr
    finished, report = outcome.stdout.split("\n", 1)
    assert finished == "pool finished after the report"
    assert report.startswith("fatal error: all threads are asleep - deadlock!\n")
    headers = {block.splitlines()[0] for block in report.split("\n\n")[1:] if block.strip()}
    assert headers == {
        "thread MainThread [thread join: pool-main]:",
        f"thread pool-main [pool wait: {MAIN_WAITS_ON[stage]}]:",
        *WORKERS_WAITING,
    }
    assert outcome.stdout.endswith("threads left: 1\n")


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(
    ("scenario", "finished"),
    [
        ("pool_of_slow_tasks", "finished: 4\n"),
        ("pool_of_tasks_waiting_with_timeouts", "finished: 3\n"),
        ("pool_waiting_on_a_running_worker", "finished: 3\n"),
        ("pools_ending_one_after_another", "pools: "),
    ],
)
def test_a_healthy_pool_is_never_reported(stage: str, scenario: str, finished: str) -> None:
    outcome = pool_scenarios().outcome(f"{scenario}[{stage}]")
    assert outcome.stdout.startswith(finished), outcome.stdout
    assert_healthy_then_reported(outcome)


def test_reports_a_stage_4_stream_whose_tasks_wait_on_a_queue_nobody_feeds() -> None:
    outcome = pool_scenarios().outcome("beyond_stream_waiting_on_tasks_nobody_feeds")

    assert outcome.returncode == 2, outcome.stderr
    blocks = outcome.blocks()
    main_header = "thread MainThread [pool wait: scheduler]:"
    assert set(blocks) == {main_header, *sorted(WORKERS_WAITING)[:2]}
    assert blocks[main_header][0] == "beyond.pool.Pool._stream(...)"


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="bare Lock.acquire() waits are read on Linux only"
)
@pytest.mark.parametrize("how", ["run", "stream"])
def test_reports_a_stage_4_pool_whose_tasks_generator_waits_on_a_queue_nobody_feeds(
    how: str,
) -> None:
    # One worker inside the generator's next(); the two others wait in line for it on the pool's
    # bare lock, which the watchdog used to count as awake (silent at 2 workers and more).
    outcome = pool_scenarios().outcome(f"beyond_generator_waiting_on_a_queue_nobody_feeds[{how}]")

    assert outcome.returncode == 2, outcome.stderr
    blocks = set(outcome.blocks())
    assert "thread MainThread [pool wait: scheduler]:" in blocks
    # Whichever worker came to the generator first is inside it (under load, not always worker-1).
    workers = sorted(header.split(" ", 2)[1:] for header in blocks if "worker-" in header)
    assert [name for name, _ in workers] == ["worker-1", "worker-2", "worker-3"], blocks
    waits = sorted(wait for _, wait in workers)
    assert waits == ["[lock acquire: taking]:"] * 2 + ["[queue get: feed]:"], blocks
    assert len(blocks) == 4, blocks


@pytest.mark.parametrize("how", ["run", "stream"])
def test_reports_a_stage_4_asyncio_pool_whose_tasks_await_a_queue_nobody_feeds(how: str) -> None:
    # From synchronous code the pool installs its own SIGINT handler while the loop runs (CtrlC).
    # It only interrupts, as Python's default does, and says so (__deadlock_watch__): no way out.
    outcome = pool_scenarios().outcome(f"beyond_asyncio_waiting_on_a_queue_nobody_feeds[{how}]")

    assert outcome.returncode == 2, outcome.stderr
    assert outcome.stderr.startswith("fatal error: all tasks are asleep - deadlock!\n")
    assert {"task worker-1 [queue get]:", "task worker-3 [queue get]:"} <= set(outcome.blocks())


def test_a_users_own_sigint_handler_beside_a_stage_4_asyncio_pool_is_a_way_out() -> None:
    # The pool leaves Ctrl-C to it; a real SIGINT after 3 s makes it feed the waiting tasks.
    outcome = pool_scenarios().outcome("beyond_asyncio_with_a_users_sigint_handler")
    assert outcome.stdout.startswith("finished: 3\n"), outcome.stderr
    assert_healthy_then_reported(outcome)


def test_a_stage_4_runs_deadline_is_a_way_out_until_it_has_passed() -> None:
    # The deadline (1 s) wakes main, and then each task's overdue report (0.2 s later): a timer,
    # as in Go. Only after both is main's wait for good.
    outcome = pool_scenarios().outcome("beyond_pool_with_a_deadline")

    assert outcome.returncode == 2, outcome.stderr
    first, report = outcome.stdout.split("\n", 1)
    assert float(first.removeprefix("reported after ").removesuffix(" s")) >= HEALTHY_SECONDS + 0.2
    assert "thread MainThread [pool wait: scheduler]:" in report


# --- One thread of this process: the rule for a declared polling wait ----------------------------


class Poller:
    """A polling wait declared as the pools declare theirs; the test moves its counters."""

    __deadlock_watch__: ClassVar[dict[str, str]] = {
        "kind": "pool",
        "polls": "_sleep_until",
        "changes": "_changes",
        "looked_at": "_looked_at",
    }

    def __init__(self) -> None:
        self._changes = 0
        self._looked_at: int | None = 0
        self._stop = threading.Lock()
        self._stop.acquire()

    def _sleep_until(self) -> None:
        # Wakes every 50 ms, as the pools' main does, in a wait in C (no frame of its own).
        while not self._stop.acquire(timeout=0.05):
            pass

    def stop(self) -> None:
        self._stop.release()


def polling(poller: Poller) -> threading.Thread:
    thread = threading.Thread(target=poller._sleep_until, daemon=True)
    thread.start()
    return thread


def test_a_polling_wait_is_asleep_only_while_nothing_changed_since_it_last_looked() -> None:
    poller = Poller()
    thread = polling(poller)
    try:
        first = asleep_in(thread)
        assert (first.kind, first.progress) == ("polling", 0)
        # A change it has not looked at yet: it is about to wake, so it is awake.
        poller._changes = 1
        assert sampled(thread) is None
        # It looked, found nothing to do: asleep again, but not in the same wait as before.
        poller._looked_at = 1
        again = sampled(thread)
        assert again is not None and again.progress == 1
        assert not again.same_as(first)
        # A deadline ahead (stage 4 then records no look): a timer will wake it.
        poller._looked_at = None
        assert sampled(thread) is None
    finally:
        poller.stop()
        thread.join(10)


class MisdeclaredPoller(Poller):
    __deadlock_watch__: ClassVar[dict[str, str]] = {"kind": "pool", "polls": "_sleep_until"}


def test_a_declaration_the_watchdog_cannot_read_is_refused_and_leaves_the_thread_awake() -> None:
    with pytest.raises(ValueError, match="want 'kind', and for a polling wait also"):
        declared_wait(MisdeclaredPoller)
    poller = MisdeclaredPoller()
    thread = polling(poller)
    try:
        while (frame := current_frames().get(thread.ident or 0)) is None or (
            frame.f_code is not Poller._sleep_until.__code__
        ):
            thread.join(0.001)
        assert sampled(thread) is None
    finally:
        poller.stop()
        thread.join(10)


@pytest.mark.parametrize(
    "workers",
    [robust.ctrl_c_safe_wait.Workers(), beyond.pool.Pool([], 1)._scheduler],
    ids=STAGES,
)
def test_each_pool_declares_a_polling_wait_the_watchdog_can_read(workers: Any) -> None:
    declared = declared_wait(type(workers))
    assert declared.polls is not None and callable(getattr(workers, declared.polls))
    assert isinstance(getattr(workers, declared.changes), int)
    assert hasattr(workers, declared.looked_at)


@pytest.mark.parametrize("stage", STAGES)
def test_a_pool_whose_main_is_about_to_be_woken_is_awake(stage: str) -> None:
    # Main waits for two workers. One begins; once main has looked at that, the worker ends while
    # this thread keeps the GIL, so main cannot have looked since: it is about to wake, and must
    # not count as asleep meanwhile.
    if stage == "robust":
        workers: Any = robust.ctrl_c_safe_wait.Workers()
        end_one = workers.end
    else:
        workers = beyond.pool.Pool([beyond.Task(int), beyond.Task(int)], 2)._scheduler
        end_one = functools.partial(workers.end, 0)
    main = threading.Thread(target=workers.wait_until_ended, args=(2,), daemon=True)
    main.start()
    try:
        workers.begin()
        assert asleep_in(main).kind == "polling"
        with gil_kept():
            end_one()
            assert sampled(main) is None
    finally:
        for _ in range(2):
            workers.begin()
            end_one()
        main.join(10)


def test_a_polling_threads_context_switches_are_not_counted_its_changes_are() -> None:
    # It wakes every 50 ms, so its count of context switches grows while it sleeps for good.
    poller = Poller()
    wait = Wait("polling", Poller._sleep_until.__code__, -1, poller, progress=0)
    assert context_switches({threading.get_ident(): wait}) == {threading.get_ident(): None}
    # And a count of changes that moves at every sample is never a deadlock.
    stillness = Stillness(0.3, context_switches)
    moving = ({1: Wait("polling", wait.code, -1, poller, progress=step)} for step in range(100))
    assert not any(stillness.still_for_grace(next(moving), step * 0.05) for step in range(40))
