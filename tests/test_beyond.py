"""Stage 4: every rule of the pool you would ship, in-process (signals: *_interrupts.py)."""

from __future__ import annotations

import gc
import itertools
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from types import CodeType
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import beyond.scheduler
import beyond.task
import beyond.waiting
from beyond import (
    Cancelled,
    OverdueWarning,
    Pool,
    StopReason,
    Task,
    checkpoint,
    current_token,
)
from beyond.backends.protocol import Runner, SchedulerSeam
from beyond.backends.threads import RunInWorkerThread
from beyond.backends.worker_threads import OneThreadPerWorker
from beyond.task import quoted_name
from deadlock_watch import current_frames
from tests.conftest import finish_within
from tests.thread_probes import interrupt_thread_start


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Every test here: the threads alive after it are the threads alive before it."""
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) - before == set()


@pytest.fixture(autouse=True)
def wake_ups_are_not_covered_by_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Main also wakes every SIGNAL_CHECK_SECONDS, for signals a worker thread received (see
    test_beyond_interrupts.py). Here no signal comes, so stretch that to a minute: a wake-up the
    pool forgets then hangs the test instead of costing 50 ms unseen."""
    monkeypatch.setattr(beyond.waiting, "SIGNAL_CHECK_SECONDS", 60.0)


def returns(value: int) -> Callable[[], int]:
    return lambda: value


def raises(error: BaseException) -> Callable[[], int]:
    def fail() -> int:
        raise error

    return fail


def generated(tasks: Iterable[Task[int]]) -> Iterator[Task[int]]:
    """The same tasks, but from a generator: the pool must take them lazily."""
    yield from tasks


def parked_in(thread: threading.Thread, *functions: Callable[..., object]) -> bool:
    """Is `thread` blocked right now in one of `functions`: waiting for a lock there (the
    innermost frame), or in a threading wait that one of them called?"""
    codes: set[CodeType] = {function.__code__ for function in functions}
    frame = current_frames().get(thread.ident or -1)
    while frame is not None and frame.f_code.co_filename == threading.__file__:
        frame = frame.f_back
    return frame is not None and frame.f_code in codes


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Poll until `condition` holds; the limit is only a backstop for a hang."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.001)


def worker_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("worker-")]


# --- Stage 3's contract still holds: the post's own tests, for a list and for a generator. ---


@pytest.mark.parametrize("source", [list, generated], ids=["list", "generator"])
def test_the_posts_three_cases_hold_for_a_list_and_a_generator(
    source: Callable[[list[Task[int]]], Iterable[Task[int]]],
) -> None:
    empty: Pool[int] = Pool(source([]), concurrency=3)
    empty.run()
    assert (empty.tasks, empty.stopped) == ([], None)

    ok = [Task(returns(n)) for n in (1, 2, 3)]
    pool = Pool(source(ok), concurrency=2)
    pool.run()
    assert pool.tasks == ok
    assert [(task.err, task.result, task.finished) for task in ok] == [
        (None, 1, True),
        (None, 2, True),
        (None, 3, True),
    ]

    failure = ValueError("boom")
    mixed = [Task(returns(1)), Task(raises(failure)), Task(returns(3))]
    Pool(source(mixed), concurrency=3).run()
    assert [task.err for task in mixed] == [None, failure, None]


# --- The properties, over many configurations. ---


