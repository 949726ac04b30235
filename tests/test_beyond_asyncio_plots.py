"""Stage 4 on asyncio in plots/: its benchmark contenders say which loop ran them, its targets are
drawn from the run's own metadata, and its failure-matrix caller ties every error to its input and
lets nothing start after the give-up. Speed is measured by `python -m plots`, never here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from functools import partial
from pathlib import Path

import pytest

from tests.conftest import NEEDS_PLOTS

try:
    import matplotlib  # noqa: F401  (plots.draw, imported below, needs it)
except ModuleNotFoundError:
    pytest.skip(NEEDS_PLOTS, allow_module_level=True)

from plots.contenders import (
    BEYOND_STANDARD_LOOP,
    BEYOND_UVLOOP,
    MATRIX,
    STATIC_COROUTINES_STANDARD,
    STATIC_COROUTINES_UVLOOP,
    colour,
)
from plots.draw import io_asyncio_targets
from plots.failures import JobFailed, JobSpec, Run, call_beyond_asyncio, job, job_async
from plots.implementations import run_beyond_asyncio
from plots.measure import Sizes, measure_io, timed_run
from plots.workloads import Workload, WrongResults, no_op


async def doubled_noting_the_loop(loops: list[str], job: int) -> int:
    loops.append(type(asyncio.get_running_loop()).__module__)
    return job * 2


def test_the_benchmark_contenders_name_the_loop_that_really_runs_them() -> None:
    # make installs uvloop: then both loops are measured side by side, uvloop first.
    both = [BEYOND_UVLOOP, BEYOND_STANDARD_LOOP]
    assert [contender.name for contender in both if contender.runs_here()] == [
        "beyond (asyncio, uvloop)",
        "beyond (asyncio, standard loop)",
    ]
    for contender in both:
        loops: list[str] = []
        # timed_run checks every result (each job doubled, once) before it returns a time.
        timed_run(contender, Workload(no_op, partial(doubled_noting_the_loop, loops)), 7, 3)
        expected = "uvloop" if "uvloop" in contender.name else "asyncio.unix_events"
        assert set(loops) == {expected}, contender.name
        assert contender.runs_on == "event loop"
        assert colour(contender.name) is not None


def test_the_io_figure_has_a_ceiling_for_each_loop_run_on_that_loop() -> None:
    # Target 3 holds stage 4 on each loop to hand-written coroutines on the same loop.
    sizes = dataclasses.replace(Sizes.tiny(), io_workers=(2,), repeats=1)
    measured = {row["implementation"] for row in measure_io(sizes, [BEYOND_STANDARD_LOOP])}
    assert {STATIC_COROUTINES_UVLOOP.name, STATIC_COROUTINES_STANDARD.name} <= measured
    for ceiling, expected in (
        (STATIC_COROUTINES_UVLOOP, "uvloop"),
        (STATIC_COROUTINES_STANDARD, "asyncio.unix_events"),
    ):
        loops: list[str] = []
        timed_run(ceiling, Workload(no_op, partial(doubled_noting_the_loop, loops)), 7, 3)
        assert set(loops) == {expected}, ceiling.name
        assert colour(ceiling.name) is not None


def test_a_task_that_fails_makes_the_run_refused_not_timed() -> None:
    async def fails(job: int) -> int:
        raise ValueError(f"job {job}")

    with pytest.raises(WrongResults, match="beyond on asyncio: a task failed"):
        run_beyond_asyncio("standard", Workload(no_op, fails), 4, 2)


def test_the_asyncio_targets_come_from_the_runs_metadata_and_only_with_an_asyncio_line() -> None:
    meta = json.loads(json.dumps({"sizes": dataclasses.asdict(Sizes.quick())}))
    measured = [
        {"implementation": name, "workers": str(workers)}
        for name in ("robust", "beyond (asyncio, uvloop)")
        for workers in (1, 64, 256)
    ]
    assert io_asyncio_targets(meta, measured) == [(64, 0.75), (256, 0.70)]
    # Without an asyncio line there is nothing to hold to a target.
    threads_only = [row for row in measured if row["implementation"] == "robust"]
    assert io_asyncio_targets(meta, threads_only) == []
    # Metadata from before the targets were recorded: none drawn rather than some assumed.
    del meta["sizes"]["io_asyncio_targets"]
    assert io_asyncio_targets(meta, measured) == []


def run_of(tmp_path: Path, jobs: int, give_up_after: int | None) -> tuple[Run, list[int]]:
    """The failure matrix's caller on its workload (odd jobs fail, 10 ms each), in this process;
    the run, and the jobs that started, in the order they did."""
    events = str(tmp_path / "events.jsonl")
    spec = JobSpec(events, seconds=0.01, odd_jobs_fail=True)
    run = Run(
        job=partial(job, spec),
        job_async=partial(job_async, spec),
        inputs=list(range(1, jobs + 1)),
        workers=3,
        events=events,
        give_up_after=give_up_after,
    )
    call_beyond_asyncio(run)
    lines = [json.loads(line) for line in Path(events).read_text().splitlines()]
    return run, [line["start"] for line in lines if "start" in line]


def test_the_failure_matrix_row_gets_every_error_tied_to_its_input_and_every_result(
    tmp_path: Path,
) -> None:
    assert "beyond on asyncio" in {contender.name for contender in MATRIX}
    run, started = run_of(tmp_path, 9, None)
    assert sorted(started) == list(range(1, 10))
    assert sorted((given, value) for given, value in run.results) == [
        (n, 2 * n) for n in (2, 4, 6, 8)
    ]
    assert sorted(given or 0 for given, _ in run.errors) == [1, 3, 5, 7, 9]
    for given, error in run.errors:
        assert isinstance(error, JobFailed) and error.job == given


def test_the_failure_matrix_row_stops_the_pool_at_the_give_up_and_starts_nothing_after(
    tmp_path: Path,
) -> None:
    run, started = run_of(tmp_path, 30, 10)
    assert [given for given, _ in run.errors] == list(range(1, 20, 2))
    # Tasks are taken in order, one per worker: when job 19 (the 10th failure) ends, the two
    # other workers hold at most jobs 20 and 21, and nothing is taken after it.
    assert sorted(started) == list(range(1, max(started) + 1))
    assert 19 <= max(started) <= 21
