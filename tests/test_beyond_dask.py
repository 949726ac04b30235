"""Stage 4 on a Dask cluster (beyond/backends/dask_cluster.py): the pool's contract on a real
LocalCluster.

One cluster for the whole module (2 worker processes of one thread each, no dashboard): starting
one costs seconds. The tasks live in tests/dask_tasks.py, which the worker processes import; they
write what they did to a log file and wait at gate files, so that a test holds a task running for
as long as it needs, with no sleep.
"""

from __future__ import annotations

import operator
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import NEEDS_DASK, REPO_ROOT, wait_for

try:
    import distributed
    from distributed.diagnostics.plugin import SchedulerPlugin
except ModuleNotFoundError:
    pytest.skip(NEEDS_DASK, allow_module_level=True)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import beyond.waiting
from beyond import Cancelled, Pool, StopReason, Task
from beyond.backends.dask_cluster import (
    ClusterLost,
    DaskBackend,
    DaskRunner,
    RerunWarning,
    _Raised,
)
from beyond.backends.dask_lost_workers import outcome_lost
from tests.dask_tasks import (
    CLUSTER_CHILD,
    CTRL_C_CHILD,
    TaskFailed,
    events,
    exits,
    fail_on_worker,
    job,
    returns_a_result_slow_to_send,
    sending,
    sleeps_until_stopped,
    starts,
)

# distributed is mostly untyped, and mypy --strict refuses calls into it: the tests hold it as Any.
Client: Any = distributed.Client
LocalCluster: Any = distributed.LocalCluster

# The pool's own threads: none may outlive a test.
POOL_THREADS = ("worker-", "dask-stop-watcher")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    with Client(cluster) as client:
        yield client


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith(POOL_THREADS)]
    assert left == []


@pytest.fixture(autouse=True)
def wake_ups_are_not_covered_by_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in test_beyond.py: a wake-up the pool forgets then hangs the test instead of costing 50 ms.
    monkeypatch.setattr(beyond.waiting, "SIGNAL_CHECK_SECONDS", 60.0)


@pytest.fixture
def log(tmp_path: Path) -> str:
    return str(tmp_path / "log")


