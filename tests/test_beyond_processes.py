"""Stage 4 on processes (`backend="processes"`): the pool's contract, with tasks in child processes.

Real processes throughout: the tasks (tests/processes_tasks.py) run in forkserver children, die
there for real (os._exit, a segfault, SIGKILL) and are killed for real at their deadline. A task
announces that it runs by writing its pid into a file, so that a test waits for that event rather
than for a guessed time, and can check afterwards that the process is gone.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beyond import Cancelled, Pool, StopReason, Task
from beyond.processes import (
    NotPicklable,
    Processes,
    RemoteError,
    RemoteTraceback,
    WorkerDied,
    make_backend,
)
from tests import processes_tasks as tasks
from tests.conftest import REPO_ROOT, finish_within

# Generous: a run here takes well under a second, but the machine is shared and loaded.
RUN_LIMIT = 60.0


def run(pool: Pool[Any], timeout: float | None = None) -> None:
    finish_within(RUN_LIMIT, lambda: pool.run(timeout))


def exists(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def our_children() -> list[int]:
    """This process's children, less multiprocessing's own helpers (its forkserver and resource
    tracker, started once per program and shared by every user of multiprocessing)."""
    found = []
    for listing in Path("/proc/self/task").glob("*/children"):
        try:
            pids = [int(pid) for pid in listing.read_text().split()]
        except OSError:
            continue  # that thread ended while we looked
        for pid in pids:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # it exited while we looked
            if b"multiprocessing.forkserver" in command or b"resource_tracker" in command:
                continue
            if exists(pid):
                found.append(pid)
    return found


def wait_for(path: Path, seconds: float = RUN_LIMIT) -> int:
    """Wait for a task's marker file (its sign that it runs); return the pid written in it."""
    end = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < end, f"{path.name} never appeared"
        time.sleep(0.01)
    return int(path.read_text())


@pytest.fixture(autouse=True)
def nothing_left_behind() -> object:
    yield
    assert multiprocessing.active_children() == []
    assert our_children() == []
    assert [thread for thread in threading.enumerate() if thread.name.startswith("worker")] == []


def test_the_name_processes_gives_this_backend() -> None:
    pool = Pool([Task(tasks.pid)], 1, backend="processes")
    assert isinstance(pool.backend, Processes)
    assert pool.backend.name == "processes"
    # Never fork: forkserver where it exists (Linux, macOS), else spawn.
    assert pool.backend.start_method in ("forkserver", "spawn")
    assert isinstance(make_backend("processes"), Processes)


def test_tasks_run_in_other_processes_and_keep_their_results() -> None:
    work: list[Task[int]] = [Task(partial(tasks.double, number)) for number in range(6)]
    work.append(Task(tasks.pid))
    pool = Pool(work, 2, backend="processes")
    run(pool)
    assert [task.result for task in work[:6]] == [0, 2, 4, 6, 8, 10]
    assert work[6].result != os.getpid()
    assert pool.stopped is None


def test_each_error_comes_back_on_its_task_with_its_remote_traceback() -> None:
    raised: Task[Any] = Task(partial(tasks.raise_value_error, "no such thing"))
    cannot_unpickle: Task[Any] = Task(tasks.raise_unpicklable_error)
    fine: Task[Any] = Task(partial(tasks.double, 21))
    run(Pool([raised, cannot_unpickle, fine], 1, backend="processes"))

    assert isinstance(raised.err, ValueError)
    assert str(raised.err) == "no such thing"
    cause = raised.err.__cause__
    assert isinstance(cause, RemoteTraceback)
    # The child's own frames: where it was raised, in the task's module.
    assert 'processes_tasks.py", line' in cause.text
    assert "in raise_value_error" in cause.text
    assert cause.text.rstrip().endswith("ValueError: no such thing")

    # An exception that pickles but cannot be rebuilt here still says what and where.
    assert isinstance(cannot_unpickle.err, RemoteError)
    assert str(cannot_unpickle.err) == "NeedsTwoArguments: one and two"
    assert isinstance(cannot_unpickle.err.__cause__, RemoteTraceback)
    assert "in raise_unpicklable_error" in cannot_unpickle.err.__cause__.text

    assert fine.result == 42


