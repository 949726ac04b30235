"""Measuring the failure matrix: every contender on every workload, each run in a child process.

Each run is `python -m plots.failures_child` in a session of its own (so that its process group
holds it and everything it starts), with an events file that its jobs and its harness append to.
A run that has not exited by its timeout hangs: its whole process group is killed and the run is
recorded as hanging. For the SIGINT workload the parent waits until four jobs have started, half
a job more, notes the moment in the events file and sends SIGINT to the child alone, as
`kill -INT` does. After a child exits, any process still alive in its group half a second later is
an orphan it left behind (multiprocessing's forkserver and resource tracker get a few seconds to
end by themselves); the parent counts and then kills those too.

A Go contender's run is its program instead (`GoProgram`), built once per matrix run, in the same
kind of session and with the same events file. Without Go, its cells say "not measured" and why.

Runs mostly sleep, so several go at once, even on 2 cores. Every cell is computed from what the
runs recorded; nothing here knows what any tool is supposed to do.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from plots.contenders import MATRIX, Contender, GoProgram
from plots.failures import (
    GIVE_UP,
    POST,
    SIGINT,
    SYSTEM_EXIT,
    WORKERS,
    WORKLOADS,
    Workload,
    record,
)
from plots.golang import GoPrograms, go_programs

REPO_ROOT = Path(__file__).resolve().parent.parent
# The SIGINT lands once this many jobs have started, half a job later: mid-run, not at the start.
SIGINT_AFTER_STARTS = WORKERS + 1
# An interpreter that has not reached the caller after this long is broken, not slow.
STARTUP_SECONDS = 60.0
# A process still in the group this long after the child exited was left behind.
ORPHAN_GRACE_SECONDS = 0.5
# But for multiprocessing's own helpers, a forkserver and the resource tracker it starts: they
# end by themselves once they read end of file from the program that started them, and on a
# loaded machine that takes longer than ORPHAN_GRACE_SECONDS (seen at a load average of 15 on
# 3.13: "1 orphan" for a Pool.map that left nothing of its own). They are left behind if still
# there after this long.
MULTIPROCESSING_HELPERS = (
    "from multiprocessing.forkserver import main",
    "from multiprocessing.resource_tracker import main",
)
HELPER_GRACE_SECONDS = 5.0
# What group_members says for a process on its way out: Linux empties /proc/PID/cmdline once the
# process has released its memory, while it still reads "R" (seen for a process ending with 3 GB
# to free; and "1 orphan" for Pool.imap_unordered's SIGINT run at a load average of 12, where the
# process caught so was not a helper by its command line). It ends by itself, as a helper does.
EXITING = "(exiting)"

Event = dict[str, object]


class Steps(Protocol):
    def step(self, what: str) -> None: ...


class CallerBroken(RuntimeError):
    """A run ended in a way no tool explains (the caller raised an Exception, or never started):
    a bug in this benchmark, to fix rather than record."""

    def __init__(self, what: str, stderr: str = "") -> None:
        super().__init__(f"{what}\n{stderr[-2000:]}" if stderr else what)


@dataclass(frozen=True)
class Timing:
    """How long jobs take, and how long a run may take before it counts as hanging."""

    job_seconds: float
    sigint_job_seconds: float

    def job_seconds_for(self, workload: Workload) -> float:
        return self.sigint_job_seconds if workload is SIGINT else self.job_seconds

    def healthy_seconds(self, workload: Workload) -> float:
        return math.ceil(workload.jobs / WORKERS) * self.job_seconds_for(workload)

    def timeout(self, workload: Workload) -> float:
        # Generous: a healthy run takes `healthy_seconds` from the moment its caller starts, and
        # these runs share 2 busy cores. A run still going after this is not going to finish.
        # (For the SIGINT run the clock starts again at the signal.)
        return 3.0 + 2.0 * self.healthy_seconds(workload)


@dataclass
class ChildRun:
    contender: Contender
    workload: Workload
    # The exit status as subprocess gives it (negative: killed by that signal); None: it hung.
    status: int | None
    timeout: float
    events: list[Event]
    stderr: str
    # From the SIGINT to the child's exit; None where no SIGINT was sent or the child hung.
    seconds_to_exit: float | None = None
    # Processes of the child's group still alive after it exited.
    orphans: int = 0

    @property
    def hung(self) -> bool:
        return self.status is None

    def caller_report(self) -> Event | None:
        for event in self.events:
            if event.get("caller") in ("returned", "raised"):
                return event
        return None

    def index_of_last(self, key: str) -> int | None:
        found = [i for i, event in enumerate(self.events) if key in event]
        return found[-1] if found else None

    def started(self, after: int = -1) -> list[int]:
        """Jobs whose start line comes after line `after` of the events file."""
        return [int(str(event["start"])) for event in self.events[after + 1 :] if "start" in event]

    def ended(self) -> set[int]:
        return {int(str(event["end"])) for event in self.events if "end" in event}


def group_members(group: int) -> list[str]:
    """The command lines of the live processes in process group `group`, from Linux's /proc;
    elsewhere one empty line while the group has any member, which is all os.killpg can tell."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return []
        return [""]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it exited while we looked
        # "pid (name) state ppid pgrp ...": the name may hold spaces and parentheses.
        state, _, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == group and state != "Z":
            members.append(command or EXITING)
    return members