class Background:
    """A call (a pool's run or loop) in a daemon thread, so that the test can act while it runs."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.outcome: list[object] = []
        self.failure: list[BaseException] = []

        def target() -> None:
            try:
                self.outcome.append(call())
            except BaseException as error:
                self.failure.append(error)

        self.thread = threading.Thread(target=target, name="test-background", daemon=True)
        self.thread.start()

    def join(self, seconds: float = 30.0) -> object:
        self.thread.join(seconds)
        assert not self.thread.is_alive(), f"still running after {seconds} s: deadlocked?"
        if self.failure:
            raise self.failure[0]
        return self.outcome[0]


def tasks_on_scheduler(client: Any) -> int:
    def count(dask_scheduler: Any) -> int:
        return len(dask_scheduler.tasks)

    return cast(int, client.run_on_scheduler(count))


def backend_of(pool: Pool[Any]) -> DaskBackend:
    assert isinstance(pool.backend, DaskBackend)
    return pool.backend


class InFlight(SchedulerPlugin):
    """On the scheduler: the most tasks in flight at once (sent by a client and not yet finished:
    waiting, queued, or processing on a worker), and the most processing on workers at once."""

    name = "beyond-test-in-flight"
    UNFINISHED = frozenset({"waiting", "queued", "no-worker", "processing"})

    def __init__(self) -> None:
        self.in_flight: set[object] = set()
        self.processing: set[object] = set()
        self.most_in_flight = 0
        self.most_processing = 0

    def transition(self, key: object, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        # A finished task's result may stay on the scheduler a moment longer: the client sends its
        # release one event-loop turn after the next task (Future.release, distributed/client.py).
        if finish in self.UNFINISHED:
            self.in_flight.add(key)
        else:
            self.in_flight.discard(key)
        if finish == "processing":
            self.processing.add(key)
        else:
            self.processing.discard(key)
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        self.most_processing = max(self.most_processing, len(self.processing))


def most_in_flight(dask_scheduler: Any) -> tuple[int, int]:
    plugin = dask_scheduler.plugins[InFlight.name]
    return plugin.most_in_flight, plugin.most_processing


# --- Outcomes: each on its own task, errors with the worker's traceback. ---


def test_each_task_keeps_its_result_or_its_own_error_with_the_workers_traceback(
    client: Any, log: str
) -> None:
    # Arguments given to Task, and in a partial (the keyword) joined to them.
    tasks = [Task(partial(job, fails=i % 3 == 0), log, str(i), i) for i in range(9)]
    pool = Pool(tasks, 3, backend=client)
    pool.run()

    assert pool.stopped is None
    for i, task in enumerate(tasks):
        assert task.finished
        if i % 3 == 0:
            assert isinstance(task.err, TaskFailed) and task.err.name == str(i)
            # The frames of the worker process that raised it, rebuilt on this side.
            text = "".join(traceback.format_exception(task.err))
            assert "dask_tasks.py" in text and "in job" in text and "raise TaskFailed" in text
        else:
            assert (task.err, task.result) == (None, i)
    # They ran in the cluster's worker processes, each once.
    assert {event["pid"] for event in events(log) if "pid" in event}.isdisjoint({os.getpid()})
    assert starts(log) == {str(i): 1 for i in range(9)}


@settings(
    max_examples=6,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    outcomes=st.lists(st.booleans(), max_size=8),
    concurrency=st.integers(1, 4),
    max_errors=st.none() | st.integers(1, 3),
    from_generator=st.booleans(),
    streaming=st.booleans(),
)
def test_every_task_runs_at_most_once_and_keeps_its_own_outcome(
    client: Any,
    outcomes: list[bool],
    concurrency: int,
    max_errors: int | None,
    from_generator: bool,
    streaming: bool,
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        log = os.path.join(directory, "log")
        tasks = [
            Task(partial(job, log, str(i), i, fails=fails)) for i, fails in enumerate(outcomes)
        ]
        source = iter(tasks) if from_generator else tasks
        pool = Pool(source, concurrency, max_errors=max_errors, backend=client)
        yielded = list(pool) if streaming else None
        if not streaming:
            pool.run()
        started = starts(log)

    # At most once each, and a task holds an outcome exactly when it started.
    assert all(count == 1 for count in started.values())
    for i, task in enumerate(tasks):
        assert task.finished == (str(i) in started)
        if not task.finished:
            assert (task.err, task.result) == (None, None)
        elif outcomes[i]:
            assert isinstance(task.err, TaskFailed) and task.err.name == str(i)
        else:
            assert (task.err, task.result) == (None, i)
    if yielded is not None:
        assert sorted(id(task) for task in yielded) == sorted(id(t) for t in tasks if t.finished)
    failures = sum(task.err is not None for task in tasks)
    if max_errors is not None and failures >= max_errors:
        assert pool.stopped is not None and pool.stopped.reason is StopReason.MAX_ERRORS
    else:
        assert pool.stopped is None and all(task.finished for task in tasks)


def test_a_task_that_cannot_be_sent_fails_alone(client: Any, log: str) -> None:
    lock = threading.Lock()  # no pickle can carry a lock to another process
    unsendable: Task[Any] = Task(lambda: lock.locked())
    others: list[Task[Any]] = [Task(partial(job, log, str(i), i)) for i in range(3)]
    Pool([unsendable, *others], 2, backend=client).run()

    assert unsendable.finished and unsendable.err is not None
    assert "could not send task" in " ".join(getattr(unsendable.err, "__notes__", []))
    assert [(task.err, task.result) for task in others] == [(None, 0), (None, 1), (None, 2)]


def test_sys_exit_in_a_task_stops_the_pool_as_a_panic_and_the_worker_lives_on(
    client: Any, log: str
) -> None:
    workers_before = set(client.scheduler_info()["workers"])
    exiting: Task[int] = Task(partial(exits, log, "exits", 3))
    others: list[Task[int]] = [Task(partial(job, log, str(i), i)) for i in range(6)]
    pool = Pool([exiting, *others], 1, backend=client)
    with pytest.raises(SystemExit) as raised:
        pool.run()

    # As with threads: the task keeps it, no task starts after it, and run() raises it.
    assert raised.value.code == 3 and exiting.err is raised.value
    assert pool.stopped is not None and pool.stopped.reason is StopReason.PANIC
    assert starts(log) == {"exits": 1} and not any(task.finished for task in others)
    assert "raised on a Dask worker" in " ".join(raised.value.__notes__)
    # Raised in the worker's thread, it would have shut the worker process down.
    assert set(client.scheduler_info()["workers"]) == workers_before


# --- At most `concurrency` tasks on the cluster. ---


@pytest.mark.parametrize("concurrency", [1, 3])
def test_at_most_concurrency_tasks_are_ever_on_the_cluster(client: Any, concurrency: int) -> None:
    client.register_plugin(InFlight(), name=InFlight.name)
    try:
        tasks = [Task(partial(operator.add, i, 1)) for i in range(30)]
        Pool(tasks, concurrency, backend=client).run()
        most, most_processing = client.run_on_scheduler(most_in_flight)
    finally:
        client.unregister_scheduler_plugin(InFlight.name)

    assert [task.result for task in tasks] == [i + 1 for i in range(30)]
    # A pool that sent every task at once would show 30 here.
    assert most <= concurrency
    # Assigned to workers: the scheduler may hand a worker a task more than it has threads
    # (distributed.scheduler.worker-saturation), so only the pool's bound holds here.
    assert most_processing <= concurrency


# --- Stopping: cancel(), max_errors, the run's timeout, a task's timeout. ---


def test_cancel_drops_the_queued_futures_and_tells_the_running_tasks(client: Any, log: str) -> None:
    # Six tasks that sleep with the pool's token; four sent, two running (one per worker), two
    # queued on the scheduler.
    tasks = [Task(partial(sleeps_until_stopped, log, str(i))) for i in range(6)]
    pool = Pool(tasks, 4, backend=client)
    running = Background(pool.run)
    wait_for(lambda: len(starts(log)) == 2 and tasks_on_scheduler(client) == 4, "4 sent, 2 run")

    pool.cancel()
    running.join()

    assert pool.stopped is not None and pool.stopped.reason is StopReason.CANCELLED
    started = starts(log)
    assert sorted(started.values()) == [1, 1]
    for i, task in enumerate(tasks):
        if str(i) in started:
            # Told on its worker: its token's sleep woke with Cancelled.
            assert isinstance(task.err, Cancelled)
        else:
            assert not task.finished and task.err is None
    # The queued futures were cancelled, and the rest released: the scheduler holds nothing.
    wait_for(lambda: tasks_on_scheduler(client) == 0, "the scheduler forgot the pool's tasks")


def test_max_errors_starts_nothing_new_and_lets_running_tasks_finish(
    client: Any, log: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    tasks = [Task(partial(job, log, str(i), i, fails=True, gate=str(gate))) for i in range(8)]
    pool = Pool(tasks, 4, max_errors=1, backend=client)
    running = Background(pool.run)
    wait_for(lambda: len(starts(log)) == 2 and tasks_on_scheduler(client) == 4, "4 sent, 2 run")
    gate.touch()
    running.join()

    assert pool.stopped is not None and pool.stopped.reason is StopReason.MAX_ERRORS
    started = starts(log)
    # Only the four sent can have started (a queued one may start before the stop reaches the
    # cluster); each started task finished with its own error, and no other did.
    assert 2 <= len(started) <= 4 and set(started.values()) == {1}
    for i, task in enumerate(tasks):
        assert task.finished == (str(i) in started)
        if task.finished:
            assert isinstance(task.err, TaskFailed) and task.err.name == str(i)
    wait_for(lambda: tasks_on_scheduler(client) == 0, "the scheduler forgot the pool's tasks")


def test_a_task_past_its_timeout_gets_timeout_error_at_its_checkpoint_on_the_worker(
    client: Any, log: str
) -> None:
    late: Task[object] = Task(partial(sleeps_until_stopped, log, "late"), timeout=0.3)
    quick: Task[object] = Task(partial(job, log, "quick", 7))
    Pool([late, quick], 2, backend=client).run()

    assert isinstance(late.err, TimeoutError)
    assert str(late.err) == "the task's timeout of 0.3 s passed"
    assert (quick.err, quick.result) == (None, 7)


def test_the_runs_timeout_stops_new_tasks_and_tells_the_running_ones(client: Any, log: str) -> None:
    tasks = [Task(partial(sleeps_until_stopped, log, str(i))) for i in range(6)]
    pool = Pool(tasks, 4, backend=client)
    pool.run(timeout=0.5)

    assert pool.stopped is not None and pool.stopped.reason is StopReason.TIMEOUT
    started = starts(log)
    assert set(started.values()) == {1}
    for i, task in enumerate(tasks):
        if str(i) in started:
            assert isinstance(task.err, TimeoutError | Cancelled)
        else:
            assert not task.finished


@pytest.mark.filterwarnings("ignore::beyond.OverdueWarning")
def test_a_task_that_never_checks_is_reported_overdue_and_still_waited_for(
    client: Any, log: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    stubborn = Task(partial(job, log, "stubborn", 5, gate=str(gate)), timeout=0.1)
    pool = Pool([stubborn], 1, overdue_grace=0.05, backend=client)
    running = Background(pool.run)
    wait_for(lambda: pool.overdue == [stubborn], "the task is reported overdue")
    assert not stubborn.finished
    gate.touch()
    running.join()

    # Dask cannot stop a running task: it ran to its end, and keeps its result.
    assert (stubborn.err, stubborn.result) == (None, 5)


def test_ctrl_c_tells_the_running_tasks_on_the_cluster_and_starts_no_more(
    cluster: Any, client: Any, log: str
) -> None:
    # A real SIGINT, to a child whose pool runs on this cluster through its address: the code a
    # cluster of many machines runs.
    child = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_CHILD, cluster.scheduler_address, log],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(starts(log)) == 2 and tasks_on_scheduler(client) == 4, "4 sent, 2 run")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    # KeyboardInterrupt, re-raised once the running tasks had stopped at their token's sleep:
    # the two queued never started.
    assert child.returncode in (-signal.SIGINT, 130), err[-2000:]
    reason, *outcomes = out.split()
    assert reason == "INTERRUPTED"
    assert sorted(outcomes) == ["Cancelled", "Cancelled", *["not-run"] * 4]
    assert sorted(starts(log).values()) == [1, 1]
    wait_for(lambda: tasks_on_scheduler(client) == 0, "the scheduler forgot the pool's tasks")


# --- Streaming. ---


def test_iteration_yields_each_task_as_its_future_completes(
    client: Any, log: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    held = Task(partial(job, log, "held", 0, gate=str(gate)))
    tasks = [held, Task(partial(job, log, "b", 1)), Task(partial(job, log, "c", 2))]
    order: list[str] = []
    for task in Pool(tasks, 2, backend=client):
        order.append(str(task.result))
        if len(order) == 2:
            gate.touch()
    assert order == ["1", "2", "0"]


def test_leaving_the_loop_over_an_endless_generator_cancels_the_pool(client: Any, log: str) -> None:
    def endless() -> Iterator[Task[int]]:
        for i in range(10**9):
            yield Task(partial(job, log, str(i), i))

    pool = Pool(endless(), 2, backend=client)
    for seen, _task in enumerate(pool, start=1):
        if seen == 5:
            break
    assert pool.stopped is not None and pool.stopped.reason is StopReason.CANCELLED
    assert set(starts(log).values()) == {1}


# --- A worker process killed mid-run. ---


def kill_while_running(
    client: Any, log: str, gate: Path, pool: Pool[int], rerun_expected: bool
) -> str:
    """Run the pool, kill the worker process running task "victim", and let the rest finish.
    Returns the killed worker's pid."""
    running = Background(pool.run)
    wait_for(lambda: "victim" in starts(log), "the victim started")
    victim_pid = next(e["pid"] for e in events(log) if e.get("start") == "victim")
    os.kill(cast(int, victim_pid), signal.SIGKILL)
    if rerun_expected:
        wait_for(lambda: starts(log).get("victim") == 2, "Dask ran the victim again")
    gate.touch()
    try:
        running.join()
    finally:
        # The nanny starts a new worker process in place of the killed one; the next test needs it.
        wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, "two workers again")
    return str(victim_pid)


