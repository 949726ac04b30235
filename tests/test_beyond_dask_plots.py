"""The benchmarks' Dask contender: its cluster lives in a child process (plots/dask_child.py).

Each test here starts a real LocalCluster in a child process, as `python -m plots` does: one for
the module's checked runs, one for the Ctrl-C test. Nothing here times anything.
"""

from __future__ import annotations

import contextlib
import operator
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

import plots.implementations
import plots.measure
from plots.contenders import BEYOND_DASK, ROBUST
from plots.dask_child import DaskChild
from plots.implementations import close_dask
from plots.measure import Sizes, measure_all, measure_cpu, measure_dispatch, timed_run
from plots.workloads import NO_OP, Workload, WrongResults, no_op_async
from tests.conftest import REPO_ROOT, wait_for
from tests.hanging import HAS_PROC

# The process states these tests read (stopped, running...) are Linux's, in /proc/PID/stat.
pytestmark = pytest.mark.skipif(not HAS_PROC, reason="reads process states in /proc")


def stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name: state, ppid, process group...; None if
    the process has gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def state(pid: int) -> str | None:
    """R, S, T (stopped), Z (zombie)...; None if the process has gone."""
    fields = stat(pid)
    return fields[0] if fields is not None else None


def gone(pids: list[int]) -> bool:
    """None of `pids` is a live process (a zombie its new parent has not reaped yet is gone)."""
    return all(state(pid) in (None, "Z") for pid in pids)


def live_processes() -> dict[int, list[str]]:
    found = {int(e.name): stat(int(e.name)) for e in Path("/proc").iterdir() if e.name.isdigit()}
    return {pid: fields for pid, fields in found.items() if fields and fields[0] != "Z"}


def group(leader: int) -> list[int]:
    """The live processes of the process group `leader` leads: the Dask child, its worker
    processes, and whatever else it started (multiprocessing's resource tracker)."""
    return sorted(pid for pid, fields in live_processes().items() if int(fields[2]) == leader)


def child_of(parent: int) -> int:
    (child,) = [pid for pid, fields in live_processes().items() if int(fields[1]) == parent]
    return child


@pytest.fixture(scope="module")
def child() -> Iterator[DaskChild]:
    """The contender's child and its cluster, started once for the module, as for a benchmark.
    The last test to use it closes it and checks that nothing is left (a test run alone that
    finds it closed starts another, which this teardown closes)."""
    started = plots.implementations.dask_child()
    try:
        yield started
    finally:
        close_dask()


def test_a_wrong_result_or_a_failed_task_through_the_child_is_refused(child: DaskChild) -> None:
    # Picklable module-level calls, so that the cluster's workers can run them.
    negated = Workload(operator.neg, no_op_async)
    # TypeError: an int is not subscriptable.
    failing = Workload(cast(Callable[[int], int], operator.itemgetter(0)), no_op_async)

    with pytest.raises(WrongResults, match="do not match"):
        timed_run(BEYOND_DASK, negated, 4, 2)
    with pytest.raises(WrongResults, match="a task failed: TypeError"):
        timed_run(BEYOND_DASK, failing, 4, 2)
    # And the child goes on: the next right run counts.
    assert timed_run(BEYOND_DASK, NO_OP, 4, 2) > 0