def test_a_task_whose_process_dies_gets_an_error_saying_how_and_a_fresh_process_runs_the_rest() -> (
    None
):
    # One worker: the tasks after each death can only run if a fresh process replaced the dead one.
    before: Task[Any] = Task(tasks.pid)
    exits: Task[Any] = Task(partial(tasks.exit_now, 7))
    segfaults: Task[Any] = Task(tasks.segfault)
    killed: Task[Any] = Task(tasks.kill_myself)  # SIGKILL, as the out-of-memory killer sends
    after: Task[Any] = Task(tasks.pid)
    more: list[Task[Any]] = [Task(partial(tasks.double, number)) for number in range(3)]
    pool = Pool([before, exits, segfaults, killed, after, *more], 1, backend="processes")
    run(pool)
    for task, says, exitcode, signalled in [
        (exits, "exited with status 7", 7, None),
        (segfaults, "killed by SIGSEGV (signal 11)", -signal.SIGSEGV, signal.SIGSEGV),
        (killed, "killed by SIGKILL (signal 9)", -signal.SIGKILL, signal.SIGKILL),
    ]:
        assert isinstance(task.err, WorkerDied), task
        assert says in str(task.err)
        assert str(task.err).startswith(f"the worker process running task {task._name()} died")
        assert str(task.err).endswith("a fresh process takes the next task")
        assert (task.err.exitcode, task.err.signal) == (exitcode, signalled)
    assert isinstance(before.result, int) and not exists(before.result)
    assert after.result not in (None, before.result)
    assert [task.result for task in more] == [0, 2, 4]
    # A crash is the task's failure, not the pool's: nothing stopped.
    assert pool.stopped is None


def test_a_child_killed_while_idle_is_replaced_and_the_next_task_runs_once() -> None:
    # One worker, tasks from a generator: the second task is made only once the first has
    # finished, and its making kills the (now idle) child that ran the first. Sending it then
    # fails on the dead pipe; it never reached a child, so it goes to a fresh one, once.
    first: Task[int] = Task(tasks.pid)

    def made() -> Iterator[Task[int]]:
        yield first
        assert first.result is not None
        os.kill(first.result, signal.SIGKILL)
        end = time.monotonic() + RUN_LIMIT
        while exists(first.result):
            assert time.monotonic() < end
            time.sleep(0.01)
        yield Task(tasks.pid)

    pool = Pool(made(), 1, backend="processes")
    run(pool)
    assert [task.err for task in pool.tasks] == [None, None]
    assert pool.tasks[1].result not in (None, first.result)


def test_process_pool_executor_instead_breaks_on_one_crash() -> None:
    # The contrast docs/stage4-processes.md states: one dead worker fails the pending futures too.
    with ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("forkserver")
    ) as ex:
        dies = ex.submit(tasks.exit_now, 7)
        pending = ex.submit(tasks.double, 1)
        with pytest.raises(BrokenProcessPool):
            dies.result(RUN_LIMIT)
        with pytest.raises(BrokenProcessPool):
            pending.result(RUN_LIMIT)
        with pytest.raises(BrokenProcessPool):
            ex.submit(tasks.double, 2)


def test_a_task_or_result_that_cannot_be_pickled_fails_alone_with_a_clear_error() -> None:
    def closure() -> int:
        return 1

    lam: Task[Any] = Task(lambda: 1)
    nested: Task[Any] = Task(closure)
    lock_back: Task[Any] = Task(tasks.returns_a_lock)
    fine: list[Task[Any]] = [Task(partial(tasks.double, number)) for number in range(3)]
    pool = Pool([lam, nested, lock_back, *fine], 1, backend="processes")
    run(pool)
    for task in (lam, nested):
        assert isinstance(task.err, NotPicklable)
        assert isinstance(task.err, pickle.PicklingError)
        assert "cannot be sent to a worker process" in str(task.err)
        assert "not a lambda or a nested function" in str(task.err)
    assert isinstance(lock_back.err, NotPicklable)
    assert "result of task 'returns_a_lock' (lock) cannot be sent back" in str(lock_back.err)
    assert [task.result for task in fine] == [0, 2, 4]