def left_behind(group: int) -> int:
    """How many processes of a finished child's group are still alive after ORPHAN_GRACE_SECONDS,
    or after HELPER_GRACE_SECONDS where all that is left ends by itself (multiprocessing's
    helpers, processes already on their way out)."""
    time.sleep(ORPHAN_GRACE_SECONDS)
    members = group_members(group)
    deadline = time.monotonic() + HELPER_GRACE_SECONDS
    while members and time.monotonic() < deadline and all(map(ends_by_itself, members)):
        time.sleep(0.05)
        members = group_members(group)
    return len(members)


def multiprocessing_helper(command: str) -> bool:
    return any(helper in command for helper in MULTIPROCESSING_HELPERS)


def ends_by_itself(command: str) -> bool:
    return command == EXITING or multiprocessing_helper(command)


def kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing left in it
        os.killpg(group, signal.SIGKILL)


def read_events(path: Path) -> list[Event]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class LiveChildren:
    """The children started and not yet reaped: their groups are safe to kill all at once."""

    def __init__(self) -> None:
        self._pids: set[int] = set()
        self._lock = threading.Lock()

    def add(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)

    def reaped(self, pid: int) -> None:
        with self._lock:
            self._pids.discard(pid)

    def kill_all(self) -> None:
        with self._lock:
            for pid in self._pids:
                kill_group(pid)


def wait_until(
    child: subprocess.Popen[bytes], events: Path, enough: Callable[[str], bool], seconds: float
) -> bool:
    """Poll the events file until `enough` of its text (True), the child's exit or the time."""

    def text() -> str:
        return events.read_text() if events.exists() else ""

    deadline = time.monotonic() + seconds
    while child.poll() is None and time.monotonic() < deadline:
        if enough(text()):
            return True
        time.sleep(0.01)
    return enough(text())


def go_packages(contenders: Iterable[Contender]) -> list[str]:
    """The Go programs these contenders need built, each once."""
    return list(dict.fromkeys(c.call.package for c in contenders if isinstance(c.call, GoProgram)))


def child_command(
    contender: Contender, workload: Workload, events: Path, job_seconds: float, go: GoPrograms
) -> list[str]:
    """The command that runs one contender on one workload; its events go to `events`."""
    if not isinstance(contender.call, GoProgram):
        return [
            sys.executable,
            *("-m", "plots.failures_child"),
            *("--contender", contender.name, "--workload", workload.name),
            *("--events", str(events), "--job-seconds", str(job_seconds)),
        ]
    # A program knows nothing of the Python tables: it gets the workload spelled out.
    return [
        str(go.executables[contender.call.package]),
        *contender.call.args,
        *("--jobs", str(workload.jobs), "--workers", str(WORKERS)),
        f"--odd-jobs-fail={str(workload.odd_jobs_fail).lower()}",
        *("--exit-job", str(workload.system_exit_job)),
        *("--give-up-after", str(workload.give_up_after or 0)),
        *("--events", str(events), "--work-seconds", str(job_seconds)),
    ]