def test_a_killed_worker_loses_no_task_and_a_task_dask_ran_again_is_named(
    client: Any, log: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    victim = Task(partial(job, log, "victim", 100, gate=str(gate)))
    others: list[Task[int]] = [Task(partial(job, log, str(i), i)) for i in range(6)]
    pool = Pool([victim, *others], 2, backend=client)

    # Named by its function and arguments: job('...log', 'victim', 100, gate='...gate').
    with pytest.warns(RerunWarning, match=r"job\(.*'victim', 100, .* may have started up to 2"):
        killed = kill_while_running(client, log, gate, pool, rerun_expected=True)

    # No task lost: every one finished with its result. The victim started twice (the first run
    # cut off with its process), and the pool says so; every other task started once.
    assert pool.stopped is None
    assert (victim.err, victim.result) == (None, 100)
    assert [(task.err, task.result) for task in others] == [(None, i) for i in range(6)]
    assert starts(log) == {"victim": 2, **{str(i): 1 for i in range(6)}}
    assert next(e["pid"] for e in events(log) if e.get("start") == "victim") == int(killed)
    assert backend_of(pool).rerun == [victim]


def test_with_allowed_failures_0_a_killed_workers_task_fails_with_killed_worker_and_never_reruns(
    client: Any, log: str, tmp_path: Path
) -> None:
    def set_allowed_failures(count: int, dask_scheduler: Any) -> None:
        dask_scheduler.allowed_failures = count

    gate = tmp_path / "gate"
    victim = Task(partial(job, log, "victim", 100, gate=str(gate)))
    others: list[Task[int]] = [Task(partial(job, log, str(i), i)) for i in range(4)]
    pool = Pool([victim, *others], 2, backend=client)
    client.run_on_scheduler(set_allowed_failures, 0)
    try:
        kill_while_running(client, log, gate, pool, rerun_expected=False)
    finally:
        client.run_on_scheduler(set_allowed_failures, 3)

    assert type(victim.err).__name__ == "KilledWorker"
    assert [(task.err, task.result) for task in others] == [(None, i) for i in range(4)]
    assert starts(log) == {"victim": 1, **{str(i): 1 for i in range(4)}}
    assert backend_of(pool).rerun == []


# --- Bad input, and a missing extra. ---


def test_a_closed_client_is_refused_when_the_pool_is_built(cluster: Any) -> None:
    closed = Client(cluster)
    closed.close()
    with pytest.raises(ValueError, match="not connected"):
        Pool([], 1, backend=closed)


def test_without_distributed_one_line_says_what_to_install() -> None:
    # A stand-in with a Client's module and name: backends.py then imports the Dask backend,
    # which finds no distributed.
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "from beyond import Pool\n"
        "Client = type('Client', (), {'__module__': 'distributed.client'})\n"
        "try:\n"
        "    Pool([], 1, backend=Client())\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout == (
        "the Dask backend needs dask and distributed: pip install 'go-worker-pool-py[backends]' "
        "(or: pip install dask distributed)\n"
    )