def test_a_task_past_its_deadline_is_killed_and_gets_timeout_error(tmp_path: Path) -> None:
    # One worker: `first` says which process the slow task then runs in, and `after` which one
    # replaced it.
    first: Task[int] = Task(tasks.pid)
    slow: Task[int] = Task(
        partial(tasks.announce_then_sleep, str(tmp_path), "slow", 60), timeout=1.0
    )
    after: Task[int] = Task(tasks.pid)
    pool = Pool([first, slow, after], 1, backend="processes")
    run(pool)
    assert isinstance(slow.err, TimeoutError)
    assert "the task's timeout of 1.0 s passed" in str(slow.err)
    assert isinstance(first.result, int) and not exists(first.result)
    assert after.result not in (None, first.result)
    # Killed at its deadline, well before the overdue grace: never reported overdue.
    assert pool.overdue == []


def test_a_run_timeout_kills_the_running_tasks_and_starts_no_more(tmp_path: Path) -> None:
    running: list[Task[int]] = [
        Task(partial(tasks.announce_then_sleep, str(tmp_path), f"task{n}", 60)) for n in range(2)
    ]
    never: list[Task[int]] = [Task(tasks.pid) for _ in range(3)]
    pool = Pool([*running, *never], 2, backend="processes")
    run(pool, timeout=1.0)
    assert pool.stopped is not None and pool.stopped.reason == StopReason.TIMEOUT
    for task in running:
        assert isinstance(task.err, TimeoutError), task
        assert "the run's timeout of 1.0 s passed" in str(task.err)
    # Those that had begun in their child (on a loaded machine a start can take longer than the
    # run's second) were killed with it.
    for marker in tmp_path.glob("task?"):
        assert not exists(int(marker.read_text()))
    assert [task.finished for task in never] == [False] * 3


def test_cancel_kills_running_tasks_which_get_cancelled(tmp_path: Path) -> None:
    running: list[Task[int]] = [
        Task(partial(tasks.announce_then_sleep, str(tmp_path), f"task{n}", 60)) for n in range(2)
    ]
    never: Task[int] = Task(tasks.pid)
    pool = Pool([*running, never], 2, backend="processes")
    runner = threading.Thread(target=pool.run, name="runs-the-pool", daemon=True)
    runner.start()
    pids = [wait_for(tmp_path / f"task{n}") for n in range(2)]
    pool.cancel()
    runner.join(RUN_LIMIT)
    assert not runner.is_alive()
    assert [type(task.err) for task in running] == [Cancelled, Cancelled]
    assert not never.finished
    assert pool.stopped is not None and pool.stopped.reason == StopReason.CANCELLED
    assert not any(exists(pid) for pid in pids)


def test_max_errors_lets_the_running_tasks_finish(tmp_path: Path) -> None:
    # Worker 1's task fails once worker 2's task has started; worker 2's task then finishes.
    started = tmp_path / "long"
    long: Task[Any] = Task(partial(tasks.announce_then_sleep, str(tmp_path), "long", 0.5))
    fails: Task[Any] = Task(partial(tasks.fail_after_file, str(started), RUN_LIMIT, 1))
    never: list[Task[Any]] = [Task(tasks.pid) for _ in range(3)]
    pool = Pool([fails, long, *never], 2, max_errors=1, backend="processes")
    run(pool)
    assert isinstance(fails.err, tasks.Failed)
    assert long.err is None and long.result == int(started.read_text())
    assert pool.stopped is not None and pool.stopped.reason == StopReason.MAX_ERRORS
    assert [task.finished for task in never] == [False] * 3


def test_a_task_raising_system_exit_stops_the_pool_as_a_panic_as_with_threads() -> None:
    exits: Task[Any] = Task(partial(tasks.system_exit, 3))
    others: list[Task[Any]] = [Task(tasks.pid) for _ in range(3)]
    pool = Pool([exits, *others], 1, backend="processes")
    with pytest.raises(SystemExit) as raised:
        run(pool)
    assert raised.value.code == 3
    assert exits.err is raised.value
    assert pool.stopped is not None and pool.stopped.reason == StopReason.PANIC


