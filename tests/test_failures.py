"""The failure matrix: what each standard-library pool does with errors, SystemExit and SIGINT.

One module-scoped measurement runs every contender on every workload (short jobs, so about 15 s),
then each standard-library cell is held to the behaviour measured on CPython 3.11.7 and 3.13.0:
a Python release that changes one shows up here. Where a count depends on timing (how many jobs a
cancelling pool had already handed out), the check is the range its mechanism allows, not the one
number seen. Our own stages' cells are not pinned: they change as the stages do, and the stages'
own tests pin their behaviour. The Go rows (go/failures) are pinned too, to what Go 1.19 did; they
skip without Go, and without Go their cells say "not measured".
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import NEEDS_PLOTS, REPO_ROOT, run_module

try:
    import matplotlib.image
except ModuleNotFoundError:
    pytest.skip(NEEDS_PLOTS, allow_module_level=True)

import plots.failures_measure
import plots.measure
from plots.contenders import GO, MATRIX, STDLIB, Contender
from plots.draw import VERDICT_COLOURS, draw_all
from plots.failures import GIVE_UP, POST, SIGINT, SYSTEM_EXIT, Workload
from plots.failures_measure import (
    EXITING,
    NOT_MEASURED,
    PROPERTIES,
    ChildRun,
    exit_status,
    group_members,
    kill_group,
    left_behind,
    left_running,
    markdown_table,
    measure_failures,
    multiprocessing_helper,
    read_rows,
    started_after_give_up,
    started_after_sigint,
    system_exit,
    tied_to_input,
    traceback_kept,
)
from plots.golang import GoPrograms, find_go
from plots.measure import Sizes, measure_all, metadata, write_csv

GO_FOUND = find_go()
NO_GO = "Go not found on PATH: install it (apt-get install golang-go) to measure the Go rows"

Row = dict[str, str]


class Quiet:
    def step(self, what: str) -> None:
        pass


# The Dask row starts a cluster of 3 worker processes for each of its runs: many seconds each on
# this 2-core machine, before its clock starts, so that the matrix's quick run measures it but the
# test run leaves it out (tests/test_beyond_dask.py tests the pool on a cluster).
IN_THE_TEST_RUN = [c for c in MATRIX if c.name != "beyond on Dask (LocalCluster)"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(out folder with failures.csv/json/png, the folder that held the runs' events files)."""
    out = tmp_path_factory.mktemp("failures")
    scratch = tmp_path_factory.mktemp("failures-events")
    # Jobs long enough that a pool's reaction to the first error comes before the next round.
    sizes = dataclasses.replace(
        Sizes.tiny(),
        failures_job_seconds=0.1,
        failures_sigint_job_seconds=0.05,
        benchmarks=("failures",),
    )
    rows = measure_failures(
        sizes.failures_job_seconds,
        sizes.failures_sigint_job_seconds,
        sizes.failures_parallel_runs,
        progress_for=lambda steps: Quiet(),
        scratch=scratch,
        contenders=IN_THE_TEST_RUN,
    )
    write_csv(out / "failures.csv", rows)
    (out / "failures.json").write_text(json.dumps(metadata(sizes)))
    draw_all(out)
    return out, scratch


def cells_of(out: Path) -> dict[str, dict[str, Row]]:
    cells: dict[str, dict[str, Row]] = {}
    for row in read_rows(out / "failures.csv"):
        cells.setdefault(row["contender"], {})[row["property"]] = row
    return cells


# --- What each standard-library cell must say. A check is (what it claims, a test of the row). ---

Check = tuple[str, Callable[[Row], bool]]


def says(label: str) -> Check:
    return f"says {label!r}", lambda row: row["label"] == label


def count(low: int, high: int) -> Check:
    return f"a count from {low} to {high}", lambda row: low <= int(row["value"]) <= high


def matches(pattern: str) -> Check:
    return f"matches {pattern!r}", lambda row: re.fullmatch(pattern, row["label"]) is not None


