"""Stage 2 with coroutines: the same deadlock at the same boundary, and the fixes beside it.

A deadlocked asyncio program is a loop that waits in select() with nothing that could wake it. The
in-process tests catch exactly that moment: their event loop's selector refuses to wait without a
timeout (CPython's BaseEventLoop._run_once passes timeout=None only when no callback is ready and
no timer is pending). These programs do no I/O, so that wait could only end by a signal or another
thread: it is the deadlock itself, seen without any timing. The demo runs as a real subprocess,
where a timeout is the detector.
"""

from __future__ import annotations

import asyncio
import selectors
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from errors_channel import asyncio_pool
from errors_channel.__main__ import main as errors_channel_main
from errors_channel.asyncio_fixes import run_draining_while_waiting, run_with_room_for_every_error
from errors_channel.asyncio_pool import UnbufferedQueue, double_evens_fail_odds, run
from errors_channel.pool import Outcome
from tests.conftest import REPO_ROOT, run_module
from tests.hanging import run_until_stuck

# The threaded stage's checks: the coroutine stage must pass the very same ones.
from tests.test_errors_channel import (
    TRACE_LINE,
    assert_every_error_and_every_result,
    odd_job_errors,
    processed_jobs,
)

T = TypeVar("T")

POSTS_FAILING_RUN = ("--asyncio", "--error-capacity", "1", "--work-seconds", "0.01")
POOL_SOURCE = (REPO_ROOT / "errors_channel" / "asyncio_pool.py").read_text().splitlines()


def line_of(code: str) -> int:
    """The line number of the one line in errors_channel/asyncio_pool.py that holds `code`."""
    (number,) = [n for n, line in enumerate(POOL_SOURCE, start=1) if line.strip() == code]
    return number


@dataclass(frozen=True)
class SuspendedTask:
    name: str
    function: str
    line: int


class LoopWouldWaitForever(Exception):
    """The loop was about to wait with no ready callback and no timer: every task is stuck."""

    def __init__(self, tasks: list[SuspendedTask]) -> None:
        super().__init__(f"deadlock: {tasks}")
        self.tasks = tasks


class DeadlockDetectingSelector(selectors.DefaultSelector):
    """A selector that raises, with every task's await site, where the loop would wait forever."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: asyncio.AbstractEventLoop | None = None
        # Only the first time: tearing the tasks down afterwards must not trip it again.
        self.armed = True

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None and self.armed and self.loop is not None:
            self.armed = False
            raise LoopWouldWaitForever(suspended_tasks(self.loop))
        return super().select(timeout)


def suspended_tasks(loop: asyncio.AbstractEventLoop) -> list[SuspendedTask]:
    """Each pending task and the line of its coroutine where it awaits."""
    found = []
    for task in asyncio.all_tasks(loop):
        # A suspended task's stack is its coroutine's own frame, stopped at the await.
        (frame,) = task.get_stack()
        found.append(SuspendedTask(task.get_name(), frame.f_code.co_name, frame.f_lineno))
    return sorted(found, key=lambda task: task.name)


def run_or_raise_deadlock(program: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(program), but raise LoopWouldWaitForever instead of hanging."""
    selector = DeadlockDetectingSelector()
    loop = asyncio.SelectorEventLoop(selector)
    selector.loop = loop
    # The runner cancels whatever is left and closes the loop, deadlock or not.
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        return runner.run(program)


def quiet(line: str) -> None:
    pass


def test_default_run_finishes_and_reports_one_error() -> None:
    completed = run_module("errors_channel", "--asyncio", "--work-seconds", "0.01")

    assert completed.returncode == 0, completed.stderr
    assert processed_jobs(completed.stdout) == list(range(1, 10))
    # Five jobs failed; the post's main reads one error and drops the other four.
    assert completed.stdout.splitlines()[-1] == "finished with error: error on job 1"
    assert completed.stdout.count("finished with error") == 1


ASYNCIO_POOL_SOURCE = (REPO_ROOT / "errors_channel" / "asyncio_pool.py").read_text().splitlines()


def asyncio_pool_line(code: str) -> str:
    """The place `errors_channel/asyncio_pool.py:N` of the one line there that holds `code`."""
    (number,) = [n for n, line in enumerate(ASYNCIO_POOL_SOURCE, start=1) if line.strip() == code]
    return f"errors_channel/asyncio_pool.py:{number}"


