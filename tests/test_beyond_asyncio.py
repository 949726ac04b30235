"""Stage 4 on asyncio: the pool's contract with worker coroutines, on uvloop and on the standard
loop (signals and Ctrl-C, in child processes: test_beyond_asyncio_interrupts.py).

Every test that runs a pool runs it through `drive()`, in each of the four ways a caller can:
run(), `for task in pool`, `await pool.run_async()` and `async for task in pool.stream_async()`,
where it fits. Tasks coordinate through asyncio events and counters, never through how long
something takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import selectors
import signal
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import NEEDS_UVLOOP, finish_within

try:
    import uvloop
except ModuleNotFoundError:
    pytest.skip(NEEDS_UVLOOP, allow_module_level=True)

import beyond.backends.event_loop
from beyond import Cancelled, OverdueWarning, Pool, StopReason, Task
from beyond.backends.event_loop import Asyncio
from beyond.scheduler import ahead_bound
from deadlock_watch import current_frames

LOOPS = ["uvloop", "standard"]
MODES = ["run", "iterate", "run_async", "stream_async"]
STREAMING = {"iterate", "stream_async"}


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Every test here: the threads alive after it are the threads alive before it."""
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) - before == set()


@pytest.fixture(params=LOOPS)
def loop(request: pytest.FixtureRequest) -> str:
    """Both loops, for every test that takes this: uvloop (installed by make) and asyncio's own."""
    name: str = request.param
    return name


def on_a_loop(loop: str, main: Callable[[], Awaitable[Any]]) -> Any:
    """main() on a new loop of the given kind, as the caller's own code would run it; afterwards,
    no task of the pool is left on that loop."""

    async def checked() -> Any:
        outcome = await main()
        assert asyncio.all_tasks() == {asyncio.current_task()}, "a task was left behind"
        return outcome

    with asyncio.Runner(loop_factory=Asyncio(loop).loop_factory) as runner:
        return runner.run(checked())


def drive(
    pool: Pool[Any], mode: str, loop: str, timeout: float | None = None
) -> list[Task[Any]] | None:
    """Run the pool one of the four ways; what a streaming way yielded. A hang fails the test (the
    backstop thread is a daemon)."""

    def go() -> list[Task[Any]] | None:
        if mode == "run":
            pool.run(timeout)
            return None
        if mode == "iterate":
            return list(pool.stream(timeout))

        async def main() -> list[Task[Any]] | None:
            if mode == "run_async":
                await pool.run_async(timeout)
                return None
            async with contextlib.aclosing(pool.stream_async(timeout)) as tasks:
                return [task async for task in tasks]

        result: list[Task[Any]] | None = on_a_loop(loop, main)
        return result

    return finish_within(10, go)


def make_pool(tasks: Iterable[Task[Any]], concurrency: int, loop: str, **options: Any) -> Pool[Any]:
    return Pool(tasks, concurrency, backend=Asyncio(loop), **options)


def returns(value: int) -> Callable[[], Coroutine[Any, Any, int]]:
    async def run() -> int:
        await asyncio.sleep(0)
        return value

    return run


def raises(error: BaseException) -> Callable[[], Coroutine[Any, Any, int]]:
    async def run() -> int:
        await asyncio.sleep(0)
        raise error

    return run


def generated(tasks: Iterable[Task[Any]]) -> Iterator[Task[Any]]:
    """The same tasks, but from a generator: the pool must take them lazily."""
    yield from tasks


# --- The backend itself. ---


def test_backend_asyncio_runs_on_uvloop_when_it_is_installed_and_says_so() -> None:
    seen: list[type[asyncio.AbstractEventLoop]] = []

    async def which_loop() -> int:
        seen.append(type(asyncio.get_running_loop()))
        return 0

    pool = Pool([Task(which_loop)], 1, backend="asyncio")
    assert isinstance(pool.backend, Asyncio)
    assert (pool.backend.name, pool.backend.loop) == ("asyncio", "uvloop")
    assert pool.backend.description.startswith("uvloop 0.")
    pool.run()
    assert seen == [uvloop.Loop]

    standard = Pool([Task(which_loop)], 1, backend=Asyncio("standard"))
    assert isinstance(standard.backend, Asyncio)
    assert standard.backend.description == "asyncio's standard loop"
    standard.run()
    assert seen[1] is type(asyncio.new_event_loop()) and seen[1] is not uvloop.Loop


