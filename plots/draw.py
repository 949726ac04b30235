"""Drawing: reads the CSV and JSON files that `plots.measure` wrote, and draws one PNG each.

Nothing here measures. Every point is the median of its repeats; error bars span the fastest to
the slowest repeat. Each contender has its colour in every figure (plots.contenders).
"""

from __future__ import annotations

import csv
import json
import statistics
import textwrap
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

from plots.contenders import BEYOND, BEYOND_UVLOOP, LOOP, ROBUST, colour

Row = dict[str, str]

SUCCESS, ERROR, BLOCKED = "#31a354", "#de2d26", "#bdbdbd"


def why_no_go(meta: dict[str, object]) -> str | None:
    """Why the run measured no Go pool (its metadata say so), or None if it did or never tried."""
    reason = meta.get("go_missing")
    return str(reason) if reason else None


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
    # Go's version where Go programs took part in the run.
    go = f", {meta['go']}" if meta.get("go") and not why_no_go(meta) else ""
    machine = f"Python {meta['python']}{go} on {meta['platform']}, {meta['cpu_count']} CPUs"
    run = f"{meta['mode']} mode, commit {meta['commit']}, {meta['date']}"
    if "start_method" not in meta:
        return f"{machine}; {run}"
    # How contenders started their processes, where any did (older metadata do not say): on a
    # line of its own, since one line is as wide as the narrowest figure.
    return f"{machine}; processes started by {meta['start_method']}\n{run}"


# The caption's strip at the bottom: a fraction of the figure for its first line, and about a
# 7-point line's height for each line after it.
CAPTION_STRIP, CAPTION_LINE_INCHES = 0.03, 0.12


def finish(figure: Figure, meta: dict[str, object], path: Path) -> None:
    # Keep a strip at the bottom for where the numbers came from, clear of axes and legends.
    text = caption(meta)
    strip = CAPTION_STRIP + text.count("\n") * CAPTION_LINE_INCHES / figure.get_figheight()
    engine = figure.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        engine.set(rect=(0, strip, 1, 1 - strip))
    figure.text(0.01, 0.005, text, fontsize=7, color="#666666", va="bottom")
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
    # A contender that ran fewer tasks than the title says (Dask) says how many, at its bar.
    counts = {name: int(group[0]["tasks"]) for (name,), group in by_name.items()}
    labels = [
        name if counts[name] == int(rows[0]["tasks"]) else f"{name}, {counts[name]:,} tasks"
        for name in names
    ]
    figure, axes = plt.subplots(figsize=(8, 4.2), layout="constrained")
    medians = [points[name][0] for name in names]
    axes.barh(
        labels,
        medians,
        xerr=[[points[n][1] for n in names], [points[n][2] for n in names]],
        color=[colour(name) or "#999999" for name in names],
        capsize=3,
    )
    for y, name in enumerate(names):
        median, _, above = points[name]
        # A cluster's cost is in milliseconds: said so, rather than as thousands of µs.
        value = f"{median / 1000:.1f} ms" if median >= 1000 else f"{median:.2f} µs"
        axes.text((median + above) * 1.12, y, value, va="center", fontsize=8)
    axes.axvline(
        floor[0],
        color=LOOP.colour,
        linestyle="--",
        linewidth=1,
        label=f"floor: a plain loop calling the task, {floor[0]:.2f} µs",
    )
    reason = why_no_go(meta)
    if reason:
        # A row of its own, on top where the fastest bar would be: a reader looking for the Go
        # pool finds why it is not there.
        missing_row = len(names)
        axes.set_yticks([*range(len(names)), missing_row], [*labels, "Go pool (goroutines)"])
        axes.text(
            0.02,
            missing_row,
            textwrap.fill(f"not measured: {reason}", 40),
            transform=axes.get_yaxis_transform(),
            va="center",
            fontsize=8,
            color="#666666",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
        )
        axes.set_ylim(-0.6, missing_row + 0.6)
    axes.legend(fontsize=8, loc="upper right")
    axes.set_xscale("log")
    # The Go pool can come in under Python's floor; keep its bar in view too.
    axes.set_xlim(min(floor[0], *medians) / 2, max(medians) * 6)
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
            color=colour(name),
            marker="o",
            markersize=4,
            capsize=3,
            linewidth=2.2 if name == "robust" else 1.4,
            # The hand-written references: threads black, the event loops' dashed (uvloop's
            # black, the standard loop's grey).
            linestyle="--" if name.startswith("hand-written coroutines") else "-",
        )


