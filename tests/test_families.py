"""The post's deadlock in multiprocessing and concurrent.futures: each hangs, each fix finishes.

Every hanging run is a real subprocess in a session of its own (tests/hanging.py): watched until it
is provably stuck, then killed with every process it started.
"""

from __future__ import annotations

import re
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from families import futures_nested
from families.__main__ import main
from families.futures_nested import run_nested, run_with_an_executor_per_step
from tests.conftest import REPO_ROOT, finish_within
from tests.hanging import HAS_PROC, run_to_the_end, run_until_stuck

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="watches processes through Linux's /proc")

FUTURES_SOURCE = (REPO_ROOT / "families" / "futures_nested.py").read_text().splitlines()
FIRST_STEP = re.compile(r"job (\d+): first step on (\S+)")
SECOND_STEP = re.compile(r"job (\d+): second step on (\S+)")


def line_of(code: str, in_function: str) -> int:
    """The line number of the first line holding `code` in a function of futures_nested.py."""
    numbered = list(enumerate(FUTURES_SOURCE, start=1))
    start = next(n for n, line in numbered if line.startswith(f"def {in_function}("))
    return next(n for n, line in numbered[start:] if line.strip() == code)


def jobs_in(pattern: re.Pattern[str], stdout: str) -> list[int]:
    return sorted(int(m[1]) for line in stdout.splitlines() if (m := pattern.fullmatch(line)))


def quiet(line: str) -> None:
    pass


# multiprocessing: join() before reading a queue that outgrew its pipe.


def test_joining_before_reading_hangs_once_the_items_outgrow_the_pipe() -> None:
    # The defaults: 2 workers put 50 items of 1,028 bytes each on the pipe; 48 fit here.
    stuck = run_until_stuck(
        "families",
        "multiprocessing-join",
        got_there=lambda out: out.count("put 50 items and returns") == 2 and "joining" in out,
    )

    assert "finished" not in stuck.stdout
    if stuck.waits is not None:
        # Main waits for a worker to end; the first worker's feeder thread is in write() on the
        # full pipe, the rest (its main thread, joining the feeder; the other worker) in futex.
        assert (stuck.pid, "wait4") in stuck.waits
        writers = [pid for pid, call in stuck.waits if call == "write"]
        assert len(writers) == 1 and writers[0] != stuck.pid
        assert {call for _, call in stuck.waits} == {"wait4", "write", "futex"}


def test_joining_before_reading_is_fine_while_the_items_fit_in_the_pipe() -> None:
    completed = run_to_the_end("families", "multiprocessing-join", "--workers", "1", "--items", "8")

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1] == "finished: 8 items, 8 from each worker"


@pytest.mark.parametrize(
    "size",
    [
        ["--workers", "2", "--items", "50"],  # the hanging defaults
        ["--workers", "3", "--items", "100", "--item-bytes", "20000"],  # 6 MB, about 90 pipes
    ],
)
def test_reading_before_joining_finishes_with_every_item_and_no_process_left(
    size: list[str],
) -> None:
    completed = run_to_the_end("families", "multiprocessing-join", *size, "--fix")

    assert completed.returncode == 0, completed.stderr
    workers, items = int(size[1]), int(size[3])
    # The demo itself checks every (worker, index) arrived exactly once and whole.
    assert completed.stdout.splitlines()[-1] == (
        f"finished: {workers * items} items, {items} from each worker"
    )


# concurrent.futures: a task waiting for another task of its own saturated executor.


def test_waiting_on_the_same_executor_hangs_once_jobs_fill_every_worker() -> None:
    # The demo's defaults: a first step works 0.3 s before it submits its second step, ample time
    # for main to queue every first step ahead of them, even on a loaded machine.
    stuck = run_until_stuck(
        "families",
        *("futures-nested", "--no-watchdog"),
        got_there=lambda out: len(jobs_in(FIRST_STEP, out)) == 3,
        settle=0.5,
    )

    # Three workers took the first steps of jobs 1 to 3; nobody ever ran a second step, and the
    # other six jobs never started.
    assert jobs_in(FIRST_STEP, stuck.stdout) == [1, 2, 3]
    assert jobs_in(SECOND_STEP, stuck.stdout) == []
    if stuck.waits is not None:
        # One process; main and the three workers all wait on a lock (a Condition's, in futex).
        assert [call for _, call in stuck.waits] == ["futex"] * 4