def test_without_uvloop_the_standard_loop_runs_and_asking_for_uvloop_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(beyond.backends.event_loop, "uvloop", None)
    assert Asyncio().loop == "standard"
    with pytest.raises(ImportError) as refused:
        Asyncio("uvloop")
    message = str(refused.value)
    assert "\n" not in message
    assert "pip install 'go-worker-pool-py[backends]'" in message


def test_a_bad_loop_name_is_refused() -> None:
    with pytest.raises(ValueError, match="loop must be one of 'uvloop', 'standard', got 'tokio'"):
        Asyncio("tokio")


# --- Stage 3's contract: the post's three cases, for a list and a generator. ---


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", [list, generated], ids=["list", "generator"])
def test_the_posts_three_cases_hold_for_a_list_and_a_generator(
    loop: str, mode: str, source: Callable[[list[Task[int]]], Iterable[Task[int]]]
) -> None:
    empty = make_pool(source([]), 3, loop)
    assert drive(empty, mode, loop) in (None, [])
    assert (empty.tasks, empty.stopped) == ([], None)

    ok = [Task(returns(n)) for n in (1, 2, 3)]
    pool = make_pool(source(ok), 2, loop)
    drive(pool, mode, loop)
    assert [(task.err, task.result, task.finished) for task in ok] == [
        (None, 1, True),
        (None, 2, True),
        (None, 3, True),
    ]

    failure = ValueError("boom")
    mixed = [Task(returns(1)), Task(raises(failure)), Task(returns(3))]
    drive(make_pool(source(mixed), 3, loop), mode, loop)
    assert [task.err for task in mixed] == [None, failure, None]


# --- The properties, over many configurations. ---