def sizes_of(meta: dict[str, object]) -> dict[str, object]:
    """The benchmark sizes the data were measured with (`Sizes`, as measure.py wrote them)."""
    sizes = meta["sizes"]
    assert isinstance(sizes, dict)
    return sizes


def io_target(meta: dict[str, object], rows: list[Row]) -> tuple[int, float] | None:
    """robust's (workers, efficiency) goal, if the data say what it is and reach that many workers.

    Older metadata does not record it: then no target is drawn rather than one assumed.
    """
    sizes = sizes_of(meta)
    if "io_target_workers" not in sizes:
        return None
    workers = int(str(sizes["io_target_workers"]))
    if workers > max(int(row["workers"]) for row in rows):
        return None
    return workers, float(str(sizes["io_target_efficiency"]))


def io_asyncio_targets(meta: dict[str, object], rows: list[Row]) -> list[tuple[int, float]]:
    """Stage 4 on asyncio's (workers, efficiency) goals within the data's worker counts, when an
    asyncio backend was measured; none from metadata that does not record them."""
    if not any(row["implementation"].startswith("beyond (asyncio") for row in rows):
        return []
    measured = {int(row["workers"]) for row in rows}
    targets = sizes_of(meta).get("io_asyncio_targets") or []
    assert isinstance(targets, list)
    return [(int(w), float(e)) for w, e in targets if int(w) in measured]


def io_axis_label(meta: dict[str, object]) -> str:
    tasks = sizes_of(meta)["io_tasks_per_worker"]
    return f"workers (log scale); each runs {tasks} tasks that sleep 1 ms"


def cpu_task_seconds(row: Row, meta: dict[str, object]) -> float:
    """A CPU run's seconds a task: its row's, or (data from before there were two workloads, one
    size for every row) the metadata's."""
    return float(row.get("task_seconds") or str(sizes_of(meta)["cpu_task_seconds"]))


def cpu_title(tasks: str, task_seconds: float) -> str:
    return f"{tasks} tasks of pure Python, about {task_seconds * 1000:g} ms each"


def deadlock_map_title(meta: dict[str, object]) -> str:
    # Metadata from before the worker count was recorded: say nothing rather than guess.
    workers = sizes_of(meta).get("map_workers")
    stage = f"Stage 2 ({workers} workers)" if workers is not None else "Stage 2"
    return f"{stage}, observed: finished or deadlocked"


def draw_io(rows: list[Row], meta: dict[str, object], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8.8, 4.8), layout="constrained")
    line_chart(axes, rows, lambda row: float(row["efficiency"]))
    axes.axhline(1.0, color="#999999", linewidth=1, linestyle=":")
    target = io_target(meta, rows)
    if target is not None:
        workers, efficiency = target
        axes.axhline(
            efficiency,
            color=ROBUST.colour,
            linewidth=1,
            linestyle="--",
            label=f"robust's target: {efficiency:g} at {workers} workers",
        )
    asyncio_targets = io_asyncio_targets(meta, rows)
    if asyncio_targets:
        axes.plot(
            [workers for workers, _ in asyncio_targets],
            [efficiency for _, efficiency in asyncio_targets],
            linestyle="none",
            marker="_",
            markersize=14,
            markeredgewidth=2,
            color=BEYOND_UVLOOP.colour,
            label="beyond on asyncio's targets\n("
            + ", ".join(f"{e:g} at {w}" for w, e in asyncio_targets)
            + ")",
        )
    axes.set_xscale("log", base=2)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel(io_axis_label(meta))
    axes.set_ylabel("efficiency = ideal / measured time")
    axes.set_title("I/O-bound scaling: how close to ceil(n / workers) x 1 ms")
    reason = why_no_go(meta)
    if reason:
        # A legend entry with no line and no marker, among the pools the reader looks through.
        label = textwrap.fill(f"Go pool not measured: {reason}", 40)
        axes.plot([], [], linestyle="none", label=label)
    figure.legend(fontsize=8, loc="outside right upper")
    finish(figure, meta, path)