EXITS = says("yes")
FINISHES_IN_TIME: Check = ("exits before its timeout", lambda row: row["value"] != "hangs")
# After SIGINT (or the give-up), a cancelling pool may still start the few jobs a worker had
# taken in the moment before the cancel: at most one per worker.
AT_MOST_ONE_PER_WORKER = count(0, 3)
# Jobs running when the signal lands: cancelled (asyncio) or killed (Go) at once, mid-run.
RUNNING_JOBS = count(1, 3)
# The same, for asyncio. Its jobs run in lockstep (equal sleeps on one loop: the three end in one
# loop iteration and the next three start in the next), so a SIGINT handled between the two, which
# a loaded machine makes likely enough (seen once in CI-like runs), finds no job running: 0 to 3.
RUNNING_JOBS_IN_LOCKSTEP = count(0, 3)
# Jobs running when multiprocessing's terminate() kills its workers. It does so only once its
# worker-handler thread has seen the change (Pool._terminate_pool joins it; it polls every 0.1 s),
# so a job shorter than that may finish first: 3 were cut off with the reference's 0.2 s jobs,
# 0 to 3 with these tests' 0.05 s.
TERMINATED_JOBS = count(0, 3)
# LATE_WORKER_PROCESSES: a process pool's worker is started by forkserver (plots.start_method):
# forked from the server, it then imports the caller's main module again, which on a loaded
# machine can take longer than a job. A worker that comes up after job 1's error has ended the
# run never runs one (seen: Pool.imap_unordered's give-up run at 2 of 30, load average 18), so a
# process pool's first round is anything from job 1 alone (or jobs 1 and 2 where job 2 exits) to
# one job per worker. A forking pool's workers were up at once; a forked child of a process that
# runs threads can deadlock, which is why none is forked here.
SIGINT_ENDS_THE_RUN = {
    "time to exit": FINISHES_IN_TIME,
    "exit status": says("130"),
    "left running": says("none"),
}
ONE_ERROR_IN_INPUT_ORDER = {
    "finishes": EXITS,
    "errors the caller gets": says("1 of 5"),
    "errors tied to input": says("0 of 1"),
    "traceback kept": says("yes"),
    # Job 1 fails first, and these hand results back in input order.
    "results kept": says("0 of 4"),
}
EVERY_ERROR_TIED = {
    "finishes": EXITS,
    "errors the caller gets": says("5 of 5"),
    "errors tied to input": says("5 of 5"),
    "traceback kept": says("yes"),
    "results kept": says("4 of 4"),
}

