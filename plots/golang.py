"""The Go pool beside the Python ones: find Go, build the programs in go/, run the benchmark one.

Go is optional. Without it on PATH the benchmarks leave the Go pool out and say so on the figures
(`go_pool()` below), the failure matrix's Go rows say "not measured" (`go_programs()`), and the Go
tests skip with the reason.

The Go contender runs `go/bench` once per measured run, a new process each time. The program times
its own run (making the tasks, running the pool, collecting the results: the same part that is
timed around each Python contender's call) and prints that time with every result; the results are
checked like every other contender's. The process's start and its JSON output are not timed: they
are not the pool's cost, and they would swamp a 20,000-task dispatch that takes milliseconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from plots.contenders import GO_POOL, Contender
from plots.workloads import NO_OP, SLEEP_1MS, Workload

GO_MODULE = Path(__file__).resolve().parent.parent / "go"
PROGRAMS = ("naive", "errors_channel", "robust", "bench", "failures")
# The Go workloads that match the Python ones, by the name go/bench knows them by.
GO_WORKLOADS = {NO_OP: "no-op", SLEEP_1MS: "sleep-1ms"}


class GoBuildFailed(Exception):
    """`go build` refused the programs in go/ (the message is Go's own)."""


@dataclass(frozen=True)
class Toolchain:
    """A `go` command found on PATH, and the version it reports (for example "go1.19.8")."""

    go: str
    version: str

    @property
    def release(self) -> str:
        """The version as people say it: "go1.19.8" -> "1.19"."""
        return ".".join(self.version.removeprefix("go").split(".")[:2])


def environment() -> dict[str, str]:
    """The environment for every `go` command run from here."""
    env = dict(os.environ)
    # Go keeps compiled packages in a build cache under the user's cache directory, and refuses to
    # build without one. A container without HOME has none, so give it one inside the clone.
    if not any(env.get(name) for name in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
        env["GOCACHE"] = str(GO_MODULE.parent / "build" / "go-cache")
    # Standard library only: nothing is ever downloaded, neither modules nor a newer toolchain.
    env["GOPROXY"] = "off"
    env["GOTOOLCHAIN"] = "local"
    # Build go/ as its own module even if a go.work elsewhere says otherwise.
    env["GOWORK"] = "off"
    return env


def find_go() -> Toolchain | None:
    """The `go` on PATH and its version; None if there is none, or it cannot say its version."""
    go = shutil.which("go")
    if go is None:
        return None
    try:
        completed = subprocess.run(
            [go, "env", "GOVERSION"],
            capture_output=True,
            text=True,
            env=environment(),
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    version = completed.stdout.strip()
    return Toolchain(go, version) if version.startswith("go") else None


def build(
    toolchain: Toolchain, out_dir: Path, programs: Sequence[str] = PROGRAMS
) -> dict[str, Path]:
    """Build go/<program> for each program into out_dir; return each program's executable.

    One `go build` for all of them. Go's build cache keeps the compiled packages between runs, so
    only the first build on a machine compiles; later ones mostly link.
    """
    completed = subprocess.run(
        # A trailing separator makes -o a folder for several programs. (No -trimpath: it would
        # make Go 1.19 compile the standard library again instead of using its installed copy.)
        [toolchain.go, "build", "-o", f"{out_dir}{os.sep}"]
        + [f"./{program}" for program in programs],
        cwd=GO_MODULE,
        capture_output=True,
        text=True,
        env=environment(),
        timeout=300,
        check=False,
    )
    if completed.returncode != 0:
        raise GoBuildFailed(completed.stderr.strip() or f"go build exited {completed.returncode}")
    return {program: out_dir / program for program in programs}


@dataclass(frozen=True)
class GoBenchmark:
    """go/bench, built: runs one workload on the Go pool in a new process."""

    executable: Path

    def run_timed(self, work: Workload, job_count: int, workers: int) -> tuple[list[int], float]:
        """Every job's result, and the seconds the Go program measured for its run."""
        if work not in GO_WORKLOADS:
            raise ValueError("the Go pool runs only the no-op and the 1 ms sleep workloads")
        command = [
            str(self.executable),
            *("--workload", GO_WORKLOADS[work]),
            *("--jobs", str(job_count), "--workers", str(workers)),
        ]
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=300, check=False
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr}")
        report = json.loads(completed.stdout)
        return [int(result) for result in report["results"]], float(report["seconds"])

    def run(self, work: Workload, job_count: int, workers: int) -> list[int]:
        return self.run_timed(work, job_count, workers)[0]


def contender(toolchain: Toolchain, bench: Path) -> Contender:
    """The Go pool of plots.contenders, named after the release that built it, runnable."""
    benchmark = GoBenchmark(bench)
    return replace(
        GO_POOL,
        name=f"Go {toolchain.release} pool (goroutines)",
        run=benchmark.run,
        run_timed=benchmark.run_timed,
    )


@dataclass(frozen=True)
class GoPrograms:
    """Programs in go/ built for one run, or why there are none (for the metadata and figures)."""

    toolchain: Toolchain | None
    # Each program's executable; empty when Go is missing or the build failed.
    executables: dict[str, Path]
    # {"go": its version or None}, plus "go_missing" with the reason when there are no programs.
    metadata: dict[str, object]
    # Why there are no programs, in a few words for a figure's cell ("Go not found"); None if built.
    unavailable: str | None = None


@contextmanager
def go_programs(programs: Sequence[str], what: str) -> Iterator[GoPrograms]:
    """Build go/<program> for each program, once, into a temporary folder that lasts as long as the
    run; say on stderr what was built, or, when Go is missing or the build fails, why `what` is not
    measured.
    """
    toolchain = find_go()
    if toolchain is None:
        reason = "no go command on PATH (apt-get install golang-go)"
        print(f"{what} not measured: {reason}", file=sys.stderr, flush=True)
        yield GoPrograms(None, {}, {"go": None, "go_missing": reason}, "Go not found")
        return
    with tempfile.TemporaryDirectory(prefix="go-programs-") as folder:
        try:
            executables = build(toolchain, Path(folder), programs)
        except GoBuildFailed as failed:
            reason = f"go build failed ({str(failed).splitlines()[0]})"
            print(f"{what} not measured: {failed}", file=sys.stderr, flush=True)
            metadata: dict[str, object] = {"go": toolchain.version, "go_missing": reason}
            yield GoPrograms(toolchain, {}, metadata, "go build failed")
            return
        print(f"{what}: {toolchain.version}, built into {folder}", file=sys.stderr, flush=True)
        yield GoPrograms(toolchain, executables, {"go": toolchain.version})


@dataclass(frozen=True)
class GoPool:
    """What a benchmark run knows of Go: its contender, or why there is none, for the metadata."""

    contender: Contender | None
    metadata: dict[str, object]


def pool_contender(built: GoPrograms) -> GoPool:
    """The Go pool's contender from built programs (None unless go/bench is among them)."""
    if built.toolchain is None or "bench" not in built.executables:
        return GoPool(None, built.metadata)
    return GoPool(contender(built.toolchain, built.executables["bench"]), built.metadata)


@contextmanager
def go_pool() -> Iterator[GoPool]:
    """The Go pool's contender, built once into a temporary folder that lasts as long as the run.

    Without Go (or when the build fails) the contender is None and the metadata carry a note that
    the figures show, so a figure without Go says why.
    """
    with go_programs(["bench"], "Go pool") as built:
        yield pool_contender(built)
