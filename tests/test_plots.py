"""The benchmarks: a tiny run writes checked CSVs and real PNGs; a wrong run is never recorded."""

from __future__ import annotations

import csv
import dataclasses
import gc
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NEEDS_PLOTS, run_module

try:
    import matplotlib.image
    from matplotlib.figure import Figure
except ModuleNotFoundError:
    pytest.skip(NEEDS_PLOTS, allow_module_level=True)

import plots.draw
from plots.contenders import (
    ROBUST,
    STAGE,
    Contender,
)
from plots.draw import draw_all
from plots.implementations import run_robust
from plots.measure import Sizes, child_records, measure_all, timed_run
from plots.start_method import START_METHOD
from plots.workloads import NO_OP, Workload, WrongResults, check

EXPECTED_COLUMNS = {
    "dispatch": [
        "implementation",
        "runs_on",
        "workers",
        "tasks",
        "repeat",
        "seconds",
        "us_per_task",
    ],
    "io": [
        "implementation",
        "runs_on",
        "workers",
        "tasks",
        "repeat",
        "seconds",
        "ideal_seconds",
        "efficiency",
    ],
    "cpu": [
        "implementation",
        "runs_on",
        "workers",
        "task_seconds",
        "tasks",
        "iterations_per_task",
        "repeat",
        "seconds",
        # The plain loop timed just before this run: the speedup's own baseline.
        "loop_seconds",
    ],
    "deadlock_map": [
        "error_capacity",
        "failing_jobs",
        "jobs",
        "results_capacity",
        "outcome",
        "jobs_processed",
        "seconds",
    ],
    "timeline": ["run", "worker", "job", "start", "end", "kind"],
    "memory": ["implementation", "tasks", "workers", "repeat", "peak_rss_growth_mib", "seconds"],
    "stop": [
        "implementation",
        "workers",
        "tasks",
        "max_errors",
        "task_seconds",
        "repeat",
        "seconds_after_nth_failure",
        "task_durations_after_nth_failure",
        "seconds",
    ],
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plots")
    measure_all(out, Sizes.tiny())
    return out


def test_a_tiny_run_writes_every_csv_with_its_columns_and_metadata(tiny_run: Path) -> None:
    sizes = Sizes.tiny()
    for name, columns in EXPECTED_COLUMNS.items():
        header, rows = read_csv(tiny_run / f"{name}.csv")
        assert header == columns, name
        assert rows, name
        meta = json.loads((tiny_run / f"{name}.json").read_text())
        assert meta["mode"] == "tiny"
        assert {"python", "platform", "cpu_count", "commit", "date"} <= meta.keys()
        # How processes were started, where a contender started any.
        starts_processes = name in ("dispatch", "io", "cpu")
        assert meta.get("start_method") == (START_METHOD if starts_processes else None), name

    # Each CPU run carries the plain loop timed just before it: a run of its own, not the median.
    _, cpu = read_csv(tiny_run / "cpu.csv")
    loops = [row for row in cpu if row["implementation"] == "plain loop"]
    pools = [row for row in cpu if row["implementation"] != "plain loop"]
    assert all(row["loop_seconds"] == row["seconds"] for row in loops)
    assert all(float(row["loop_seconds"]) > 0 for row in pools)
    assert len({row["loop_seconds"] for row in pools}) == len(pools)

    _, dispatch = read_csv(tiny_run / "dispatch.csv")
    # Every implementation, every repeat, interleaved: repeat 1 of all before any repeat 2.
    assert [int(row["repeat"]) for row in dispatch] == sorted(
        int(row["repeat"]) for row in dispatch
    )
    assert len(dispatch) == sizes.repeats * len({row["implementation"] for row in dispatch})
    assert {"plain loop", "naive", "errors_channel", "robust"} <= {
        row["implementation"] for row in dispatch
    }


def test_the_deadlock_map_matches_the_theory(tiny_run: Path) -> None:
    _, cells = read_csv(tiny_run / "deadlock_map.csv")
    assert len(cells) == 4
    for cell in cells:
        deadlocks = int(cell["failing_jobs"]) > int(cell["error_capacity"])
        assert cell["outcome"] == ("deadlock (watchdog)" if deadlocks else "finished"), cell


def test_the_timeline_shows_stage_2_blocked_until_the_report(tiny_run: Path) -> None:
    _, rows = read_csv(tiny_run / "timeline.csv")
    deadlocked = [row for row in rows if row["run"] == "errors_channel, error capacity 1"]
    (report,) = [row for row in deadlocked if row["kind"] == "deadlock reported"]
    blocked = [row for row in deadlocked if row["kind"] == "blocked: queue put: errors"]
    assert {row["worker"] for row in blocked} == {"worker-1", "worker-2", "worker-3"}
    assert all(row["end"] == report["start"] for row in blocked)
    assert sorted(int(row["job"]) for row in deadlocked if row["job"]) == list(range(1, 8))
    for run in ("naive", "errors_channel", "robust"):
        jobs = sorted(int(row["job"]) for row in rows if row["run"] == run)
        assert jobs == list(range(1, 10)), run


def test_drawing_writes_real_pngs(tiny_run: Path) -> None:
    written = draw_all(tiny_run)

    assert [path.name for path in written] == [f"{name}.png" for name in EXPECTED_COLUMNS]
    for path in written:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        height, width, _ = matplotlib.image.imread(path).shape
        assert width >= 600 and height >= 300


def figure_texts(figure: Figure) -> list[str]:
    """Every piece of text a figure shows: titles, axis labels, legends, annotations."""
    texts = [text.get_text() for text in figure.texts]
    for legend in figure.legends:
        texts += [text.get_text() for text in legend.get_texts()]
    for axes in figure.axes:
        texts += [axes.get_title(loc) for loc in ("left", "center", "right")]
        texts += [axes.get_xlabel(), axes.get_ylabel()]
        texts += [text.get_text() for text in axes.texts]
        axes_legend = axes.get_legend()
        if axes_legend is not None:
            texts += [text.get_text() for text in axes_legend.get_texts()]
    return [text for text in texts if text]


def test_labels_come_from_the_datas_metadata_not_from_constants(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: dict[str, list[str]] = {}
    original_finish = plots.draw.finish

    def finish_and_keep_texts(figure: Figure, meta: dict[str, object], path: Path) -> None:
        original_finish(figure, meta, path)  # adds the caption, then saves
        shown[path.stem] = figure_texts(figure)

    monkeypatch.setattr(plots.draw, "finish", finish_and_keep_texts)
    for name in ("io", "cpu", "deadlock_map"):
        (tmp_path / f"{name}.csv").write_bytes((tiny_run / f"{name}.csv").read_bytes())
        (tmp_path / f"{name}.json").write_bytes((tiny_run / f"{name}.json").read_bytes())

    draw_all(tmp_path)
    tiny = " | ".join(shown["io"] + shown["cpu"] + shown["deadlock_map"])
    # Tiny mode: 3 tasks per worker, CPU tasks of 0.5 and 0.1 ms (a panel each), workers up to 4
    # (robust's target is at 64).
    assert "each runs 3 tasks" in tiny and "20 tasks" not in tiny
    assert "4 tasks of pure Python, about 0.5 ms each" in tiny
    assert "8 tasks of pure Python, about 0.1 ms each" in tiny
    assert "about 1 ms" not in tiny
    assert "Stage 2 (3 workers)" in tiny
    assert "target" not in tiny
    assert " | ".join(shown["cpu"]).count(f"processes started by {START_METHOD}") == 1
    assert "processes started by" not in " | ".join(shown["deadlock_map"])

    # Change the metadata alone, and the labels follow it.
    meta = json.loads((tmp_path / "io.json").read_text())
    meta["sizes"] |= {"io_tasks_per_worker": 7, "io_target_workers": 4, "io_target_efficiency": 0.5}
    (tmp_path / "io.json").write_text(json.dumps(meta))
    # CPU data from before the 0.1 ms workload: no task_seconds column, one size in the metadata.
    header, rows = read_csv(tmp_path / "cpu.csv")
    with (tmp_path / "cpu.csv").open("w", newline="") as file:
        kept = [column for column in header if column != "task_seconds"]
        writer = csv.DictWriter(file, kept, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    meta = json.loads((tmp_path / "cpu.json").read_text())
    del meta["sizes"]["cpu_workloads"]
    meta["sizes"]["cpu_task_seconds"] = 0.0025
    meta["start_method"] = "spawn"
    (tmp_path / "cpu.json").write_text(json.dumps(meta))
    meta = json.loads((tmp_path / "deadlock_map.json").read_text())
    meta["sizes"]["map_workers"] = 5
    (tmp_path / "deadlock_map.json").write_text(json.dumps(meta))

    draw_all(tmp_path)
    changed = " | ".join(shown["io"] + shown["cpu"] + shown["deadlock_map"])
    assert "each runs 7 tasks" in changed
    assert "robust's target: 0.5 at 4 workers" in changed
    assert "about 2.5 ms each" in changed
    assert "processes started by spawn" in changed
    assert "Stage 2 (5 workers)" in changed


def test_an_out_folder_that_cannot_hold_files_is_refused_before_measuring() -> None:
    # /proc/self exists, so mkdir is happy, but no file can be created in it.
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc")

    completed = run_module("plots", "--only", "dispatch", "--out", "/proc/self")

    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        "python -m plots: error: cannot write files in --out /proc/self: No such file or directory"
    ]


def test_redraw_from_csv_works_without_measuring(tiny_run: Path, tmp_path: Path) -> None:
    for name in EXPECTED_COLUMNS:
        for suffix in (".csv", ".json"):
            (tmp_path / f"{name}{suffix}").write_bytes((tiny_run / f"{name}{suffix}").read_bytes())

    completed = run_module("plots", "--redraw", "--out", str(tmp_path), timeout=120)

    assert completed.returncode == 0, completed.stderr
    for name in EXPECTED_COLUMNS:
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG_SIGNATURE
    # Redrawing measured nothing: the data files are as they were.
    for name in EXPECTED_COLUMNS:
        assert (tmp_path / f"{name}.csv").read_bytes() == (tiny_run / f"{name}.csv").read_bytes()


def test_redraw_with_nothing_to_draw_is_a_clear_error(tmp_path: Path) -> None:
    completed = run_module("plots", "--redraw", "--out", str(tmp_path))

    assert completed.returncode == 2
    assert "measure first" in completed.stderr
    assert "Traceback" not in completed.stderr


def off_by_one(work: Workload, job_count: int, workers: int) -> list[int]:
    """A broken pool: it loses the last job."""
    return run_robust(work, job_count, workers)[:-1]


def test_a_run_with_wrong_results_is_refused_not_recorded(tmp_path: Path) -> None:
    broken = Contender(
        "broken", kind=STAGE, runs_on="threads", figures=("dispatch",), run=off_by_one
    )
    sizes = dataclasses.replace(Sizes.tiny(), benchmarks=("dispatch",))

    with pytest.raises(WrongResults, match="broken"):
        measure_all(tmp_path, sizes, contenders=[ROBUST, broken])

    assert not (tmp_path / "dispatch.csv").exists()


def test_the_check_itself_accepts_right_and_refuses_swapped_results() -> None:
    assert sorted(run_robust(NO_OP, 50, 4)) == [2 * job for job in range(1, 51)]
    check([4, 2, 6], 3, "in any order")
    with pytest.raises(WrongResults):
        check([2, 2, 6], 3, "one doubled, one lost")


def test_a_child_that_exits_2_without_a_deadlock_report_is_not_counted_as_a_deadlock() -> None:
    # argparse exits with 2 too; only the watchdog's record makes an exit 2 a deadlock.
    with pytest.raises(RuntimeError, match="failed"):
        child_records(["deadlock-cell", "--jobs", "not-a-number"], timeout=30)


def cycle() -> list[object]:
    """One object that only the cyclic garbage collector can free, once dropped."""
    itself: list[object] = []
    itself.append(itself)
    return itself


def test_a_run_pays_for_its_own_cyclic_garbage_and_for_no_one_elses() -> None:
    collected_in_the_run: list[int] = []
    inside: list[bool] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and inside:
            collected_in_the_run.append(int(info["collected"]))

    def run_making_cycles(work: Workload, job_count: int, workers: int) -> list[int]:
        inside.append(True)  # from here until timed_run returns
        for _ in range(100):
            cycle()
        return [2 * job for job in range(1, job_count + 1)]

    # Garbage from before the run, in the oldest generation (unfreeze puts objects there), where
    # only a full collection finds it.
    before = [cycle() for _ in range(1_000)]
    gc.freeze()
    gc.unfreeze()
    del before
    making_cycles = Contender(
        "cycles", kind=STAGE, runs_on="none", figures=("dispatch",), run=run_making_cycles
    )
    gc.callbacks.append(note)
    try:
        timed_run(making_cycles, NO_OP, 3, 1)
    finally:
        gc.callbacks.remove(note)
        inside.clear()
    # The run's own 100 cycles, collected in its time; none of the 1,000 made before it.
    assert sum(collected_in_the_run) == 100