class Observed:
    """What the tasks of one run saw: calls per task, and which started after the limit."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}
        self.started_after_limit: list[int] = []
        self.pool: Pool[int] | None = None


def observed_task(
    index: int, fails: bool, awaits: int, seen: Observed, limit: int | None
) -> Task[int]:
    error = RuntimeError(f"task {index} failed")

    async def run() -> int:
        # The pool's own record of failures, read as the task starts: with worker coroutines
        # nothing may start once it has reached the limit.
        assert seen.pool is not None
        if limit is not None and len(seen.pool._scheduler.failures) >= limit:
            seen.started_after_limit.append(index)
        seen.calls[index] = seen.calls.get(index, 0) + 1
        for _ in range(awaits):
            await asyncio.sleep(0)
        if fails:
            raise error
        return 1000 + index

    return Task(run)


@pytest.mark.parametrize("loop", LOOPS)
@settings(max_examples=150)
@given(
    outcomes=st.lists(st.tuples(st.booleans(), st.integers(0, 2)), max_size=30),
    concurrency=st.integers(1, 6),
    max_errors=st.none() | st.integers(1, 8),
    from_generator=st.booleans(),
    mode=st.sampled_from(MODES),
)
def test_every_task_runs_at_most_once_keeps_its_own_outcome_and_nothing_starts_past_max_errors(
    loop: str,
    outcomes: list[tuple[bool, int]],
    concurrency: int,
    max_errors: int | None,
    from_generator: bool,
    mode: str,
) -> None:
    seen = Observed()
    tasks = [
        observed_task(i, fails, awaits, seen, max_errors)
        for i, (fails, awaits) in enumerate(outcomes)
    ]
    pool = make_pool(
        generated(tasks) if from_generator else tasks, concurrency, loop, max_errors=max_errors
    )
    seen.pool = pool

    yielded = drive(pool, mode, loop)

    # Every task runs at most once, and a task holds an outcome exactly when it ran: its own.
    assert all(count == 1 for count in seen.calls.values())
    for i, task in enumerate(tasks):
        assert task.finished == (i in seen.calls)
        if not task.finished:
            assert (task.err, task.result) == (None, None)
        elif outcomes[i][0]:
            assert (str(task.err), task.result) == (f"task {i} failed", None)
        else:
            assert (task.err, task.result) == (None, 1000 + i)
    # Streaming yields each finished task exactly once, and nothing else.
    if mode in STREAMING:
        assert yielded is not None
        assert len(yielded) == len({id(task) for task in yielded})
        assert {id(task) for task in yielded} == {id(task) for task in tasks if task.finished}
    # run() keeps the tasks it took from a generator, in order; streaming keeps none.
    if from_generator:
        kept = [] if mode in STREAMING else [task for task in tasks if task.finished]
        assert pool.tasks[: len(kept)] == kept
    failures = sum(task.err is not None for task in tasks)
    if max_errors is not None and failures >= max_errors:
        assert pool.stopped is not None and pool.stopped.reason is StopReason.MAX_ERRORS
        # Exact on a loop: the check before each start sees every failure so far.
        assert seen.started_after_limit == []
    else:
        assert pool.stopped is None
        assert all(task.finished for task in tasks)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("mode", MODES)
@given(concurrency=st.integers(1, 6), rounds=st.integers(1, 3))
@settings(max_examples=10)
def test_concurrency_bound_is_reached_and_never_exceeded(
    loop: str, mode: str, concurrency: int, rounds: int
) -> None:
    # Every task waits at a barrier for `concurrency` parties, so the run finishes only if the
    # pool reaches its bound, and a peak above it would show.
    running = peak = 0
    all_running = asyncio.Barrier(concurrency)

    async def meet() -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            return await all_running.wait()
        finally:
            running -= 1

    pool = make_pool(generated(Task(meet) for _ in range(concurrency * rounds)), concurrency, loop)
    drive(pool, mode, loop)
    assert all(task.err is None for task in pool.tasks)
    assert peak == concurrency


# --- Lazy input and backpressure. ---


def test_run_takes_from_a_generator_only_when_a_worker_is_free(loop: str) -> None:
    concurrency = 3
    produced = 0

    async def main() -> None:
        release = asyncio.Event()
        started = 0
        all_started = asyncio.Event()

        async def held() -> int:
            nonlocal started
            started += 1
            if started == concurrency:
                all_started.set()
            await release.wait()
            return 0

        def tasks() -> Iterator[Task[int]]:
            nonlocal produced
            for _ in range(50):
                produced += 1
                yield Task(held if produced <= concurrency else returns(0))

        pool = make_pool(tasks(), concurrency, loop)
        running = asyncio.create_task(pool.run_async())
        await all_started.wait()
        # Every worker runs a task, so none may have asked the generator for another.
        assert produced == concurrency
        release.set()
        await running
        assert (produced, len(pool.tasks)) == (50, 50)

    finish_within(10, lambda: on_a_loop(loop, main))


def counting_source(total: int) -> tuple[list[int], Iterator[Task[int]]]:
    produced = [0]

    def tasks() -> Iterator[Task[int]]:
        for n in range(total):
            produced[0] += 1
            yield Task(returns(n))

    return produced, tasks()


def test_iteration_from_synchronous_code_takes_at_most_the_stated_bound_of_tasks_ahead(
    loop: str,
) -> None:
    concurrency = 3
    ahead = ahead_bound(concurrency)
    produced, tasks = counting_source(500)
    consumed = 0
    for _task in make_pool(tasks, concurrency, loop):
        consumed += 1
        # Taken and not yet handed to this loop: at most `ahead`, and no task runs while this
        # body does (the loop is driven step by step).
        assert produced[0] <= consumed + ahead
    assert consumed == produced[0] == 500


def test_async_iteration_lets_workers_run_ahead_while_the_body_awaits_but_no_further(
    loop: str,
) -> None:
    concurrency = 3
    ahead = ahead_bound(concurrency)
    produced, tasks = counting_source(300)

    async def main() -> int:
        consumed = 0
        async with contextlib.aclosing(make_pool(tasks, concurrency, loop).stream_async()) as done:
            async for _task in done:
                consumed += 1
                # A slow body that awaits: the workers go as far as backpressure lets them.
                for _ in range(20):
                    await asyncio.sleep(0)
                assert produced[0] == min(consumed + ahead, 300)
        return consumed

    assert finish_within(10, lambda: on_a_loop(loop, main)) == 300


@pytest.mark.parametrize("mode", MODES)
def test_an_endless_generator_stops_at_exactly_max_errors_failures_when_tasks_do_not_overlap(
    loop: str, mode: str
) -> None:
    def endless() -> Iterator[Task[int]]:
        for n in itertools.count():
            yield Task(raises(ValueError(n)) if n % 3 == 0 else returns(n))

    # One worker: no task runs beside the one that fails, so the count is exact.
    pool = make_pool(endless(), 1, loop, max_errors=5)
    yielded = drive(pool, mode, loop)
    assert pool.stopped is not None and pool.stopped.message == "5 tasks failed (max_errors=5)"
    finished = yielded if yielded is not None else pool.tasks
    assert sum(task.err is not None for task in finished) == 5


# --- max_errors, cancel(), the stop reason. ---


def test_cancelled_does_not_count_toward_max_errors(loop: str) -> None:
    pool = make_pool([Task(raises(Cancelled("by hand"))), Task(returns(2))], 1, loop, max_errors=1)
    pool.run()
    assert type(pool.tasks[0].err) is Cancelled
    assert (pool.tasks[1].result, pool.stopped) == (2, None)


def test_a_cancelled_error_the_task_raises_itself_stays_its_own_and_does_not_count(
    loop: str,
) -> None:
    async def awaits_something_cancelled() -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.cancel()
        return await future

    pool = make_pool([Task(awaits_something_cancelled), Task(returns(2))], 1, loop, max_errors=1)
    pool.run()
    assert type(pool.tasks[0].err) is asyncio.CancelledError
    assert (pool.tasks[1].result, pool.stopped) == (2, None)


class Sleepers:
    """Tasks that sleep for a long time, with a thread-safe signal once `count` have started."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.started = 0
        self.all_started = threading.Event()
        self.cancelled: list[asyncio.CancelledError] = []

    def task(self) -> Task[int]:
        async def sleep() -> int:
            self.started += 1
            if self.started == self.count:
                self.all_started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError as cancelled:
                self.cancelled.append(cancelled)
                raise
            return 0

        return Task(sleep)


