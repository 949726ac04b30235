"""The contenders (plots/contenders.py): one table that every benchmark, the failure matrix and
the figures read; each entry runs what its figures need, and every process pool among them starts
its processes as stage 4 on processes does. Speed is measured by `python -m plots`, never here.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from beyond.backends.child_processes import Processes
from plots.contenders import (
    BENCHMARKED,
    CONTENDERS,
    LOKY_CHUNKED,
    MATRIX,
    PROCESS_POOL_EXECUTOR_CHUNKED,
    ROBUST,
    STAGE,
    THREAD_POOL_AS_COMPLETED,
    Contender,
    colour,
)
from plots.failures import Run
from plots.implementations import run_robust
from plots.measure import Sizes, measure_all, measure_cpu, timed_run
from plots.start_method import START_METHOD
from plots.workloads import NO_OP, Workload, no_op_async


def test_every_contender_has_a_name_of_its_own_and_a_colour_in_its_figures() -> None:
    names = [contender.name for contender in CONTENDERS]
    assert len(names) == len(set(names))
    for contender in CONTENDERS:
        if contender.figures:
            assert colour(contender.name) is not None, contender.name
    # The Go pool's name carries its release, and keeps Go's blue.
    assert colour("Go 1.19 pool (goroutines)") == "#00add8"


def test_submit_and_as_completed_joins_the_dispatch_figure_beside_its_matrix_row() -> None:
    assert THREAD_POOL_AS_COMPLETED in BENCHMARKED and THREAD_POOL_AS_COMPLETED in MATRIX
    assert THREAD_POOL_AS_COMPLETED.figures == ("dispatch",)
    # timed_run checks every result (each job doubled, once) before it returns a time.
    assert timed_run(THREAD_POOL_AS_COMPLETED, NO_OP, 500, 4) > 0


def test_the_chunked_process_pool_executor_joins_the_cpu_figure_only() -> None:
    # The last contender added: one entry in plots/contenders.py, and this test. Issue 21 names
    # ProcessPoolExecutor.map among the peers stage 4 on processes is held to.
    assert PROCESS_POOL_EXECUTOR_CHUNKED in BENCHMARKED
    assert PROCESS_POOL_EXECUTOR_CHUNKED not in MATRIX
    assert PROCESS_POOL_EXECUTOR_CHUNKED.figures == ("cpu",)
    assert timed_run(PROCESS_POOL_EXECUTOR_CHUNKED, NO_OP, 50, 2) > 0


def test_loky_joins_the_cpu_figure_on_the_peers_start_method(tmp_path: Path) -> None:
    # Issue 21 names loky among the peers stage 4 on processes is held to. make installs it.
    assert LOKY_CHUNKED in BENCHMARKED and LOKY_CHUNKED not in MATRIX
    assert LOKY_CHUNKED.figures == ("cpu",) and LOKY_CHUNKED.runs_here()
    assert timed_run(LOKY_CHUNKED, NO_OP, 50, 2) > 0


def test_without_loky_the_cpu_benchmark_says_what_to_install_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = dataclasses.replace(LOKY_CHUNKED, runs_here=lambda: False)
    sizes = dataclasses.replace(
        Sizes.tiny(), benchmarks=("cpu",), cpu_workers=(1,), cpu_workloads=((0.0001, 4),)
    )
    measure_all(tmp_path, sizes, contenders=(missing, ROBUST), with_go=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if "loky" in line]
    assert lines == [
        "loky left out of the CPU benchmark: pip install 'go-worker-pool-py[plots]' "
        "(or: pip install loky)"
    ]
    with (tmp_path / "cpu.csv").open() as rows:
        measured = {row["implementation"] for row in csv.DictReader(rows)}
    assert LOKY_CHUNKED.name not in measured and ROBUST.name in measured


def test_a_contender_cannot_be_in_a_figure_without_a_run_for_it() -> None:
    with pytest.raises(ValueError, match="a run for the figures"):
        Contender("runless", kind=STAGE, runs_on="threads", figures=("dispatch",))
    with pytest.raises(ValueError, match="no such figure"):
        Contender("lost", kind=STAGE, runs_on="threads", figures=("speed",), run=run_robust)
    with pytest.raises(ValueError, match="memory run"):
        Contender("forgetful", kind=STAGE, runs_on="threads", figures=("memory",))


def test_the_benchmarks_measure_each_contender_in_its_figures_only(tmp_path: Path) -> None:
    # robust is in every figure; the stand-in is in the dispatch figure alone.
    dispatch_only = Contender(
        "dispatch only", kind=STAGE, runs_on="threads", figures=("dispatch",), run=run_robust
    )
    sizes = dataclasses.replace(Sizes.tiny(), benchmarks=("dispatch", "io", "cpu"))
    measure_all(tmp_path, sizes, contenders=[ROBUST, dispatch_only], with_go=False)

    def names(benchmark: str) -> set[str]:
        with (tmp_path / f"{benchmark}.csv").open(newline="") as file:
            return {row["implementation"] for row in csv.DictReader(file)}

    assert names("dispatch") == {"plain loop", "robust", "dispatch only"}
    assert names("io") == {"hand-written threads, static split", "robust"}
    assert names("cpu") == {"plain loop", "robust"}
    # No contender here starts a process, and the metadata say nothing of how.
    assert "start_method" not in json.loads((tmp_path / "cpu.json").read_text())


def test_a_contender_can_be_left_out_of_the_shorter_cpu_workloads() -> None:
    # As Dask is: at milliseconds a task, 0.1 ms tasks would measure only what dispatch shows.
    slow = Contender(
        "slow per task",
        kind=STAGE,
        runs_on="threads",
        figures=("cpu",),
        run=run_robust,
        cpu_min_task_seconds=0.0005,
    )
    sizes = Sizes.tiny()
    assert sizes.cpu_workloads == ((0.0005, 4), (0.0001, 8))
    rows = measure_cpu(sizes, [ROBUST, slow])
    measured = {(row["implementation"], row["task_seconds"]) for row in rows}
    assert measured == {
        ("plain loop", 0.0005),
        ("plain loop", 0.0001),
        ("robust", 0.0005),
        ("robust", 0.0001),
        ("slow per task", 0.0005),
    }


# Set in this process while the pools below run. A child forked from it has a copy of this list
# as it was at the fork; a child started by forkserver or spawn imports this module afresh (the
# forkserver preloads only the project's packages, not the tests) and finds it empty.
SET_IN_THE_PARENT: list[str] = []


def not_forked(job: int) -> int:
    """The job's double, in a process that was not forked from the test's; -1 in one that was,
    which the benchmark's check refuses."""
    return -1 if SET_IN_THE_PARENT else job * 2