def test_the_watchdog_reports_the_asyncio_deadlock_like_go_and_exits_2() -> None:
    completed = run_module("errors_channel", "--asyncio", *POSTS_FAILING_RUN, timeout=20)

    assert completed.returncode == 2, completed.stderr
    assert processed_jobs(completed.stdout) == list(range(1, 8))
    report = completed.stderr
    assert report.startswith("fatal error: all tasks are asleep - deadlock!\n")
    blocks = {block.splitlines()[0]: block.splitlines()[1:] for block in report.split("\n\n")[1:]}
    assert set(blocks) == {
        "task Task-1 [await gather]:",
        "task worker-1 [queue put: errors]:",
        "task worker-2 [queue put: errors]:",
        "task worker-3 [queue put: errors]:",
    }
    assert blocks["task Task-1 [await gather]:"][:2] == [
        "errors_channel.asyncio_pool.run(...)",
        f"\t{asyncio_pool_line('await asyncio.gather(*workers)')}",
    ]
    for worker in ("worker-1", "worker-2", "worker-3"):
        assert blocks[f"task {worker} [queue put: errors]:"] == [
            "errors_channel.asyncio_pool.worker(...)",
            f"\t{asyncio_pool_line('await errors.put(error)')}",
        ]


def test_the_docs_show_the_asyncio_report_as_the_demo_prints_it() -> None:
    # The captured report lives on the watchdog's page of the docs.
    page = (REPO_ROOT / "docs" / "watchdog.md").read_text()
    command = "    $ python -m errors_channel --asyncio --error-capacity 1\n"
    first_line = "    fatal error: all tasks are asleep - deadlock!\n"
    start = page.index(first_line, page.index(command))
    end = page.index("\n\n", page.index("    task worker-3", start))
    shown = [line.removeprefix("    ") for line in page[start:end].splitlines()]
    completed = run_module("errors_channel", "--asyncio", *POSTS_FAILING_RUN, timeout=20)
    assert shown == completed.stderr.splitlines()


def test_bounded_error_queue_deadlocks_after_the_posts_seven_jobs() -> None:
    # With --no-watchdog nothing notices the hang, so the test watches it: after job 7, a second
    # with no output, no end and no CPU. The in-process test below shows what it is stuck on.
    stuck = run_until_stuck(
        "errors_channel",
        "--no-watchdog",
        *POSTS_FAILING_RUN,
        got_there=lambda out: len(processed_jobs(out)) == 7,
    )

    assert processed_jobs(stuck.stdout) == list(range(1, 8))
    # One event loop resumes its tasks in a fixed order, so even the interleaving is the one that
    # the module's docstring shows.
    docstring = [line.strip() for line in (asyncio_pool.__doc__ or "").splitlines()]
    assert stuck.stdout.splitlines() == [line for line in docstring if TRACE_LINE.fullmatch(line)]
    if stuck.waits is not None:
        # One thread, the loop's, waiting for I/O that will never come.
        assert [call for _, call in stuck.waits] == ["epoll_wait"]


def test_the_loop_is_left_with_main_at_gather_and_every_worker_at_the_errors_put() -> None:
    trace: list[str] = []
    with pytest.raises(LoopWouldWaitForever) as deadlock:
        run_or_raise_deadlock(run(9, 3, double_evens_fail_odds(0), trace.append, 100, 1))

    put, gather = line_of("await errors.put(error)"), line_of("await asyncio.gather(*workers)")
    workers = [task for task in deadlock.value.tasks if task.name.startswith("worker-")]
    others = [task for task in deadlock.value.tasks if task not in workers]
    assert workers == [SuspendedTask(f"worker-{w}", "worker", put) for w in (1, 2, 3)]
    assert [(task.function, task.line) for task in others] == [("run", gather)]
    assert processed_jobs("\n".join(trace)) == list(range(1, 8))


@settings(max_examples=60)
@given(
    job_count=st.integers(0, 8),
    worker_count=st.integers(1, 4),
    results_capacity=st.integers(0, 5),
    error_capacity=st.integers(0, 5),
)
def test_deadlocks_exactly_when_failures_exceed_error_capacity_or_successes_results_capacity(
    job_count: int, worker_count: int, results_capacity: int, error_capacity: int
) -> None:
    failures = (job_count + 1) // 2  # the odd jobs
    successes = job_count // 2
    expect_deadlock = failures > error_capacity or successes > results_capacity
    program = run(
        job_count, worker_count, double_evens_fail_odds(0), quiet, results_capacity, error_capacity
    )

    if expect_deadlock:
        with pytest.raises(LoopWouldWaitForever):
            run_or_raise_deadlock(program)
    else:
        outcome = run_or_raise_deadlock(program)
        assert sorted(outcome.results) == [2 * job for job in range(2, job_count + 1, 2)]
        assert len(outcome.errors) == min(failures, 1)