def draw_cpu(rows: list[Row], meta: dict[str, object], path: Path) -> None:
    """One panel per workload (tasks of about 1 ms, then shorter ones), side by side."""
    workloads = sorted({cpu_task_seconds(row, meta) for row in rows}, reverse=True)
    width = 4 + 4 * len(workloads)
    figure, panels = plt.subplots(
        1, len(workloads), figsize=(width, 4.8), layout="constrained", squeeze=False
    )
    clusters: set[str] = set()
    for axes, task_seconds in zip(panels[0], workloads, strict=True):
        workload = [row for row in rows if cpu_task_seconds(row, meta) == task_seconds]
        clusters |= draw_cpu_panel(axes, workload, meta)
        axes.set_title(cpu_title(workload[0]["tasks"], task_seconds), fontsize=10)
    figure.suptitle("CPU-bound: speedup over a plain loop, threads against processes")
    # Every panel has the same contenders: one legend for the figure.
    handles, labels = panels[0][0].get_legend_handles_labels()
    labels = [
        f"{label}:\nms a task at each point" if label in clusters else label for label in labels
    ]
    figure.legend(handles, labels, fontsize=8, loc="outside right upper")
    finish(figure, meta, path)


def draw_cpu_panel(axes: Axes, rows: list[Row], meta: dict[str, object]) -> set[str]:
    """One workload's speedups; the names of the clusters among its contenders."""
    serial = statistics.median(
        float(row["seconds"]) for row in rows if row["implementation"] == "plain loop"
    )

    def speedup(row: Row) -> float:
        # Over the loop run just before this run (measure_cpu); older data have only the median.
        return float(row.get("loop_seconds") or serial) / float(row["seconds"])

    pools = [row for row in rows if row["implementation"] != "plain loop"]
    line_chart(axes, pools, speedup)
    # A cluster's line sits near 0: each of its points says what a task cost there, in ms, and
    # its legend entry says so (in words at every point, neighbours would overlap).
    clusters: set[str] = set()
    for (name, workers), group in grouped(pools, "implementation", "workers").items():
        if group[0].get("runs_on") == "cluster":
            clusters.add(name)
            median_speedup = statistics.median(speedup(row) for row in group)
            per_task = statistics.median(float(row["seconds"]) / int(row["tasks"]) for row in group)
            axes.annotate(
                f"{per_task * 1000:.0f} ms",
                (int(workers), median_speedup),
                xytext=(0, 7),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color=colour(name),
            )
    cpus = int(str(meta["cpu_count"]))
    axes.axvline(cpus, color="#999999", linestyle="--", linewidth=1, label=f"{cpus} CPUs here")
    axes.axhline(1.0, color="#999999", linewidth=1, linestyle=":")
    axes.set_ylim(0, None)
    axes.set_xlabel("workers")
    paired = any(row.get("loop_seconds") for row in pools)
    axes.set_ylabel(
        "speedup over a plain loop run just before (times)"
        if paired
        else "speedup over a plain loop (times)"
    )
    return clusters


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
    axes.set_title(deadlock_map_title(meta))
    handles = [Patch(color=shade, label=label) for label, shade in colours.items()]
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
            fill = SUCCESS if row["kind"] == "success" else ERROR
            axes.barh(y, end - start, left=start, color=fill, height=0.6, edgecolor="white")
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


# The failure matrix's cells: good and bad are verdicts; a fact is coloured as neither.
VERDICT_COLOURS = {
    "good": "#c7e9c0",
    "bad": "#fc9272",
    "fact": "#deebf7",
    "n/a": "#f0f0f0",
    "not measured": "#ffffff",
}
VERDICT_LEGEND = {
    "good": "good",
    "bad": "bad",
    "fact": "a fact, not a verdict",
    "n/a": "no answer (the run hung, or got no error)",
    "not measured": "not measured here (the cell says why)",
}