@pytest.mark.parametrize("mode", MODES)
def test_cancel_from_another_thread_cancels_running_tasks_at_their_await_and_starts_no_more(
    loop: str, mode: str
) -> None:
    sleepers = Sleepers(2)
    tasks = [sleepers.task() for _ in range(2)]
    later = [Task(returns(n)) for n in range(10)]
    pool = make_pool([*tasks, *later], 2, loop)

    def cancel_once_both_run() -> None:
        sleepers.all_started.wait(10)
        pool.cancel()

    canceller = threading.Thread(target=cancel_once_both_run)
    canceller.start()
    yielded = drive(pool, mode, loop)
    canceller.join()

    # Each task saw asyncio's CancelledError at its await, and keeps Cancelled as its error.
    assert len(sleepers.cancelled) == 2
    assert [type(task.err) for task in tasks] == [Cancelled, Cancelled]
    assert [type(task.err.__cause__) for task in tasks if task.err] == [asyncio.CancelledError] * 2
    assert not any(task.finished for task in later)
    assert pool.stopped is not None and pool.stopped.reason is StopReason.CANCELLED
    if mode in STREAMING:
        assert yielded is not None and {id(task) for task in yielded} == {id(t) for t in tasks}


def main_waits_in_the_loop() -> bool:
    """Is the main thread inside the event loop with no Python code of its own running: in the
    standard loop's selector, or in uvloop's C code below asyncio.Runner.run?"""
    frame = current_frames().get(threading.main_thread().ident or -1)
    return frame is not None and (
        (frame.f_code.co_name == "select" and frame.f_code.co_filename == selectors.__file__)
        or (frame.f_code is asyncio.Runner.run.__code__)
    )