def test_every_process_pool_starts_its_processes_as_stage_4_does() -> None:
    # Stage 4 on processes never forks (a threaded parent's fork can deadlock the child); its
    # peers must start theirs the same way for the comparison to be fair.
    assert Processes().start_method == START_METHOD != "fork"
    work = Workload(not_forked, no_op_async)
    pools = [c for c in BENCHMARKED if c.runs_on == "processes"]
    callers = [c for c in MATRIX if c.runs_on == "processes"]
    # Pool.map twice, ProcessPoolExecutor.map, loky, stage 4 on processes twice.
    assert len(pools) == 6
    assert len(callers) == 4  # ProcessPoolExecutor, Pool.map, Pool.imap_unordered, stage 4
    SET_IN_THE_PARENT.append("forked")
    try:
        for contender in pools:
            # timed_run refuses a run whose results are not every job doubled.
            assert timed_run(contender, work, 6, 2) > 0, contender.name
        for contender in callers:
            assert callable(contender.call)
            run = Run(not_forked, no_op_async, [1, 2, 3, 4], 2, "/dev/null")
            contender.call(run)
            assert not run.errors, contender.name
            results = [value for _, value in run.results if isinstance(value, int)]
            assert sorted(results) == [2, 4, 6, 8], contender.name
    finally:
        SET_IN_THE_PARENT.clear()
