"""The figures of docs/pytest-deadlock.md, "What it costs".

`python -m tools.measure_deadlock_plugin` takes three measurements, each in runs of pytest of its
own on test files written to a scratch folder:

- from a deadlock to the failed test: 10 tests of each kind (main alone on a queue, stage 2 from
  the call into its pool, asyncio.run of a coroutine that awaits a queue nobody feeds), each
  timing itself from just before its wait to the failure raised in it;
- the exit with three stuck non-daemon threads: from pytest's last hook to the process's end;
- the cost per test: 1000 trivial tests, and 250 that sleep 10 ms, with and without --deadlock,
  in interleaved rounds; wall and CPU time (the children's user + system).

Medians, with the smallest and largest; about three minutes. --help for the options.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from demo_args import DemoArgumentParser, whole_number

LATENCY_TESTS = """
import asyncio
import os
import queue
import time

import pytest

import errors_channel.pool


def record(kind, start):
    with open(os.environ["LATENCY_OUT"], "a") as out:
        out.write(f"{kind} {time.monotonic() - start:.4f}\\n")


def fails(job):
    raise ValueError(job)


@pytest.mark.parametrize("n", range(10))
def test_main_alone_on_a_queue(n):
    start = time.monotonic()
    try:
        queue.Queue().get()
    except BaseException:
        record("main alone on a queue", start)
        raise


@pytest.mark.parametrize("n", range(10))
def test_stage_2(n):
    start = time.monotonic()
    try:
        errors_channel.pool.run(9, 3, fails, lambda line: None, error_capacity=1)
    except BaseException:
        record("stage 2, from the call into its pool", start)
        raise


@pytest.mark.parametrize("n", range(10))
def test_asyncio(n):
    async def main():
        await asyncio.Queue().get()

    start = time.monotonic()
    try:
        asyncio.run(main())
    except BaseException:
        record("asyncio.run", start)
        raise
"""

EXIT_CONFTEST = """
import os
import time

import pytest


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    with open(os.environ["EXIT_OUT"], "w") as out:
        out.write(f"{time.monotonic():.4f}\\n")
"""

EXIT_TEST = """
import errors_channel.pool


def fails(job):
    raise ValueError(job)


def test_stage_2_leaves_three_workers_stuck():
    errors_channel.pool.run(9, 3, fails, lambda line: None, error_capacity=1)
"""


# What the interpreter measured must have: the test files import the project from a scratch folder.
PROBE = "import platform, pytest, deadlock_watch, errors_channel; print(platform.python_version())"


def pytest_in(
    folder: Path, python: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    environment = {**os.environ, **env}
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True)


def spread(values: Sequence[float], unit: str = "s", scale: float = 1.0) -> str:
    ordered = sorted(value * scale for value in values)
    median = statistics.median(ordered)
    return f"median {median:.3f} {unit} ({ordered[0]:.3f} to {ordered[-1]:.3f}, n={len(ordered)})"


def latency(folder: Path, python: str) -> None:
    (folder / "test_latency.py").write_text(LATENCY_TESTS)
    out = folder / "latency.txt"
    done = pytest_in(folder, python, "--deadlock", "--timeout=60", LATENCY_OUT=str(out))
    if done.returncode != 1 or "30 failed" not in done.stdout:
        raise SystemExit(f"the latency run went wrong:\n{done.stdout[-2000:]}")
    rows = [line.rsplit(" ", 1) for line in out.read_text().splitlines()]
    for kind in dict.fromkeys(kind for kind, _ in rows):
        seconds = [float(value) for name, value in rows if name == kind]
        print(f"from the deadlock to the failure, {kind}: {spread(seconds)}")


def exit_delay(folder: Path, python: str, runs: int) -> None:
    (folder / "conftest.py").write_text(EXIT_CONFTEST)
    (folder / "test_exit.py").write_text(EXIT_TEST)
    out = folder / "exit.txt"
    delays = []
    for _ in range(runs):
        done = pytest_in(folder, python, "--deadlock", "--timeout=60", EXIT_OUT=str(out))
        ended = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process on Linux
        if done.returncode != 1:
            raise SystemExit(f"the exit run went wrong:\n{done.stdout[-2000:]}")
        delays.append(ended - float(out.read_text()))
    print(
        f"the exit, three stuck non-daemon threads, pytest's last hook to the end: {spread(delays)}"
    )


def cost_per_test(folder: Path, python: str, rounds: int) -> None:
    files = {
        "trivial": ("pass", 1000),
        "sleeping 10 ms": ("time.sleep(0.01)", 250),
    }
    for kind, (body, count) in files.items():
        name = f"test_{kind.split()[0]}.py"
        source = "import time\n\nimport pytest\n\n\n"
        source += f"@pytest.mark.parametrize('n', range({count}))\ndef test_it(n):\n    {body}\n"
        (folder / name).write_text(source)
        wall: dict[str, list[float]] = {"off": [], "on": []}
        cpu: dict[str, list[float]] = {"off": [], "on": []}
        for round_number in range(rounds):
            # Alternate which mode goes first, so that a change of load hits both alike.
            modes = ("off", "on") if round_number % 2 == 0 else ("on", "off")
            for mode in modes:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.monotonic()
                done = pytest_in(folder, python, name, *(["--deadlock"] if mode == "on" else []))
                wall[mode].append(time.monotonic() - start)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[mode].append(
                    after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                )
                if done.returncode != 0:
                    raise SystemExit(f"the {kind} tests failed:\n{done.stdout[-2000:]}")
        for mode in ("off", "on"):
            print(
                f"{count} {kind} tests, --deadlock {mode}: wall {spread(wall[mode])}, "
                f"CPU {spread(cpu[mode])}"
            )
        per_test = {
            what: (statistics.median(values["on"]) - statistics.median(values["off"])) / count
            for what, values in (("wall", wall), ("CPU", cpu))
        }
        print(
            f"  a {kind} test costs {per_test['wall'] * 1000:+.2f} ms of wall time, "
            f"{per_test['CPU'] * 1000:+.2f} ms of CPU time with --deadlock (medians' difference)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = DemoArgumentParser(
        prog="python -m tools.measure_deadlock_plugin",
        description="Measure pytest --deadlock: the time from a deadlock to the failed test, the "
        "exit with stuck threads, and the cost per test (about three minutes).",
    )
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure")
    parser.add_argument(
        "--rounds", type=whole_number(1, 100), default=7, help="interleaved rounds (default 7)"
    )
    args = parser.parse_args(argv)
    try:
        probe = subprocess.run(
            [args.python, "-c", PROBE], capture_output=True, text=True, check=False
        )
    except OSError as error:
        parser.fail(f"--python {args.python!r} cannot be run: {error.strerror}")
    if probe.returncode != 0 or not probe.stdout.strip():
        parser.fail(f"--python {args.python!r} cannot import pytest and this project, installed")
    version = probe.stdout.strip()
    print(f"CPython {version}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as scratch:
        for name in ("latency", "exit", "cost"):
            (Path(scratch) / name).mkdir()
        latency(Path(scratch) / "latency", args.python)
        exit_delay(Path(scratch) / "exit", args.python, runs=5)
        cost_per_test(Path(scratch) / "cost", args.python, args.rounds)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