def test_a_signal_handler_can_cancel_the_pool_while_the_loop_waits(loop: str) -> None:
    sleepers = Sleepers(2)
    pool = make_pool([sleepers.task(), sleepers.task(), Task(returns(3))], 2, loop)

    def signal_once_the_loop_waits() -> None:
        sleepers.all_started.wait(10)
        deadline = time.monotonic() + 10
        while not main_waits_in_the_loop() and time.monotonic() < deadline:
            time.sleep(0.001)
        # To the process, as `kill` sends it: Linux hands it to the main thread, which does not
        # block it; CPython runs the handler there, between two bytecodes of the loop's code.
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: pool.cancel())
    sender = threading.Thread(target=signal_once_the_loop_waits)
    try:
        sender.start()
        pool.run()
    finally:
        sender.join()
        signal.signal(signal.SIGUSR1, previous)
    assert [type(task.err) for task in pool.tasks] == [Cancelled, Cancelled, type(None)]
    assert pool.tasks[2].finished is False
    assert pool.stopped is not None and pool.stopped.reason is StopReason.CANCELLED


def test_cancel_before_the_run_starts_no_task_and_after_it_does_nothing(loop: str) -> None:
    calls: list[int] = []

    async def call() -> None:
        calls.append(1)

    early = make_pool([Task(call)], 1, loop)
    early.cancel()
    early.run()
    assert calls == []
    assert early.stopped is not None and early.stopped.reason is StopReason.CANCELLED

    done = make_pool([Task(returns(1))], 1, loop)
    done.run()
    done.cancel()
    assert done.stopped is None


def test_the_first_stop_reason_wins_and_a_later_cancel_still_cancels(loop: str) -> None:
    sleepers = Sleepers(1)
    slow = sleepers.task()

    async def fail_once_the_other_runs() -> int:
        while not sleepers.all_started.is_set():
            await asyncio.sleep(0)
        raise ValueError("first failure")

    pool = make_pool([slow, Task(fail_once_the_other_runs)], 2, loop, max_errors=1)
    runner = threading.Thread(target=pool.run)
    runner.start()
    deadline = time.monotonic() + 10
    while pool.stopped is None and time.monotonic() < deadline:
        time.sleep(0.001)
    # max_errors let the running task run on; a cancel now cancels it, and the reason stays.
    pool.cancel()
    runner.join(10)
    assert [type(task.err) for task in pool.tasks] == [Cancelled, ValueError]
    assert pool.stopped is not None and pool.stopped.reason is StopReason.MAX_ERRORS


# --- Deadlines: real, at the next await. ---


@pytest.mark.parametrize("mode", MODES)
def test_a_task_past_its_timeout_gets_timeout_error_at_its_await_without_checking(
    loop: str, mode: str
) -> None:
    async def sleeps() -> int:
        await asyncio.sleep(30)
        return 0

    pool = make_pool([Task(sleeps, timeout=0.05), Task(returns(7), timeout=5)], 2, loop)
    drive(pool, mode, loop)
    timed_out = pool.tasks[0].err
    assert type(timed_out) is TimeoutError
    assert str(timed_out) == "the task's timeout of 0.05 s passed"
    # asyncio.timeout's own TimeoutError, from the CancelledError raised at the await.
    assert type(timed_out.__cause__) is TimeoutError
    assert type(timed_out.__cause__.__cause__) is asyncio.CancelledError
    assert (pool.tasks[1].err, pool.tasks[1].result) == (None, 7)
    assert (pool.stopped, pool.overdue) == (None, [])


@pytest.mark.parametrize("mode", MODES)
def test_a_run_timeout_stops_new_tasks_and_running_ones_get_timeout_error(
    loop: str, mode: str
) -> None:
    sleepers = Sleepers(2)
    tasks = [sleepers.task() for _ in range(2)]
    later = [Task(returns(n)) for n in range(5)]
    pool = make_pool([*tasks, *later], 2, loop)

    drive(pool, mode, loop, timeout=0.05)

    assert [type(task.err) for task in tasks] == [TimeoutError, TimeoutError]
    assert [str(task.err) for task in tasks] == ["the run's timeout of 0.05 s passed"] * 2
    assert not any(task.finished for task in later)
    assert pool.stopped is not None and pool.stopped.reason is StopReason.TIMEOUT