def run_child(
    contender: Contender,
    workload: Workload,
    timing: Timing,
    folder: Path,
    number: int,
    live: LiveChildren,
    go: GoPrograms,
) -> ChildRun:
    events = folder / f"{number}.jsonl"
    stderr_path = folder / f"{number}.stderr"
    job_seconds = timing.job_seconds_for(workload)
    timeout = timing.timeout(workload)
    command = child_command(contender, workload, events, job_seconds, go)
    seconds_to_exit: float | None = None
    status: int | None = None
    failure: CallerBroken | None = None
    with stderr_path.open("w") as stderr:
        # A session of its own: the child leads a new process group, which holds everything it
        # starts; the parent can list and kill that group, and a SIGINT to the child goes to it
        # alone.
        child = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        live.add(child.pid)
        try:
            # The clock starts when the caller does: an interpreter that is slow to start on a
            # busy machine is not a hang.
            if not wait_until(child, events, caller_started, STARTUP_SECONDS):
                raise CallerBroken(f"{contender.name}: the caller did not start")
            if workload is SIGINT:
                wait_until(child, events, enough_started, timeout)
                if contender.says_when_it_waits:
                    wait_until(child, events, caller_waiting, timeout)
                time.sleep(job_seconds / 2)
                if child.poll() is not None:
                    raise CallerBroken(f"{contender.name}: exited before the SIGINT")
                # The line goes first: any job whose start line comes after it started after
                # the signal was on its way.
                record(str(events), {"sigint": True})
                sent = time.monotonic()
                os.kill(child.pid, signal.SIGINT)
                status = child.wait(timeout=timeout)
                seconds_to_exit = time.monotonic() - sent
            else:
                status = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass  # it hangs: status stays None
        except CallerBroken as broken:
            failure = broken
        finally:
            if child.returncode is None:
                # Hung, or given up on. Not reaped yet, so the group's number is still the
                # child's own, and safe to kill.
                kill_group(child.pid)
                child.wait()
            live.reaped(child.pid)
    if failure is not None:
        raise CallerBroken(str(failure), stderr_path.read_text())
    orphans = 0
    if status is not None:
        orphans = left_behind(child.pid)
        # Only a group that still has members: once it is empty its number is free for reuse.
        if orphans:
            kill_group(child.pid)
    run = ChildRun(
        contender,
        workload,
        status,
        timeout,
        read_events(events),
        stderr_path.read_text(),
        seconds_to_exit,
        orphans,
    )
    check_run(run)
    return run


# Polled every 10 ms while a dozen runs go at once: a substring test, not a JSON parse, and exact
# all the same, since `record` writes each event with json.dumps's fixed spacing.
def caller_started(events: str) -> bool:
    return '{"caller": "started"}' in events


def caller_waiting(events: str) -> bool:
    return '{"caller": "waiting"}' in events


def enough_started(events: str) -> bool:
    return events.count('{"start": ') >= SIGINT_AFTER_STARTS


def check_run(run: ChildRun) -> None:
    """Refuse a run whose end no tool explains: that is a bug here, not a measurement."""
    name = f"{run.contender.name} / {run.workload.name}"
    report = run.caller_report()
    if report is not None and report.get("raised_exception"):
        raise CallerBroken(f"{name}: the caller raised {report['raised']}", run.stderr)


# --- The cells. Each property reads one workload's run and says what it saw, and how it rates. ---

GOOD, BAD, FACT, NOT_APPLICABLE = "good", "bad", "fact", "n/a"
# A contender that could not run here (a Go row without Go): no verdict either way.
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Cell:
    value: str
    label: str
    verdict: str


