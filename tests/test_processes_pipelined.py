"""The processes backend's pipelining (beyond/backends/child_process_dispatcher.py): its
contract, kept with tasks sent ahead to each child. Ported from the proto-procs prototype.

Real processes throughout, as in tests/test_beyond_processes.py (whose leftovers check this module
uses too). Each task that matters records that it started by appending its number to an events
file (one O_APPEND write per line), so a test counts how often each task ran, in whichever
process, and waits for an event rather than a guessed time.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beyond import Cancelled, Pool, StopReason, Task
from beyond.backends.child_process_group import ChildGroup
from beyond.backends.child_processes import (
    NotPicklable,
    Processes,
    RemoteError,
    RemoteTraceback,
    WorkerDied,
)
from beyond.scheduler import ahead_bound
from tests import processes_tasks as tasks
from tests.conftest import REPO_ROOT, finish_within
from tests.test_beyond_processes import (  # noqa: F401 (nothing_left_behind: autouse here too)
    RUN_LIMIT,
    ctrl_c_once_two_tasks_run,
    exists,
    nothing_left_behind,
    session_ends,
    wait_for,
)


def run(pool: Pool[Any], timeout: float | None = None) -> None:
    finish_within(RUN_LIMIT, lambda: pool.run(timeout))


def ran(events: Path) -> Counter[int]:
    """How many times each task number started, by the events file."""
    if not events.exists():
        return Counter()
    return Counter(int(line) for line in events.read_text().split())


def tiny(events: Path, number: int) -> Task[int]:
    """A task of a few microseconds: the backend sends many of these ahead."""
    return Task(partial(tasks.recorded, str(events), number, False))


def test_tasks_run_in_child_processes_and_keep_their_results() -> None:
    work: list[Task[int]] = [Task(partial(tasks.double, number)) for number in range(50)]
    work.append(Task(tasks.pid))
    pool = Pool(work, 2, backend=Processes())
    run(pool)
    assert [task.result for task in work[:50]] == [n * 2 for n in range(50)]
    assert work[50].result not in (None, os.getpid())
    assert pool.stopped is None


def test_each_error_comes_back_on_its_task_with_its_remote_traceback() -> None:
    raised: Task[Any] = Task(partial(tasks.raise_value_error, "no such thing"))
    cannot_unpickle: Task[Any] = Task(tasks.raise_unpicklable_error)
    fine: Task[Any] = Task(partial(tasks.double, 21))
    run(Pool([raised, cannot_unpickle, fine], 1, backend=Processes()))
    assert isinstance(raised.err, ValueError) and str(raised.err) == "no such thing"
    assert isinstance(raised.err.__cause__, RemoteTraceback)
    assert "in raise_value_error" in raised.err.__cause__.text
    assert isinstance(cannot_unpickle.err, RemoteError)
    assert str(cannot_unpickle.err).startswith("NeedsTwoArguments: one and two (it could not be")
    assert fine.result == 42


@pytest.mark.parametrize(
    ("dies", "says"),
    [
        (partial(tasks.recorded_exit, status=7), "exited with status 7"),
        (tasks.recorded_kill, "killed by SIGKILL (signal 9)"),
    ],
)
def test_a_crash_costs_only_its_task_and_the_tasks_sent_ahead_run_once_elsewhere(
    tmp_path: Path, dies: Any, says: str
) -> None:
    # One worker and tiny tasks: after the first reply the dispatcher sends the rest ahead, so
    # the tasks after the crash were in the dead child's pipe. They run, once, in a fresh child.
    events = tmp_path / "events"
    work: list[Task[Any]] = [tiny(events, number) for number in range(40)]
    work[20] = Task(partial(dies, str(events), 20))
    backend = Processes()
    pool = Pool(work, 1, backend=backend)
    run(pool)
    assert isinstance(work[20].err, WorkerDied) and says in str(work[20].err)
    assert [task.result for n, task in enumerate(work) if n != 20] == [
        n * 2 for n in range(40) if n != 20
    ]
    assert ran(events) == Counter(range(40))
    assert backend.counts.sent_on > 0, (
        "no task was waiting behind the crash: the test proves nothing"
    )
    assert backend.counts.children_started == 2
    assert pool.stopped is None


def test_a_task_whose_loading_kills_its_child_costs_only_that_task(tmp_path: Path) -> None:
    events = tmp_path / "events"
    work: list[Task[Any]] = [tiny(events, number) for number in range(20)]
    work[10] = Task(tasks.KillsItsLoader())
    pool = Pool(work, 1, backend=Processes())
    run(pool)
    assert isinstance(work[10].err, WorkerDied) and "exited with status 5" in str(work[10].err)
    assert ran(events) == Counter(n for n in range(20) if n != 10)
    assert all(task.err is None for n, task in enumerate(work) if n != 10)


@settings(max_examples=8, deadline=None)
@given(
    outcomes=st.lists(st.sampled_from(["ok", "ok", "ok", "fail", "exit"]), max_size=24),
    concurrency=st.integers(1, 3),
    streaming=st.booleans(),
    from_a_generator=st.booleans(),
    max_ahead=st.sampled_from([0, 1, 64]),
)
def test_every_task_runs_once_and_a_death_costs_only_its_own_task(
    tmp_path_factory: pytest.TempPathFactory,
    outcomes: list[str],
    concurrency: int,
    streaming: bool,
    from_a_generator: bool,
    max_ahead: int,
) -> None:
    events = tmp_path_factory.mktemp("events") / "events"
    work = [
        Task(partial(tasks.recorded_outcome, str(events), number, outcome))
        for number, outcome in enumerate(outcomes)
    ]
    source = iter(work) if from_a_generator else work
    pool = Pool(source, concurrency, backend=Processes(max_ahead=max_ahead))
    if streaming:
        yielded = finish_within(RUN_LIMIT, lambda: list(pool))
        assert sorted(map(id, yielded)) == sorted(map(id, work))
    else:
        run(pool)
    assert ran(events) == Counter(range(len(outcomes)))
    for number, (task, outcome) in enumerate(zip(work, outcomes, strict=True)):
        assert task.finished
        if outcome == "ok":
            assert task.err is None and task.result == number * 2
        elif outcome == "fail":
            assert isinstance(task.err, tasks.Failed) and task.err.number == number
        else:
            assert isinstance(task.err, WorkerDied) and task.err.exitcode == 7
    assert pool.stopped is None


def test_a_child_killed_from_outside_costs_its_running_task_and_its_queue_runs_elsewhere(
    tmp_path: Path,
) -> None:
    # Until a first task has finished, each child is sent two tasks: the one it runs and one
    # waiting behind it. Killing the child loses the first (it was running), not the second.
    events = tmp_path / "events"
    running: Task[int] = Task(partial(tasks.announce_then_sleep, str(tmp_path), "running", 60))
    queued: list[Task[int]] = [tiny(events, number) for number in range(3)]
    backend = Processes()
    pool = Pool([running, *queued], 1, backend=backend)
    runs = finish_within_thread(pool)
    os.kill(wait_for(tmp_path / "running"), signal.SIGKILL)
    runs.join(RUN_LIMIT)
    assert not runs.is_alive()
    assert isinstance(running.err, WorkerDied) and running.err.signal == signal.SIGKILL
    assert [task.result for task in queued] == [0, 2, 4]
    assert ran(events) == Counter(range(3))
    assert backend.counts.sent_on >= 1


def finish_within_thread(pool: Pool[Any], timeout: float | None = None) -> Any:
    import threading

    thread = threading.Thread(target=pool.run, args=(timeout,), name="runs-the-pool", daemon=True)
    thread.start()
    return thread


def test_a_task_past_its_deadline_is_killed_and_the_other_child_runs_on(tmp_path: Path) -> None:
    # Two quick tasks start both children first: a timed task goes only to an idle child, so
    # `slow` is sent to a child that is up (its clock would otherwise include a start, which on
    # a loaded machine can take a second), and `across` to the other one. The slow task's child
    # is killed at its deadline; the other, mid-task across that deadline, is not.
    warm: list[Task[int]] = [Task(tasks.pid) for _ in range(2)]
    slow: Task[int] = Task(
        partial(tasks.announce_then_sleep, str(tmp_path), "slow", 60), timeout=2.0
    )
    across: Task[int] = Task(partial(tasks.announce_then_sleep, str(tmp_path), "across", 5.0))
    after: list[Task[int]] = [Task(tasks.pid) for _ in range(4)]
    pool = Pool([*warm, slow, across, *after], 2, backend=Processes())
    run(pool)
    assert isinstance(slow.err, TimeoutError), slow.err
    assert "the task's timeout of 2.0 s passed" in str(slow.err)
    assert not exists(int((tmp_path / "slow").read_text()))
    assert across.err is None and across.result == int((tmp_path / "across").read_text())
    assert all(task.err is None for task in [*warm, *after])
    assert pool.overdue == []


def test_a_timed_task_waits_for_an_idle_child_and_its_clock_starts_there(tmp_path: Path) -> None:
    # After a quick task has started the child: a 1.2 s task, then a 1.2 s task with a 2 s
    # timeout. Queued behind the first, the timed one would reach 2.4 s on its clock; sent only
    # once the child is idle, it has its full 2 s.
    warm: Task[int] = Task(tasks.pid)
    first: Task[int] = Task(partial(tasks.announce_then_sleep, str(tmp_path), "first", 1.2))
    timed: Task[int] = Task(
        partial(tasks.announce_then_sleep, str(tmp_path), "timed", 1.2), timeout=2.0
    )
    run(Pool([warm, first, timed], 1, backend=Processes()))
    assert [first.err, timed.err] == [None, None]


def test_cancel_kills_the_running_tasks_and_the_queued_ones_never_start(tmp_path: Path) -> None:
    events = tmp_path / "events"
    work: list[Task[int]] = [
        Task(partial(tasks.recorded_sleep, str(events), number, 60)) for number in range(6)
    ]
    pool = Pool(work, 2, backend=Processes())
    runs = finish_within_thread(pool)
    end = time.monotonic() + RUN_LIMIT
    while len(ran(events)) < 2:
        assert time.monotonic() < end
        time.sleep(0.01)
    started = set(ran(events))
    pool.cancel()
    runs.join(RUN_LIMIT)
    assert not runs.is_alive()
    # Two ran (one per child) and were killed; the two sent ahead, and the two never sent, did
    # not start.
    assert set(ran(events)) == started
    for number, task in enumerate(work):
        if number in started:
            assert isinstance(task.err, Cancelled)
        else:
            assert not task.finished
    assert pool.stopped is not None and pool.stopped.reason == StopReason.CANCELLED


def test_a_run_timeout_kills_the_running_tasks_and_starts_no_more(tmp_path: Path) -> None:
    events = tmp_path / "events"
    work: list[Task[int]] = [
        Task(partial(tasks.recorded_sleep, str(events), number, 60)) for number in range(6)
    ]
    pool = Pool(work, 2, backend=Processes())
    run(pool, timeout=1.0)
    assert pool.stopped is not None and pool.stopped.reason == StopReason.TIMEOUT
    for number, task in enumerate(work):
        if number in ran(events):
            assert isinstance(task.err, TimeoutError)
            assert "the run's timeout of 1.0 s passed" in str(task.err)
        else:
            assert not task.finished
    assert len(ran(events)) <= 2


def test_with_one_worker_no_task_sent_ahead_starts_after_the_failure_at_max_errors(
    tmp_path: Path,
) -> None:
    # The child counts its own task's failure before it reads the next: the tasks waiting in its
    # pipe never start, though the parent has not yet read the failure when the child gets to
    # them.
    events = tmp_path / "events"
    work: list[Task[Any]] = [tiny(events, number) for number in range(30)]
    work[5] = Task(partial(tasks.recorded, str(events), 5, True))
    pool = Pool(work, 1, max_errors=1, backend=Processes())
    run(pool)
    assert ran(events) == Counter(range(6))
    assert isinstance(work[5].err, tasks.Failed)
    assert [task.finished for task in work[6:]] == [False] * 24
    assert pool.stopped is not None and pool.stopped.reason == StopReason.MAX_ERRORS


def test_at_max_errors_the_failure_counts_before_its_error_is_described(tmp_path: Path) -> None:
    # The failing task's error is slow to describe: its str() records -1, then waits for 5 more
    # tasks to start (or 3 s: with 1.5 s the old code passed once in a run of every mutant, two at a
    # time, where the other child got too little CPU to start 2 tasks in that window). The child
    # counts the failure the moment it is raised, before that str(), so once -1 is recorded the
    # other child starts at most the one task it had already passed its check for (concurrency - 1),
    # whatever the scheduling. Before, the count came after the description: the other child went on
    # starting what it held and was sent (206 and 490 tasks in two runs, until the str() returned).
    events = tmp_path / "events"
    # In the middle of the list: both children are up by then, with plenty left to start.
    work: list[Task[Any]] = [tiny(events, number) for number in range(2000)]
    fails = work[100] = Task(
        partial(tasks.recorded_fail_slow_to_describe, str(events), 100, 5, 3.0)
    )
    pool = Pool(work, 2, max_errors=1, backend=Processes())
    run(pool)
    order = [int(line) for line in events.read_text().split()]
    assert isinstance(fails.err, tasks.SlowToDescribe)
    assert len(order[order.index(-1) + 1 :]) <= 1, order
    assert pool.stopped is not None and pool.stopped.reason == StopReason.MAX_ERRORS


def test_max_errors_lets_the_running_tasks_finish_and_starts_none_of_the_queued(
    tmp_path: Path,
) -> None:
    # Child 1 runs `long`, child 2 runs `fails`, which fails once `long` has started. `long`
    # finishes with its result; what waits behind either never starts.
    events = tmp_path / "events"
    started = tmp_path / "long"
    long: Task[Any] = Task(partial(tasks.announce_then_sleep, str(tmp_path), "long", 0.5))
    fails: Task[Any] = Task(
        partial(tasks.recorded_fail_after_file, str(events), 100, str(started), RUN_LIMIT)
    )
    queued: list[Task[Any]] = [tiny(events, number) for number in range(6)]
    pool = Pool([long, fails, *queued], 2, max_errors=1, backend=Processes())
    run(pool)
    assert long.err is None and long.result == int(started.read_text())
    assert isinstance(fails.err, tasks.Failed)
    assert ran(events) == Counter([100])
    assert [task.finished for task in queued] == [False] * 6


def test_a_panic_stops_the_pool_and_nothing_behind_it_starts(tmp_path: Path) -> None:
    events = tmp_path / "events"
    work: list[Task[Any]] = [tiny(events, number) for number in range(20)]
    work[3] = Task(partial(tasks.recorded_system_exit, str(events), 3))
    pool = Pool(work, 1, backend=Processes())
    with pytest.raises(SystemExit) as raised:
        run(pool)
    assert raised.value.code == 3 and work[3].err is raised.value
    assert ran(events) == Counter(range(4))
    assert pool.stopped is not None and pool.stopped.reason == StopReason.PANIC


def test_a_forked_copy_of_a_child_never_answers_for_a_task() -> None:
    work: list[Task[int]] = [Task(partial(tasks.forks_and_returns, n)) for n in range(12)]
    pool = Pool(work, 2, backend=Processes())
    run(pool)
    assert [task.result for task in work] == [n * 2 for n in range(12)]
    assert all(task.err is None for task in work)


def test_an_outcome_whose_loading_raises_a_base_exception_fails_its_task_alone() -> None:
    # Loaded by the dispatcher thread, which no Ctrl-C reaches: what the loading raises is the
    # outcome's, and the tasks queued behind it run on.
    interrupt: Task[Any] = Task(tasks.returns_a_result_that_interrupts_when_loaded)
    exits: Task[Any] = Task(tasks.raises_an_error_that_exits_when_loaded)
    fine: list[Task[int]] = [Task(partial(tasks.double, n)) for n in range(5)]
    pool = Pool([interrupt, exits, *fine], 1, backend=Processes())
    run(pool)
    assert isinstance(interrupt.err, NotPicklable)
    assert "cannot be loaded here: KeyboardInterrupt()" in str(interrupt.err)
    assert isinstance(exits.err, RemoteError) and "loading it raised SystemExit(9)" in str(
        exits.err
    )
    assert [task.result for task in fine] == [0, 2, 4, 6, 8]
    assert pool.stopped is None


def test_a_generator_of_two_tasks_starts_at_most_two_children_at_concurrency_16() -> None:
    # A generator is read only for an idle child: one child, if the first task had finished by
    # the time the second was read.
    backend = Processes()
    pool = Pool((Task(tasks.pid) for _ in range(2)), 16, backend=backend)
    run(pool)
    assert 1 <= backend.counts.children_started <= 2
    assert all(task.err is None for task in pool.tasks)


def test_a_task_or_result_that_cannot_be_pickled_fails_alone_with_a_clear_error() -> None:
    lam: Task[Any] = Task(lambda: 1)
    lock_back: Task[Any] = Task(tasks.returns_a_lock)
    fine: list[Task[Any]] = [Task(partial(tasks.double, number)) for number in range(3)]
    pool = Pool([lam, lock_back, *fine], 1, backend=Processes())
    run(pool)
    assert isinstance(lam.err, NotPicklable) and "cannot be sent" in str(lam.err)
    assert isinstance(lock_back.err, NotPicklable) and "cannot be sent back" in str(lock_back.err)
    assert [task.result for task in fine] == [0, 2, 4]


def test_iteration_takes_a_bounded_number_of_tasks_ahead_of_a_slow_consumer() -> None:
    # The scheduler's bound holds with this backend: at most ahead_bound(concurrency) taken and
    # not yet yielded (a generator is read only for an idle child, a list's tasks are sent
    # ahead within the same room).
    taken = 0

    def made() -> Iterator[Task[int]]:
        nonlocal taken
        for number in range(300):
            taken += 1
            yield Task(partial(tasks.double, number))

    pool = Pool(made(), 2, backend=Processes())
    yielded = 0
    most_ahead = 0
    for _ in pool:
        yielded += 1
        most_ahead = max(most_ahead, taken - yielded)
        time.sleep(0.001)
    assert yielded == 300
    assert most_ahead <= ahead_bound(2)


@pytest.mark.parametrize("mode", ["run", "iteration"])
def test_ctrl_c_kills_the_running_tasks_starts_none_of_the_queued_and_leaves_no_process(
    tmp_path: Path, mode: str
) -> None:
    # The same child as test_beyond_processes's Ctrl-C test, with 6 tasks: 2 of them queued.
    child, out, err, pids = ctrl_c_once_two_tasks_run(tmp_path, mode, 6)
    assert child.returncode == 130, err
    report = json.loads(out)
    # Tasks 2 and 3 were waiting in the children's pipes: they never started.
    assert report["outcomes"] == ["Cancelled", "Cancelled"] + ["not run"] * 4
    assert report["stopped"] == "interrupted"
    assert report["children"] == []
    assert sorted(path.name for path in tmp_path.glob("task?")) == ["task0", "task1"]
    assert not any(exists(pid) for pid in pids)
    session_ends(child.pid)


def test_a_timeout_shorter_than_a_childs_start_fails_its_task_instead_of_looping() -> None:
    # Killed at its deadline before its child was ready: it fails (the start may take up to its
    # timeout), rather than going to a fresh child that is killed in turn, for ever.
    quick: Task[int] = Task(tasks.pid, timeout=0.001)
    pool = Pool([quick], 1, backend=Processes())
    run(pool)
    assert isinstance(quick.err, TimeoutError)
    assert quick.err.__notes__ == ["its worker process was still starting (it was killed)"]


CANNOT_START = """
import json, sys
from functools import partial
from beyond import Pool, Task
from beyond.backends.child_processes import Processes, WorkerStartFailed
from tests.processes_tasks import double

