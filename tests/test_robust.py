"""Stage 3: each task keeps its own error or result, the bound holds, nothing hangs or leaks."""

from __future__ import annotations

import gc
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deadlock_watch import current_frames
from robust import Pool, Task
from tests.conftest import REPO_ROOT, finish_within, run_module
from tests.thread_probes import interrupt_thread_start

# Part of the lesson: `pytest -m lesson` runs these with tests/test_the_lesson.py.
pytestmark = pytest.mark.lesson


def returns(value: int) -> Callable[[], int]:
    return lambda: value


def raises(error: BaseException) -> Callable[[], int]:
    def fail() -> int:
        raise error

    return fail


def test_an_empty_pool_runs() -> None:
    pool: Pool[int] = Pool([], concurrency=3)
    pool.run()
    assert pool.tasks == []


def test_three_succeeding_tasks_run_with_no_errors() -> None:
    pool = Pool([Task(returns(n)) for n in (1, 2, 3)], concurrency=2)
    pool.run()
    assert [(task.err, task.result, task.finished) for task in pool.tasks] == [
        (None, 1, True),
        (None, 2, True),
        (None, 3, True),
    ]


def test_one_failing_task_has_its_error_and_the_others_none() -> None:
    failure = ValueError("boom")
    pool = Pool([Task(returns(1)), Task(raises(failure)), Task(returns(3))], concurrency=3)
    pool.run()

    assert pool.tasks[1].err is failure
    # The traceback comes along: it reaches the frame that raised.
    assert failure.__traceback__ is not None
    assert failure.__traceback__.tb_next is not None
    assert [task.err for task in (pool.tasks[0], pool.tasks[2])] == [None, None]
    assert [pool.tasks[0].result, pool.tasks[2].result] == [1, 3]


@given(
    outcomes=st.lists(st.booleans(), max_size=60),
    concurrency=st.integers(1, 10),
)
def test_every_task_keeps_its_own_error_or_result(outcomes: list[bool], concurrency: int) -> None:
    # outcomes[i] says whether task i fails. Each failure is a distinct exception object and each
    # success a distinct value, so a lost, swapped or duplicated outcome would show.
    errors = [RuntimeError(f"task {i} failed") for i in range(len(outcomes))]
    tasks = [
        Task(raises(errors[i]) if fails else returns(1000 + i)) for i, fails in enumerate(outcomes)
    ]
    pool = Pool(tasks, concurrency)

    finish_within(10, pool.run)

    assert pool.tasks == tasks
    for i, (task, fails) in enumerate(zip(pool.tasks, outcomes, strict=True)):
        assert task.finished
        if fails:
            assert task.err is errors[i]
            assert task.result is None
        else:
            assert task.err is None
            assert task.result == 1000 + i