DASH = Cell("", "—", NOT_APPLICABLE)


def rate(good: bool) -> str:
    return GOOD if good else BAD


def failing_jobs(workload: Workload) -> list[int]:
    return [j for j in range(1, workload.jobs + 1) if workload.odd_jobs_fail and j % 2 == 1]


def caller_errors(run: ChildRun) -> list[Event] | None:
    report = run.caller_report()
    if report is None:
        return None
    errors = report["errors"]
    assert isinstance(errors, list)
    return errors


def finishes(run: ChildRun) -> Cell:
    if run.hung:
        return Cell("hangs", "hangs", BAD)
    if run.status == 0:
        return Cell("finishes", "yes", GOOD)
    return Cell(f"exit {run.status}", f"exits {run.status}", BAD)


def errors_got(run: ChildRun) -> Cell:
    errors = caller_errors(run)
    if errors is None:
        return DASH
    expected = len(failing_jobs(run.workload))
    return Cell(str(len(errors)), f"{len(errors)} of {expected}", rate(len(errors) == expected))


def tied_to_input(run: ChildRun) -> Cell:
    errors = caller_errors(run)
    if not errors:
        return DASH
    tied = sum(1 for e in errors if e["given"] is not None and e["given"] == e["job"])
    wrong = sum(1 for e in errors if e["given"] is not None and e["given"] != e["job"])
    label = f"{tied} of {len(errors)}" + (f" ({wrong} wrong)" if wrong else "")
    return Cell(str(tied), label, rate(tied == len(errors)))


def traceback_kept(run: ChildRun) -> Cell:
    errors = caller_errors(run)
    if not errors:
        return DASH
    kept = sum(1 for e in errors if e["traceback"])
    label = "yes" if kept == len(errors) else "no" if kept == 0 else f"{kept} of {len(errors)}"
    # null: the error carries no stack at all, so there was none to keep (a Go error value).
    if all(e["traceback"] is None for e in errors):
        label = "no (no stack)"
    return Cell(str(kept), label, rate(kept == len(errors)))


def results_kept(run: ChildRun) -> Cell:
    report = run.caller_report()
    if report is None:
        return DASH
    results = report["results"]
    assert isinstance(results, list)
    succeeded = [j for j in range(1, run.workload.jobs + 1) if j not in failing_jobs(run.workload)]
    # Only right answers count: each a succeeded job's double, tied to that job where it says.
    right = {(given, value) for given, value in results if value in [2 * j for j in succeeded]}
    if len(right) != len(results) or any(g is not None and v != 2 * g for g, v in right):
        raise CallerBroken(f"{run.contender.name}: wrong results {results}")
    return Cell(
        str(len(results)),
        f"{len(results)} of {len(succeeded)}",
        rate(len(results) == len(succeeded)),
    )


def jobs_run(run: ChildRun) -> Cell:
    started = len(set(run.started()))
    if run.hung:
        return Cell(str(started), f"{started}, hangs", BAD)
    return Cell(str(started), f"{started} of {run.workload.jobs}", FACT)


def started_after_give_up(run: ChildRun) -> Cell:
    give_up = run.index_of_last("caller_error")
    if run.hung or give_up is None:
        return DASH
    after = len(run.started(after=give_up))
    return Cell(str(after), str(after), rate(after == 0))


def system_exit(run: ChildRun) -> Cell:
    ran = len(set(run.started()))
    # How the job exited, when it is not by SystemExit: a Go job panics (go/failures says why).
    how = "".join(
        f"{event['outcome']}: "
        for event in run.events
        if event.get("end") == run.workload.system_exit_job and event["outcome"] != "SystemExit"
    )
    if run.hung:
        return Cell("hangs", f"{how}hangs; {ran} of {run.workload.jobs} ran", BAD)
    shown = f"{how}exits {run.status}; {ran} of {run.workload.jobs} ran"
    return Cell(f"exit {run.status}", shown, FACT)