if __name__ == "__mp_main__":
    # A child imports the main module again: this stands for any main module a child cannot
    # import (an error, a missing file, a pool started without the __main__ guard).
    raise SystemExit(1)

if __name__ == "__main__":
    work = [Task(partial(double, n)) for n in range(30)]
    pool = Pool(work, 2, backend=Processes())
    try:
        pool.run()
    except WorkerStartFailed as failed:
        print(json.dumps([str(failed), pool.stopped.reason.value, [t.finished for t in work]]))
"""


def test_children_that_die_while_starting_stop_the_run_with_every_task_not_run(
    tmp_path: Path,
) -> None:
    # Tasks were sent ahead to children that never got as far as serving: none started, and
    # none is sent on (every start would fail the same way): the run stops, saying why.
    script = tmp_path / "cannot_start.py"
    script.write_text(CANNOT_START)
    finished = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    message, reason, finished_tasks = json.loads(finished.stdout)
    assert "a worker process exited with status 1 while starting" in message
    assert reason == "backend failed"
    assert finished_tasks == [False] * 30


KILLED_WHILE_STARTING = """
import json, os, signal, sys, threading, time
from functools import partial
from pathlib import Path
from beyond import Pool, Task
from beyond.backends.child_processes import Processes
from tests.processes_tasks import double, exit_now

