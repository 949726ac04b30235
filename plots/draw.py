"""Drawing: reads the CSV and JSON files that `plots.measure` wrote, and draws one PNG each.

Nothing here measures. Every point is the median of its repeats; error bars span the fastest to
the slowest repeat.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no screen needed
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Patch, Rectangle

Row = dict[str, str]

# One colour per implementation, the same in every figure; the three stages in blues.
COLOURS = {
    "plain loop": "#555555",
    "hand-written threads, static split": "#000000",
    "naive": "#9ecae1",
    "errors_channel": "#4292c6",
    "robust": "#08306b",
    "beyond": "#e7298a",
    "beyond, streamed": "#e7298a",
    "ThreadPoolExecutor.map": "#e6550d",
    "ThreadPoolExecutor.map, buffersize": "#fdae6b",
    "asyncio (TaskGroup + Semaphore)": "#31a354",
    "multiprocessing map, chunksize 1": "#756bb1",
    "multiprocessing map, 4 chunks/worker": "#bcbddc",
}
SUCCESS, ERROR, BLOCKED = "#31a354", "#de2d26", "#bdbdbd"


def read_rows(path: Path) -> list[Row]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def spread(values: Iterable[float]) -> tuple[float, float, float]:
    """(median, median - min, max - median): a point and its error bar."""
    ordered = sorted(values)
    middle = statistics.median(ordered)
    return middle, middle - ordered[0], ordered[-1] - middle


def grouped(rows: list[Row], *keys: str) -> dict[tuple[str, ...], list[Row]]:
    groups: dict[tuple[str, ...], list[Row]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[key] for key in keys)].append(row)
    return groups


def caption(meta: dict[str, object]) -> str:
    return (
        f"Python {meta['python']} on {meta['platform']}, {meta['cpu_count']} CPUs; "
        f"{meta['mode']} mode, commit {meta['commit']}, {meta['date']}"
    )


def finish(figure: Figure, meta: dict[str, object], path: Path) -> None:
    # Keep a strip at the bottom for where the numbers came from, clear of axes and legends.
    engine = figure.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        engine.set(rect=(0, 0.03, 1, 0.97))
    figure.text(0.01, 0.005, caption(meta), fontsize=7, color="#666666", va="bottom")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_dispatch(rows: list[Row], meta: dict[str, object], path: Path) -> None:
    by_name = grouped(rows, "implementation")
    points = {
        name: spread(float(row["us_per_task"]) for row in group)
        for (name,), group in by_name.items()
    }
    floor = points.pop("plain loop")
    names = sorted(points, key=lambda name: points[name][0], reverse=True)
    figure, axes = plt.subplots(figsize=(8, 4.2), layout="constrained")
    medians = [points[name][0] for name in names]
    axes.barh(
        names,
        medians,
        xerr=[[points[n][1] for n in names], [points[n][2] for n in names]],
        color=[COLOURS.get(name, "#999999") for name in names],
        capsize=3,
    )
    for y, name in enumerate(names):
        median, _, above = points[name]
        axes.text((median + above) * 1.12, y, f"{median:.2f} µs", va="center", fontsize=8)
    axes.axvline(
        floor[0],
        color=COLOURS["plain loop"],
        linestyle="--",
        linewidth=1,
        label=f"floor: a plain loop calling the task, {floor[0]:.2f} µs",
    )
    axes.legend(fontsize=8, loc="upper right")
    axes.set_xscale("log")
    axes.set_xlim(floor[0] / 2, max(medians) * 6)
    first = rows[0]
    axes.set_xlabel("time per no-op task, µs (log scale; median, bars: min-max)")
    axes.set_title(
        f"Dispatch overhead: {int(first['tasks']):,} no-op tasks, {first['workers']} workers"
    )
    finish(figure, meta, path)


def line_chart(
    axes: Axes,
    rows: list[Row],
    value: Callable[[Row], float],
    names: Iterable[str] | None = None,
) -> None:
    """One line per implementation: median of `value` against workers, with min-max bars."""
    groups = grouped(rows, "implementation", "workers")
    for name in names or dict.fromkeys(row["implementation"] for row in rows):
        workers = sorted({int(w) for (n, w) in groups if n == name})
        if not workers:
            continue
        stats = [spread(value(row) for row in groups[(name, str(w))]) for w in workers]
        axes.errorbar(
            workers,
            [s[0] for s in stats],
            yerr=[[s[1] for s in stats], [s[2] for s in stats]],
            label=name,
            color=COLOURS.get(name),
            marker="o",
            markersize=4,
            capsize=3,
            linewidth=2.2 if name == "robust" else 1.4,
        )


def draw_io(rows: list[Row], meta: dict[str, object], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 4.8), layout="constrained")
    line_chart(axes, rows, lambda row: float(row["efficiency"]))
    axes.axhline(1.0, color="#999999", linewidth=1, linestyle=":")
    axes.axhline(
        0.8, color=COLOURS["robust"], linewidth=1, linestyle="--", label="robust's target at 64"
    )
    axes.set_xscale("log", base=2)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("workers (log scale); each runs 20 tasks that sleep 1 ms")
    axes.set_ylabel("efficiency = ideal / measured time")
    axes.set_title("I/O-bound scaling: how close to ceil(n / workers) x 1 ms")
    figure.legend(fontsize=8, loc="outside right upper")
    finish(figure, meta, path)


def draw_cpu(rows: list[Row], meta: dict[str, object], path: Path) -> None:
    serial = statistics.median(
        float(row["seconds"]) for row in rows if row["implementation"] == "plain loop"
    )
    pools = [row for row in rows if row["implementation"] != "plain loop"]
    figure, axes = plt.subplots(figsize=(8, 4.8), layout="constrained")
    line_chart(axes, pools, lambda row: serial / float(row["seconds"]))
    cpus = int(str(meta["cpu_count"]))
    axes.axvline(cpus, color="#999999", linestyle="--", linewidth=1, label=f"{cpus} CPUs here")
    axes.axhline(1.0, color="#999999", linewidth=1, linestyle=":")
    axes.set_ylim(0, None)
    axes.set_xlabel("workers")
    axes.set_ylabel("speedup over a plain loop (times)")
    first = pools[0]
    axes.set_title(f"CPU-bound: {first['tasks']} tasks of pure Python, about 1 ms each")
    figure.legend(fontsize=8, loc="outside right upper")
    finish(figure, meta, path)


def draw_deadlock_map(rows: list[Row], meta: dict[str, object], path: Path) -> None:
    capacities = sorted({int(row["error_capacity"]) for row in rows})
    failing = sorted({int(row["failing_jobs"]) for row in rows})
    colours = {"finished": SUCCESS, "deadlock (watchdog)": ERROR, "deadlock (timeout)": "#67000d"}
    figure, axes = plt.subplots(figsize=(8, 5.6), layout="constrained")
    for row in rows:
        x, y = failing.index(int(row["failing_jobs"])), capacities.index(int(row["error_capacity"]))
        axes.add_patch(
            Rectangle((x - 0.5, y - 0.5), 1, 1, color=colours[row["outcome"]], ec="white")
        )
    # Theory: deadlock exactly when failing jobs > error capacity. The boundary runs between
    # failing == capacity (finishes) and failing == capacity + 1 (deadlocks).
    steps_x, steps_y = [], []
    for y, capacity in enumerate(capacities):
        boundary = sum(1 for f in failing if f <= capacity) - 0.5
        steps_x += [boundary, boundary]
        steps_y += [y - 0.5, y + 0.5]
    axes.plot(steps_x, steps_y, color="black", linewidth=2.5, label="theory: failing > capacity")
    axes.set_xticks(range(len(failing)), [str(f) for f in failing])
    axes.set_yticks(range(len(capacities)), [str(c) for c in capacities])
    axes.set_xlim(-0.5, len(failing) - 0.5)
    axes.set_ylim(-0.5, len(capacities) - 0.5)
    axes.set_xlabel(f"failing jobs (of {rows[0]['jobs']}; results queue holds them all)")
    axes.set_ylabel("errors queue capacity (0 = unbuffered)")
    axes.set_title("Stage 2 (3 workers), observed: finished or deadlocked")
    handles = [Patch(color=colour, label=label) for label, colour in colours.items()]
    figure.legend(
        handles=[*handles, *axes.get_legend_handles_labels()[0]],
        fontsize=8,
        loc="outside right upper",
    )
    finish(figure, meta, path)


def draw_timelines(rows: list[Row], meta: dict[str, object], path: Path) -> None:
    runs = list(dict.fromkeys(row["run"] for row in rows))
    figure, all_axes = plt.subplots(
        len(runs), 1, figsize=(8, 1.5 + 1.3 * len(runs)), layout="constrained", sharex=True
    )
    for axes, run in zip(all_axes, runs, strict=True):
        mine = [row for row in rows if row["run"] == run]
        workers = sorted({row["worker"] for row in mine if row["worker"]}, reverse=True)
        for row in mine:
            start, end = float(row["start"]), float(row["end"])
            if row["kind"] == "deadlock reported":
                axes.axvline(start, color="black", linewidth=1.5)
                axes.text(start, len(workers) - 0.45, " deadlock reported", fontsize=8, va="top")
                continue
            y = workers.index(row["worker"])
            if row["kind"].startswith("blocked"):
                axes.barh(y, end - start, left=start, color=BLOCKED, hatch="//", height=0.6)
                axes.text(
                    start + 0.02,
                    y,
                    row["kind"],
                    fontsize=7,
                    va="center",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
                )
                continue
            colour = SUCCESS if row["kind"] == "success" else ERROR
            axes.barh(y, end - start, left=start, color=colour, height=0.6, edgecolor="white")
            axes.text((start + end) / 2, y, row["job"], fontsize=8, ha="center", va="center")
        axes.set_yticks(range(len(workers)), workers)
        axes.set_title(run, fontsize=10, loc="left")
    all_axes[-1].set_xlabel(
        "seconds since the run started (each stage's demo: a row per worker, a bar per job)"
    )
    figure.legend(
        handles=[
            Patch(color=SUCCESS, label="job succeeded"),
            Patch(color=ERROR, label="job failed"),
            Patch(facecolor=BLOCKED, hatch="//", label="blocked on a full queue"),
        ],
        fontsize=8,
        loc="outside upper center",
        ncols=3,
    )
    finish(figure, meta, path)


def draw_memory(rows: list[Row], meta: dict[str, object], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 4.8), layout="constrained")
    groups = grouped(rows, "implementation", "tasks")
    for name in dict.fromkeys(row["implementation"] for row in rows):
        counts = sorted({int(t) for (n, t) in groups if n == name})
        stats = [
            spread(float(r["peak_rss_growth_mib"]) for r in groups[(name, str(t))]) for t in counts
        ]
        axes.errorbar(
            counts,
            [max(s[0], 0.1) for s in stats],
            yerr=[[s[1] for s in stats], [s[2] for s in stats]],
            label=name,
            color=COLOURS.get(name),
            marker="o",
            markersize=4,
            capsize=3,
            linewidth=2.2 if name.startswith("beyond") else 1.4,
        )
    axes.axhline(
        16, color=COLOURS["beyond"], linewidth=1, linestyle="--", label="beyond's target: 16 MiB"
    )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(f"no-op tasks in the run (log scale), {rows[0]['workers']} workers")
    axes.set_ylabel("peak resident memory added by the run, MiB (log scale)")
    title = "Memory: what a run of n tasks holds at its peak"
    if not meta.get("map_buffersize"):
        title += f"\n(map with buffersize needs Python 3.14; absent on {meta['python']})"
    axes.set_title(title)
    figure.legend(fontsize=8, loc="outside right upper")
    finish(figure, meta, path)


def draw_stop(rows: list[Row], meta: dict[str, object], path: Path) -> None:
    by_name = grouped(rows, "implementation")
    names = [name for (name,) in by_name]
    points = [
        spread(float(r["task_durations_after_nth_failure"]) for r in by_name[(n,)]) for n in names
    ]
    figure, axes = plt.subplots(figsize=(8, 3.2), layout="constrained")
    axes.barh(
        names,
        [p[0] for p in points],
        xerr=[[p[1] for p in points], [p[2] for p in points]],
        color=[COLOURS.get(name, "#999999") for name in names],
        capsize=3,
    )
    for y, (median, _, above) in enumerate(points):
        axes.text(median + above + 0.1, y, f"{median:.2f}", va="center", fontsize=8)
    axes.axvline(1.0, color="#999999", linestyle="--", linewidth=1, label="one task duration")
    axes.legend(fontsize=8, loc="lower right")
    first = rows[0]
    axes.set_xlabel(
        f"time from the {first['max_errors']}th failure to run() returning, in task durations"
        f" ({float(first['task_seconds']) * 1000:.0f} ms)"
    )
    axes.set_title(
        f"Stopping at {first['max_errors']} errors: {first['tasks']} tasks, every second one "
        f"failing, {first['workers']} workers"
    )
    finish(figure, meta, path)


DRAWERS: dict[str, Callable[[list[Row], dict[str, object], Path], None]] = {
    "dispatch": draw_dispatch,
    "io": draw_io,
    "cpu": draw_cpu,
    "deadlock_map": draw_deadlock_map,
    "timeline": draw_timelines,
    "memory": draw_memory,
    "stop": draw_stop,
}


def draw_all(out_dir: Path) -> list[Path]:
    """Draw every figure whose CSV is in out_dir; return the PNGs written."""
    written = []
    for name, draw in DRAWERS.items():
        data = out_dir / f"{name}.csv"
        if not data.exists():
            continue
        about = out_dir / f"{name}.json"
        if not about.exists():
            raise FileNotFoundError(f"{about} is missing: measure again (python -m plots)")
        draw(read_rows(data), json.loads(about.read_text()), out_dir / f"{name}.png")
        written.append(out_dir / f"{name}.png")
    return written