def test_a_task_that_blocks_past_its_deadline_is_stopped_only_once_it_awaits(loop: str) -> None:
    # What the loop cannot do: stop code that does not await. Each task here blocks the loop's
    # thread past its deadline; nothing can interrupt it there.
    awaits_before_the_timeout: list[int] = []

    async def blocks_then_awaits() -> int:
        time.sleep(0.1)  # blocking, on purpose: far past the 0.01 s deadline
        for awaited in range(10):
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                awaits_before_the_timeout.append(awaited)
                raise
        return 1

    async def blocks_and_returns() -> int:
        time.sleep(0.1)
        return 2

    first = Task(blocks_then_awaits, timeout=0.01)
    second = Task(blocks_and_returns, timeout=0.01)
    make_pool([first, second], 1, loop).run()
    assert str(first.err) == "the task's timeout of 0.01 s passed"
    # asyncio.sleep(0) lets the loop run once; the standard loop runs the ready callbacks it
    # already holds (this task's next step among them) before the timers that came due, so the
    # cancel lands one await later there. uvloop runs due timers first.
    assert awaits_before_the_timeout == [0 if loop == "uvloop" else 1]
    # Never awaited after its deadline: it ran to its end, and keeps its result.
    assert (second.err, second.result) == (None, 2)


@pytest.mark.parametrize("mode", MODES)
def test_a_task_that_swallows_its_cancellation_is_reported_overdue_once_and_waited_for(
    loop: str, mode: str
) -> None:
    async def swallows() -> int:
        # Deaf: it goes on after the cancel that its TimeoutError would have come from.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        while not pool.overdue:
            await asyncio.sleep(0.001)
        return 1

    task = Task(swallows, timeout=0.01)
    pool = make_pool([task, Task(returns(2))], 2, loop, overdue_grace=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drive(pool, mode, loop)
    assert (task.err, task.result) == (None, 1)
    assert pool.overdue == [task]
    overdue = [warning for warning in caught if warning.category is OverdueWarning]
    assert len(overdue) == 1
    assert "is still running" in str(overdue[0].message)


# --- A bad tasks iterable is the caller's bug; a task that is not a coroutine fails alone. ---


@pytest.mark.parametrize("mode", MODES)
def test_a_raising_generator_stops_the_pool_and_its_error_is_raised_after_what_finished(
    loop: str, mode: str
) -> None:
    broken = RuntimeError("no more tasks for you")
    finished = [Task(returns(1)), Task(returns(2))]

    def tasks() -> Iterator[Task[int]]:
        yield from finished
        raise broken

    pool = make_pool(tasks(), 2, loop)
    with pytest.raises(RuntimeError) as raised:
        drive(pool, mode, loop)
    assert raised.value is broken
    assert [(task.finished, task.result) for task in finished] == [(True, 1), (True, 2)]
    assert pool.stopped is not None and pool.stopped.reason is StopReason.BAD_SOURCE


@pytest.mark.parametrize("mode", MODES)
def test_a_generator_yielding_a_non_task_stops_the_pool_with_a_type_error(
    loop: str, mode: str
) -> None:
    def tasks() -> Iterator[object]:
        yield Task(returns(1))
        yield "not a task"
        yield Task(returns(3))

    pool = make_pool(tasks(), 1, loop)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="gave a str, not a Task"):
        drive(pool, mode, loop)
    assert pool.stopped is not None and pool.stopped.reason is StopReason.BAD_SOURCE


def test_a_task_that_is_not_a_coroutine_function_fails_alone_with_a_clear_error(
    loop: str,
) -> None:
    def plain() -> int:
        return 1

    async def fine() -> int:
        return 2

    tasks: list[Task[int]] = [Task(plain), Task(fine), Task(lambda: fine())]
    make_pool(tasks, 2, loop).run()
    assert type(tasks[0].err) is TypeError
    assert str(tasks[0].err).startswith("task 'test_a_task_that_is_not_a_coroutine_function")
    assert "returned a value of type int, not an awaitable" in str(tasks[0].err)
    assert [task.result for task in tasks[1:]] == [2, 2]


