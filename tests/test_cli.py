"""Every command answers --help, and refuses an unknown flag on one line with status 2."""

from __future__ import annotations

import json
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


# Runs each command in this one child (runpy, as `python -m` does), with every option of its
# --help given `=--`, and reports what each did. One child for all: a few seconds, not a minute.
EVERY_OPTION = r"""
import contextlib, io, json, re, runpy, sys

def run(module: str, args: list[str]) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [module, *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            status: object = 0
        except SystemExit as exit:
            status = exit.code
        except BaseException as error:  # what the bug looked like: a traceback
            status = f"raised {error!r}"
    return status, out.getvalue(), err.getvalue()

report = []
for module, subcommand in json.loads(sys.argv[1]):
    _, help_text, _ = run(module, [*subcommand, "--help"])
    # The options block of --help: each option at the start of its line.
    options = sorted(set(re.findall(r"^\s+(--[a-z][a-z-]*)", help_text, re.M)) - {"--help"})
    for option in options:
        status, _, err = run(module, [*subcommand, f"{option}=--"])
        report.append([" ".join([module, *subcommand, option + "=--"]), status, err.splitlines()])
print(json.dumps(report))
"""


def test_every_option_of_every_command_refuses_a_bare_double_dash_value_on_one_line() -> None:
    # `--workers=--`: CPython 3.11's argparse gave the option an empty list, skipping type= (a
    # traceback, or a demo run with workers=[] that hung); 3.13 gave it the string "--".
    commands = [[module, sub] for module, subs in ENTRY_POINTS.items() for sub in subs]
    completed = subprocess.run(
        [sys.executable, "-c", EVERY_OPTION, json.dumps(commands)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout)

    tried = {line.split(" ", 1)[0] for line, _, _ in report}
    assert tried == set(ENTRY_POINTS), "a command's --help listed no option"
    assert len(report) >= 40
    refused = [
        line
        for line, status, err in report
        if status == 2
        and len(err) == 1
        and ("expected one argument" in err[0] or "ignored explicit argument '--'" in err[0])
    ]
    assert [line for line, _, _ in report if line not in refused] == []


def test_plots_redraw_from_a_folder_that_is_not_there_is_refused_without_making_it(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "typo" / "out"

    completed = run_module("plots", "--redraw", "--out", str(missing))

    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"python -m plots: error: no benchmark CSV in {missing}: measure first"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", [[], ["--redraw"]], ids=["measure", "redraw"])
def test_plots_refuses_an_empty_out_instead_of_writing_to_the_current_folder(
    mode: list[str], tmp_path: Path
) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "plots", *mode, "--only", "dispatch", "--out", ""],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        "python -m plots: error: argument --out: expected a folder, got '' (see --help)"
    ]
    assert list(tmp_path.iterdir()) == []