class Observed:
    """What the tasks of one run saw: calls per task, and which started after the limit."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}
        self.started_after_limit: list[int] = []
        self.pool: Pool[int] | None = None


def observed_task(index: int, fails: bool, seen: Observed, limit: int | None) -> Task[int]:
    error = RuntimeError(f"task {index} failed")

    def run() -> int:
        # The pool's own record: a task that finds the limit already reached was started by a
        # worker that had passed its last check before the failure that reached it was recorded.
        assert seen.pool is not None
        if limit is not None and len(seen.pool._scheduler.failures) >= limit:
            seen.started_after_limit.append(index)
        seen.calls[index] = seen.calls.get(index, 0) + 1
        if fails:
            raise error
        return 1000 + index

    return Task(run)


@settings(max_examples=150)
@given(
    outcomes=st.lists(st.booleans(), max_size=40),
    concurrency=st.integers(1, 6),
    max_errors=st.none() | st.integers(1, 8),
    from_generator=st.booleans(),
    streaming=st.booleans(),
)
def test_every_task_runs_at_most_once_keeps_its_own_outcome_and_the_limit_holds(
    outcomes: list[bool],
    concurrency: int,
    max_errors: int | None,
    from_generator: bool,
    streaming: bool,
) -> None:
    seen = Observed()
    tasks = [observed_task(i, fails, seen, max_errors) for i, fails in enumerate(outcomes)]
    pool = Pool(generated(tasks) if from_generator else tasks, concurrency, max_errors=max_errors)
    seen.pool = pool

    yielded = finish_within(10, lambda: list(pool) if streaming else pool.run())

    # Every task runs at most once, and a task holds an outcome exactly when it ran.
    assert all(count == 1 for count in seen.calls.values())
    for i, task in enumerate(tasks):
        assert task.finished == (i in seen.calls)
        if not task.finished:
            assert (task.err, task.result) == (None, None)
        elif outcomes[i]:
            assert (str(task.err), task.result) == (f"task {i} failed", None)
        else:
            assert (task.err, task.result) == (None, 1000 + i)
    # Iteration yields each finished task exactly once, and nothing else.
    if streaming:
        assert isinstance(yielded, list)
        assert len(yielded) == len({id(task) for task in yielded})
        assert {id(task) for task in yielded} == {id(task) for task in tasks if task.finished}
    # run() keeps the tasks it took from a generator, in order; iteration keeps none.
    if from_generator:
        kept = [] if streaming else [task for task in tasks if task.finished]
        assert pool.tasks[: len(kept)] == kept
    failures = sum(task.err is not None for task in tasks)
    if max_errors is not None and failures >= max_errors:
        assert pool.stopped is not None and pool.stopped.reason is StopReason.MAX_ERRORS
        # The bound: workers already past their last check as the limit was reached, at most
        # one each, never the worker whose failure reached it.
        assert len(seen.started_after_limit) <= concurrency - 1
    else:
        assert pool.stopped is None
        assert all(task.finished for task in tasks)


@pytest.mark.parametrize("streaming", [False, True], ids=["run", "iteration"])
@given(concurrency=st.integers(1, 6), rounds=st.integers(1, 3))
def test_concurrency_bound_is_reached_and_never_exceeded(
    streaming: bool, concurrency: int, rounds: int
) -> None:
    # As in stage 3: every task waits at a barrier for `concurrency` parties, so the run
    # finishes only if the pool reaches its bound, and a peak above it would show.
    running = 0
    peak = 0
    counting = threading.Lock()
    all_running = threading.Barrier(concurrency, timeout=10)

    def meet() -> int:
        nonlocal running, peak
        with counting:
            running += 1
            peak = max(peak, running)
        try:
            return all_running.wait()
        finally:
            with counting:
                running -= 1

    pool = Pool(generated(Task(meet) for _ in range(concurrency * rounds)), concurrency)
    finish_within(20, lambda: list(pool) if streaming else pool.run())
    assert peak == concurrency


# --- Lazy input and backpressure. ---


def test_run_takes_from_a_generator_only_when_a_worker_is_free() -> None:
    # Each task holds its worker until released. While `concurrency` tasks run, the generator
    # must not have been asked for one more: taken and not finished <= concurrency.
    concurrency = 3
    produced = 0
    release = threading.Event()
    all_started = threading.Barrier(concurrency + 1, timeout=10)

    def held() -> int:
        all_started.wait()
        release.wait(10)
        return 0

    def tasks() -> Iterator[Task[int]]:
        nonlocal produced
        for _ in range(50):
            produced += 1
            yield Task(held if produced <= concurrency else returns(0))

    pool = Pool(tasks(), concurrency)
    runner = threading.Thread(target=pool.run)
    runner.start()
    all_started.wait()
    assert produced == concurrency
    release.set()
    runner.join(10)
    assert (produced, len(pool.tasks)) == (50, 50)


def test_iteration_takes_at_most_the_stated_bound_of_tasks_ahead_of_a_slow_consumer() -> None:
    concurrency = 3
    # The bound Pool.stream() states: 16 tasks per worker.
    ahead = beyond.scheduler.ahead_bound(concurrency)
    assert ahead == 16 * concurrency
    produced = 0

    def tasks() -> Iterator[Task[int]]:
        nonlocal produced
        for n in range(1000):
            produced += 1
            yield Task(returns(n))

    pool = Pool(tasks(), concurrency)
    stream = pool.stream()
    consumed = 0
    with_room = (beyond.scheduler.Scheduler.wait_for_room, beyond.scheduler.Scheduler.end)
    for _task in stream:
        consumed += 1
        if consumed in (1, 500):
            # A slow consumer: let the workers go as far as they can. With backpressure they all
            # end up waiting for room; without it they would run to the end and stop.
            wait_for(
                lambda: (
                    all(parked_in(thread, *with_room) for thread in worker_threads())
                    or not worker_threads()
                ),
                "every worker waits for room or has ended",
            )
            # They went as far ahead as the bound lets them, less what this loop has taken
            # since: they are woken once half of the room is free, not at every task.
            assert ahead // 2 < produced - consumed <= ahead
        # Taken and not yet handed to this loop: at most `ahead`.
        assert produced <= consumed + ahead
    assert consumed == produced == 1000
    assert pool.tasks == []


def test_an_endless_generator_stops_at_max_errors_in_run_and_in_iteration() -> None:
    def endless() -> Iterator[Task[int]]:
        for n in itertools.count():
            yield Task(raises(ValueError(n)) if n % 3 == 0 else returns(n))

    pool = Pool(endless(), 4, max_errors=5)
    finish_within(10, pool.run)
    assert pool.stopped is not None and pool.stopped.reason is StopReason.MAX_ERRORS
    assert pool.stopped.message == "5 tasks failed (max_errors=5)"
    failed = [task for task in pool.tasks if task.err is not None]
    # Five failures, plus at most three started by workers already past their last check.
    assert 5 <= len(failed) <= 5 + 3

    streamed = Pool(endless(), 4, max_errors=5)
    seen = finish_within(10, lambda: list(streamed))
    assert streamed.stopped is not None and streamed.stopped.reason is StopReason.MAX_ERRORS
    assert 5 <= sum(task.err is not None for task in seen) <= 8


@pytest.mark.parametrize("how", ["break", "cancel", "timeout", "max_errors"])
def test_a_stopped_pool_does_not_wait_for_a_worker_stuck_in_the_generators_next(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker there runs no task and will start none, and a generator blocked on a queue or a
    # socket may never come back. The caller gives it one check interval, then leaves without it.
    monkeypatch.setattr(beyond.waiting, "SIGNAL_CHECK_SECONDS", 0.01)
    inside, release = threading.Event(), threading.Event()
    late = Task(returns(2))

    def first() -> int:
        if how == "max_errors":
            inside.wait(10)
            raise ValueError("the one failure")
        return 1

    def tasks() -> Iterator[Task[int]]:
        yield Task(first)
        inside.set()
        release.wait(30)
        yield late

    pool = Pool(tasks(), 2, max_errors=1)

    def use() -> None:
        if how == "break":
            for _ in pool:
                inside.wait(10)
                break
        elif how == "timeout":
            pool.run(timeout=0.05)
        else:
            pool.run()

    def cancel_once_inside() -> None:
        inside.wait(10)
        pool.cancel()

    canceller = threading.Thread(target=cancel_once_inside)
    if how == "cancel":
        canceller.start()
    finish_within(10, use)
    # Still inside next() (and maybe the other worker, in line behind it).
    stuck = worker_threads()
    assert stuck
    release.set()
    for thread in [*stuck, *([canceller] if how == "cancel" else [])]:
        thread.join(10)
    assert not late.finished
    reasons = {
        "break": StopReason.CANCELLED,
        "cancel": StopReason.CANCELLED,
        "timeout": StopReason.TIMEOUT,
        "max_errors": StopReason.MAX_ERRORS,
    }
    assert pool.stopped is not None and pool.stopped.reason is reasons[how]


# --- max_errors: the post's "Too many errors." inside the pool. ---


def test_with_one_worker_nothing_starts_after_the_nth_failure() -> None:
    # concurrency 1: the bound is concurrency - 1 = 0, exactly.
    tasks = [Task(raises(ValueError(n)) if n % 2 else returns(n)) for n in range(30)]
    pool = Pool(tasks, 1, max_errors=3)
    pool.run()
    assert [task.finished for task in tasks] == [True] * 6 + [False] * 24
    assert all((task.err, task.result) == (None, None) for task in tasks[6:])
    assert pool.stopped is not None and pool.stopped.reason is StopReason.MAX_ERRORS


def test_a_failure_recorded_while_the_pools_lock_is_busy_still_stops_every_other_worker() -> None:
    # The failing worker records its failure without the lock, then needs the lock to set the
    # stop. Here the test holds that lock, so the stop cannot be set: the other worker must stop
    # on the record alone, at the check it makes after taking each task. A pool that stopped
    # takers only once the stop was set would let it start every remaining task.
    failing_started = threading.Event()
    lock_held = threading.Event()
    source_may_go_on = threading.Event()
    started_after: list[int] = []

    def fail() -> int:
        failing_started.set()
        lock_held.wait(10)
        raise ValueError("the one failure")

    def tasks() -> Iterator[Task[object]]:
        yield Task(fail)
        source_may_go_on.wait(10)
        for n in range(20):
            yield Task(partial(started_after.append, n))

    pool = Pool(tasks(), 2, max_errors=1)
    workers = pool._scheduler
    runner = threading.Thread(target=pool.run)
    runner.start()
    failing_started.wait(10)
    wait_for(lambda: len(worker_threads()) == 2, "both workers are running")
    wait_for(lambda: workers._running == 2, "both workers have begun")
    stop, end = beyond.scheduler.Scheduler.stop, beyond.scheduler.Scheduler.end
    with workers._lock:
        lock_held.set()
        wait_for(
            lambda: any(parked_in(thread, stop) for thread in worker_threads()),
            "the failing worker waits for the lock to set the stop",
        )
        assert len(workers.failures) == 1 and workers.stopped is None
        # The other worker has been waiting in the source all along; let it take the rest.
        source_may_go_on.set()
        wait_for(
            lambda: sum(parked_in(thread, stop, end) for thread in worker_threads()) == 2,
            "both workers wait for the lock, one to stop the pool, one to end",
        )
        assert started_after == []
    runner.join(10)
    assert started_after == []
    assert pool.stopped is not None and pool.stopped.reason is StopReason.MAX_ERRORS


def test_cancelled_does_not_count_toward_max_errors() -> None:
    # A task may raise Cancelled itself (from another pool's token, say). With max_errors=1 a
    # counted Cancelled would stop the pool before the second task.
    pool = Pool([Task(raises(Cancelled("by hand"))), Task(returns(2))], 1, max_errors=1)
    pool.run()
    assert type(pool.tasks[0].err) is Cancelled
    assert (pool.tasks[1].result, pool.stopped) == (2, None)


# --- cancel() and checkpoints. ---


def checking_until_cancelled(started: threading.Barrier) -> Callable[[], int]:
    def run() -> int:
        started.wait()
        while True:
            checkpoint()
            time.sleep(0.001)

    return run


@pytest.mark.parametrize("streaming", [False, True], ids=["run", "iteration"])
def test_cancel_from_another_thread_starts_no_new_task_and_tells_running_ones(
    streaming: bool,
) -> None:
    started = threading.Barrier(3, timeout=10)
    tasks = [Task(checking_until_cancelled(started)) for _ in range(2)]
    later = [Task(returns(n)) for n in range(10)]
    pool = Pool([*tasks, *later], 2)

    def cancel_once_both_run() -> None:
        started.wait()
        pool.cancel()

    threading.Thread(target=cancel_once_both_run).start()

    yielded = finish_within(10, lambda: list(pool) if streaming else pool.run())

    assert [type(task.err) for task in tasks] == [Cancelled, Cancelled]
    assert not any(task.finished for task in later)
    assert pool.stopped is not None and pool.stopped.reason is StopReason.CANCELLED
    if streaming:
        assert yielded is not None and {id(task) for task in yielded} == {id(t) for t in tasks}


def test_cancel_before_the_run_starts_no_task_and_after_it_does_nothing() -> None:
    calls: list[int] = []
    early = Pool([Task(partial(calls.append, 1))], 1)
    early.cancel()
    early.run()
    assert calls == []
    assert early.stopped is not None and early.stopped.reason is StopReason.CANCELLED

    done = Pool([Task(returns(1))], 1)
    done.run()
    done.cancel()
    assert done.stopped is None


def test_a_token_handed_to_another_thread_wakes_its_sleep_on_cancel() -> None:
    in_task = threading.Event()
    outcome: list[BaseException] = []

    def hand_off() -> int:
        token = current_token()

        def elsewhere() -> None:
            try:
                token.sleep(30)
            except Cancelled as cancelled:
                outcome.append(cancelled)

        helper = threading.Thread(target=elsewhere)
        helper.start()
        in_task.set()
        helper.join(10)
        token.check()
        return 0

    pool = Pool([Task(hand_off)], 1)
    runner = threading.Thread(target=pool.run)
    runner.start()
    in_task.wait(10)
    pool.cancel()
    runner.join(10)
    assert [type(error) for error in outcome] == [Cancelled]
    assert type(pool.tasks[0].err) is Cancelled


def test_outside_a_pool_checkpoint_does_nothing_and_the_token_never_stops() -> None:
    checkpoint()
    token = current_token()
    assert (token.cancelled, token.deadline) == (False, None)
    token.check()
    token.sleep(0)


# --- Deadlines. ---


def test_a_task_past_its_timeout_gets_timeout_error_at_its_next_checkpoint() -> None:
    def checks() -> int:
        while True:
            checkpoint()
            time.sleep(0.001)

    pool = Pool([Task(checks, timeout=0.05), Task(returns(7), timeout=5)], 2)
    finish_within(10, pool.run)
    assert type(pool.tasks[0].err) is TimeoutError
    assert str(pool.tasks[0].err) == "the task's timeout of 0.05 s passed"
    assert (pool.tasks[1].err, pool.tasks[1].result) == (None, 7)
    # A task's timeout is its own failure, not the pool's stop.
    assert (pool.stopped, pool.overdue) == (None, [])


@pytest.mark.parametrize("streaming", [False, True], ids=["run", "iteration"])
def test_a_task_that_never_checks_is_reported_overdue_once_and_still_waited_for(
    streaming: bool,
) -> None:
    release = threading.Event()

    def never_checks() -> int:
        release.wait(30)
        return 1

    def finishes_once_the_other_is_overdue() -> int:
        # Its end wakes the waiting thread while the deaf task still runs: no second report.
        wait_for(lambda: pool.overdue == [task], "the task is reported overdue")
        return 2

    task = Task(never_checks, timeout=0.01)
    other = Task(finishes_once_the_other_is_overdue)
    pool = Pool([task, other], 2, overdue_grace=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = threading.Thread(target=lambda: list(pool) if streaming else pool.run())
        runner.start()
        wait_for(lambda: other.finished, "the other task has finished")
        release.set()
        runner.join(10)
    # Waited for: it finished, with its own result, and it was reported exactly once.
    assert (task.err, task.result) == (None, 1)
    assert pool.overdue == [task]
    overdue = [warning for warning in caught if warning.category is OverdueWarning]
    assert len(overdue) == 1
    assert "is still running" in str(overdue[0].message)


@pytest.mark.parametrize("streaming", [False, True], ids=["run", "iteration"])
def test_a_run_timeout_stops_new_tasks_and_tells_running_ones(streaming: bool) -> None:
    started = threading.Barrier(2, timeout=10)

    def sleeps() -> int:
        started.wait()
        current_token().sleep(30)
        return 0

    tasks = [Task(sleeps) for _ in range(2)]
    later = [Task(returns(n)) for n in range(5)]
    pool = Pool([*tasks, *later], 2)

    finish_within(10, lambda: list(pool.stream(0.05)) if streaming else pool.run(0.05))

    assert [type(task.err) for task in tasks] == [TimeoutError, TimeoutError]
    assert not any(task.finished for task in later)
    assert pool.stopped is not None and pool.stopped.reason is StopReason.TIMEOUT


def test_no_task_starts_after_the_runs_deadline_before_anyone_has_stopped_the_pool() -> None:
    # While the loop's body runs, no thread of the pool watches the run's deadline: the worker's own
    # check as it takes a task is all that keeps a task from starting after it. Here the worker
    # gets its second task from the generator only once the deadline has passed.
    started_late = threading.Event()
    timeout = 0.1

    def late() -> int:
        started_late.set()
        return 1

    def source() -> Iterator[Task[int]]:
        yield Task(returns(0))
        while time.monotonic() < start + timeout + 0.05:
            time.sleep(0.001)
        yield Task(late)

    pool = Pool(source(), 1)
    start = time.monotonic()
    stream = pool.stream(timeout)
    first = next(stream)
    wait_for(
        lambda: started_late.is_set() or not worker_threads(),
        "the worker has started the late task or ended",
    )
    rest = list(stream)

    assert not started_late.is_set()
    assert (first.result, rest) == (0, [])


# --- A bad tasks iterable is the caller's bug. ---


def test_a_raising_generator_stops_the_pool_and_run_raises_its_error_keeping_what_finished() -> (
    None
):
    broken = RuntimeError("no more tasks for you")

    def tasks() -> Iterator[Task[int]]:
        yield Task(returns(1))
        yield Task(returns(2))
        raise broken

    pool = Pool(tasks(), 2)
    with pytest.raises(RuntimeError) as raised:
        pool.run()
    assert raised.value is broken
    assert [(task.finished, task.result) for task in pool.tasks] == [(True, 1), (True, 2)]
    assert pool.stopped is not None and pool.stopped.reason is StopReason.BAD_SOURCE


def test_iteration_yields_every_finished_task_before_raising_the_generators_error() -> None:
    def tasks() -> Iterator[Task[int]]:
        yield from (Task(returns(n)) for n in range(5))
        raise KeyError("broken source")

    yielded: list[int | None] = []
    with pytest.raises(KeyError, match="broken source"):
        for task in Pool(tasks(), 3):
            yielded.append(task.result)
    assert sorted(n for n in yielded if n is not None) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("streaming", [False, True], ids=["run", "iteration"])
def test_a_generator_yielding_a_non_task_stops_the_pool_with_a_type_error(
    streaming: bool,
) -> None:
    def tasks() -> Iterator[object]:
        yield Task(returns(1))
        yield "not a task"
        yield Task(returns(3))

    pool: Pool[int] = Pool(tasks(), 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="gave a str, not a Task"):
        finish_within(10, lambda: list(pool) if streaming else pool.run())
    assert pool.stopped is not None and pool.stopped.reason is StopReason.BAD_SOURCE


def test_a_generator_giving_a_task_twice_stops_the_pool_and_says_which_item_it_was() -> None:
    twice = Task(returns(1))
    pool = Pool(generated([Task(returns(0)), twice, twice, Task(returns(3))]), 1)
    with pytest.raises(ValueError, match=r"^task 2 \(.*\) was given twice in this Pool"):
        pool.run()
    assert [task.finished for task in pool.tasks] == [True, True]


def test_a_generator_yielding_a_non_task_is_named_by_its_place() -> None:
    pool: Pool[int] = Pool(generated([Task(returns(1)), 2]), 1)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="gave a int, not a Task, as item 1"):
        pool.run()


@pytest.mark.parametrize("concurrency", [2**62, 2**70])
def test_absurd_concurrency_runs_a_list_and_refuses_a_generator_in_one_line(
    concurrency: int,
) -> None:
    # A list never has more workers than tasks, so it needs no more room than it has tasks.
    listed = Task(returns(1))
    pool = Pool([listed], concurrency)
    pool.run()
    assert (listed.err, listed.result) == (None, 1)
    # A generator would need a slot per worker: refused at once, and its task is left free.
    given = Task(returns(2))
    with pytest.raises(ValueError, match="more workers than this process can keep track of"):
        Pool(generated([given]), concurrency)
    rescued = Pool([given], 1)
    rescued.run()
    assert given.result == 2


@pytest.mark.parametrize(
    "how", ["list, run()", "generator, run()", "generator, iteration", "deadlines", "asyncio"]
)
def test_a_finished_pools_tasks_are_freed_without_the_cyclic_garbage_collector(how: str) -> None:
    # A task that referred to its pool, or Workers to its Pool, would make a cycle: a finished
    # run's tasks would stay in memory until the cyclic collector ran, and pay for it then. (A
    # failed task makes one all the same: its error's traceback holds the worker's frame, and
    # that the pool. Only successes are freed at once.)
    def job() -> int:
        return 1

    async def job_async() -> int:
        return 1

    gc.disable()
    try:
        if how == "asyncio":
            pool = Pool([Task(job_async) for _ in range(100)], 4, backend="asyncio")
        elif how == "deadlines":
            pool = Pool([Task(job, timeout=60) for _ in range(100)], 4)
        else:
            tasks = [Task(job) for _ in range(100)]
            pool = Pool(iter(tasks) if how.startswith("generator") else tasks, 4)
            del tasks
        if how == "generator, iteration":
            assert sum(task.result == 1 for task in pool) == 100
        else:
            pool.run(timeout=60 if how == "deadlines" else None)
        del pool
        left = [o for o in gc.get_objects() if isinstance(o, Task) and o.fn in (job, job_async)]
    finally:
        gc.enable()
    assert left == []


def test_the_first_stop_reason_wins() -> None:
    # A run stopped at max_errors, then cancelled from another thread while its last task runs.
    last_running = threading.Event()
    cancelled = threading.Event()

    def succeed_after_the_cancel() -> int:
        last_running.set()
        cancelled.wait(10)
        return 2

    def fail_once_the_other_runs() -> int:
        last_running.wait(10)
        raise ValueError("first failure")

    limited = Pool(
        [Task(fail_once_the_other_runs), Task(succeed_after_the_cancel)], 2, max_errors=1
    )
    runner = threading.Thread(target=limited.run)
    runner.start()
    wait_for(lambda: limited.stopped is not None, "the first failure stops the pool")
    limited.cancel()
    cancelled.set()
    runner.join(10)
    assert [(type(task.err), task.result) for task in limited.tasks] == [
        (ValueError, None),
        (type(None), 2),
    ]
    assert limited.stopped is not None and limited.stopped.reason is StopReason.MAX_ERRORS


# --- Leaving the loop, and a panic. ---


def test_breaking_out_of_the_iteration_cancels_the_running_tasks_and_waits_for_them() -> None:
    other_started = threading.Event()

    def slow() -> int:
        other_started.set()
        current_token().sleep(30)
        return 0

    slow_task = Task(slow)
    pool = Pool(generated([Task(returns(1)), slow_task, *(Task(returns(n)) for n in range(9))]), 2)
    for task in pool:
        if task.result == 1:
            other_started.wait(10)
            break
    # The loop is left; the slow task was told, and its worker has ended (the autouse fixture
    # checks that no thread is left).
    assert type(slow_task.err) is Cancelled
    assert pool.stopped is not None and pool.stopped.reason is StopReason.CANCELLED
    assert pool.stopped.message == "the loop over the pool ended early"


def test_a_panic_in_iteration_is_raised_after_the_panicking_task_is_yielded() -> None:
    panic = SystemExit("stop everything")
    pool = Pool([Task(raises(panic)), *(Task(returns(n)) for n in range(5))], 1)
    yielded: list[Task[int]] = []
    with pytest.raises(SystemExit) as raised:
        for task in pool:
            yielded.append(task)
    assert raised.value is panic
    assert [task.err for task in yielded] == [panic]
    assert pool.stopped is not None and pool.stopped.reason is StopReason.PANIC


def test_a_ctrl_c_that_a_worker_thread_takes_reaches_main_though_nothing_wakes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kernel may hand the process's SIGINT to any thread; CPython's C handler then only notes
    # it, and the Python handler (KeyboardInterrupt) runs in main when main next runs bytecode.
    # Here no task ends until the pool is cancelled, so no worker wakes main: it must look on its
    # own, every SIGNAL_CHECK_SECONDS (restored from the minute the fixture above sets). Sent to
    # one worker with pthread_kill, so it cannot go to main.
    monkeypatch.setattr(beyond.waiting, "SIGNAL_CHECK_SECONDS", 0.05)
    running: list[threading.Thread] = []
    both_running = threading.Barrier(3, timeout=10)

    def until_cancelled() -> int:
        running.append(threading.current_thread())
        both_running.wait()
        current_token().sleep(60)
        return 0

    pool = Pool([Task(until_cancelled) for _ in range(2)], 2)

    def interrupt_a_worker() -> None:
        both_running.wait()
        signal.pthread_kill(running[0].ident or 0, signal.SIGINT)

    sender = threading.Thread(target=interrupt_a_worker)
    sender.start()
    # Backstop for a main that never looks: cancel() wakes it, and run() then returns, unraised.
    backstop = threading.Timer(10, pool.cancel)
    backstop.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.run()
    finally:
        backstop.cancel()
        backstop.join()
        sender.join()

    assert pool.stopped is not None and pool.stopped.reason is StopReason.INTERRUPTED
    assert [type(task.err) for task in pool.tasks] == [Cancelled, Cancelled]


def test_a_ctrl_c_inside_thread_start_is_a_ctrl_c_not_a_refused_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interrupt_thread_start(monkeypatch, "worker-2")
    pool = Pool([Task(returns(n)) for n in range(10)], 3)
    with pytest.raises(KeyboardInterrupt):
        pool.run()
    assert pool.stopped is not None and pool.stopped.reason is StopReason.INTERRUPTED


# --- Reused objects and bad input. ---


def test_a_task_from_a_finished_pool_is_refused_by_another_pool() -> None:
    ran = Task(returns(1))
    Pool([ran], 1).run()
    with pytest.raises(ValueError, match="another Pool"):
        Pool([ran], 1)
    # From a generator, the refusal comes when the task is taken, and stops that run.
    later = Pool(generated([ran]), 1)
    with pytest.raises(ValueError, match="another Pool"):
        later.run()
    assert (ran.err, ran.result) == (None, 1)


@pytest.mark.parametrize(
    "first, second",
    [("iterate", "iterate"), ("iterate", "run"), ("run", "iterate"), ("run", "run")],
)
def test_a_pool_runs_once_whether_run_or_iterated(first: str, second: str) -> None:
    calls: list[int] = []
    pool = Pool([Task(partial(calls.append, 1))], 1)

    def use(how: str) -> None:
        if how == "run":
            pool.run()
        else:
            list(pool)

    use(first)
    with pytest.raises(RuntimeError, match="already run"):
        use(second)
    assert calls == [1]


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: Pool([], 0), ValueError),
        (lambda: Pool([], True), TypeError),
        (lambda: Pool(42, 1), TypeError),  # type: ignore[arg-type]
        (lambda: Pool([], 1, max_errors=0), ValueError),
        (lambda: Pool([], 1, max_errors=2.5), TypeError),  # type: ignore[arg-type]
        (lambda: Pool([], 1, overdue_grace=-1), ValueError),
        (lambda: Task(returns(1), timeout=-0.5), ValueError),
        (lambda: Task(returns(1), timeout=float("nan")), ValueError),
        # Any: what a caller without type checks passes (mypy refuses the str).
        (lambda: Task(returns(1), timeout=cast(Any, "1")), TypeError),
        (lambda: Pool([], 1).run(timeout=float("inf")), ValueError),
        (lambda: Pool([], 1).stream(timeout=-1), ValueError),
    ],
    ids=[
        "zero-workers",
        "bool-workers",
        "not-iterable",
        "zero-max-errors",
        "float-max-errors",
        "negative-grace",
        "negative-timeout",
        "nan-timeout",
        "str-timeout",
        "endless-run-timeout",
        "negative-stream-timeout",
    ],
)
def test_bad_input_is_refused_before_any_task_runs(
    make: Callable[[], object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        make()


# --- Which input failed: a task's name, in every message about it. ---


def fetch(url: object, *more: object, retries: int = 3) -> str:
    raise ConnectionError(f"cannot reach {url} ({retries} tries)")


def wait_then_return(release: threading.Event, url: str) -> str:
    release.wait(30)
    return url


class ReprRaises:
    """An argument whose own repr fails, as careless (or hostile) code's may."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        raise self.error