def seconds_to_exit(run: ChildRun) -> Cell:
    if run.hung or run.seconds_to_exit is None:
        return Cell("hangs", f"hangs (> {run.timeout:.0f} s)", BAD)
    return Cell(f"{run.seconds_to_exit:.2f}", f"{run.seconds_to_exit:.1f} s", FACT)


def exit_status(run: ChildRun) -> Cell:
    if run.status is None:
        return DASH
    # As a shell shows it: killed by signal N is 128 + N (a Python that dies of its
    # KeyboardInterrupt re-raises SIGINT on itself, so that its parent sees 130).
    shown = 128 - run.status if run.status < 0 else run.status
    # Exit status 0 after a Ctrl-C tells the shell that the interrupted run succeeded.
    return Cell(str(shown), str(shown), BAD if shown == 0 else FACT)


def started_after_sigint(run: ChildRun) -> Cell:
    sent = run.index_of_last("sigint")
    if sent is None:
        return DASH
    after = len(run.started(after=sent))
    return Cell(str(after), str(after), rate(after == 0))


def cut_off(run: ChildRun) -> Cell:
    if run.hung:
        return DASH
    unfinished = len(set(run.started()) - run.ended())
    return Cell(str(unfinished), str(unfinished), FACT)


def left_running(run: ChildRun) -> Cell:
    if run.hung:
        return DASH
    # No report: the process ended before its caller's code had unwound (a Go program killed by
    # the SIGINT), and took its threads with it. Only orphans can be left.
    report = run.caller_report() or {}
    # A Python child lists threads and child processes; a Go program lists goroutines.
    counts: dict[str, int] = {}
    for noun, key in (("thread", "threads"), ("goroutine", "goroutines"), ("process", "processes")):
        if key in report:
            listed = report[key]
            assert isinstance(listed, list)
            counts[noun] = len(listed)
    counts["orphan"] = run.orphans
    value = ", ".join(f"{count} {plural(noun, count)}" for noun, count in counts.items())
    label = ", ".join(f"{count} {plural(noun, count)}" for noun, count in counts.items() if count)
    return Cell(value, label or "none", rate(not label))


def plural(noun: str, count: int) -> str:
    if count == 1:
        return noun
    return noun + ("es" if noun.endswith("s") else "s")


@dataclass(frozen=True)
class Property:
    name: str
    workload: Workload
    measure: Callable[[ChildRun], Cell]


# The matrix's columns, in order, each read from one workload's run.
PROPERTIES = (
    Property("finishes", POST, finishes),
    Property("errors the caller gets", POST, errors_got),
    Property("errors tied to input", POST, tied_to_input),
    Property("traceback kept", POST, traceback_kept),
    Property("results kept", POST, results_kept),
    Property("jobs run", GIVE_UP, jobs_run),
    Property("started after give-up", GIVE_UP, started_after_give_up),
    Property("SystemExit in a job", SYSTEM_EXIT, system_exit),
    Property("time to exit", SIGINT, seconds_to_exit),
    Property("exit status", SIGINT, exit_status),
    Property("started after SIGINT", SIGINT, started_after_sigint),
    Property("cut off mid-run", SIGINT, cut_off),
    Property("left running", SIGINT, left_running),
)