def test_a_tasks_messages_name_its_input_on_the_loop_too(loop: str) -> None:
    def download(url: str) -> int:
        return len(url)

    forgot_async: Task[int] = Task(partial(download, "https://example.com/a"))
    named: Task[int] = Task(partial(download, "https://example.com/b"), name="page b")
    make_pool([forgot_async, named], 2, loop).run()

    assert str(forgot_async.err).startswith(
        'task "test_a_tasks_messages_name_its_input_on_the_loop_too.<locals>.download('
        "'https://example.com/a')\" returned a value of type int"
    )
    assert str(named.err).startswith("task 'page b' returned a value of type int")


@pytest.mark.parametrize("mode", MODES)
def test_a_coroutine_function_given_arguments_runs_with_them(loop: str, mode: str) -> None:
    # Both ways a worker calls fn: without a deadline (inlined) and under one (timeout_at).
    async def scaled(number: int, factor: int) -> int:
        await asyncio.sleep(0)
        return number * factor

    plain = [Task(scaled, n, 3) for n in range(4)]
    timed = [Task(scaled, n, 5, timeout=30) for n in range(4)]
    pool = make_pool([*plain, *timed], 3, loop)
    drive(pool, mode, loop)
    assert [task.result for task in plain] == [0, 3, 6, 9]
    assert [task.result for task in timed] == [0, 5, 10, 15]
    assert plain[1].name == f"{scaled.__qualname__}(1, 3)"


# --- Leaving the loop, a panic. ---


def test_breaking_out_of_the_iteration_cancels_the_running_tasks_and_waits_for_them(
    loop: str,
) -> None:
    sleepers = Sleepers(1)
    slow = sleepers.task()
    pool = make_pool(
        generated([Task(returns(1)), slow, *(Task(returns(n)) for n in range(9))]), 2, loop
    )
    for task in pool:
        if task.result == 1:
            break
    assert type(slow.err) is Cancelled
    assert pool.stopped is not None and pool.stopped.message == "the loop over the pool ended early"


def test_leaving_an_async_for_under_aclosing_cancels_the_running_tasks_and_waits(
    loop: str,
) -> None:
    sleepers = Sleepers(1)
    slow = sleepers.task()
    pool = make_pool(
        generated([Task(returns(1)), slow, *(Task(returns(n)) for n in range(9))]), 2, loop
    )

    async def main() -> None:
        async with contextlib.aclosing(pool.stream_async()) as tasks:
            async for task in tasks:
                if task.result == 1:
                    break
        # Closed as the block is left: the slow task is cancelled and has unwound already.
        assert type(slow.err) is Cancelled

    on_a_loop(loop, main)
    assert pool.stopped is not None and pool.stopped.message == "the loop over the pool ended early"


def test_cancelling_the_task_awaiting_run_async_cancels_the_running_tasks_and_waits(
    loop: str,
) -> None:
    sleepers = Sleepers(2)
    pool = make_pool([sleepers.task() for _ in range(2)], 2, loop)

    async def main() -> None:
        awaiting = asyncio.create_task(pool.run_async())
        while not sleepers.all_started.is_set():
            await asyncio.sleep(0)
        awaiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await awaiting
        # The running tasks were cancelled and have unwound before the CancelledError came out.
        assert [type(task.err) for task in pool.tasks] == [Cancelled, Cancelled]

    on_a_loop(loop, main)
    assert pool.stopped is not None
    assert pool.stopped.message == "the task awaiting the pool was cancelled"


@pytest.mark.parametrize("mode", ["run_async", "stream_async"])
def test_a_cancel_of_the_awaiting_task_starts_no_task_after_it_when_tasks_never_await(
    loop: str, mode: str
) -> None:
    # Task 5 cancels the task awaiting the pool and computes on: no task awaits, so the loop
    # gives that task no turn to stop the pool before the workers take their next tasks.
    started: list[int] = []
    awaiting: list[asyncio.Task[Any]] = []

    def never_awaits(number: int) -> Callable[[], Coroutine[Any, Any, int]]:
        async def run() -> int:
            started.append(number)
            if number == 5:
                awaiting[0].cancel()
            return number

        return run

    pool = make_pool(generated(Task(never_awaits(n)) for n in range(100)), 4, loop)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        awaiting.append(task)
        if mode == "run_async":
            await pool.run_async()
        else:
            async with contextlib.aclosing(pool.stream_async()) as tasks:
                async for _ in tasks:
                    pass

    async def cancelled() -> bool:
        try:
            await main()
        except asyncio.CancelledError:
            return True
        return False

    assert on_a_loop(loop, cancelled)
    assert started == [0, 1, 2, 3, 4, 5]
    assert pool.stopped is not None
    assert pool.stopped.message == "the task awaiting the pool was cancelled"