@given(job_count=st.integers(0, 40), worker_count=st.integers(1, 6))
def test_room_for_every_error_finishes_and_reports_every_error(
    job_count: int, worker_count: int
) -> None:
    outcome = run_or_raise_deadlock(
        run_with_room_for_every_error(job_count, worker_count, double_evens_fail_odds(0), quiet)
    )

    assert_every_error_and_every_result(outcome, job_count)


@given(
    job_count=st.integers(0, 40),
    worker_count=st.integers(1, 6),
    results_capacity=st.integers(0, 3),
    error_capacity=st.integers(0, 3),
)
def test_draining_while_waiting_finishes_and_reports_every_error_at_any_capacity(
    job_count: int, worker_count: int, results_capacity: int, error_capacity: int
) -> None:
    outcome = run_or_raise_deadlock(
        run_draining_while_waiting(
            job_count,
            worker_count,
            double_evens_fail_odds(0),
            quiet,
            results_capacity,
            error_capacity,
        )
    )

    assert_every_error_and_every_result(outcome, job_count)


@pytest.mark.parametrize("fix", ["room-for-every-error", "drain-while-waiting"])
def test_demo_fixes_finish_the_posts_failing_run_with_every_error(fix: str) -> None:
    completed = run_module("errors_channel", *POSTS_FAILING_RUN, "--fix", fix)

    assert completed.returncode == 0, completed.stderr
    assert processed_jobs(completed.stdout) == list(range(1, 10))
    errors = sorted(line for line in completed.stdout.splitlines() if line.startswith("error:"))
    assert errors == sorted(f"error: {message}" for message in odd_job_errors(9))
    assert completed.stdout.splitlines()[-1] == "finished: 4 results, 5 errors"


def test_unbuffered_put_waits_for_a_receiver() -> None:
    async def scenario() -> None:
        channel: UnbufferedQueue[int] = UnbufferedQueue()
        first = asyncio.create_task(channel.put(1))
        second = asyncio.create_task(channel.put(2))
        # One turn of the loop runs each sender as far as it can go on its own: the first into
        # the slot, then waiting for a receiver; the second waiting for the slot.
        await asyncio.sleep(0)
        assert channel.qsize() == 1
        assert not first.done() and not second.done()
        # (A plain asyncio.Queue(maxsize=0) would have let both return already.)

        assert channel.get_nowait() == 1
        await first  # its item was taken, so its put() returns
        assert await channel.get() == 2
        await second

    run_or_raise_deadlock(scenario())


def test_a_sender_cancelled_while_waiting_leaves_the_channel_usable() -> None:
    async def scenario() -> None:
        channel: UnbufferedQueue[int] = UnbufferedQueue()
        abandoned = asyncio.create_task(channel.put(1))
        await asyncio.sleep(0)
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        # Go has no cancelled send; here the item stays put, and the next get takes it quietly.
        assert channel.get_nowait() == 1
        sender = asyncio.create_task(channel.put(2))
        assert await channel.get() == 2
        await sender

    run_or_raise_deadlock(scenario())


@pytest.mark.parametrize(
    "program",
    [
        lambda: run(9, 3, double_evens_fail_odds(0), quiet),
        lambda: run_with_room_for_every_error(9, 3, double_evens_fail_odds(0), quiet),
        lambda: run_draining_while_waiting(9, 3, double_evens_fail_odds(0), quiet, 0, 0),
    ],
    ids=["run", "room-for-every-error", "drain-while-waiting"],
)
def test_no_task_or_thread_is_left_behind_after_a_finished_run(
    program: Callable[[], Coroutine[Any, Any, Outcome]],
) -> None:
    threads_before = set(threading.enumerate())

    async def run_then_look() -> set[asyncio.Task[Any]]:
        await program()
        me = asyncio.current_task()
        return {task for task in asyncio.all_tasks() if task is not me}

    assert run_or_raise_deadlock(run_then_look()) == set()
    assert set(threading.enumerate()) == threads_before


@pytest.mark.parametrize("bad_args", [["--fix", "hope"], ["--asyncio=yes"], ["--workers", "0"]])
def test_asyncio_demo_refuses_bad_input_with_one_line_and_status_2(
    bad_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        errors_channel_main(["--asyncio", *bad_args])

    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1
    assert error.startswith("python -m errors_channel: error:")
