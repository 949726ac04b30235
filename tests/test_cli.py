"""Every command answers --help, and refuses an unknown flag on one line with status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from demo_args import MAX_JOBS, MAX_WORK_SECONDS, MAX_WORKERS
from tests.conftest import REPO_ROOT, run_module

COMMANDS = ["naive", "errors_channel", "robust", "beyond", "families", "plots", "plots.child"]


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_has_help(module: str) -> None:
    completed = run_module(module, "--help")
    assert completed.returncode == 0
    assert completed.stdout.startswith("usage: python -m ")


@pytest.mark.parametrize("module", ["naive", "errors_channel", "robust", "beyond", "plots"])
def test_every_command_refuses_an_unknown_flag_on_one_line(module: str) -> None:
    completed = run_module(module, "--frobnicate")
    assert completed.returncode == 2
    assert len(completed.stderr.splitlines()) == 1
    assert "unrecognized arguments: --frobnicate" in completed.stderr


POOL_COMMANDS = ["naive", "errors_channel", "robust", "beyond"]


@pytest.mark.parametrize("module", POOL_COMMANDS)
@pytest.mark.parametrize(
    "bad_args",
    [
        ["--workers", str(MAX_WORKERS + 1)],
        ["--workers", "99999999999999999999"],
        ["--jobs", str(MAX_JOBS + 1)],
        ["--jobs", "99999999999999999999999999999"],
        ["--work-seconds", str(MAX_WORK_SECONDS + 1)],
        # time.sleep() raises OverflowError past about 9.2e9 s: that would end a worker thread.
        ["--work-seconds", "1e300"],
    ],
    ids=[
        "workers-over-limit",
        "workers-absurd",
        "jobs-over-limit",
        "jobs-absurd",
        "work-seconds-over-limit",
        "work-seconds-absurd",
    ],
)
def test_demo_refuses_sizes_over_its_limits_at_once_with_one_line(
    module: str, bad_args: list[str]
) -> None:
    # Before any thread starts or any job is queued: a short timeout, and nothing on stdout.
    completed = run_module(module, "--work-seconds", "0", *bad_args, timeout=10)

    assert completed.returncode == 2
    assert completed.stdout == ""
    (line,) = completed.stderr.splitlines()
    assert f"argument {bad_args[0]}: must be at most " in line


@pytest.mark.parametrize("module", POOL_COMMANDS)
def test_demo_help_states_the_limits(module: str) -> None:
    completed = run_module(module, "--help")

    # argparse wraps help text, so compare without line breaks.
    help_text = " ".join(completed.stdout.split())
    assert f"at most {MAX_WORKERS:,}" in help_text
    assert f"at most {MAX_JOBS:,}" in help_text
    assert f"at most {MAX_WORK_SECONDS:,}" in help_text


@pytest.mark.parametrize(
    "command", [["naive"], ["errors_channel", "--fix", "drain-while-waiting"]], ids=lambda c: c[0]
)
def test_demo_piped_into_a_reader_that_quits_early_still_ends_quietly(command: list[str]) -> None:
    # `python -m naive | head -1`: far more output than a pipe holds, and the reader leaves after
    # the first line. A worker that died of BrokenPipeError would leave main waiting forever.
    child = subprocess.Popen(
        [sys.executable, "-m", *command, "--jobs", "5000", "--work-seconds", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.readline().startswith("worker ")
    child.stdout.close()
    try:
        returncode = child.wait(timeout=30)
    finally:
        child.kill()
    assert returncode == 0
    assert child.stderr.read() == ""
    child.stderr.close()


# Every `python -m` entry point that reads arguments, with the subcommands of those that have them.
ENTRY_POINTS: dict[str, list[list[str]]] = {
    "naive": [[]],
    "errors_channel": [[]],
    "robust": [[]],
    "beyond": [[]],
    "families": [["multiprocessing-join"], ["futures-nested"]],
    "plots": [[]],
    "plots.child": [["deadlock-cell"], ["timeline"], ["memory"]],
    "plots.failures_child": [[]],
    "plots.dask_overhead": [[]],
    "tools.mutate": [[]],
    "tools.measure_deadlock_plugin": [[]],
}


def test_every_entry_point_that_reads_arguments_is_listed() -> None:
    # A new command must join ENTRY_POINTS, so that the test below tries each of its options.
    reading = {
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__main__")
        for path in REPO_ROOT.rglob("*.py")
        if not path.relative_to(REPO_ROOT).parts[0].startswith((".", "tests"))
        and "parse_args(" in path.read_text()
    }
    assert reading == set(ENTRY_POINTS)


# Runs each command in this one child (runpy, as `python -m` does): every option of its --help
# given `=--`, then the given argument lists, and reports what each did. One child for all, in a
# folder of its own (nothing may be made there): a few seconds, where a child per command took
# a minute (each imports its command's modules, matplotlib included).
COMMANDS_CHILD = r"""
import contextlib, io, json, re, runpy, sys