class HugeRepr:
    def __repr__(self) -> str:
        return "x" * 1_000_000


class QualnameRaises:
    """A callable whose __qualname__ raises something that is not an AttributeError."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"no {name}")

    def __call__(self) -> int:
        return 1


def test_a_partials_task_is_named_by_its_function_and_its_arguments() -> None:
    # The README's pattern: before, every one of these was 'partial'.
    assert Task(partial(fetch, "https://example.com/a")).name == "fetch('https://example.com/a')"
    assert Task(partial(fetch, "u", retries=5)).name == "fetch('u', retries=5)"
    # functools flattens a partial of a partial; past four arguments, the rest is "...".
    assert Task(partial(partial(fetch, 1), 2, 3, 4, 5)).name == "fetch(1, 2, 3, 4, ...)"
    assert Task(time.monotonic).name == "monotonic"
    assert Task(returns(1)).name == "returns.<locals>.<lambda>"
    assert Task(partial(fetch, "u"), name="input 7").name == "input 7"
    # A message quotes it, as one line, and does not escape what its reprs escaped already.
    assert quoted_name(Task(partial(fetch, "a\nb"))) == "\"fetch('a\\nb')\""
    assert quoted_name(Task(returns(1), name="two\nlines")) == "'two\\nlines'"


def test_a_task_given_arguments_calls_fn_with_them_and_is_named_by_them() -> None:
    # Task(fn, *args) is Task(partial(fn, *args)) without the partial: same call, same name.
    given = Task(divmod, 17, 5)
    joined = Task(partial(divmod, 17), 5)
    failing = Task(divmod, 1, 0)
    Pool([given, joined, failing], 2).run()
    assert (given.result, joined.result) == ((3, 2), (3, 2))
    assert type(failing.err) is ZeroDivisionError
    assert Task(fetch, "https://example.com/a").name == "fetch('https://example.com/a')"
    assert Task(partial(fetch, 1), 2, 3, 4, 5).name == "fetch(1, 2, 3, 4, ...)"
    assert Task(fetch, "u", name="input 7").name == "input 7"
    # A task that names no arguments keeps none, and is named as before.
    assert Task(time.monotonic).args == ()
    assert (
        repr(failing)
        == "<Task 'divmod(1, 0)' failed: ZeroDivisionError('integer division or modulo by zero')>"
    )


# Arguments a name must survive. Kept out of the examples themselves, which Hypothesis prints.
HOSTILE: list[object] = [
    ReprRaises(ValueError("no repr")),
    ReprRaises(SystemExit(3)),
    ReprRaises(RecursionError()),
    HugeRepr(),
    "x" * 1_000_000,
    b"x" * 1_000_000,
    list(range(100_000)),
]
PLAIN = st.recursive(
    st.none() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner) | st.tuples(inner),
    max_leaves=20,
)


@settings(max_examples=100)
@given(
    arguments=st.lists(st.tuples(PLAIN, st.none() | st.integers(0, len(HOSTILE) - 1)), max_size=6)
)
def test_a_tasks_name_and_repr_stay_short_and_never_raise_whatever_its_arguments_are(
    arguments: list[tuple[object, int | None]],
) -> None:
    # Each argument is either plain data or one of HOSTILE, nested in a list with plain data.
    made = [plain if hostile is None else [plain, HOSTILE[hostile]] for plain, hostile in arguments]
    task: Task[str] = Task(partial(fetch, *made))

    assert task.name.startswith("fetch(")
    assert task.name.isprintable()
    assert len(task.name) <= beyond.task.NAME_LIMIT
    assert quoted_name(task) in (f"'{task.name}'", f'"{task.name}"', repr(task.name))
    # repr() of a name holding both quotes escapes some: twice the length at most.
    assert len(repr(task)) <= len("<Task '' not run>") + 2 * beyond.task.NAME_LIMIT


@pytest.mark.parametrize("name", [3, b"job 3", None.__class__, type("Text", (str,), {})("job")])
def test_a_tasks_name_must_be_a_str(name: object) -> None:
    # Exactly a str: a subclass's own __str__ or __repr__ would run in every message.
    with pytest.raises(TypeError, match="name must be a str, got "):
        Task(returns(1), name=cast(Any, name))


def test_a_callable_whose_name_cannot_be_read_is_named_by_its_type() -> None:
    task = Task(QualnameRaises())
    assert task.name == "QualnameRaises"
    assert repr(task) == "<Task 'QualnameRaises' not run>"


def test_every_message_about_a_task_says_which_input_it_was() -> None:
    release = threading.Event()
    slow = Task(partial(wait_then_return, release, "https://example.com/slow"), timeout=0.01)
    down = Task(partial(fetch, "https://example.com/down"))
    named: Task[Any] = Task(returns(1), name="the third input")
    pool = Pool([slow, down, named], 3, overdue_grace=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = threading.Thread(target=pool.run)
        runner.start()
        wait_for(lambda: pool.overdue == [slow], "the slow task is reported overdue")
        release.set()
        runner.join(10)

    [overdue] = [warning for warning in caught if warning.category is OverdueWarning]
    message = str(overdue.message)
    assert message.startswith(f"task {quoted_name(slow)} is still running"), message
    assert "'https://example.com/slow')" in str(overdue.message)
    assert repr(down) == (
        "<Task \"fetch('https://example.com/down')\" failed: "
        "ConnectionError('cannot reach https://example.com/down (3 tries)')>"
    )
    assert repr(named) == "<Task 'the third input' ok>"
    # A task given twice is refused by its name too.
    again = Task(partial(fetch, "https://example.com/twice"))
    with pytest.raises(ValueError, match=r"fetch\('https://example.com/twice'\)"):
        Pool([again, again], 1)


def test_a_task_on_another_backend_is_named_the_same_way() -> None:
    # The process backend's own messages (WorkerDied here) take the name from the task.
    from beyond.backends.child_processes import WorkerDied
    from tests import processes_tasks

    dies: Task[None] = Task(partial(processes_tasks.exit_now, 7))
    Pool([dies], 1, backend="processes").run()

    assert isinstance(dies.err, WorkerDied)
    assert str(dies.err).startswith("the worker process running task 'exit_now(7)' died")


# --- A backend made by hand ---------------------------------------------------------------------


class ThreadsByHand(OneThreadPerWorker):
    """The threads backend's runner under another name: a backend as docs/stage4.md says to add."""

    name = "by hand"

    def runner(self, scheduler: SchedulerSeam[Any], number: int) -> Runner:
        return RunInWorkerThread(scheduler, number)