@settings(max_examples=6)
@given(
    fails=st.lists(st.booleans(), max_size=8),
    concurrency=st.integers(1, 2),
    streaming=st.booleans(),
    from_a_generator=st.booleans(),
)
def test_every_task_runs_once_and_keeps_its_own_outcome(
    tmp_path_factory: pytest.TempPathFactory,
    fails: list[bool],
    concurrency: int,
    streaming: bool,
    from_a_generator: bool,
) -> None:
    events = tmp_path_factory.mktemp("events") / "events"
    work = [Task(partial(tasks.recorded, str(events), n, fail)) for n, fail in enumerate(fails)]
    source = iter(work) if from_a_generator else work
    pool = Pool(source, concurrency, backend="processes")
    if streaming:
        yielded = finish_within(RUN_LIMIT, lambda: list(pool))
        assert sorted(id(task) for task in yielded) == sorted(id(task) for task in work)
    else:
        run(pool)
    ran = Counter(events.read_text().split()) if events.exists() else Counter()
    assert ran == Counter(str(n) for n in range(len(fails)))
    for number, (task, fail) in enumerate(zip(work, fails, strict=True)):
        assert task.finished
        if fail:
            assert isinstance(task.err, tasks.Failed) and task.err.number == number
        else:
            assert task.err is None and task.result == number * 2


def test_spawn_can_be_chosen_by_hand() -> None:
    work: list[Task[int]] = [Task(partial(tasks.double, 3)), Task(tasks.pid)]
    pool = Pool(work, 2, backend=Processes(start_method="spawn"))
    run(pool)
    assert pool.backend.name == "processes"
    assert work[0].result == 6 and work[1].result not in (None, os.getpid())


def test_bad_input_is_refused_before_any_process_starts() -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        Pool([Task(tasks.pid)], 0, backend="processes")
    with pytest.raises(ValueError, match="backend must be one of"):
        Pool([Task(tasks.pid)], 1, backend="process")
    with pytest.raises(ValueError, match="'fork' is refused"):
        Processes(start_method="fork")
    with pytest.raises(ValueError, match="start_method must be one of"):
        Processes(start_method="telepathy")


# Ctrl-C: a real SIGINT to the whole process group, as a terminal sends it, so the workers'
# children get it too (they ignore it: the parent decides).
CTRL_C_CHILD = """
import json, multiprocessing, sys
from functools import partial
from beyond import Pool, Task
from tests.processes_tasks import announce_then_sleep

folder, mode = sys.argv[1], sys.argv[2]
work = [Task(partial(announce_then_sleep, folder, f"task{n}", 60)) for n in range(4)]
pool = Pool(work, 2, backend="processes")
try:
    if mode == "run":
        pool.run()
    else:
        for task in pool:
            pass
except KeyboardInterrupt:
    print(json.dumps({
        "outcomes": [type(task.err).__name__ if task.finished else "not run" for task in work],
        "stopped": pool.stopped.reason.value,
        "children": [child.pid for child in multiprocessing.active_children()],
    }))
    sys.exit(130)
"""


def in_session(session: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[4]) == session and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("mode", ["run", "iteration"])
def test_ctrl_c_kills_the_running_tasks_starts_no_more_and_leaves_no_process(
    tmp_path: Path, mode: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_CHILD, str(tmp_path), mode],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        pids = [wait_for(tmp_path / f"task{n}") for n in range(2)]
        os.killpg(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=RUN_LIMIT)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode == 130, err
    report = json.loads(out)
    assert report["outcomes"] == ["Cancelled", "Cancelled", "not run", "not run"]
    assert report["stopped"] == "interrupted"
    assert report["children"] == []
    assert not any(exists(pid) for pid in pids)
    # multiprocessing's forkserver and resource tracker see their parent gone and exit too.
    end = time.monotonic() + RUN_LIMIT
    while in_session(child.pid):
        assert time.monotonic() < end, f"left running: {in_session(child.pid)}"
        time.sleep(0.05)