STDLIB_BEHAVIOUR: dict[str, dict[str, Check]] = {
    "ThreadPoolExecutor.map": {
        **ONE_ERROR_IN_INPUT_ORDER,
        # map's iterator cancels every future not yet running when the first error reaches the
        # caller (Executor.map's result_iterator, `finally: future.cancel()`): 4 to 6 ran.
        "jobs run": count(3, 12),
        "started after give-up": AT_MOST_ONE_PER_WORKER,
        # SystemExit is stored on the future like any error and raised in the caller by map,
        # which cancels the rest; the with block waits for the running ones; the process exits.
        "SystemExit in a job": matches(r"exits 3; [3-8] of 9 ran"),
        "started after SIGINT": AT_MOST_ONE_PER_WORKER,
        "cut off mid-run": says("0"),
        **SIGINT_ENDS_THE_RUN,
    },
    "ThreadPoolExecutor submit + as_completed": {
        **EVERY_ERROR_TIED,
        # Leaving the loop does not cancel anything: the with block's shutdown(wait=True) runs
        # every job already submitted, long after the caller stopped listening.
        "jobs run": says("30 of 30"),
        "started after give-up": count(1, 20),
        "SystemExit in a job": says("exits 3; 9 of 9 ran"),
        # The same after Ctrl-C: the with block runs the whole queue before the process exits.
        "started after SIGINT": count(50, 96),
        "cut off mid-run": says("0"),
        **SIGINT_ENDS_THE_RUN,
    },
    "ProcessPoolExecutor.map": {
        **ONE_ERROR_IN_INPUT_ORDER,
        # Like the thread pool's map, but up to workers + 1 calls already sit in the call queue
        # to the processes, marked running and past cancelling. From job 1 alone: see
        # LATE_WORKER_PROCESSES.
        "jobs run": count(1, 16),
        "started after give-up": count(0, 8),
        "SystemExit in a job": matches(r"exits 3; [2-9] of 9 ran"),
        "started after SIGINT": count(0, 8),
        "cut off mid-run": says("0"),
        **SIGINT_ENDS_THE_RUN,
    },
    "multiprocessing Pool.map": {
        **ONE_ERROR_IN_INPUT_ORDER,
        # map sends chunks of 3 (chunksize = ceil(30 / (4 * 3))); a chunk stops at its first
        # failing job, so half of its other jobs never run, and nothing says so.
        "jobs run": says("15 of 30"),
        # map raises only once every chunk is done: nothing is left to start.
        "started after give-up": says("0"),
        # The worker process exits on SystemExit (pool.worker catches only Exception); the pool
        # replaces it, and the lost job's result never comes: map waits forever.
        "SystemExit in a job": matches(r"hangs; \d of 9 ran"),
        # Leaving the with block calls terminate(): the running jobs are killed mid-run.
        "started after SIGINT": AT_MOST_ONE_PER_WORKER,
        "cut off mid-run": TERMINATED_JOBS,
        **SIGINT_ENDS_THE_RUN,
    },
    "multiprocessing Pool.imap_unordered": {
        **ONE_ERROR_IN_INPUT_ORDER,
        # Results arrive as jobs finish; job 2 may beat job 1's error.
        "results kept": count(0, 3),
        # From job 1 alone: see LATE_WORKER_PROCESSES.
        "jobs run": count(1, 12),
        "started after give-up": AT_MOST_ONE_PER_WORKER,
        "SystemExit in a job": matches(r"hangs; \d of 9 ran"),
        "started after SIGINT": AT_MOST_ONE_PER_WORKER,
        "cut off mid-run": TERMINATED_JOBS,
        **SIGINT_ENDS_THE_RUN,
    },
    "asyncio gather + Semaphore": {
        **ONE_ERROR_IN_INPUT_ORDER,
        # gather does not cancel the others, but asyncio.run cancels every task left when main
        # returns.
        "jobs run": count(3, 12),
        "started after give-up": AT_MOST_ONE_PER_WORKER,
        # The event loop lets SystemExit out at once (Task.__step re-raises it): no other job
        # starts, and the running ones are never finished.
        "SystemExit in a job": matches(r"exits 3; [3-5] of 9 ran"),
        # asyncio.run turns the first SIGINT into a cancellation of the main task.
        "started after SIGINT": AT_MOST_ONE_PER_WORKER,
        "cut off mid-run": RUNNING_JOBS_IN_LOCKSTEP,
        **SIGINT_ENDS_THE_RUN,
    },
    "asyncio gather(return_exceptions=True)": {
        **EVERY_ERROR_TIED,
        "jobs run": says("30 of 30"),
        "started after give-up": says("0"),
        "SystemExit in a job": matches(r"exits 3; [3-5] of 9 ran"),
        "started after SIGINT": AT_MOST_ONE_PER_WORKER,
        "cut off mid-run": RUNNING_JOBS_IN_LOCKSTEP,
        **SIGINT_ENDS_THE_RUN,
    },
    "asyncio TaskGroup + Semaphore": {
        "finishes": EXITS,
        # The first failure cancels the rest; jobs that failed in the same loop iteration (job 3,
        # timed like job 1) still make it into the ExceptionGroup: 2 of 5 here.
        "errors the caller gets": count(1, 4),
        "errors tied to input": matches(r"0 of [1-4]"),
        "traceback kept": says("yes"),
        # The tasks that finished before the cancel keep their results (job 2).
        "results kept": count(0, 3),
        "jobs run": count(3, 12),
        "started after give-up": says("0"),
        "SystemExit in a job": matches(r"exits 3; [3-5] of 9 ran"),
        "started after SIGINT": AT_MOST_ONE_PER_WORKER,
        "cut off mid-run": RUNNING_JOBS_IN_LOCKSTEP,
        **SIGINT_ENDS_THE_RUN,
    },
}