def test_watchdog_reports_main_and_every_worker_waiting_on_a_future() -> None:
    # Exactly as many jobs as workers is already enough.
    completed = run_to_the_end("families", "futures-nested", "--jobs", "3", timeout=15)

    assert completed.returncode == 2, completed.stderr
    report = completed.stderr
    assert report.startswith("fatal error: all threads are asleep - deadlock!\n")
    blocks = {block.splitlines()[0]: block for block in report.split("\n\n")[1:] if block.strip()}
    assert set(blocks) == {
        f"thread {name} [condition wait: self._condition]:"
        for name in ("MainThread", "worker_0", "worker_1", "worker_2")
    }
    wait_for_rest = f"families/futures_nested.py:{line_of('return rest.result()', 'first_step')}"
    for worker in ("worker_0", "worker_1", "worker_2"):
        lines = blocks[f"thread {worker} [condition wait: self._condition]:"].splitlines()
        assert lines[1:3] == ["families.futures_nested.first_step(...)", f"\t{wait_for_rest}"]
    main_wait = line_of("return [job.result() for job in jobs]", "run_nested")
    main_wait_at = f"families/futures_nested.py:{main_wait}"
    assert f"\t{main_wait_at}" in blocks["thread MainThread [condition wait: self._condition]:"]


def test_an_executor_per_step_finishes_every_job() -> None:
    completed = run_to_the_end("families", "futures-nested", "--work-seconds", "0.01", "--fix")

    assert completed.returncode == 0, completed.stderr
    assert jobs_in(FIRST_STEP, completed.stdout) == list(range(1, 10))
    assert jobs_in(SECOND_STEP, completed.stdout) == list(range(1, 10))
    assert completed.stdout.splitlines()[-2:] == [
        "results: 2 4 6 8 10 12 14 16 18",
        "finished: 9 results",
    ]


@given(job_count=st.integers(0, 12), worker_count=st.integers(1, 4))
def test_an_executor_per_step_finishes_at_any_size_and_leaves_no_thread(
    job_count: int, worker_count: int
) -> None:
    threads_before = set(threading.enumerate())
    results = finish_within(
        10, lambda: run_with_an_executor_per_step(job_count, worker_count, 0, quiet)
    )

    assert results == [2 * job for job in range(1, job_count + 1)]
    assert set(threading.enumerate()) == threads_before


@given(worker_count=st.integers(2, 6), data=st.data())
def test_waiting_on_the_same_executor_works_while_a_worker_stays_free(
    worker_count: int, data: st.DataObject
) -> None:
    job_count = data.draw(st.integers(0, worker_count - 1))
    results = finish_within(10, lambda: run_nested(job_count, worker_count, 0, quiet))

    assert results == [2 * job for job in range(1, job_count + 1)]


# The command line.


@pytest.mark.parametrize(
    "argv", [["--help"], ["multiprocessing-join", "--help"], ["futures-nested", "--help"]]
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m families")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["threads-everywhere"],
        ["multiprocessing-join", "--items", "-1"],
        ["multiprocessing-join", "--item-bytes", "lots"],
        ["multiprocessing-join", "--items", "1000", "--item-bytes", "1000000"],
        ["multiprocessing-join", "--workers", "1000"],
        ["futures-nested", "--workers", "0"],
        ["futures-nested", "--fix=yes"],
    ],
)
def test_bad_input_is_refused_on_one_line_with_status_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1
    assert error.startswith("python -m families")


def test_sample_reports_point_at_the_lines_that_block() -> None:
    # The sample reports in futures_nested's docstring and in the docs (the same bug elsewhere)
    # must still name the waits they captured, or they teach the wrong line.
    waits = {
        line_of("return rest.result()", "first_step"),
        line_of("return [job.result() for job in jobs]", "run_nested"),
    }
    page = (REPO_ROOT / "docs" / "same-bug-elsewhere.md").read_text()
    for text in (futures_nested.__doc__ or "", page):
        shown = {int(n) for n in re.findall(r"families/futures_nested\.py:(\d+)", text)}
        assert shown and shown <= waits