def draw_failures(rows: list[Row], meta: dict[str, object], path: Path) -> None:
    """The failure matrix: a row per contender, a column per property, grouped by workload."""
    contenders = list(dict.fromkeys(row["contender"] for row in rows))
    properties = list(dict.fromkeys(row["property"] for row in rows))
    cells = {(row["contender"], row["property"]): row for row in rows}
    workload_of = {row["property"]: row for row in rows}
    figure, axes = plt.subplots(
        figsize=(2.6 + 1.02 * len(properties), 1.9 + 0.34 * len(contenders)),
        layout="constrained",
    )
    for y, contender in enumerate(contenders):
        for x, prop in enumerate(properties):
            row = cells.get((contender, prop))
            if row is None:
                continue
            axes.add_patch(
                Rectangle(
                    (x, y), 1, 1, facecolor=VERDICT_COLOURS[row["verdict"]], edgecolor="white"
                )
            )
            axes.text(
                x + 0.5,
                y + 0.5,
                "\n".join(textwrap.wrap(row["label"], 13)),
                ha="center",
                va="center",
                fontsize=6.8,
            )
    # A line between kinds (our stages, the standard library, ...).
    kinds = [cells[(c, properties[0])]["kind"] for c in contenders]
    for y in range(1, len(contenders)):
        if kinds[y] != kinds[y - 1]:
            axes.axhline(y, color="black", linewidth=1.2)
    # Column headers, and above them one header per workload over its columns.
    for x, prop in enumerate(properties):
        axes.text(
            x + 0.5,
            -0.15,
            "\n".join(textwrap.wrap(prop, 12)),
            ha="center",
            va="bottom",
            fontsize=7.5,
            fontweight="bold",
        )
    groups = list(dict.fromkeys(workload_of[p]["workload"] for p in properties))
    for workload in groups:
        columns = [x for x, p in enumerate(properties) if workload_of[p]["workload"] == workload]
        first = workload_of[properties[columns[0]]]
        text = f"{workload}, jobs of {float(first['job_seconds']):g} s"
        axes.plot([columns[0] + 0.08, columns[-1] + 0.92], [-1.3, -1.3], color="#444444")
        axes.text(
            (columns[0] + columns[-1] + 1) / 2,
            -1.4,
            "\n".join(textwrap.wrap(text, 20 * len(columns))),
            ha="center",
            va="bottom",
            fontsize=7.5,
        )
    axes.set_xlim(0, len(properties))
    axes.set_ylim(len(contenders), -2.6)
    axes.set_yticks([y + 0.5 for y in range(len(contenders))], contenders, fontsize=8)
    axes.set_xticks([])
    axes.tick_params(left=False)
    for spine in axes.spines.values():
        spine.set_visible(False)
    timeouts = sorted({float(row["timeout_seconds"]) for row in rows})
    axes.set_title(
        "Where do the errors go? Every cell measured by a real run "
        f"({rows[0]['workers']} workers; a run that has not exited after {timeouts[0]:.0f} to "
        f"{timeouts[-1]:.0f} s hangs, and is killed)",
        fontsize=10,
    )
    # The verdicts the cells use, in the legend's order ("not measured" only when a row was not).
    shown = [verdict for verdict in VERDICT_COLOURS if any(r["verdict"] == verdict for r in rows)]
    figure.legend(
        handles=[
            Patch(
                facecolor=VERDICT_COLOURS[verdict],
                edgecolor="#bbbbbb",
                label=VERDICT_LEGEND[verdict],
            )
            for verdict in shown
        ],
        fontsize=8,
        loc="outside lower right",
        ncols=len(shown),
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
            color=colour(name),
            marker="o",
            markersize=4,
            capsize=3,
            linewidth=2.2 if name.startswith("beyond") else 1.4,
        )
    axes.axhline(
        16, color=BEYOND.colour, linewidth=1, linestyle="--", label="beyond's target: 16 MiB"
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
        color=[colour(name) or "#999999" for name in names],
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
    "failures": draw_failures,
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