# Go 1.19, go/failures. Neither caller recovers the exiting job's panic (go/failures says why the
# job panics), so the runtime ends the program with status 2; a Go program that asks for no
# signals dies of SIGINT at once, its running jobs with it.
GO_EXIT_AND_SIGINT = {
    # The panic comes at the end of the first round; until the runtime stops the program, the
    # workers of jobs 1 and 3 (and, in the group, the slot the panicking goroutine frees on its way
    # out) may start one more job each.
    "SystemExit in a job": matches(r"panic: exits 2; [3-6] of 9 ran"),
    "time to exit": FINISHES_IN_TIME,
    "exit status": says("130"),
    # Only a job that started between the parent's line and the signal's arrival.
    "started after SIGINT": AT_MOST_ONE_PER_WORKER,
    # The jobs running at the signal die with the process.
    "cut off mid-run": RUNNING_JOBS,
    # Nothing of it is left: no orphans, and the process itself is gone.
    "left running": says("none"),
}
GO_BEHAVIOUR: dict[str, dict[str, Check]] = {
    "Go robust pool, the post's caller": {
        "finishes": EXITS,
        "errors the caller gets": says("5 of 5"),
        "errors tied to input": says("5 of 5"),
        # An error value made by fmt.Errorf or a struct records no stack: nothing to keep.
        "traceback kept": says("no (no stack)"),
        "results kept": says("4 of 4"),
        # The walk starts after Run, when every task has run.
        "jobs run": says("30 of 30"),
        "started after give-up": says("0"),
        **GO_EXIT_AND_SIGINT,
    },
    "Go errgroup-style group + SetLimit": {
        "finishes": EXITS,
        # Wait returns the first error of all; the other four are never kept.
        "errors the caller gets": says("1 of 5"),
        "errors tied to input": says("0 of 1"),
        "traceback kept": says("no (no stack)"),
        # The caller returns Wait's error, as Go callers do, and the results with it.
        "results kept": says("0 of 4"),
        # Go calls every function it is given, after the cancel too: each job starts, sees the
        # cancelled context and returns at once.
        "jobs run": says("30 of 30"),
        # Wait returns only when every job has returned: nothing is left to start.
        "started after give-up": says("0"),
        **GO_EXIT_AND_SIGINT,
    },
}


def test_every_go_contender_has_its_behaviour_pinned() -> None:
    go_rows = {contender.name for contender in MATRIX if contender.kind == GO}
    assert set(GO_BEHAVIOUR) == go_rows
    for name, checks in GO_BEHAVIOUR.items():
        assert set(checks) == {prop.name for prop in PROPERTIES}, name


@pytest.mark.skipif(GO_FOUND is None, reason=NO_GO)
@pytest.mark.parametrize("contender", list(GO_BEHAVIOUR))
def test_go_cells_match_the_measured_behaviour(measured: tuple[Path, Path], contender: str) -> None:
    cells = cells_of(measured[0])[contender]
    wrong = [
        f"{prop}: {cells[prop]['label']!r} (value {cells[prop]['value']!r}), expected it {claim}"
        for prop, (claim, holds) in GO_BEHAVIOUR[contender].items()
        if not holds(cells[prop])
    ]
    assert not wrong, "\n".join(wrong)