starts = Path(os.environ["STARTS"])
if __name__ == "__mp_main__":
    # Each child, importing the main module, appends its pid. With KILL, the second one (the
    # crash's replacement) then stays in its import, where this script's main thread kills it;
    # without, every child after the first fails to import.
    descriptor = os.open(starts, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(descriptor, f"{os.getpid()}\\n".encode())
    os.close(descriptor)
    if len(starts.read_text().split()) >= 2:
        if "KILL" not in os.environ:
            raise SystemExit(1)
        if len(starts.read_text().split()) == 2:
            time.sleep(60)

if __name__ == "__main__":
    def kill_the_second_while_it_starts():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pids = starts.read_text().split() if starts.exists() else []
            if len(pids) >= 2:
                os.kill(int(pids[1]), signal.SIGKILL)  # as the out-of-memory killer would
                return
            time.sleep(0.01)

    if "KILL" in os.environ:
        threading.Thread(target=kill_the_second_while_it_starts, daemon=True).start()
    work = [Task(partial(double, n)) for n in range(20)]
    work[5] = Task(partial(exit_now, 3))
    backend = Processes()
    pool = Pool(work, 1, backend=backend)
    try:
        pool.run()
        raised = None
    except Exception as error:
        raised = repr(error)
    print(json.dumps([raised, repr(work[5].err), [t.result for t in work],
                      len(starts.read_text().split()), backend.counts.children_started]))
"""


def run_killed_while_starting(tmp_path: Path, *, kill: bool) -> list[Any]:
    script = tmp_path / "killed_while_starting.py"
    script.write_text(KILLED_WHILE_STARTING)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "STARTS": str(tmp_path / "starts")}
    if kill:
        env["KILL"] = "1"
    finished = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    outcome: list[Any] = json.loads(finished.stdout)
    return outcome


def test_a_child_killed_while_starting_after_another_came_up_costs_no_task(
    tmp_path: Path,
) -> None:
    # A child came up, so the main module imports: a later child killed in its start (SIGKILL
    # from the out-of-memory killer, or from a user) is the system's doing, not the program's,
    # and none of its tasks had started: a fresh child takes them. Before, the run stopped with
    # WorkerStartFailed and the 14 tasks left were never run.
    raised, crash, results, starts, started = run_killed_while_starting(tmp_path, kill=True)
    assert raised is None
    assert crash.startswith("WorkerDied(") and "exited with status 3" in crash
    assert results == [None if n == 5 else n * 2 for n in range(20)]
    assert starts == started == 3


def test_children_that_keep_dying_while_starting_stop_the_run_after_one_try_per_worker(
    tmp_path: Path,
) -> None:
    # The main module stops importing mid-run: the fresh child takes the tasks once per worker
    # (here 1), then the run stops as when no child ever came up, rather than start children
    # for ever.
    raised, crash, results, starts, started = run_killed_while_starting(tmp_path, kill=False)
    assert raised.startswith("WorkerStartFailed(") and "exited with status 1" in raised
    assert crash.startswith("WorkerDied(")
    assert results == [n * 2 for n in range(5)] + [None] * 15
    assert starts == started == 3


def test_a_partial_of_a_function_or_class_sent_once_per_child_runs_as_the_partial_would() -> None:
    # partial(function, ...) goes as the function's number and the arguments; the result is the
    # partial's own, keywords included, and a class works as a function does.
    # Task(fn, *args) goes the same way, joined to a partial's own arguments.
    keywords: list[Task[Any]] = [Task(partial(tasks.scaled, n, factor=5)) for n in range(20)]
    given: list[Task[Any]] = [Task(tasks.scaled, n) for n in range(20)]
    joined: list[Task[Any]] = [Task(partial(tasks.scaled, factor=2), n) for n in range(20)]
    made: Task[Any] = Task(partial(tasks.Failed, 4))
    made_from_arguments: Task[Any] = Task(tasks.Failed, 6)
    run(Pool([*keywords, *given, *joined, made, made_from_arguments], 2, backend=Processes()))
    assert [task.result for task in keywords] == [n * 5 for n in range(20)]
    assert [task.result for task in given] == list(range(20))
    assert [task.result for task in joined] == [n * 2 for n in range(20)]
    assert isinstance(made.result, tasks.Failed) and made.result.number == 4
    assert isinstance(made_from_arguments.result, tasks.Failed)
    assert made_from_arguments.result.number == 6


def test_a_partial_of_a_bound_method_still_gets_its_own_copy_of_the_object() -> None:
    # A bound method pickles its object by value: each task starts from the state it was given,
    # as when every task is pickled whole (nothing is shared between the tasks of a child).
    tally = tasks.Tally()
    work: list[Task[int]] = [Task(partial(tally.bump, 2)) for _ in range(10)]
    run(Pool(work, 1, backend=Processes()))
    assert [task.result for task in work] == [2] * 10


def runs_alive() -> int:
    """How many runs' ChildGroups (each with its shared memory) are still reachable."""
    gc.collect()
    return sum(isinstance(thing, ChildGroup) for thing in gc.get_objects())


def test_a_failed_task_kept_after_its_run_does_not_keep_the_run_alive() -> None:
    # Every error a task keeps is raised in the dispatcher thread (rebuilt, or made there): its
    # traceback's frames held their callers, up to the dispatcher with the run's shared memory
    # (and a descriptor for it), as long as the program kept the task: 20 runs whose failed
    # tasks a program kept held 20 runs' shared memory. The child's traceback stays, as text.
    def nested() -> None:
        pass

    before = runs_alive()
    raised: Task[Any] = Task(partial(tasks.raise_value_error, "kept"))
    died: Task[Any] = Task(partial(tasks.exit_now, 3))
    not_sent: Task[Any] = Task(nested)
    not_returned: Task[Any] = Task(tasks.returns_a_lock)
    late: Task[Any] = Task(partial(tasks.sleep_then_pid, 60), timeout=0.2)
    pool = Pool([raised, died, not_sent, not_returned, late], 2, backend=Processes())
    run(pool)
    del pool
    assert isinstance(raised.err, ValueError)
    assert isinstance(raised.err.__cause__, RemoteTraceback)
    assert "raise_value_error" in str(raised.err.__cause__)
    assert isinstance(died.err, WorkerDied)
    assert isinstance(not_sent.err, NotPicklable)
    assert isinstance(not_returned.err, NotPicklable)
    assert isinstance(late.err, TimeoutError)
    assert runs_alive() == before


def test_a_partial_of_a_nested_function_fails_alone_as_not_picklable() -> None:
    def nested(number: int) -> int:
        return number

    bad: Task[Any] = Task(partial(nested, 1))
    fine: Task[int] = Task(partial(tasks.double, 1))
    run(Pool([bad, fine], 1, backend=Processes()))
    assert isinstance(bad.err, NotPicklable) and fine.result == 2


def test_at_the_end_an_idle_child_takes_over_what_waits_in_another_and_each_runs_once(
    tmp_path: Path,
) -> None:
    # One child is held in `gate` with tiny tasks queued behind it; the other runs through the
    # rest and runs out. The dispatcher then asks the held child for the later half of its queue
    # back: once the gate opens, the held child answers NOT_STARTED to those, and they are sent
    # again (to whichever child is free). Each task runs once: none twice, none lost.
    events = tmp_path / "events"
    opened = tmp_path / "open"
    held: Task[int] = Task(partial(tasks.gate, str(tmp_path), "held", str(opened), RUN_LIMIT))
    tiny_tasks: list[Task[int]] = [
        Task(partial(tasks.recorded_pid, str(events), number)) for number in range(200)
    ]
    backend = Processes()
    pool = Pool([held, *tiny_tasks], 2, backend=backend)
    runs = finish_within_thread(pool)
    wait_for(tmp_path / "held")
    end = time.monotonic() + RUN_LIMIT
    while backend.counts.asked_back == 0:
        # Until the free child has run everything else and the dispatcher asks for the rest.
        assert time.monotonic() < end
        time.sleep(0.01)
    asked = backend.counts.asked_back
    opened.touch()
    runs.join(RUN_LIMIT)
    assert not runs.is_alive()
    assert ran(events) == Counter(range(200))
    assert all(task.err is None for task in [held, *tiny_tasks])
    # Every task asked back while the gate was shut came back unstarted (the held child could
    # not have passed its check for them), and was sent again.
    assert asked >= 10, "too little waited behind the gate to prove anything"
    assert backend.counts.taken_back >= asked


def test_large_arguments_and_results_cross_whole_between_small_ones() -> None:
    # A 2 MB argument fills the child's pipe (the parent writes what fits and waits for POLLOUT,
    # never blocking); a 1 MB result does not fit a reply area and goes down the pipe, after
    # the area's replies are published, so the order holds. Small tasks around them.
    big = bytes(2 << 20)
    work: list[Task[bytes]] = []
    for number in range(30):
        if number % 10 == 5:
            work.append(Task(partial(tasks.echo_size, big, 1 << 20)))
        else:
            work.append(Task(partial(tasks.echo_size, b"", number)))
    run(Pool(work, 2, backend=Processes()))
    for number, task in enumerate(work):
        assert task.err is None, task
        assert task.result == bytes(1 << 20 if number % 10 == 5 else number)


def test_a_generator_blocked_in_next_holds_up_no_deadline_of_a_running_task(
    tmp_path: Path,
) -> None:
    # Two workers, tasks from a generator: the first is slow with a timeout; the generator is
    # then asked for a task for the idle child, and blocks until the slow task has been killed at
    # its deadline. Only a dispatcher that does not read the generator itself can kill it
    # meanwhile (the generator is read by a thread of its own); one that read it would wait in
    # next() for RUN_LIMIT, the deadline unenforced.
    import threading

    slow: Task[int] = Task(
        partial(tasks.announce_then_sleep, str(tmp_path), "slow", 60), timeout=1.0
    )
    released = threading.Event()
    waited: list[bool] = []

    def made() -> Iterator[Task[int]]:
        yield slow
        waited.append(released.wait(RUN_LIMIT))
        yield Task(partial(tasks.double, 1))

    def release_once_slow_has_finished() -> None:
        end = time.monotonic() + RUN_LIMIT
        while time.monotonic() < end:
            if slow.finished:
                released.set()
                return
            time.sleep(0.01)

    helper = threading.Thread(target=release_once_slow_has_finished, name="helper", daemon=True)
    helper.start()
    pool = Pool(made(), 2, backend=Processes())
    run(pool)
    helper.join(RUN_LIMIT)
    assert isinstance(slow.err, TimeoutError)
    assert waited == [True]
    assert pool.tasks[1].result == 2


def test_a_timed_task_killed_before_its_child_started_it_is_not_sent_again() -> None:
    # One worker, tasks from a generator, which is read only once the child is idle: as it is
    # asked for the second task, it stops the child (SIGSTOP), so the child cannot even read the
    # timed task sent to it, and its deadline (a microsecond) passes first. Past its deadline a
    # task fails whether or not it had begun: TimeoutError, in the child that was up (no note
    # about a start), and no fresh child for it. Sent again, it would go to a fresh child, whose
    # start its clock would then include.
    warm: Task[int] = Task(tasks.pid)
    instant: Task[int] = Task(tasks.pid, timeout=1e-6)

    def made() -> Iterator[Task[int]]:
        yield warm
        assert warm.result is not None
        os.kill(warm.result, signal.SIGSTOP)
        yield instant

    backend = Processes()
    pool = Pool(made(), 1, backend=backend)
    run(pool)
    assert isinstance(instant.err, TimeoutError)
    assert getattr(instant.err, "__notes__", []) == []
    assert backend.counts.children_started == 1
    assert warm.result is not None and not exists(warm.result)