# --- The client closed, or the scheduler gone, mid-run. ---

# How long run() may take to give up on a lost cluster here: the stated bound is
# CLIENT_CHECK_SECONDS (0.25 s) after the client's status changes, plus the calls in progress;
# this leaves room for a loaded machine, and stays far below distributed's reconnect timeout (30 s),
# which the pool must not wait for.
GIVES_UP_WITHIN = 10.0


def test_closing_the_client_mid_run_fails_the_tasks_in_flight_and_stops_the_run(
    cluster: Any, log: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    own = Client(cluster)
    tasks = [Task(partial(job, log, str(i), i, gate=str(gate))) for i in range(6)]
    pool = Pool(tasks, 2, backend=own)
    running = Background(pool.run)
    try:
        wait_for(lambda: len(starts(log)) == 2, "two tasks run on the cluster")
        own.close()
        with pytest.raises(ClusterLost) as raised:
            running.join(GIVES_UP_WITHIN)
    finally:
        gate.touch()  # the tasks still running on the cluster's workers end
    # The worker thread may look while close() is still under way: 'closing' is the same news.
    assert re.match(
        r"the Dask client was closed \(status '(closing|closed)'\): no other", str(raised.value)
    )
    assert pool.stopped is not None and pool.stopped.reason is StopReason.BACKEND_FAILED
    in_flight = [task for task in tasks if task.finished]
    assert len(in_flight) == 2 and all(isinstance(task.err, ClusterLost) for task in in_flight)
    assert "may or may not have run on the cluster" in str(in_flight[0].err)
    assert sorted(starts(log).values()) == [1, 1]


def test_a_client_closed_before_the_run_stops_it_with_no_task_run(cluster: Any) -> None:
    # Before the fix the first worker thread died making its runner (the client refused the
    # event subscription) without saying it had ended, and run() waited for it for ever.
    own = Client(cluster)
    tasks = [Task(partial(operator.add, i, 1)) for i in range(3)]
    pool = Pool(tasks, 2, backend=own)
    own.close()
    with pytest.raises(ClusterLost):
        Background(pool.run).join(GIVES_UP_WITHIN)
    assert pool.stopped is not None and pool.stopped.reason is StopReason.BACKEND_FAILED
    assert not any(task.finished for task in tasks)


def test_an_outcome_is_lost_with_the_cluster_only_when_it_is_not_the_tasks_own(client: Any) -> None:
    # What the fetch of a finished task raises when its scheduler has just died: CommClosedError,
    # which may come before the client's status leaves "running" (1 of 2 runs of the test below).
    from distributed.comm.core import CommClosedError

    done = client.submit(operator.add, 1, 1, pure=False)
    failed = client.submit(fail_on_worker, "x", pure=False)
    assert done.result() == 2
    with pytest.raises(TaskFailed) as raised:
        failed.result()
    cut_off = CommClosedError("in <TCP (closed) ConnectionPool.gather>: Stream is closed")
    assert outcome_lost(client, done, cut_off) == (
        "lost its connection to the scheduler (CommClosedError)"
    )
    # The task's own error, even one that is an OSError, and a cancel of the pool's own.
    assert outcome_lost(client, failed, raised.value) is None
    assert outcome_lost(client, failed, CommClosedError("the task's own")) is None
    assert outcome_lost(client, done, CancelledError()) is None


def cluster_in_its_own_session() -> subprocess.Popen[str]:
    """CLUSTER_CHILD: a LocalCluster in a process and session of its own, which prints its
    scheduler's address on its first line; the test kills its whole group when done."""
    return subprocess.Popen(
        [sys.executable, "-c", CLUSTER_CHILD],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


@pytest.mark.parametrize("how", ["the client closed", "the scheduler killed"])
def test_a_result_on_its_way_back_when_the_cluster_goes_fails_with_cluster_lost(
    cluster: Any, log: str, tmp_path: Path, how: str
) -> None:
    # The task has run; its result is being sent back (pickled on the worker, held at the gate)
    # when the client closes or the scheduler dies. Before the fix the fetch's CommClosedError
    # was kept as the task's error, and run() returned as if nothing had happened (2 of 2 runs
    # each way; the adversary saw it on 2 of 6 runs with tasks in flight).
    gate = tmp_path / "gate"
    child = None
    if how == "the client closed":
        own = Client(cluster)
    else:
        child = cluster_in_its_own_session()
        assert child.stdout is not None
        own = Client(child.stdout.readline().strip())
    try:
        task: Task[Any] = Task(partial(returns_a_result_slow_to_send, log, "0", str(gate)))
        pool = Pool([task], 1, backend=own)
        running = Background(pool.run)
        wait_for(lambda: sending(log) == ["0"], "the result on its way back")
        if child is None:
            own.close()
        else:
            os.killpg(child.pid, signal.SIGKILL)
        with pytest.raises(ClusterLost):
            running.join(GIVES_UP_WITHIN)
        assert pool.stopped is not None and pool.stopped.reason is StopReason.BACKEND_FAILED
        assert isinstance(task.err, ClusterLost), task
        assert "may or may not have run on the cluster" in str(task.err)
    finally:
        gate.touch()  # the worker's pickling goes on, if the worker is still there
        own.close(timeout=GIVES_UP_WITHIN)
        if child is not None:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def test_killing_the_scheduler_mid_run_fails_the_tasks_in_flight_within_the_bound(
    log: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    child = cluster_in_its_own_session()
    try:
        assert child.stdout is not None
        own = Client(child.stdout.readline().strip())
        try:
            tasks = [Task(partial(job, log, str(i), i, gate=str(gate))) for i in range(6)]
            pool = Pool(tasks, 2, backend=own)
            running = Background(pool.run)
            wait_for(lambda: len(starts(log)) == 2, "two tasks run on the cluster")
            # The scheduler and its workers, killed at once; distributed then tries to reconnect
            # for 30 s, and before the fix run() waited for ever (3 of 3 runs).
            os.killpg(child.pid, signal.SIGKILL)
            with pytest.raises(ClusterLost) as raised:
                running.join(GIVES_UP_WITHIN)
            assert str(raised.value).startswith("the Dask client lost its scheduler (status")
            assert pool.stopped is not None and pool.stopped.reason is StopReason.BACKEND_FAILED
            assert [isinstance(task.err, ClusterLost) for task in tasks if task.finished] == [
                True,
                True,
            ]

            # What the slices guard against: a future sent while the client tries to reconnect
            # is never resolved by distributed, even after it gives up. A worker thread waiting
            # on one still returns, once it sees the client's status.
            assert own.status == "connecting"
            never = own.submit(operator.add, 1, 1, pure=False)
            late: Task[int] = Task(partial(operator.add, 1, 1))
            runner = DaskRunner(backend_of(pool), pool._scheduler, 0)
            outcome = Background(lambda: runner._wait(never, late)).join(GIVES_UP_WITHIN)
            assert isinstance(outcome, _Raised) and isinstance(outcome.error, ClusterLost)
            assert not never.done()
        finally:
            own.close(timeout=GIVES_UP_WITHIN)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