class SaysNotWhichKind:
    name = "unsaid"

    def threads(self, scheduler: SchedulerSeam[Any]) -> list[threading.Thread]:
        return []


def test_a_backend_made_by_hand_runs_the_pool_and_one_that_says_not_its_kind_is_refused() -> None:
    work = [Task(partial(pow, 2, n)) for n in range(5)]
    pool = Pool(work, 2, backend=ThreadsByHand())
    pool.run()
    assert [task.result for task in work] == [1, 2, 4, 8, 16]
    # Its kind is a plain class attribute (runs_on), read without an isinstance() on a Protocol.
    with pytest.raises(ValueError, match=r"^a backend made by hand needs a str `name`"):
        Pool(work, 2, backend=SaysNotWhichKind())
    with pytest.raises(ValueError, match=r"^backend must be one of .* or a backend made by hand"):
        Pool(work, 2, backend=object())


class CallsFnItself(OneThreadPerWorker):
    """A backend made by hand whose runner calls task.fn itself, in the worker thread."""

    name = "calls fn itself"

    def runner(self, scheduler: SchedulerSeam[Any], number: int) -> Runner:
        return CallingRunner()


class CallingRunner:
    def run(self, task: Task[Any]) -> bool:
        return task.run(lambda: task.fn())

    def close(self) -> None:
        pass