def measure_failures(
    job_seconds: float,
    sigint_job_seconds: float,
    parallel: int,
    progress_for: Callable[[int], Steps],
    contenders: Sequence[Contender] = MATRIX,
    workloads: Iterable[Workload] = WORKLOADS,
    scratch: Path | None = None,
    go: GoPrograms | None = None,
) -> list[dict[str, object]]:
    """Run every contender on every workload; one CSV row per cell of the matrix.

    The runs' events files go to `scratch` if given (and stay there), else to a temporary folder.
    The Go contenders' programs come from `go` if given, else they are built here, once; a Go
    contender whose program is not there gets cells that say "not measured" and why.
    """
    timing = Timing(job_seconds, sigint_job_seconds)
    workloads = list(workloads)
    with contextlib.ExitStack() as cleanup:
        packages = go_packages(contenders)
        if go is None:
            go = (
                cleanup.enter_context(go_programs(packages, "Go rows of the failure matrix"))
                if packages
                else GoPrograms(None, {}, {})
            )
        runs = run_children(timing, parallel, progress_for, contenders, workloads, scratch, go)
    by_key = {(run.contender.name, run.workload.name): run for run in runs}
    rows: list[dict[str, object]] = []
    for contender in contenders:
        for prop in PROPERTIES:
            if prop.workload not in workloads:
                continue  # a workload left out of this measurement
            if runnable(contender, go):
                cell = prop.measure(by_key[(contender.name, prop.workload.name)])
            else:
                cell = Cell(NOT_MEASURED, f"not measured: {go.unavailable}", NOT_MEASURED)
            rows.append(
                {
                    "contender": contender.name,
                    "kind": contender.kind,
                    "workload": prop.workload.summary,
                    "workers": WORKERS,
                    "job_seconds": timing.job_seconds_for(prop.workload),
                    "timeout_seconds": timing.timeout(prop.workload),
                    "property": prop.name,
                    "value": cell.value,
                    "label": cell.label,
                    "verdict": cell.verdict,
                }
            )
    return rows


def runnable(contender: Contender, go: GoPrograms) -> bool:
    """A Python caller always is; a Go program is once it has been built."""
    return not isinstance(contender.call, GoProgram) or contender.call.package in go.executables


def run_children(
    timing: Timing,
    parallel: int,
    progress_for: Callable[[int], Steps],
    contenders: Sequence[Contender],
    workloads: Sequence[Workload],
    scratch: Path | None,
    go: GoPrograms,
) -> list[ChildRun]:
    """Run each runnable contender on each workload, `parallel` runs at a time."""
    # The SIGINT runs first: they are the longest, so the rest fill in around them.
    ordered = sorted(workloads, key=lambda workload: workload is not SIGINT)
    plan = [
        (contender, workload)
        for workload in ordered
        for contender in contenders
        if runnable(contender, go)
    ]
    progress = progress_for(len(plan))
    with contextlib.ExitStack() as cleanup:
        folder = scratch or Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        live = LiveChildren()

        def one(numbered: tuple[int, tuple[Contender, Workload]]) -> ChildRun:
            number, (contender, workload) = numbered
            run = run_child(contender, workload, timing, folder, number, live, go)
            outcome = "hangs" if run.hung else f"exit {run.status}"
            progress.step(f"{contender.name} / {workload.name}: {outcome}")
            return run

        executor = ThreadPoolExecutor(max_workers=parallel)
        try:
            return list(executor.map(one, enumerate(plan)))
        except BaseException:
            # Ctrl-C, or a broken run: start no more runs, end the ones going (each in its own
            # session, out of reach of the terminal's Ctrl-C), then wait for their threads.
            executor.shutdown(wait=False, cancel_futures=True)
            live.kill_all()
            raise
        finally:
            executor.shutdown(wait=True)


# --- The docs' table (docs/failure-matrix.md), rendered from the CSV. ---


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def markdown_table(rows: Sequence[dict[str, str]]) -> str:
    """The matrix as a Markdown table: a row per contender, a column per property; bad in bold."""
    properties = list(dict.fromkeys(row["property"] for row in rows))
    contenders = list(dict.fromkeys(row["contender"] for row in rows))
    cells = {(row["contender"], row["property"]): row for row in rows}
    lines = [
        "| | " + " | ".join(properties) + " |",
        "| --- |" + " --- |" * len(properties),
    ]
    for contender in contenders:
        shown = []
        for prop in properties:
            row = cells.get((contender, prop))
            label = row["label"] if row else ""
            shown.append(f"**{label}**" if row and row["verdict"] == BAD else label)
        lines.append(f"| {contender} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"
