"""The Go programs in go/: Go's stage 2 deadlocks where the post says and the runtime reports it;
Go's pool keeps every error; the Go benchmark's results pass the harness's check; and without Go
the benchmarks say the Go pool is missing instead of failing.

Every test that needs Go skips, saying so, when there is no `go` on PATH. The programs are built
once per session into a temporary folder; Go's build cache keeps the compiled packages between
sessions, so a build after the first mostly links.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import NEEDS_PLOTS

try:
    import matplotlib.text
    from matplotlib.figure import Figure
except ModuleNotFoundError:
    pytest.skip(NEEDS_PLOTS, allow_module_level=True)

import plots.draw
import plots.golang
from plots.contenders import ROBUST
from plots.golang import GoBenchmark, GoBuildFailed, build, environment, find_go, go_pool
from plots.measure import Sizes, measure_all
from plots.workloads import NO_OP, SLEEP_1MS, Workload, check, cpu_workload

GO = find_go()
NO_GO = "Go not found on PATH: install it (apt-get install golang-go) to run the Go programs' tests"
needs_go = pytest.mark.skipif(GO is None, reason=NO_GO)

TRACE_LINE = re.compile(r"worker (\d+) processing job (\d+)")
TASK_LINE = re.compile(r"processing job (\d+)")
# The line in go/errors_channel/main.go where a worker sends its error (marked DEADLOCK there).
ERROR_SEND = 'errs <- fmt.Errorf("error on job %d", job)'
STAGE_2_SOURCE = (plots.golang.GO_MODULE / "errors_channel" / "main.go").read_text().splitlines()


@pytest.fixture(scope="session")
def go_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if GO is None:
        pytest.skip(NO_GO)
    return build(GO, tmp_path_factory.mktemp("go-programs"))


def run(program: Path, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def jobs_in(stdout: str, trace: re.Pattern[str] = TRACE_LINE) -> list[int]:
    """The job numbers of the trace lines, sorted (the order varies from run to run)."""
    return sorted(
        int(m[m.lastindex or 0]) for line in stdout.splitlines() if (m := trace.fullmatch(line))
    )


def line_of(code: str) -> int:
    """The line number of the one line in go/errors_channel/main.go that holds `code`."""
    (number,) = [n for n, line in enumerate(STAGE_2_SOURCE, start=1) if line.strip() == code]
    return number


# --- Stage 2 in Go: the deadlock, as the runtime reports it ---


@pytest.mark.parametrize("work_seconds", ["0", "0.01"])
def test_go_stage_2_with_error_capacity_1_processes_jobs_1_to_7_then_the_runtime_reports_deadlock(
    go_programs: dict[str, Path], work_seconds: str
) -> None:
    completed = run(
        go_programs["errors_channel"], "--error-capacity", "1", "--work-seconds", work_seconds
    )

    assert completed.returncode == 2, completed.stderr
    assert jobs_in(completed.stdout) == list(range(1, 8))
    report = completed.stderr
    assert report.startswith("fatal error: all goroutines are asleep - deadlock!\n")
    blocks = [block for block in report.split("\n\n")[1:] if block.strip()]
    (main,) = [block for block in blocks if block.startswith("goroutine 1 [semacquire]:")]
    assert "sync.(*WaitGroup).Wait" in main
    assert f"/errors_channel/main.go:{line_of('wg.Wait()')} " in main
    # Every worker, stuck on the line that sends its error (and none anywhere else).
    sends_error = f"/errors_channel/main.go:{line_of(ERROR_SEND)} "
    workers = [block for block in blocks if not block.startswith("goroutine 1 ")]
    assert len(workers) == 3
    assert all("[chan send]:" in block and sends_error in block for block in workers)


@pytest.mark.parametrize(
    ("error_capacity", "results_capacity", "deadlocks"),
    [
        # Jobs 1..9: five fail, four succeed. A deadlock exactly when either channel lacks room.
        (5, 4, False),
        (4, 4, True),
        (0, 4, True),
        (5, 3, True),
        (5, 0, True),
        (100, 100, False),
    ],
)
def test_go_stage_2_deadlocks_exactly_when_a_channel_has_less_room_than_its_items(
    go_programs: dict[str, Path], error_capacity: int, results_capacity: int, deadlocks: bool
) -> None:
    completed = run(
        go_programs["errors_channel"],
        *("--error-capacity", str(error_capacity), "--results-capacity", str(results_capacity)),
        *("--work-seconds", "0"),
    )

    assert completed.returncode == (2 if deadlocks else 0), completed.stderr
    assert ("all goroutines are asleep - deadlock!" in completed.stderr) == deadlocks
    if not deadlocks:
        assert jobs_in(completed.stdout) == list(range(1, 10))
        # The post's main reads one error of the five and drops the rest.
        last_line = completed.stdout.splitlines()[-1]
        assert re.fullmatch(r"finished with error: error on job [13579]", last_line)


# --- Stages 1 and 3 in Go ---


def test_go_naive_pool_processes_every_job_once_and_returns_it_doubled(
    go_programs: dict[str, Path],
) -> None:
    completed = run(go_programs["naive"], "--jobs", "20", "--workers", "4", "--work-seconds", "0")

    assert completed.returncode == 0, completed.stderr
    assert jobs_in(completed.stdout) == list(range(1, 21))
    results = completed.stdout.splitlines()[-1].removeprefix("results: ").split()
    assert sorted(int(result) for result in results) == [2 * job for job in range(1, 21)]


def test_go_robust_pool_keeps_every_error_on_its_task(go_programs: dict[str, Path]) -> None:
    completed = run(go_programs["robust"], "--work-seconds", "0.01")

    # Five of nine tasks failed: exit status 1, every error reported, every task run once.
    assert completed.returncode == 1, completed.stderr
    assert jobs_in(completed.stdout, TASK_LINE) == list(range(1, 10))
    errors = [line for line in completed.stdout.splitlines() if line.startswith("task ")]
    assert errors == [f"task {job}: error on job {job}" for job in (1, 3, 5, 7, 9)]
    assert completed.stdout.splitlines()[-1] == "finished: 4 results [4 8 12 16], 5 errors"


def test_go_robust_caller_gives_up_at_ten_errors_though_every_task_ran(
    go_programs: dict[str, Path],
) -> None:
    completed = run(go_programs["robust"], "--jobs", "30", "--work-seconds", "0")

    assert completed.returncode == 1, completed.stderr
    assert jobs_in(completed.stdout, TASK_LINE) == list(range(1, 31))
    lines = completed.stdout.splitlines()
    errors = [line for line in lines if line.startswith("task ")]
    # Met in task order, logged as met, and the walk stops at the tenth.
    assert errors == [f"task {job}: error on job {job}" for job in range(1, 20, 2)]
    assert lines[-1] == "Too many errors."


def test_go_unit_tests_pass_for_the_pool_and_the_errgroup() -> None:
    if GO is None:
        pytest.skip(NO_GO)
    completed = subprocess.run(
        [GO.go, "test", "-timeout", "60s", "./..."],
        cwd=plots.golang.GO_MODULE,
        capture_output=True,
        text=True,
        env=environment(),
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "ok  \tworkerpool/robust/pool" in completed.stdout
    assert "ok  \tworkerpool/errgroup" in completed.stdout


def test_go_sources_are_gofmt_and_vet_clean() -> None:
    if GO is None:
        pytest.skip(NO_GO)
    gofmt = Path(GO.go).resolve().parent / "gofmt"
    listed = subprocess.run(
        [str(gofmt), "-l", "."],
        cwd=plots.golang.GO_MODULE,
        capture_output=True,
        text=True,
        check=True,
    )
    assert listed.stdout == "", f"not gofmt'd: {listed.stdout}"
    vetted = subprocess.run(
        [GO.go, "vet", "./..."],
        cwd=plots.golang.GO_MODULE,
        capture_output=True,
        text=True,
        env=environment(),
        timeout=120,
        check=False,
    )
    assert vetted.returncode == 0, vetted.stderr


@pytest.mark.parametrize("program", plots.golang.PROGRAMS)
def test_every_go_program_has_help_and_refuses_bad_input_on_one_line(
    go_programs: dict[str, Path], program: str
) -> None:
    helped = run(go_programs[program], "--help")
    assert helped.returncode == 0
    assert helped.stdout.startswith(f"usage: {program} ")

    for bad in (["--jobs", "-1"], ["--workers", "0"], ["--frobnicate"], ["stray"]):
        refused = run(go_programs[program], *bad)
        assert refused.returncode == 2, bad
        assert len(refused.stderr.splitlines()) == 1, refused.stderr
        assert refused.stderr.startswith(f"{program}: error: "), refused.stderr


# --- The Go benchmark program, as the harness runs it ---


@pytest.mark.parametrize("workload", [NO_OP, SLEEP_1MS])
def test_go_benchmark_returns_every_job_doubled_and_its_own_time(
    go_programs: dict[str, Path], workload: Workload
) -> None:
    results, seconds = GoBenchmark(go_programs["bench"]).run_timed(workload, 200, 8)

    check(results, 200, "Go pool")
    assert seconds > 0


def test_go_benchmark_refuses_a_workload_it_does_not_have(go_programs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="no-op and the 1 ms sleep"):
        GoBenchmark(go_programs["bench"]).run_timed(cpu_workload(10), 4, 2)
    refused = run(go_programs["bench"], "--workload", "cpu")
    assert refused.returncode == 2
    assert 'must be one of ["no-op" "sleep-1ms"], got "cpu"' in refused.stderr


TINY_GO_RUN = dataclasses.replace(Sizes.tiny(), benchmarks=("dispatch", "io"))


@needs_go
def test_the_go_pool_joins_dispatch_and_io_labelled_with_its_version(tmp_path: Path) -> None:
    assert GO is not None
    measure_all(tmp_path, TINY_GO_RUN, contenders=[ROBUST])

    label = f"Go {GO.release} pool (goroutines)"
    for name in ("dispatch", "io"):
        meta = json.loads((tmp_path / f"{name}.json").read_text())
        assert meta["go"] == GO.version
        assert "go_missing" not in meta
        rows = (tmp_path / f"{name}.csv").read_text().splitlines()
        go_rows = [row for row in rows if row.startswith(f"{label},goroutines,")]
        # Every repeat at every worker count, checked and recorded.
        worker_counts = 1 if name == "dispatch" else len(TINY_GO_RUN.io_workers)
        assert len(go_rows) == TINY_GO_RUN.repeats * worker_counts
    assert [path.name for path in plots.draw.draw_all(tmp_path)] == ["dispatch.png", "io.png"]


def texts_drawn(monkeypatch: pytest.MonkeyPatch, out_dir: Path) -> list[str]:
    """Draw every figure in out_dir; return all the text each figure holds when it is saved."""
    texts: list[str] = []
    finish = plots.draw.finish

    def finish_and_read(figure: Figure, meta: dict[str, object], path: Path) -> None:
        texts.extend(text.get_text() for text in figure.findobj(matplotlib.text.Text))
        finish(figure, meta, path)

    monkeypatch.setattr(plots.draw, "finish", finish_and_read)
    plots.draw.draw_all(out_dir)
    return texts


def test_without_go_the_figures_say_the_go_pool_was_not_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PATH with no go on it (nor anything else: the commit in the metadata becomes "unknown").
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "out"
    measure_all(out, TINY_GO_RUN, contenders=[ROBUST])

    for name in ("dispatch", "io"):
        meta = json.loads((out / f"{name}.json").read_text())
        assert meta["go"] is None
        assert "apt-get install golang-go" in meta["go_missing"]
        assert ",goroutines," not in (out / f"{name}.csv").read_text()
    texts = " ".join(texts_drawn(monkeypatch, out)).replace("\n", " ")
    assert texts.count("not measured: no go command on PATH") == 2


@needs_go
def test_a_go_pool_that_does_not_build_is_left_out_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "go"
    shutil.copytree(plots.golang.GO_MODULE, broken)
    pool_go = broken / "robust" / "pool" / "pool.go"
    pool_go.write_text(pool_go.read_text().replace("task.Err = task.f()", "task.Err = task.g()"))
    monkeypatch.setattr(plots.golang, "GO_MODULE", broken)

    assert GO is not None
    with pytest.raises(GoBuildFailed, match=re.escape("task.g undefined")):
        build(GO, tmp_path, ["bench"])
    with go_pool() as go:
        assert go.contender is None
        assert str(go.metadata["go_missing"]).startswith("go build failed (")