def test_every_events_line_is_written_as_json_dumps_writes_it(measured: tuple[Path, Path]) -> None:
    # The Go program writes the Python format byte for byte: the parent finds a run's start and
    # its job starts by searching the text for json.dumps's spelling.
    lines = [
        line
        for path in sorted(measured[1].glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert lines
    assert [line for line in lines if json.dumps(json.loads(line)) != line] == []


def test_without_go_the_go_rows_say_not_measured_and_the_figure_still_draws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    go_rows = [contender for contender in MATRIX if contender.kind == GO]
    rows = measure_failures(0.01, 0.01, 2, progress_for=lambda steps: Quiet(), contenders=go_rows)

    assert len(rows) == len(go_rows) * len(PROPERTIES)
    assert {(row["label"], row["verdict"]) for row in rows} == {
        ("not measured: Go not found", NOT_MEASURED)
    }
    write_csv(tmp_path / "failures.csv", rows)
    (tmp_path / "failures.json").write_text(json.dumps(metadata(Sizes.tiny())))
    assert [path.name for path in draw_all(tmp_path)] == ["failures.png"]


def test_a_go_program_that_was_not_built_says_why_in_its_cells() -> None:
    go_rows = [contender for contender in MATRIX if contender.kind == GO]
    failed = GoPrograms(None, {}, {"go": "go1.19.8"}, "go build failed")
    rows = measure_failures(
        0.01, 0.01, 2, progress_for=lambda steps: Quiet(), contenders=go_rows, go=failed
    )
    assert {row["label"] for row in rows} == {"not measured: go build failed"}


def test_every_standard_library_contender_has_its_behaviour_pinned() -> None:
    stdlib = {contender.name for contender in MATRIX if contender.kind == STDLIB}
    assert set(STDLIB_BEHAVIOUR) == stdlib
    for name, checks in STDLIB_BEHAVIOUR.items():
        assert set(checks) == {prop.name for prop in PROPERTIES}, name


@pytest.mark.parametrize("contender", list(STDLIB_BEHAVIOUR))
def test_standard_library_cells_match_the_measured_behaviour(
    measured: tuple[Path, Path], contender: str
) -> None:
    cells = cells_of(measured[0])[contender]
    wrong = [
        f"{prop}: {cells[prop]['label']!r} (value {cells[prop]['value']!r}), expected it {claim}"
        for prop, (claim, holds) in STDLIB_BEHAVIOUR[contender].items()
        if not holds(cells[prop])
    ]
    assert not wrong, "\n".join(wrong)


def test_every_contender_gets_a_cell_for_every_property(measured: tuple[Path, Path]) -> None:
    cells = cells_of(measured[0])
    assert list(cells) == [contender.name for contender in IN_THE_TEST_RUN]
    for name, row in cells.items():
        assert list(row) == [prop.name for prop in PROPERTIES], name
        assert {cell["verdict"] for cell in row.values()} <= set(VERDICT_COLOURS), name


def test_runs_that_hang_are_killed_with_every_process_they_started(
    measured: tuple[Path, Path],
) -> None:
    # naive hangs on the post's run, and multiprocessing's Pool.map hangs on SystemExit with
    # three worker processes: once measuring is over, no process runs from that measurement.
    cells = cells_of(measured[0])
    assert cells["naive (work that fails)"]["finishes"]["label"] == "hangs"
    scratch = str(measured[1])
    survivors = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if scratch in cmdline.read_bytes().decode(errors="replace"):
                survivors.append(cmdline.parent.name)
        except OSError:
            continue  # it exited while we looked
    assert not survivors


def test_the_figure_is_a_real_png(measured: tuple[Path, Path]) -> None:
    png = measured[0] / "failures.png"
    height, width, _ = matplotlib.image.imread(png).shape
    assert width >= 1200 and height >= 500


# --- The cells' arithmetic, on runs written by hand. ---


def run_of(
    events: list[dict[str, object]],
    status: int | None = 0,
    workload: Workload = GIVE_UP,
    orphans: int = 0,
) -> ChildRun:
    contender = Contender("by hand", kind=STDLIB, runs_on="threads", call=lambda run: None)
    return ChildRun(contender, workload, status, 10.0, events, "", None, orphans)


def report(**fields: object) -> dict[str, object]:
    return {"caller": "returned", "results": [], "errors": [], "threads": [], "processes": []} | (
        fields
    )


def test_jobs_after_the_give_up_are_those_that_start_after_the_callers_last_error() -> None:
    events: list[dict[str, object]] = [
        {"start": 1},
        {"caller_error": None},
        {"start": 2},
        {"caller_error": None},
        {"start": 3},
        {"start": 4},
        report(),
    ]
    assert started_after_give_up(run_of(events)).label == "2"
    assert started_after_give_up(run_of(events, status=None)).label == "—"


def test_jobs_after_sigint_count_from_the_parents_line() -> None:
    events: list[dict[str, object]] = [{"start": 1}, {"sigint": True}, {"start": 2}, report()]
    cell = started_after_sigint(run_of(events, workload=SIGINT))
    assert (cell.label, cell.verdict) == ("1", "bad")


def test_an_error_tied_to_the_wrong_input_is_not_counted_as_tied() -> None:
    errors = [
        {"job": 1, "given": 1, "traceback": True},
        {"job": 3, "given": 5, "traceback": True},
        {"job": 5, "given": None, "traceback": True},
    ]
    cell = tied_to_input(run_of([report(errors=errors)], workload=POST))
    assert (cell.label, cell.verdict) == ("1 of 3 (1 wrong)", "bad")


def test_death_by_sigint_shows_as_the_shells_130_and_a_clean_exit_after_it_is_bad() -> None:
    assert exit_status(run_of([], status=-2, workload=SIGINT)).label == "130"
    assert exit_status(run_of([], status=0, workload=SIGINT)).verdict == "bad"


def test_what_is_left_running_names_threads_processes_and_orphans() -> None:
    alive = report(caller="raised", threads=["worker-1"], processes=[11, 12])
    cell = left_running(run_of([alive], workload=SIGINT, orphans=1))
    assert (cell.label, cell.verdict) == ("1 thread, 2 processes, 1 orphan", "bad")
    assert left_running(run_of([report()], workload=SIGINT)).label == "none"


def test_a_process_that_died_without_unwinding_leaves_only_orphans_and_goroutines_are_named() -> (
    None
):
    # A Go program killed by SIGINT writes no report: nothing of it runs on, but orphans can.
    assert left_running(run_of([], status=-2, workload=SIGINT)).label == "none"
    assert left_running(run_of([], status=-2, workload=SIGINT, orphans=1)).label == "1 orphan"
    alive: dict[str, object] = {"caller": "returned", "goroutines": ["goroutine 7"] * 2}
    cell = left_running(run_of([alive], workload=SIGINT))
    assert (cell.value, cell.label) == ("2 goroutines, 0 orphans", "2 goroutines")


def test_an_error_with_no_stack_at_all_says_so_and_counts_as_not_kept() -> None:
    errors = [{"job": 1, "given": 1, "traceback": None}, {"job": 3, "given": 3, "traceback": None}]
    cell = traceback_kept(run_of([report(errors=errors)], workload=POST))
    assert (cell.label, cell.verdict) == ("no (no stack)", "bad")
    # One stack lost among errors that had none is a plain count.
    errors[0]["traceback"] = False
    assert traceback_kept(run_of([report(errors=errors)], workload=POST)).label == "no"


def test_a_job_that_exits_some_other_way_than_systemexit_is_named_in_its_cell() -> None:
    events: list[dict[str, object]] = [{"start": 1}, {"start": 2}, {"end": 2, "outcome": "panic"}]
    assert system_exit(run_of(events, status=2, workload=SYSTEM_EXIT)).label == (
        "panic: exits 2; 2 of 9 ran"
    )
    events[2]["outcome"] = "SystemExit"
    assert (
        system_exit(run_of(events, status=3, workload=SYSTEM_EXIT)).label == "exits 3; 2 of 9 ran"
    )


# --- What a finished run left behind. ---

FORKSERVER_USER = """
from plots.start_method import start_the_forkserver

if __name__ == "__main__":
    start_the_forkserver()
    print("ready", flush=True)
    input()
"""


def test_multiprocessing_helpers_are_known_by_their_command_lines() -> None:
    # A program in a session of its own, with its forkserver (and the resource tracker that
    # starts with it), as a matrix run that uses a process pool has them.
    program = subprocess.Popen(
        [sys.executable, "-c", FORKSERVER_USER],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert program.stdout is not None and program.stdout.readline() == "ready\n"
        members = group_members(program.pid)
        helpers = [command for command in members if multiprocessing_helper(command)]
        assert len(members) == 3 and len(helpers) == 2, members
        assert not multiprocessing_helper(f"{sys.executable} -c {FORKSERVER_USER}")
    finally:
        kill_group(program.pid)
        program.wait()


def members_in_turn(*turns: list[str]) -> Iterator[list[str]]:
    yield from turns
    while True:
        yield []


def test_helpers_get_time_to_end_and_anything_else_left_is_an_orphan_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plots.failures_measure, "ORPHAN_GRACE_SECONDS", 0.0)
    helper = "python -c from multiprocessing.forkserver import main; main(5, 7)"
    # Helpers that end on their own, later than the grace for other processes: no orphan.
    turns = members_in_turn([helper], [helper], [helper])
    monkeypatch.setattr(plots.failures_measure, "group_members", lambda group: next(turns))
    assert left_behind(1) == 0
    # Anything else is counted as it is found, helpers with it.
    turns = members_in_turn(["sleep 30", helper], [])
    monkeypatch.setattr(plots.failures_measure, "group_members", lambda group: next(turns))
    assert left_behind(1) == 2
    # A process on its way out (no command line any more) is given the same time.
    turns = members_in_turn([EXITING, helper], [EXITING], [EXITING])
    monkeypatch.setattr(plots.failures_measure, "group_members", lambda group: next(turns))
    assert left_behind(1) == 0
    # A helper still there after its grace is left behind too.
    monkeypatch.setattr(plots.failures_measure, "HELPER_GRACE_SECONDS", 0.2)
    monkeypatch.setattr(plots.failures_measure, "group_members", lambda group: [helper])
    assert left_behind(1) == 1


# --- Wiring, the docs' table, the child's command line. ---


def test_measure_all_hands_the_failures_benchmark_its_sizes_and_draw_all_draws_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wiring alone: measure_all hands the sizes to measure_failures (replaced here by a
    # stand-in; the real one is measured above), writes its CSV and metadata, and draw_all
    # draws them.
    seen: list[tuple[float, float, int]] = []
    go_given: list[GoPrograms] = []

    def stand_in(
        job_seconds: float,
        sigint_job_seconds: float,
        parallel: int,
        progress_for: Callable[[int], Quiet],
        go: GoPrograms,
    ) -> list[dict[str, object]]:
        seen.append((job_seconds, sigint_job_seconds, parallel))
        go_given.append(go)
        return [
            {
                "contender": "robust",
                "kind": "stage",
                "workload": "the post's run",
                "workers": 3,
                "job_seconds": job_seconds,
                "timeout_seconds": 4.0,
                "property": "finishes",
                "value": "finishes",
                "label": "yes",
                "verdict": "good",
            }
        ]

    monkeypatch.setattr(plots.measure, "measure_failures", stand_in)
    sizes = dataclasses.replace(Sizes.quick(), benchmarks=("failures",))
    measure_all(tmp_path, sizes)
    written = draw_all(tmp_path)

    assert seen == [(0.1, 0.2, sizes.failures_parallel_runs)]
    assert "failures" in Sizes.quick().benchmarks
    assert [path.name for path in written] == ["failures.png"]
    about = json.loads((tmp_path / "failures.json").read_text())
    assert about["mode"] == "quick"
    # The Go rows' program, built once for the run, and its version (or why not) in the metadata.
    (go,) = go_given
    assert about["go"] == (GO_FOUND.version if GO_FOUND else None)
    assert ("failures" in go.executables) == (GO_FOUND is not None)


def test_the_markdown_table_has_a_row_per_contender_and_marks_bad_cells(
    measured: tuple[Path, Path],
) -> None:
    rows = read_rows(measured[0] / "failures.csv")
    lines = markdown_table(rows).splitlines()
    contenders = list(dict.fromkeys(row["contender"] for row in rows))
    assert len(lines) == 2 + len(contenders)
    bad = next(row for row in rows if row["verdict"] == "bad")
    line = next(line for line in lines if line.startswith(f"| {bad['contender']} |"))
    assert f"**{bad['label']}**" in line


def test_the_child_runner_has_help() -> None:
    completed = run_module("plots.failures_child", "--help")
    assert completed.returncode == 0
    assert completed.stdout.startswith("usage: python -m plots.failures_child")


REFERENCE = REPO_ROOT / "plots" / "reference" / "failures.csv"
# Rows added to the matrix since plots/reference was last measured: the next reference run
# measures them, and this set is emptied with it (the test below fails until it is).
NOT_YET_IN_THE_REFERENCE: set[str] = set()


# The page of the docs that holds the whole table (the README shows the figure).
FAILURE_MATRIX_PAGE = REPO_ROOT / "docs" / "failure-matrix.md"


def test_the_docs_table_is_the_reference_data() -> None:
    table = markdown_table(read_rows(REFERENCE))
    assert table in FAILURE_MATRIX_PAGE.read_text()


def test_the_reference_run_was_quick_mode_and_says_so_in_the_docs() -> None:
    about = json.loads(REFERENCE.with_suffix(".json").read_text())
    assert about["mode"] == "quick"
    page = FAILURE_MATRIX_PAGE.read_text()
    assert f"commit {about['commit']}" in page
    assert "quick mode" in page
    with REFERENCE.open(newline="") as file:
        rows = list(csv.DictReader(file))
    in_the_reference = list(dict.fromkeys(row["contender"] for row in rows))
    assert in_the_reference == [
        contender.name for contender in MATRIX if contender.name not in NOT_YET_IN_THE_REFERENCE
    ]
    assert len(rows) == len(in_the_reference) * len(PROPERTIES)