def run(module: str, args: list[str]) -> tuple[object, str]:
    # Said first, for the test to name the command if this one never returns.
    print("running", module, *args, file=sys.__stderr__, flush=True)
    err = io.StringIO()
    sys.argv = [module, *args]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            status: object = 0
        except SystemExit as exit:
            status = exit.code
        except BaseException as error:  # what the bugs looked like: a traceback
            status = f"raised {error!r}"
    return status, err.getvalue()

commands, cases = json.loads(sys.argv[1]), json.loads(sys.argv[2])
report = []
for module, subcommand in commands:
    sys.argv = [module, *subcommand, "--help"]
    with contextlib.redirect_stdout(io.StringIO()) as help_text:
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit:
            pass
    # The options block of --help: each option at the start of its line.
    found = re.findall(r"^\s+(--[a-z][a-z-]*)", help_text.getvalue(), re.M)
    for option in sorted(set(found) - {"--help"}):
        status, err = run(module, [*subcommand, f"{option}=--"])
        report.append([" ".join([module, *subcommand, option + "=--"]), status, err.splitlines()])
for module, args in cases:
    status, err = run(module, args)
    report.append([" ".join([module, *args]), status, err.splitlines()])
print(json.dumps(report))
"""

# Argument lists the child runs too, each with what it must say (one line, exit status 2).
MISSING = "typo/out"
CASES: dict[str, tuple[list[str], str]] = {
    "redraw-missing": (
        ["--redraw", "--out", MISSING],
        f"python -m plots: error: no benchmark CSV in {MISSING}: measure first",
    ),
    "empty-out": (
        ["--only", "dispatch", "--out", ""],
        "python -m plots: error: argument --out: expected a folder, got '' (see --help)",
    ),
    "redraw-empty-out": (
        ["--redraw", "--out", ""],
        "python -m plots: error: argument --out: expected a folder, got '' (see --help)",
    ),
}


@pytest.fixture(scope="module")
def commands_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[list[object]], Path]:
    """What every command said in the child above, and the folder it ran in."""
    folder = tmp_path_factory.mktemp("commands")
    commands = [[module, sub] for module, subs in ENTRY_POINTS.items() for sub in subs]
    cases = [["plots", args] for args, _ in CASES.values()]
    try:
        completed = subprocess.run(
            [sys.executable, "-c", COMMANDS_CHILD, json.dumps(commands), json.dumps(cases)],
            cwd=folder,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired as hung:
        said = hung.stderr.decode() if isinstance(hung.stderr, bytes) else hung.stderr or ""
        raise AssertionError(f"a command never returned: {said.splitlines()[-1:]}") from None
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout), folder


def test_every_option_of_every_command_refuses_a_bare_double_dash_value_on_one_line(
    commands_report: tuple[list[list[object]], Path],
) -> None:
    # `--workers=--`: CPython 3.11's argparse gave the option an empty list, skipping type= (a
    # traceback, or a demo run with workers=[] that hung); 3.13 gave it the string "--".
    report = [entry for entry in commands_report[0] if str(entry[0]).endswith("=--")]

    tried = {str(line).split(" ", 1)[0] for line, _, _ in report}
    assert tried == set(ENTRY_POINTS), "a command's --help listed no option"
    assert len(report) >= 40
    refused = [
        line
        for line, status, err in report
        if status == 2
        and isinstance(err, list)
        and len(err) == 1
        and ("expected one argument" in err[0] or "ignored explicit argument '--'" in err[0])
    ]
    assert [line for line, _, _ in report if line not in refused] == []


@pytest.mark.parametrize("case", CASES)
def test_plots_refuses_an_out_it_cannot_use_without_making_anything(
    case: str, commands_report: tuple[list[list[object]], Path]
) -> None:
    # --redraw from a folder that is not there used to make it first; --out "" meant the current
    # folder (and measured into it).
    report, folder = commands_report
    args, says = CASES[case]
    [(status, err)] = [(s, e) for line, s, e in report if line == " ".join(["plots", *args])]

    assert (status, err) == (2, [says])
    assert list(folder.iterdir()) == []