def test_the_contender_runs_in_a_child_that_owns_the_cluster_and_leaves_nothing_behind(
    child: DaskChild,
) -> None:
    threads_before = set(threading.enumerate())
    sizes = replace(
        Sizes.tiny(),
        repeats=2,
        dispatch_tasks=100,
        dispatch_workers=2,
        cpu_workers=(1, 2),
        cpu_workloads=((0.001, 4), (0.0001, 8)),
    )

    dispatch = measure_dispatch(sizes, [ROBUST, replace(BEYOND_DASK, max_tasks=10)])
    cpu = measure_cpu(sizes, [ROBUST, BEYOND_DASK])

    # Interleaved with the others, repeat by repeat, and per task over the tasks it ran.
    assert [row["implementation"] for row in dispatch] == [
        *("plain loop", "robust", BEYOND_DASK.name) * 2
    ]
    dask = [row for row in dispatch if row["runs_on"] == "cluster"]
    assert [row["tasks"] for row in dask] == [10, 10]
    assert all(row["us_per_task"] == cast(float, row["seconds"]) / 10 * 1e6 for row in dask)
    # In the 1 ms workload only: at milliseconds a task, 0.1 ms tasks would measure only dispatch.
    assert sorted(
        (row["repeat"], row["workers"], row["task_seconds"])
        for row in cpu
        if row["runs_on"] == "cluster"
    ) == [
        (1, 1, 0.001),
        (1, 2, 0.001),
        (2, 1, 0.001),
        (2, 2, 0.001),
    ]
    # No thread of distributed ever ran here: the cluster and its client are the child's.
    assert set(threading.enumerate()) <= threads_before
    # Between its runs the child's whole group is stopped: the cluster takes no CPU then.
    assert len(child.pids) == 3  # the child and its two worker processes
    everyone = group(child.pids[0])
    assert set(child.pids) <= set(everyone)
    # killpg() returns once the signal is sent; each process stops as the kernel next schedules
    # it, so a process of the group may still read "R" for a moment (seen once, idle machine).
    wait_for(lambda: {state(pid) for pid in everyone} == {"T"}, "the child's group is stopped")
    assert child.versions["cluster"].startswith("LocalCluster(n_workers=2")

    close_dask()
    wait_for(lambda: gone(everyone), "the child and its worker processes are gone")


CTRL_C_RUN = """
from dataclasses import replace
from pathlib import Path
from plots.contenders import BEYOND_DASK
from plots.measure import Sizes, measure_all

sizes = replace(Sizes.tiny(), dask=True, repeats=1000, dispatch_tasks=10, benchmarks=("dispatch",))
measure_all(Path({out!r}), sizes, [replace(BEYOND_DASK, max_tasks=10)], with_go=False)
"""


def test_ctrl_c_in_the_middle_of_a_benchmark_leaves_no_cluster_behind(tmp_path: Path) -> None:
    run = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_RUN.format(out=str(tmp_path))],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stderr is not None
        # Progress on stderr: the Dask contender's runs have begun, so its child and cluster live.
        for line in run.stderr:
            if line.startswith("[dispatch]") and BEYOND_DASK.name in line:
                break
        child = child_of(run.pid)
        descendants = group(child)
        assert len(descendants) >= 3  # the child and its two worker processes, at least

        # The terminal's Ctrl-C reaches the foreground process group: here, the measuring process
        # (the child has a group of its own, so it is not in it).
        run.send_signal(signal.SIGINT)
        _, errors = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert "KeyboardInterrupt" in errors
    wait_for(lambda: gone(descendants), "the child and its worker processes are gone")


KILLED_PARENT = """
import time
from plots.dask_child import DaskChild

child = DaskChild()
print(child.pids[0], flush=True)
time.sleep(120)
"""


def test_a_parent_killed_while_the_cluster_is_stopped_leaves_nothing_behind() -> None:
    # SIGKILL: the parent closes nothing. Its child's process group, stopped, becomes orphaned,
    # and the kernel sends it SIGHUP and SIGCONT (POSIX), which end the child and its workers.
    parent = subprocess.Popen(
        [sys.executable, "-c", KILLED_PARENT],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert parent.stdout is not None
    leader = int(parent.stdout.readline())
    try:
        everyone = group(leader)
        assert len(everyone) >= 3 and {state(pid) for pid in everyone} == {"T"}
        parent.kill()
        parent.wait()
        wait_for(lambda: gone(everyone), "the child and its worker processes are gone")
    finally:
        # Should the test fail, leave nothing behind all the same.
        parent.kill()
        parent.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader, signal.SIGKILL)


def test_without_distributed_the_benchmarks_leave_dask_out_and_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(plots.measure, "has_distributed", lambda: False)
    sizes = replace(Sizes.tiny(), dask=True, repeats=1, dispatch_tasks=10, benchmarks=("dispatch",))

    measure_all(tmp_path, sizes, [ROBUST, BEYOND_DASK], with_go=False)

    rows = (tmp_path / "dispatch.csv").read_text()
    assert "robust" in rows and BEYOND_DASK.name not in rows
    assert (
        "Dask left out of the dispatch and CPU benchmarks: "
        "pip install 'go-worker-pool-py[backends]' (or: pip install dask distributed)\n"
    ) in capsys.readouterr().err
    assert plots.implementations._dask == []  # no child was started
