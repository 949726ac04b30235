"""What the Dask backend's tests run on the cluster's worker processes: module-level, so that it is
sent by reference, and light (the standard library and beyond), so that a worker imports it at once.

Tasks say what they did by appending a JSON line to a file (one os.write on a file opened with
O_APPEND: lines from concurrent processes never interleave), and wait for the test by polling for
a gate file, so that a test holds a task running for as long as it needs, without a sleep.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from beyond import current_token

# A gate nobody opens must not hold a worker thread for ever: past this, the task fails loudly.
GATE_SECONDS = 30.0


class TaskFailed(Exception):
    """The error a failing test task raises; it knows its task."""

    def __init__(self, name: str) -> None:
        super().__init__(f"task {name} failed")
        self.name = name

    def __reduce__(self) -> tuple[type[TaskFailed], tuple[str]]:
        return TaskFailed, (self.name,)


def record(log: str, **event: object) -> None:
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (json.dumps(event) + "\n").encode())
    finally:
        os.close(descriptor)


def events(log: str | Path) -> list[dict[str, object]]:
    path = Path(log)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def starts(log: str | Path) -> dict[str, int]:
    """How many times each task started, by name."""
    counts: dict[str, int] = {}
    for event in events(log):
        if event.get("start") is not None:
            name = str(event["start"])
            counts[name] = counts.get(name, 0) + 1
    return counts


def wait_for(gate: str) -> None:
    deadline = time.monotonic() + GATE_SECONDS
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.002)


def job(log: str, name: str, result: int, fails: bool = False, gate: str | None = None) -> int:
    """Record the start (with this process's id), wait at the gate if given, then return `result`
    or raise TaskFailed."""
    record(log, start=name, pid=os.getpid())
    if gate is not None:
        wait_for(gate)
    record(log, end=name)
    if fails:
        raise TaskFailed(name)
    return result


def fail_on_worker(name: str) -> int:
    """Raises at once; its name is what a test looks for in the error's traceback."""
    raise TaskFailed(name)


def sleeps_until_stopped(log: str, name: str) -> str:
    """Record the start, then sleep with the pool's token: on a worker, as in a thread of the pool,
    a cancel wakes it with Cancelled and its deadline with TimeoutError."""
    record(log, start=name, pid=os.getpid())
    current_token().sleep(GATE_SECONDS)
    return "slept to the end: nothing stopped it"


def exits(log: str, name: str, status: int) -> int:
    """Record the start, then sys.exit(status): a panic, in the pool's words."""
    record(log, start=name, pid=os.getpid())
    raise SystemExit(status)


# A pool in a child process, on the cluster at argv[1]: six tasks that sleep with the pool's token,
# four in flight; the test sends it a real SIGINT. Prints what the pool and its tasks say.
CTRL_C_CHILD = """
import sys
from functools import partial

from distributed import Client

from beyond import Pool, Task
from tests.dask_tasks import sleeps_until_stopped

address, log = sys.argv[1:3]
with Client(address) as client:
    tasks = [Task(partial(sleeps_until_stopped, log, str(i))) for i in range(6)]
    pool = Pool(tasks, 4, backend=client)
    try:
        pool.run()
    except KeyboardInterrupt:
        outcomes = [type(task.err).__name__ if task.finished else "not-run" for task in tasks]
        print(pool.stopped.reason.name, *outcomes, flush=True)
        raise
"""


# A cluster of its own in a child process, for a test that kills its scheduler: prints the
# scheduler's address, then serves until killed. Run in a session of its own, so that killing
# the group kills the scheduler and its worker processes at once.
CLUSTER_CHILD = """
import time
from distributed import LocalCluster

if __name__ == "__main__":
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
    ) as cluster:
        print(cluster.scheduler_address, flush=True)
        while True:
            time.sleep(3600)
"""