class Panic(BaseException):
    """A BaseException of the task's own, neither KeyboardInterrupt nor SystemExit."""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("panic", [SystemExit("stop everything"), Panic("mine")], ids=repr)
def test_a_panic_cancels_the_running_tasks_and_is_raised_once_they_have_unwound(
    loop: str, mode: str, panic: BaseException
) -> None:
    # SystemExit (and KeyboardInterrupt) leave the loop at once, as asyncio makes them, and
    # closing the loop cancels the rest; any other panic stops the pool, which cancels them.
    sleepers = Sleepers(1)
    running = sleepers.task()

    async def panics_once_the_other_runs() -> int:
        while not sleepers.all_started.is_set():
            await asyncio.sleep(0)
        raise panic

    later = Task(returns(3))
    pool = make_pool([running, Task(panics_once_the_other_runs), later], 2, loop)
    with pytest.raises(type(panic)) as raised:
        drive(pool, mode, loop)
    assert raised.value is panic
    assert (type(running.err), pool.tasks[1].err, later.finished) == (Cancelled, panic, False)
    assert len(sleepers.cancelled) == 1
    assert pool.stopped is not None and pool.stopped.reason is StopReason.PANIC


# --- Where each entry point may be used. ---


@pytest.mark.parametrize("how", ["run", "iterate", "stream"])
def test_inside_a_running_loop_run_and_iteration_are_refused_pointing_at_the_async_ones(
    loop: str, how: str
) -> None:
    pool = make_pool([Task(returns(1))], 1, loop)

    async def main() -> None:
        with pytest.raises(RuntimeError) as refused:
            if how == "run":
                pool.run()
            elif how == "iterate":
                for _task in pool:
                    pass
            else:
                next(iter(pool.stream()))
        assert "cannot be used inside a running event loop" in str(refused.value)
        assert ("run_async()" if how == "run" else "stream_async()") in str(refused.value)
        # Refused before it started: the pool can still run, the right way.
        await pool.run_async()

    on_a_loop(loop, main)
    assert pool.tasks[0].result == 1


def test_the_async_entry_points_need_a_backend_that_runs_on_a_loop() -> None:
    threads = Pool([Task(lambda: 1)], 1)

    async def main() -> None:
        with pytest.raises(TypeError, match="needs a backend that runs on an event loop"):
            await threads.run_async()
        with pytest.raises(TypeError, match="this pool's backend is 'threads'"):
            threads.stream_async()

    asyncio.run(main())


@pytest.mark.parametrize(
    "first, second", list(itertools.product(["run", "iterate", "run_async"], repeat=2))
)
def test_a_pool_runs_once_whichever_way_it_is_run(first: str, second: str) -> None:
    calls: list[int] = []

    async def call() -> None:
        calls.append(1)

    pool = make_pool([Task(call)], 1, "uvloop")
    drive(pool, first, "uvloop")
    with pytest.raises(RuntimeError, match="already run"):
        drive(pool, second, "uvloop")
    assert calls == [1]


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: Pool([], 1, backend="asyncio").run(timeout=-1), ValueError),
        (lambda: Pool([], 1, backend="asyncio").stream(timeout=float("nan")), ValueError),
        (lambda: Pool([], 1, backend="asyncio").stream_async(timeout="1"), TypeError),  # type: ignore[arg-type]
        (lambda: Pool([], 0, backend="asyncio"), ValueError),
        (lambda: Pool([], 1, backend="asyncio", max_errors=0), ValueError),
    ],
    ids=[
        "negative-run-timeout",
        "nan-stream-timeout",
        "str-stream-timeout",
        "zero-workers",
        "zero-max-errors",
    ],
)
def test_bad_input_is_refused_before_any_task_runs(
    make: Callable[[], object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        make()