class RunningCounter:
    """Counts tasks running right now, and the most that ever ran at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def enter(self) -> None:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        with self._lock:
            self.running -= 1


@given(concurrency=st.integers(1, 8), rounds=st.integers(1, 4))
def test_concurrency_bound_is_reached_and_never_exceeded(concurrency: int, rounds: int) -> None:
    # Every task waits at a barrier for `concurrency` parties. It can only pass when that many
    # tasks run at once, so the run finishes only if the pool reaches its bound; and a pool that
    # ran more tasks at once would push the counter's peak above it.
    counter = RunningCounter()
    all_running = threading.Barrier(concurrency, timeout=10)

    def meet() -> int:
        counter.enter()
        try:
            return all_running.wait()
        finally:
            counter.leave()

    pool = Pool([Task(meet) for _ in range(concurrency * rounds)], concurrency)
    finish_within(20, pool.run)

    assert [task.err for task in pool.tasks] == [None] * len(pool.tasks)
    assert counter.peak == concurrency


def threads_started_during(call: Callable[[], object]) -> list[str]:
    """The names of the threads that threading started while `call` ran.

    threading.settrace installs a trace function in every thread that threading starts from now
    on (Thread._bootstrap_inner calls sys.settrace with it), so each new thread reports itself on
    its first call, however briefly it lives, and then removes the function from itself.
    """
    started: list[str] = []

    def first_call(frame: FrameType, event: str, arg: object) -> None:
        started.append(threading.current_thread().name)
        sys.settrace(None)

    threading.settrace(first_call)
    try:
        call()
    finally:
        threading.settrace(None)
    return started


@pytest.mark.parametrize(
    "task_count, concurrency, expected", [(2, 50, 2), (0, 4, 0), (7, 3, 3), (1, 1, 1)]
)
def test_the_pool_starts_one_thread_per_task_at_most_and_never_more_than_concurrency(
    task_count: int, concurrency: int, expected: int
) -> None:
    pool = Pool([Task(returns(n)) for n in range(task_count)], concurrency)

    started = threads_started_during(pool.run)

    assert sorted(started) == [f"worker-{n}" for n in range(1, expected + 1)]


@given(outcomes=st.lists(st.booleans(), max_size=20), concurrency=st.integers(1, 6))
def test_no_thread_is_left_behind(outcomes: list[bool], concurrency: int) -> None:
    threads_before = set(threading.enumerate())
    pool = Pool(
        [Task(raises(ValueError()) if fails else returns(0)) for fails in outcomes], concurrency
    )
    pool.run()
    assert set(threading.enumerate()) == threads_before


@pytest.mark.parametrize("panic_type", [KeyboardInterrupt, SystemExit])
def test_a_panicking_task_lets_running_tasks_finish_starts_no_more_and_is_reraised(
    panic_type: type[BaseException],
) -> None:
    # Tasks 0 and 1 run together. Task 0 panics; task 1 finishes only after task 0's worker has
    # ended, i.e. after that worker has reacted to the panic. Tasks 2.. must then never start.
    threads_before = set(threading.enumerate())
    second_started = threading.Event()
    panic_coming = threading.Event()
    panicking_worker: list[threading.Thread] = []
    panic = panic_type("stop everything")

    def panics() -> int:
        second_started.wait(10)
        panicking_worker.append(threading.current_thread())
        panic_coming.set()
        raise panic

    def finishes_after_the_panic() -> int:
        second_started.set()
        panic_coming.wait(10)
        panicking_worker[0].join(10)
        return 1

    later = [Task(returns(n)) for n in range(10)]
    pool = Pool([Task(panics), Task(finishes_after_the_panic), *later], concurrency=2)

    with pytest.raises(panic_type) as raised:
        pool.run()

    assert raised.value is panic
    assert pool.tasks[0].err is panic
    assert (pool.tasks[1].finished, pool.tasks[1].result) == (True, 1)
    assert not any(task.finished for task in later)
    assert set(threading.enumerate()) == threads_before


def test_the_first_panic_is_reraised_not_a_later_one() -> None:
    # Two tasks run together and both panic, in a known order: the second raises only once the
    # first one's worker has ended, i.e. after the pool has recorded the first panic.
    first, second = KeyboardInterrupt("first"), SystemExit("second")
    first_worker: list[threading.Thread] = []
    both_running = threading.Barrier(2, timeout=10)
    first_taken = threading.Event()

    def panic_first() -> int:
        both_running.wait()
        first_worker.append(threading.current_thread())
        first_taken.set()
        raise first

    def panic_second() -> int:
        both_running.wait()
        first_taken.wait(10)
        first_worker[0].join(10)
        raise second

    pool = Pool([Task(panic_first), Task(panic_second)], concurrency=2)
    with pytest.raises(KeyboardInterrupt) as raised:
        pool.run()

    assert raised.value is first
    assert (pool.tasks[0].err, pool.tasks[1].err) == (first, second)


def test_run_returns_only_once_every_worker_thread_has_ended() -> None:
    # A worker thread outlives the pool's own code: CPython clears the thread's local data
    # (PyThreadState_Clear, which runs __del__ methods) before it marks the thread ended, and
    # join() waits for that mark. An object in a thread-local that waits in __del__ holds the
    # worker thread there after it has told the pool it ended; run() must still wait for it.
    in_last_act, release = threading.Event(), threading.Event()
    per_thread = threading.local()

    class HoldsItsThread:
        def __del__(self) -> None:
            in_last_act.set()
            release.wait(10)

    def leave_something_behind() -> int:
        workers.append(threading.current_thread())
        per_thread.held = HoldsItsThread()
        return 1

    workers: list[threading.Thread] = []
    pool = Pool([Task(leave_something_behind)], concurrency=1)
    returned = threading.Event()

    def run() -> None:
        pool.run()
        returned.set()

    runner = threading.Thread(target=run)
    runner.start()
    try:
        assert in_last_act.wait(10)
        # Now run() either returns (wrong) or waits in Thread.join (right); poll for either.
        deadline = time.monotonic() + 10
        while not (returned.is_set() or in_join(runner)):
            assert time.monotonic() < deadline, "run() neither returned nor joined the worker"
            time.sleep(0.001)
        assert not returned.is_set()
    finally:
        release.set()
        runner.join(10)
    assert returned.is_set()
    assert pool.tasks[0].result == 1
    assert not any(worker.is_alive() for worker in workers)


def in_join(thread: threading.Thread) -> bool:
    """Is `thread` inside Thread.join() right now?"""
    frame = current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code is threading.Thread.join.__code__:
            return True
        frame = frame.f_back
    return False


def test_a_ctrl_c_inside_thread_start_is_a_ctrl_c_not_a_refused_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads_before = set(threading.enumerate())
    interrupt_thread_start(monkeypatch, "worker-2")
    pool = Pool([Task(returns(n)) for n in range(10)], concurrency=3)
    with pytest.raises(KeyboardInterrupt):
        pool.run()
    monkeypatch.undo()

    # Not "could start only 1 of 3 worker threads": the third was never refused.
    assert set(threading.enumerate()) == threads_before


@pytest.mark.parametrize(
    "make_pool, error",
    [
        (lambda: Pool([], 0), ValueError),
        (lambda: Pool([], -3), ValueError),
        (lambda: Pool([], "4"), TypeError),  # type: ignore[arg-type]
        (lambda: Pool([], 2.0), TypeError),  # type: ignore[arg-type]
        (lambda: Pool([], True), TypeError),
        (lambda: Pool([print], 1), TypeError),  # type: ignore[arg-type]
        (lambda: Task(42), TypeError),  # type: ignore[arg-type]
    ],
    ids=["zero", "negative", "str", "float", "bool", "not-a-task", "not-callable"],
)
def test_bad_input_is_refused_before_any_task_runs(
    make_pool: Callable[[], object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        make_pool()


def test_a_pool_runs_once() -> None:
    calls: list[int] = []
    pool = Pool([Task(lambda: calls.append(1))], 1)
    pool.run()
    with pytest.raises(RuntimeError, match="already run"):
        pool.run()
    assert calls == [1]


def test_a_task_that_already_ran_is_refused_by_a_second_pool_before_any_task_runs() -> None:
    ran = Task(raises(ValueError("first run")))
    Pool([ran], 1).run()
    calls: list[int] = []

    def count_call() -> int:
        calls.append(1)
        return len(calls)

    fresh = Task(count_call)

    with pytest.raises(ValueError, match="runs at most once"):
        Pool([fresh, ran], 2)

    # Nothing ran, and the first run's outcome is intact: err only, no result beside it.
    assert calls == []
    assert (type(ran.err), ran.result) == (ValueError, None)
    # The refused Pool claimed nothing: the fresh task can still go into a new Pool.
    Pool([fresh], 1).run()
    assert calls == [1]


def test_a_task_listed_twice_is_refused_before_any_task_runs() -> None:
    calls: list[int] = []
    twice = Task(lambda: calls.append(1))

    with pytest.raises(ValueError, match="twice in this Pool"):
        Pool([twice, Task(lambda: calls.append(2)), twice], 3)
    assert calls == []


def test_a_task_held_by_a_pool_that_has_not_run_yet_is_refused_by_another() -> None:
    task = Task(returns(1))
    first = Pool([task], 1)
    with pytest.raises(ValueError, match="another Pool"):
        Pool([task], 1)
    first.run()
    assert (task.err, task.result) == (None, 1)


def test_a_finished_pools_tasks_are_freed_without_the_cyclic_garbage_collector() -> None:
    # A task that referred to its pool, in a pool that holds its tasks, would make a cycle: the
    # tasks would stay in memory until the cyclic collector ran, and it would pay for them then.
    def job() -> int:
        return 1

    gc.disable()
    try:
        pool = Pool([Task(job) for _ in range(100)], 4)
        pool.run()
        assert all(task.result == 1 for task in pool.tasks)
        del pool
        left = [o for o in gc.get_objects() if isinstance(o, Task) and o.fn is job]
    finally:
        gc.enable()
    assert left == []


def test_running_a_task_twice_by_hand_is_refused() -> None:
    task = Task(returns(5))
    task.run()
    with pytest.raises(RuntimeError, match="already run"):
        task.run()
    assert (task.err, task.result) == (None, 5)


class FalsyError(Exception):
    def __bool__(self) -> bool:
        return False


class UnprintableError(Exception):
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class UnnamedCallable:
    def __getattr__(self, name: str) -> object:
        # Any attribute the instance lacks, __qualname__ included: not AttributeError, so a plain
        # getattr(fn, "__qualname__", None) would let it through.
        raise RuntimeError(f"no {name} either")

    def __call__(self) -> int:
        raise UnprintableError()


@pytest.mark.parametrize(
    "fn, expected",
    [
        (raises(FalsyError("quiet")), "failed: FalsyError('quiet')"),
        (raises(UnprintableError()), "failed: UnprintableError"),
        (UnnamedCallable(), "failed: UnprintableError"),
        (returns(0), "ok"),
    ],
    ids=["falsy-exception", "exception-repr-raises", "callable-name-raises", "ok"],
)
def test_repr_says_how_the_task_ended_and_never_raises(
    fn: Callable[[], int], expected: str
) -> None:
    task = Task(fn)
    assert repr(task).endswith(" not run>")
    Pool([task], 1).run()
    assert repr(task).endswith(f" {expected}>")


TRACE_LINE = re.compile(r"worker (\d+) processing job (\d+)")


def test_demo_logs_each_error_and_exits_1_when_a_task_failed() -> None:
    completed = run_module("robust", "--work-seconds", "0.01")

    assert completed.returncode == 1, completed.stderr
    lines = completed.stdout.splitlines()
    trace = sorted(int(m[2]) for line in lines if (m := TRACE_LINE.fullmatch(line)))
    assert trace == list(range(1, 10))
    # The caller's walk, in task order: each error as it is met, then the results.
    walk = lines[9:]
    assert walk == [
        *(f"error: error on job {n}" for n in (1, 3, 5, 7, 9)),
        "results: 4 8 12 16",
        "finished: 4 results, 5 errors",
    ]


def test_demo_with_its_defaults_runs() -> None:
    completed = run_module("robust")
    assert completed.returncode == 1, completed.stderr
    assert completed.stdout.splitlines()[-1] == "finished: 4 results, 5 errors"


def test_demo_gives_up_at_the_tenth_error_after_every_task_ran() -> None:
    completed = run_module("robust", "--jobs", "30", "--work-seconds", "0")

    assert completed.returncode == 1
    lines = completed.stdout.splitlines()
    # Every task ran: the pool does not know the caller's limit (stage 4 moves it into the pool).
    assert sorted(int(m[2]) for line in lines if (m := TRACE_LINE.fullmatch(line))) == list(
        range(1, 31)
    )
    # The walk logs errors 1, 3, ..., 19 as it meets them and stops at the tenth.
    walk = [line for line in lines if not TRACE_LINE.fullmatch(line)]
    assert walk == [*(f"error: error on job {n}" for n in range(1, 20, 2)), "Too many errors."]


def test_demo_exits_0_when_no_task_failed() -> None:
    completed = run_module("robust", "--jobs", "0")
    assert completed.returncode == 0
    assert completed.stdout.splitlines()[-1] == "finished: 0 results, 0 errors"


@pytest.mark.parametrize("bad_args", [["--workers", "0"], ["--max-errors", "x"], ["--jobs", "-2"]])
def test_demo_refuses_bad_input_with_one_line_and_status_2(bad_args: list[str]) -> None:
    completed = run_module("robust", *bad_args)
    assert completed.returncode == 2
    assert len(completed.stderr.splitlines()) == 1
    assert "Traceback" not in completed.stderr


def test_ctrl_c_stops_the_demo_promptly_and_says_how_far_it_got() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robust",
            *("--jobs", "100", "--workers", "2", "--work-seconds", "0.2"),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        # Wait until tasks are running, then press Ctrl-C.
        assert TRACE_LINE.fullmatch(child.stdout.readline().strip())
        child.send_signal(signal.SIGINT)
        # 100 jobs on 2 workers would take 10 s; stopping means waiting only for the 2 running.
        rest, stderr = child.communicate(timeout=5)
    finally:
        child.kill()

    assert child.returncode == 130
    assert "Traceback" not in stderr
    match = re.search(r"^interrupted: (\d+) of 100 tasks finished$", rest, re.MULTILINE)
    assert match is not None, rest
    assert int(match[1]) < 100