def test_a_backend_made_by_hand_gives_its_tasks_checkpoint_cancel_and_deadlines() -> None:
    # Found by an adversarial pass: such a backend, made as docs/stage4.md says, ran its tasks
    # blind to cancel() and deadlines (checkpoint() found no task), and they were reported
    # overdue. Any worker thread now tells checkpoint() which task it runs.
    started = threading.Event()

    def checks_until_cancelled() -> str:
        started.set()
        end = time.monotonic() + 10
        while time.monotonic() < end:
            checkpoint()
            time.sleep(0.001)
        return "never cancelled"

    def cancel_once_started() -> None:
        started.wait()
        pool.cancel()

    cancelled: Task[str] = Task(checks_until_cancelled)
    pool: Pool[str] = Pool([cancelled], 1, backend=CallsFnItself())
    canceller = threading.Thread(target=cancel_once_started, daemon=True)
    canceller.start()
    finish_within(30, pool.run)
    canceller.join()
    assert isinstance(cancelled.err, Cancelled), cancelled.err or cancelled.result

    def sleeps_past_its_timeout() -> None:
        current_token().sleep(10)

    late: Task[None] = Task(sleeps_past_its_timeout, timeout=0.05)
    finish_within(30, Pool([late], 1, backend=CallsFnItself()).run)
    assert isinstance(late.err, TimeoutError), late.err


class ForgetsToReturn(OneThreadPerWorker):
    name = "forgets to return"

    def runner(self, scheduler: SchedulerSeam[Any], number: int) -> Runner:
        return ForgetfulRunner()


class ForgetfulRunner:
    def run(self, task: Task[Any]) -> bool:
        task.run()
        return None  # type: ignore[return-value]

    def close(self) -> None:
        pass


def test_a_runner_that_does_not_return_task_runs_bool_stops_the_run_saying_so() -> None:
    # Its tasks' failures could not count toward max_errors: the run stops at once (an
    # adversarial pass saw max_errors silently ignored).
    work = [Task(partial(pow, 2, n)) for n in range(6)]
    pool = Pool(work, 1, backend=ForgetsToReturn(), max_errors=1)
    with pytest.raises(TypeError, match=r"returned None, not Task.run's bool"):
        finish_within(10, pool.run)
    assert pool.stopped is not None and pool.stopped.reason is StopReason.BACKEND_FAILED
    assert [task.finished for task in work] == [True] + [False] * 5


def test_the_same_task_twice_in_a_list_is_refused_saying_it_was_this_pool() -> None:
    twice = Task(returns(1))
    with pytest.raises(ValueError, match=r"^task 2 \(.*\) was given twice in this Pool"):
        Pool([Task(returns(0)), twice, twice], 1)
    # Refused as a whole: each task is free for another pool.
    Pool([twice], 1).run()
    assert twice.result == 1
